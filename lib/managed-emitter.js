'use strict';
const { EventEmitter } = require('node:events');

/** Rethrows outside the current call, as Node does for an exception in a socket listener. */
function rethrowLater(err) {
  process.nextTick(() => {
    throw err;
  });
}

/**
 * An EventEmitter that owns timers and listeners on other emitters, and releases them all at
 * once. A listener of ours that throws surfaces as uncaughtException and never stops delivery
 * of the events that follow.
 */
class ManagedEmitter extends EventEmitter {
  constructor() {
    super();
    this._timers = [];
    this._listeners = [];
  }

  _listen(emitter, name, fn) {
    emitter.on(name, fn);
    this._listeners.push([emitter, name, fn]);
  }

  /** An unref'd interval: it never keeps the process alive on its own. */
  _every(ms, fn) {
    const t = setInterval(fn, ms);
    t.unref();
    this._timers.push(t);
  }

  _emitSafely(name, payload) {
    try {
      this.emit(name, payload);
    } catch (err) {
      rethrowLater(err);
    }
  }

  /** Stops every timer and removes every listener this object added elsewhere. */
  _releaseAll() {
    for (const t of this._timers) clearInterval(t);
    this._timers = [];
    for (const [emitter, name, fn] of this._listeners) emitter.off(name, fn);
    this._listeners = [];
  }
}

module.exports = { ManagedEmitter, rethrowLater };
