'use strict';
// AbortSignal support: a caller that gives up (its HTTP client went away) is answered at once.
// The native call it abandons still ends on its own deadline; nothing of ours is left waiting
// on the signal afterwards.
const { invalidOperation } = require('./errors');

/** Checks that `signal` is an AbortSignal (or undefined). */
function checkSignal(signal, field = 'signal') {
  if (signal === undefined) return undefined;
  if (signal === null || typeof signal !== 'object' || typeof signal.aborted !== 'boolean' || typeof signal.addEventListener !== 'function') {
    throw invalidOperation(field, 'expected an AbortSignal (for example AbortSignal.timeout(ms) or an AbortController\'s signal)');
  }
  return signal;
}

/** `signal` checked as checkSignal does, and refused with an AbortError when it already aborted. */
function liveSignal(signal, field = 'signal') {
  checkSignal(signal, field);
  if (signal?.aborted) throw abortError(signal);
  return signal;
}

/** An AbortError as fetch rejects with: a DOMException named 'AbortError', the reason as cause. */
function abortError(signal) {
  const err = new DOMException('The operation was aborted', 'AbortError');
  if (signal && signal.reason !== undefined) {
    Object.defineProperty(err, 'cause', { value: signal.reason, configurable: true, writable: true });
  }
  return err;
}

/**
 * Settles as `promise` does, or rejects with an AbortError as soon as `signal` aborts. The
 * abort listener is removed either way, and an abandoned promise's later rejection is handled.
 */
function withSignal(signal, promise) {
  if (signal === undefined) return promise;
  if (signal.aborted) {
    promise.catch(() => {});
    return Promise.reject(abortError(signal));
  }
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      promise.catch(() => {});
      reject(abortError(signal));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

module.exports = { checkSignal, liveSignal, abortError, withSignal };
