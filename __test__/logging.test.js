'use strict';
// Logs reach the application's logger, and refused peers neither flood it nor the network.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { createRaftCoordinator } = require('..');
const { freePort } = require('../support/cluster');

const SECRET_A = 'a-secret-of-this-cluster-0123456789';
const SECRET_B = 'b-secret-of-another-one-0123456789';

function capturingLogger() {
  const records = [];
  const logger = {};
  for (const level of ['trace', 'debug', 'info', 'warn', 'error']) {
    logger[level] = (obj, msg) => records.push({ level, obj, msg });
  }
  return { logger, records };
}

function tempRoot(t) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'unrdf-consensus-logging-'));
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  return root;
}

/** Waits until `check()` is truthy, looking again on every turn of a short timer. */
async function until(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('a refused peer (wrong secret) is logged as a warning, with no warning listener', async (t) => {
  const root = tempRoot(t);
  const { logger, records } = capturingLogger();
  const a = createRaftCoordinator({ nodeId: 'log-a', port: 0, dataDir: path.join(root, 'a'), secret: SECRET_A, logger });
  const b = createRaftCoordinator({ nodeId: 'log-b', port: 0, dataDir: path.join(root, 'b'), secret: SECRET_B });
  t.after(() => Promise.all([a.stop(), b.stop()]));
  await a.initialize();
  await b.initialize();
  assert.strictEqual(a.listenerCount('warning'), 0);
  // b founds its own cluster and tries to add a: a refuses the handshake.
  await assert.rejects(b.addPeer('log-a', '127.0.0.1', a.getState().port), (err) => err.code === 'ERR_AUTH');
  await until(() => records.some((r) => r.level === 'warn'), 10000, 'a warning in the logger');
  const warning = records.find((r) => r.level === 'warn');
  assert.strictEqual(warning.obj.nodeId, 'log-a');
  assert.strictEqual(warning.obj.code, 'ERR_AUTH');
  assert.match(warning.msg, /log-b/);
  assert.ok(!JSON.stringify(records).includes(SECRET_A) && !JSON.stringify(records).includes(SECRET_B), 'a secret reached the log');
});

test('with logLevel info the core\'s own records reach the logger, each naming its node', async (t) => {
  const root = tempRoot(t);
  const { logger, records } = capturingLogger();
  const node = createRaftCoordinator({ nodeId: 'log-info', port: 0, dataDir: path.join(root, 'n'), bootstrap: true, logger, logLevel: 'info' });
  t.after(() => node.stop());
  await node.initialize();
  await node.waitForLeader({ timeoutMs: 10000 });
  await until(() => records.some((r) => r.level === 'info'), 10000, 'an info record');
  t.diagnostic(`first info record: ${JSON.stringify(records.find((r) => r.level === 'info'))}`);
  for (const r of records) {
    assert.strictEqual(r.obj.nodeId, 'log-info');
    assert.strictEqual(typeof r.msg, 'string');
  }
});

test('without a logger, a node prints nothing at info level', async (t) => {
  const root = tempRoot(t);
  const script = `
    const { createRaftCoordinator } = require(${JSON.stringify(path.join(__dirname, '..'))});
    (async () => {
      const a = createRaftCoordinator({ nodeId: 'quiet-a', port: 0, dataDir: ${JSON.stringify(path.join(root, 'qa'))}, secret: ${JSON.stringify(SECRET_A)}, bootstrap: true });
      const b = createRaftCoordinator({ nodeId: 'quiet-b', port: 0, dataDir: ${JSON.stringify(path.join(root, 'qb'))}, secret: ${JSON.stringify(SECRET_B)} });
      await a.initialize(); await b.initialize();
      await a.waitForLeader({ timeoutMs: 10000 });
      await a.replicateCommand({ type: 'x' });
      await a.addPeer('quiet-b', '127.0.0.1', b.getState().port).catch(() => {});
      await Promise.all([a.stop(), b.stop()]);
    })();`;
  const env = { ...process.env };
  delete env.UNRDF_CONSENSUS_LOG;
  const child = spawn(process.execPath, ['-e', script], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  const code = await new Promise((resolve) => child.on('exit', resolve));
  assert.strictEqual(code, 0, output);
  assert.strictEqual(output, '', 'the node printed something');
});

test('a peer refused for its cluster id is redialed with growing backoff and warned about once', async (t) => {
  const root = tempRoot(t);
  const a = createRaftCoordinator({ nodeId: 'cid-a', port: 0, dataDir: path.join(root, 'a'), clusterId: 'one' });
  await a.initialize();
  t.after(() => a.stop());
  // A counting TCP relay in front of a: every dial of b shows up as one connection.
  let connections = 0;
  const relay = net.createServer((inbound) => {
    connections++;
    const outbound = net.connect(a.getState().port, '127.0.0.1');
    inbound.pipe(outbound).pipe(inbound);
    const close = () => {
      inbound.destroy();
      outbound.destroy();
    };
    inbound.on('error', close).on('close', close);
    outbound.on('error', close).on('close', close);
  });
  await new Promise((resolve) => relay.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => relay.close(resolve)));
  const bPort = await freePort();
  const b = createRaftCoordinator({
    nodeId: 'cid-b',
    port: bPort,
    dataDir: path.join(root, 'b'),
    clusterId: 'two',
    initialMembers: [
      { nodeId: 'cid-b', host: '127.0.0.1', port: bPort },
      { nodeId: 'cid-a', host: '127.0.0.1', port: relay.address().port },
    ],
  });
  const warningsA = [];
  const warningsB = [];
  a.on('warning', (w) => warningsA.push(w));
  b.on('warning', (w) => warningsB.push(w));
  t.after(() => b.stop());
  await b.initialize();
  const windowMs = 6000;
  await new Promise((r) => setTimeout(r, windowMs));
  t.diagnostic(`dials: ${connections}, warnings on a: ${warningsA.length}, on b: ${warningsB.length}`);
  // Backoff from 0.5 s doubling: a handful of dials in 6 s (before, about 20 a second).
  assert.ok(connections >= 1, 'b never dialed a');
  assert.ok(connections <= 12, `b dialed a ${connections} times in ${windowMs} ms`);
  // One warning per peer and cause per minute, on each side.
  assert.ok(warningsA.length >= 1 && warningsA.length <= 2, `a warned ${warningsA.length} times: ${warningsA.map((w) => w.message).join(' | ')}`);
  assert.ok(warningsB.length >= 1 && warningsB.length <= 2, `b warned ${warningsB.length} times: ${warningsB.map((w) => w.message).join(' | ')}`);
});
