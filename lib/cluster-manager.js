'use strict';
const { ManagedEmitter } = require('./managed-emitter');
const { ConsensusError, ErrorCode, invalidConfig, invalidOperation } = require('./errors');
const { NodeHealth, CommandType } = require('./constants');
const { RaftCoordinator } = require('./raft-coordinator');
const v = require('./validate');

const DEFAULTS = Object.freeze({
  healthCheckInterval: 5000,
  healthCheckTimeout: 2000,
  maxFailedHealthChecks: 3,
  autoDiscovery: false,
  discoveryInterval: 10000,
  /** How long addNode keeps trying while the cluster has no reachable leader. */
  writeTimeoutMs: 30000,
});

const KNOWN_KEYS = ['nodeId', ...Object.keys(DEFAULTS)];

const REGISTRY_PREFIX = 'cluster/node/';
const registryKey = (nodeId) => `${REGISTRY_PREFIX}${nodeId}`;

function normalizeConfig(config) {
  v.checkObject(config, 'config');
  v.checkKnownKeys(config, KNOWN_KEYS, 'ClusterManager');
  const int = (key, min) => v.integer(config[key], key, { min, max: 2 ** 31 - 1, fallback: DEFAULTS[key] });
  return {
    nodeId: v.nodeId(config.nodeId),
    healthCheckInterval: int('healthCheckInterval', 10),
    healthCheckTimeout: int('healthCheckTimeout', 1),
    maxFailedHealthChecks: int('maxFailedHealthChecks', 1),
    autoDiscovery: v.boolean(config.autoDiscovery, 'autoDiscovery', DEFAULTS.autoDiscovery),
    discoveryInterval: int('discoveryInterval', 10),
    writeTimeoutMs: int('writeTimeoutMs', 1),
  };
}

function validateNode(node) {
  if (node === null || typeof node !== 'object') throw invalidOperation('node', 'expected an object');
  const nodeId = node.nodeId;
  if (typeof nodeId !== 'string' || !v.NODE_ID.test(nodeId)) {
    throw invalidOperation('nodeId', 'expected 1-64 characters of [A-Za-z0-9._-]');
  }
  if (typeof node.host !== 'string' || node.host.length === 0 || node.host.length > 253) {
    throw invalidOperation('host', 'expected a non-empty string');
  }
  if (!Number.isInteger(node.port) || node.port < 1 || node.port > 65535) {
    throw invalidOperation('port', 'expected an integer from 1 to 65535');
  }
  const capabilities = node.capabilities ?? [];
  if (!Array.isArray(capabilities) || capabilities.some((c) => typeof c !== 'string')) {
    throw invalidOperation('capabilities', 'expected an array of strings');
  }
  const metadata = node.metadata ?? {};
  if (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata)) {
    throw invalidOperation('metadata', 'expected a plain object');
  }
  try {
    JSON.stringify(metadata);
  } catch (err) {
    throw invalidOperation('metadata', `not JSON-serializable: ${err.message}`);
  }
  return { nodeId, host: node.host, port: node.port, capabilities: [...capabilities], metadata };
}

/**
 * Membership and node metadata, replicated through the Raft log so every node sees the same
 * members, plus health checks of each member over the Raft transport.
 */
class ClusterManager extends ManagedEmitter {
  constructor(config) {
    super();
    this.config = normalizeConfig(config);
    /** nodeId -> {nodeId, host, port, capabilities, metadata, health, joinedAt} */
    this.nodes = new Map();
    this.raft = null;
    this._health = new Map(); // nodeId -> {health, failures, lastCheck, rttMs}
    this._shutdown = false;
    this._checks = { total: 0, failed: 0 };
  }

  get nodeId() {
    return this.config.nodeId;
  }

  /** Binds to the node's RaftCoordinator and starts health checks. */
  async initialize(raftCoordinator) {
    this._assertRunning();
    if (!(raftCoordinator instanceof RaftCoordinator)) {
      throw invalidConfig('raftCoordinator', 'expected a RaftCoordinator from createRaftCoordinator()');
    }
    if (raftCoordinator.nodeId !== this.nodeId) {
      throw invalidConfig('nodeId', `this ClusterManager is for ${this.nodeId}, the coordinator is ${raftCoordinator.nodeId}`);
    }
    if (this.raft) return;
    this.raft = raftCoordinator;
    this._listen(raftCoordinator, 'command_applied', (e) => this._onApplied(e));
    this._listen(raftCoordinator, 'peer_added', (e) => this._onMember(e));
    this._listen(raftCoordinator, 'peer_removed', ({ nodeId }) => this._forget(nodeId));
    await raftCoordinator.initialize();
    // Records registered before this node (re)started live in the replicated registry.
    for (const { value } of raftCoordinator.getRegistry(REGISTRY_PREFIX)) this._upsert(value.node);
    const self = raftCoordinator.getState();
    this._upsert(
      { nodeId: this.nodeId, host: raftCoordinator.config.host, port: self.port, capabilities: [], metadata: {} },
      { local: true },
    );
    this._setHealth(this.nodeId, NodeHealth.HEALTHY);
    if (this.config.autoDiscovery) {
      for (const [nodeId, m] of Object.entries(self.membership.nodes)) this._onMember({ nodeId, host: m.host, port: m.port });
      this._every(this.config.discoveryInterval, () => this._discover());
    }
    this._every(this.config.healthCheckInterval, () => this._checkHealth());
    this._checkHealth();
  }

  /**
   * Registers a node and its capabilities for the whole cluster: the record goes through the
   * Raft log (via the leader, from any node). Safe without await: a failure is emitted as
   * `node_add_failed`, never as an unhandled rejection.
   */
  addNode(node) {
    const promise = (async () => {
      this._assertReady();
      const record = validateNode(node);
      await this._write({ type: CommandType.NODE_UPSERT, node: record }, { key: registryKey(record.nodeId) });
      return this.nodes.get(record.nodeId) ?? record;
    })();
    promise.catch((error) => this._emitSafely('node_add_failed', { nodeId: node && node.nodeId, error }));
    return promise;
  }

  /** Forgets a node's registration cluster-wide (Raft membership is changed with removePeer). */
  async removeNode(nodeId) {
    this._assertReady();
    v.nodeId(nodeId, 'nodeId');
    if (!this.nodes.has(nodeId)) throw new ConsensusError(ErrorCode.NODE_NOT_FOUND, `${nodeId} is not registered`);
    await this._write({ type: CommandType.NODE_REMOVE, nodeId }, { key: registryKey(nodeId), delete: true });
    return { nodeId, removed: true };
  }

  getNodes() {
    return [...this.nodes.values()].map((n) => ({ ...n, health: this.getNodeHealth(n.nodeId) }));
  }

  /** Healthy nodes, the local one included: in a 3-node cluster, fewer than 2 means no quorum. */
  getHealthyNodes() {
    return this.getNodes().filter((n) => n.health === NodeHealth.HEALTHY);
  }

  getNodeHealth(nodeId) {
    return this._health.get(nodeId)?.health ?? NodeHealth.UNKNOWN;
  }

  getStats() {
    const nodes = this.getNodes();
    const count = (h) => nodes.filter((n) => n.health === h).length;
    return {
      nodeId: this.nodeId,
      totalNodes: nodes.length,
      healthyNodes: count(NodeHealth.HEALTHY),
      degradedNodes: count(NodeHealth.DEGRADED),
      unhealthyNodes: count(NodeHealth.UNHEALTHY),
      unknownNodes: count(NodeHealth.UNKNOWN),
      healthChecks: this._checks.total,
      failedHealthChecks: this._checks.failed,
      leaderId: this.raft ? this.raft.leaderId : null,
      timestamp: Date.now(),
    };
  }

  /** Stops health checks and removes every listener this manager added. */
  async shutdown() {
    if (this._shutdown) return;
    this._shutdown = true;
    this._releaseAll();
    this._emitSafely('shutdown', { nodeId: this.nodeId });
  }

  /** Writes a record through the leader, retrying while no leader is reachable. */
  async _write(command, registry) {
    const deadline = Date.now() + this.config.writeTimeoutMs;
    let delay = 25;
    for (;;) {
      try {
        return await this.raft.replicateCommand(command, { forward: true, registry });
      } catch (err) {
        const retryable = err.code === ErrorCode.NOT_LEADER || err.code === ErrorCode.NO_QUORUM;
        if (!retryable || Date.now() + delay > deadline) throw err;
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 1000);
      }
    }
  }

  _onApplied({ command }) {
    if (command.type === CommandType.NODE_UPSERT) this._upsert(command.node);
    else if (command.type === CommandType.NODE_REMOVE) this._forget(command.nodeId);
  }

  /** A Raft member appeared (peer_added): with autoDiscovery it joins `nodes` right away. */
  _onMember({ nodeId, host, port }) {
    // A registered node that just became a Raft member can now answer health checks.
    if (this.nodes.has(nodeId)) this._checkHealth();
    if (!this.config.autoDiscovery || this.nodes.has(nodeId)) return;
    this._upsert({ nodeId, host, port, capabilities: [], metadata: {} });
  }

  _discover() {
    const s = this.raft.getState();
    for (const [nodeId, m] of Object.entries(s.membership.nodes)) this._onMember({ nodeId, host: m.host, port: m.port });
  }

  _upsert(record, { local = false } = {}) {
    const existing = this.nodes.get(record.nodeId);
    const entry = {
      nodeId: record.nodeId,
      host: record.host,
      port: record.port,
      capabilities: record.capabilities ?? existing?.capabilities ?? [],
      metadata: record.metadata ?? existing?.metadata ?? {},
      joinedAt: existing?.joinedAt ?? Date.now(),
      local: local || record.nodeId === this.nodeId,
    };
    this.nodes.set(record.nodeId, entry);
    if (!existing) {
      this._emitSafely('node_joined', { nodeId: entry.nodeId, metadata: entry, rejoined: false });
      // A new member's health is known at once, not only at the next interval.
      if (this.raft && !entry.local) this._checkHealth();
    }
  }

  _forget(nodeId) {
    if (!this.nodes.delete(nodeId)) return;
    this._health.delete(nodeId);
    this._emitSafely('node_left', { nodeId });
  }

  _setHealth(nodeId, health) {
    const h = this._health.get(nodeId) ?? { health: NodeHealth.UNKNOWN, failures: 0 };
    const previousHealth = h.health;
    h.health = health;
    this._health.set(nodeId, h);
    if (previousHealth === health) return;
    this._emitSafely('node_health_changed', { nodeId, health, previousHealth });
    if (health === NodeHealth.DEGRADED) this._emitSafely('health_degraded', { nodeId, health });
    if (health === NodeHealth.UNHEALTHY) this._emitSafely('node_unhealthy', { nodeId });
    if (health === NodeHealth.HEALTHY && previousHealth === NodeHealth.UNHEALTHY) {
      this._emitSafely('node_joined', { nodeId, metadata: this.nodes.get(nodeId), rejoined: true });
    }
  }

  async _checkHealth() {
    if (this._shutdown || !this.raft) return;
    if (this._checking) {
      this._recheck = true;
      return;
    }
    this._checking = true;
    this._recheck = false;
    try {
      await Promise.all(
        [...this.nodes.keys()]
          .filter((id) => id !== this.nodeId)
          .map(async (nodeId) => {
            this._checks.total++;
            const h = this._health.get(nodeId) ?? { health: NodeHealth.UNKNOWN, failures: 0 };
            this._health.set(nodeId, h);
            try {
              h.rttMs = await this.raft.ping(nodeId, this.config.healthCheckTimeout);
              h.failures = 0;
              if (this.nodes.has(nodeId)) this._setHealth(nodeId, NodeHealth.HEALTHY);
            } catch (err) {
              if (err.code === ErrorCode.SHUTDOWN) return;
              this._checks.failed++;
              h.failures++;
              if (!this.nodes.has(nodeId)) return;
              this._setHealth(
                nodeId,
                h.failures >= this.config.maxFailedHealthChecks ? NodeHealth.UNHEALTHY : NodeHealth.DEGRADED,
              );
            }
          }),
      );
      const self = this.raft.getState();
      this._setHealth(this.nodeId, self.role === 'shutdown' ? NodeHealth.UNHEALTHY : NodeHealth.HEALTHY);
    } finally {
      this._checking = false;
    }
    if (this._recheck && !this._shutdown) this._checkHealth();
  }

  _assertRunning() {
    if (this._shutdown) throw new ConsensusError(ErrorCode.SHUTDOWN, `the ClusterManager of ${this.nodeId} is shut down`);
  }

  _assertReady() {
    this._assertRunning();
    if (!this.raft) {
      throw new ConsensusError(ErrorCode.SHUTDOWN, 'the ClusterManager is not initialized; await initialize(raftCoordinator) first');
    }
  }
}

function createClusterManager(config) {
  return new ClusterManager(config);
}

module.exports = { ClusterManager, createClusterManager, DEFAULTS };
