'use strict';

/** Stable error codes; `error.code` is always one of these. */
const ErrorCode = Object.freeze({
  INVALID_CONFIG: 'ERR_INVALID_CONFIG',
  INVALID_OPERATION: 'ERR_INVALID_OPERATION',
  NOT_LEADER: 'ERR_NOT_LEADER',
  NO_QUORUM: 'ERR_NO_QUORUM',
  TIMEOUT: 'ERR_TIMEOUT',
  NODE_NOT_FOUND: 'ERR_NODE_NOT_FOUND',
  ADDRESS_IN_USE: 'ERR_ADDRESS_IN_USE',
  STORAGE: 'ERR_STORAGE',
  SHUTDOWN: 'ERR_SHUTDOWN',
  AUTH: 'ERR_AUTH',
  COMPACTED: 'ERR_COMPACTED',
  NOT_INITIALIZED: 'ERR_NOT_INITIALIZED',
});

class ConsensusError extends Error {
  /**
   * @param {string} code one of ErrorCode
   * @param {string} message what happened and what to do
   * @param {{leaderId?: string|null, field?: string, cause?: unknown}} [details]
   */
  constructor(code, message, details = {}) {
    super(message, details.cause !== undefined ? { cause: details.cause } : undefined);
    this.name = 'ConsensusError';
    this.code = code;
    if (details.leaderId !== undefined) this.leaderId = details.leaderId;
    if (details.field !== undefined) this.field = details.field;
  }
}

/**
 * Turns an error thrown by the native layer (message = JSON {code, message, leaderId, field,
 * cause}) into a ConsensusError. One that is not the engine's keeps the original as `cause`.
 */
function fromNative(err) {
  if (err instanceof ConsensusError) return err;
  let parsed = null;
  try {
    parsed = JSON.parse(err && err.message);
  } catch {
    // not one of ours
  }
  if (parsed && typeof parsed.code === 'string') return engineError(parsed);
  return new ConsensusError(ErrorCode.STORAGE, `native error: ${err && err.message}`, { cause: err });
}

/** An error as the engine describes it: `{code, message, leaderId, field, cause}`. */
function engineError(e) {
  return new ConsensusError(e.code, e.message, {
    leaderId: e.leaderId ?? undefined,
    field: e.field ?? undefined,
    cause: e.cause ?? undefined,
  });
}

function invalidConfig(field, message) {
  return new ConsensusError(ErrorCode.INVALID_CONFIG, `${field}: ${message}`, { field });
}

function invalidOperation(field, message) {
  return new ConsensusError(ErrorCode.INVALID_OPERATION, `${field}: ${message}`, { field });
}

module.exports = { ConsensusError, ErrorCode, engineError, fromNative, invalidConfig, invalidOperation };
