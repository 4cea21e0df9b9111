'use strict';
// One cluster node in its own OS process, driven over IPC by support/cluster.js (tests, demo,
// benchmark). It records what its coordinator applies and can drive load from inside the
// process, as a daemon on the leader would.
const { createRaftCoordinator, createClusterManager, ConsensusManager } = require('..');
const { Daemon } = require('../examples/lib/daemon');
const { StyleDaemon } = require('./style-daemons');
const { fromNative } = require('../lib/errors');
const { makeValue } = require('../bench/measure');
const { monitorEventLoopDelay, PerformanceObserver } = require('node:perf_hooks');

let raft = null;
let daemon = null;
let cluster = null;
let consensus = null;
const applied = []; // [index, term, operationId|null, command.type, command.seq, redelivered]
function recordCommand({ command, entry, operationId, redelivered }) {
  if (recordApplied) applied.push([entry.index, entry.term, operationId ?? null, command.type, command.seq ?? null, redelivered]);
}
/** Whether `applied` records every command; a benchmark turns it off so memory is the package's. */
let recordApplied = true;
let slowDaemonMs = 0;
let slowDaemonListening = false;
let slowDaemonMostAhead = 0;
/** The open-loop writer of a soak run, while one runs in this process. */
let soak = null;
const snapshots = [];
const unhandled = [];

process.on('unhandledRejection', (reason) => {
  unhandled.push(String(reason && reason.stack ? reason.stack : reason));
  send({ event: 'unhandledRejection', payload: { reason: String(reason) } });
});

function send(msg) {
  // With a callback, a send racing the parent's disconnect is dropped instead of raising 'error'.
  if (process.connected) process.send(msg, () => {});
}

const FORWARDED = [
  'leader_elected',
  'leader_lost',
  'term_updated',
  'became_follower',
  'peer_added',
  'peer_removed',
  'peer_connected',
  'peer_disconnected',
  'peer_add_failed',
  'snapshot_installed',
  'log_compacted',
  'warning',
];

const GUIDE_EVENTS = [
  'consensus:leader_elected',
  'consensus:leader_lost',
  'consensus:snapshot_installed',
  'consensus:operation_failed',
  'consensus:warning',
  'partition:detected',
  'partition:recovered',
  'log:compacted',
];
const CLUSTER_EVENTS = ['node_joined', 'node_left', 'node_health_changed', 'node_unhealthy', 'health_degraded', 'node_add_failed'];

function serializeError(err) {
  return { code: err && err.code, message: err && err.message, leaderId: err && err.leaderId, field: err && err.field };
}

async function load({ count, concurrency, prefix = 'op', withIds = true, padBytes = 0 }) {
  const pad = padBytes > 0 ? { pad: 'x'.repeat(padBytes) } : {};
  const latencies = new Array(count);
  const acked = [];
  const errors = {};
  let next = 0;
  const started = process.hrtime.bigint();
  async function worker() {
    while (next < count) {
      const seq = next++;
      const t0 = process.hrtime.bigint();
      try {
        const r = await raft.replicateCommand(
          { ...makeValue(seq), type: 'bench', seq, prefix, ...pad },
          withIds ? { operationId: `${prefix}-${seq}` } : {},
        );
        latencies[seq] = Number(process.hrtime.bigint() - t0) / 1e6;
        acked.push([seq, r.logIndex]);
      } catch (err) {
        errors[err.code] = (errors[err.code] || 0) + 1;
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
  return { elapsedMs, latencies: latencies.filter((x) => x !== undefined), acked, errors };
}

const ops = {
  async init({ config, guide, record = true, listen = true, secretsDuringStart }) {
    recordApplied = record;
    if (guide) {
      // The guide's stack: daemon, coordinator, cluster manager, consensus manager. The daemon
      // is the examples' one (with `daemonState`, kept on disk with the index of what it
      // executed), or one of the Delivery styles.
      let raftOptions = {};
      let consensusOptions = {};
      if (guide.daemonStyle) {
        daemon = new StyleDaemon(guide.daemonStyle, config);
        raftOptions = daemon.raftOptions();
        consensusOptions = daemon.consensusOptions();
      } else {
        const stateFile = guide.daemonState ? require('node:path').join(config.dataDir, 'daemon-executed.log') : undefined;
        if (stateFile) require('node:fs').mkdirSync(config.dataDir, { recursive: true });
        daemon = new Daemon({ daemonId: `daemon-${config.nodeId}`, name: config.nodeId, nodeId: config.nodeId, clusterId: 'test', stateFile });
        if (guide.daemonState) {
          raftOptions = { appliedIndex: () => daemon.appliedIndex };
          consensusOptions = { snapshot: (info) => daemon.snapshot(info), restore: (s, info) => daemon.restore(s, info) };
        }
      }
      raft = createRaftCoordinator({ ...config, ...raftOptions });
      // `clusterByNode` gives one node a ClusterManager config of its own (capabilities, metadata).
      cluster = createClusterManager({ nodeId: config.nodeId, ...guide.cluster, ...guide.clusterByNode?.[config.nodeId] });
      consensus = new ConsensusManager(daemon, raft, cluster, { ...guide.consensus, ...consensusOptions });
      daemon.attach(consensus);
      for (const name of GUIDE_EVENTS) consensus.on(name, (payload) => send({ event: name, payload: plain(payload) }));
      for (const name of CLUSTER_EVENTS) cluster.on(name, (payload) => send({ event: name, payload: plain(payload) }));
    } else {
      raft = createRaftCoordinator(config);
    }
    for (const name of FORWARDED) raft.on(name, (payload) => send({ event: name, payload: plain(payload) }));
    // `listen: false` leaves the guide's managers as the only listeners, as in a daemon.
    if (listen) raft.on('command_applied', recordCommand);
    raft.on('snapshot_installed', (s) => snapshots.push(s));
    if (guide) {
      await daemon.start();
      await raft.initialize();
      await cluster.initialize(raft);
      await consensus.initialize();
    } else {
      const starting = raft.initialize();
      // A rotation that comes while the node starts (an operator's signal handler, say).
      if (secretsDuringStart) raft.setSecrets(secretsDuringStart);
      await starting;
    }
    return raft.getState();
  },
  async replicateOperation({ operation }) {
    return consensus.replicateOperation(operation);
  },
  async guideLoad({ count, concurrency, prefix, padBytes = 0 }) {
    const pad = 'x'.repeat(padBytes);
    let next = 0;
    const acked = [];
    const errors = {};
    const started = Date.now();
    const latencies = [];
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < count) {
          const seq = next++;
          const t0 = process.hrtime.bigint();
          try {
            const value = makeValue(seq);
            if (padBytes > 0) value.payload = { ...value.payload, pad };
            const r = await consensus.replicateOperation({ ...value, id: `${prefix}-${seq}`, daemonId: daemon.daemonId, type: 'task' });
            latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
            acked.push([`${prefix}-${seq}`, r.logIndex]);
          } catch (err) {
            errors[err.code] = (errors[err.code] || 0) + 1;
          }
        }
      }),
    );
    return { acked, errors, elapsedMs: Date.now() - started, latencies };
  },
  /**
   * Starts writing `rate` operations per second through replicateOperation without waiting for
   * earlier ones (an open loop, as independent clients do), numbered from `from`. At most
   * `maxInFlight` wait at once; what the cap holds back is counted as `shed`, never queued.
   */
  async soakStart({ rate, prefix, from = 0, maxInFlight = 4096 }) {
    if (soak) throw new Error('a soak writer already runs here');
    const started = performance.now();
    const s = { issued: 0, next: from, inFlight: 0, latencies: [], errors: {}, shed: 0, timer: null };
    // A stall seen by the writers is either this process's JavaScript (a long task or a collection) or the
    // cluster: the sample says how long the event loop and the collector held still, to tell them apart.
    s.loopDelay = monitorEventLoopDelay({ resolution: 10 });
    s.loopDelay.enable();
    s.gc = { maxMs: 0, totalMs: 0 };
    s.gcObserver = new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        s.gc.maxMs = Math.max(s.gc.maxMs, entry.duration);
        s.gc.totalMs += entry.duration;
      }
    });
    s.gcObserver.observe({ entryTypes: ['gc'] });
    const write = (n) => {
      s.inFlight++;
      const t0 = performance.now();
      consensus
        .replicateOperation({ ...makeValue(n), id: `${prefix}-${n}`, daemonId: daemon.daemonId, type: 'task' })
        .then(
          () => s.latencies.push(performance.now() - t0),
          (err) => {
            s.errors[err.code || 'error'] = (s.errors[err.code || 'error'] || 0) + 1;
          },
        )
        .finally(() => s.inFlight--);
    };
    s.timer = setInterval(() => {
      const due = Math.floor(((performance.now() - started) / 1000) * rate) - s.issued;
      for (let i = 0; i < due; i++) {
        s.issued++;
        if (s.inFlight >= maxInFlight) s.shed++;
        else write(s.next++);
      }
    }, 5);
    soak = s;
    return null;
  },
  /** What the soak writer saw since the last sample (latencies in ms), and starts a new one. */
  async soakSample() {
    if (!soak) return null;
    const r = {
      latencies: soak.latencies,
      errors: soak.errors,
      shed: soak.shed,
      inFlight: soak.inFlight,
      next: soak.next,
      loopDelayMaxMs: soak.loopDelay.max / 1e6,
      gcMaxMs: soak.gc.maxMs,
      gcTotalMs: soak.gc.totalMs,
    };
    soak.loopDelay.reset();
    Object.assign(soak, { latencies: [], errors: {}, shed: 0, gc: { maxMs: 0, totalMs: 0 } });
    return r;
  },
  /** Stops issuing, waits for what is in flight, and returns the last sample. */
  async soakStop() {
    if (!soak) return null;
    clearInterval(soak.timer);
    soak.loopDelay.disable();
    soak.gcObserver.disconnect();
    while (soak.inFlight > 0) await new Promise((r) => setTimeout(r, 10));
    const last = await ops.soakSample();
    soak = null;
    return last;
  },
  /**
   * The engine's own measurements (what /metrics exposes): each histogram as its count and sum
   * in seconds, per peer round trips by node id, and the latest snapshot's size.
   */
  async nativeStats() {
    const st = raft._native.stats();
    const h = (x) => ({ count: x.count, sum: x.sum });
    return {
      logFsync: h(st.logFsync),
      applyCommit: h(st.applyCommit),
      snapshotSave: h(st.snapshotSave),
      snapshotInstall: h(st.snapshotInstall),
      snapshotRead: h(st.snapshotRead),
      snapshotBytes: st.snapshotBytes,
      peers: Object.fromEntries(st.peers.map((p) => [p.nodeId, h(p.rtt)])),
      networkRtt: Object.fromEntries(st.peers.map((p) => [p.nodeId, p.networkRtt])),
    };
  },
  async consensusState() {
    return consensus.getConsensusState();
  },
  async executed() {
    return daemon.executed;
  },
  /** What a Delivery-style daemon holds: [logIndex, operationId, redelivered] in its order. */
  async holdings() {
    return daemon.held;
  },
  async healthyNodes() {
    return cluster.getHealthyNodes().map((n) => n.nodeId);
  },
  async clusterNodes() {
    return cluster.getNodes();
  },
  async clusterStats() {
    return cluster.getStats();
  },
  async addNode({ node }) {
    return cluster.addNode(node);
  },
  async removeNodeGracefully({ nodeId }) {
    return consensus.removeNodeGracefully(nodeId);
  },
  async metrics() {
    return { metrics: consensus.getMetrics(), prometheus: consensus.prometheusMetrics() };
  },
  /** The Prometheus text of every node in this process, as a scrape would read it. */
  async prometheus() {
    return require('..').metricsText();
  },
  /**
   * A write given up through its AbortSignal after `abortAfterMs`: how it ended, how long the
   * caller waited after the abort, and the timers and listeners left behind once it settled.
   */
  async abortedWrite({ abortAfterMs, viaOperation = false }) {
    const controller = new AbortController();
    const before = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const write = viaOperation
      ? consensus.replicateOperation({ id: `abort-${Date.now()}`, type: 'task', payload: {} }, { signal: controller.signal })
      : raft.replicateCommand({ type: 'abort-test' }, { signal: controller.signal });
    const settled = write.then(() => ({ ok: true }), (err) => ({ ok: false, name: err.name, code: err.code, message: err.message }));
    await new Promise((r) => setTimeout(r, abortAfterMs));
    const abortedAt = process.hrtime.bigint();
    controller.abort();
    const outcome = await settled;
    const waitedMs = Number(process.hrtime.bigint() - abortedAt) / 1e6;
    await new Promise((r) => setImmediate(r));
    const after = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    return { outcome, waitedMs, timersBefore: before, timersAfter: after };
  },
  async operationState({ operationId }) {
    return consensus.getOperationState(operationId);
  },
  async shutdownConsensus() {
    await consensus.shutdown();
    await cluster.shutdown();
    return { consensusListeners: consensus.eventNames().length };
  },
  async addPeer({ nodeId, host, port, fireAndForget }) {
    if (fireAndForget) {
      raft.addPeer(nodeId, host, port);
      return null;
    }
    await raft.addPeer(nodeId, host, port);
    return null;
  },
  /**
   * addPeer for every peer, as start-up code does: all in one synchronous run (each call is
   * started before any is awaited), or one after another with `sequential`. Resolves once all
   * settled, with each outcome.
   */
  async addPeers({ peers, sequential = false }) {
    const outcome = (p) => p.then(() => ({ ok: true }), (err) => ({ ok: false, error: serializeError(err) }));
    if (sequential) {
      const results = [];
      for (const { nodeId, host, port } of peers) results.push(await outcome(raft.addPeer(nodeId, host, port)));
      return results;
    }
    return Promise.all(peers.map(({ nodeId, host, port }) => outcome(raft.addPeer(nodeId, host, port))));
  },
  /** Polls leadership here until this node no longer claims it; reports when (ms since epoch). */
  async untilNotLeader({ timeoutMs = 10000 } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = raft.getState();
      if (!raft.isLeader && raft.leaderId === null && s.role !== 'leader' && s.leaderId === null && !s.isLeader) {
        return { at: Date.now(), role: s.role };
      }
      if (Date.now() > deadline) throw new Error(`still leader after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 2));
    }
  },
  /** A write timed inside this process: how long until it settled, and how. */
  async timedReplicate({ command }) {
    const t0 = process.hrtime.bigint();
    try {
      const r = await raft.replicateCommand(command);
      return { ok: true, ms: Number(process.hrtime.bigint() - t0) / 1e6, result: r };
    } catch (err) {
      return { ok: false, ms: Number(process.hrtime.bigint() - t0) / 1e6, error: serializeError(err) };
    }
  },
  async removePeer({ nodeId }) {
    await raft.removePeer(nodeId);
    return null;
  },
  async replicate({ command, operationId, forward, timeoutMs }) {
    return raft.replicateCommand(command, { operationId, forward, timeoutMs });
  },
  /** Hands leadership over and, without a pause, sends a write through the new leader. */
  async transferThenWrite({ to, command, operationId }) {
    await raft.transferLeadership(to);
    return raft.replicateCommand(command, { operationId, forward: true });
  },
  /** Where this node applied each of `operationIds` (null where it has not). */
  async operations({ operationIds }) {
    return operationIds.map((id) => raft.getOperation(id));
  },
  /** Fault injection (chaos runs without network namespaces); refused unless enabled. */
  async cutLinks({ outbound, inbound }) {
    try {
      raft._native.setLinkCuts(outbound, inbound);
    } catch (err) {
      throw fromNative(err);
    }
    return null;
  },
  async setSecrets({ secrets }) {
    raft.setSecrets(secrets);
    return null;
  },
  async reloadTls() {
    await raft.reloadTls();
    return null;
  },
  async ping({ nodeId, timeoutMs }) {
    return raft.ping(nodeId, timeoutMs);
  },
  async compact({ keep }) {
    return raft.compact(keep);
  },
  /** Serves the admin endpoint: the ConsensusManager's in guide mode, else the coordinator's. */
  async listenAdmin({ port = 0, host = '127.0.0.1', token } = {}) {
    const admin = await (consensus ?? raft).listenAdmin(token === undefined ? { port, host } : { port, host, token });
    return { port: admin.port, url: admin.url };
  },
  /**
   * An HTTP GET from inside this process (and its network namespace): how a test reaches an
   * admin endpoint that listens on the namespace's own loopback.
   */
  async httpGet({ url, token }) {
    const http = require('node:http');
    return new Promise((resolve, reject) => {
      const req = http.get(url, { headers: token ? { authorization: `Bearer ${token}` } : {} }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode, body }));
      });
      req.setTimeout(5000, () => req.destroy(new Error(`no answer from ${url} within 5000 ms`)));
      req.on('error', reject);
    });
  },
  async load(args) {
    return load(args);
  },
  /**
   * Makes this node's daemon take `ms` of CPU per applied entry from now on (0: as fast as it
   * can). Returns the most entries the node had applied ahead of the one the daemon was taking.
   */
  async slowDaemon({ ms }) {
    slowDaemonMs = ms;
    if (!slowDaemonListening) {
      slowDaemonListening = true;
      raft.on('command_applied', ({ entry }) => {
        slowDaemonMostAhead = Math.max(slowDaemonMostAhead, raft.getState().lastApplied - entry.index);
        const until = performance.now() + slowDaemonMs;
        while (performance.now() < until);
      });
    }
    return slowDaemonMostAhead;
  },
  /**
   * `count` writes, each awaited: counts those whose own command_applied had not fired, or
   * whose index getState().lastApplied had not reached, when the write resolved.
   */
  async readYourWrites({ count }) {
    let delivered = -1;
    const onApplied = ({ entry }) => {
      delivered = Math.max(delivered, entry.index);
    };
    raft.on('command_applied', onApplied);
    const missed = { event: 0, state: 0 };
    try {
      for (let n = 0; n < count; n++) {
        const { logIndex } = await raft.replicateCommand({ type: 'ryw', n });
        if (delivered < logIndex) missed.event++;
        if (raft.getState().lastApplied < logIndex) missed.state++;
      }
    } finally {
      raft.off('command_applied', onApplied);
    }
    return missed;
  },
  /** Writes as fast as it can with `concurrency` in flight, reporting each ack as it happens. */
  async stream({ concurrency, prefix }) {
    let seq = 0;
    let acked = [];
    const flush = setInterval(() => {
      if (acked.length) send({ event: 'acked', payload: acked });
      acked = [];
    }, 5);
    const worker = async () => {
      for (;;) {
        const n = seq++;
        const r = await raft.replicateCommand({ type: 'stream', seq: n }, { operationId: `${prefix}-${n}` });
        acked.push([n, r.logIndex]);
      }
    };
    for (let i = 0; i < concurrency; i++) worker().catch(() => {});
    void flush;
    return null;
  },
  async state() {
    return raft.getState();
  },
  /** Starts recording applied commands (`applied`), for a node started with `listen: false`. */
  async listen() {
    raft.on('command_applied', recordCommand);
  },
  /** How many applied entries the coordinator holds in memory for a listener not attached yet. */
  async heldForListener() {
    return raft._held.length;
  },
  async applied({ from = 0 } = {}) {
    return { entries: applied.slice(from), total: applied.length, snapshots };
  },
  async unhandled() {
    return unhandled;
  },
  async memory() {
    return process.memoryUsage();
  },
  async stop() {
    await raft.stop();
    return null;
  },
};

Object.assign(ops, require('./state-ops').stateOps(() => raft, send));

function plain(payload) {
  if (payload instanceof Error) return serializeError(payload);
  if (payload && payload.error instanceof Error) return { ...payload, error: serializeError(payload.error) };
  return payload;
}

// A parent that dies (or is killed) takes its nodes with it, as a crash would: nothing waits
// for orphans, and their data directories stay as a crash leaves them.
process.on('disconnect', () => process.exit(0));

process.on('message', async (msg) => {
  const { id, op, args } = msg;
  try {
    const result = await ops[op](args || {});
    send({ id, ok: true, result });
  } catch (err) {
    send({ id, ok: false, error: serializeError(err) });
  }
});

send({ event: 'ready', payload: { pid: process.pid } });
