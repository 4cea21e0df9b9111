'use strict';
// A replicated key-value state for daemons, on the engine's replicated registry: every node
// holds the same keys in its LMDB, applied in log order, durable across restarts and carried by
// snapshots. Local reads are sequentially consistent (this replica, in log order);
// `get(key, {linearizable: true})` confirms leadership with a quorum first (read index).
const { ManagedEmitter } = require('./managed-emitter');
const { ConsensusError, ErrorCode, fromNative, invalidConfig, invalidOperation } = require('./errors');
const v = require('./validate');

/** Operation types, as the pure-JS original named them. */
const StateOperation = Object.freeze({
  SET: 'set',
  DELETE: 'delete',
  UPDATE: 'update',
  BATCH: 'batch',
});

/** The command type of state writes in the Raft log (the original's). */
const COMMAND_TYPE = 'UPDATE_STATE';
const MAX_KEY = 511;
/** How many changes a watch reads from the history per step. */
const WATCH_PAGE = 256;
const DEFAULT_UPDATE_ATTEMPTS = 100;

function normalizeConfig(config = {}) {
  if (config === null || typeof config !== 'object') throw invalidConfig('config', 'expected an object');
  const out = {
    nodeId: config.nodeId,
    prefix: config.prefix === undefined ? 'state/' : config.prefix,
    forward: config.forward === true,
    snapshotInterval: config.snapshotInterval === undefined ? 1000 : config.snapshotInterval,
    maxStateSize: config.maxStateSize === undefined ? 100000 : config.maxStateSize,
    enableSnapshots: config.enableSnapshots !== false,
    persistSnapshots: config.persistSnapshots === true,
  };
  if (out.nodeId !== undefined) v.nodeId(out.nodeId, 'nodeId');
  if (typeof out.prefix !== 'string' || out.prefix.length === 0 || out.prefix.length > 128) {
    throw invalidConfig('prefix', 'expected a non-empty string of at most 128 characters');
  }
  if (out.prefix.startsWith('cluster/')) {
    throw invalidConfig('prefix', "keys under 'cluster/' belong to ClusterManager; choose another prefix");
  }
  if (config.forward !== undefined && typeof config.forward !== 'boolean') throw invalidConfig('forward', 'expected a boolean');
  for (const k of ['snapshotInterval', 'maxStateSize']) {
    if (!Number.isInteger(out[k]) || out[k] <= 0) throw invalidConfig(k, 'expected a positive integer');
  }
  return out;
}

/** An integer argument of a call (bad ones are ERR_INVALID_OPERATION, not config errors). */
function intArg(value, field, min, max) {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw invalidOperation(field, `expected an integer from ${min} to ${max}, got ${JSON.stringify(value)}`);
  }
  return value;
}

function parse(json) {
  return json === null || json === undefined ? undefined : JSON.parse(json);
}

/**
 * Events: `state_changed {key, value, operation, index}` on every node for every replicated
 * change, in log order; `snapshot_created {snapshotId, index, stateSize}` when this node
 * snapshots and compacts its log; `snapshot_restored {snapshotId, index, stateSize}` when it
 * catches up by a snapshot; `initialized`; `shutdown`; `warning` (a ConsensusError: this node
 * could not read its replica while following the log).
 */
class DistributedStateMachine extends ManagedEmitter {
  constructor(config = {}) {
    super();
    this.config = normalizeConfig(config);
    this.raftCoordinator = null;
    this._prefix = this.config.prefix;
    this._cursor = 0; // the last log index whose changes state_changed has reported
    this._wakers = new Set();
    this._appliedWaiters = [];
    this._closed = false;
    this._snapshots = 0;
    this._lastSnapshot = null;
    this._changesSeen = 0;
  }

  /** Binds to an initialized `RaftCoordinator` of this package (initializes it if needed). */
  async initialize(raftCoordinator) {
    if (this._closed) throw this._shutdownError();
    const rc = raftCoordinator;
    if (rc === null || typeof rc !== 'object' || typeof rc.replicateCommand !== 'function' || !('_native' in rc)) {
      throw invalidConfig('raftCoordinator', 'expected a RaftCoordinator from @unrdf/consensus');
    }
    if (this.config.nodeId !== undefined && this.config.nodeId !== rc.nodeId) {
      throw invalidConfig('nodeId', `this state machine is for ${this.config.nodeId} but the coordinator is ${rc.nodeId}`);
    }
    if (this.raftCoordinator === rc) return;
    if (this.raftCoordinator !== null) throw invalidOperation('raftCoordinator', 'already initialized with another coordinator');
    await rc.initialize();
    this.raftCoordinator = rc;
    this._cursor = rc.getState().lastApplied ?? 0;
    // These run inside the coordinator's event delivery: a failure here (the node stopping under
    // us, a storage error) is reported as a warning, never thrown into the delivery of others.
    const guarded = (fn) => (payload) => {
      try {
        fn(payload);
      } catch (err) {
        if (this._closed || rc._stopped) return;
        this._emitSafely('warning', err instanceof ConsensusError ? err : fromNative(err));
      }
    };
    this._listen(rc, 'command_applied', guarded(({ entry }) => this._catchUp(entry.index)));
    this._listen(rc, 'snapshot_installed', guarded((s) => this._onSnapshotInstalled(s)));
    this._listen(rc, 'log_compacted', guarded(() => this._onCompacted()));
    this._listen(rc, 'shutdown', () => {
      this._wakeApplied();
      this._wake();
    });
    this._emitSafely('initialized', { nodeId: rc.nodeId });
  }

  get nodeId() {
    return this.raftCoordinator ? this.raftCoordinator.nodeId : this.config.nodeId;
  }

  // ---- writes ------------------------------------------------------------------------------

  /** Sets `key` to `value` (any JSON value) on every node. Resolves once it is committed. */
  async set(key, value, options = {}) {
    this._checkKey(key);
    this._checkValue(value, 'value');
    await this._write(StateOperation.SET, key, { key: this._prefix + key, value }, options);
  }

  /** Deletes `key` on every node (a missing key is no error). */
  async delete(key, options = {}) {
    this._checkKey(key);
    await this._write(StateOperation.DELETE, key, { key: this._prefix + key, delete: true }, options);
  }

  /**
   * Sets `key` to `updateFn(current)`, atomically: the new value is written only if the key
   * still holds what `updateFn` saw, else `updateFn` runs again on the newer value.
   */
  async update(key, updateFn, options = {}) {
    this._checkKey(key);
    if (typeof updateFn !== 'function') throw invalidOperation('updateFn', 'expected a function (oldValue) => newValue');
    const attempts = options.maxAttempts === undefined ? DEFAULT_UPDATE_ATTEMPTS : options.maxAttempts;
    intArg(attempts, 'maxAttempts', 1, 1e6);
    let current = this.get(key);
    for (let i = 0; i < attempts; i++) {
      const next = await updateFn(current);
      const r = await this.compareAndSet(key, current, next, options);
      if (r.ok) return next;
      current = r.value;
    }
    throw new ConsensusError(ErrorCode.TIMEOUT, `update(${key}): the value kept changing under ${attempts} attempts; retry later or raise maxAttempts`);
  }

  /** Sets several keys in one log entry: all of them take effect, or none. `[{key, value}]`. */
  async batchUpdate(changes, options = {}) {
    if (!Array.isArray(changes)) throw invalidOperation('changes', 'expected an array of {key, value}');
    if (changes.length === 0) return;
    const writes = changes.map((c, i) => {
      if (c === null || typeof c !== 'object') throw invalidOperation(`changes[${i}]`, 'expected {key, value}');
      this._checkKey(c.key, `changes[${i}].key`);
      if (c.delete === true) return { key: this._prefix + c.key, delete: true };
      this._checkValue(c.value, `changes[${i}].value`);
      return { key: this._prefix + c.key, value: c.value };
    });
    const [first, ...also] = writes;
    await this._write(StateOperation.BATCH, undefined, { ...first, also }, options, changes.length);
  }

  /**
   * Sets `key` to `value` only if it holds `expected` now (`undefined`: only if it is unset),
   * decided in log order on every replica. Resolves `{ok, value}`: on success the new value, on
   * failure the key's value as this node sees it just after the attempt (a retry's next
   * `expected`).
   */
  async compareAndSet(key, expected, value, options = {}) {
    this._checkKey(key);
    this._checkValue(value, 'value');
    const write = { key: this._prefix + key, value };
    if (expected === undefined) write.ifAbsent = true;
    else {
      this._checkValue(expected, 'expected');
      write.ifEquals = expected;
    }
    const r = await this._write(StateOperation.SET, key, write, options);
    if (r.conditionMet) return { ok: true, value };
    return { ok: false, value: this.get(key) };
  }

  async _write(operation, key, registry, options, count = 1) {
    const rc = this._bound();
    if (options === null || typeof options !== 'object') throw invalidOperation('options', 'expected an object');
    const forward = options.forward === undefined ? this.config.forward : options.forward === true;
    const command = { type: COMMAND_TYPE, data: { operation, sourceNode: rc.nodeId, timestamp: Date.now() } };
    if (key !== undefined) {
      command.workflowId = key;
      command.data.key = key;
    } else {
      command.data.count = count;
    }
    const opts = { forward, registry };
    if (options.timeoutMs !== undefined) opts.timeoutMs = options.timeoutMs;
    const result = await rc.replicateCommand(command, opts);
    // A write forwarded to the leader returns before this replica applied it; wait so that this
    // node's next local read sees it (read-your-writes), but never past the command timeout: the
    // write is committed either way.
    await this._whenApplied(result.logIndex, options.timeoutMs ?? rc.config.commandTimeoutMs);
    return result;
  }

  // ---- reads -------------------------------------------------------------------------------

  /**
   * The value of `key` on this replica (undefined when unset). With `{linearizable: true}` it
   * returns a Promise instead, which resolves only after the leader confirmed its leadership
   * with a quorum, to a value no older than any write acknowledged before the call; it rejects
   * with ERR_NOT_LEADER or ERR_NO_QUORUM when that cannot be confirmed.
   */
  get(key, options) {
    if (options !== undefined && options !== null && options.linearizable === true) {
      return this._linearizableGet(key, options);
    }
    this._checkKey(key);
    return parse(this._native().registryGet(this._prefix + key));
  }

  async _linearizableGet(key, options) {
    this._checkKey(key);
    const rc = this._bound();
    const timeoutMs =
      options.timeoutMs === undefined ? undefined : intArg(options.timeoutMs, 'timeoutMs', 1, 2 ** 31 - 1);
    const read = await rc._run(() => rc._native.linearizableGet(this._prefix + key, timeoutMs));
    return parse(read.value);
  }

  has(key) {
    this._checkKey(key);
    return this._native().registryGet(this._prefix + key) != null;
  }

  /** `[key, value]` pairs on this replica, in key order. */
  entries() {
    const n = this._prefix.length;
    return this._native()
      .registry(this._prefix)
      .map(([k, json]) => [k.slice(n), JSON.parse(json)]);
  }

  keys() {
    return this.entries().map(([k]) => k);
  }

  values() {
    return this.entries().map(([, value]) => value);
  }

  // ---- watch -------------------------------------------------------------------------------

  /**
   * The changes to keys under `prefix`, in log order, as an async iterator of
   * `{key, value, operation, index}`. `fromIndex`: yield every change made after that log index
   * (resume with the `index` of the last change handled); default: changes from now on. History
   * reaches back a bounded number of log entries (and not past a snapshot this node caught up
   * by); an older `fromIndex` throws ERR_COMPACTED. Ends on shutdown or when `signal` aborts.
   */
  watch(prefix = '', options = {}) {
    if (typeof prefix !== 'string' || prefix.length > MAX_KEY) throw invalidOperation('prefix', 'expected a string');
    if (options === null || typeof options !== 'object') throw invalidOperation('options', 'expected an object');
    const native = this._native();
    let after;
    if (options.fromIndex === undefined) after = this.raftCoordinator.getState().lastApplied ?? 0;
    else after = intArg(options.fromIndex, 'fromIndex', 0, Number.MAX_SAFE_INTEGER);
    const { signal } = options;
    if (signal !== undefined && (signal === null || typeof signal.aborted !== 'boolean')) {
      throw invalidOperation('signal', 'expected an AbortSignal');
    }
    return this._watch(native, this._prefix + prefix, after, signal);
  }

  async *_watch(native, fullPrefix, after, signal) {
    const n = this._prefix.length;
    let cursor = after;
    while (!this._closed && !(signal && signal.aborted) && !this.raftCoordinator._stopped) {
      let page;
      try {
        page = native.registryChanges(fullPrefix, cursor, undefined, WATCH_PAGE);
      } catch (err) {
        if (this._closed || this.raftCoordinator._stopped) return; // the node stopped: the watch ends
        throw fromNative(err);
      }
      if (cursor < page.floor) {
        throw new ConsensusError(
          ErrorCode.COMPACTED,
          `history before log index ${page.floor} is no longer kept on ${this.nodeId}; read entries() and watch from getState().lastApplied`,
        );
      }
      for (const c of page.changes) {
        yield { key: c.key.slice(n), value: parse(c.value), operation: c.value == null ? StateOperation.DELETE : StateOperation.SET, index: c.index };
      }
      const advanced = page.through > cursor;
      cursor = Math.max(cursor, page.through);
      if (page.changes.length === 0 && !advanced) await this._nextChange(signal);
    }
  }

  _nextChange(signal) {
    return new Promise((resolve) => {
      const done = () => {
        this._wakers.delete(done);
        if (signal) signal.removeEventListener('abort', done);
        resolve();
      };
      this._wakers.add(done);
      if (signal) signal.addEventListener('abort', done, { once: true });
    });
  }

  _wake() {
    for (const w of [...this._wakers]) w();
  }

  // ---- replication events ------------------------------------------------------------------

  /** Reports this replica's changes through `index` as state_changed, once each, in order. */
  _catchUp(index) {
    if (this._closed || index <= this._cursor) return;
    const native = this._native();
    const n = this._prefix.length;
    while (this._cursor < index) {
      const page = native.registryChanges(this._prefix, this._cursor, index, WATCH_PAGE);
      for (const c of page.changes) {
        this._changesSeen++;
        const change = { key: c.key.slice(n), operation: c.value == null ? StateOperation.DELETE : StateOperation.SET, index: c.index };
        if (c.value != null) change.value = JSON.parse(c.value);
        this._emitSafely('state_changed', change);
      }
      // Below the floor the history is gone (a snapshot replaced it): nothing more to report.
      const next = Math.max(page.through, page.floor);
      if (next <= this._cursor) break;
      this._cursor = next;
    }
    this._wakeApplied();
    this._wake();
  }

  _onSnapshotInstalled({ lastIncludedIndex }) {
    if (this._closed) return;
    this._cursor = Math.max(this._cursor, lastIncludedIndex);
    this._snapshots++;
    this._lastSnapshot = { snapshotId: `snapshot-${lastIncludedIndex}`, index: lastIncludedIndex };
    this._emitSafely('snapshot_restored', { ...this._lastSnapshot, stateSize: this._stateSize() });
    this._wakeApplied();
    this._wake();
  }

  _onCompacted() {
    if (this._closed) return;
    const index = this.raftCoordinator.getState().snapshotIndex ?? this._cursor;
    this._snapshots++;
    this._lastSnapshot = { snapshotId: `snapshot-${index}`, index };
    this._emitSafely('snapshot_created', { ...this._lastSnapshot, stateSize: this._stateSize() });
  }

  _whenApplied(index, timeoutMs) {
    if (index <= this._cursor || this._closed) return undefined;
    return new Promise((resolve) => {
      const waiter = { index, resolve, timer: null };
      waiter.timer = setTimeout(() => {
        this._appliedWaiters = this._appliedWaiters.filter((w) => w !== waiter);
        resolve();
      }, timeoutMs);
      waiter.timer.unref();
      this._appliedWaiters.push(waiter);
    });
  }

  _wakeApplied() {
    if (this._appliedWaiters.length === 0) return;
    const still = [];
    for (const w of this._appliedWaiters) {
      if (w.index <= this._cursor || this._closed || this.raftCoordinator._stopped) {
        clearTimeout(w.timer);
        w.resolve();
      } else still.push(w);
    }
    this._appliedWaiters = still;
  }

  // ---- housekeeping ------------------------------------------------------------------------

  _stateSize() {
    try {
      return this._native().registryCount(this._prefix);
    } catch {
      return 0;
    }
  }

  getStats() {
    const state = this.raftCoordinator && !this.raftCoordinator._stopped ? this.raftCoordinator.getState() : null;
    return {
      stateSize: this.raftCoordinator && !this._closed ? this._stateSize() : 0,
      changeLogSize: this._changesSeen,
      snapshotCount: this._snapshots,
      lastSnapshotIndex: this._lastSnapshot ? this._lastSnapshot.index : (state && state.snapshotIndex) || 0,
      latestSnapshot: this._lastSnapshot ? this._lastSnapshot.snapshotId : null,
      appliedIndex: this._cursor,
    };
  }

  /** Stops events and watches; the coordinator and the data stay. */
  async shutdown() {
    if (this._closed) return;
    this._closed = true;
    this._releaseAll();
    this._wakeApplied();
    this._wake();
    this._emitSafely('shutdown', { nodeId: this.nodeId });
  }

  _shutdownError() {
    return new ConsensusError(ErrorCode.SHUTDOWN, 'this state machine is shut down; create a new one');
  }

  _bound() {
    if (this._closed) throw this._shutdownError();
    if (this.raftCoordinator === null) {
      throw new ConsensusError(ErrorCode.NOT_INITIALIZED, 'the state machine is not initialized; await initialize(raftCoordinator) first');
    }
    return this.raftCoordinator;
  }

  _native() {
    const rc = this._bound();
    if (rc._stopped || rc._native === null) {
      throw new ConsensusError(ErrorCode.SHUTDOWN, `node ${rc.nodeId} is stopped`);
    }
    return rc._native;
  }

  _checkKey(key, field = 'key') {
    // LMDB's key limit is in bytes: with the prefix, the key's UTF-8 must fit in MAX_KEY.
    if (typeof key !== 'string' || key.length === 0 || Buffer.byteLength(this._prefix + key) > MAX_KEY) {
      throw invalidOperation(field, `expected a non-empty string of at most ${MAX_KEY - Buffer.byteLength(this._prefix)} bytes as UTF-8`);
    }
  }

  _checkValue(value, field) {
    if (value === undefined) throw invalidOperation(field, 'expected a JSON value; use delete() to remove a key');
    if (typeof value === 'function' || typeof value === 'symbol' || typeof value === 'bigint') {
      throw invalidOperation(field, 'expected a JSON-serializable value');
    }
  }
}

function createDistributedStateMachine(config) {
  return new DistributedStateMachine(config);
}

module.exports = { DistributedStateMachine, createDistributedStateMachine, StateOperation };
