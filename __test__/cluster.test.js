'use strict';
// A 3-node cluster as 3 OS processes on 127.0.0.1, each with its own data directory and port:
// formation, replication order, failover, restart and catch-up, loss of quorum.
const test = require('node:test');
const assert = require('node:assert/strict');
const { Cluster, NodeProcess, freePort } = require('../support/cluster');
const path = require('node:path');

/** Every node's applied sequence, as [index, operationId] pairs. */
async function appliedSequences(nodes) {
  return Promise.all(nodes.map(async (n) => (await n.call('applied')).entries.map(([index, , opId]) => [index, opId])));
}

async function waitApplied(cluster, nodes, total) {
  return cluster.waitFor(async () => {
    const counts = await Promise.all(nodes.map(async (n) => (await n.call('applied')).total));
    return counts.every((c) => c >= total) ? counts : null;
  }, 30000);
}

test('3 fresh nodes, addPeer twice on node-1: node-1 leads at term 1 and everyone agrees', async () => {
  const cluster = await new Cluster(3).start();
  try {
    const [n1, n2, n3] = cluster.nodes;
    await n1.call('addPeer', { nodeId: n2.nodeId, host: n2.host, port: n2.port });
    await n1.call('addPeer', { nodeId: n3.nodeId, host: n3.host, port: n3.port });
    const states = await cluster.waitFor(async () => {
      const s = await cluster.states();
      return s.every((x) => x.leaderId === 'node-1' && x.membership.voters.length === 3) ? s : null;
    });
    const leader = states.find((s) => s.nodeId === 'node-1');
    assert.equal(leader.role, 'leader');
    assert.equal(leader.isLeader, true);
    assert.equal(leader.term, 1);
    for (const s of states) {
      assert.equal(s.leaderId, 'node-1');
      assert.equal(s.term, 1);
      assert.deepEqual([...s.membership.voters].sort(), ['node-1', 'node-2', 'node-3']);
    }
    const elected = await n2.waitEvent('leader_elected', (e) => e.leaderId === 'node-1');
    assert.equal(elected.term, 1);
  } finally {
    await cluster.stop();
  }
});

test('2000 commands, sequential then 100 in flight: all commit and every node applies them in the same order', async () => {
  const cluster = await new Cluster(3).start();
  try {
    const leader = await cluster.form();
    const sequential = await leader.call('load', { count: 1000, concurrency: 1, prefix: 'seq' });
    const concurrent = await leader.call('load', { count: 1000, concurrency: 100, prefix: 'par' });
    assert.deepEqual(sequential.errors, {});
    assert.deepEqual(concurrent.errors, {});
    assert.equal(sequential.acked.length + concurrent.acked.length, 2000);

    await waitApplied(cluster, cluster.nodes, 2000);
    const [first, ...others] = await appliedSequences(cluster.nodes);
    assert.equal(first.length, 2000);
    for (const seq of others) assert.deepEqual(seq, first);
    const indices = first.map(([i]) => i);
    assert.deepEqual(indices, [...indices].sort((a, b) => a - b), 'applied in increasing log order');
    const ids = new Set(first.map(([, id]) => id));
    for (let i = 0; i < 1000; i++) {
      assert.ok(ids.has(`seq-${i}`) && ids.has(`par-${i}`));
    }
    // The acknowledged index is where the command sits in everyone's log.
    const byId = new Map(first.map(([index, id]) => [id, index]));
    for (const [seq, index] of concurrent.acked) assert.equal(byId.get(`par-${seq}`), index);
  } finally {
    await cluster.stop();
  }
});

test('a follower refuses writes with ERR_NOT_LEADER and the leader id; a retried id applies once', async () => {
  const cluster = await new Cluster(3).start();
  try {
    const leader = await cluster.form();
    const follower = cluster.node('node-2');
    await assert.rejects(follower.call('replicate', { command: { type: 'x' } }), (err) => {
      assert.equal(err.code, 'ERR_NOT_LEADER');
      assert.equal(err.leaderId, 'node-1');
      return true;
    });
    // With forward, the follower sends the write on to the leader.
    const forwarded = await follower.call('replicate', { command: { type: 'via-follower' }, forward: true });
    assert.equal(forwarded.committed, true);
    // It took effect on the leader at the index the follower was told.
    await cluster.waitFor(async () => (await leader.call('state')).lastApplied >= forwarded.logIndex);
    const onLeader = await leader.call('applied');
    assert.ok(onLeader.entries.some(([index, , , type]) => index === forwarded.logIndex && type === 'via-follower'));

    const first = await leader.call('replicate', { command: { type: 'once' }, operationId: 'op-7' });
    const again = await leader.call('replicate', { command: { type: 'once' }, operationId: 'op-7' });
    assert.equal(again.duplicate, true);
    assert.equal(again.logIndex, first.logIndex);
    await waitApplied(cluster, cluster.nodes, 2);
    for (const seq of await appliedSequences(cluster.nodes)) {
      assert.equal(seq.filter(([, id]) => id === 'op-7').length, 1);
    }
    // Every replica can say where it applied an id, and where it did not.
    for (const n of cluster.nodes) {
      const [found, unknown] = await n.call('operations', { operationIds: ['op-7', 'never-sent'] });
      assert.deepEqual(found, { logIndex: first.logIndex, term: first.term });
      assert.equal(unknown, null);
    }
    // A retry of the same id through a follower also resolves to the first result.
    const viaFollower = await follower.call('replicate', { command: { type: 'once' }, operationId: 'op-7', forward: true });
    assert.equal(viaFollower.duplicate, true);
    assert.equal(viaFollower.logIndex, first.logIndex);

    // Health-check pings reach members and fail for strangers.
    const rtt = await leader.call('ping', { nodeId: 'node-3', timeoutMs: 2000 });
    assert.ok(rtt >= 0 && rtt < 2000);
    await assert.rejects(leader.call('ping', { nodeId: 'node-9' }), { code: 'ERR_NODE_NOT_FOUND' });

    // Compaction on demand: a snapshot, then the log purged to what is asked to be kept.
    await leader.call('load', { count: 300, concurrency: 10, prefix: 'fill' });
    const before = await leader.call('state');
    const { purgedUpTo } = await leader.call('compact', { keep: 10 });
    const after = await leader.call('state');
    assert.ok(purgedUpTo >= before.lastApplied - 10);
    assert.ok(after.logLength < before.logLength, `${after.logLength} < ${before.logLength}`);
    assert.ok(after.snapshotIndex >= before.lastApplied);
  } finally {
    await cluster.stop();
  }
});

test('writes forwarded the moment leadership is handed over reach the new leader and apply once', async () => {
  const cluster = await new Cluster(3).start();
  try {
    let leader = await cluster.form();
    // The old leader learns of the new one a moment before the new one's own view catches up;
    // a write forwarded in that moment must not be refused.
    for (let round = 0; round < 12; round++) {
      const to = cluster.nodes.find((n) => n !== leader);
      const r = await leader.call('transferThenWrite', { to: to.nodeId, command: { type: 'handover', seq: round }, operationId: `handover-${round}` });
      assert.equal(r.committed, true);
      leader = to;
    }
    await waitApplied(cluster, cluster.nodes, 12);
    for (const seq of await appliedSequences(cluster.nodes)) {
      const ids = seq.map(([, id]) => id).filter((id) => id && id.startsWith('handover-'));
      assert.deepEqual(ids, Array.from({ length: 12 }, (_, i) => `handover-${i}`));
    }
  } finally {
    await cluster.stop();
  }
});

test('kill -9 of the leader: a new leader commits and no acknowledged command is lost; the old leader rejoins and catches up by snapshot', async () => {
  // A small snapshot threshold, so the writes made while node-1 is down purge the log past it.
  const cluster = await new Cluster(3, { config: { snapshotThreshold: 100, logsKeptAfterSnapshot: 0 } }).start();
  try {
    const old = await cluster.form();
    const before = await old.call('load', { count: 300, concurrency: 20, prefix: 'before' });
    assert.equal(before.acked.length, 300);
    const oldState = await old.call('state');
    await old.kill('SIGKILL');

    const survivors = cluster.nodes.filter((n) => n !== old);
    const killedAt = Date.now();
    const leader = await cluster.leader(10000, survivors);
    const committed = await cluster.waitFor(
      () => leader.call('replicate', { command: { type: 'after-failover' }, operationId: 'after-0' }).catch(() => null),
      10000,
    );
    assert.ok(Date.now() - killedAt < 10000, 'a new leader committed within 10 s');
    assert.ok(committed.term > oldState.term);
    const event = await cluster.node(survivors.find((n) => n !== leader).nodeId).waitEvent(
      'leader_elected',
      (e) => e.leaderId === leader.nodeId,
    );
    assert.equal(event.term, committed.term);

    // Every acknowledged command is on every survivor.
    await waitApplied(cluster, survivors, 301);
    for (const seq of await appliedSequences(survivors)) {
      const ids = new Set(seq.map(([, id]) => id));
      for (const [seq] of before.acked) assert.ok(ids.has(`before-${seq}`), `before-${seq} missing`);
    }

    // More writes while node-1 is down: the log is purged past what node-1 has.
    const during = await leader.call('load', { count: 400, concurrency: 20, prefix: 'during' });
    assert.equal(during.acked.length, 400);
    const leaderState = await cluster.waitFor(async () => {
      const s = await leader.call('state');
      return s.snapshotIndex !== null && s.snapshotIndex > oldState.lastLogIndex ? s : null;
    });

    // Restart node-1 on its data directory: it keeps its log, follows, catches up by snapshot.
    const restarted = await old.start();
    assert.ok(restarted.lastLogIndex >= oldState.lastLogIndex, 'the log survived kill -9');
    await old.waitEvent('snapshot_installed', () => true, 20000);
    await cluster.waitFor(async () => {
      const s = await old.call('state');
      return s.leaderId === leader.nodeId && s.lastApplied >= leaderState.lastApplied ? s : null;
    }, 20000);
    const states = await cluster.states();
    assert.equal(new Set(states.map((s) => s.leaderId)).size, 1, 'one leader');
    assert.equal(new Set(states.map((s) => s.term)).size, 1, 'one term');
    assert.equal(states.filter((s) => s.isLeader).length, 1);
    assert.deepEqual(new Set(states.flatMap((s) => s.membership.voters)), new Set(['node-1', 'node-2', 'node-3']));

    // And it applies what comes next, in the same order as everyone.
    const applied = await old.call('applied');
    await leader.call('load', { count: 50, concurrency: 5, prefix: 'late' });
    await cluster.waitFor(async () => (await old.call('applied')).total >= applied.total + 50);
    const tails = await Promise.all(
      cluster.nodes.map(async (n) => (await n.call('applied')).entries.filter(([, , id]) => id && id.startsWith('late-')).map(([i, , id]) => [i, id])),
    );
    for (const t of tails) assert.deepEqual(t, tails[0]);
  } finally {
    await cluster.stop();
  }
});

test('a snapshot larger than maxFrameBytes reaches a node that fell behind, in pieces, and it holds every operation; while the node is down the leader does not read the snapshot over and over', async () => {
  const maxFrameBytes = 128 * 1024;
  const cluster = await new Cluster(3, {
    config: { snapshotThreshold: 500, logsKeptAfterSnapshot: 0, maxFrameBytes, maxCommandBytes: 16 * 1024 },
  }).start();
  try {
    const leader = await cluster.form();
    const behind = cluster.nodes.find((n) => n !== leader);
    const behindState = await behind.call('state');
    await behind.kill('SIGKILL');

    // Each id stays in the snapshot's id window: 4,000 of them come to well over one frame.
    const count = 4000;
    const during = await leader.call('load', { count, concurrency: 50, prefix: 'while-down' });
    assert.equal(during.acked.length, count);
    // The leader purges its log only while no replication to the stopped node is under way: writes go on
    // until it has purged past what that node holds, so that a snapshot is the only way back.
    let more = 0;
    await cluster.waitFor(async () => {
      const purgedPast = (e) => e.name === 'log_compacted' && e.payload.upToIndex > behindState.lastLogIndex + count / 2;
      if (leader.events.some(purgedPast)) return true;
      await leader.call('load', { count: 100, concurrency: 10, prefix: `more-${more++}` });
      return null;
    }, 30000);

    // Only a snapshot brings the node back now. Each read of one for sending is a full read of the id
    // window; toward a node that is down, openraft retried one every few hundred ms.
    const readsBefore = (await leader.call('nativeStats')).snapshotRead.count;
    const downForMs = 6000;
    await new Promise((resolve) => setTimeout(resolve, downForMs));
    const readsWhileDown = (await leader.call('nativeStats')).snapshotRead.count - readsBefore;
    assert.ok(readsWhileDown <= 2, `the leader read the snapshot ${readsWhileDown} times in ${downForMs} ms for a node that was down`);

    await behind.start();
    await behind.waitEvent('snapshot_installed', () => true, 30000);
    const installed = await behind.call('nativeStats');
    assert.ok(installed.snapshotBytes > maxFrameBytes, `the snapshot (${installed.snapshotBytes} bytes) is larger than one frame (${maxFrameBytes})`);
    // The snapshot covers what the leader had when it was built; the operations after it follow from the log.
    const ids = during.acked.map(([seq]) => `while-down-${seq}`);
    const knownCount = async () => (await behind.call('operations', { operationIds: ids })).filter(Boolean).length;
    await cluster.waitFor(async () => ((await knownCount()) === count ? true : null), 20000).catch(() => {});
    assert.equal(await knownCount(), count, 'the node that caught up knows every operation applied while it was down');

    // And it follows the log from there, with everyone.
    const after = await leader.call('load', { count: 50, concurrency: 5, prefix: 'after' });
    const last = Math.max(...after.acked.map(([, index]) => index));
    await cluster.waitFor(async () => ((await behind.call('state')).lastApplied >= last ? true : null), 20000);
  } finally {
    await cluster.stop();
  }
});

test('writes whose batch is larger than maxFrameBytes commit, and a follower that was down catches up on them from the log', async () => {
  const maxFrameBytes = 64 * 1024;
  // No snapshot: the follower that was down must get every entry through appends.
  const cluster = await new Cluster(3, { config: { maxFrameBytes, maxCommandBytes: 16 * 1024, snapshotThreshold: 100000 } }).start();
  try {
    const leader = await cluster.form();
    const behind = cluster.nodes.find((n) => n !== leader);
    await behind.kill('SIGKILL');

    // 20 writes of 8 KB in flight: one append to the follower still up would carry 160 KB.
    const pad = 'x'.repeat(8000);
    let last = 0;
    for (let round = 0; round < 15; round++) {
      const written = await Promise.all(
        Array.from({ length: 20 }, (_, i) => leader.call('replicate', { command: { type: 'big', n: round * 20 + i, pad } })),
      );
      last = Math.max(last, ...written.map((r) => r.logIndex));
    }

    await behind.start();
    await cluster.waitFor(async () => ((await behind.call('state')).lastApplied >= last ? true : null), 30000);
    const bigOnes = (await behind.call('applied')).entries.filter(([, , , type]) => type === 'big');
    assert.equal(bigOnes.length, 300, 'the follower that was down applied every large write');
  } finally {
    await cluster.stop();
  }
});

test('across a network round trip appends are pipelined: with a follower killed by kill -9 mid-load and writes larger than a frame, every node applies every write in one order', async () => {
  const maxFrameBytes = 64 * 1024;
  // The fault hooks hold back every request between nodes 5 ms: a round trip the transport pipelines appends across.
  const cluster = await new Cluster(3, {
    config: { maxFrameBytes, maxCommandBytes: 16 * 1024, snapshotThreshold: 100000 },
    nodeOptions: { env: { UNRDF_CONSENSUS_FAULT_HOOKS: '1', UNRDF_CONSENSUS_LINK_DELAY_MS: '5' } },
  }).start();
  try {
    const leader = await cluster.form();
    const stats = await leader.call('nativeStats');
    for (const n of cluster.nodes.filter((x) => x !== leader)) {
      assert.ok(stats.networkRtt[n.nodeId] >= 0.005, `the leader measured the round trip to ${n.nodeId}: ${stats.networkRtt[n.nodeId]} s`);
    }
    const behind = cluster.nodes.find((n) => n !== leader);
    const pad = 'x'.repeat(6000);
    const write = (round) =>
      Promise.all(Array.from({ length: 25 }, (_, i) => leader.call('replicate', { command: { type: 'big', n: round * 25 + i, pad } })));
    let last = 0;
    for (let round = 0; round < 12; round++) {
      if (round === 4) await behind.kill('SIGKILL');
      if (round === 8) await behind.start();
      last = Math.max(last, ...(await write(round)).map((r) => r.logIndex));
    }
    await cluster.waitFor(async () => {
      const states = await Promise.all(cluster.nodes.map((n) => n.call('state')));
      return states.every((st) => st.lastApplied >= last) ? true : null;
    }, 30000);
    // Each node's entries as its process delivered them: the restarted one's since its restart.
    const delivered = async (n) => (await n.call('applied')).entries.filter(([, , , type]) => type === 'big').map(([index, term]) => `${index}@${term}`);
    const [steady, other] = await Promise.all(cluster.nodes.filter((n) => n !== behind).map(delivered));
    assert.equal(steady.length, 300, 'every large write applied');
    assert.deepEqual(other, steady, 'the nodes that stayed up applied the same writes at the same indexes');
    const sinceRestart = await delivered(behind);
    assert.ok(sinceRestart.length > 0, 'the restarted follower applied writes after its restart');
    assert.deepEqual(sinceRestart, steady.slice(steady.length - sinceRestart.length), 'the restarted follower applied the same writes at the same indexes, up to the last');
  } finally {
    await cluster.stop();
  }
});

test('2 of 3 killed: the survivor refuses writes within its timeout; with one node back, writes succeed', async () => {
  const cluster = await new Cluster(3, { config: { commandTimeoutMs: 2000 } }).start();
  try {
    const leader = await cluster.form();
    await leader.call('replicate', { command: { type: 'x' } });
    const [a, b] = cluster.nodes.filter((n) => n !== leader);
    await a.kill('SIGKILL');
    await b.kill('SIGKILL');
    for (let i = 0; i < 3; i++) {
      const t0 = Date.now();
      await assert.rejects(leader.call('replicate', { command: { type: 'lonely' } }), (err) => {
        assert.ok(['ERR_NO_QUORUM', 'ERR_NOT_LEADER'].includes(err.code), err.code);
        return true;
      });
      assert.ok(Date.now() - t0 < 2000 + 3000, 'rejected within the command timeout (plus slack)');
    }
    await a.start();
    const ok = await cluster.waitFor(async () => {
      const l = await cluster.leader(10000, [leader, a]);
      return l.call('replicate', { command: { type: 'back' } }).catch(() => null);
    }, 20000);
    assert.equal(ok.committed, true);
  } finally {
    await cluster.stop();
  }
});

test('addPeer without await to an unreachable peer: no unhandled rejection, the process lives on', async () => {
  const deadPort = await freePort();
  const root = require('node:fs').mkdtempSync(path.join(require('node:os').tmpdir(), 'consensus-ff-'));
  const node = new NodeProcess({
    nodeId: 'lonely',
    port: await freePort(),
    dataDir: path.join(root, 'lonely'),
    config: { addPeerTimeoutMs: 1500 },
  });
  try {
    await node.start();
    await node.call('addPeer', { nodeId: 'ghost', host: '127.0.0.1', port: deadPort, fireAndForget: true });
    const failed = await node.waitEvent('peer_add_failed', () => true, 15000);
    assert.equal(failed.nodeId, 'ghost');
    assert.equal(failed.error.code, 'ERR_TIMEOUT');
    assert.deepEqual(await node.call('unhandled'), []);
    assert.ok(node.running);
    const r = await node.call('replicate', { command: { type: 'still-alive' } });
    assert.equal(r.committed, true);
  } finally {
    await node.stop();
    require('node:fs').rmSync(root, { recursive: true, force: true });
  }
});
