'use strict';
// The admin endpoint: plain node:http, for probes, scrapers and the `unrdf-consensus` CLI.
// GET /metrics, /health, /status, /backup; POST /members, /leader/transfer, /compact;
// DELETE /members/:id. With a token, every request carries `Authorization: Bearer <token>`.
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const { ConsensusError, ErrorCode, invalidConfig, fromNative } = require('./errors');
const v = require('./validate');

const MAX_BODY_BYTES = 64 * 1024;
const MIN_TOKEN_LENGTH = 16;
/** A follower that heard nothing from its leader for this many election timeouts is unhealthy. */
const STALE_ELECTION_TIMEOUTS = 3;

const ROUTES = [
  { path: '/metrics', methods: ['GET'] },
  { path: '/health', methods: ['GET'] },
  { path: '/status', methods: ['GET'] },
  { path: '/backup', methods: ['GET'] },
  { path: '/members', methods: ['GET', 'POST'] },
  { path: /^\/members\/([^/]+)$/, methods: ['DELETE'] },
  { path: '/leader/transfer', methods: ['POST'] },
  { path: '/compact', methods: ['POST'] },
];

function isLoopback(host) {
  if (host === 'localhost') return true;
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (net.isIPv4(bare)) return bare.startsWith('127.');
  if (net.isIPv6(bare)) return bare === '::1' || bare === '0:0:0:0:0:0:0:1' || /^::ffff:127\./i.test(bare);
  return false;
}

function digest(value) {
  return crypto.createHash('sha256').update(value, 'utf8').digest();
}

/** Validates listenAdmin's options; the token goes into a closure, never onto an object. */
function normalizeOptions(options) {
  v.checkObject(options, 'listenAdmin options');
  v.checkKnownKeys(options, ['port', 'host', 'token'], 'listenAdmin');
  const port = v.integer(options.port, 'port', { min: 0, max: 65535, fallback: 0 });
  const host = v.string(options.host, 'host', { fallback: '127.0.0.1', maxLength: 253 });
  let tokenDigest = null;
  if (options.token !== undefined) {
    // The value itself is never part of a message.
    if (typeof options.token !== 'string') throw invalidConfig('token', `expected a string, got a ${options.token === null ? 'null' : typeof options.token}`);
    if (options.token.length < MIN_TOKEN_LENGTH) throw invalidConfig('token', `must be at least ${MIN_TOKEN_LENGTH} characters`);
    tokenDigest = digest(options.token);
  }
  if (tokenDigest === null && !isLoopback(host)) {
    throw invalidConfig('token', `required when the admin endpoint listens on ${host}, which is not a loopback address: anyone who reaches it could change the membership or read a backup`);
  }
  return { port, host, tokenDigest };
}

class HttpError extends Error {
  constructor(status, code, message, extra = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.extra = extra;
  }
}

const STATUS_BY_CODE = {
  [ErrorCode.INVALID_CONFIG]: 400,
  [ErrorCode.INVALID_OPERATION]: 400,
  [ErrorCode.NODE_NOT_FOUND]: 404,
  [ErrorCode.NOT_LEADER]: 503,
  [ErrorCode.NO_QUORUM]: 503,
  [ErrorCode.SHUTDOWN]: 503,
  [ErrorCode.NOT_INITIALIZED]: 503,
  [ErrorCode.TIMEOUT]: 504,
  [ErrorCode.AUTH]: 502,
  [ErrorCode.ADDRESS_IN_USE]: 500,
  [ErrorCode.STORAGE]: 500,
};

function send(res, status, body, headers = {}) {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers });
  res.end(text);
}

function sendError(res, err) {
  if (err instanceof HttpError) {
    send(res, err.status, { error: { code: err.code, message: err.message, ...err.extra } }, err.headers);
    return;
  }
  const e = err instanceof ConsensusError ? err : fromNative(err);
  const extra = e.leaderId !== undefined ? { leaderId: e.leaderId } : {};
  send(res, STATUS_BY_CODE[e.code] ?? 500, { error: { code: e.code, message: e.message, ...extra } });
}

function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk) => {
      if (failed) return;
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        failed = true;
        reject(new HttpError(413, ErrorCode.INVALID_OPERATION, `body: larger than ${MAX_BODY_BYTES} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on('error', reject);
    req.on('end', () => {
      if (failed) return;
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.trim() === '') {
        resolve({});
        return;
      }
      try {
        const body = JSON.parse(text);
        if (!v.isPlainObject(body)) throw new Error('expected a JSON object');
        resolve(body);
      } catch (err) {
        reject(new HttpError(400, ErrorCode.INVALID_OPERATION, `body: not a JSON object: ${err.message}`));
      }
    });
  });
}

/** Validates one body field, answering 400 with the reason. */
function field(check) {
  try {
    return check();
  } catch (err) {
    throw new HttpError(400, ErrorCode.INVALID_OPERATION, err.message, err.field ? { field: err.field } : {});
  }
}

/** Minimal Prometheus text for a bare coordinator (no ConsensusManager to ask). */
function coordinatorMetrics(raft) {
  const s = raft.getState();
  const id = String(s.nodeId).replace(/\\/g, '\\\\').replace(/"/g, '\\"');
  const label = `node_id="${id}"`;
  const lines = [];
  const gauge = (name, help, value) => lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name}{${label}} ${value}`);
  gauge('consensus_has_leader', '1 when this node knows a leader that has a quorum', s.leaderId ? 1 : 0);
  gauge('consensus_is_leader', '1 when this node is the leader', s.isLeader ? 1 : 0);
  gauge('consensus_term', 'Current Raft term', s.term);
  gauge('consensus_commit_index', 'Highest log index known committed', s.commitIndex);
  gauge('consensus_last_applied_index', 'Highest log index applied on this node', s.lastApplied);
  gauge('consensus_log_entries', 'Entries in the log after compaction', s.logLength);
  return `${lines.join('\n')}\n`;
}

/**
 * The node's health as a probe sees it: a leader (with a quorum, or it would not say so) or a
 * follower that hears from its leader.
 */
function health(raft, manager) {
  const s = raft.getState();
  if (s.role === 'shutdown') return { ok: false, reason: s.failure ?? 'the node is stopped', state: s };
  if (!s.leaderId) {
    return { ok: false, reason: s.role === 'candidate' ? 'an election is running; no leader yet' : 'no leader with a quorum is known to this node', state: s };
  }
  if (manager && manager.partitionState === 'partitioned') {
    return { ok: false, reason: `partitioned: no contact with ${s.isLeader ? 'a majority' : `the leader (${s.leaderId})`}`, state: s };
  }
  if (!s.isLeader) {
    const staleMs = STALE_ELECTION_TIMEOUTS * raft.config.electionTimeoutMax;
    const silentMs = s.lastContact > 0 ? Date.now() - s.lastContact : Infinity;
    if (silentMs > staleMs) {
      const since = Number.isFinite(silentMs) ? `for ${silentMs} ms` : 'since start';
      return { ok: false, reason: `no contact with the leader (${s.leaderId}) ${since}`, state: s };
    }
  }
  return { ok: true, reason: null, state: s };
}

function memberHealth(nodeId, s, self, clusterManager, lagLimit) {
  if (nodeId === s.nodeId) return self.ok ? 'healthy' : 'unhealthy';
  if (!s.connectedPeers.includes(nodeId)) return 'unreachable';
  // The leader knows how far each member holds its log: connected but not (yet) following, or
  // more than a snapshot's worth behind, is not healthy whatever its health checks say.
  if (s.isLeader) {
    const matched = s.replication[nodeId];
    if (matched === undefined || matched === null) return 'degraded';
    if (s.lastLogIndex - matched > lagLimit) return 'degraded';
  }
  if (clusterManager) {
    try {
      const h = clusterManager.getNodeHealth(nodeId);
      if (h) return h;
    } catch {
      // not tracked there: what the coordinator knows stands
    }
  }
  return 'healthy';
}

function status(raft, manager) {
  const h = health(raft, manager);
  const s = h.state;
  const clusterManager = manager ? manager.clusterManager : null;
  const members = Object.entries(s.membership.nodes).map(([nodeId, m]) => {
    let matchedIndex = null;
    let lag = null;
    if (nodeId === s.nodeId) {
      matchedIndex = s.lastLogIndex;
      lag = s.isLeader ? 0 : null;
    } else if (s.isLeader && Object.prototype.hasOwnProperty.call(s.replication, nodeId)) {
      matchedIndex = s.replication[nodeId];
      lag = Math.max(0, s.lastLogIndex - (matchedIndex ?? -1));
    }
    const health = memberHealth(nodeId, s, h, clusterManager, raft.config.snapshotThreshold);
    return { nodeId, host: m.host, port: m.port, voter: m.voter, health, matchedIndex, lag };
  });
  return {
    nodeId: s.nodeId,
    role: s.role,
    term: s.term,
    leader: s.leaderId,
    isLeader: s.isLeader,
    commitIndex: s.commitIndex,
    appliedIndex: s.lastApplied,
    lastLogIndex: s.lastLogIndex,
    logLength: s.logLength,
    snapshotIndex: s.snapshotIndex,
    quorum: h.ok && s.leaderId !== null,
    health: { ok: h.ok, reason: h.reason },
    membershipChanging: s.membership.changing,
    partitionState: manager ? manager.partitionState : undefined,
    lastContact: s.lastContact,
    members,
    timestamp: Date.now(),
  };
}

/** A voter other than the leader, the most caught up first: where `POST /leader/transfer` goes. */
function transferTarget(s) {
  const candidates = s.membership.voters.filter((id) => id !== s.nodeId);
  candidates.sort((a, b) => (s.replication[b] ?? -1) - (s.replication[a] ?? -1));
  return candidates[0];
}

async function streamBackup(raft, req, res) {
  const dir = raft.config.dataDir;
  // The node deletes such copies at its next start if this process dies before it does.
  const tmp = path.join(dir, `.backup-${process.pid}-${crypto.randomBytes(6).toString('hex')}.mdb`);
  const cleanup = () => fs.rm(tmp, { force: true }, () => {});
  let size;
  try {
    size = (await raft.backup(tmp)).bytes;
  } catch (err) {
    cleanup();
    throw err;
  }
  const s = raft.getState();
  res.writeHead(200, {
    'content-type': 'application/octet-stream',
    'content-length': size,
    'content-disposition': `attachment; filename="${s.nodeId}-${s.lastApplied}.mdb"`,
    'cache-control': 'no-store',
    'x-consensus-node-id': s.nodeId,
  });
  const file = fs.createReadStream(tmp);
  file.on('error', (err) => res.destroy(err));
  file.on('close', cleanup);
  res.on('close', () => file.destroy());
  file.pipe(res);
}

/**
 * Serves the admin endpoint for `raft` (a RaftCoordinator), with `manager` (a ConsensusManager)
 * when there is one. Resolves `{port, host, url, close()}`.
 */
async function listenAdmin(raft, manager, options = {}) {
  const { port, host, tokenDigest } = normalizeOptions(options);

  const authorized = (req) => {
    if (tokenDigest === null) return true;
    const header = req.headers.authorization;
    if (typeof header !== 'string' || !/^Bearer /i.test(header)) return false;
    // Digests of equal length, so the comparison takes the same time whatever was sent.
    return crypto.timingSafeEqual(digest(header.slice(7).trim()), tokenDigest);
  };

  const handle = async (req, res) => {
    const url = new URL(req.url, 'http://admin.invalid');
    const route = ROUTES.find((r) => (typeof r.path === 'string' ? r.path === url.pathname : r.path.test(url.pathname)));
    if (!authorized(req)) {
      throw Object.assign(new HttpError(401, ErrorCode.AUTH, 'missing or wrong admin token: send Authorization: Bearer <token>'), {
        headers: { 'www-authenticate': 'Bearer realm="unrdf-consensus"' },
      });
    }
    if (!route) throw new HttpError(404, ErrorCode.INVALID_OPERATION, `no route ${url.pathname}; routes: /metrics, /health, /status, /backup, /members, /members/:id, /leader/transfer, /compact`);
    if (!route.methods.includes(req.method)) {
      throw Object.assign(new HttpError(405, ErrorCode.INVALID_OPERATION, `${req.method} is not allowed on ${url.pathname}; use ${route.methods.join(' or ')}`), {
        headers: { allow: route.methods.join(', ') },
      });
    }
    const key = `${req.method} ${typeof route.path === 'string' ? route.path : '/members/:id'}`;
    switch (key) {
      case 'GET /metrics': {
        const text =
          manager && typeof manager.prometheusMetrics === 'function'
            ? manager.prometheusMetrics()
            : typeof raft.prometheusMetrics === 'function'
              ? raft.prometheusMetrics()
              : coordinatorMetrics(raft);
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
        res.end(text);
        return;
      }
      case 'GET /health': {
        const h = health(raft, manager);
        send(res, h.ok ? 200 : 503, { ok: h.ok, nodeId: h.state.nodeId, leader: h.state.leaderId, term: h.state.term, ...(h.ok ? {} : { reason: h.reason }) });
        return;
      }
      case 'GET /status':
        send(res, 200, status(raft, manager));
        return;
      case 'GET /members':
        send(res, 200, { members: status(raft, manager).members });
        return;
      case 'GET /backup':
        await streamBackup(raft, req, res);
        return;
      case 'POST /members': {
        const body = await readJson(req);
        const nodeId = field(() => v.nodeId(body.nodeId, 'nodeId'));
        const peerHost = field(() => v.string(body.host, 'host', { maxLength: 253 }));
        const peerPort = field(() => v.integer(body.port, 'port', { min: 1, max: 65535 }));
        await raft.addPeer(nodeId, peerHost, peerPort);
        send(res, 200, { ok: true, added: { nodeId, host: peerHost, port: peerPort } });
        return;
      }
      case 'DELETE /members/:id': {
        const id = decodeURIComponent(url.pathname.slice('/members/'.length));
        const nodeId = field(() => v.nodeId(id, 'nodeId'));
        await raft.removePeer(nodeId, { forward: true });
        send(res, 200, { ok: true, removed: nodeId });
        return;
      }
      case 'POST /leader/transfer': {
        const body = await readJson(req);
        const s = raft.getState();
        const to = body.to === undefined ? transferTarget(s) : field(() => v.nodeId(body.to, 'to'));
        if (!to) throw new HttpError(409, ErrorCode.INVALID_OPERATION, 'there is no other voter to hand leadership to');
        await raft.transferLeadership(to);
        send(res, 200, { ok: true, leader: to });
        return;
      }
      case 'POST /compact': {
        const body = await readJson(req);
        const keep = body.keep === undefined ? 0 : field(() => v.integer(body.keep, 'keep', { min: 0, max: 2 ** 31 - 1 }));
        const r = await raft.compact(keep);
        send(res, 200, { ok: true, ...r });
        return;
      }
      default:
        throw new HttpError(404, ErrorCode.INVALID_OPERATION, `no route ${url.pathname}`);
    }
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err) => {
      if (res.headersSent) {
        res.destroy(err);
        return;
      }
      // Drain what the client still sends, then answer: the error reaches it either way.
      req.resume();
      sendError(res, err);
    });
  });
  server.on('clientError', (err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
  });
  await new Promise((resolve, reject) => {
    const onError = (err) => {
      reject(
        err.code === 'EADDRINUSE'
          ? new ConsensusError(ErrorCode.ADDRESS_IN_USE, `admin port ${port} on ${host} is already in use; pick another port or 0 for a free one`)
          : invalidConfig('host', `cannot listen on ${host}:${port}: ${err.message}`),
      );
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const bound = server.address().port;
  let closing = null;
  // A stopped node takes its admin endpoint with it: nothing is left listening, or keeping the
  // process alive, after stop().
  const onShutdown = () => close();
  const close = () => {
    if (!closing) {
      raft.off('shutdown', onShutdown);
      closing = new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    }
    return closing;
  };
  raft.once('shutdown', onShutdown);
  const urlHost = net.isIPv6(host) ? `[${host}]` : host;
  return { port: bound, host, url: `http://${urlHost}:${bound}`, close };
}

module.exports = { listenAdmin, isLoopback, coordinatorMetrics };
