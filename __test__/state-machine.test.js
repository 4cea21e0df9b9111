'use strict';
// DistributedStateMachine on 3 OS processes: replicated keys that every node holds equally
// (also after a restart and a wipe-and-re-add), linearizable reads that never go stale across a
// failover or on an isolated old leader, compare-and-set under contention, resumable watches,
// and code written for the pure-JS original running unchanged.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { Cluster, freePort } = require('../support/cluster');
const { available, TestNetwork } = require('../support/netns');
const { LinkCutNetwork, FAULT_HOOKS_ENV } = require('../support/link-cuts');
const {
  createDistributedStateMachine,
  DistributedStateMachine,
  StateOperation,
  createRaftCoordinator,
  ConsensusError,
} = require('..');

/** Polls a condition with a deadline. */
async function until(check, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`condition not met within ${timeoutMs} ms`);
}

async function startWithState(cluster) {
  await cluster.start();
  const leader = await cluster.form();
  await Promise.all(cluster.nodes.map((n) => n.call('dsmInit')));
  return leader;
}

/** Waits until every running node's entries() holds `count` keys and all are equal. */
async function entriesEqual(cluster, count, timeoutMs = 60000) {
  return cluster.waitFor(async () => {
    const all = await Promise.all(cluster.nodes.filter((n) => n.running).map((n) => n.call('dsmEntries')));
    if (all.some((e) => e.length !== count)) return null;
    const first = JSON.stringify(all[0]);
    return all.every((e) => JSON.stringify(e) === first) ? all[0] : null;
  }, timeoutMs, 200);
}

async function waitLeaderAmong(cluster, among, timeoutMs = 15000) {
  return cluster.leader(timeoutMs, among);
}

test('API: exports, validation and errors are ConsensusErrors with stable codes', async () => {
  assert.equal(typeof createDistributedStateMachine, 'function');
  assert.ok(createDistributedStateMachine({ nodeId: 'n1' }) instanceof DistributedStateMachine);
  assert.deepEqual(StateOperation, { SET: 'set', DELETE: 'delete', UPDATE: 'update', BATCH: 'batch' });
  const esm = await import('../index.mjs');
  assert.equal(esm.createDistributedStateMachine, createDistributedStateMachine);
  assert.equal(esm.StateOperation, StateOperation);
  assert.throws(() => createDistributedStateMachine({ prefix: '' }), { code: 'ERR_INVALID_CONFIG' });
  assert.throws(() => createDistributedStateMachine({ prefix: 'cluster/' }), { code: 'ERR_INVALID_CONFIG' });
  assert.throws(() => createDistributedStateMachine({ snapshotInterval: -1 }), { code: 'ERR_INVALID_CONFIG' });

  const dsm = createDistributedStateMachine({ nodeId: 'solo' });
  await assert.rejects(dsm.set('k', 1), { code: 'ERR_NOT_INITIALIZED' });
  await assert.rejects(dsm.initialize({}), { code: 'ERR_INVALID_CONFIG' });

  const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'unrdf-dsm-'));
  const raft = createRaftCoordinator({ nodeId: 'solo', port: 0, dataDir: path.join(dir, 'solo'), bootstrap: true, maxCommandBytes: 4096 });
  try {
    await assert.rejects(createDistributedStateMachine({ nodeId: 'other' }).initialize(raft), { code: 'ERR_INVALID_CONFIG' });
    await dsm.initialize(raft);
    await until(() => raft.isLeader);
    await assert.rejects(dsm.set('', 1), { code: 'ERR_INVALID_OPERATION' });
    await assert.rejects(dsm.set('k'.repeat(600), 1), { code: 'ERR_INVALID_OPERATION' });
    await assert.rejects(dsm.set('\u20ac'.repeat(200), 1), { code: 'ERR_INVALID_OPERATION' }); // 600 bytes of UTF-8
    // The same limit guards the coordinator's registry writes: a key LMDB cannot store is refused before it is proposed.
    await assert.rejects(raft.replicateCommand({ type: 't' }, { registry: { key: '\u20ac'.repeat(200) } }), { code: 'ERR_INVALID_OPERATION' });
    await assert.rejects(raft.replicateCommand({ type: 't' }, { registry: { key: 'a', value: 1, also: [{ key: '\u20ac'.repeat(200), value: 2 }] } }), { code: 'ERR_INVALID_OPERATION' });
    await assert.rejects(dsm.set('k', undefined), { code: 'ERR_INVALID_OPERATION' });
    await assert.rejects(dsm.set('big', 'x'.repeat(5000)), { code: 'ERR_INVALID_OPERATION' }); // over maxCommandBytes
    await assert.rejects(dsm.batchUpdate([{ key: 'a', value: 'x'.repeat(3000) }, { key: 'b', value: 'y'.repeat(3000) }]), { code: 'ERR_INVALID_OPERATION' });
    await assert.rejects(dsm.set('k', () => 1), { code: 'ERR_INVALID_OPERATION' });
    await assert.rejects(dsm.batchUpdate('nope'), { code: 'ERR_INVALID_OPERATION' });
    await assert.rejects(dsm.batchUpdate([{ key: 'a' }]), { code: 'ERR_INVALID_OPERATION' });
    await assert.rejects(dsm.update('k', 'not a function'), { code: 'ERR_INVALID_OPERATION' });
    assert.throws(() => dsm.get(7), (err) => err instanceof ConsensusError && err.code === 'ERR_INVALID_OPERATION');
    assert.throws(() => dsm.watch('', { fromIndex: -1 }), { code: 'ERR_INVALID_OPERATION' });

    const seen = [];
    dsm.on('state_changed', (c) => seen.push(c));
    await dsm.set('wf:1', { status: 'running' });
    assert.deepEqual(dsm.get('wf:1'), { status: 'running' });
    assert.equal(dsm.has('wf:1'), true);
    assert.equal(dsm.get('missing'), undefined);
    assert.deepEqual(await dsm.get('wf:1', { linearizable: true }), { status: 'running' });
    await dsm.batchUpdate([{ key: 'wf:2', value: 2 }, { key: 'wf:3', value: 3 }]);
    assert.equal(await dsm.update('wf:2', (v) => v + 40), 42);
    await dsm.delete('wf:3');
    assert.deepEqual(dsm.keys(), ['wf:1', 'wf:2']);
    assert.deepEqual(dsm.values(), [{ status: 'running' }, 42]);
    assert.deepEqual(dsm.entries(), [['wf:1', { status: 'running' }], ['wf:2', 42]]);
    assert.deepEqual(
      seen.map(({ key, operation, value }) => [key, operation, value]),
      [['wf:1', 'set', { status: 'running' }], ['wf:2', 'set', 2], ['wf:3', 'set', 3], ['wf:2', 'set', 42], ['wf:3', 'delete', undefined]],
    );
    // compare-and-set: absent, equal (member order does not matter), unequal.
    assert.deepEqual(await dsm.compareAndSet('c', undefined, { a: 1, b: 2 }), { ok: true, value: { a: 1, b: 2 } });
    assert.deepEqual(await dsm.compareAndSet('c', undefined, 5), { ok: false, value: { a: 1, b: 2 } });
    assert.deepEqual(await dsm.compareAndSet('c', { b: 2, a: 1 }, 6), { ok: true, value: 6 });
    assert.deepEqual(await dsm.compareAndSet('c', 5, 7), { ok: false, value: 6 });
    // The registry's other users are not the state's keys.
    assert.ok(raft.getRegistry('').every(({ key }) => !key.startsWith('state/') || !key.slice(6).startsWith('cluster/')));
    assert.equal(dsm.getStats().stateSize, 3);
    // A watch waiting for changes ends with shutdown(); one on a stopped node ends too.
    const waiting = (async () => {
      const out = [];
      for await (const c of dsm.watch('')) out.push(c);
      return out;
    })();
    const other = createDistributedStateMachine();
    await other.initialize(raft);
    const waitingOther = (async () => {
      const out = [];
      for await (const c of other.watch('wf:')) out.push(c);
      return out;
    })();
    await dsm.shutdown();
    assert.deepEqual(await waiting, []);
    await assert.rejects(dsm.set('k', 1), { code: 'ERR_SHUTDOWN' });
    await raft.stop();
    assert.deepEqual(await waitingOther, []);
    assert.throws(() => other.get('wf:1'), { code: 'ERR_SHUTDOWN' });
    await assert.rejects(other.set('k', 1), { code: 'ERR_SHUTDOWN' });
    await assert.rejects(other.get('wf:1', { linearizable: true }), { code: 'ERR_SHUTDOWN' });
  } finally {
    await raft.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('10,000 sets with 100 in flight: every node ends equal, also a restarted node and a wiped, re-added one', { timeout: 600000 }, async (t) => {
  const cluster = new Cluster(3, { config: { snapshotThreshold: 2000 } });
  try {
    const leader = await startWithState(cluster);
    const load = await leader.call('dsmLoad', { count: 10000, concurrency: 100, prefix: 'a', retry: true }, 300000);
    assert.deepEqual(load.errors, {});
    t.diagnostic(`10,000 sets in ${Math.round(load.elapsedMs)} ms`);
    await entriesEqual(cluster, 10000);
    // Every node reported every change as state_changed, in log order, once.
    for (const n of cluster.nodes) {
      const { changes } = await n.call('dsmChanges');
      assert.equal(changes.length, 10000, `${n.nodeId} state_changed count`);
      assert.equal(new Set(changes.map(([, key]) => key)).size, 10000);
      for (let i = 1; i < changes.length; i++) assert.ok(changes[i][0] > changes[i - 1][0], 'in log order');
    }

    const [restarted, wiped] = cluster.nodes.filter((n) => n !== leader);
    await restarted.kill('SIGKILL');
    assert.deepEqual((await leader.call('dsmLoad', { count: 1000, concurrency: 100, prefix: 'b', retry: true }, 120000)).errors, {});
    await restarted.start();
    await restarted.call('dsmInit');

    await leader.call('removePeer', { nodeId: wiped.nodeId }, 20000);
    await wiped.kill('SIGKILL');
    fs.rmSync(wiped.dataDir, { recursive: true, force: true });
    await wiped.start();
    await wiped.call('dsmInit');
    await leader.call('addPeer', { nodeId: wiped.nodeId, host: wiped.host, port: wiped.port }, 30000);
    assert.deepEqual((await leader.call('dsmLoad', { count: 500, concurrency: 50, prefix: 'c', retry: true }, 120000)).errors, {});
    const final = await entriesEqual(cluster, 11500, 120000);
    assert.deepEqual(final.find(([k]) => k === 'b-999'), ['b-999', { seq: 999, by: leader.nodeId }]);
    // The log was compacted long before the wipe: the wiped node caught up by snapshot.
    const restored = wiped.events.filter((e) => e.name === 'dsm:snapshot_restored');
    assert.ok(restored.length >= 1, 'the wiped node reported snapshot_restored');
    assert.ok(restored[0].payload.stateSize >= 10000);
  } finally {
    await cluster.stop();
  }
});

test('compareAndSet: 16 concurrent clients on 3 nodes each add 1 a hundred times; the counter ends at exactly 1,600', { timeout: 600000 }, async () => {
  const cluster = new Cluster(3);
  try {
    const leader = await startWithState(cluster);
    // A follower's write is refused unless forwarded; forwarded, the follower reads it back at once.
    const follower = cluster.nodes.find((n) => n !== leader);
    await assert.rejects(follower.call('dsmSet', { key: 'f', value: 1 }), (err) => err.code === 'ERR_NOT_LEADER' && err.leaderId === leader.nodeId);
    await follower.call('dsmSet', { key: 'f', value: 2, forward: true });
    assert.equal((await follower.call('dsmGet', { key: 'f' })).value, 2);
    // 16 clients spread over the three processes; followers forward their writes.
    const spread = [6, 5, 5];
    const results = await Promise.all(
      cluster.nodes.map((n, i) => n.call('dsmCounter', { key: 'counter', clients: spread[i], increments: 100, forward: true }, 500000)),
    );
    // Leadership may move under load; the clients' retries then cover writes of unknown outcome.
    for (const r of results) {
      for (const code of Object.keys(r.errors)) assert.ok(['ERR_NOT_LEADER', 'ERR_NO_QUORUM', 'ERR_TIMEOUT'].includes(code), r.messages.join('; '));
    }
    for (const n of cluster.nodes) {
      const got = await cluster.waitFor(async () => {
        const { value } = await n.call('dsmGet', { key: 'counter', linearizable: true });
        return value && value.count === 1600 ? value : null;
      });
      assert.equal(got.count, 1600);
      assert.equal(Object.keys(got.seen).length, 16);
    }
    assert.ok(results.reduce((a, r) => a + r.attempts, 0) >= 1600);
  } finally {
    await cluster.stop();
  }
});

test('linearizable reads: 1,000 alternating set/get pairs across a failover find no stale read', { timeout: 600000 }, async () => {
  const cluster = new Cluster(3);
  try {
    await startWithState(cluster);
    let acked = -1;
    let stale = 0;
    let reads = 0;
    let killedAt = null;
    for (let i = 0; i < 1000; i++) {
      if (i === 400) {
        const old = await cluster.leader();
        await old.kill('SIGKILL');
        killedAt = i;
      }
      // The write: retried through whoever leads until acknowledged.
      await cluster.waitFor(async () => {
        const l = await cluster.leader(15000);
        await l.call('dsmSet', { key: 'x', value: i });
        return true;
      }, 30000, 20);
      acked = i;
      // The read: from a node other than the writer when there is one, linearizable.
      const running = cluster.nodes.filter((n) => n.running);
      const reader = running[i % running.length];
      const got = await cluster.waitFor(async () => reader.call('dsmGet', { key: 'x', linearizable: true }), 30000, 20);
      reads++;
      if (got.value < acked) stale++;
    }
    assert.equal(killedAt, 400);
    assert.equal(reads, 1000);
    assert.equal(stale, 0, 'a linearizable get returned a value older than the last acknowledged set');
  } finally {
    await cluster.stop();
  }
});

async function isolatedOldLeader(cluster, makeNetwork) {
  const leader = await startWithState(cluster);
  const network = makeNetwork();
  await leader.call('dsmSetRetry', { key: 'x', value: 'before' });
  const index = cluster.nodes.indexOf(leader) + 1;
  const others = cluster.nodes.filter((n) => n !== leader);
  await network.isolate(index);
  try {
    const newLeader = await waitLeaderAmong(cluster, others, 20000);
    await newLeader.call('dsmSetRetry', { key: 'x', value: 'after' });
    // The old leader cannot confirm leadership: it refuses, within the timeout, and never
    // answers with the value the majority has since replaced.
    for (let i = 0; i < 3; i++) {
      const t0 = Date.now();
      await assert.rejects(
        leader.call('dsmGet', { key: 'x', linearizable: true, timeoutMs: 2000 }),
        (err) => ['ERR_NO_QUORUM', 'ERR_NOT_LEADER'].includes(err.code),
      );
      assert.ok(Date.now() - t0 < 2000 * 10, 'refused within the timeout (10x margin)');
    }
    for (const n of others) assert.equal((await n.call('dsmGet', { key: 'x', linearizable: true })).value, 'after');
    // A local (sequentially consistent) read on the cut-off node may lag: it still has the old value.
    assert.equal((await leader.call('dsmGet', { key: 'x' })).value, 'before');
  } finally {
    await network.heal(index);
  }
  await cluster.waitFor(async () => (await leader.call('dsmGet', { key: 'x', linearizable: true })).value === 'after', 30000);
}

const netns = available();
test('linearizable reads: an isolated old leader (network namespaces) rejects instead of answering stale', { timeout: 300000, skip: netns.ok ? false : netns.why }, async () => {
  const network = new TestNetwork(3).setup();
  try {
    const cluster = new Cluster(3, { network });
    try {
      await isolatedOldLeader(cluster, () => network);
    } finally {
      await cluster.stop();
    }
  } finally {
    network.teardown();
  }
});

// The fallback where namespaces are not available; it runs everywhere, so both paths stay tested.
test('linearizable reads: an old leader cut off by the link-cut fault hook rejects instead of answering stale', { timeout: 300000 }, async () => {
  process.env[FAULT_HOOKS_ENV] = '1';
  const cluster = new Cluster(3);
  try {
    await isolatedOldLeader(cluster, () => new LinkCutNetwork(cluster.nodes));
  } finally {
    delete process.env[FAULT_HOOKS_ENV];
    await cluster.stop();
  }
});

test('watch: resumed from an index after a restart, it yields every change after that index once, in order', { timeout: 300000 }, async () => {
  const cluster = new Cluster(3);
  try {
    const leader = await startWithState(cluster);
    const follower = cluster.nodes.find((n) => n !== leader);
    // What the watches must yield: the leader's own state_changed record of the w/ keys
    // ([index, key, operation], each change once, in log order).
    const truth = async () => (await leader.call('dsmChanges')).changes.filter(([, key]) => key.startsWith('w/'));
    const triples = (seen) => seen.map(([index, key, operation]) => [index, key, operation]);
    const id = await follower.call('dsmWatchStart', { prefix: 'w/', fromIndex: 0 });
    await leader.call('dsmSetRetry', { key: 'other', value: 0 });
    for (let i = 0; i < 50; i++) await leader.call('dsmSetRetry', { key: `w/${i % 7}`, value: i });
    await leader.call('dsmDelete', { key: 'w/3', forward: true });
    await leader.call('dsmBatch', { changes: [{ key: 'w/a', value: 'A' }, { key: 'w/b', value: 'B' }], forward: true });
    // Writes may have gone through another node if leadership moved: wait until this one has all.
    await cluster.waitFor(async () => (await leader.call('dsmGet', { key: 'w/b' })).value === 'B');
    const expected1 = await truth();
    const first = await cluster.waitFor(async () => {
      const { seen } = await follower.call('dsmWatchSeen', { id });
      return seen.length >= expected1.length ? seen : null;
    });
    assert.deepEqual(triples(first), expected1);
    assert.ok(first.length >= 53);
    const deleted = first.find(([, key, op]) => key === 'w/3' && op === 'delete');
    assert.deepEqual(deleted.slice(1), ['w/3', 'delete', null]);
    const [a, b] = first.slice(-2);
    assert.deepEqual([a[1], a[3], b[1], b[3]], ['w/a', 'A', 'w/b', 'B']);
    assert.equal(a[0], b[0], 'a batch is one log entry');
    // The watcher handled up to the 30th change, then its node restarted.
    const resumeAt = first[29][0];
    await follower.call('dsmWatchStop', { id });
    await follower.kill('SIGKILL');
    for (let i = 50; i < 80; i++) await leader.call('dsmSetRetry', { key: `w/${i % 7}`, value: i });
    await follower.start();
    await follower.call('dsmInit');
    const again = await follower.call('dsmWatchStart', { prefix: 'w/', fromIndex: resumeAt });
    await cluster.waitFor(async () => (await leader.call('dsmGet', { key: `w/${79 % 7}` })).value === 79);
    const expected2 = (await truth()).filter(([index]) => index > resumeAt);
    await cluster.waitFor(async () => {
      const { seen } = await follower.call('dsmWatchSeen', { id: again });
      return seen.length >= expected2.length;
    });
    const { seen, error } = await follower.call('dsmWatchStop', { id: again });
    assert.equal(error, null);
    assert.deepEqual(triples(seen), expected2, 'every change after the index, once, in log order');
    assert.deepEqual(seen.slice(0, first.length - 30), first.slice(30), 'as first seen before the restart');
    // The writes made while the node was down arrive with their values, in order.
    const later = seen.slice(first.length - 30).map(([, , , v]) => v).filter((v, i, all) => i === 0 || v !== all[i - 1]);
    assert.deepEqual(later, Array.from({ length: 30 }, (_, i) => 50 + i));
  } finally {
    await cluster.stop();
  }
});

test('code written for the pure-JS original runs with only its import changed: 3 processes set and read workflow state, then fail over', { timeout: 300000 }, async () => {
  const script = path.join(__dirname, 'fixtures', 'original-style-workflow.mjs');
  const ports = await Promise.all([1, 2, 3].map(() => freePort()));
  const root = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'unrdf-dsm-orig-'));
  const spawnNode = (i) => {
    const child = spawn(process.execPath, [script, String(i), ports.join(',')], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
    const lines = [];
    const waiters = [];
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        lines.push(line);
        for (const w of waiters.splice(0)) if (!w(line)) waiters.push(w);
      }
    });
    const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
    const waitLine = (re, ms = 60000) =>
      new Promise((resolve, reject) => {
        const hit = lines.find((l) => re.test(l));
        if (hit) return resolve(hit);
        const timer = setTimeout(() => reject(new Error(`node-${i}: no line ${re} within ${ms} ms; saw:\n${lines.join('\n')}`)), ms);
        waiters.push((l) => {
          if (!re.test(l)) return false;
          clearTimeout(timer);
          resolve(l);
          return true;
        });
      });
    return { i, child, lines, waitLine, exited };
  };
  // One after another, as the original's examples started them.
  const procs = [];
  try {
    for (const i of [1, 2, 3]) {
      const p = spawnNode(i);
      procs.push(p);
      await p.waitLine(/^UP$/);
    }
    const seen = await Promise.all(procs.map((p) => p.waitLine(/^SEEN /)));
    for (const line of seen) {
      const state = JSON.parse(line.slice(5));
      assert.equal(state['workflow:data-pipeline'].status, 'running');
      assert.equal(state['workflow:ml-training'].progress, 0.25);
    }
    const leaderLine = await procs[0].waitLine(/^LEADER /);
    const leaderId = leaderLine.split(' ')[1];
    const old = procs.find((p) => `node-${p.i}` === leaderId);
    old.child.kill('SIGKILL');
    await old.exited;
    const survivors = procs.filter((p) => p !== old);
    const after = await Promise.all(survivors.map((p) => p.waitLine(/^AFTER /, 60000)));
    for (const line of after) {
      const state = JSON.parse(line.slice(6));
      assert.equal(state['workflow:data-pipeline'].status, 'completed');
      assert.equal(state['workflow:ml-training'].progress, 0.25, 'nothing lost in the failover');
    }
    const codes = await Promise.all(survivors.map((p) => p.exited));
    for (const c of codes) assert.equal(c.code, 0);
  } finally {
    for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    fs.rmSync(root, { recursive: true, force: true });
  }
});
