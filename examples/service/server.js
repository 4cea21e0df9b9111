#!/usr/bin/env node
// A small replicated key-value service: one process per machine, an HTTP API for writes and
// reads, Prometheus metrics, and a drain on SIGTERM. Configured from the environment (see
// README.md beside this file); systemd and docker-compose files show how to run three.
'use strict';
const http = require('node:http');
const path = require('node:path');
const { EventEmitter } = require('node:events');
const {
  createRaftCoordinator,
  createClusterManager,
  ConsensusManager,
  metricsText,
} = require('@unrdf/consensus');

function env(name, fallback) {
  const value = process.env[name];
  if (value === undefined || value === '') {
    if (fallback === undefined) throw new Error(`${name} is required`);
    return fallback;
  }
  return value;
}

/** INITIAL_MEMBERS="node-1@10.0.1.100:7001,node-2@10.0.1.101:7001,...": every voter, this node too. */
function parseMembers(text) {
  return text.split(',').map((item) => {
    const m = /^([A-Za-z0-9._-]+)@(.+):(\d+)$/.exec(item.trim());
    if (!m) throw new Error(`INITIAL_MEMBERS: cannot read "${item}" (expected nodeId@host:port)`);
    return { nodeId: m[1], host: m[2], port: Number(m[3]) };
  });
}

const nodeId = env('NODE_ID');
const initialMembers = parseMembers(env('INITIAL_MEMBERS'));
const self = initialMembers.find((m) => m.nodeId === nodeId);
if (!self) throw new Error(`INITIAL_MEMBERS does not list NODE_ID ${nodeId}`);
const httpPort = Number(env('HTTP_PORT'));
const httpHost = env('HTTP_HOST', '127.0.0.1');

/**
 * The daemon: a key-value map rebuilt at every start from the latest snapshot and the log after
 * it (appliedIndex 0 with snapshot/restore), so it keeps nothing on disk of its own.
 */
class KvDaemon extends EventEmitter {
  constructor() {
    super();
    this.nodeId = nodeId;
    this.kv = new Map();
    this.applied = []; // operation ids in the order they were applied
  }

  apply({ operation }) {
    if (operation.type === 'set') this.kv.set(operation.payload.key, operation.payload.value);
    if (operation.type === 'delete') this.kv.delete(operation.payload.key);
    this.applied.push(operation.id);
    this.emit('operation:success', { operationId: operation.id });
  }

  snapshot() {
    return { kv: [...this.kv], applied: this.applied };
  }

  restore(state) {
    this.kv = new Map(state?.kv ?? []);
    this.applied = state?.applied ?? [];
  }
}

const daemon = new KvDaemon();
const raft = createRaftCoordinator({
  nodeId,
  host: env('RAFT_HOST', self.host),
  advertiseHost: self.host,
  port: self.port,
  initialMembers,
  dataDir: env('DATA_DIR', path.join('.consensus', nodeId)),
  clusterId: env('CLUSTER_ID', 'kv-service'),
  secret: process.env.CLUSTER_SECRET || undefined,
  appliedIndex: 0,
  logger: jsonLogger(),
  logLevel: env('LOG_LEVEL', 'warn'),
});
const cluster = createClusterManager({ nodeId });
const consensus = new ConsensusManager(daemon, raft, cluster, {
  replicationFactor: initialMembers.length,
  snapshot: () => daemon.snapshot(),
  restore: (state) => daemon.restore(state),
});
consensus.on('consensus:operation_committed', (e) => daemon.apply(e));

/** One JSON line per record on stdout, as journald and docker logs like it (pino's shape). */
function jsonLogger() {
  const write = (level) => (obj, msg) => process.stdout.write(`${JSON.stringify({ level, time: Date.now(), ...obj, msg })}\n`);
  return { trace: write('trace'), debug: write('debug'), info: write('info'), warn: write('warn'), error: write('error') };
}

function send(res, status, body, headers = {}) {
  const text = typeof body === 'string' ? body : `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'content-type': typeof body === 'string' ? 'text/plain; version=0.0.4' : 'application/json', ...headers });
  res.end(text);
}

function readJson(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => {
      body += chunk;
      if (body.length > 1024 * 1024) reject(Object.assign(new Error('body over 1 MB'), { status: 413 }));
    });
    req.on('end', () => {
      try {
        resolve(JSON.parse(body));
      } catch (err) {
        reject(Object.assign(new Error(`malformed JSON: ${err.message}`), { status: 400 }));
      }
    });
    req.on('error', reject);
  });
}

const STATUS_OF = { ERR_NOT_LEADER: 421, ERR_NO_QUORUM: 503, ERR_TIMEOUT: 503, ERR_SHUTDOWN: 503, ERR_NOT_INITIALIZED: 503, ERR_INVALID_OPERATION: 400 };
let draining = false;
let inFlight = 0;

async function handle(req, res) {
  const url = new URL(req.url, 'http://service');
  if (req.method === 'GET' && url.pathname === '/metrics') return send(res, 200, metricsText());
  if (req.method === 'GET' && url.pathname === '/health') {
    const s = raft.getState();
    const ok = !draining && s.leaderId !== null;
    return send(res, ok ? 200 : 503, { nodeId, role: s.role, leaderId: s.leaderId, term: s.term, draining });
  }
  if (req.method === 'GET' && url.pathname === '/ops') return send(res, 200, { nodeId, applied: daemon.applied });
  if (req.method === 'GET' && url.pathname.startsWith('/kv/')) {
    const key = decodeURIComponent(url.pathname.slice(4));
    return daemon.kv.has(key) ? send(res, 200, { key, value: daemon.kv.get(key) }) : send(res, 404, { error: `no key ${key}` });
  }
  if (req.method === 'POST' && url.pathname === '/ops') {
    if (draining) return send(res, 503, { error: 'draining: send it to another node', code: 'ERR_SHUTDOWN' });
    const op = await readJson(req);
    // A client that hangs up gives up its write: the signal frees this handler at once.
    const gone = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) gone.abort();
    });
    const result = await consensus.replicateOperation(
      { id: op.id, type: op.type, payload: op.payload, timestamp: Date.now() },
      { signal: gone.signal },
    );
    return send(res, 200, result);
  }
  return send(res, 404, { error: `no route ${req.method} ${url.pathname}` });
}

const server = http.createServer((req, res) => {
  inFlight++;
  handle(req, res)
    .catch((err) => {
      if (err.name === 'AbortError') return; // the client left; nobody to answer
      const status = err.status ?? STATUS_OF[err.code] ?? 500;
      send(res, status, { error: err.message, code: err.code, leaderId: err.leaderId });
    })
    .finally(() => inFlight--);
});

/**
 * SIGTERM: stop taking writes, let the ones in flight finish, hand leadership to another voter
 * so the cluster needs no election, then stop. Data stays; a restart rejoins with it.
 */
async function drain(signal) {
  if (draining) return;
  draining = true;
  console.log(JSON.stringify({ level: 'info', nodeId, msg: `${signal}: draining` }));
  server.close();
  const deadline = Date.now() + 10000;
  while (inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const s = raft.getState();
  const successor = s.isLeader ? s.membership.voters.find((id) => id !== nodeId) : undefined;
  if (successor) await raft.transferLeadership(successor).catch(() => {});
  await consensus.shutdown();
  await cluster.shutdown();
  await raft.stop();
  server.closeAllConnections();
  console.log(JSON.stringify({ level: 'info', nodeId, msg: 'stopped' }));
}

process.on('SIGTERM', () => drain('SIGTERM'));
process.on('SIGINT', () => drain('SIGINT'));

(async () => {
  await raft.initialize();
  await cluster.initialize(raft);
  await consensus.initialize();
  await new Promise((resolve) => server.listen(httpPort, httpHost, resolve));
  console.log(JSON.stringify({ level: 'info', nodeId, msg: `serving on http://${httpHost}:${httpPort}` }));
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
