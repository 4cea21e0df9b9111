'use strict';
// Cluster formation without a second founder: nodes started with the same initialMembers, or
// fresh nodes that all call addPeer for each other at once, in random order and at random
// moments, always form exactly one cluster. Also: advertiseHost, addPeer to a peer that refuses
// the handshake, and addPeer on a follower.
const test = require('node:test');
const assert = require('node:assert/strict');
const { Cluster } = require('../support/cluster');
const { createRaftCoordinator } = require('..');

const TRIALS = Number(process.env.FORMATION_TRIALS ?? 20);
const MAX_DELAY_MS = 3000;

/** Deterministic per run, printed, so a failing trial can be replayed with FORMATION_SEED. */
const SEED = Number(process.env.FORMATION_SEED ?? Date.now() % 100000);
let state = SEED || 1;
function random() {
  state = (state * 48271) % 2147483647;
  return state / 2147483647;
}

function shuffled(list) {
  const out = [...list];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

const pause = (ms) => new Promise((r) => setTimeout(r, ms));

function peersOf(cluster, node) {
  return cluster.nodes.filter((n) => n !== node).map((n) => ({ nodeId: n.nodeId, host: n.host, port: n.port }));
}

/**
 * Starts every node of `cluster` in a random order, each after a random delay of up to 3 s, and
 * runs `afterStart(node)` in it right away. Returns the start plan and afterStart's results.
 */
async function startScattered(cluster, afterStart = async () => null) {
  const plan = shuffled(cluster.nodes).map((n) => ({ node: n, delay: Math.floor(random() * MAX_DELAY_MS) }));
  const results = await Promise.all(
    plan.map(async ({ node, delay }) => {
      await pause(delay);
      await node.start();
      return afterStart(node);
    }),
  );
  return { plan: plan.map(({ node, delay }) => `${node.nodeId}@${delay}ms`).join(' '), results };
}

/**
 * Exactly one cluster: every node names the same leader, that leader alone says it leads, and
 * everyone has the same three voters. Then a write on the leader is applied everywhere.
 * Returns the ms from `since` until all agreed.
 */
async function assertOneCluster(cluster, since, label) {
  const states = await cluster.waitFor(async () => {
    const s = await cluster.states();
    const leader = s[0].leaderId;
    const agreed =
      leader !== null &&
      s.every((x) => x.leaderId === leader && x.membership.voters.length === 3 && !x.membership.changing) &&
      s.filter((x) => x.isLeader).length === 1;
    return agreed ? s : null;
  }, 30000);
  const formedMs = Date.now() - since;
  const voters = states.map((s) => [...s.membership.voters].sort().join(','));
  assert.equal(new Set(voters).size, 1, `${label}: one membership (${voters.join(' | ')})`);
  assert.equal(voters[0], 'node-1,node-2,node-3');
  // Leadership may still move after forming (an election on this busy machine); the write goes
  // to whoever leads, and must then reach every node.
  const written = await cluster.waitFor(async () => {
    const leader = await cluster.leader();
    return leader.call('replicate', { command: { type: 'formed', label } }).catch((err) => {
      if (['ERR_NOT_LEADER', 'ERR_NO_QUORUM'].includes(err.code)) return null;
      throw err;
    });
  });
  await cluster.waitFor(async () => {
    const seen = await Promise.all(cluster.nodes.map((n) => n.call('applied')));
    return seen.every((a) => a.entries.some(([index, , , type]) => index === written.logIndex && type === 'formed'));
  });
  return { formedMs, leader: states[0].leaderId, term: states[0].term };
}

function summary(name, figures) {
  const ms = figures.map((f) => f.formedMs).sort((a, b) => a - b);
  const at = (q) => ms[Math.min(ms.length - 1, Math.floor(q * ms.length))];
  console.log(`# ${name}: ${figures.length} trials (seed ${SEED}), formed after the last start: median ${at(0.5)} ms, max ${ms[ms.length - 1]} ms; leaders ${figures.map((f) => f.leader.slice(5)).join('')}`);
}

test(`${TRIALS} trials: 3 nodes given the same initialMembers, started in random order with random delays up to 3 s, form one cluster`, { timeout: 240000 }, async () => {
  const figures = [];
  for (let trial = 0; trial < TRIALS; trial++) {
    const cluster = await new Cluster(3).prepare();
    const members = cluster.nodes.map((n) => ({ nodeId: n.nodeId, host: n.host, port: n.port }));
    for (const n of cluster.nodes) n.config = { ...n.config, initialMembers: shuffled(members) };
    try {
      const { plan } = await startScattered(cluster);
      const lastStart = Date.now();
      const f = await assertOneCluster(cluster, lastStart, `initialMembers trial ${trial} (${plan})`);
      figures.push(f);
    } finally {
      await cluster.stop();
    }
  }
  summary('initialMembers', figures);
});

test(`${TRIALS} trials: 3 fresh nodes that each call addPeer for the others at once, after random delays up to 3 s, form one cluster`, { timeout: 240000 }, async () => {
  const figures = [];
  for (let trial = 0; trial < TRIALS; trial++) {
    const cluster = await new Cluster(3).prepare();
    try {
      const adding = [];
      const { plan } = await startScattered(cluster, async (node) => {
        // Not awaited here: the calls go on while the other nodes start.
        adding.push(node.call('addPeers', { peers: shuffled(peersOf(cluster, node)) }).then((r) => [node.nodeId, r]));
      });
      const lastStart = Date.now();
      const f = await assertOneCluster(cluster, lastStart, `addPeer trial ${trial} (${plan})`);
      figures.push(f);
      // Every call succeeded: founded, joined the founder's cluster, or went to its leader.
      for (const [nodeId, outcomes] of await Promise.all(adding)) {
        for (const o of outcomes) assert.ok(o.ok, `${nodeId}: ${JSON.stringify(o.error)}`);
      }
      for (const n of cluster.nodes) assert.deepEqual(await n.call('unhandled'), []);
    } finally {
      await cluster.stop();
    }
  }
  summary('concurrent addPeer', figures);
});

test('3 fresh nodes that each await addPeer for the others one after another (same order everywhere) form one cluster', async () => {
  const cluster = await new Cluster(3).start();
  try {
    const since = Date.now();
    const adding = cluster.nodes.map((n) => n.call('addPeers', { peers: peersOf(cluster, n), sequential: true }));
    await assertOneCluster(cluster, since, 'sequential');
    for (const outcomes of await Promise.all(adding)) {
      for (const o of outcomes) assert.ok(o.ok, JSON.stringify(o.error));
    }
  } finally {
    await cluster.stop();
  }
});

test('advertiseHost: a node bound to 0.0.0.0 founds a cluster and the membership records the advertised address; a wildcard host without it is refused', async () => {
  assert.throws(() => createRaftCoordinator({ nodeId: 'w', port: 0, host: '0.0.0.0' }), {
    code: 'ERR_INVALID_CONFIG',
    field: 'advertiseHost',
  });
  assert.throws(() => createRaftCoordinator({ nodeId: 'w', port: 0, host: '::', advertiseHost: '0.0.0.0' }), {
    code: 'ERR_INVALID_CONFIG',
    field: 'advertiseHost',
  });
  const cluster = await new Cluster(2).prepare();
  const wild = cluster.node('node-2');
  wild.config = { host: '0.0.0.0', advertiseHost: '127.0.0.1' };
  try {
    await Promise.all(cluster.nodes.map((n) => n.start()));
    const node1 = cluster.node('node-1');
    await wild.call('addPeer', { nodeId: 'node-1', host: node1.host, port: node1.port });
    const states = await cluster.waitFor(async () => {
      const s = await cluster.states();
      return s.every((x) => x.leaderId === 'node-2' && x.membership.voters.length === 2) ? s : null;
    });
    for (const s of states) assert.deepEqual(s.membership.nodes['node-2'], { host: '127.0.0.1', port: wild.port, voter: true });
    const written = await wild.call('replicate', { command: { type: 'through-advertised' } });
    await cluster.waitFor(async () => (await node1.call('state')).lastApplied >= written.logIndex);
  } finally {
    await cluster.stop();
  }
});

test('initialMembers is validated: this node listed with its port and advertised host, no duplicates, not with bootstrap', () => {
  const a = { nodeId: 'a', host: '127.0.0.1', port: 7101 };
  const b = { nodeId: 'b', host: '127.0.0.1', port: 7102 };
  const invalid = (config, field, pattern) =>
    assert.throws(() => createRaftCoordinator({ nodeId: 'a', port: 7101, ...config }), (err) => {
      assert.equal(err.code, 'ERR_INVALID_CONFIG');
      assert.equal(err.field, field);
      assert.match(err.message, pattern);
      return true;
    });
  invalid({ initialMembers: [] }, 'initialMembers', /non-empty array/);
  invalid({ initialMembers: [b] }, 'initialMembers', /must list this node \(a\)/);
  invalid({ initialMembers: [a, b, { ...b, port: 7103 }] }, 'initialMembers', /b is listed twice/);
  invalid({ initialMembers: [a, { ...b, port: 7101 }] }, 'initialMembers', /127.0.0.1:7101 is listed twice/);
  invalid({ port: 7109, initialMembers: [a, b] }, 'initialMembers', /port 7101, but this node's port is 7109/);
  invalid({ host: '127.0.0.2', initialMembers: [a, b] }, 'initialMembers', /advertises 127.0.0.2/);
  invalid({ initialMembers: [a, { ...b, host: '0.0.0.0' }] }, 'initialMembers', /not an address peers can dial/);
  invalid({ initialMembers: [a, { ...b, role: 'voter' }] }, 'initialMembers', /unknown key role/);
  invalid({ initialMembers: [a, b], bootstrap: true }, 'bootstrap', /leave bootstrap unset/);
  // Port 0 binds the port the list gives this node; a wildcard host advertises another address.
  const zero = createRaftCoordinator({ nodeId: 'a', port: 0, host: '0.0.0.0', advertiseHost: '127.0.0.1', initialMembers: [b, a] });
  assert.equal(zero.config.port, 7101);
  assert.equal(zero.config.advertiseHost, '127.0.0.1');
});

test('addPeer to a peer that refuses the handshake rejects within 2 s with the cause, and the fresh caller founds nothing', async () => {
  const SECRET = 'formation-secret-0123456789';
  const cluster = await new Cluster(1, { config: { secret: SECRET } }).start();
  const caller = cluster.nodes[0];
  const cases = [
    ['another secret', { secret: 'another-secret-0123456789' }, 'ERR_AUTH', /secret/],
    ['no secret', {}, 'ERR_AUTH', /secret/],
    ['another cluster id', { secret: SECRET, clusterId: 'elsewhere' }, 'ERR_AUTH', /cluster 'elsewhere'|'elsewhere'/],
  ];
  const outsiders = [];
  try {
    for (const [what, config, code, pattern] of cases) {
      const peer = await cluster.outsider(`peer-${outsiders.length}`, config);
      outsiders.push(peer);
      await peer.start();
      const t0 = Date.now();
      const err = await caller.call('addPeer', { nodeId: peer.nodeId, host: peer.host, port: peer.port }).then(
        () => null,
        (e) => e,
      );
      const ms = Date.now() - t0;
      console.log(`# ${what}: ${err?.code} after ${ms} ms: ${err?.message}`);
      assert.ok(err, `${what}: addPeer should fail`);
      assert.equal(err.code, code, `${what}: ${err.message}`);
      assert.match(err.message, pattern);
      assert.ok(ms < 2000, `${what}: took ${ms} ms`);
    }
    // A node answering at the given port under another id.
    const impostor = await cluster.outsider('node-9', { secret: SECRET });
    outsiders.push(impostor);
    await impostor.start();
    const t0 = Date.now();
    const err = await caller.call('addPeer', { nodeId: 'node-2', host: impostor.host, port: impostor.port }).then(
      () => null,
      (e) => e,
    );
    const ms = Date.now() - t0;
    console.log(`# wrong port: ${err?.code} after ${ms} ms: ${err?.message}`);
    assert.equal(err?.code, 'ERR_INVALID_CONFIG');
    assert.match(err.message, /answered as node-9, expected node-2/);
    assert.ok(ms < 2000, `wrong port: took ${ms} ms`);

    const s = await caller.call('state');
    assert.deepEqual(s.membership.voters, [], 'the caller founded nothing');
    for (const o of outsiders) assert.deepEqual((await o.call('state')).membership.voters, []);
  } finally {
    for (const o of outsiders) await o.stop();
    await cluster.stop();
  }
});

test('addPeer on a follower adds the node through the leader', async () => {
  const cluster = await new Cluster(3).start();
  try {
    const [n1, n2, n3] = cluster.nodes;
    await n1.call('addPeer', { nodeId: n2.nodeId, host: n2.host, port: n2.port });
    await cluster.waitFor(async () => (await n2.call('state')).leaderId === 'node-1');
    await n2.call('addPeer', { nodeId: n3.nodeId, host: n3.host, port: n3.port });
    const states = await cluster.waitFor(async () => {
      const s = await cluster.states();
      return s.every((x) => x.leaderId === 'node-1' && x.membership.voters.length === 3 && !x.membership.changing) ? s : null;
    });
    for (const s of states) assert.deepEqual([...s.membership.voters].sort(), ['node-1', 'node-2', 'node-3']);
    // Adding a member again through a follower is a no-op, not an error.
    await n3.call('addPeer', { nodeId: n2.nodeId, host: n2.host, port: n2.port });
  } finally {
    await cluster.stop();
  }
});
