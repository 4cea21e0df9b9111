'use strict';
// Mutual TLS between nodes: members with certificates of the cluster's CA form a cluster and
// replicate; a peer with a certificate from another CA, or without TLS, gets nothing, and the
// refusal is reported as ERR_AUTH on both sides. Bad TLS settings are ERR_INVALID_CONFIG.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { Cluster } = require('../support/cluster');
const { createRaftCoordinator } = require('..');

const fixtures = path.join(__dirname, 'fixtures', 'tls');
const tlsOf = (who) => ({
  certFile: path.join(fixtures, `${who}-node.pem`),
  keyFile: path.join(fixtures, `${who}-node-key.pem`),
  caFile: path.join(fixtures, `${who}-ca.pem`),
});

/** What a node's Raft port answers to a plain WebSocket upgrade request, until it hangs up. */
function plainUpgrade(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const got = [];
    const timer = setTimeout(() => socket.destroy(), 10000);
    socket.on('connect', () =>
      socket.write(
        'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      ),
    );
    socket.on('data', (d) => got.push(d));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(got).toString('latin1'));
    });
  });
}

test('with TLS a cluster forms and replicates; a stranger certificate or a plain peer is refused on both sides', async () => {
  const cluster = await new Cluster(3, { config: { tls: tlsOf('cluster'), addPeerTimeoutMs: 3000 } }).start();
  try {
    const leader = await cluster.form();
    const load = await leader.call('load', { count: 200, concurrency: 10, prefix: 'tls' });
    assert.equal(load.acked.length, 200);

    // The port speaks TLS only: a plain WebSocket upgrade gets no upgrade.
    const answer = await plainUpgrade(leader.port);
    assert.doesNotMatch(answer, /101 Switching Protocols/);

    const outsiders = [
      ['node-4', { tls: tlsOf('stranger') }],
      ['node-5', {}],
    ];
    for (const [nodeId, config] of outsiders) {
      const outsider = await cluster.outsider(nodeId, config);
      try {
        await outsider.start();
        const added = leader.call('addPeer', { nodeId, host: outsider.host, port: outsider.port }).catch((e) => e);
        if (config.tls) {
          // Both sides check the other's certificate against their own CA.
          const onLeader = await leader.waitEvent('warning', (w) => w.code === 'ERR_AUTH' && w.message.includes(nodeId), 15000);
          assert.match(onLeader.message, /TLS/);
          const onOutsider = await outsider.waitEvent('warning', (w) => w.code === 'ERR_AUTH', 15000);
          assert.match(onOutsider.message, /TLS/);
        }
        const err = await added;
        // A certificate refused is the answer at once; a peer speaking no TLS at all just never
        // gets through, like one that is down, until addPeer gives up.
        assert.equal(err.code, config.tls ? 'ERR_AUTH' : 'ERR_TIMEOUT', `${nodeId}: ${err.message}`);
        if (config.tls) assert.match(err.message, /TLS/);
        const s = await leader.call('state');
        assert.ok(!s.membership.voters.includes(nodeId), `${nodeId} never became a voter`);
        assert.equal((await outsider.call('state')).lastLogIndex, 0, `${nodeId} received no entries`);
        if (s.membership.learners.includes(nodeId)) await leader.call('removePeer', { nodeId });
      } finally {
        await outsider.stop();
      }
    }
    const after = await leader.call('load', { count: 50, concurrency: 5, prefix: 'after' });
    assert.equal(after.acked.length, 50);
  } finally {
    await cluster.stop();
  }
});

test('bad TLS settings are ERR_INVALID_CONFIG naming the setting', async () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'unrdf-tls-config-'));
  const good = tlsOf('cluster');
  const make = (tls) => createRaftCoordinator({ nodeId: 'tls-config', port: 0, dataDir, tls });
  try {
    assert.throws(() => make({ certFile: good.certFile, keyFile: good.keyFile }), { code: 'ERR_INVALID_CONFIG', field: 'tls.caFile' });
    assert.throws(() => make({ ...good, certFile: 42 }), { code: 'ERR_INVALID_CONFIG', field: 'tls.certFile' });
    assert.throws(() => make('on'), { code: 'ERR_INVALID_CONFIG', field: 'tls' });
    const cases = [
      [{ ...good, certFile: path.join(fixtures, 'missing.pem') }, 'tls.certFile'],
      [{ ...good, caFile: good.keyFile }, 'tls.caFile'],
      // A key that is not the certificate's.
      [{ ...good, keyFile: path.join(fixtures, 'stranger-node-key.pem') }, 'tls.keyFile'],
    ];
    for (const [tls, field] of cases) {
      const raft = make(tls);
      await assert.rejects(raft.initialize(), (err) => {
        assert.equal(err.code, 'ERR_INVALID_CONFIG');
        assert.equal(err.field, field, err.message);
        return true;
      });
      await raft.stop();
    }
  } finally {
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});

test('certificates rotate to a new CA without a restart while writes go on; the old CA is refused afterwards', { timeout: 180000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'unrdf-tls-rotation-'));
  const files = { certFile: path.join(dir, 'node.pem'), keyFile: path.join(dir, 'node-key.pem'), caFile: path.join(dir, 'ca.pem') };
  const read = (name) => fs.readFileSync(path.join(fixtures, name), 'utf8');
  // Replace a file in one step, as a certificate manager does, so no reader sees half of it.
  const put = (file, text) => {
    fs.writeFileSync(`${file}.tmp`, text);
    fs.renameSync(`${file}.tmp`, file);
  };
  put(files.certFile, read('cluster-node.pem'));
  put(files.keyFile, read('cluster-node-key.pem'));
  put(files.caFile, read('cluster-ca.pem'));
  const cluster = await new Cluster(3, { config: { tls: files, addPeerTimeoutMs: 5000 } }).start();
  try {
    const leader = await cluster.form();
    const reloadAll = () => Promise.all(cluster.nodes.map((n) => n.call('reloadTls')));
    const writes = leader.call('load', { count: 4000, concurrency: 8, prefix: 'rotation' }, 120000);

    // A file that does not load is refused, naming it, and the node keeps what it had.
    put(files.certFile, '-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n');
    const bad = await leader.call('reloadTls').then(
      () => null,
      (err) => err,
    );
    assert.equal(bad?.code, 'ERR_INVALID_CONFIG', String(bad?.message));
    assert.equal(bad.field, 'tls.certFile');
    assert.match(bad.message, /node\.pem/);
    put(files.certFile, read('cluster-node.pem'));

    // 1: trust both CAs. 2: present certificates of the new CA. 3: trust only the new CA.
    put(files.caFile, read('cluster-ca.pem') + read('renewed-ca.pem'));
    await reloadAll();
    put(files.keyFile, read('renewed-node-key.pem'));
    put(files.certFile, read('renewed-node.pem'));
    await reloadAll();
    // New connections use the new certificates: a follower restarted now rejoins with them.
    const follower = cluster.nodes.find((n) => n !== leader);
    await follower.stop();
    await follower.start();
    await cluster.waitFor(async () => (await leader.call('state')).connectedPeers.includes(follower.nodeId), 20000);
    put(files.caFile, read('renewed-ca.pem'));
    await reloadAll();

    const load = await writes;
    assert.deepEqual(load.errors, {});
    assert.equal(load.acked.length, 4000);

    // A peer that still presents a certificate of the old CA is refused now.
    const old = await cluster.outsider('node-9', { tls: tlsOf('cluster'), addPeerTimeoutMs: 3000 });
    try {
      await old.start();
      const refused = await leader.call('addPeer', { nodeId: 'node-9', host: '127.0.0.1', port: old.port }).then(
        () => null,
        (err) => err,
      );
      assert.ok(refused, 'a peer with a certificate of the old CA was added');
      const state = await leader.call('state');
      assert.ok(!state.membership.voters.includes('node-9'));
    } finally {
      await old.stop();
    }
  } finally {
    await cluster.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
