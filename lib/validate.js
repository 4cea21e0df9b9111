'use strict';
// Config validation shared by the three classes: every problem names its field.
const { invalidConfig } = require('./errors');

const NODE_ID = /^[A-Za-z0-9._-]{1,64}$/;

function checkObject(config, what) {
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw invalidConfig(what, 'expected a config object');
  }
}

function checkKnownKeys(config, known, what) {
  for (const key of Object.keys(config)) {
    if (!known.includes(key)) {
      throw invalidConfig(key, `unknown ${what} option (known: ${known.join(', ')})`);
    }
  }
}

function nodeId(value, field = 'nodeId') {
  if (typeof value !== 'string' || !NODE_ID.test(value)) {
    throw invalidConfig(field, `expected 1-64 characters of [A-Za-z0-9._-], got ${JSON.stringify(value)}`);
  }
  return value;
}

function integer(value, field, { min = 0, max = Number.MAX_SAFE_INTEGER, fallback } = {}) {
  if (value === undefined && fallback !== undefined) return fallback;
  if (!Number.isInteger(value) || value < min || value > max) {
    throw invalidConfig(field, `expected an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

function string(value, field, { fallback, maxLength = 1024 } = {}) {
  if (value === undefined && fallback !== undefined) return fallback;
  if (typeof value !== 'string' || value.length === 0 || value.length > maxLength) {
    throw invalidConfig(field, `expected a non-empty string of at most ${maxLength} characters`);
  }
  return value;
}

function boolean(value, field, fallback) {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw invalidConfig(field, `expected true or false, got ${JSON.stringify(value)}`);
  return value;
}

/** A plain object (literal or null-prototype), not an array, Map, Date or class instance. */
function isPlainObject(value) {
  if (value === null || typeof value !== 'object') return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

module.exports = { NODE_ID, isPlainObject, checkObject, checkKnownKeys, nodeId, integer, string, boolean };
