'use strict';
const { ManagedEmitter } = require('./managed-emitter');
const { ConsensusError, ErrorCode, invalidConfig, invalidOperation } = require('./errors');
const { PartitionState, OperationState, CommandType } = require('./constants');
const { RaftCoordinator } = require('./raft-coordinator');
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

const KNOWN_KEYS = [...Object.keys(DEFAULTS), 'snapshot', 'restore'];

/** Commit-latency histogram buckets, in seconds. */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

const PARTITION_STATE_VALUE = { healthy: 0, recovering: 1, partitioned: 2 };

function normalizeConfig(config = {}) {
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
    this.config = normalizeConfig(config);

    this.partitionState = PartitionState.HEALTHY;
    this.lastHeartbeat = 0;
    this._initialized = false;
    this._shutdown = false;
    /** id -> {state, logIndex, term, updatedAt, execution} */
    this._operations = new Map();
    /** id -> in-flight promise of the first submission */
    this._inFlight = new Map();
    this._counters = {
      replicated: 0,
      committed: 0,
      failed: 0,
      duplicates: 0,
      partitionsDetected: 0,
      compactions: 0,
      entriesCompacted: 0,
      executionsSucceeded: 0,
      executionsFailed: 0,
    };
    this._latency = { bounds: LATENCY_BUCKETS, buckets: LATENCY_BUCKETS.map(() => 0), sum: 0, count: 0 };
    metrics.track('manager', this);
    this._compacting = false;
    this._admitted = 0;
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

  /** Starts partition detection and compaction; initializes the coordinator if needed. */
  async initialize() {
    this._assertRunning();
    if (this._initialized) return;
    await this.raft.initialize();
    this._initialized = true;
    this._scheduleReplicationFactorCheck();
    const tick = Math.max(10, Math.min(250, Math.floor(this.config.partitionDetectionMs / 4)));
    this._every(tick, () => this._checkPartition());
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
  async replicateOperation(operation, options = {}) {
    this._assertRunning();
    const op = this._validateOperation(operation);
    const signal = checkSignal(options?.signal);
    const timeoutMs =
      options?.timeoutMs === undefined
        ? this.config.operationTimeoutMs
        : v.integer(options.timeoutMs, 'timeoutMs', { min: 1, max: 2 ** 31 - 1 });
    if (signal?.aborted) throw abortError(signal);
    const known = this._operations.get(op.id);
    if (known && known.state === OperationState.COMMITTED && known.result) {
      this._counters.duplicates++;
      return { ...known.result, duplicate: true };
    }
    const pending = this._inFlight.get(op.id);
    if (pending) {
      this._counters.duplicates++;
      return withSignal(signal, pending.then((r) => ({ ...r, duplicate: true })));
    }
    const attempt = this._replicate(op, timeoutMs);
    this._inFlight.set(op.id, attempt);
    const settled = attempt.finally(() => this._inFlight.delete(op.id));
    settled.catch(() => {});
    return withSignal(signal, settled);
  }

  async _replicate(op, timeoutMs) {
    this._setState(op.id, OperationState.PENDING);
    const started = process.hrtime.bigint();
    let admitted = false;
    try {
      await this._admit(Date.now() + timeoutMs);
      admitted = true;
      const r = await this.raft.replicateCommand(
        { type: CommandType.OPERATION, operation: op },
        { operationId: op.id, timeoutMs },
      );
      this._observeLatency(Number(process.hrtime.bigint() - started) / 1e9);
      const result = { operationId: op.id, replicated: true, committed: true, logIndex: r.logIndex, term: r.term };
      if (r.duplicate) {
        this._counters.duplicates++;
        result.duplicate = true;
      } else {
        this._counters.replicated++;
      }
      const record = this._setState(op.id, OperationState.COMMITTED, r.logIndex, r.term);
      record.result = { operationId: op.id, replicated: true, committed: true, logIndex: r.logIndex, term: r.term };
      return result;
    } catch (err) {
      this._counters.failed++;
      this._setState(op.id, OperationState.FAILED);
      this._emitSafely('consensus:operation_failed', { operationId: op.id, error: err });
      throw err;
    } finally {
      if (admitted) this._admitted--;
    }
  }

  /**
   * Backpressure that keeps the log within maxLogSize: an operation is admitted only while the
   * log plus the operations in flight fit; otherwise it waits for compaction. Compaction can lag
   * when a follower is unreachable (the leader keeps the entries it still tries to send), so this
   * wait is what makes the bound hold.
   */
  async _admit(deadline) {
    for (;;) {
      const { logLength } = this.raft.getState();
      if (logLength + this._admitted < this.config.maxLogSize) break;
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
    this._admitted++;
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
    let json;
    try {
      json = JSON.stringify(payload ?? {});
    } catch (err) {
      throw invalidOperation('payload', `not JSON-serializable: ${err.message}`);
    }
    const bytes = Buffer.byteLength(json);
    if (bytes > this.config.maxPayloadBytes) {
      throw invalidOperation('payload', `${bytes} bytes as JSON, over the limit of ${this.config.maxPayloadBytes}`);
    }
    return {
      id,
      daemonId: daemonId ?? null,
      type,
      payload: JSON.parse(json),
      timestamp: timestamp ?? Date.now(),
    };
  }

  _setState(id, state, logIndex, term) {
    let record = this._operations.get(id);
    if (!record) {
      record = { state, logIndex: null, term: null, updatedAt: Date.now(), execution: null };
      this._operations.set(id, record);
    }
    record.state = state;
    record.updatedAt = Date.now();
    if (logIndex !== undefined) record.logIndex = logIndex;
    if (term !== undefined) record.term = term;
    return record;
  }

  /** State of an operation this node knows: `{state, logIndex, term, execution}` or null. */
  getOperationState(operationId) {
    const r = this._operations.get(operationId);
    if (!r) return null;
    return { state: r.state, logIndex: r.logIndex, term: r.term, execution: r.execution };
  }

  _onApplied({ command, entry, redelivered }) {
    if (command.type !== CommandType.OPERATION) return;
    const op = command.operation;
    const record = this._setState(op.id, OperationState.COMMITTED, entry.index, entry.term);
    if (!record.result) {
      record.result = { operationId: op.id, replicated: true, committed: true, logIndex: entry.index, term: entry.term };
    }
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
    const record = this._operations.get(id);
    if (record) record.execution = success ? 'success' : 'failure';
    if (success) this._counters.executionsSucceeded++;
    else this._counters.executionsFailed++;
  }

  _observeLatency(seconds) {
    const h = this._latency;
    h.sum += seconds;
    h.count++;
    for (let i = 0; i < LATENCY_BUCKETS.length; i++) if (seconds <= LATENCY_BUCKETS[i]) h.buckets[i]++;
  }

  _expireOperations() {
    const cutoff = Date.now() - this.config.operationTtlMs;
    for (const [id, r] of this._operations) {
      if (r.updatedAt < cutoff && !this._inFlight.has(id)) this._operations.delete(id);
    }
  }

  /** The partition state machine: healthy -> partitioned -> recovering -> healthy. */
  _checkPartition() {
    if (this._shutdown) return;
    const s = this.raft.getState();
    if (s.membership.voters.length === 0) return; // not in a cluster yet
    const now = Date.now();
    if (s.lastContact > 0) this.lastHeartbeat = s.lastContact;
    const age = s.lastContact > 0 ? now - s.lastContact : Infinity;
    const alone = s.membership.voters.length === 1 && s.membership.voters[0] === s.nodeId;
    const lost = !alone && (s.isLeader ? age > this.config.partitionDetectionMs : !s.leaderId || age > this.config.partitionDetectionMs);
    if (this.partitionState === PartitionState.HEALTHY && lost) {
      if (this._lostSince === undefined) this._lostSince = now;
      // A fresh follower that never heard a leader waits out one detection period first.
      if (s.lastContact === 0 && now - this._lostSince < this.config.partitionDetectionMs) return;
      this.partitionState = PartitionState.PARTITIONED;
      this._counters.partitionsDetected++;
      this._emitSafely('partition:detected', { nodeId: this.nodeId, health: 'unhealthy' });
    } else if (this.partitionState === PartitionState.PARTITIONED && !lost) {
      this.partitionState = PartitionState.RECOVERING;
      this._emitSafely('partition:recovered', { newLeader: s.leaderId });
    } else if (this.partitionState === PartitionState.RECOVERING) {
      if (lost) {
        this.partitionState = PartitionState.PARTITIONED;
        this._counters.partitionsDetected++;
        this._emitSafely('partition:detected', { nodeId: this.nodeId, health: 'unhealthy' });
      } else if (s.lastApplied >= s.commitIndex) {
        this.partitionState = PartitionState.HEALTHY;
        this._emitSafely('partition:healthy', { leaderId: s.leaderId });
      }
    }
    if (!lost) this._lostSince = undefined;
    if (this.partitionState === PartitionState.PARTITIONED) this._probeForRecovery(s, now);
  }

  /**
   * While partitioned, every recoveryRetryMs: a round trip to each member, which also makes the
   * transport redial at once instead of after its backoff, so the node rejoins soon after the
   * network heals.
   */
  _probeForRecovery(s, now) {
    if (now - (this._lastRecoveryProbe ?? 0) < this.config.recoveryRetryMs) return;
    this._lastRecoveryProbe = now;
    const timeout = Math.max(1, Math.min(this.config.recoveryRetryMs, 2000));
    for (const id of s.membership.voters) {
      if (id !== this.nodeId) this.raft.ping(id, timeout).catch(() => {});
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
    const s = this.raft.getState();
    if (s.logLength < this.config.logCompactionThreshold) return;
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
      });
  }

  _onPurged({ entriesRemoved }) {
    this._counters.compactions++;
    this._counters.entriesCompacted += entriesRemoved;
    this._emitSafely('log:compacted', { entriesRemoved, entriesRemaining: this.raft.getState().logLength });
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

  /** The guide's dashboard keys, plus a few more an operator needs. */
  getMetrics() {
    const s = this.raft.getState();
    const healthy = this.clusterManager ? this.clusterManager.getHealthyNodes().length : null;
    const total = this.clusterManager ? this.clusterManager.nodes.size : s.membership.voters.length;
    return {
      'consensus.leader_id': s.leaderId,
      'consensus.is_leader': s.isLeader ? 1 : 0,
      'consensus.current_term': s.term,
      'consensus.partition_state': PARTITION_STATE_VALUE[this.partitionState],
      'consensus.log_size': s.logLength,
      'consensus.operations.replicated': this._counters.replicated,
      'consensus.operations.committed': this._counters.committed,
      'consensus.operations.failed': this._counters.failed,
      'consensus.operations.duplicates': this._counters.duplicates,
      'consensus.partitions_detected': this._counters.partitionsDetected,
      'consensus.commit_index': s.commitIndex,
      'consensus.last_applied_index': s.lastApplied,
      'consensus.compactions': this._counters.compactions,
      'cluster.healthy_nodes': healthy,
      'cluster.total_nodes': total,
    };
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
    if (this.config.snapshot && !this.raft._stopped) this.raft.setSnapshotProvider(null);
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
