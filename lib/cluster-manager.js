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
  /** This node's own capabilities and metadata, published in its record once it is a member. */
  capabilities: Object.freeze([]),
  metadata: Object.freeze({}),
});

const KNOWN_KEYS = ['nodeId', ...Object.keys(DEFAULTS)];

// Two records per node, under separate keys so neither writer can overwrite the other: what
// addNode registered (any node may call it, for any node) and what the node says about itself.
// Every node merges the two the same way (mergeRecords), so every node shows the same view.
const REGISTRY_PREFIX = 'cluster/node/';
const SELF_PREFIX = 'cluster/self/';
const registryKey = (nodeId) => `${REGISTRY_PREFIX}${nodeId}`;
const selfKey = (nodeId) => `${SELF_PREFIX}${nodeId}`;

// Retries of the self-record write back off up to this; a cluster without a leader for longer
// still gets the record within a second of having one again.
const SELF_RETRY_MAX_MS = 1000;
// A dial on loopback or a LAN completes well within this.
const REDIAL_WAIT_MS = 100;

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
    capabilities: capabilitiesConfig(config.capabilities),
    metadata: metadataConfig(config.metadata),
  };
}

function capabilitiesConfig(value) {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.some((c) => typeof c !== 'string' || c.length === 0 || c.length > 256)) {
    throw invalidConfig('capabilities', 'expected an array of non-empty strings of at most 256 characters');
  }
  return [...value];
}

function metadataConfig(value) {
  if (value === undefined) return {};
  if (!v.isPlainObject(value)) throw invalidConfig('metadata', 'expected a plain object');
  let json;
  try {
    json = JSON.stringify(value);
  } catch (err) {
    throw invalidConfig('metadata', `not JSON-serializable: ${err.message}`);
  }
  // A copy as it will be replicated: later changes to the caller's object do not leak in.
  return JSON.parse(json);
}

/**
 * The view of a node from its records, the same on every node. The node's own record wins on
 * the address (it knows where it listens; an operator's addNode may be stale or mistyped);
 * capabilities come from its own config when it declares any, otherwise from addNode (the guide
 * registers them that way); metadata is merged key by key, the node's own keys winning. A node
 * only discovered as a Raft member (autoDiscovery) fills in what neither record has.
 */
function mergeRecords(own, added, discovered) {
  const address = own ?? added ?? discovered;
  const capabilities = [own, added].map((r) => r?.capabilities ?? []).find((c) => c.length > 0) ?? [];
  return {
    nodeId: address.nodeId,
    host: address.host,
    port: address.port,
    capabilities: [...capabilities],
    metadata: { ...discovered?.metadata, ...added?.metadata, ...own?.metadata },
  };
}

/** JSON with sorted keys: two records are the same when this is. */
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
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
    /** nodeId -> {nodeId, host, port, capabilities, metadata, joinedAt, local} */
    this.nodes = new Map();
    this.raft = null;
    this._own = new Map(); // nodeId -> the node's own record (cluster/self/)
    this._added = new Map(); // nodeId -> the addNode record (cluster/node/)
    this._discovered = new Map(); // nodeId -> a Raft member seen by autoDiscovery (not replicated)
    this._health = new Map(); // nodeId -> {health, failures, lastCheck, rttMs}
    this._probing = new Set(); // nodeIds with a health check in flight
    this._shutdown = false;
    this._checks = { total: 0, failed: 0 };
    this._publishing = null;
    this._published = false;
  }

  /** What JSON.stringify shows: identity and config (the coordinator and daemon stay out). */
  toJSON() {
    return { nodeId: this.nodeId, config: this.config };
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
    // A node that catches up by snapshot never sees the registry writes it covers as commands.
    this._listen(raftCoordinator, 'snapshot_installed', () => {
      if (!raftCoordinator._stopped) this._loadRegistry();
    });
    // Moments at which this node may have just become a member (founded, joined, caught up).
    for (const name of ['leader_elected', 'became_follower', 'peer_added', 'snapshot_installed']) {
      this._listen(raftCoordinator, name, () => this._publishSelf());
    }
    await raftCoordinator.initialize();
    // Records registered before this node (re)started live in the replicated registry.
    this._loadRegistry();
    if (!this._own.has(this.nodeId)) {
      // Shown locally at once; the replicated record replaces it once this node is a member.
      this._own.set(this.nodeId, this._selfRecord());
      this._refresh(this.nodeId);
    }
    this._setHealth(this.nodeId, NodeHealth.HEALTHY);
    const self = raftCoordinator.getState();
    if (this.config.autoDiscovery) {
      for (const [nodeId, m] of Object.entries(self.membership.nodes)) this._onMember({ nodeId, host: m.host, port: m.port });
      this._every(this.config.discoveryInterval, () => this._discover());
    }
    this._every(this.config.healthCheckInterval, () => {
      this._checkHealth();
      this._publishSelf();
    });
    this._checkHealth();
    this._publishSelf();
  }

  /**
   * Registers a node and its capabilities for the whole cluster: the record goes through the
   * Raft log (via the leader, from any node). Safe without await: a failure is emitted as
   * `node_add_failed`, never as an unhandled rejection. The node's own record, once it is a
   * member, takes precedence for its address and (when it declares any) its capabilities.
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

  /**
   * Forgets a node's registration cluster-wide, both its addNode record and its own (Raft
   * membership is changed with removePeer; a node still a member registers itself again when
   * it restarts).
   */
  async removeNode(nodeId) {
    this._assertReady();
    v.nodeId(nodeId, 'nodeId');
    if (!this.nodes.has(nodeId)) throw new ConsensusError(ErrorCode.NODE_NOT_FOUND, `${nodeId} is not registered`);
    await this._write({ type: CommandType.NODE_REMOVE, nodeId }, { key: registryKey(nodeId), delete: true });
    await this._write({ type: CommandType.NODE_REMOVE, nodeId }, { key: selfKey(nodeId), delete: true });
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

  /** This node's record as it should stand in the registry. */
  _selfRecord() {
    const c = this.raft.config;
    return {
      nodeId: this.nodeId,
      host: c.advertiseHost ?? c.host,
      // The actual port: with port 0 in the config, only the running node knows it.
      port: this.raft.getState().port,
      capabilities: [...this.config.capabilities],
      metadata: JSON.parse(JSON.stringify(this.config.metadata)),
    };
  }

  /**
   * Puts this node's own record in the replicated registry once it is a member, through the
   * leader. Called on every event that may make it one and on every health-check tick; runs
   * one write loop at a time, which retries every failure until the write succeeds, the
   * manager shuts down or the coordinator stops. Never rejects.
   */
  _publishSelf() {
    if (this._published || this._publishing || this._shutdown || !this.raft) return;
    this._publishing = (async () => {
      let delay = 50;
      while (!this._shutdown) {
        let state;
        try {
          state = this.raft.getState();
        } catch {
          return;
        }
        if (state.role === 'shutdown') return;
        // Not a member yet: the next membership event or tick tries again.
        if (!state.membership.nodes[this.nodeId]) return;
        const record = this._selfRecord();
        const stored = this._storedSelf();
        if (stored && canonical(stored) === canonical(record)) {
          this._published = true;
          return;
        }
        try {
          await this.raft.replicateCommand(
            { type: CommandType.NODE_UPSERT, node: record, self: true },
            { forward: true, registry: { key: selfKey(this.nodeId) } },
          );
          this._published = true;
          return;
        } catch (err) {
          if (err.code === ErrorCode.SHUTDOWN || err.code === ErrorCode.INVALID_OPERATION) return;
          await new Promise((r) => setTimeout(r, delay).unref());
          delay = Math.min(delay * 2, SELF_RETRY_MAX_MS);
        }
      }
    })()
      .catch((err) => this._emitSafely('warning', err))
      .finally(() => {
        this._publishing = null;
      });
  }

  /** This node's own record as the local replica of the registry holds it, or null. */
  _storedSelf() {
    const [entry] = this.raft.getRegistry(selfKey(this.nodeId)).filter((e) => e.key === selfKey(this.nodeId));
    return entry ? entry.value.node : null;
  }

  _loadRegistry() {
    if (this._shutdown || !this.raft) return;
    const own = new Map(this.raft.getRegistry(SELF_PREFIX).map(({ value }) => [value.node.nodeId, value.node]));
    const added = new Map(this.raft.getRegistry(REGISTRY_PREFIX).map(({ value }) => [value.node.nodeId, value.node]));
    // Keep the local placeholder for this node until its replicated record exists.
    if (!own.has(this.nodeId) && this._own.has(this.nodeId)) own.set(this.nodeId, this._own.get(this.nodeId));
    const ids = new Set([...this._own.keys(), ...this._added.keys(), ...own.keys(), ...added.keys()]);
    this._own = own;
    this._added = added;
    for (const nodeId of ids) this._refresh(nodeId);
  }

  _onApplied({ command }) {
    if (command.type === CommandType.NODE_UPSERT) {
      (command.self === true ? this._own : this._added).set(command.node.nodeId, command.node);
      this._refresh(command.node.nodeId);
    } else if (command.type === CommandType.NODE_REMOVE) {
      this._forget(command.nodeId);
    }
  }

  /** A Raft member appeared (peer_added): with autoDiscovery it joins `nodes` right away. */
  _onMember({ nodeId, host, port }) {
    // A registered node that just became a Raft member can now answer health checks.
    if (this.nodes.has(nodeId)) this._checkNode(nodeId);
    if (!this.config.autoDiscovery || this.nodes.has(nodeId)) return;
    this._discovered.set(nodeId, { nodeId, host, port, capabilities: [], metadata: {} });
    this._refresh(nodeId);
  }

  _discover() {
    const s = this.raft.getState();
    for (const [nodeId, m] of Object.entries(s.membership.nodes)) this._onMember({ nodeId, host: m.host, port: m.port });
  }

  /** Rebuilds the view of `nodeId` from its records. */
  _refresh(nodeId) {
    const own = this._own.get(nodeId);
    const added = this._added.get(nodeId);
    const discovered = this._discovered.get(nodeId);
    if (!own && !added && !discovered) {
      this._forget(nodeId);
      return;
    }
    const existing = this.nodes.get(nodeId);
    const entry = {
      ...mergeRecords(own, added, discovered),
      joinedAt: existing?.joinedAt ?? Date.now(),
      local: nodeId === this.nodeId,
    };
    this.nodes.set(nodeId, entry);
    if (!existing) {
      this._emitSafely('node_joined', { nodeId, metadata: entry, rejoined: false });
      // A new member's health is known at once, not only at the next interval.
      if (this.raft && !entry.local) this._checkNode(nodeId);
    }
  }

  _forget(nodeId) {
    this._own.delete(nodeId);
    this._added.delete(nodeId);
    this._discovered.delete(nodeId);
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

  _checkHealth() {
    if (this._shutdown || !this.raft) return;
    // Each node is checked on its own: a peer whose probe hangs until the timeout must not hold
    // back what the others' answers say.
    for (const nodeId of this.nodes.keys()) if (nodeId !== this.nodeId) this._checkNode(nodeId);
    this._setHealth(this.nodeId, this.raft.getState().role === 'shutdown' ? NodeHealth.UNHEALTHY : NodeHealth.HEALTHY);
  }

  async _checkNode(nodeId) {
    if (this._shutdown || !this.raft || this._probing.has(nodeId)) return;
    this._probing.add(nodeId);
    try {
      this._checks.total++;
      const h = this._health.get(nodeId) ?? { health: NodeHealth.UNKNOWN, failures: 0 };
      this._health.set(nodeId, h);
      try {
        h.rttMs = await this._probe(nodeId);
        h.lastCheck = Date.now();
        h.failures = 0;
        if (this.nodes.has(nodeId)) this._setHealth(nodeId, NodeHealth.HEALTHY);
      } catch (err) {
        if (err.code === ErrorCode.SHUTDOWN || this._shutdown) return;
        this._checks.failed++;
        h.lastCheck = Date.now();
        h.failures++;
        if (!this.nodes.has(nodeId)) return;
        this._setHealth(nodeId, h.failures >= this.config.maxFailedHealthChecks ? NodeHealth.UNHEALTHY : NodeHealth.DEGRADED);
      }
    } finally {
      this._probing.delete(nodeId);
    }
  }

  /**
   * One health probe. Without a live connection to the peer (a follower sends nothing to a
   * member that came back, so nothing redials it but this probe) the transport fails at once
   * and starts a dial; one more try once that dial had time to finish lets a returning member
   * be seen in this check rather than an interval later.
   */
  async _probe(nodeId) {
    const timeout = this.config.healthCheckTimeout;
    const started = Date.now();
    try {
      return await this.raft.ping(nodeId, timeout);
    } catch (err) {
      const left = timeout - (Date.now() - started);
      if (err.code !== ErrorCode.TIMEOUT || left < timeout / 2) throw err;
      await new Promise((r) => setTimeout(r, Math.min(REDIAL_WAIT_MS, left / 2)).unref());
      if (this._shutdown) throw err;
      return this.raft.ping(nodeId, Math.max(1, Math.floor(timeout - (Date.now() - started))));
    }
  }

  _assertRunning() {
    if (this._shutdown) throw new ConsensusError(ErrorCode.SHUTDOWN, `the ClusterManager of ${this.nodeId} is shut down`);
  }

  _assertReady() {
    this._assertRunning();
    if (!this.raft) {
      throw new ConsensusError(ErrorCode.NOT_INITIALIZED, 'the ClusterManager is not initialized; await initialize(raftCoordinator) first');
    }
  }
}

function createClusterManager(config) {
  return new ClusterManager(config);
}

module.exports = { ClusterManager, createClusterManager, DEFAULTS };
