'use strict';
// The admin endpoint on a 3-process cluster: status, health, metrics that promtool accepts, the
// bearer token, bad input, membership changes sent to a follower through the CLI, and /health
// following a real partition.
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const util = require('node:util');
const { Cluster } = require('../support/cluster');
const { runCli } = require('../support/cli');
const { available, TestNetwork } = require('../support/netns');
const { LinkCutNetwork, FAULT_HOOKS_ENV } = require('../support/link-cuts');
const { createRaftCoordinator } = require('..');

const TOKEN = 'admin-token-0123456789abcdef';
const GUIDE = {
  consensus: { partitionDetectionMs: 1000, operationTimeoutMs: 2000 },
  cluster: { healthCheckInterval: 250, healthCheckTimeout: 250, maxFailedHealthChecks: 2 },
};

function promtool() {
  const r = spawnSync('promtool', ['--version'], { stdio: 'ignore' });
  return r.status === 0;
}

async function http(url, { method = 'GET', token = TOKEN, body, raw } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined || raw !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(url, { method, headers, body: raw ?? (body === undefined ? undefined : JSON.stringify(body)) });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, text, json, headers: res.headers };
}

test('admin endpoint: status, health, metrics, token, bad input, and members add/remove through a follower', { timeout: 240000 }, async () => {
  const cluster = new Cluster(3, { guide: GUIDE });
  try {
    await cluster.start();
    const first = await cluster.form();
    await first.call('guideLoad', { count: 50, concurrency: 5, prefix: 'admin' });
    const urls = {};
    for (const n of cluster.nodes) urls[n.nodeId] = (await n.call('listenAdmin', { token: TOKEN })).url;

    // Health and status on every node.
    await cluster.waitFor(async () => {
      const all = await Promise.all(cluster.nodes.map((n) => http(`${urls[n.nodeId]}/health`)));
      return all.every((r) => r.status === 200);
    });
    const leader = await cluster.leader();
    const st = await http(`${urls[leader.nodeId]}/status`);
    assert.equal(st.status, 200);
    assert.equal(st.json.nodeId, leader.nodeId);
    assert.equal(st.json.role, 'leader');
    assert.equal(st.json.leader, leader.nodeId);
    assert.equal(st.json.quorum, true);
    assert.ok(st.json.term >= 1);
    assert.ok(st.json.commitIndex >= 50 && st.json.appliedIndex >= 50);
    assert.equal(st.json.members.length, 3);
    for (const m of st.json.members) {
      assert.equal(typeof m.lag, 'number', `lag of ${m.nodeId}`);
      assert.ok(['healthy', 'degraded', 'unhealthy', 'unknown', 'unreachable'].includes(m.health));
    }

    // /metrics parses as the Prometheus text format.
    const metrics = await http(`${urls[leader.nodeId]}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(metrics.headers.get('content-type'), /^text\/plain/);
    if (promtool()) {
      const r = spawnSync('promtool', ['check', 'metrics'], { input: metrics.text, encoding: 'utf8' });
      // Lint findings (naming) are the metrics' own business; a parse error is ours.
      assert.doesNotMatch(`${r.stdout}${r.stderr}`, /error while linting|text format parsing error/i);
    }
    for (const line of metrics.text.trim().split('\n')) {
      if (!line.startsWith('#')) assert.match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? -?[0-9.e+Inf-]+$/, line);
    }

    // The token: missing, wrong, then a wrong one of another length.
    const base = urls[leader.nodeId];
    assert.equal((await http(`${base}/status`, { token: null })).status, 401);
    const wrong = await http(`${base}/status`, { token: 'admin-token-0123456789abcdeX' });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.json.error.code, 'ERR_AUTH');
    assert.ok(!wrong.text.includes(TOKEN));
    assert.equal((await http(`${base}/status`, { token: 'short' })).status, 401);
    // Unknown route, wrong method, malformed bodies.
    assert.equal((await http(`${base}/nope`)).status, 404);
    const put = await http(`${base}/status`, { method: 'PUT' });
    assert.equal(put.status, 405);
    assert.equal(put.headers.get('allow'), 'GET');
    const malformed = await http(`${base}/members`, { method: 'POST', raw: '{"nodeId": ' });
    assert.equal(malformed.status, 400);
    assert.match(malformed.json.error.message, /not a JSON object/);
    const missing = await http(`${base}/members`, { method: 'POST', body: { host: '127.0.0.1', port: 1 } });
    assert.equal(missing.status, 400);
    assert.match(missing.json.error.message, /nodeId/);
    const badPort = await http(`${base}/members`, { method: 'POST', body: { nodeId: 'x', host: '127.0.0.1', port: 70000 } });
    assert.equal(badPort.status, 400);
    assert.match(badPort.json.error.message, /port/);
    const notMember = await http(`${base}/members/ghost`, { method: 'DELETE' });
    assert.equal(notMember.status, 404);
    assert.equal(notMember.json.error.code, 'ERR_NODE_NOT_FOUND');

    // members add / remove sent to a follower reach the leader.
    const follower = cluster.nodes.find((n) => n !== leader);
    const extra = await cluster.outsider('node-4');
    await extra.start();
    try {
      const env = { UNRDF_CONSENSUS_TOKEN: TOKEN };
      const add = await runCli(['members', 'add', urls[follower.nodeId], 'node-4', `127.0.0.1:${extra.port}`], { env });
      assert.equal(add.code, 0, add.stderr);
      await cluster.waitFor(async () => {
        const s = await leader.call('state');
        return s.membership.voters.includes('node-4');
      });
      const list = await runCli(['members', 'list', urls[follower.nodeId], '--json'], { env });
      assert.equal(list.code, 0, list.stderr);
      assert.ok(JSON.parse(list.stdout).some((m) => m.nodeId === 'node-4' && m.voter));
      const remove = await runCli(['members', 'remove', urls[follower.nodeId], 'node-4'], { env });
      assert.equal(remove.code, 0, remove.stderr);
      await cluster.waitFor(async () => {
        const s = await leader.call('state');
        return !s.membership.nodes['node-4'];
      });
      // Without the token the CLI is refused, and says so.
      const refused = await runCli(['members', 'list', urls[follower.nodeId]], { env: { UNRDF_CONSENSUS_TOKEN: '' } });
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /401 ERR_AUTH/);
      const usage = await runCli(['members', 'add', urls[follower.nodeId], 'node-5'], { env });
      assert.equal(usage.code, 2);
    } finally {
      await extra.stop();
    }

    // Leadership handed over and a compaction, through the endpoint.
    const transfer = await http(`${urls[leader.nodeId]}/leader/transfer`, { method: 'POST', body: { to: follower.nodeId } });
    assert.equal(transfer.status, 200, transfer.text);
    await cluster.waitFor(async () => (await follower.call('state')).isLeader);
    const compact = await http(`${urls[follower.nodeId]}/compact`, { method: 'POST' });
    assert.equal(compact.status, 200, compact.text);
    const onFollower = await http(`${urls[leader.nodeId]}/leader/transfer`, { method: 'POST', body: {} });
    assert.equal(onFollower.status, 503);
    assert.equal(onFollower.json.error.code, 'ERR_NOT_LEADER');
  } finally {
    await cluster.stop();
  }
});

test('listenAdmin: a non-loopback host needs a token, and the token never shows', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'unrdf-admin-'));
  const raft = createRaftCoordinator({ nodeId: 'solo', port: 0, dataDir: dir, bootstrap: true });
  try {
    await assert.rejects(raft.listenAdmin({ host: '0.0.0.0' }), (err) => err.code === 'ERR_INVALID_CONFIG' && err.field === 'token');
    await assert.rejects(raft.listenAdmin({ token: 'short' }), (err) => err.code === 'ERR_INVALID_CONFIG' && !err.message.includes('short'));
    await assert.rejects(raft.listenAdmin({ tokn: TOKEN }), { code: 'ERR_INVALID_CONFIG' });
    await raft.initialize();
    const options = { port: 0, token: TOKEN };
    const admin = await raft.listenAdmin(options);
    try {
      for (const shown of [util.inspect(admin, { depth: 5 }), JSON.stringify(admin), util.inspect(raft, { depth: 5 }), JSON.stringify(raft)]) {
        assert.ok(!shown.includes(TOKEN), shown);
      }
      const health = await http(`${admin.url}/health`);
      assert.equal(health.status, 200, health.text);
      const metrics = await http(`${admin.url}/metrics`);
      assert.equal(metrics.status, 200);
      assert.match(metrics.text, /^# HELP /);
    } finally {
      await admin.close();
    }
    // A stopped node takes its admin endpoint with it.
    const again = await raft.listenAdmin({ port: 0 });
    await raft.stop();
    await assert.rejects(fetch(`${again.url}/health`));
    await assert.rejects(raft.listenAdmin({ port: 0 }), { code: 'ERR_SHUTDOWN' });
  } finally {
    await raft.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** /health of `node`, asked from inside its own process (and namespace). */
async function healthOf(node, url) {
  const r = await node.call('httpGet', { url: `${url}/health`, token: TOKEN });
  return { status: r.status, body: JSON.parse(r.body) };
}

async function healthFollowsIsolation(cluster, network) {
  await cluster.form();
  const urls = {};
  for (const n of cluster.nodes) urls[n.nodeId] = (await n.call('listenAdmin', { token: TOKEN })).url;
  for (const pick of ['follower', 'leader']) {
    const leader = await cluster.leader();
    const victim = pick === 'leader' ? leader : cluster.nodes.find((n) => n !== leader);
    const index = cluster.nodes.indexOf(victim) + 1;
    await cluster.waitFor(async () => (await healthOf(victim, urls[victim.nodeId])).status === 200, 15000);
    await network.isolate(index);
    try {
      const down = await cluster.waitFor(async () => {
        const h = await healthOf(victim, urls[victim.nodeId]);
        return h.status === 503 ? h : null;
      }, 15000);
      assert.equal(down.body.ok, false);
      assert.equal(typeof down.body.reason, 'string');
    } finally {
      await network.heal(index);
    }
    await cluster.waitFor(async () => (await healthOf(victim, urls[victim.nodeId])).status === 200, 20000);
  }
}

const netns = available();

test('/health goes 200 -> 503 when the node is isolated in a network namespace, and back after the heal', { skip: netns.ok ? false : netns.why, timeout: 180000 }, async () => {
  const network = new TestNetwork(3).setup();
  try {
    const cluster = new Cluster(3, { network, guide: GUIDE });
    try {
      await cluster.start();
      await healthFollowsIsolation(cluster, network);
    } finally {
      await cluster.stop();
    }
  } finally {
    network.teardown();
  }
});

test('/health follows an isolation by link cuts too (where namespaces are not available)', { skip: netns.ok ? 'network namespaces are available: the test above covers it' : false, timeout: 180000 }, async () => {
  process.env[FAULT_HOOKS_ENV] = '1';
  const cluster = new Cluster(3, { guide: GUIDE });
  try {
    await cluster.start();
    await healthFollowsIsolation(cluster, new LinkCutNetwork(cluster.nodes));
  } finally {
    delete process.env[FAULT_HOOKS_ENV];
    await cluster.stop();
  }
});

