'use strict';
// ClusterManager on a real 3-process cluster: the guide's registration pattern (node-1 founds
// the cluster and addNode()s the others, autoDiscovery off) must leave every member, the
// founding node included, in every node's registry, and a member killed and restarted must be
// counted healthy again everywhere.
const test = require('node:test');
const assert = require('node:assert/strict');
const { Cluster } = require('../support/cluster');
const { createClusterManager } = require('..');

const HEALTH = { healthCheckInterval: 500, healthCheckTimeout: 400, maxFailedHealthChecks: 2 };
const CAPS = ['task-execution', 'event-processing'];
// The brief's bound is 2 intervals; the assertion allows 10x that for a loaded machine.
const REJOIN_TARGET_MS = 2 * HEALTH.healthCheckInterval;

/** What must be the same on every node: the records, without local health or timing. */
function view(nodes) {
  return nodes
    .map(({ nodeId, host, port, capabilities, metadata }) => ({ nodeId, host, port, capabilities, metadata }))
    .sort((a, b) => a.nodeId.localeCompare(b.nodeId));
}

async function views(cluster) {
  return Promise.all(cluster.nodes.map(async (n) => view(await n.call('clusterNodes'))));
}

/** Every node lists exactly `expected` (node records), the same everywhere. */
async function waitSameView(cluster, expected, timeoutMs = 15000) {
  return cluster.waitFor(async () => {
    const all = await views(cluster);
    return all.every((v) => JSON.stringify(v) === JSON.stringify(expected)) ? all : null;
  }, timeoutMs);
}

async function upsertsApplied(node) {
  const { entries } = await node.call('applied');
  return entries.filter((e) => e[3] === '__cluster:node_upsert').length;
}

test('guide registration on 3 processes: every node lists all 3 members, the founder included; a member killed and restarted is healthy again everywhere', async () => {
  const cluster = await new Cluster(3, {
    guide: {
      cluster: HEALTH,
      // node-1 declares its capabilities itself; node-2 and node-3 get theirs from node-1's
      // addNode, as in the guide, and node-3 adds metadata of its own.
      clusterByNode: {
        'node-1': { capabilities: CAPS, metadata: { zone: 'a' } },
        'node-3': { metadata: { zone: 'c' } },
      },
    },
  }).start();
  try {
    const [n1, n2, n3] = cluster.nodes;
    await cluster.form();
    const expected = [
      { nodeId: 'node-1', host: '127.0.0.1', port: n1.port, capabilities: CAPS, metadata: { zone: 'a' } },
      { nodeId: 'node-2', host: '127.0.0.1', port: n2.port, capabilities: CAPS, metadata: {} },
      { nodeId: 'node-3', host: '127.0.0.1', port: n3.port, capabilities: CAPS, metadata: { zone: 'c' } },
    ];
    await waitSameView(cluster, expected);
    await cluster.waitFor(async () => {
      const healthy = await Promise.all(cluster.nodes.map((n) => n.call('healthyNodes')));
      return healthy.every((h) => h.length === 3);
    });

    // Another node registers node-1 with a wrong port and other capabilities: node-1's own
    // record keeps the address and its declared capabilities; the metadata merges.
    await n2.call('addNode', { node: { nodeId: 'node-1', host: '127.0.0.1', port: 1, capabilities: ['other'], metadata: { rack: 'r1' } } });
    expected[0] = { ...expected[0], metadata: { rack: 'r1', zone: 'a' } };
    await waitSameView(cluster, expected);

    // Each node writes its own record once it finds itself a member. node-2's changes nothing
    // the view shows (node-1's addNode gave it the same), so the view can match before it
    // commits: wait for the writes themselves, three records of their own and three addNode.
    await cluster.waitFor(async () => (await upsertsApplied(n2)) >= 6);
    const upsertsBefore = await upsertsApplied(n2);
    assert.equal(upsertsBefore, 6, 'one record of its own per node and one per addNode');
    await n1.kill('SIGKILL');
    const killedAt = Date.now();
    for (const n of [n2, n3]) {
      await cluster.waitFor(async () => {
        const nodes = await n.call('clusterNodes');
        return nodes.find((x) => x.nodeId === 'node-1')?.health === 'unhealthy';
      }, 10000);
      assert.equal((await n.call('healthyNodes')).length, 2);
    }
    const downMs = Date.now() - killedAt;

    const restartCalledAt = Date.now();
    await n1.start();
    const returnedAt = Date.now();
    const healthyAfter = await Promise.all(
      cluster.nodes.map(async (n) => {
        await cluster.waitFor(async () => (await n.call('healthyNodes')).length === 3, 10 * REJOIN_TARGET_MS, 10);
        return Date.now() - returnedAt;
      }),
    );
    console.log(
      `node-1 seen unhealthy by both others ${downMs} ms after kill -9; restart took ${returnedAt - restartCalledAt} ms; ` +
        `3 healthy nodes ${cluster.nodes.map((n, i) => `on ${n.nodeId} after ${healthyAfter[i]} ms`).join(', ')} ` +
        `(target ${REJOIN_TARGET_MS} ms, asserted <= ${10 * REJOIN_TARGET_MS} ms)`,
    );
    for (const ms of healthyAfter) assert.ok(ms <= 10 * REJOIN_TARGET_MS, `${ms} ms`);
    for (const n of [n2, n3]) await n.waitEvent('node_joined', (e) => e.nodeId === 'node-1' && e.rejoined === true, 5000);
    const after = await waitSameView(cluster, expected, 5000);
    for (const v of after) assert.equal(v.length, 3);

    // node-1 came back with the same address and config: its record is already there, so the
    // restart wrote nothing. A write issued at start-up would have committed by now; one more
    // committed operation, applied on node-2, orders after it.
    const leader = await cluster.leader();
    await leader.call('replicateOperation', { operation: { id: 'after-restart', type: 'task' } });
    const { commitIndex } = await leader.call('state');
    await cluster.waitFor(async () => (await n2.call('state')).lastApplied >= commitIndex);
    assert.equal(await upsertsApplied(n2), upsertsBefore, 'node-1 re-wrote an identical record');

    for (const n of cluster.nodes) assert.deepEqual(await n.call('unhandled'), [], `${n.nodeId}: unhandled rejections`);
  } finally {
    await cluster.stop();
  }
});

test('capabilities and metadata config: validated, defaults [] and {}, copied', () => {
  const defaults = createClusterManager({ nodeId: 'n' });
  assert.deepEqual(defaults.config.capabilities, []);
  assert.deepEqual(defaults.config.metadata, {});
  const metadata = { zone: 'a', nested: { rack: 2 } };
  const cm = createClusterManager({ nodeId: 'n', capabilities: ['x'], metadata });
  metadata.nested.rack = 3;
  assert.deepEqual(cm.config.metadata, { zone: 'a', nested: { rack: 2 } });
  const cyclic = {};
  cyclic.self = cyclic;
  const bad = [
    ['capabilities', 'x'],
    ['capabilities', [1]],
    ['capabilities', ['']],
    ['capabilities', null],
    ['metadata', []],
    ['metadata', 'x'],
    ['metadata', null],
    ['metadata', new Date()],
    ['metadata', cyclic],
    ['metadata', { n: 1n }],
  ];
  for (const [field, value] of bad) {
    assert.throws(() => createClusterManager({ nodeId: 'n', [field]: value }), { code: 'ERR_INVALID_CONFIG', field }, `${field}: ${String(value)}`);
  }
});
