'use strict';
// Runs cluster nodes as separate OS processes on 127.0.0.1, each with its own data directory
// and port, for tests, the demo and the benchmark.
const { fork, spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const WORKER = path.join(__dirname, 'node-worker.js');

/**
 * Temporary data directories and node processes of this process: an interrupted run (Ctrl-C of
 * the demo, a test or the benchmark, or SIGTERM) kills its nodes and removes the directories
 * before it exits, instead of leaving them in the temp folder.
 */
const liveRoots = new Set();
const liveChildren = new Set();
let cleanupInstalled = false;

function cleanUpNow() {
  for (const child of liveChildren) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const root of liveRoots) fs.rmSync(root, { recursive: true, force: true, maxRetries: 3 });
  liveRoots.clear();
}

function installCleanup() {
  if (cleanupInstalled) return;
  cleanupInstalled = true;
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.once(signal, () => {
      cleanUpNow();
      // Exit as the signal would have: 128 + its number.
      process.exit(128 + os.constants.signals[signal]);
    });
  }
  process.once('exit', cleanUpNow);
}

/** A fresh temporary directory, removed when the process is interrupted or exits. */
function tempRoot(prefix = 'unrdf-consensus-') {
  installCleanup();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  liveRoots.add(root);
  return root;
}

/**
 * The ports the kernel hands out for outgoing connections. A port chosen for a node to listen on later must
 * lie outside them: otherwise, between the choice and the node's bind, any connection on the machine (the
 * cluster's own among them) may take it as its local port, and the node fails with ERR_ADDRESS_IN_USE.
 */
function ephemeralPorts() {
  try {
    const [low, high] = fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (low > 0 && high >= low) return { low, high };
  } catch {
    // Not Linux: the IANA range, which other systems use.
  }
  return { low: 49152, high: 65535 };
}

function canListen(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/**
 * Ports this process handed out already. A cluster asks for all its ports before any node listens, so
 * a port free when it was checked may be handed out twice: one cluster in a few thousand got two nodes on
 * one port, and the second failed to start with ERR_ADDRESS_IN_USE.
 */
const handedOut = new Set();

/** A free TCP port on 127.0.0.1 for a node to listen on, outside the kernel's range for outgoing connections. */
async function freePort() {
  const { low, high } = ephemeralPorts();
  // Up to 10,000 ports just below the outgoing range, or the ports above it where those are more.
  const [from, to] = low - 10000 >= 65535 - high ? [Math.max(10000, low - 10000), low - 1] : [high + 1, 65535];
  for (let attempt = 0; attempt < 50 && to > from; attempt++) {
    const port = from + Math.floor(Math.random() * (to - from + 1));
    if (!handedOut.has(port) && (await canListen(port))) {
      handedOut.add(port);
      return port;
    }
  }
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * The parent's Node flags, minus a script given on the command line: a parent started with `node -e` would
 * otherwise make every worker run that script again instead of the worker, and each of those fork more.
 */
function inheritableExecArgv() {
  const kept = [];
  const args = process.execArgv;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    // These take the script (or its type) as the next argument unless written with `=`.
    if (/^(-e|-p|-pe|--eval|--print|--input-type)$/.test(arg)) i += 1;
    else if (!/^(--eval|--print|--input-type)=/.test(arg)) kept.push(arg);
  }
  return kept;
}

class NodeProcess {
  /**
   * @param {{nodeId: string, port: number, dataDir: string, config?: object, guide?: object,
   *   host?: string, netns?: string}} options `netns` runs the node inside that network namespace,
   *   listening on `host` (its address there).
   */
  constructor({ nodeId, port, dataDir, config = {}, guide = null, host = '127.0.0.1', netns = null, env = null, captureOutput = false, initArgs = {}, worker = WORKER, nodeArgs = [] }) {
    /** Node.js options of the node process (the benchmark's profiler settings). */
    this.nodeArgs = nodeArgs;
    /** More arguments of the worker's `init` (`record: false` keeps it from logging every apply). */
    this.initArgs = initArgs;
    /** Extra environment of the node process, and whether its stdout/stderr are kept in `output`. */
    this.env = env;
    /** The node-worker.js to run: another checkout's runs that checkout's code (rolling upgrades). */
    this.worker = worker;
    this.captureOutput = captureOutput;
    this.output = '';
    this.nodeId = nodeId;
    this.guide = guide;
    this._host = host;
    this.netns = netns;
    this.port = port;
    this.dataDir = dataDir;
    this.config = config;
    this.child = null;
    this.pending = new Map();
    this.nextId = 1;
    this.events = [];
    this.waiters = [];
    /** Optional observer of every event, across restarts (`events` starts afresh each start). */
    this.onEvent = null;
  }

  get host() {
    return this._host;
  }

  async start() {
    this.events = [];
    const out = this.captureOutput ? 'pipe' : 'inherit';
    const stdio = ['ignore', out, out, 'ipc'];
    const env = this.env ? { ...process.env, ...this.env } : process.env;
    this.child = this.netns
      ? spawn('ip', ['netns', 'exec', this.netns, process.execPath, ...this.nodeArgs, this.worker], {
          stdio,
          serialization: 'advanced',
          env,
        })
      : fork(this.worker, [], { stdio, serialization: 'advanced', env, execArgv: [...inheritableExecArgv(), ...this.nodeArgs] });
    const child = this.child;
    installCleanup();
    liveChildren.add(child);
    child.once('exit', () => liveChildren.delete(child));
    if (this.captureOutput) {
      for (const stream of [child.stdout, child.stderr]) stream.on('data', (d) => (this.output += d.toString()));
    }
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    child.on('message', (msg) => this._onMessage(msg));
    child.once('exit', () => {
      for (const { reject } of this.pending.values()) reject(new Error(`${this.nodeId} exited`));
      this.pending.clear();
    });
    await this.waitEvent('ready', () => true, 10000);
    return this.call('init', {
      config: { nodeId: this.nodeId, host: this.host, port: this.port, dataDir: this.dataDir, ...this.config },
      guide: this.guide,
      ...this.initArgs,
    });
  }

  _onMessage(msg) {
    if (msg.id !== undefined) {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.ok) p.resolve(msg.result);
      else p.reject(Object.assign(new Error(msg.error.message), msg.error));
      return;
    }
    const entry = { name: msg.event, payload: msg.payload, at: Date.now() };
    this.events.push(entry);
    if (this.onEvent) this.onEvent(entry);
    this.waiters = this.waiters.filter((w) => {
      if (w.name === entry.name && w.pred(entry.payload)) {
        w.resolve(entry.payload);
        clearTimeout(w.timer);
        return false;
      }
      return true;
    });
  }

  /** Sends an op to the node's process and waits for its answer. */
  call(op, args = {}, timeoutMs = 60000) {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) {
      return Promise.reject(new Error(`${this.nodeId} is not running`));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${this.nodeId}: ${op} did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.child.send({ id, op, args }, (err) => {
        if (err) this.pending.get(id)?.reject(err);
      });
    });
  }

  /** Resolves with the first event `name` (already seen or future) whose payload matches. */
  waitEvent(name, pred = () => true, timeoutMs = 10000) {
    const seen = this.events.find((e) => e.name === name && pred(e.payload));
    if (seen) return Promise.resolve(seen.payload);
    return new Promise((resolve, reject) => {
      const w = { name, pred, resolve };
      w.timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error(`${this.nodeId}: no ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  get running() {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Kills the process with `signal` and waits until it is gone. */
  async kill(signal = 'SIGKILL') {
    if (!this.running) return;
    this.child.kill(signal);
    await this.exited;
  }

  async stop() {
    if (!this.running) return;
    try {
      await this.call('stop', {}, 10000);
    } catch {
      // fall through to kill
    }
    this.child.disconnect();
    const gone = await Promise.race([this.exited, new Promise((r) => setTimeout(() => r(null), 5000).unref())]);
    if (!gone) await this.kill('SIGKILL');
  }
}

class Cluster {
  /**
   * @param {number} size
   * @param {{config?: object, root?: string, guide?: {cluster?: object, consensus?: object},
   *   network?: import('./netns').TestNetwork}} [options]
   *   `guide` runs the guide's whole stack in each node: daemon, ClusterManager, ConsensusManager.
   *   `network` puts node i in the network's namespace i, so partitions are real.
   */
  constructor(size, { config = {}, root, guide = null, network = null, nodeOptions = {} } = {}) {
    /** Passed to every NodeProcess (`env`, `captureOutput`, `initArgs`). */
    this.nodeOptions = nodeOptions;
    this.size = size;
    this.config = config;
    this.guide = guide;
    this.network = network;
    this.root = root || tempRoot();
    this.nodes = [];
  }

  async start() {
    await this.prepare();
    const started = await Promise.allSettled(this.nodes.map((n) => n.start()));
    const failed = started.find((s) => s.status === 'rejected');
    if (failed) {
      // The caller gets no cluster to stop, and live worker processes would keep the test file from
      // ever exiting.
      await this.stop().catch(() => {});
      throw failed.reason;
    }
    return this;
  }

  /**
   * Creates the node processes (ports and data directories chosen) without starting them, for
   * tests that start nodes in an order or at moments of their own.
   */
  async prepare() {
    for (let i = 1; i <= this.size; i++) {
      const nodeId = `node-${i}`;
      this.nodes.push(
        new NodeProcess({
          nodeId,
          // In a namespace of our own every port is free; on loopback ask the kernel for one.
          port: this.network ? 7000 : await freePort(),
          host: this.network ? this.network.hosts[i - 1].addr : '127.0.0.1',
          netns: this.network ? this.network.hosts[i - 1].ns : null,
          dataDir: path.join(this.root, nodeId),
          config: this.config,
          guide: this.guide,
          ...this.nodeOptions,
        }),
      );
    }
    return this;
  }

  node(nodeId) {
    return this.nodes.find((n) => n.nodeId === nodeId);
  }

  /**
   * A node process beside the cluster, not one of its members (a stranger, an impostor, a node
   * to add later): a free port on 127.0.0.1, a data directory under the cluster's root. Not
   * started, and not stopped by `stop()`.
   */
  async outsider(nodeId, config = {}, options = {}) {
    return new NodeProcess({ nodeId, port: await freePort(), dataDir: path.join(this.root, nodeId), config, ...options });
  }

  /** node-1 adds every other node, as the guide's Step 2 does. */
  async form() {
    const [first, ...rest] = this.nodes;
    for (const n of rest) await first.call('addPeer', { nodeId: n.nodeId, host: n.host, port: n.port });
    if (this.guide) {
      for (const n of rest) {
        await first.call('addNode', {
          node: { nodeId: n.nodeId, host: n.host, port: n.port, capabilities: ['task-execution', 'event-processing'] },
        });
      }
    }
    await this.waitFor(async () => {
      const states = await this.states();
      return states.every((s) => s.leaderId === first.nodeId && !s.membership.changing) ? states : null;
    });
    return first;
  }

  async states(nodes = this.nodes.filter((n) => n.running)) {
    return Promise.all(nodes.map((n) => n.call('state')));
  }

  /** The running node that reports itself leader, waiting for one to appear. */
  async leader(timeoutMs = 15000, among = this.nodes) {
    return this.waitFor(async () => {
      for (const n of among.filter((x) => x.running)) {
        const s = await n.call('state').catch(() => null);
        if (s && s.isLeader) return n;
      }
      return null;
    }, timeoutMs);
  }

  /** Polls `check` (returning a truthy value when done) until it succeeds or time runs out. */
  async waitFor(check, timeoutMs = 15000, intervalMs = 50) {
    const deadline = Date.now() + timeoutMs;
    let last;
    while (Date.now() < deadline) {
      try {
        last = await check();
        if (last) return last;
      } catch (err) {
        last = err;
      }
      await new Promise((r) => setTimeout(r, intervalMs));
    }
    throw new Error(`condition not met within ${timeoutMs} ms (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
  }

  async stop({ keepData = false } = {}) {
    await Promise.all(this.nodes.map((n) => n.stop()));
    if (!keepData) {
      fs.rmSync(this.root, { recursive: true, force: true });
      liveRoots.delete(this.root);
    }
  }
}

module.exports = { Cluster, NodeProcess, canListen, freePort, tempRoot, WORKER };
