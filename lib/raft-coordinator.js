'use strict';
const { ManagedEmitter, rethrowLater } = require('./managed-emitter');
const path = require('node:path');
const native = require('./native');
const { ConsensusError, ErrorCode, engineError, fromNative, invalidConfig, invalidOperation } = require('./errors');
const v = require('./validate');
const { registrySpecJson } = require('./registry-spec');
const { normalizeSecrets, hideSecrets, secretsOf } = require('./secrets');
const metrics = require('./metrics');
const { checkSignal, liveSignal, withSignal, abortError } = require('./abort');
const { checkLogger, LOG_LEVELS } = require('./logger');

const DEFAULTS = Object.freeze({
  host: '127.0.0.1',
  clusterId: 'default',
  electionTimeoutMin: 150,
  electionTimeoutMax: 300,
  heartbeatInterval: 50,
  snapshotThreshold: 1000,
  bootstrap: 'auto',
  commandTimeoutMs: 5000,
  addPeerTimeoutMs: 30000,
  operationTtlMs: 24 * 3600 * 1000,
  operationIdWindow: 100000,
  operationIdWindowBytes: 16 * 1024 * 1024,
  maxCommandBytes: 1024 * 1024,
  mapSizeMb: 1024,
  maxFrameBytes: 64 * 1024 * 1024,
  maxConnections: 256,
});

/** Internal state-machine event: a snapshot asks for the application's state. */
const SNAPSHOT_REQUEST = Symbol('snapshot_request');

const KNOWN_KEYS = [
  'nodeId',
  'host',
  'advertiseHost',
  'initialMembers',
  'port',
  'dataDir',
  'clusterId',
  'secret',
  'tls',
  'electionTimeoutMin',
  'electionTimeoutMax',
  'heartbeatInterval',
  'snapshotThreshold',
  'logsKeptAfterSnapshot',
  'bootstrap',
  'commandTimeoutMs',
  'addPeerTimeoutMs',
  'operationTtlMs',
  'operationIdWindow',
  'operationIdWindowBytes',
  'maxCommandBytes',
  'mapSizeMb',
  'maxFrameBytes',
  'maxConnections',
  'appliedIndex',
  'logger',
  'logLevel',
];

/**
 * Mutual TLS between nodes: this node's certificate chain and key, and the CA that signed every
 * member's certificate (PEM files). The files are read at initialize().
 */
function normalizeTls(tls) {
  if (tls === undefined) return undefined;
  v.checkObject(tls, 'tls');
  v.checkKnownKeys(tls, ['certFile', 'keyFile', 'caFile'], 'tls');
  const file = (key) => {
    if (tls[key] === undefined) throw invalidConfig(`tls.${key}`, 'required when tls is set');
    return path.resolve(v.string(tls[key], `tls.${key}`, { maxLength: 4096 }));
  };
  return { certFile: file('certFile'), keyFile: file('keyFile'), caFile: file('caFile') };
}

/** Addresses that bind every interface: peers cannot dial them. */
const WILDCARD_HOSTS = new Set(['0.0.0.0', '::', '[::]', '0:0:0:0:0:0:0:0']);

/**
 * `initialMembers`: every voter of the cluster to found when the data directory is empty, this
 * node included, as etcd's initial-cluster. Node ids and addresses are unique; this node's entry
 * is where peers dial it, so it must name the advertised host and, unless `port` is 0, the same
 * port. With `port` 0 the node binds the port its entry names: a port picked at random could
 * not be in a list written beforehand.
 */
function normalizeInitialMembers(members, { nodeId, advertiseHost, port }) {
  if (members === undefined) return { initialMembers: undefined, port };
  const field = 'initialMembers';
  if (!Array.isArray(members) || members.length === 0) {
    throw invalidConfig(field, 'expected a non-empty array of {nodeId, host, port}, this node included');
  }
  const ids = new Set();
  const addresses = new Set();
  const list = members.map((m, i) => {
    const at = `${field}[${i}]`;
    if (!v.isPlainObject(m)) throw invalidConfig(field, `${at}: expected {nodeId, host, port}`);
    const unknown = Object.keys(m).find((key) => !['nodeId', 'host', 'port'].includes(key));
    if (unknown !== undefined) throw invalidConfig(field, `${at}: unknown key ${unknown} (known: nodeId, host, port)`);
    const entry = {
      nodeId: v.nodeId(m.nodeId, field),
      host: v.string(m.host, field, { maxLength: 253 }),
      port: v.integer(m.port, field, { min: 1, max: 65535 }),
    };
    if (WILDCARD_HOSTS.has(entry.host)) {
      throw invalidConfig(field, `${at}: ${entry.host} is not an address peers can dial`);
    }
    if (ids.has(entry.nodeId)) throw invalidConfig(field, `${at}: ${entry.nodeId} is listed twice`);
    const address = `${entry.host}:${entry.port}`;
    if (addresses.has(address)) throw invalidConfig(field, `${at}: ${address} is listed twice`);
    ids.add(entry.nodeId);
    addresses.add(address);
    return entry;
  });
  const own = list.find((m) => m.nodeId === nodeId);
  if (!own) throw invalidConfig(field, `must list this node (${nodeId}) too, with the address peers dial`);
  if (port !== 0 && own.port !== port) {
    throw invalidConfig(field, `lists ${nodeId} at port ${own.port}, but this node's port is ${port}`);
  }
  if (own.host !== advertiseHost) {
    throw invalidConfig(
      field,
      `lists ${nodeId} at ${own.host}, but this node advertises ${advertiseHost}; set advertiseHost (or host) to the address in the list`,
    );
  }
  return { initialMembers: list, port: own.port };
}

/** Validates a RaftCoordinator config and fills in defaults. Throws ERR_INVALID_CONFIG. */
function normalizeConfig(config) {
  v.checkObject(config, 'config');
  v.checkKnownKeys(config, KNOWN_KEYS, 'RaftCoordinator');
  const nodeId = v.nodeId(config.nodeId);
  const host = v.string(config.host, 'host', { fallback: DEFAULTS.host, maxLength: 253 });
  if (config.port === undefined) throw invalidConfig('port', 'required (use 0 to pick a free port)');
  // `host` is bound; `advertiseHost` is what peers dial and what the membership records.
  const advertiseHost =
    config.advertiseHost === undefined ? undefined : v.string(config.advertiseHost, 'advertiseHost', { maxLength: 253 });
  if (advertiseHost !== undefined && WILDCARD_HOSTS.has(advertiseHost)) {
    throw invalidConfig('advertiseHost', `${advertiseHost} is not an address peers can dial; give this machine's address`);
  }
  if (advertiseHost === undefined && WILDCARD_HOSTS.has(host)) {
    throw invalidConfig('advertiseHost', `required when host is ${host}: the address peers dial to reach this node`);
  }
  const { initialMembers, port } = normalizeInitialMembers(config.initialMembers, {
    nodeId,
    advertiseHost: advertiseHost ?? host,
    port: v.integer(config.port, 'port', { min: 0, max: 65535 }),
  });
  const dataDir = path.resolve(
    v.string(config.dataDir, 'dataDir', { fallback: path.join('.consensus', nodeId), maxLength: 4096 }),
  );
  const clusterId = v.string(config.clusterId, 'clusterId', { fallback: DEFAULTS.clusterId, maxLength: 128 });
  // Every peer proves it knows a secret at the handshake (HMAC over fresh nonces); it never
  // crosses the wire. A list allows rotation: the first proves this node, any verifies a peer.
  const secret = normalizeSecrets(config.secret);
  const tls = normalizeTls(config.tls);
  const heartbeatInterval = v.integer(config.heartbeatInterval, 'heartbeatInterval', {
    min: 1,
    max: 60000,
    fallback: DEFAULTS.heartbeatInterval,
  });
  const electionTimeoutMin = v.integer(config.electionTimeoutMin, 'electionTimeoutMin', {
    min: 2,
    max: 600000,
    fallback: DEFAULTS.electionTimeoutMin,
  });
  const electionTimeoutMax = v.integer(config.electionTimeoutMax, 'electionTimeoutMax', {
    min: 3,
    max: 600000,
    fallback: Math.max(DEFAULTS.electionTimeoutMax, electionTimeoutMin + 1),
  });
  if (electionTimeoutMax <= electionTimeoutMin) {
    throw invalidConfig('electionTimeoutMax', `must be greater than electionTimeoutMin (${electionTimeoutMin})`);
  }
  if (heartbeatInterval >= electionTimeoutMin) {
    throw invalidConfig('heartbeatInterval', `must be less than electionTimeoutMin (${electionTimeoutMin})`);
  }
  const snapshotThreshold = v.integer(config.snapshotThreshold, 'snapshotThreshold', {
    min: 1,
    max: 2 ** 31 - 1,
    fallback: DEFAULTS.snapshotThreshold,
  });
  const logsKeptAfterSnapshot = v.integer(config.logsKeptAfterSnapshot, 'logsKeptAfterSnapshot', {
    min: 0,
    max: 2 ** 31 - 1,
    fallback: Math.floor(snapshotThreshold / 4),
  });
  let bootstrap = DEFAULTS.bootstrap;
  if (config.bootstrap !== undefined) {
    if (config.bootstrap === true) bootstrap = 'always';
    else if (config.bootstrap === false) bootstrap = 'never';
    else if (config.bootstrap === 'auto') bootstrap = 'auto';
    else throw invalidConfig('bootstrap', `expected 'auto', true or false, got ${JSON.stringify(config.bootstrap)}`);
  }
  if (initialMembers !== undefined && bootstrap !== 'auto') {
    throw invalidConfig('bootstrap', 'initialMembers already says how the cluster is founded; leave bootstrap unset');
  }
  const int = (key, min, max) => v.integer(config[key], key, { min, max, fallback: DEFAULTS[key] });
  const appliedIndex =
    typeof config.appliedIndex === 'function' || config.appliedIndex === undefined
      ? config.appliedIndex
      : v.integer(config.appliedIndex, 'appliedIndex', { min: 0, max: Number.MAX_SAFE_INTEGER });
  const logger = checkLogger(config.logger);
  if (config.logLevel !== undefined && !LOG_LEVELS.includes(config.logLevel)) {
    throw invalidConfig('logLevel', `expected one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(config.logLevel)}`);
  }
  const maxCommandBytes = int('maxCommandBytes', 1, 64 * 1024 * 1024);
  const maxFrameBytes = int('maxFrameBytes', 64 * 1024, 2 ** 31 - 1);
  // An append carries at least one whole entry: a command must leave room in a frame for the
  // rest of its entry, or the follower would refuse that append for ever.
  if (maxCommandBytes > maxFrameBytes / 2) {
    throw invalidConfig('maxCommandBytes', `must be at most half of maxFrameBytes (${maxFrameBytes}), got ${maxCommandBytes}`);
  }
  return {
    logger,
    logLevel: config.logLevel ?? 'warn',
    nodeId,
    host,
    advertiseHost: advertiseHost ?? host,
    initialMembers,
    port,
    dataDir,
    clusterId,
    secret,
    tls,
    electionTimeoutMin,
    electionTimeoutMax,
    heartbeatInterval,
    snapshotThreshold,
    logsKeptAfterSnapshot,
    bootstrap,
    commandTimeoutMs: int('commandTimeoutMs', 1, 2 ** 31 - 1),
    addPeerTimeoutMs: int('addPeerTimeoutMs', 1, 2 ** 31 - 1),
    operationTtlMs: int('operationTtlMs', 0, Number.MAX_SAFE_INTEGER),
    operationIdWindow: int('operationIdWindow', 1, 2 ** 31 - 1),
    operationIdWindowBytes: int('operationIdWindowBytes', 1024, Number.MAX_SAFE_INTEGER),
    maxCommandBytes,
    mapSizeMb: int('mapSizeMb', 1, 1024 * 1024),
    maxFrameBytes,
    maxConnections: int('maxConnections', 1, 65535),
    appliedIndex,
  };
}

/** The log index an event hands over: its entry, or the last entry a snapshot covers. */
function deliveryIndex(name, payload) {
  return name === 'command_applied' ? payload.entry.index : payload.lastIncludedIndex;
}

/** Reads `appliedIndex` (a number, or a function returning one) as a log index. */
function readAppliedIndex(appliedIndex) {
  const value = typeof appliedIndex === 'function' ? appliedIndex() : appliedIndex;
  return v.integer(value, 'appliedIndex', { min: 0, max: Number.MAX_SAFE_INTEGER });
}

/**
 * A Raft node: leader election, a replicated durable log (LMDB) and membership, talking to its
 * peers over WebSocket. Events: initialized, leader_elected, leader_lost, term_updated,
 * became_follower, command_applied, snapshot_installed, peer_connected, peer_disconnected,
 * peer_added, peer_removed, log_compacted, warning, shutdown.
 */
class RaftCoordinator extends ManagedEmitter {
  constructor(config) {
    super();
    const normalized = normalizeConfig(config);
    // The config shows '[redacted]' where the secret is: daemons log their configuration.
    normalized.secret = hideSecrets(this, normalized.secret, config.secret);
    // The logger stays out of `config`, which daemons print and serialize.
    this._logger = normalized.logger;
    delete normalized.logger;
    this.config = normalized;
    this._counters = new metrics.NodeCounters();
    this._native = null;
    this._starting = null;
    this._stopped = false;
    this._stopping = null;
    // State-machine events (command_applied, snapshot_installed) that arrive while nobody
    // listens for command_applied are held, in order, and delivered to the next listener: a node
    // that catches up right after initialize() loses none of them to setup order, and what a node
    // applies after its daemon's manager shut down is handed over again at the next start.
    this._held = [];
    this._holding = true;
    // Positions, within the batch being dispatched, of the events held: the node keeps counting
    // them against what may wait for JavaScript until they are handed over (releaseHeldEvents),
    // so a node nobody listens to holds back its applies, not its memory.
    this._heldInBatch = undefined;
    // Delivery (DESIGN's Delivery rules): the highest index whose command_applied listeners ran
    // (or, while events are held, that arrived), what was last reported to the node, and the
    // writes of this node waiting for their own entry to be delivered (read-your-writes).
    this._deliveredIndex = -1;
    this._receivedIndex = -1;
    this._reportedIndex = -1;
    this._deliveryWaiters = [];
    // Writes waiting for the next crossing, and those in the core by ticket (see _submitWrite).
    this._writeQueue = [];
    this._writesInFlight = new Map();
    this._nextWriteTicket = 1;
    this.on('newListener', (name) => {
      if (name === 'command_applied' && this._holding) process.nextTick(() => this._releaseHeld());
    });
  }

  _releaseHeld() {
    if (!this._holding || this.listenerCount('command_applied') === 0) return;
    this._holding = false;
    const held = this._held;
    this._held = [];
    // Those held within the batch being dispatched are not counted as held by the node yet.
    const unregistered = this._heldInBatch?.length ?? 0;
    if (this._heldInBatch) this._heldInBatch = [];
    for (const [name, payload] of held) this._deliverStateMachineEvent(name, payload);
    this._reportDelivered();
    const registered = held.length - unregistered;
    if (registered > 0) this._answerWhenStarted((node) => node.releaseHeldEvents(registered));
  }

  _deliverStateMachineEvent(name, payload) {
    if (name === SNAPSHOT_REQUEST) {
      this._answerSnapshotRequest(payload);
      return;
    }
    this._emitSafely(name, payload);
    // Listeners have run (one that threw is reported as an uncaughtException): delivered.
    this._deliveredIndex = Math.max(this._deliveredIndex, deliveryIndex(name, payload));
  }

  /**
   * Tells the node how far delivery got, so it need not hand those entries over again after a
   * crash and may let them leave the log. With `appliedIndex` as a function, no further than
   * the daemon says it holds durably.
   */
  _reportDelivered() {
    let through = this._deliveredIndex;
    if (typeof this.config.appliedIndex === 'function') {
      try {
        through = Math.min(through, readAppliedIndex(this.config.appliedIndex));
      } catch (err) {
        if (!this._warnedAppliedIndex) {
          this._warnedAppliedIndex = true;
          this._emitSafely('warning', new ConsensusError(ErrorCode.INVALID_CONFIG, `appliedIndex() failed: ${err.message}`, { field: 'appliedIndex' }));
        }
      }
    }
    if (through > this._reportedIndex && this._native && !this._stopped) {
      this._reportedIndex = through;
      this._native.delivered(through);
    }
    this._wakeDeliveryWaiters();
  }

  _wakeDeliveryWaiters() {
    if (this._deliveryWaiters.length === 0) return;
    const reached = this._holding ? this._receivedIndex : this._deliveredIndex;
    const still = [];
    for (const w of this._deliveryWaiters) {
      if (w.index <= reached || this._stopped) w.resolve();
      else still.push(w);
    }
    this._deliveryWaiters = still;
  }

  /** Resolves once this node's command_applied listeners ran for `index` (read-your-writes). */
  _whenDelivered(index) {
    const reached = this._holding ? this._receivedIndex : this._deliveredIndex;
    if (index <= reached || this._stopped) return undefined;
    return new Promise((resolve) => this._deliveryWaiters.push({ index, resolve }));
  }

  /**
   * Makes every snapshot carry the application's state: `provider({lastIncludedIndex})` returns
   * (or resolves to) a JSON-serializable value reflecting every command delivered so far. A
   * node that catches up by snapshot receives it as `appState` in `snapshot_installed`.
   * Pass null to stop.
   */
  setSnapshotProvider(provider) {
    if (provider !== null && typeof provider !== 'function') throw invalidConfig('provider', 'expected a function or null');
    if (this._stopped) throw this._shutdownError();
    this._snapshotProvider = provider;
    this._snapshotsWithheld = false;
    if (this._native) this._native.enableAppSnapshots(provider !== null);
  }

  /**
   * Snapshots stop carrying the application's state until a provider is set again: its manager
   * shut down, and the state it would give no longer follows the log. Requests are declined (no
   * snapshot, the log is kept), where a snapshot without that state would restore a daemon
   * that rebuilds from snapshots to nothing.
   */
  _withholdSnapshots() {
    this._snapshotsWithheld = true;
  }

  _declineSnapshotRequest(id) {
    this._answerWhenStarted((node) => node.declineAppSnapshot(id));
  }

  /**
   * Answers a snapshot request once the node object is here. A node whose log is past its
   * snapshot threshold builds a snapshot as it starts, and the request can reach JavaScript
   * before initialize() has the node: an answer dropped then left the build waiting 60 s.
   */
  _answerWhenStarted(answer) {
    if (this._native) {
      if (!this._stopped) answer(this._native);
      return;
    }
    // A start that fails has no build waiting; its caller hears of the failure.
    this._starting?.then(
      () => {
        if (this._native && !this._stopped) answer(this._native);
      },
      () => {},
    );
  }

  async _answerSnapshotRequest({ id, index }) {
    if (this._snapshotsWithheld) {
      this._declineSnapshotRequest(id);
      return;
    }
    let json = null;
    try {
      const state = this._snapshotProvider ? await this._snapshotProvider({ lastIncludedIndex: index }) : null;
      json = state === undefined ? null : JSON.stringify(state);
    } catch (err) {
      // No snapshot is taken this time (the node asks again after more entries) rather than
      // one carrying a wrong state.
      this._emitSafely('warning', new ConsensusError(ErrorCode.STORAGE, `snapshot provider failed: ${err.message}`));
      this._declineSnapshotRequest(id);
      return;
    }
    this._answerWhenStarted((node) => node.provideAppSnapshot(id, json));
  }

  /** Emits a state-machine event, or holds it for a listener; true when held. */
  _emitStateMachineEvent(name, payload) {
    // What the node applied while it was being stopped is not handed over any more: listeners
    // would call into a stopped node. It was not reported delivered, so the next start hands it
    // over again (redelivered).
    if (this._stopped) return false;
    if (name !== SNAPSHOT_REQUEST) this._receivedIndex = Math.max(this._receivedIndex, deliveryIndex(name, payload));
    // Whether anyone listens is asked here, not only through newListener: removeAllListeners()
    // takes that hook away too.
    if (this.listenerCount('command_applied') === 0) this._holding = true;
    else if (this._holding) this._releaseHeld();
    if (this._holding) {
      // The application's state lacks the held entries: no snapshot can carry it now.
      if (name === SNAPSHOT_REQUEST) {
        this._declineSnapshotRequest(payload.id);
        return false;
      }
      this._held.push([name, payload]);
      return true;
    }
    this._deliverStateMachineEvent(name, payload);
    return false;
  }

  get nodeId() {
    return this.config.nodeId;
  }

  get isLeader() {
    return this._native !== null && !this._stopped && this._native.state().role === 'leader';
  }

  get leaderId() {
    if (this._native === null || this._stopped) return null;
    return this._native.state().leaderId ?? null;
  }

  get currentTerm() {
    if (this._native === null || this._stopped) return 0;
    return this._native.state().term;
  }

  /** Opens storage, binds the port and starts Raft. Safe to call twice. */
  async initialize() {
    if (this._stopped) throw this._shutdownError();
    if (this._native) return;
    if (!this._starting) {
      const c = this.config;
      let appliedIndex;
      try {
        appliedIndex = c.appliedIndex === undefined ? undefined : readAppliedIndex(c.appliedIndex);
      } catch (err) {
        throw err instanceof ConsensusError ? err : invalidConfig('appliedIndex', `appliedIndex() failed: ${err.message}`);
      }
      this._starting = native
        .startNode(
          // The native config takes the normalized config's own names; only what is not a plain
          // setting is worked out here.
          {
            ...c,
            appliedIndex,
            appSnapshots: typeof this._snapshotProvider === 'function',
            secrets: c.secret === undefined ? undefined : secretsOf(this),
            logLevel: this._logger ? c.logLevel : undefined,
          },
          (batch) => this._dispatch(batch),
        )
        .then(
          (node) => {
            this._native = node;
            const resumedAfter = node.resumedAfter() ?? -1;
            this._deliveredIndex = Math.max(this._deliveredIndex, resumedAfter);
            this._receivedIndex = Math.max(this._receivedIndex, resumedAfter);
            this._reportedIndex = Math.max(this._reportedIndex, resumedAfter);
            this._reportDelivered();
            // What changed while the node was starting, after its config was handed over: a
            // secret rotation (setSecrets) and the snapshot provider.
            if (this.config.secret !== undefined) node.setSecrets(secretsOf(this));
            node.enableAppSnapshots(typeof this._snapshotProvider === 'function');
            metrics.track('coordinator', this);
            this.emit('initialized', { nodeId: c.nodeId, port: node.state().port });
          },
          (err) => {
            this._starting = null;
            throw fromNative(err);
          },
        );
    }
    return this._starting;
  }

  /**
   * Adds a member: as a learner, then as a voter once it holds the log. On a follower the call
   * goes to the leader. On a fresh node that belongs to no cluster (bootstrap 'auto'), addPeer
   * founds the cluster, unless one of the fresh nodes it adds is founding it (nodes that all
   * call addPeer for each other form one cluster). Safe to call without await: a failure is
   * reported as a `peer_add_failed` event, never as an unhandled rejection.
   */
  addPeer(nodeId, host, port, options = {}) {
    let signal;
    try {
      signal = liveSignal(options?.signal);
    } catch (err) {
      return Promise.reject(err);
    }
    const promise = this._run(() => {
      v.nodeId(nodeId, 'nodeId');
      v.string(host, 'host', { maxLength: 253 });
      v.integer(port, 'port', { min: 1, max: 65535 });
      // Every addPeer of this synchronous run is registered before any of them starts: a fresh
      // node then founds only if all the peers it adds stand behind it.
      this._native.expectPeer(nodeId, host, port);
      return Promise.resolve().then(() => {
        if (this._stopped) throw this._shutdownError();
        return this._native.addPeer(nodeId, host, port, true);
      });
    });
    promise.catch((error) => this._emitSafely('peer_add_failed', { nodeId, error }));
    return withSignal(signal, promise);
  }

  /**
   * Removes a member (leader only). `options.forward` lets any member ask the leader to do it,
   * including a former leader removing itself after handing over.
   */
  removePeer(nodeId, options = {}) {
    let signal;
    try {
      signal = liveSignal(options?.signal);
    } catch (err) {
      return Promise.reject(err);
    }
    const promise = this._run(() => {
      v.nodeId(nodeId, 'nodeId');
      return this._native.removePeer(nodeId, options.forward === true);
    });
    promise.catch(() => {});
    const answer = withSignal(signal, promise);
    answer.catch(() => {});
    return answer;
  }

  /**
   * Resolves `{leaderId, term}` once this node knows a live leader: itself (with CheckQuorum,
   * holding a quorum), or one it heard from within twice the longest election timeout. Rejects with ERR_TIMEOUT after `timeoutMs` (default: commandTimeoutMs), or with an
   * AbortError when `signal` aborts; no timer or listener is left behind either way.
   */
  waitForLeader({ timeoutMs, signal } = {}) {
    try {
      if (this._stopped) throw this._shutdownError();
      checkSignal(signal);
      const limit = timeoutMs === undefined ? this.config.commandTimeoutMs : v.integer(timeoutMs, 'timeoutMs', { min: 1, max: 2 ** 31 - 1 });
      if (signal?.aborted) throw abortError(signal);
      // A follower keeps its last leader's id after losing it; only a live one counts.
      const known = () => {
        const s = this.getState();
        return metrics.knowsLeader(s, this.config) ? { leaderId: s.leaderId, term: s.term } : null;
      };
      const now = this._native ? known() : null;
      if (now) return Promise.resolve(now);
      return new Promise((resolve, reject) => {
        const names = ['leader_elected', 'became_follower', 'initialized', 'term_updated'];
        const done = (fn, value) => {
          clearTimeout(timer);
          clearInterval(poll);
          for (const n of names) this.off(n, check);
          this.off('shutdown', onShutdown);
          signal?.removeEventListener('abort', onAbort);
          fn(value);
        };
        const check = () => {
          const found = this._native && !this._stopped ? known() : null;
          if (found) done(resolve, found);
        };
        const onShutdown = () => done(reject, this._shutdownError());
        const onAbort = () => done(reject, abortError(signal));
        const timer = setTimeout(
          () => done(reject, new ConsensusError(ErrorCode.TIMEOUT, `${this.config.nodeId} knew no leader within ${limit} ms; check that a majority of members is up and reachable`)),
          limit,
        );
        // A leader that regains its quorum is not announced by an event: look again now and then.
        const poll = setInterval(check, Math.max(10, this.config.heartbeatInterval));
        for (const n of names) this.on(n, check);
        this.on('shutdown', onShutdown);
        signal?.addEventListener('abort', onAbort, { once: true });
      });
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Hands leadership to another voter and resolves once it leads (leader only). */
  transferLeadership(nodeId, timeoutMs = 5000) {
    return this._run(() => {
      v.nodeId(nodeId, 'nodeId');
      v.integer(timeoutMs, 'timeoutMs', { min: 1, max: 2 ** 31 - 1 });
      return this._native.transferLeadership(nodeId, timeoutMs);
    });
  }

  /**
   * Replicates a command: a plain, JSON-serializable object with a string `type`. Resolves
   * `{committed, logIndex, term}` once a majority stored it durably and it was applied here.
   * `options.operationId` makes retries idempotent: the same id resolves to the first result
   * with `duplicate: true` and takes effect once. `options.timeoutMs` overrides
   * `commandTimeoutMs`; `options.forward` lets a follower send the command on to the leader.
   * `options.registry: {key, delete}` also records the command under `key` in the replicated
   * registry (or deletes the key), which every node can read back with getRegistry().
   * `registry.value` stores that value instead of the command; `registry.ifEquals` /
   * `registry.ifAbsent` make the write conditional on the key's current value, decided when the
   * entry is applied (the result then carries `conditionMet`); `registry.also: [{key, value |
   * delete}]` writes more keys in the same entry, all or none.
   */
  async replicateCommand(command, options = {}) {
    if (!v.isPlainObject(command)) throw invalidOperation('command', 'expected a plain object');
    if (typeof command.type !== 'string' || command.type.length === 0) {
      throw invalidOperation('command.type', 'expected a non-empty string');
    }
    let json;
    try {
      json = JSON.stringify(command);
    } catch (err) {
      throw invalidOperation('command', `not JSON-serializable: ${err.message}`);
    }
    return this._replicateJson(json, options);
  }

  /**
   * `replicateCommand` for a command already serialized: `json` is the JSON text of a plain
   * object with a non-empty string `type` (the ConsensusManager writes its operations' text
   * once, instead of handing over an object to serialize again).
   */
  async _replicateJson(json, options = {}) {
    const operationId = options.operationId;
    if (operationId !== undefined && (typeof operationId !== 'string' || operationId.length === 0)) {
      throw invalidOperation('operationId', 'expected a non-empty string');
    }
    const max = this.config.maxCommandBytes;
    // A UTF-16 unit takes at most 3 bytes of UTF-8: most commands need no count.
    const bytes = json.length * 3 <= max ? json.length : Buffer.byteLength(json);
    if (bytes > max) {
      throw invalidOperation(
        'command',
        `${bytes} bytes as JSON, over maxCommandBytes (${max}); store large data elsewhere and replicate a reference`,
      );
    }
    const timeoutMs =
      options.timeoutMs === undefined
        ? undefined
        : v.integer(options.timeoutMs, 'timeoutMs', { min: 1, max: 2 ** 31 - 1 });
    const forward = options.forward === true;
    const signal = liveSignal(options.signal);
    let registryKey;
    let registryDelete = false;
    let registrySpec;
    if (options.registry !== undefined) {
      const r = options.registry;
      if (r === null || typeof r !== 'object' || typeof r.key !== 'string' || r.key.length === 0 || r.key.length > 511) {
        throw invalidOperation('registry.key', 'expected a non-empty string of at most 511 characters');
      }
      registryKey = r.key;
      registryDelete = r.delete === true;
      registrySpec = registrySpecJson(r);
      // Values written to the registry travel in the same log entry as the command.
      const total = Buffer.byteLength(json) + (registrySpec === undefined ? 0 : Buffer.byteLength(registrySpec));
      if (registrySpec !== undefined && total > max) {
        throw invalidOperation(
          'registry',
          `command and registry values take ${total} bytes as JSON, over maxCommandBytes (${max}); store large data elsewhere and replicate a reference`,
        );
      }
    }
    const call = this._submitWrite(batchedWrite(json, operationId, timeoutMs, forward, registryKey, registryDelete, registrySpec));
    const applied = await withSignal(signal, call);
    // Read-your-writes: the caller's next read of its own state sees this write.
    if (applied.here) {
      const delivered = this._whenDelivered(applied.index);
      if (delivered) await delivered;
    }
    const result = { committed: true, logIndex: applied.index, term: applied.term };
    if (applied.duplicate) result.duplicate = true;
    if (options.registry && ('ifEquals' in options.registry || options.registry.ifAbsent === true)) {
      result.conditionMet = !applied.conditionFailed;
    }
    return result;
  }

  /**
   * Queues a write for the next crossing into the core: every write submitted in this turn of
   * the event loop goes over in one call, and each result comes back as a `write_done` event
   * with the write's ticket (the per-call promise and hand-off were a quarter of a busy
   * leader's CPU).
   */
  _submitWrite(write) {
    if (this._stopped || this._native === null) {
      this._counters.failed++;
      return Promise.reject(this._stopped ? this._shutdownError() : this._notInitializedError());
    }
    this._counters.pending++;
    const started = process.hrtime.bigint();
    return new Promise((resolve, reject) => {
      this._writeQueue.push({ write, started, resolve, reject });
      if (this._writeQueue.length === 1) process.nextTick(() => this._flushWrites());
    });
  }

  /** Settles a submitted write, and counts it (pending, failed, proposal latency). */
  _settleWrite(q, err, applied) {
    const counters = this._counters;
    counters.pending--;
    if (err) {
      counters.failed++;
      q.reject(err);
    } else {
      counters.proposal.observe(Number(process.hrtime.bigint() - q.started) / 1e9);
      q.resolve(applied);
    }
  }

  _flushWrites() {
    const queued = this._writeQueue;
    this._writeQueue = [];
    if (this._stopped || this._native === null) {
      const err = this._stopped ? this._shutdownError() : this._notInitializedError();
      for (const q of queued) this._settleWrite(q, err);
      return;
    }
    const first = this._nextWriteTicket;
    this._nextWriteTicket += queued.length;
    try {
      this._native.replicateBatch(`[${queued.map((q) => q.write).join(',')}]`, first);
    } catch (err) {
      const failure = fromNative(err);
      for (const q of queued) this._settleWrite(q, failure);
      return;
    }
    for (const [i, q] of queued.entries()) this._writesInFlight.set(first + i, q);
  }

  _writeDone({ ticket, error, ...applied }) {
    const waiting = this._writesInFlight.get(ticket);
    if (!waiting) return;
    this._writesInFlight.delete(ticket);
    this._settleWrite(waiting, error ? engineError(error) : null, applied);
  }

  /** Replicated registry records whose key starts with `prefix`: `[{key, value}]` in key order. */
  getRegistry(prefix = '') {
    if (this._stopped) throw this._shutdownError();
    if (this._native === null) return [];
    return this._native.registry(prefix).map(([key, json]) => ({ key, value: JSON.parse(json) }));
  }

  /**
   * Where this node's state machine applied operation `operationId`: `{logIndex, term}`, or null
   * when it has not (yet) applied it here. Ids are remembered for `operationTtlMs`, and only the
   * most recent `operationIdWindow` ids (within `operationIdWindowBytes`).
   */
  getOperation(operationId) {
    if (this._stopped) throw this._shutdownError();
    if (typeof operationId !== 'string' || operationId.length === 0) {
      throw invalidOperation('operationId', 'expected a non-empty string');
    }
    if (this._native === null) return null;
    const found = this._native.operation(operationId);
    return found ? { logIndex: found.index, term: found.term } : null;
  }

  /**
   * Replaces the cluster secrets while the node runs, for rotation: the first proves this node
   * from now on, any is accepted from peers. To move a cluster from secret A to B with no peer
   * refused at any point: `setSecrets([A, B])` on every node, then `setSecrets([B, A])` on every
   * node, then `setSecrets([B])`. Only for a node started with a `secret`.
   */
  setSecrets(secrets) {
    try {
      if (this._stopped) throw this._shutdownError();
      const list = normalizeSecrets(secrets);
      if (list === undefined) throw invalidConfig('secret', 'expected a secret or a list of secrets');
      if (this.config.secret === undefined) {
        throw new ConsensusError(ErrorCode.INVALID_OPERATION, `node ${this.config.nodeId} was started without a secret; start every node with one to rotate secrets`);
      }
      if (this._native) this._native.setSecrets(list);
      this.config.secret = hideSecrets(this, list, secrets);
    } catch (err) {
      throw err instanceof ConsensusError ? err : fromNative(err);
    }
  }

  /** What JSON.stringify shows of a coordinator: its identity and config (secrets redacted). */
  toJSON() {
    return { nodeId: this.config.nodeId, config: this.config };
  }

  /**
   * Reads the TLS certificate, key and CA files again, for certificates renewed on disk: new
   * connections use them, open ones keep theirs until they reconnect. Rejects with
   * ERR_INVALID_CONFIG naming the file when the new material does not load; the node then keeps
   * the old.
   */
  reloadTls() {
    return this._run(() => this._native.reloadTls());
  }

  /** Round-trip time in ms to a member; rejects with ERR_TIMEOUT when it does not answer. */
  ping(nodeId, timeoutMs = 2000) {
    return this._run(() => {
      v.nodeId(nodeId, 'nodeId');
      v.integer(timeoutMs, 'timeoutMs', { min: 1, max: 2 ** 31 - 1 });
      return this._native.ping(nodeId, timeoutMs);
    });
  }

  /**
   * Snapshots the state machine now and purges the log, keeping `keep` entries before the
   * snapshot. Resolves `{purgedUpTo}` (null when nothing was purged).
   */
  async compact(keep = 0, timeoutMs = 10000) {
    const upto = await this._run(() => {
      v.integer(keep, 'keep', { min: 0, max: 2 ** 31 - 1 });
      v.integer(timeoutMs, 'timeoutMs', { min: 1, max: 2 ** 31 - 1 });
      return this._native.compact(keep, timeoutMs);
    });
    return { purgedUpTo: upto ?? null };
  }

  /**
   * Serves the admin endpoint (GET /metrics, /health, /status, /backup; POST /members,
   * /leader/transfer, /compact; DELETE /members/:id) on `host` (default 127.0.0.1) and `port`
   * (0 picks a free one). Resolves `{port, host, url, close()}`. See lib/admin-server.js.
   */
  listenAdmin(options = {}) {
    if (this._stopped) return Promise.reject(this._shutdownError());
    return require('./admin-server').listenAdmin(this, null, options);
  }

  /**
   * Writes a consistent copy of this node's data (its LMDB environment, compacted) to `file`,
   * which must not exist, while the node keeps running. Resolves `{bytes}`.
   */
  async backup(file) {
    const target = path.resolve(v.string(file, 'file', { maxLength: 4096 }));
    const bytes = await this._run(() => this._native.backup(target));
    return { bytes };
  }

  getState() {
    const c = this.config;
    if (this._native === null || this._stopped) {
      return {
        nodeId: c.nodeId,
        role: this._stopped ? 'shutdown' : 'follower',
        isLeader: false,
        leaderId: null,
        term: 0,
        port: c.port,
        lastLogIndex: 0,
        commitIndex: 0,
        lastApplied: 0,
        logLength: 0,
        snapshotIndex: null,
        peers: [],
        connectedPeers: [],
        membership: { voters: [], learners: [], nodes: {}, changing: false },
        replication: {},
        lastContact: 0,
        failure: null,
      };
    }
    return this._native.state();
  }

  /** Stops Raft and the transport; data stays on disk. Idempotent. */
  stop() {
    if (!this._stopping) {
      this._stopped = true;
      // Their writes committed; a stopped node will not deliver them any more.
      this._wakeDeliveryWaiters();
      this._stopping = (async () => {
        if (this._starting) {
          try {
            await this._starting;
          } catch {
            // never started: nothing to stop
          }
        }
        metrics.untrack('coordinator', this);
        if (this._native) await this._native.stop();
        // The core answered every write before its stop returned; one it could not (a stop
        // that gave up waiting) fails here, so no caller waits forever.
        setImmediate(() => {
          for (const q of this._writesInFlight.values()) this._settleWrite(q, this._shutdownError());
          this._writesInFlight.clear();
        });
        this._emitSafely('shutdown', { nodeId: this.config.nodeId });
      })();
    }
    return this._stopping;
  }

  shutdown() {
    return this.stop();
  }

  /** This node's metrics in the Prometheus text exposition format (see lib/metrics.js). */
  prometheusMetrics() {
    return metrics.metricsText({ coordinators: [this], managers: [] });
  }

  /** A warning also goes to the logger: nobody may listen for `warning` events. */
  _emitSafely(name, payload) {
    if (name === 'warning' && this._logger) {
      this._log({ level: 'warn', target: 'unrdf_consensus', message: payload?.message ?? String(payload), fields: payload?.code ? { code: payload.code } : {} });
    }
    super._emitSafely(name, payload);
  }

  /** Hands one record to the logger; a logger that throws is reported, not allowed to wedge us. */
  _log({ level, target, message, fields, suppressed }) {
    const logger = this._logger;
    if (!logger) return;
    const method = level === 'trace' ? (typeof logger.trace === 'function' ? 'trace' : 'debug') : level;
    const obj = { nodeId: this.config.nodeId, target, ...fields };
    if (suppressed) obj.suppressed = suppressed;
    try {
      logger[method](obj, message);
    } catch (err) {
      rethrowLater(err);
    }
  }

  _notInitializedError() {
    return new ConsensusError(ErrorCode.NOT_INITIALIZED, `node ${this.config.nodeId} is not initialized; await initialize() first`);
  }

  _shutdownError() {
    return new ConsensusError(ErrorCode.SHUTDOWN, `node ${this.config.nodeId} is stopped; create a new coordinator`);
  }

  /** Runs a native call: checks the lifecycle, validates synchronously, maps native errors. */
  _run(call) {
    try {
      if (this._stopped) throw this._shutdownError();
      if (this._native === null) throw this._notInitializedError();
      return Promise.resolve(call()).catch((err) => {
        throw fromNative(err);
      });
    } catch (err) {
      return Promise.reject(err instanceof ConsensusError ? err : fromNative(err));
    }
  }

  /**
   * Receives a batch of native events (a JSON array) and emits each. Returns the positions of
   * those held for a command_applied listener not attached yet, if any.
   */
  _dispatch(batch) {
    let events;
    try {
      events = JSON.parse(batch);
    } catch (err) {
      rethrowLater(new Error(`@unrdf/consensus: malformed event batch: ${err.message}`));
      return undefined;
    }
    this._heldInBatch = [];
    // Each event comes as {type, payload}: its public name and argument, named as listeners see
    // them (src/events.rs declares both).
    for (let position = 0; position < events.length; position++) {
      const { type, payload } = events[position];
      switch (type) {
        case 'command_applied':
          // JSON has no undefined: a command without an operation id gets `operationId: undefined`.
          if (payload.operationId === null) payload.operationId = undefined;
          if (this._emitStateMachineEvent(type, payload)) this._heldInBatch.push(position);
          break;
        case 'snapshot_installed':
          if (this._emitStateMachineEvent(type, payload)) this._heldInBatch.push(position);
          break;
        case 'snapshot_request':
          this._emitStateMachineEvent(SNAPSHOT_REQUEST, payload);
          break;
        case 'write_done':
          this._writeDone(payload);
          break;
        case 'leader_elected':
          this._counters.sawLeader(payload.leaderId);
          this._emitSafely(type, payload);
          break;
        case 'warning':
          this._emitSafely('warning', new ConsensusError(payload.code, payload.message));
          break;
        case 'log':
          this._log(payload);
          break;
        default:
          this._emitSafely(type, payload);
          break;
      }
    }
    this._reportDelivered();
    const held = this._heldInBatch;
    this._heldInBatch = undefined;
    return held.length > 0 ? held : undefined;
  }
}

/**
 * One write as `replicateBatch` takes it (src/binding.rs, `BatchedWrite`): a JSON array with the
 * command's JSON and the registry spec's written in place, so a batch crosses as one string.
 */
function batchedWrite(json, operationId, timeoutMs, forward, registryKey, registryDelete, registrySpec) {
  const id = operationId === undefined ? 'null' : JSON.stringify(operationId);
  const key = registryKey === undefined ? 'null' : JSON.stringify(registryKey);
  return `[${json},${id},${timeoutMs ?? 'null'},${forward},${key},${registryDelete},${registrySpec ?? 'null'}]`;
}

function createRaftCoordinator(config) {
  return new RaftCoordinator(config);
}

module.exports = { RaftCoordinator, createRaftCoordinator, normalizeConfig, DEFAULTS };
