'use strict';
// Where the time of one sequential write goes, from the engine's own measurements: on a 3-process
// cluster with durable storage, `count` writes one at a time through each path, and the deltas of
// the leader's and followers' histograms over those writes (the ones /metrics exposes).
//
//   node bench/split.js [--count=N]
//
// A write on the leader: the ConsensusManager's bookkeeping (JS) -> napi -> openraft appends to
// the leader's log (an fsynced LMDB commit) while it sends the entries to the followers, which
// append them (their own fsync) and answer -> commit once a majority holds it -> apply on the
// leader (a second fsynced LMDB commit by the log's writer: with one write in flight nothing else
// shares it) -> the event crosses back into JS, the listeners run, and the call resolves
// (read-your-writes). The leader's fsync and the round trip to a follower run side by side; the
// rest is in series.
const { Cluster } = require('../support/cluster');
const { histogramMeanMs: meanMs, fmt, printRows } = require('./measure');

const countArg = process.argv.find((a) => a.startsWith('--count='));
const COUNT = countArg ? Number(countArg.slice('--count='.length)) : 1000;

async function measurePath(leader, followers, op, prefix) {
  const before = await Promise.all([leader, ...followers].map((n) => n.call('nativeStats')));
  const r = await leader.call(op, { count: COUNT, concurrency: 1, prefix }, 600000);
  const after = await Promise.all([leader, ...followers].map((n) => n.call('nativeStats')));
  const lat = Float64Array.from(r.latencies).sort();
  const fsyncCount = after[0].logFsync.count - before[0].logFsync.count;
  return {
    clientMeanMs: lat.reduce((a, b) => a + b, 0) / lat.length,
    clientP50Ms: lat[Math.floor(lat.length / 2)],
    leaderFsyncMs: meanMs(after[0].logFsync, before[0].logFsync),
    leaderFsyncsPerWrite: fsyncCount / COUNT,
    applyCommitMs: meanMs(after[0].applyCommit, before[0].applyCommit),
    applyCommitsPerWrite: (after[0].applyCommit.count - before[0].applyCommit.count) / COUNT,
    followerFsyncMs: followers.map((_, i) => meanMs(after[i + 1].logFsync, before[i + 1].logFsync)),
    roundTripMs: followers.map((f) => meanMs(after[0].peers[f.nodeId], before[0].peers[f.nodeId])),
    errors: r.errors,
  };
}

async function split() {
  const cluster = new Cluster(3, { guide: { daemonStyle: 'counting' }, nodeOptions: { initArgs: { record: false } } });
  try {
    await cluster.start();
    const leader = await cluster.form();
    const followers = cluster.nodes.filter((n) => n !== leader);
    await leader.call('guideLoad', { count: 300, concurrency: 16, prefix: 'warm' });
    const command = await measurePath(leader, followers, 'load', 'split-cmd');
    const operation = await measurePath(leader, followers, 'guideLoad', 'split-op');
    // The transport alone: a round trip to a follower that touches no disk.
    const pings = [];
    for (let i = 0; i < 300; i++) pings.push(await leader.call('ping', { nodeId: followers[0].nodeId, timeoutMs: 2000 }));
    pings.sort((a, b) => a - b);
    return { count: COUNT, command, operation, pingP50Ms: pings[Math.floor(pings.length / 2)] };
  } finally {
    await cluster.stop();
  }
}

function printSplit(r) {
  const c = r.command;
  const o = r.operation;
  const avg = (xs) => {
    const v = xs.filter((x) => x !== null);
    return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
  };
  const rtt = avg(c.roundTripMs);
  const followerFsync = avg(c.followerFsyncMs);
  const replication = Math.max(c.leaderFsyncMs ?? 0, rtt ?? 0);
  const rest = c.clientMeanMs - replication - (c.applyCommitMs ?? 0) * c.applyCommitsPerWrite;
  console.log(`\nOne sequential write, split into its parts (means over ${r.count} writes, ms)`);
  printRows(
    ['part', 'ms', 'how it is known'],
    [
      ['replicateOperation, as the caller sees it', fmt(o.clientMeanMs, 3), `client clock (p50 ${fmt(o.clientP50Ms, 3)})`],
      ['  ConsensusManager bookkeeping (JS)', fmt(o.clientMeanMs - c.clientMeanMs, 3), 'replicateOperation minus replicateCommand'],
      ['replicateCommand, as the caller sees it', fmt(c.clientMeanMs, 3), `client clock (p50 ${fmt(c.clientP50Ms, 3)})`],
      ['  leader log append (LMDB commit + fsync)', fmt(c.leaderFsyncMs, 3), `leader histogram, ${fmt(c.leaderFsyncsPerWrite, 2)} per write`],
      ['  replication round trip to a follower', fmt(rtt, 3), 'leader per-peer histogram, runs beside the append'],
      ['    of which the follower log append (fsync)', fmt(followerFsync, 3), 'follower histograms'],
      ['    of which network and framing', fmt(rtt !== null && followerFsync !== null ? rtt - followerFsync : null, 3), 'round trip minus follower append'],
      ['    network alone (ping, no disk)', fmt(r.pingP50Ms, 3), 'p50 of 300 pings'],
      ['  apply on the leader (state-machine commit + fsync)', fmt(c.applyCommitMs, 3), `leader histogram, ${fmt(c.applyCommitsPerWrite, 2)} per write`],
      ['  openraft scheduling, napi crossings, event to JS', fmt(rest, 3), 'the remainder'],
    ],
  );
  console.log();
}

module.exports = { split, printSplit };

if (require.main === module) {
  split()
    .then((r) => {
      printSplit(r);
    })
    .catch((err) => {
      console.error(err);
      process.exitCode = 1;
    });
}
