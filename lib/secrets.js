'use strict';
// Cluster secrets stay out of everything a program prints: configuration objects show
// '[redacted]' where a secret would be, and the secrets themselves are kept apart, keyed by
// their owner, for the one place that needs them (starting the node).
const { invalidConfig } = require('./errors');

const REDACTED = '[redacted]';
const MAX_SECRETS = 16;
const held = new WeakMap();

/**
 * `secret` as given: one string, or a list whose first entry proves this node and every entry
 * verifies peers (rotation). Returns the list, or undefined without a secret.
 */
function normalizeSecrets(value, field = 'secret') {
  if (value === undefined) return undefined;
  const list = Array.isArray(value) ? value : [value];
  if (list.length === 0 || list.length > MAX_SECRETS) {
    throw invalidConfig(field, `expected a secret or a list of 1 to ${MAX_SECRETS} secrets`);
  }
  for (const s of list) {
    // The value itself is never part of the message.
    if (typeof s !== 'string') throw invalidConfig(field, `expected a string, got a ${s === null ? 'null' : typeof s}`);
    // Short secrets are refused: they would be guessable offline from a recorded handshake.
    if (s.length < 16) throw invalidConfig(field, 'must be at least 16 characters');
    if (s.length > 4096) throw invalidConfig(field, 'must be at most 4096 characters');
  }
  return [...list];
}

/** Keeps `list` for `owner` and returns what its config shows instead. */
function hideSecrets(owner, list, shape) {
  if (list === undefined) return undefined;
  held.set(owner, list);
  return Array.isArray(shape) ? list.map(() => REDACTED) : REDACTED;
}

/** The secrets kept for `owner` ([] when none). */
function secretsOf(owner) {
  return held.get(owner) ?? [];
}

module.exports = { REDACTED, normalizeSecrets, hideSecrets, secretsOf };
