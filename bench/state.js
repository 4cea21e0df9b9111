'use strict';
// The DistributedStateMachine's figures for `npm run bench`: `set` throughput and latency, and
// linearizable `get` latency (from the leader and from a follower), on a 3-process cluster; and,
// when an `etcd` binary is on PATH and the `etcd3` client can be loaded, etcd's put and
// linearizable get on the same workload in the same run, so the comparison is a ratio of two
// figures measured under the same load of this shared machine.
//
// The etcd3 client is not a dependency of this package: it is loaded from the working directory
// or from UNRDF_BENCH_ETCD3_DIR (a directory whose node_modules holds etcd3).
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Cluster, freePort } = require('../support/cluster');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const round = (x, d = 3) => (x === null || x === undefined ? null : Number(x.toFixed(d)));

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

function summarize(latencies, elapsedMs, errors = {}) {
  const sorted = Float64Array.from(latencies).sort();
  return {
    count: sorted.length,
    opsPerSec: Math.round((sorted.length / elapsedMs) * 1000),
    p50Ms: round(percentile(sorted, 50)),
    p99Ms: round(percentile(sorted, 99)),
    errors,
  };
}

/** The value every put/set writes: the size of a guide operation (about 250 bytes of JSON). */
function makeValue(n) {
  return {
    id: `task-${n}`,
    daemonId: `daemon-${(n % 8) + 1}`,
    type: 'data_import',
    payload: { sourceUrl: 'https://data.example.com/dataset', batchSize: 1000, format: 'csv', compression: 'gzip', destination: 's3://warehouse-bucket/imports/daily' },
    timestamp: Date.now(),
  };
}

async function closedLoop(count, concurrency, fn) {
  const latencies = [];
  const errors = {};
  let next = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const n = next++;
        const s = process.hrtime.bigint();
        try {
          await fn(n);
          latencies.push(Number(process.hrtime.bigint() - s) / 1e6);
        } catch (err) {
          const code = err.code || err.name || 'error';
          errors[code] = (errors[code] || 0) + 1;
        }
      }
    }),
  );
  return summarize(latencies, Number(process.hrtime.bigint() - t0) / 1e6, errors);
}

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

function findEtcd() {
  try {
    return execFileSync('sh', ['-c', 'command -v etcd'], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}

function loadEtcd3() {
  const dirs = [process.cwd(), process.env.UNRDF_BENCH_ETCD3_DIR].filter(Boolean);
  try {
    return require(require.resolve('etcd3', { paths: dirs }));
  } catch {
    return null;
  }
}

/** A 3-member etcd cluster on loopback, default durability, in a temporary directory. */
async function startEtcd(bin) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'unrdf-bench-etcd-'));
  const members = [];
  for (let i = 1; i <= 3; i++) members.push({ name: `n${i}`, client: await freePort(), peer: await freePort() });
  const initial = members.map((m) => `${m.name}=http://127.0.0.1:${m.peer}`).join(',');
  const procs = members.map((m) =>
    spawn(
      bin,
      [
        '--name', m.name,
        '--data-dir', path.join(root, `${m.name}.etcd`),
        '--listen-client-urls', `http://127.0.0.1:${m.client}`,
        '--advertise-client-urls', `http://127.0.0.1:${m.client}`,
        '--listen-peer-urls', `http://127.0.0.1:${m.peer}`,
        '--initial-advertise-peer-urls', `http://127.0.0.1:${m.peer}`,
        '--initial-cluster', initial,
        '--initial-cluster-token', `bench-${process.pid}`,
        '--initial-cluster-state', 'new',
      ],
      { stdio: ['ignore', 'ignore', 'ignore'] },
    ),
  );
  const stop = async () => {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
    await Promise.all(procs.map((p) => (p.exitCode === null ? new Promise((r) => p.once('exit', r)) : null)));
    fs.rmSync(root, { recursive: true, force: true });
  };
  return { endpoints: members.map((m) => `http://127.0.0.1:${m.client}`), stop };
}

async function benchEtcd({ setLevels, getCount }) {
  const bin = findEtcd();
  if (!bin) return { skipped: 'no etcd binary on PATH (Debian: apt-get install etcd-server)' };
  const etcd3 = loadEtcd3();
  if (!etcd3) return { skipped: 'the etcd3 client is not installed (npm install etcd3 in the working directory, or set UNRDF_BENCH_ETCD3_DIR)' };
  const cluster = await startEtcd(bin);
  const client = new etcd3.Etcd3({ hosts: cluster.endpoints });
  const out = { set: [], get: {} };
  try {
    const deadline = Date.now() + 30000;
    for (;;) {
      try {
        await client.put('ready').value('1');
        break;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`etcd did not become ready: ${err.message}`);
        await sleep(200);
      }
    }
    await closedLoop(500, 16, (n) => client.put(`warm/${n}`).value(JSON.stringify(makeValue(n))));
    for (const { inFlight, count } of setLevels) {
      out.set.push({ inFlight, ...(await closedLoop(count, inFlight, (n) => client.put(`s${inFlight}/${n}`).value(JSON.stringify(makeValue(n))))) });
    }
    await client.put('read-me').value(JSON.stringify(makeValue(0)));
    // etcd's default range request is linearizable (serializable: false), as ours is here.
    out.get.leader = await closedLoop(getCount, 1, () => client.get('read-me').string());
  } finally {
    client.close();
    await cluster.stop();
  }
  return out;
}

/** Runs both and returns the figures with ratios (ours / etcd's) where both exist. */
async function benchState({ scale = 1 } = {}) {
  const setLevels = [
    { inFlight: 1, count: Math.max(50, Math.round(1000 * scale)) },
    { inFlight: 100, count: Math.max(500, Math.round(20000 * scale)) },
  ];
  const getCount = Math.max(100, Math.round(2000 * scale));
  const ours = await benchOurs({ setLevels, getCount });
  const etcd = await benchEtcd({ setLevels, getCount });
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
