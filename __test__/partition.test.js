'use strict';
// Real partitions: each node in its own network namespace on a bridge; a partition takes a
// node's link down. Needs root on Linux (skips visibly elsewhere). And the opposite check: a
// healthy idle cluster reports no partition at all.
const test = require('node:test');
const assert = require('node:assert/strict');
const { Cluster } = require('../support/cluster');
const { available, TestNetwork } = require('../support/netns');
const { LinkCutNetwork, FAULT_HOOKS_ENV } = require('../support/link-cuts');

const netns = available();
const GUIDE = {
  consensus: { partitionDetectionMs: 1000, operationTimeoutMs: 2000 },
  cluster: { healthCheckInterval: 250, healthCheckTimeout: 250, maxFailedHealthChecks: 2 },
};

async function executedAll(cluster, node, ids) {
  await cluster.waitFor(async () => {
    const executed = new Set(await node.call('executed'));
    return ids.every((id) => executed.has(id));
  }, 20000);
}

async function checkIsolation(cluster, network, victim) {
  const index = cluster.nodes.indexOf(victim) + 1;
  const others = cluster.nodes.filter((n) => n !== victim);
  const before = victim.events.filter((e) => e.name === 'partition:detected').length;
  await network.isolate(index);
  try {
    // The majority side has (or elects) a leader and keeps committing.
    const leader = await cluster.leader(10000, others);
    const during = await leader.call('guideLoad', { count: 50, concurrency: 5, prefix: `during-${victim.nodeId}` });
    assert.deepEqual(during.errors, {});
    // The minority side notices and refuses writes.
    await victim.waitEvent('partition:detected', () => victim.events.filter((e) => e.name === 'partition:detected').length > before, 10000);
    assert.equal((await victim.call('consensusState')).partitionState, 'partitioned');
    const t0 = Date.now();
    await assert.rejects(
      victim.call('replicateOperation', { operation: { id: `minority-${victim.nodeId}`, type: 't' } }),
      (err) => ['ERR_NO_QUORUM', 'ERR_NOT_LEADER'].includes(err.code),
    );
    assert.ok(Date.now() - t0 < 2000 + 3000, 'refused within operationTimeoutMs');
    return { leader, during };
  } finally {
    await network.heal(index);
  }
}

/** Isolates the leader, then a follower; each time the cluster must recover and agree. */
async function isolateLeaderThenFollower(cluster, network) {
  const first = await cluster.form();
  await first.call('guideLoad', { count: 100, concurrency: 10, prefix: 'before' });

  for (const pick of ['leader', 'follower']) {
    const leader = await cluster.leader();
    const victim = pick === 'leader' ? leader : cluster.nodes.find((n) => n !== leader);
    const { during } = await checkIsolation(cluster, network, victim);
    await victim.waitEvent('partition:recovered', () => true, 15000);
    await cluster.waitFor(async () => (await victim.call('consensusState')).partitionState === 'healthy', 15000);
    await executedAll(cluster, victim, during.acked.map(([id]) => id));
    const states = await cluster.states();
    assert.equal(new Set(states.map((s) => s.leaderId)).size, 1, `one leader after healing the isolated ${pick}`);
    assert.equal(states.filter((s) => s.isLeader).length, 1);
  }
  // Every daemon executed the same sequence.
  const lists = await Promise.all(cluster.nodes.map((n) => n.call('executed')));
  const longest = Math.max(...lists.map((l) => l.length));
  const full = await cluster.waitFor(async () => {
    const l = await Promise.all(cluster.nodes.map((n) => n.call('executed')));
    return l.every((x) => x.length === longest) ? l : null;
  });
  for (const l of full) assert.deepEqual(l, full[0]);
}

test('partitions: an isolated leader and an isolated follower refuse writes, detect it, recover and catch up', { skip: netns.ok ? false : netns.why }, async () => {
  const network = new TestNetwork(3).setup();
  try {
    const cluster = await new Cluster(3, { network, guide: GUIDE }).start();
    try {
      await isolateLeaderThenFollower(cluster, network);
    } finally {
      await cluster.stop();
    }
  } finally {
    network.teardown();
  }
});

test('the in-process link-cut fault hook partitions as well, and is refused unless the process enables it', async () => {
  const plain = new Cluster(1, { config: { bootstrap: true } });
  await plain.start();
  try {
    await assert.rejects(plain.nodes[0].call('cutLinks', { outbound: ['node-2'], inbound: [] }), { code: 'ERR_INVALID_OPERATION' });
  } finally {
    await plain.stop();
  }
  process.env[FAULT_HOOKS_ENV] = '1';
  const cluster = new Cluster(3, { guide: GUIDE });
  try {
    await cluster.start();
    await isolateLeaderThenFollower(cluster, new LinkCutNetwork(cluster.nodes));
  } finally {
    delete process.env[FAULT_HOOKS_ENV];
    await cluster.stop();
  }
});

test('a healthy cluster left idle for 30 s emits no partition event and drops no connection', { timeout: 90000 }, async () => {
  const cluster = await new Cluster(3, { guide: {} }).start();
  try {
    await cluster.form();
    const since = Date.now();
    await new Promise((r) => setTimeout(r, 30000));
    for (const n of cluster.nodes) {
      const noisy = n.events.filter((e) => e.at >= since && (e.name.startsWith('partition:') || e.name === 'peer_disconnected'));
      assert.deepEqual(noisy, [], `${n.nodeId} reported ${noisy.map((e) => e.name).join(', ')}`);
      assert.equal((await n.call('consensusState')).partitionState, 'healthy');
    }
  } finally {
    await cluster.stop();
  }
});
