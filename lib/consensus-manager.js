'use strict';
const { ManagedEmitter } = require('./managed-emitter');
const { ConsensusError, ErrorCode, invalidConfig, invalidOperation } = require('./errors');
const { OperationState, CommandType } = require('./constants');
const { RaftCoordinator } = require('./raft-coordinator');
const { PartitionDetector } = require('./partition-detector');
const v = require('./validate');
const metrics = require('./metrics');
const { checkSignal, withSignal, abortError } = require('./abort');

const DEFAULTS = Object.freeze({
  replicationFactor: 3,
  partitionDetectionMs: 3000,
  recoveryRetryMs: 1000,
  snapshotInterval: 1000,
  logCompactionThreshold: 5000,
  maxLogSize: 10000,
  operationTimeoutMs: 5000,
  operationTtlMs: 24 * 3600 * 1000,
  maxOperationIdLength: 256,
  maxPayloadBytes: 1024 * 1024,
});

const KNOWN_KEYS = [...Object.keys(DEFAULTS), 'operationIdWindow', 'operationIdWindowBytes', 'snapshot', 'restore'];

/**
 * How long a read of the log's length serves admission and compaction. Operations admitted or
 * finished since the read are counted on top of it, so a stale read only errs on the safe side.
 */
const LOG_LENGTH_READ_MS = 10;

const OPERATION_TYPE_JSON = JSON.stringify(CommandType.OPERATION);

/** What one remembered operation id counts against operationIdWindowBytes (as in the core). */
function idBytes(id) {
  return Buffer.byteLength(id) + 32;
}

/**
 * What this node knows of operations beyond the core's id registry (which says where each
 * remembered id was applied here): operations that failed here, and what the daemon reported of
 * executing them. Bounded as the registry is: the most recent `maxIds` ids within `maxBytes`,
 * oldest forgotten first. An operation that commits and executes quietly leaves no record.
 */
class OperationRecords {
  constructor(maxIds, maxBytes) {
    this.maxIds = maxIds;
    this.maxBytes = maxBytes;
    this.bytes = 0;
    this._records = new Map();
    // One iterator kept from the front: every key behind it was evicted, so its next key is the
    // oldest. Asking a Map for its first key afresh instead walks over every slot freed since the
    // Map last compacted, tens of microseconds per eviction once the window is full.
    this._oldest = this._records.keys();
  }

  get size() {
    return this._records.size;
  }

  get(id) {
    return this._records.get(id);
  }

  /** The record of `id`, created (at the end) when there is none. */
  record(id) {
    let r = this._records.get(id);
    if (!r) {
      r = { failed: false, updatedAt: 0, execution: null };
      this._records.set(id, r);
      this.bytes += idBytes(id);
      this._evict();
    }
    r.updatedAt = Date.now();
    return r;
  }

  delete(id) {
    if (this._records.delete(id)) this.bytes -= idBytes(id);
  }

  [Symbol.iterator]() {
    return this._records.entries();
  }

  _evict() {
    while (this._records.size > 1 && (this._records.size > this.maxIds || this.bytes > this.maxBytes)) {
      let oldest = this._oldest.next();
      if (oldest.done) {
        this._oldest = this._records.keys();
        oldest = this._oldest.next();
      }
      this.delete(oldest.value);
    }
  }
}

function normalizeConfig(config = {}, coordinatorConfig = {}) {
  v.checkObject(config, 'config');
  v.checkKnownKeys(config, KNOWN_KEYS, 'ConsensusManager');
  const int = (key, min, max = 2 ** 31 - 1) => v.integer(config[key], key, { min, max, fallback: DEFAULTS[key] });
  const c = {
    replicationFactor: int('replicationFactor', 1, 99),
    partitionDetectionMs: int('partitionDetectionMs', 10),
    recoveryRetryMs: int('recoveryRetryMs', 10),
    snapshotInterval: int('snapshotInterval', 1),
    logCompactionThreshold: int('logCompactionThreshold', 2),
    maxLogSize: int('maxLogSize', 3),
    operationTimeoutMs: int('operationTimeoutMs', 1),
    operationTtlMs: v.integer(config.operationTtlMs, 'operationTtlMs', {
      min: 0,
      max: Number.MAX_SAFE_INTEGER,
      fallback: DEFAULTS.operationTtlMs,
    }),
    maxOperationIdLength: int('maxOperationIdLength', 1, 4096),
    maxPayloadBytes: int('maxPayloadBytes', 1, 64 * 1024 * 1024),
    // The coordinator's window by default: the records here then answer as its registry does.
    operationIdWindow: v.integer(config.operationIdWindow, 'operationIdWindow', {
      min: 1,
      max: 2 ** 31 - 1,
      fallback: coordinatorConfig.operationIdWindow,
    }),
    operationIdWindowBytes: v.integer(config.operationIdWindowBytes, 'operationIdWindowBytes', {
      min: 1024,
      max: Number.MAX_SAFE_INTEGER,
      fallback: coordinatorConfig.operationIdWindowBytes,
    }),
    snapshot: config.snapshot,
    restore: config.restore,
  };
  if (c.maxLogSize <= c.logCompactionThreshold) {
    throw invalidConfig('maxLogSize', `must be greater than logCompactionThreshold (${c.logCompactionThreshold})`);
  }
  for (const key of ['snapshot', 'restore']) {
    if (c[key] !== undefined && typeof c[key] !== 'function') throw invalidConfig(key, 'expected a function');
  }
  if ((c.snapshot === undefined) !== (c.restore === undefined)) {
    throw invalidConfig(c.snapshot === undefined ? 'snapshot' : 'restore', 'snapshot and restore go together');
  }
  return c;
}

/**
 * The guide's operation log over a RaftCoordinator: validated, idempotent operations replicated
 * to a majority and handed to every node's daemon in log order, with partition detection,
 * compaction, graceful removal and metrics.
 */
class ConsensusManager extends ManagedEmitter {
  constructor(daemon, raftCoordinator, clusterManager, config = {}) {
    super();
    if (daemon === null || typeof daemon !== 'object' || typeof daemon.on !== 'function') {
      throw invalidConfig('daemon', 'expected an EventEmitter (the daemon)');
    }
    if (!(raftCoordinator instanceof RaftCoordinator)) {
      throw invalidConfig('raftCoordinator', 'expected a RaftCoordinator from createRaftCoordinator()');
    }
    if (clusterManager !== null && clusterManager !== undefined && typeof clusterManager.getHealthyNodes !== 'function') {
      throw invalidConfig('clusterManager', 'expected a ClusterManager (or null)');
    }
    this.daemon = daemon;
    this.raft = raftCoordinator;
    this.clusterManager = clusterManager ?? null;
    this.config = normalizeConfig(config, raftCoordinator.config);

    this._partitions = new PartitionDetector(this.raft, this.config, (name, payload) => this._emitSafely(name, payload));
    this._initialized = false;
    this._shutdown = false;
    /** id -> {state, logIndex, term, updatedAt, execution}, within the operation id window */
    this._operations = new OperationRecords(this.config.operationIdWindow, this.config.operationIdWindowBytes);
    /** id -> in-flight promise of the first submission */
    this._inFlight = new Map();
    this._counters = new metrics.ManagerCounters();
    metrics.track('manager', this);
    this._compacting = false;
    this._admitted = 0;
    /** The log's length as last read, when, and the operations finished since. */
    this._logLength = { value: 0, readAt: -Infinity, finishedSince: 0 };
    this._reportedVoterCount = null;
    this._factorCheck = null;

    // Listen from construction on: a node catching up right after initialize() hands its
    // committed operations to us, in order, with nothing missed.
    this._listen(this.raft, 'command_applied', (e) => this._onApplied(e));
    this._listen(this.raft, 'snapshot_installed', (e) => this._onSnapshotInstalled(e));
    if (this.config.snapshot) {
      // The application's state travels in every snapshot, as a Raft FSM's does.
      this.raft.setSnapshotProvider((info) => this.config.snapshot(info));
    }
    this._listen(this.raft, 'leader_elected', ({ leaderId, term }) => {
      this._emitSafely('consensus:leader_elected', { leaderId, term, isLeader: leaderId === this.nodeId });
    });
    this._listen(this.raft, 'leader_lost', (e) => this._emitSafely('consensus:leader_lost', e));
    this._listen(this.raft, 'term_updated', (e) => this._emitSafely('consensus:term_updated', e));
    this._listen(this.raft, 'log_compacted', (e) => this._onPurged(e));
    this._listen(this.raft, 'peer_added', () => this._scheduleReplicationFactorCheck());
    this._listen(this.raft, 'peer_removed', () => this._scheduleReplicationFactorCheck());
    this._listen(this.daemon, 'operation:success', (e) => this._onExecution(e, true));
    this._listen(this.daemon, 'operation:failure', (e) => this._onExecution(e, false));
  }

  /** What JSON.stringify shows: identity and config (the coordinator and daemon stay out). */
  toJSON() {
    return { nodeId: this.nodeId, config: this.config };
  }

  get nodeId() {
    return this.raft.nodeId;
  }

  get isLeader() {
    return this.raft.isLeader;
  }

  get leaderId() {
    return this.raft.leaderId;
  }

  get currentTerm() {
    return this.raft.currentTerm;
  }

  /** `healthy`, `partitioned` or `recovering` (see lib/partition-detector.js). */
  get partitionState() {
    return this._partitions.state;
  }

  /** When this node last heard from the leader (or a majority), ms since epoch. */
  get lastHeartbeat() {
    return this._partitions.lastHeartbeat;
  }

  /** Starts partition detection and compaction; initializes the coordinator if needed. */
  async initialize() {
    this._assertRunning();
    if (this._initialized) return;
    await this.raft.initialize();
    this._initialized = true;
    this._scheduleReplicationFactorCheck();
    this._every(this._partitions.tickMs, () => {
      if (!this._shutdown) this._partitions.check();
    });
    this._every(Math.max(50, Math.min(1000, this.config.snapshotInterval)), () => this._maybeCompact());
    this._every(Math.max(1000, Math.min(60000, this.config.operationTtlMs)), () => this._expireOperations());
    this._emitSafely('consensus:initialized', { nodeId: this.nodeId });
  }

  /**
   * Replicates an operation `{id, daemonId, type, payload, timestamp}`. Resolves
   * `{operationId, replicated, committed, logIndex, term}` once a majority holds it durably and
   * it is committed; the same id again resolves to the first result with `duplicate: true`.
   * `options.timeoutMs` overrides operationTimeoutMs; `options.signal` (an AbortSignal) makes
   * the call reject at once with an AbortError when it aborts (an operation already proposed
   * may still commit: retry with the same id to learn its fate).
   */
  replicateOperation(operation, options = {}) {
    // Not an async function: the promise of the write itself goes back, without the turns of
    // the microtask queue an async function takes to adopt one.
    let op, signal, timeoutMs;
    try {
      this._assertRunning();
      op = this._validateOperation(operation);
      signal = checkSignal(options?.signal);
      timeoutMs =
        options?.timeoutMs === undefined
          ? this.config.operationTimeoutMs
          : v.integer(options.timeoutMs, 'timeoutMs', { min: 1, max: 2 ** 31 - 1 });
      if (signal?.aborted) throw abortError(signal);
    } catch (err) {
      return Promise.reject(err);
    }
    const pending = this._inFlight.get(op.id);
    if (pending) {
      this._counters.duplicates++;
      return withSignal(signal, pending.then((r) => ({ ...r, duplicate: true })));
    }
    const attempt = this._replicate(op, timeoutMs);
    this._inFlight.set(op.id, attempt);
    const settled = attempt.finally(() => this._inFlight.delete(op.id));
    // With a signal the caller may stop waiting for this promise: its failure is still handled.
    if (signal) settled.catch(() => {});
    return withSignal(signal, settled);
  }

  async _replicate(op, timeoutMs) {
    const started = process.hrtime.bigint();
    let admitted = false;
    try {
      // Most operations find room at once: no await, so no extra turn of the microtask queue.
      if (!this._tryAdmit()) await this._admit(Date.now() + timeoutMs);
      admitted = true;
      const r = await this.raft._replicateJson(op.json, { operationId: op.id, timeoutMs });
      const result = { operationId: op.id, replicated: true, committed: true, logIndex: r.logIndex, term: r.term };
      if (r.duplicate) {
        this._counters.duplicates++;
        result.duplicate = true;
      } else {
        this._counters.replicated++;
        this._counters.latency.observe(Number(process.hrtime.bigint() - started) / 1e9);
      }
      const earlier = this._operations.get(op.id);
      if (earlier) earlier.failed = false;
      return result;
    } catch (err) {
      this._counters.failed++;
      this._operations.record(op.id).failed = true;
      this._emitSafely('consensus:operation_failed', { operationId: op.id, error: err });
      throw err;
    } finally {
      if (admitted) {
        this._admitted--;
        this._logLength.finishedSince++;
      }
    }
  }

  /**
   * The log's length for admission and compaction: read from the coordinator at most every
   * LOG_LENGTH_READ_MS, plus every admitted operation that finished since (each may have added
   * an entry), so the read is not repeated for every operation.
   */
  _logLengthBound() {
    const l = this._logLength;
    const now = Date.now();
    if (now - l.readAt >= LOG_LENGTH_READ_MS) {
      l.value = this.raft.getState().logLength;
      l.readAt = now;
      l.finishedSince = 0;
    }
    return l.value + l.finishedSince;
  }

  /**
   * Backpressure that keeps the log within maxLogSize: an operation is admitted only while the
   * log plus the operations in flight fit; otherwise it waits for compaction. Compaction can lag
   * when a follower is unreachable (the leader keeps the entries it still tries to send), so this
   * wait is what makes the bound hold.
   */
  async _admit(deadline) {
    while (!this._tryAdmit()) {
      this._maybeCompact();
      if (Date.now() >= deadline) {
        throw new ConsensusError(
          ErrorCode.TIMEOUT,
          `the log is at maxLogSize (${this.config.maxLogSize}) and could not be compacted in time; ` +
            'an unreachable follower can hold compaction back: check the cluster health',
        );
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Admits an operation now if the log has room for it (see _admit). */
  _tryAdmit() {
    if (this._logLengthBound() + this._admitted >= this.config.maxLogSize) return false;
    this._admitted++;
    return true;
  }

  _validateOperation(operation) {
    if (!v.isPlainObject(operation)) throw invalidOperation('operation', 'expected a plain object');
    const { id, daemonId, type, payload, timestamp } = operation;
    if (typeof id !== 'string' || id.length === 0) throw invalidOperation('id', 'expected a non-empty string');
    if (id.length > this.config.maxOperationIdLength) {
      throw invalidOperation('id', `longer than ${this.config.maxOperationIdLength} characters`);
    }
    if (typeof type !== 'string' || type.length === 0) throw invalidOperation('type', 'expected a non-empty string');
    if (type.length > 256) throw invalidOperation('type', 'longer than 256 characters');
    if (daemonId !== undefined && typeof daemonId !== 'string') throw invalidOperation('daemonId', 'expected a string');
    if (timestamp !== undefined && !Number.isFinite(timestamp)) {
      throw invalidOperation('timestamp', 'expected a finite number (ms since epoch)');
    }
    if (payload !== undefined && !v.isPlainObject(payload)) throw invalidOperation('payload', 'expected a plain object');
    let payloadJson;
    try {
      payloadJson = JSON.stringify(payload ?? {});
    } catch (err) {
      throw invalidOperation('payload', `not JSON-serializable: ${err.message}`);
    }
    const max = this.config.maxPayloadBytes;
    // A UTF-16 unit takes at most 3 bytes of UTF-8: most payloads need no count.
    const bytes = payloadJson.length * 3 <= max ? payloadJson.length : Buffer.byteLength(payloadJson);
    if (bytes > max) {
      throw invalidOperation('payload', `${bytes} bytes as JSON, over the limit of ${max}`);
    }
    // The command's text, made once and now: the caller may change its objects after this call
    // returns, and the log holds what they were when it was made.
    const json =
      `{"type":${OPERATION_TYPE_JSON},"operation":{"id":${JSON.stringify(id)},` +
      `"daemonId":${daemonId === undefined ? 'null' : JSON.stringify(daemonId)},"type":${JSON.stringify(type)},` +
      `"payload":${payloadJson},"timestamp":${JSON.stringify(timestamp ?? Date.now())}}}`;
    return { id, json };
  }

  /**
   * State of an operation this node knows: `{state, logIndex, term, execution}`, or null once
   * its id left the operation id window (or its TTL passed). `committed` is for an operation
   * applied on this node (with where), `pending` while this node replicates it, `failed` when
   * that failed and it has not been applied here since.
   */
  getOperationState(operationId) {
    if (typeof operationId !== 'string' || operationId.length === 0) return null;
    const r = this._operations.get(operationId);
    const execution = r ? r.execution : null;
    const applied = this._appliedHere(operationId);
    if (applied) return { state: OperationState.COMMITTED, logIndex: applied.logIndex, term: applied.term, execution };
    if (this._inFlight.has(operationId)) return { state: OperationState.PENDING, logIndex: null, term: null, execution };
    if (!r) return null;
    // Executed by the daemon, so committed, and since forgotten by the registry.
    const state = r.failed && execution === null ? OperationState.FAILED : OperationState.COMMITTED;
    return { state, logIndex: null, term: null, execution };
  }

  /** Where the core's registry says `operationId` was applied on this node, or null. */
  _appliedHere(operationId) {
    try {
      return this.raft.getOperation(operationId);
    } catch (err) {
      // A stopped coordinator has no registry to read.
      if (err.code === ErrorCode.SHUTDOWN) return null;
      throw err;
    }
  }

  _onApplied({ command, entry, redelivered }) {
    if (command.type !== CommandType.OPERATION) return;
    const op = command.operation;
    this._counters.committed++;
    this._emitSafely('consensus:operation_committed', {
      operation: op,
      logIndex: entry.index,
      term: entry.term,
      redelivered: redelivered === true,
    });
    this._maybeCompact();
  }

  _onSnapshotInstalled({ lastIncludedIndex, term, appState, redelivered }) {
    if (this.config.restore && appState !== null && appState !== undefined) {
      try {
        const restored = this.config.restore(appState, { lastIncludedIndex, term });
        if (restored && typeof restored.catch === 'function') {
          restored.catch((err) => this._emitSafely('consensus:warning', err));
        }
      } catch (err) {
        this._emitSafely('consensus:warning', err);
      }
    }
    this._emitSafely('consensus:snapshot_installed', { lastIncludedIndex, term, redelivered: redelivered === true });
  }

  _onExecution(event, success) {
    const id = event && (event.operationId ?? event.id);
    if (typeof id !== 'string') return;
    this._operations.record(id).execution = success ? 'success' : 'failure';
    if (success) this._counters.executionsSucceeded++;
    else this._counters.executionsFailed++;
  }

  _expireOperations() {
    const cutoff = Date.now() - this.config.operationTtlMs;
    for (const [id, r] of this._operations) {
      if (r.updatedAt < cutoff && !this._inFlight.has(id)) this._operations.delete(id);
    }
  }

  /**
   * Reports a voter count that differs from replicationFactor once membership has been stable
   * for partitionDetectionMs, so a cluster in the middle of forming is not reported.
   */
  _scheduleReplicationFactorCheck() {
    if (!this._initialized || this._shutdown) return;
    if (this._factorCheck) clearTimeout(this._factorCheck);
    this._factorCheck = setTimeout(() => {
      this._factorCheck = null;
      const voters = this.raft.getState().membership.voters.length;
      if (voters === 0 || voters === this.config.replicationFactor || voters === this._reportedVoterCount) return;
      this._reportedVoterCount = voters;
      this._emitSafely(
        'consensus:warning',
        new ConsensusError(
          ErrorCode.INVALID_CONFIG,
          `replicationFactor is ${this.config.replicationFactor} but the cluster has ${voters} voters; add or remove nodes, or change replicationFactor`,
          { field: 'replicationFactor' },
        ),
      );
    }, this.config.partitionDetectionMs);
    this._factorCheck.unref();
  }

  _maybeCompact() {
    if (!this._initialized || this._shutdown || this._compacting) return;
    if (this._logLengthBound() < this.config.logCompactionThreshold) return;
    // Keep some entries for followers that are slightly behind, but stay well under maxLogSize.
    const keep = Math.max(
      0,
      Math.min(this.raft.config.logsKeptAfterSnapshot, Math.floor((this.config.maxLogSize - this.config.logCompactionThreshold) / 2)),
    );
    this._compacting = true;
    this.raft
      .compact(keep)
      .catch((err) => {
        if (err.code !== ErrorCode.SHUTDOWN) this._emitSafely('consensus:warning', err);
      })
      .finally(() => {
        this._compacting = false;
        this._logLength.readAt = -Infinity;
      });
  }

  _onPurged({ entriesRemoved }) {
    this._counters.compactions++;
    this._counters.entriesCompacted += entriesRemoved;
    this._logLength.readAt = -Infinity;
    this._emitSafely('log:compacted', { entriesRemoved, entriesRemaining: this._logLengthBound() });
  }

  /**
   * Removes a member from the cluster once it holds every entry (leader only). Removing the
   * leader itself hands leadership to the most up-to-date voter first.
   */
  async removeNodeGracefully(nodeId) {
    this._assertRunning();
    v.nodeId(nodeId, 'nodeId');
    const s = this.raft.getState();
    if (!s.isLeader) {
      throw new ConsensusError(ErrorCode.NOT_LEADER, `only the leader removes nodes; the leader is ${s.leaderId ?? 'unknown'}`, {
        leaderId: s.leaderId,
      });
    }
    if (!s.membership.nodes[nodeId]) {
      throw new ConsensusError(ErrorCode.NODE_NOT_FOUND, `${nodeId} is not a member of this cluster`);
    }
    const deadline = Date.now() + this.config.operationTimeoutMs * 4;
    if (nodeId === this.nodeId) {
      const successor = s.membership.voters
        .filter((id) => id !== nodeId)
        .sort((a, b) => (s.replication[b] ?? -1) - (s.replication[a] ?? -1))[0];
      if (!successor) {
        throw new ConsensusError(ErrorCode.NODE_NOT_FOUND, 'the leader is the only voter; there is nobody to hand over to');
      }
      await this.raft.transferLeadership(successor, this.config.operationTimeoutMs);
      await this.raft.removePeer(nodeId, { forward: true });
      return { nodeId, removed: true };
    }
    // Wait until the node holds every entry the leader has.
    const target = s.lastLogIndex;
    for (;;) {
      const now = this.raft.getState();
      if (!now.isLeader) {
        throw new ConsensusError(ErrorCode.NOT_LEADER, `leadership moved to ${now.leaderId ?? 'unknown'} during the removal`, {
          leaderId: now.leaderId,
        });
      }
      if ((now.replication[nodeId] ?? -1) >= target) break;
      if (Date.now() > deadline) {
        throw new ConsensusError(ErrorCode.TIMEOUT, `${nodeId} did not catch up to index ${target} in time; it was not removed`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    await this.raft.removePeer(nodeId);
    return { nodeId, removed: true };
  }

  getConsensusState() {
    const s = this.raft.getState();
    return {
      nodeId: this.nodeId,
      isLeader: s.isLeader,
      leaderId: s.leaderId,
      currentTerm: s.term,
      logSize: s.logLength,
      commitIndex: s.commitIndex,
      lastAppliedIndex: s.lastApplied,
      partitionState: this.partitionState,
      replicatedOperationsCount: this._counters.replicated,
      timestamp: Date.now(),
    };
  }

  /** The guide's dashboard keys, plus a few more an operator needs (see lib/metrics.js). */
  getMetrics() {
    return metrics.managerMetrics(this);
  }

  /**
   * This node's metrics in the Prometheus text exposition format (see lib/metrics.js for the
   * families); `registerMetrics(registry)` adds every node of the process to a prom-client
   * registry instead.
   */
  prometheusMetrics() {
    return metrics.metricsText({ coordinators: [this.raft], managers: [this] });
  }

  /**
   * Serves the admin endpoint of this node (see RaftCoordinator#listenAdmin); `/metrics` is
   * prometheusMetrics() and `/health` also reports a detected partition.
   */
  listenAdmin(options = {}) {
    if (this._shutdown) return Promise.reject(new ConsensusError(ErrorCode.SHUTDOWN, `the ConsensusManager of ${this.nodeId} is shut down`));
    return require('./admin-server').listenAdmin(this.raft, this, options);
  }

  /** Stops timers and removes every listener this manager added. Data and the coordinator stay. */
  async shutdown() {
    if (this._shutdown) return;
    this._shutdown = true;
    metrics.untrack('manager', this);
    this._releaseAll();
    if (this._factorCheck) clearTimeout(this._factorCheck);
    // The daemon no longer follows the log: its state must not go into a snapshot of a later
    // index, and a snapshot without it would restore a daemon that rebuilds from snapshots to
    // nothing. Until the node stops, snapshots are declined and the log is kept.
    if (this.config.snapshot && !this.raft._stopped) this.raft._withholdSnapshots();
    this._emitSafely('consensus:shutdown', { nodeId: this.nodeId });
  }

  _assertRunning() {
    if (this._shutdown) {
      throw new ConsensusError(ErrorCode.SHUTDOWN, `the ConsensusManager of ${this.nodeId} is shut down`);
    }
  }
}

function createConsensusManager(daemon, raftCoordinator, clusterManager, config) {
  return new ConsensusManager(daemon, raftCoordinator, clusterManager, config);
}

module.exports = { ConsensusManager, createConsensusManager, DEFAULTS };
