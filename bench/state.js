'use strict';
// The DistributedStateMachine's figures for `npm run bench`: `set` throughput and latency, and
// linearizable `get` latency (from the leader and from a follower), on a 3-process cluster; and,
// with `withEtcd` (`--vs-etcd`), etcd's put and linearizable get on the same workload in the same
// run (bench/etcd.js says where etcd comes from), so the comparison is a ratio of two figures
// measured under the same load of this shared machine.
const fs = require('node:fs');
const path = require('node:path');
const { Cluster } = require('../support/cluster');
const { round, makeValue, summarize, closedLoop } = require('./measure');
const { etcdUnavailable, EtcdCluster, putValue } = require('./etcd');

/** Runs in a node process (support/state-ops.js drives the same calls); here via IPC ops. */
async function benchOurs({ setLevels, getCount }) {
  const cluster = new Cluster(3);
  const out = { set: [], get: {} };
  try {
    await cluster.start();
    const leader = await cluster.form();
    await Promise.all(cluster.nodes.map((n) => n.call('dsmInit')));
    await leader.call('dsmLoad', { count: 500, concurrency: 16, prefix: 'warm' }, 120000);
    for (const { inFlight, count } of setLevels) {
      const r = await leader.call('dsmLoad', { count, concurrency: inFlight, prefix: `s${inFlight}` }, 600000);
      out.set.push({ inFlight, ...summarize(r.latencies, r.elapsedMs, r.errors) });
    }
    await leader.call('dsmSet', { key: 'read-me', value: makeValue(0) });
    const follower = cluster.nodes.find((n) => n !== leader);
    for (const [where, node] of [['leader', leader], ['follower', follower]]) {
      const r = await node.call('dsmReadLoad', { count: getCount, concurrency: 1, key: 'read-me' }, 600000);
      out.get[where] = summarize(r.latencies, r.elapsedMs, r.errors);
    }
  } finally {
    await cluster.stop();
  }
  return out;
}

async function benchEtcd({ setLevels, getCount }) {
  const skipped = etcdUnavailable();
  if (skipped) return { skipped };
  const etcd = await new EtcdCluster().start();
  const client = etcd.client;
  const out = { set: [], get: {} };
  try {
    await closedLoop(500, 16, (n) => putValue(client, `warm/${n}`, n));
    for (const { inFlight, count } of setLevels) {
      out.set.push({ inFlight, ...(await closedLoop(count, inFlight, (n) => putValue(client, `s${inFlight}/${n}`, n))) });
    }
    await putValue(client, 'read-me', 0);
    // etcd's default range request is linearizable (serializable: false), as ours is here.
    out.get.leader = await closedLoop(getCount, 1, () => client.get('read-me').string());
  } finally {
    await etcd.stop();
  }
  return out;
}

/** Runs both and returns the figures with ratios (ours / etcd's) where both exist. */
async function benchState({ scale = 1, withEtcd = true } = {}) {
  const setLevels = [
    { inFlight: 1, count: Math.max(50, Math.round(1000 * scale)) },
    { inFlight: 100, count: Math.max(500, Math.round(20000 * scale)) },
  ];
  const getCount = Math.max(100, Math.round(2000 * scale));
  const ours = await benchOurs({ setLevels, getCount });
  const etcd = withEtcd ? await benchEtcd({ setLevels, getCount }) : { skipped: 'run with --vs-etcd to measure etcd beside it' };
  const ratios = {};
  if (!etcd.skipped) {
    for (const l of ours.set) {
      const e = etcd.set.find((x) => x.inFlight === l.inFlight);
      if (e) ratios[`set ${l.inFlight} in flight ops/s`] = round(l.opsPerSec / e.opsPerSec, 2);
      if (e) ratios[`set ${l.inFlight} in flight p50 latency`] = round(l.p50Ms / e.p50Ms, 2);
    }
    ratios['linearizable get p50 (leader)'] = round(ours.get.leader.p50Ms / etcd.get.leader.p50Ms, 2);
    ratios['linearizable get p99 (leader)'] = round(ours.get.leader.p99Ms / etcd.get.leader.p99Ms, 2);
  }
  return { ours, etcd, ratios };
}

function printState(r) {
  const row = (name, x) =>
    `${name.padEnd(44)} ${x ? `${String(x.opsPerSec).padStart(7)} ops/s  p50 ${String(x.p50Ms).padStart(7)} ms  p99 ${String(x.p99Ms).padStart(7)} ms${Object.keys(x.errors).length ? `  errors ${JSON.stringify(x.errors)}` : ''}` : '-'}`;
  console.log('\nDistributedStateMachine (3 processes) beside etcd 3.4 (3 members), same run');
  for (const l of r.ours.set) console.log(row(`state.set, ${l.inFlight} in flight`, l));
  console.log(row('state.get linearizable, from the leader', r.ours.get.leader));
  console.log(row('state.get linearizable, from a follower', r.ours.get.follower));
  if (r.etcd.skipped) {
    console.log(`etcd: skipped (${r.etcd.skipped})`);
    return;
  }
  for (const l of r.etcd.set) console.log(row(`etcd put, ${l.inFlight} in flight`, l));
  console.log(row('etcd get (linearizable)', r.etcd.get.leader));
  console.log('ratios, ours / etcd (throughput: higher is better; latency: lower is better):');
  for (const [k, v] of Object.entries(r.ratios)) console.log(`  ${k.padEnd(42)} ${v}`);
}

module.exports = { benchState, printState };

if (require.main === module) {
  const quick = process.argv.includes('--quick');
  benchState({ scale: quick ? 0.1 : 1 })
    .then((r) => {
      printState(r);
      const dir = path.join(__dirname, 'results');
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, 'state-latest.json'), `${JSON.stringify(r, null, 2)}\n`);
    })
    .catch((err) => {
      console.error(err);
      process.exitCode = 1;
    });
}
