'use strict';
// Delivery to the daemon (DESIGN's Delivery rules) on 3 node processes: kill -9 of random nodes
// at random moments while clients write at full speed, 50 times for each daemon style. After
// the last restart every node's daemon holds every acknowledged operation: the appliedIndex
// and in-memory styles exactly once, the cursor style with repeats only where marked
// `redelivered`; the in-memory style rebuilds the same state on every node.
const test = require('node:test');
const assert = require('node:assert/strict');
const { Cluster } = require('../support/cluster');
const { ErrorCode } = require('..');

const TRIALS = Number(process.env.DELIVERY_TRIALS || 50);
const CLIENTS = 16;
const OUR_CODES = new Set(Object.values(ErrorCode));
const RETRYABLE = new Set(['ERR_NOT_LEADER', 'ERR_TIMEOUT', 'ERR_NO_QUORUM', 'ERR_SHUTDOWN', 'ERR_NOT_INITIALIZED']);

function settings(style) {
  const consensus = { operationTimeoutMs: 3000, partitionDetectionMs: 1000 };
  if (style === 'memory') {
    // Snapshots and purges all the time: restarts rebuild from a snapshot plus the log after it.
    return { config: { snapshotThreshold: 400 }, consensus: { ...consensus, logCompactionThreshold: 800, maxLogSize: 4000 } };
  }
  // A daemon without snapshot/restore must catch up from the log: keep enough of it.
  return {
    config: { snapshotThreshold: 1000, logsKeptAfterSnapshot: 50000 },
    consensus: { ...consensus, logCompactionThreshold: 2000, maxLogSize: 100000 },
  };
}

/** Clients that write operations with unique ids through whichever node leads, retrying each id. */
function startClients(cluster, acked, stats) {
  let stopping = false;
  let seq = 0;
  let leader = cluster.nodes[0];
  const pick = (leaderId) => {
    const named = leaderId && cluster.node(leaderId);
    if (named && named.running) return named;
    const running = cluster.nodes.filter((n) => n.running);
    return running[Math.floor(Math.random() * running.length)] ?? cluster.nodes[0];
  };
  const client = async () => {
    while (!stopping) {
      const id = `op-${seq++}`;
      const deadline = Date.now() + 30000;
      for (;;) {
        const node = leader.running ? leader : pick(null);
        try {
          const r = await node.call('replicateOperation', { operation: { id, type: 'task', payload: { n: seq } } }, 10000);
          acked.set(id, r.logIndex);
          break;
        } catch (err) {
          stats.retries++;
          // Codes not of ours (a closed IPC channel, none) mean the node process was killed
          // under the call: retried, as a real client retries a lost connection.
          if (OUR_CODES.has(err.code) && !RETRYABLE.has(err.code)) throw err;
          leader = pick(err.leaderId);
          if (Date.now() > deadline) {
            stats.indeterminate++;
            stats.lastUnknown = `${id} after 30 s, last ${err.code}: ${err.message}`;
            break;
          }
          await new Promise((r) => setTimeout(r, err.code === 'ERR_NOT_LEADER' ? 5 : 50));
        }
      }
    }
  };
  const running = Promise.all(Array.from({ length: CLIENTS }, client));
  // A client's failure is reported when the clients are stopped, not as an unhandled rejection.
  running.catch(() => {});
  return async () => {
    stopping = true;
    await running;
  };
}

for (const style of ['cursor', 'appliedIndex', 'memory']) {
  test(`kill -9 during writes, ${TRIALS} times: every daemon holds every acknowledged operation (${style})`, { timeout: 900000 }, async () => {
    const { config, consensus } = settings(style);
    const cluster = new Cluster(3, {
      config,
      guide: { daemonStyle: style, consensus, cluster: { healthCheckInterval: 1000 } },
    });
    const acked = new Map(); // operation id -> log index
    const stats = { retries: 0, indeterminate: 0, kills: 0 };
    try {
      await cluster.start();
      await cluster.form();
      const stopClients = startClients(cluster, acked, stats);
      for (let trial = 0; trial < TRIALS; trial++) {
        await new Promise((r) => setTimeout(r, 150 + Math.random() * 350));
        const leader = await cluster.leader(20000).catch(() => null);
        const victim = leader && Math.random() < 0.5 ? leader : cluster.nodes[Math.floor(Math.random() * 3)];
        await victim.kill('SIGKILL');
        stats.kills++;
        await new Promise((r) => setTimeout(r, 100 + Math.random() * 300));
        await victim.start();
      }
      await stopClients();
      assert.ok(acked.size > 1000, `only ${acked.size} operations were acknowledged`);
      const top = Math.max(...acked.values());

      // Every node caught up, and its daemon took everything up to the last acknowledged entry.
      const holdings = await cluster.waitFor(
        async () => {
          const all = await Promise.all(cluster.nodes.map((n) => n.call('holdings')));
          return all.every((h) => h.some(([index]) => index >= top)) ? all : null;
        },
        60000,
        200,
      );
      for (const [i, held] of holdings.entries()) {
        const nodeId = cluster.nodes[i].nodeId;
        const seen = new Map(); // id -> index
        let last = -1;
        for (const [index, id, redelivered] of held) {
          if (seen.has(id)) {
            assert.ok(style === 'cursor', `${nodeId} (${style}) holds ${id} twice`);
            assert.ok(redelivered, `${nodeId} received ${id} again without the redelivered mark`);
            assert.equal(seen.get(id), index, `${nodeId} holds ${id} at two indexes`);
            continue;
          }
          if (style !== 'cursor' || !redelivered) assert.ok(index > last, `${nodeId} took index ${index} after ${last}`);
          last = Math.max(last, index);
          seen.set(id, index);
        }
        for (const [id, index] of acked) {
          assert.equal(seen.get(id), index, `${nodeId} (${style}) does not hold ${id}, acknowledged at ${index}`);
        }
      }
      if (style === 'memory') {
        // Rebuilt from snapshots and log: the same state on every node, up to a common index.
        const upTo = (held) => held.filter(([index]) => index <= top).map(([index, id]) => `${index}:${id}`);
        const [first, ...rest] = holdings.map(upTo);
        for (const other of rest) assert.deepEqual(other, first);
      }
      console.log(
        `# ${style}: ${acked.size} acknowledged operations, ${stats.kills} kill -9, ${stats.retries} client retries, ` +
          `${stats.indeterminate} indeterminate${stats.lastUnknown ? ` (${stats.lastUnknown})` : ''}; ` +
          `held per node: ${holdings.map((h) => h.length).join(', ')}`,
      );
    } finally {
      await cluster.stop();
    }
  });
}

test('read-your-writes: a write on the leader resolves after its own command_applied, with lastApplied at its index', { timeout: 120000 }, async () => {
  const cluster = new Cluster(3);
  try {
    await cluster.start();
    const leader = await cluster.form();
    const missed = await leader.call('readYourWrites', { count: 1000 }, 110000);
    assert.deepEqual(missed, { event: 0, state: 0 });
  } finally {
    await cluster.stop();
  }
});

// A daemon slower than the cluster: its node applies no faster than the daemon takes entries, so
// what waits for the daemon stays bounded in memory (about 16 MiB of events) and the rest waits
// in the log on disk; the daemon still gets every entry, in order.
test('a daemon slower than the cluster holds back its node\'s applies, not its memory', { timeout: 240000 }, async () => {
  // Nothing purged, so the slow node cannot skip ahead by a snapshot.
  const cluster = new Cluster(3, { config: { snapshotThreshold: 100000, logsKeptAfterSnapshot: 100000 } });
  try {
    await cluster.start();
    const leader = await cluster.form();
    const slow = cluster.nodes.find((n) => n !== leader);
    await slow.call('slowDaemon', { ms: 1 });
    const writes = 30000;
    const loaded = await leader.call('load', { count: writes, concurrency: 64, prefix: 'slow', padBytes: 4000 }, 200000);
    assert.deepEqual(loaded.errors, {});
    // Each entry is about 4 KB of events: 16 MiB is about 4,000 of them, plus one applied piece
    // and one batch in JavaScript's hands.
    const waiting = await slow.call('slowDaemon', { ms: 0 }, 200000);
    assert.ok(waiting < 12000, `${waiting} applied entries waited for the slow daemon at once`);
    const top = Math.max(...loaded.acked.map(([, index]) => index));
    const { entries } = await cluster.waitFor(async () => {
      const got = await slow.call('applied', { from: 0 }, 60000);
      return got.entries.some(([index]) => index >= top) ? got : null;
    }, 120000, 500);
    const indexes = entries.map(([index]) => index);
    for (let i = 1; i < indexes.length; i++) assert.ok(indexes[i] > indexes[i - 1], `index ${indexes[i]} after ${indexes[i - 1]}`);
    const seqs = new Set(entries.filter(([, , , type]) => type === 'bench').map(([, , , , seq]) => seq));
    assert.equal(seqs.size, writes);
    console.log(`# at most ${waiting} applied entries waited for the slow daemon`);
  } finally {
    await cluster.stop();
  }
});

// A node killed while its applies waited for a slow daemon restarts with entries to hand over
// again and committed entries it never applied, which openraft applies while the node starts:
// far more than the 16 MiB that may wait for JavaScript. An application that attaches its
// listener after initialize() holds what comes meanwhile: the start must not wait for room, and
// what waits in memory must stay within the bound, the rest in the log.
test('a node killed far behind its slow daemon starts again, and hands the backlog over in bounded pieces', { timeout: 240000 }, async () => {
  const cluster = new Cluster(3, {
    config: { snapshotThreshold: 100000, logsKeptAfterSnapshot: 100000 },
    nodeOptions: { initArgs: { listen: false } },
  });
  try {
    await cluster.start();
    const leader = await cluster.form();
    const behind = cluster.nodes.find((n) => n !== leader);
    for (const node of cluster.nodes) await node.call('slowDaemon', { ms: node === behind ? 1 : 0 });
    // 16,000 commands of 4 KB: 64 MB, four times what may wait for the daemon, which takes 1 ms
    // for each: the node is thousands of entries behind when it is killed.
    const loaded = await leader.call('load', { count: 16000, concurrency: 64, prefix: 'bulk', padBytes: 4000 }, 200000);
    assert.deepEqual(loaded.errors, {});
    const top = Math.max(...loaded.acked.map(([, index]) => index));
    await behind.kill('SIGKILL');
    await behind.start();
    // Handed over until what waits for the listener fills the backlog; once that has not grown
    // for a second, the rest waits in the log.
    let heldAtOnce = -1;
    let grewAt = Date.now();
    await cluster.waitFor(async () => {
      const held = await behind.call('heldForListener');
      if (held !== heldAtOnce) [heldAtOnce, grewAt] = [held, Date.now()];
      return held > 0 && Date.now() - grewAt >= 1000;
    }, 60000, 100);
    assert.ok(heldAtOnce < 6000, `${heldAtOnce} entries of 4 KB waited in memory for the listener`);
    await behind.call('listen');
    const entries = await cluster.waitFor(async () => {
      const got = (await behind.call('applied', { from: 0 })).entries;
      return got.some(([index]) => index >= top) ? got : null;
    }, 120000, 500);
    // Delivery resumes after the cursor the killed run had recorded, with no gap from there.
    const first = entries[0][0];
    const bySeq = new Map(entries.filter(([, , , type]) => type === 'bench').map(([index, , , , seq]) => [seq, index]));
    for (const [seq, index] of loaded.acked) {
      if (index >= first) assert.equal(bySeq.get(seq), index, `bulk-${seq}, acknowledged at ${index}, was not delivered there`);
    }
    for (let i = 1; i < entries.length; i++) assert.ok(entries[i][0] > entries[i - 1][0], `index ${entries[i][0]} after ${entries[i - 1][0]}`);
    // What the start handed over again waited for the listener beside what openraft applied
    // during the start, more than 16 MiB in all.
    const again = entries.filter(([, , , , , redelivered]) => redelivered).length;
    assert.ok(again > 1000 && entries.length - again > 1000 && entries.length > 4200, `${again} handed over again, ${entries.length - again} applied since`);
    console.log(`# after the restart: ${again} entries handed over again, ${entries.length - again} applied since, ${heldAtOnce} held at once`);
  } finally {
    await cluster.stop();
  }
});

// The guide's graceful shutdown stops the ConsensusManager, then the node: the node applies
// whatever commits meanwhile, with nobody left to hand it to. Whether that lasts a moment or
// minutes, the daemon gets it after the restart: entries are held, not counted delivered, and
// no snapshot is taken without the daemon's state, nor with the state of a daemon that stopped
// following the log (when another command_applied listener keeps delivery going).
for (const [style, otherListener] of [['cursor', false], ['memory', false], ['memory', true]]) {
  const beside = otherListener ? ', beside another command_applied listener' : '';
  test(`what a follower applies between its ConsensusManager's shutdown and its stop reaches its daemon after the restart (${style}${beside})`, { timeout: 120000 }, async () => {
    const cluster = new Cluster(3, {
      // Snapshots and purges every few entries, so several fall within the gap.
      config: { snapshotThreshold: 20, logsKeptAfterSnapshot: 0 },
      guide: { daemonStyle: style, consensus: { logCompactionThreshold: 40, maxLogSize: 4000 } },
      // Without the harness's own listener, the daemon's manager is the only one, as in the guide.
      nodeOptions: { initArgs: { listen: otherListener } },
    });
    try {
      await cluster.start();
      const leader = await cluster.form();
      const follower = cluster.nodes.find((n) => n !== leader);
      const acked = new Map();
      const write = async (from, count) => {
        for (let i = from; i < from + count; i++) {
          const r = await leader.call('replicateOperation', { operation: { id: `op-${i}`, type: 'task', payload: { i } } });
          acked.set(`op-${i}`, r.logIndex);
        }
      };
      await write(0, 60);
      await follower.call('shutdownConsensus');
      await write(60, 120);
      const top = Math.max(...acked.values());
      await cluster.waitFor(async () => (await follower.call('state')).lastApplied >= top, 20000);
      await follower.stop();
      await follower.start();
      const held = await cluster.waitFor(async () => {
        const h = await follower.call('holdings');
        return h.some(([index]) => index >= top) ? h : null;
      }, 20000);
      const seen = new Map(held.map(([index, id]) => [id, index]));
      for (const [id, index] of acked) assert.equal(seen.get(id), index, `${follower.nodeId}'s daemon (${style}) does not hold ${id}, acknowledged at ${index}`);
    } finally {
      await cluster.stop();
    }
  });
}
