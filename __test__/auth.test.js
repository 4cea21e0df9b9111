'use strict';
// Who gets in: with a secret, only peers that prove they know it; once in a cluster, only its
// members. Refusals are reported as ERR_AUTH warnings on both sides.
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { Cluster, NodeProcess, freePort } = require('../support/cluster');

const SECRET = 'correct horse battery staple';

test('with the right secret a cluster forms and replicates; a node with a wrong secret is refused on both sides', async () => {
  const cluster = await new Cluster(3, { config: { secret: SECRET } }).start();
  try {
    const leader = await cluster.form();
    const load = await leader.call('load', { count: 200, concurrency: 10, prefix: 'auth' });
    assert.equal(load.acked.length, 200);

    const wrong = new NodeProcess({
      nodeId: 'node-4',
      port: await freePort(),
      dataDir: path.join(cluster.root, 'node-4'),
      config: { secret: 'wrong horse battery staple', addPeerTimeoutMs: 2000 },
    });
    try {
      await wrong.start();
      // The leader tries to add it: the impostor cannot prove the secret, so the leader refuses
      // to send it anything, and the impostor reports the leader as unable to prove it either.
      const added = leader.call('addPeer', { nodeId: 'node-4', host: wrong.host, port: wrong.port }).catch((e) => e);
      const onLeader = await leader.waitEvent('warning', (w) => w.code === 'ERR_AUTH' && /node-4/.test(w.message), 15000);
      assert.match(onLeader.message, /did not prove it knows the cluster secret/);
      await wrong.waitEvent('warning', (w) => w.code === 'ERR_AUTH', 15000);
      const err = await added;
      assert.equal(err.code, 'ERR_TIMEOUT');
      const s = await leader.call('state');
      assert.ok(!s.membership.voters.includes('node-4'), 'never promoted to voter');
      assert.equal((await wrong.call('state')).lastLogIndex, 0, 'received no entries');
    } finally {
      await wrong.stop();
    }
    // Members keep replicating.
    const after = await leader.call('load', { count: 100, concurrency: 10, prefix: 'after' });
    assert.deepEqual(after.errors, {});
  } finally {
    await cluster.stop();
  }
});

test('a node without the secret cannot join a cluster that has one, and vice versa', async () => {
  const cluster = await new Cluster(2, { config: { secret: SECRET, addPeerTimeoutMs: 2000 } }).start();
  const open = new NodeProcess({
    nodeId: 'open-node',
    port: await freePort(),
    dataDir: path.join(cluster.root, 'open-node'),
    config: { addPeerTimeoutMs: 2000 },
  });
  try {
    const leader = await cluster.form();
    await open.start();
    const added = await leader.call('addPeer', { nodeId: 'open-node', host: open.host, port: open.port }).catch((e) => e);
    assert.equal(added.code, 'ERR_TIMEOUT');
    await leader.waitEvent('warning', (w) => w.code === 'ERR_AUTH');
  } finally {
    await open.stop();
    await cluster.stop();
  }
});

test('a node that is not a member is refused, and a fresh node does not found a cluster beside one it probed', async () => {
  const cluster = await new Cluster(3).start();
  try {
    await cluster.form();
    const outsider = new NodeProcess({
      nodeId: 'outsider',
      port: await freePort(),
      dataDir: path.join(cluster.root, 'outsider'),
      config: { addPeerTimeoutMs: 2000 },
    });
    try {
      await outsider.start();
      // A fresh node asked to add a member of an existing cluster must not found a second one.
      const node2 = cluster.node('node-2');
      const err = await outsider.call('addPeer', { nodeId: 'node-2', host: node2.host, port: node2.port }).catch((e) => e);
      assert.equal(err.code, 'ERR_NOT_LEADER');
      assert.match(err.message, /already belongs to a cluster/);
      const s = await outsider.call('state');
      assert.deepEqual(s.membership.voters, [], 'the outsider founded nothing');
      const refused = await node2.waitEvent('warning', (w) => w.code === 'ERR_AUTH' && /outsider is not a member/.test(w.message));
      assert.ok(refused);
    } finally {
      await outsider.stop();
    }
  } finally {
    await cluster.stop();
  }
});
