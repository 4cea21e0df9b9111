'use strict';
// Secrets stay secret and can rotate. The secret never shows in what a program prints of our
// objects, nor in any event, error or log line of runs that go wrong with it; a live cluster
// moves from secret A to secret B in three steps with no peer refused and no write lost.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const util = require('node:util');
const { Cluster } = require('../support/cluster');
const api = require('..');

const SECRET_A = 'alpha-secret-0123456789';
const SECRET_B = 'bravo-secret-9876543210';
const TOKEN = 'admin-token-5647382910';

/** Every way a program prints an object. */
function printed(value) {
  let json;
  try {
    json = JSON.stringify(value);
  } catch (err) {
    json = err.message;
  }
  return [util.inspect(value, { depth: 8, showHidden: true }), String(json), util.format('%o', value)].join('\n');
}

test('the secret shows as [redacted] in config, getState, inspect and JSON of every exported object', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'unrdf-redact-'));
  const { EventEmitter } = require('node:events');
  const raft = api.createRaftCoordinator({ nodeId: 'r1', port: 0, dataDir: path.join(dir, 'r1'), secret: [SECRET_A, SECRET_B], bootstrap: true });
  const cluster = api.createClusterManager({ nodeId: 'r1' });
  const daemon = Object.assign(new EventEmitter(), { nodeId: 'r1' });
  const consensus = new api.ConsensusManager(daemon, raft, cluster, {});
  try {
    await raft.initialize();
    await cluster.initialize(raft);
    await consensus.initialize();
    assert.deepEqual(raft.config.secret, ['[redacted]', '[redacted]']);
    for (const value of [raft, raft.config, raft.getState(), cluster, consensus, consensus.getConsensusState(), consensus.getMetrics(), consensus.prometheusMetrics()]) {
      const text = printed(value);
      assert.ok(!text.includes(SECRET_A) && !text.includes(SECRET_B), `a secret shows in ${text.slice(0, 200)}`);
    }
    // A rotation changes what is used, not what shows.
    raft.setSecrets([SECRET_B]);
    assert.equal(JSON.stringify(raft.config.secret), '["[redacted]"]');
    // Bad input is refused without repeating it.
    for (const bad of [[], ['short'], [SECRET_A, 42], 'x'.repeat(5)]) {
      const err = (() => {
        try {
          raft.setSecrets(bad);
        } catch (e) {
          return e;
        }
        return null;
      })();
      assert.equal(err?.code, 'ERR_INVALID_CONFIG');
      assert.ok(!printed(err).includes(SECRET_A));
    }
    const plain = api.createRaftCoordinator({ nodeId: 'r2', port: 0, dataDir: path.join(dir, 'r2') });
    assert.throws(() => plain.setSecrets([SECRET_A]), { code: 'ERR_INVALID_OPERATION' });
  } finally {
    await consensus.shutdown();
    await cluster.shutdown();
    await raft.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('no event, error or log line of a run with a wrong secret, a wrong admin token or bad TLS files shows a secret', { timeout: 120000 }, async () => {
  const logged = { env: { UNRDF_CONSENSUS_LOG: 'debug' }, captureOutput: true };
  const cluster = new Cluster(2, { config: { secret: SECRET_A, addPeerTimeoutMs: 3000 }, nodeOptions: logged });
  try {
    await cluster.start();
    const leader = await cluster.form();
    await leader.call('load', { count: 50, concurrency: 5, prefix: 'redact' });
    // A peer with another secret, refused on both sides.
    const wrong = await cluster.outsider('node-9', { secret: SECRET_B, addPeerTimeoutMs: 3000 }, logged);
    await wrong.start();
    const refused = await leader.call('addPeer', { nodeId: 'node-9', host: '127.0.0.1', port: wrong.port }).catch((e) => e);
    assert.equal(refused.code, 'ERR_AUTH');
    await cluster.waitFor(() => wrong.events.some((e) => e.name === 'warning'), 10000);
    // Bad TLS files beside a secret.
    const badTls = await cluster.outsider('node-8', { secret: SECRET_A, tls: { certFile: '/nonexistent/cert.pem', keyFile: '/nonexistent/key.pem', caFile: '/nonexistent/ca.pem' } }, logged);
    const tlsError = await badTls.start().catch((e) => e);
    assert.equal(tlsError.code, 'ERR_INVALID_CONFIG');
    // The admin endpoint, asked with a wrong token and with none.
    const admin = await leader.call('listenAdmin', { token: TOKEN });
    const wrongToken = await leader.call('httpGet', { url: `${admin.url}/status`, token: 'not-the-token-0000000000' });
    const noToken = await leader.call('httpGet', { url: `${admin.url}/status` });
    assert.equal(wrongToken.status, 401);
    assert.equal(noToken.status, 401);
    const rightToken = await leader.call('httpGet', { url: `${admin.url}/status`, token: TOKEN });
    assert.equal(rightToken.status, 200);
    await wrong.stop();
    await badTls.stop();
    const everything = [
      printed(refused),
      printed(tlsError),
      printed([wrongToken, noToken, rightToken]),
      ...[...cluster.nodes, wrong, badTls].map((n) => `${printed(n.events)}\n${n.output}`),
    ].join('\n');
    assert.ok(everything.includes('ERR_AUTH'), 'the run did see the refusals');
    assert.ok(everything.length > 1000, 'debug logs were captured');
    assert.ok(!everything.includes(SECRET_A), 'secret A shows in an event, error or log line');
    assert.ok(!everything.includes(SECRET_B), 'secret B shows in an event, error or log line');
    assert.ok(!everything.includes(TOKEN), 'the admin token shows in an event, error, answer or log line');
  } finally {
    await cluster.stop();
  }
});

test('secrets set while the node is starting are the ones it proves itself with', { timeout: 60000 }, async () => {
  const cluster = new Cluster(1, { config: { secret: SECRET_A, addPeerTimeoutMs: 5000 }, nodeOptions: { initArgs: { secretsDuringStart: [SECRET_B] } } });
  try {
    await cluster.start();
    const [rotated] = cluster.nodes;
    const peer = await cluster.outsider('node-9', { secret: SECRET_B, addPeerTimeoutMs: 5000 });
    try {
      await peer.start();
      await rotated.call('addPeer', { nodeId: 'node-9', host: '127.0.0.1', port: peer.port });
      const state = await rotated.call('state');
      assert.ok(state.membership.voters.includes('node-9'), `node-9 is not a voter: ${JSON.stringify(state.membership)}`);
    } finally {
      await peer.stop();
    }
  } finally {
    await cluster.stop();
  }
});

test('a writing cluster rotates from secret A to B in three steps: no peer refused, no write lost; A alone is refused after', { timeout: 180000 }, async () => {
  const cluster = new Cluster(3, { config: { secret: SECRET_A, addPeerTimeoutMs: 5000 } });
  try {
    await cluster.start();
    const leader = await cluster.form();
    const follower = cluster.nodes.find((n) => n !== leader);
    const writes = leader.call('load', { count: 4000, concurrency: 8, prefix: 'rotate' }, 120000);
    for (const secrets of [[SECRET_A, SECRET_B], [SECRET_B, SECRET_A], [SECRET_B]]) {
      await Promise.all(cluster.nodes.map((n) => n.call('setSecrets', { secrets })));
      // New handshakes at this step: a follower restarted with what it now holds rejoins.
      follower.config = { ...follower.config, secret: secrets };
      await follower.stop();
      await follower.start();
      await cluster.waitFor(async () => (await leader.call('state')).connectedPeers.includes(follower.nodeId), 20000);
    }
    const load = await writes;
    assert.deepEqual(load.errors, {});
    assert.equal(load.acked.length, 4000);
    const refusals = cluster.nodes.flatMap((n) => n.events.filter((e) => e.name === 'warning' && e.payload.code === 'ERR_AUTH'));
    assert.deepEqual(refusals, [], 'a peer was refused during the rotation');

    // A node that still holds only A is refused now, on both sides.
    const stale = await cluster.outsider('node-9', { secret: SECRET_A, addPeerTimeoutMs: 3000 });
    try {
      await stale.start();
      const err = await leader.call('addPeer', { nodeId: 'node-9', host: '127.0.0.1', port: stale.port }).catch((e) => e);
      assert.equal(err.code, 'ERR_AUTH');
    } finally {
      await stale.stop();
    }
  } finally {
    await cluster.stop();
  }
});
