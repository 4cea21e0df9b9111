'use strict';
// `npm run bench`: throughput, latency, memory and failover on a 3-process loopback cluster with
// durable LMDB storage and default Raft timeouts. It reports numbers next to the targets and
// asserts nothing; it exits non-zero only if something crashes.
//
//   --quick         divide operation counts by 10 and run 3 failover trials instead of 5
//   --ops-scale=N   multiply operation counts by N (e.g. 0.5)
//   --no-op-ids     replicate without operationIds (no deduplication records)
//   --state-only    only the DistributedStateMachine figures (beside etcd's when it is on PATH)
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { buildOrExit: build } = require('../scripts/build');
const { Cluster } = require('../support/cluster');
const { benchState, printState } = require('./state');

const args = process.argv.slice(2);
const USAGE = `usage: npm run bench -- [options]

Runs a 3-process cluster on 127.0.0.1 with durable storage and prints throughput, latency, memory
and failover figures next to the targets, and writes them as JSON. The full run takes many minutes
on a small machine; --quick a tenth of the operations.

  --quick          divide operation counts by 10 and run 3 failover trials instead of 5
  --ops-scale=N    multiply operation counts by N (e.g. 0.5)
  --no-op-ids      replicate without operationIds (no deduplication records)
  -h, --help       print this and exit
`;
if (args.includes('--help') || args.includes('-h')) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const known = (a) => ['--quick', '--no-op-ids'].includes(a) || a.startsWith('--ops-scale=');
const unknown = args.find((a) => !known(a));
if (unknown !== undefined) {
  process.stderr.write(`unknown option ${unknown}\n\n${USAGE}`);
  process.exit(2);
}
const QUICK = args.includes('--quick');
const scaleArg = args.find((a) => a.startsWith('--ops-scale='));
const SCALE = (QUICK ? 0.1 : 1) * (scaleArg ? Number(scaleArg.split('=')[1]) : 1);
if (!(SCALE > 0)) throw new Error(`bad --ops-scale: ${scaleArg}`);
// Each command carries an operationId by default, as a daemon retrying safely would send.
const WITH_IDS = !args.includes('--no-op-ids');

// Defaults everywhere (timeouts, snapshotThreshold 1000): the targets are for the defaults.
const CONFIG = {};
const LEVELS = [
  { inFlight: 1, count: 2000 },
  { inFlight: 16, count: 20000 },
  { inFlight: 100, count: 40000 },
  { inFlight: 256, count: 40000 },
].map((l) => ({ ...l, count: Math.max(l.inFlight, Math.round(l.count * SCALE)) }));
// The same loads through the guide's ConsensusManager.replicateOperation (validation, idempotence
// bookkeeping, operation events to a daemon on every node) on a cluster running the guide's stack.
const GUIDE_LEVELS = [
  { inFlight: 1, count: 1000 },
  { inFlight: 100, count: 20000 },
  { inFlight: 256, count: 20000 },
].map((l) => ({ ...l, count: Math.max(l.inFlight, Math.round(l.count * SCALE)) }));
const WARMUP = { inFlight: 16, count: Math.max(100, Math.round(2000 * SCALE)) };
const FAILOVER_TRIALS = QUICK ? 3 : 5;
const FAILOVER_PROBE_MS = 5;
const FAILOVER_GIVE_UP_MS = 15000;

const TARGETS = {
  opsPerSec256: 25000,
  p99Ms256: 30,
  opsPerSec100: 20000,
  p50Ms1: 1,
  failoverMedianMs: 250,
  idleAddedMb: 15,
  afterLoadAddedMb: 60,
};

const RESULTS_DIR = path.join(__dirname, 'results');
const MB = 1024 * 1024;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const round = (x, digits = 2) => (x === null || x === undefined ? null : Number(x.toFixed(digits)));

/** kB fields of /proc/<pid>/status, in MB. */
function procStatusMb(pid) {
  const out = {};
  for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const m = /^(Vm\w+|Rss\w+):\s+(\d+) kB/.exec(line);
    if (m) out[m[1]] = Number(m[2]) / 1024;
  }
  return out;
}

/** Idle RSS of a bare Node process: the baseline the addon's cost is measured against. */
async function bareNodeRssMb() {
  const child = spawn(process.execPath, ['-e', 'setInterval(()=>{},1000)'], { stdio: 'ignore' });
  try {
    // Let it finish starting up, as the cluster nodes have by the time they are measured.
    await sleep(1000);
    const st = procStatusMb(child.pid);
    return { rssMb: round(st.VmRSS, 1), rssAnonMb: round(st.RssAnon, 1), rssFileMb: round(st.RssFile, 1) };
  } finally {
    child.kill('SIGKILL');
  }
}

/** RSS per node from the worker's own process.memoryUsage(), plus the kernel's peak (VmHWM). */
async function nodeMemory(cluster) {
  const out = {};
  for (const n of cluster.nodes) {
    const m = await n.call('memory');
    const status = procStatusMb(n.child.pid);
    out[n.nodeId] = {
      rssMb: round(m.rss / MB, 1),
      peakRssMb: round(status.VmHWM, 1),
      // The worker's own bookkeeping (one record per applied command) lives in the V8 heap.
      heapTotalMb: round(m.heapTotal / MB, 1),
      heapUsedMb: round(m.heapUsed / MB, 1),
      // LMDB is memory-mapped: pages it touches count in RSS as file-backed, not anonymous.
      rssAnonMb: round(status.RssAnon, 1),
      rssFileMb: round(status.RssFile, 1),
    };
  }
  return out;
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

async function runLevel(leader, { inFlight, count }, prefix, op = 'load') {
  const r = await leader.call(op, { count, concurrency: inFlight, prefix, withIds: WITH_IDS }, 600000);
  const sorted = Float64Array.from(r.latencies).sort();
  return {
    inFlight,
    count,
    acked: r.acked.length,
    errors: r.errors,
    elapsedMs: round(r.elapsedMs, 1),
    opsPerSec: Math.round((r.acked.length / r.elapsedMs) * 1000),
    p50Ms: round(percentile(sorted, 50), 3),
    p95Ms: round(percentile(sorted, 95), 3),
    p99Ms: round(percentile(sorted, 99), 3),
    maxMs: round(sorted[sorted.length - 1], 3),
  };
}

/**
 * One failover trial on a fresh cluster: kill -9 the leader, then keep proposing on every
 * survivor until one commits. Attempts are fired without waiting for earlier ones, so a write
 * stuck on a node that is not (or no longer) leader cannot delay the measurement.
 */
async function failoverTrial(trial) {
  const cluster = new Cluster(3, { config: CONFIG });
  try {
    await cluster.start();
    const leader = await cluster.form();
    // Steady state first: peers connected and a few entries replicated in the current term.
    await leader.call('load', { count: 200, concurrency: 16, prefix: `fo${trial}-warm` });
    await sleep(300);

    const survivors = cluster.nodes.filter((n) => n !== leader);
    const t0 = performance.now();
    const killedAt = Date.now(); // the clock cluster events are stamped with
    await leader.kill('SIGKILL');

    let seq = 0;
    let attempts = 0;
    const otherErrors = {};
    const inFlight = new Map(survivors.map((n) => [n, 0]));
    const committed = await new Promise((resolve) => {
      let done = false;
      const finish = (v) => {
        if (done) return;
        done = true;
        clearInterval(timer);
        clearTimeout(giveUp);
        resolve(v);
      };
      const probe = () => {
        for (const n of survivors) {
          // Bound the backlog on a node that accepts writes but cannot commit them yet.
          if (inFlight.get(n) >= 50) continue;
          inFlight.set(n, inFlight.get(n) + 1);
          attempts++;
          const operationId = `fo${trial}-probe-${seq++}`;
          n.call('replicate', { command: { type: 'failover-probe', trial }, operationId }, FAILOVER_GIVE_UP_MS)
            .then((r) => finish({ ms: performance.now() - t0, nodeId: n.nodeId, term: r.term }))
            .catch((err) => {
              if (err.code !== 'ERR_NOT_LEADER') otherErrors[err.code || err.message] = (otherErrors[err.code || err.message] || 0) + 1;
            })
            .finally(() => inFlight.set(n, inFlight.get(n) - 1));
        }
      };
      const timer = setInterval(probe, FAILOVER_PROBE_MS);
      const giveUp = setTimeout(() => finish(null), FAILOVER_GIVE_UP_MS);
      probe();
    });
    // Copied now: attempts still pending fail with "exited" once the cluster stops.
    const errors = { ...otherErrors };
    // Splits the time into election and first commit (ms precision, as events are stamped).
    const elected = survivors
      .flatMap((n) => n.events)
      .filter((e) => e.name === 'leader_elected' && e.at >= killedAt && e.payload.leaderId !== leader.nodeId)
      .map((e) => e.at - killedAt);
    const electedMs = elected.length ? Math.min(...elected) : null;
    return committed
      ? { trial, ms: round(committed.ms, 1), electedMs, newLeader: committed.nodeId, term: committed.term, attempts, otherErrors: errors }
      : { trial, ms: null, error: `no commit within ${FAILOVER_GIVE_UP_MS} ms`, attempts, otherErrors: errors };
  } finally {
    await cluster.stop();
  }
}

function median(values) {
  const v = values.filter((x) => x !== null).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

function fmt(x, digits = 1) {
  if (x === null || x === undefined) return 'n/a';
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function printTable(r) {
  const rows = [];
  const meets = (ok) => (ok === null ? '' : ok ? 'yes' : 'NO');
  const level = (n) => r.load.find((l) => l.inFlight === n);
  const errs = (l) => Object.entries(l.errors).map(([k, v]) => `${k}:${v}`).join(' ') || '0';

  for (const l of r.load) {
    rows.push([
      `${l.inFlight} in flight (${l.count} ops)`,
      `${fmt(l.opsPerSec, 0)} ops/s  p50 ${fmt(l.p50Ms, 2)}  p95 ${fmt(l.p95Ms, 2)}  p99 ${fmt(l.p99Ms, 2)} ms  errors ${errs(l)}`,
      '',
      '',
    ]);
  }
  for (const l of r.guide) {
    rows.push([
      `replicateOperation ${l.inFlight} in flight (${l.count} ops)`,
      `${fmt(l.opsPerSec, 0)} ops/s  p50 ${fmt(l.p50Ms, 2)}  p95 ${fmt(l.p95Ms, 2)}  p99 ${fmt(l.p99Ms, 2)} ms  errors ${errs(l)}`,
      '',
      '',
    ]);
  }
  const l256 = level(256);
  const l100 = level(100);
  const l1 = level(1);
  rows.push(['256 in flight throughput', `${fmt(l256.opsPerSec, 0)} ops/s`, `>= ${fmt(TARGETS.opsPerSec256, 0)}`, meets(l256.opsPerSec >= TARGETS.opsPerSec256)]);
  rows.push(['256 in flight p99', `${fmt(l256.p99Ms, 2)} ms`, `<= ${TARGETS.p99Ms256}`, meets(l256.p99Ms <= TARGETS.p99Ms256)]);
  rows.push(['100 in flight throughput', `${fmt(l100.opsPerSec, 0)} ops/s`, `>= ${fmt(TARGETS.opsPerSec100, 0)}`, meets(l100.opsPerSec >= TARGETS.opsPerSec100)]);
  rows.push(['sequential p50', `${fmt(l1.p50Ms, 3)} ms`, `<= ${TARGETS.p50Ms1}`, meets(l1.p50Ms <= TARGETS.p50Ms1)]);
  const fo = r.failover;
  rows.push([
    `failover median (${fo.trials.length} trials)`,
    `${fmt(fo.medianMs)} ms  [${fo.trials.map((t) => (t.ms === null ? 'fail' : fmt(t.ms))).join(', ')}]`,
    `<= ${TARGETS.failoverMedianMs}`,
    meets(fo.medianMs === null ? false : fo.medianMs <= TARGETS.failoverMedianMs),
  ]);
  const m = r.memory;
  rows.push(['bare node idle RSS', `${fmt(m.bareNodeRssMb)} MB`, '', '']);
  for (const id of Object.keys(m.idle)) {
    rows.push([
      `${id} RSS idle / after load / peak`,
      `${fmt(m.idle[id].rssMb)} / ${fmt(m.afterLoad[id].rssMb)} / ${fmt(m.afterLoad[id].peakRssMb)} MB  (V8 heap after load ${fmt(m.afterLoad[id].heapTotalMb)} MB)`,
      '',
      '',
    ]);
  }
  rows.push(['addon RSS above bare node, idle (max node)', `${fmt(m.idleAddedMb)} MB`, `<= ${TARGETS.idleAddedMb}`, meets(m.idleAddedMb <= TARGETS.idleAddedMb)]);
  rows.push([
    `... after ${fmt(r.totalOps, 0)} ops (max node)`,
    `${fmt(m.afterLoadAddedMb)} MB`,
    `<= ${TARGETS.afterLoadAddedMb}`,
    meets(m.afterLoadAddedMb <= TARGETS.afterLoadAddedMb),
  ]);
  const lg = r.leaderLog;
  rows.push([
    'leader log length after load',
    `${fmt(lg.logLength, 0)} entries (lastLogIndex ${fmt(lg.lastLogIndex, 0)}, snapshot at ${fmt(lg.snapshotIndex, 0)})`,
    'bounded',
    '',
  ]);

  const header = ['measurement', 'result', 'target', 'meets'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells) => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  console.log();
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const row of rows) console.log(line(row));
  console.log();
}

async function main() {
  build();
  if (args.includes('--state-only')) {
    const state = await benchState({ scale: SCALE });
    printState(state);
    fs.mkdirSync(RESULTS_DIR, { recursive: true });
    fs.writeFileSync(path.join(RESULTS_DIR, 'state-latest.json'), `${JSON.stringify(state, null, 2)}\n`);
    return;
  }
  const results = {
    startedAt: new Date().toISOString(),
    machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, totalMemMb: Math.round(os.totalmem() / MB), node: process.version },
    options: { quick: QUICK, opsScale: SCALE, operationIds: WITH_IDS, config: CONFIG },
    targets: TARGETS,
  };

  const bareNode = await bareNodeRssMb();
  const bareNodeRss = bareNode.rssMb;

  const cluster = new Cluster(3, { config: CONFIG });
  try {
    await cluster.start();
    const leader = await cluster.form();
    // Give the just-formed cluster a moment to settle before calling it idle.
    await sleep(1000);
    const idle = await nodeMemory(cluster);
    console.log(`cluster formed, leader ${leader.nodeId}; bare node ${fmt(bareNodeRss)} MB, idle nodes ${Object.values(idle).map((m) => fmt(m.rssMb)).join(' / ')} MB`);

    let totalOps = 0;
    const warm = await runLevel(leader, WARMUP, 'warmup');
    totalOps += warm.acked;
    console.log(`warm-up: ${warm.acked} ops at ${WARMUP.inFlight} in flight, ${fmt(warm.opsPerSec, 0)} ops/s`);

    const load = [];
    for (const level of LEVELS) {
      const r = await runLevel(leader, level, `c${level.inFlight}`);
      totalOps += r.acked;
      load.push(r);
      console.log(
        `${String(level.inFlight).padStart(3)} in flight: ${fmt(r.opsPerSec, 0)} ops/s, p50 ${fmt(r.p50Ms, 2)} p95 ${fmt(r.p95Ms, 2)} p99 ${fmt(r.p99Ms, 2)} ms, errors ${JSON.stringify(r.errors)}`,
      );
    }

    const afterLoad = await nodeMemory(cluster);
    const s = await leader.call('state');
    const maxAdded = (mem) => Math.max(...Object.values(mem).map((m) => m.rssMb)) - bareNodeRss;
    Object.assign(results, {
      warmup: warm,
      load,
      totalOps,
      leaderLog: { logLength: s.logLength, lastLogIndex: s.lastLogIndex, snapshotIndex: s.snapshotIndex },
      memory: {
        bareNodeRssMb: bareNodeRss,
        bareNode,
        idle,
        afterLoad,
        idleAddedMb: round(maxAdded(idle), 1),
        afterLoadAddedMb: round(maxAdded(afterLoad), 1),
      },
    });
  } finally {
    await cluster.stop();
  }

  const guideCluster = new Cluster(3, { config: CONFIG, guide: {} });
  try {
    await guideCluster.start();
    const leader = await guideCluster.form();
    await runLevel(leader, WARMUP, 'guide-warmup', 'guideLoad');
    results.guide = [];
    for (const level of GUIDE_LEVELS) {
      const r = await runLevel(leader, level, `g${level.inFlight}`, 'guideLoad');
      results.guide.push(r);
      console.log(`replicateOperation ${String(level.inFlight).padStart(3)} in flight: ${fmt(r.opsPerSec, 0)} ops/s, p50 ${fmt(r.p50Ms, 2)} p99 ${fmt(r.p99Ms, 2)} ms`);
    }
  } finally {
    await guideCluster.stop();
  }

  const trials = [];
  for (let i = 1; i <= FAILOVER_TRIALS; i++) {
    const t = await failoverTrial(i);
    trials.push(t);
    console.log(
      `failover trial ${i}: ${t.ms === null ? t.error : `${fmt(t.ms)} ms (leader_elected seen at ${t.electedMs} ms), new leader ${t.newLeader}`}`,
    );
  }
  results.failover = { trials, medianMs: round(median(trials.map((t) => t.ms)), 1) };
  results.finishedAt = new Date().toISOString();

  printTable(results);
  results.state = await benchState({ scale: SCALE });
  printState(results.state);
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  const out = path.join(RESULTS_DIR, 'latest.json');
  fs.writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);
  console.log(`results written to ${path.relative(process.cwd(), out)}`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
