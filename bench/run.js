'use strict';
// `npm run bench`: throughput, latency, memory and failover on a 3-process loopback cluster with
// durable LMDB storage and default Raft timeouts, through the bare engine (replicateCommand) and
// through the guide's path (ConsensusManager.replicateOperation). It reports numbers next to the
// targets, beside etcd's with --vs-etcd, and asserts nothing; it exits non-zero only if something
// crashes. Options: see USAGE below.
const { fork, spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { buildOrExit: build } = require('../scripts/build');
const { Cluster, freePort, tempRoot } = require('../support/cluster');
const { benchState, printState } = require('./state');
const { benchEtcd, etcdUnavailable } = require('./etcd');
const { runSoak } = require('./soak');
const { split, printSplit } = require('./split');
const { flameUnavailable, flameNodeArgs, withFlameGraph, shares, COST_CENTRES } = require('./flame');
const { MB, sleep, round, summarize, procStatusMb, threadCpuUs, cpuPerOpUs, median, fmt, printRows } = require('./measure');

const args = process.argv.slice(2);
const USAGE = `usage: npm run bench -- [options]

Runs a 3-process cluster on 127.0.0.1 with durable storage and prints throughput, latency, memory
and failover figures next to the targets, and writes them as JSON. The full run takes many minutes
on a small machine; --quick a tenth of the operations.

  --quick          divide operation counts by 10 and run 3 failover trials instead of 5
  --ops-scale=N    multiply operation counts by N (e.g. 0.5)
  --no-op-ids      replicate without operationIds (no deduplication records)
  --state-only     only the DistributedStateMachine figures (beside etcd's when it can run)
  --vs-etcd        also run etcd 3.4 (3 members, default durability) on the same workload in the
                   same run and print every figure as a ratio to etcd's; needs \`etcd\` on PATH
                   (Debian: etcd-server) and the etcd3 client (npm install etcd3); without them
                   it says so and skips etcd
  --soak MINUTES   instead: a fixed rate through replicateOperation for MINUTES, a follower
                   killed for 60 s every 5 minutes, and a table per minute
  --rate=N         the soak's rate in operations per second (default 3000)
  --link-delay-ms=N
                   hold back every request between nodes N ms, as a network's round trip
                   would (loopback has none); through the package's fault hooks
  --flame DIR      also sample the leader's process with perf during each level and write a
                   flame graph per level and path to DIR (needs perf and inferno)
  -h, --help       print this and exit
`;
if (args.includes('--help') || args.includes('-h')) {
  process.stdout.write(USAGE);
  process.exit(0);
}
function usageError(message) {
  process.stderr.write(`${message}\n\n${USAGE}`);
  process.exit(2);
}
const soakAt = args.indexOf('--soak');
const SOAK_MINUTES = soakAt === -1 ? null : Number(args[soakAt + 1]);
if (soakAt !== -1 && !(SOAK_MINUTES > 0)) usageError('--soak needs a number of minutes, e.g. --soak 30');
const flameAt = args.indexOf('--flame');
const FLAME_DIR = flameAt === -1 ? null : args[flameAt + 1];
if (flameAt !== -1 && (!FLAME_DIR || FLAME_DIR.startsWith('--'))) usageError('--flame needs a directory, e.g. --flame flames');
if (FLAME_DIR && flameUnavailable()) usageError(`--flame: ${flameUnavailable()}`);
const rateArg = args.find((a) => a.startsWith('--rate='));
const SOAK_RATE = rateArg ? Number(rateArg.slice('--rate='.length)) : 3000;
if (!(SOAK_RATE > 0)) usageError(`bad ${rateArg}`);
const known = (a, i) =>
  ['--quick', '--no-op-ids', '--state-only', '--vs-etcd', '--soak', '--flame'].includes(a) ||
  (flameAt !== -1 && i === flameAt + 1) ||
  a.startsWith('--ops-scale=') ||
  a.startsWith('--rate=') ||
  a.startsWith('--link-delay-ms=') ||
  (soakAt !== -1 && i === soakAt + 1);
const unknown = args.find((a, i) => !known(a, i));
if (unknown !== undefined) usageError(`unknown option ${unknown}`);
const QUICK = args.includes('--quick');
const scaleArg = args.find((a) => a.startsWith('--ops-scale='));
const SCALE = (QUICK ? 0.1 : 1) * (scaleArg ? Number(scaleArg.slice('--ops-scale='.length)) : 1);
if (!(SCALE > 0)) usageError(`bad ${scaleArg}`);
// Each command carries an operationId by default, as a daemon retrying safely would send.
const WITH_IDS = !args.includes('--no-op-ids');
const VS_ETCD = args.includes('--vs-etcd');

// Defaults everywhere (timeouts, snapshotThreshold 1000): the targets are for the defaults.
const CONFIG = {};
const scaled = (levels) => levels.map((l) => ({ ...l, count: Math.max(l.inFlight, Math.round(l.count * SCALE)) }));
// The same levels for both paths and for etcd, so every figure has a counterpart.
const LEVELS = scaled([
  { inFlight: 1, count: 2000 },
  { inFlight: 16, count: 20000 },
  { inFlight: 100, count: 40000 },
  { inFlight: 256, count: 40000 },
]);
const WARMUP = { inFlight: 16, count: Math.max(100, Math.round(2000 * SCALE)) };
const FAILOVER_TRIALS = QUICK ? 3 : 5;
const FAILOVER_PROBE_MS = 5;
const FAILOVER_GIVE_UP_MS = 15000;
// Nodes keep nothing per operation for the harness, and the guide cluster's daemon only counts:
// the memory measured is the package's.
const delayArg = args.find((a) => a.startsWith('--link-delay-ms='));
const LINK_DELAY_MS = delayArg ? Number(delayArg.slice('--link-delay-ms='.length)) : 0;
if (!(Number.isInteger(LINK_DELAY_MS) && LINK_DELAY_MS >= 0)) usageError(`bad ${delayArg}`);
const LINK_DELAY_ENV = LINK_DELAY_MS ? { env: { UNRDF_CONSENSUS_FAULT_HOOKS: '1', UNRDF_CONSENSUS_LINK_DELAY_MS: String(LINK_DELAY_MS) } } : {};
if (LINK_DELAY_MS && (args.includes('--vs-etcd') || soakAt !== -1 || args.includes('--state-only'))) {
  usageError('--link-delay-ms applies to the levels and failover of this package alone, not with --vs-etcd, --soak or --state-only');
}
const NODE_OPTIONS = { initArgs: { record: false }, ...LINK_DELAY_ENV, ...(FLAME_DIR ? { nodeArgs: flameNodeArgs(FLAME_DIR) } : {}) };
const PATHS = [
  { key: 'command', title: 'replicateCommand', op: 'load', guide: null },
  { key: 'operation', title: 'replicateOperation', op: 'guideLoad', guide: { daemonStyle: 'counting' } },
];

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

/** Idle RSS of a bare Node process: the baseline the addon's cost is measured against. */
async function bareNodeRssMb() {
  const child = spawn(process.execPath, ['-e', 'setInterval(()=>{},1000)'], { stdio: 'ignore' });
  try {
    // Let it finish starting up, as the cluster nodes have by the time they are measured.
    await sleep(1000);
    const st = procStatusMb(child.pid);
    return { rssMb: st.VmRSS, rssAnonMb: st.RssAnon, rssFileMb: st.RssFile };
  } finally {
    child.kill('SIGKILL');
  }
}

/** The largest RSS among a cluster's nodes, in MB (etcd's members report `VmRSS`, ours `rssMb`). */
const maxRssMb = (mem) => Math.max(...Object.values(mem).map((m) => m.VmRSS ?? m.rssMb));

/**
 * Idle RSS of each node of a 3-process cluster running the guide's stack and nothing else
 * (`idle-node.js`), 1 s after every node knows its leader, as the other idle figures are taken.
 */
async function guideStackIdle() {
  const root = tempRoot('unrdf-bench-idle-');
  const initialMembers = [];
  for (const nodeId of ['node-1', 'node-2', 'node-3']) initialMembers.push({ nodeId, host: '127.0.0.1', port: await freePort() });
  const nodes = initialMembers.map(({ nodeId }) => ({ nodeId, child: fork(path.join(__dirname, 'idle-node.js'), [], { stdio: 'inherit' }) }));
  try {
    await Promise.all(
      nodes.map(({ nodeId, child }) => {
        const formed = new Promise((resolve, reject) => {
          child.once('message', resolve);
          child.once('exit', (code, signal) => reject(new Error(`idle node ${nodeId} exited (${code ?? signal})`)));
        });
        child.send({ nodeId, initialMembers, dataDir: path.join(root, nodeId) });
        return formed;
      }),
    );
    await sleep(1000);
    const out = {};
    for (const { nodeId, child } of nodes) {
      const st = procStatusMb(child.pid);
      out[nodeId] = { rssMb: st.VmRSS, rssAnonMb: st.RssAnon, rssFileMb: st.RssFile };
    }
    return out;
  } finally {
    for (const { child } of nodes) child.kill('SIGKILL');
    fs.rmSync(root, { recursive: true, force: true });
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
      peakRssMb: status.VmHWM,
      heapTotalMb: round(m.heapTotal / MB, 1),
      heapUsedMb: round(m.heapUsed / MB, 1),
      // LMDB is memory-mapped: pages it touches count in RSS as file-backed, not anonymous.
      rssAnonMb: status.RssAnon,
      rssFileMb: status.RssFile,
    };
  }
  return out;
}

/** How long a path's cluster is given, at most, to give back the V8 heap its load grew. */
const SETTLE_GIVE_UP_MS = 60000;
/** A node's V8 heap counts as given back once no more than this much of it is unused. */
const HEAP_HEADROOM_SETTLED_MB = 8;

/**
 * Memory once the load has ended and V8 has given back the heap it grew: under load, V8 grows its
 * heap (the young generation most) far past what is live, and its memory reducer returns that only
 * after the process has been idle for a while (20-30 s here). Both figures are printed: the one
 * right after the load, and this one, with how long it took.
 */
async function settledMemory(cluster) {
  const t0 = performance.now();
  for (;;) {
    const mem = await nodeMemory(cluster);
    const settled = Object.values(mem).every((m) => m.heapTotalMb - m.heapUsedMb <= HEAP_HEADROOM_SETTLED_MB);
    const waitedMs = performance.now() - t0;
    if (settled || waitedMs >= SETTLE_GIVE_UP_MS) return { mem, afterMs: settled ? round(waitedMs, 0) : null };
    await sleep(1000);
  }
}

/**
 * One load level from inside the leader's process, with the term and leader before and after:
 * leadership must not move while a busy leader works.
 */
async function runLevel(cluster, leader, { inFlight, count }, prefix, op, flameName = null) {
  const before = await leader.call('state');
  const cpuByRole = () => ({
    leader: [threadCpuUs(leader.child.pid)],
    followers: cluster.nodes.filter((n) => n !== leader).map((n) => threadCpuUs(n.child.pid)),
  });
  const cpuBefore = cpuByRole();
  const load = () => leader.call(op, { count, concurrency: inFlight, prefix, withIds: WITH_IDS }, 600000);
  const r = FLAME_DIR && flameName ? await withFlameGraph(FLAME_DIR, flameName, leader.child.pid, load) : await load();
  const cpuPerWriteUs = cpuPerOpUs(cpuBefore, cpuByRole(), Math.max(1, r.latencies.length));
  const after = await leader.call('state');
  return {
    inFlight,
    count,
    ...summarize(r.latencies, r.elapsedMs, r.errors),
    cpuPerWriteUs,
    termBefore: before.term,
    termAfter: after.term,
    leaderAfter: after.leaderId,
    termChanged: before.term !== after.term || after.leaderId !== leader.nodeId,
  };
}

/** CPU per write of every process, by the threads it ran on (see `threadCpuUs`). */
function cpuLine(cpu) {
  const part = (role) => ['node', 'tokio', 'logWriter'].map((kind) => `${kind} ${fmt(cpu[`${role}.${kind}`]?.us ?? 0, 1)}`).join(', ');
  return `CPU per write ${fmt(cpu.total, 1)} us (leader: ${part('leader')}; followers: ${part('followers')})`;
}

const levelLine = (title, l) =>
  `${title} ${String(l.inFlight).padStart(3)} in flight: ${fmt(l.opsPerSec, 0)} ops/s, p50 ${fmt(l.p50Ms, 2)} p95 ${fmt(l.p95Ms, 2)} ` +
  `p99 ${fmt(l.p99Ms, 2)} ms, errors ${JSON.stringify(l.errors)}, term ${l.termBefore}${l.termChanged ? ` -> ${l.termAfter} (CHANGED)` : ''}\n` +
  `    ${cpuLine(l.cpuPerWriteUs)}`;

/** Both paths on a fresh cluster each: idle memory, the levels, memory after load. */
async function benchPath(p, bareNodeRss) {
  const cluster = new Cluster(3, { config: CONFIG, guide: p.guide, nodeOptions: NODE_OPTIONS });
  try {
    await cluster.start();
    const leader = await cluster.form();
    // Give the just-formed cluster a moment to settle before calling it idle.
    await sleep(1000);
    const idle = await nodeMemory(cluster);
    console.log(`${p.title}: cluster formed, leader ${leader.nodeId}; idle nodes ${Object.values(idle).map((m) => fmt(m.rssMb)).join(' / ')} MB`);
    const warm = await runLevel(cluster, leader, WARMUP, `${p.key}-warmup`, p.op);
    let totalOps = warm.acked;
    const load = [];
    for (const level of LEVELS) {
      const r = await runLevel(cluster, leader, level, `${p.key}-c${level.inFlight}`, p.op, `${p.title}-${level.inFlight}-in-flight`);
      totalOps += r.acked;
      load.push(r);
      console.log(levelLine(p.title, r));
    }
    const afterLoad = await nodeMemory(cluster);
    const settled = await settledMemory(cluster);
    const s = await leader.call('state');
    const maxAdded = (mem) => maxRssMb(mem) - bareNodeRss;
    return {
      load,
      totalOps,
      termChanges: load.filter((l) => l.termChanged).length,
      leaderLog: { logLength: s.logLength, lastLogIndex: s.lastLogIndex, snapshotIndex: s.snapshotIndex },
      memory: {
        idle,
        afterLoad,
        settled: settled.mem,
        settledAfterMs: settled.afterMs,
        idleAddedMb: round(maxAdded(idle), 1),
        afterLoadAddedMb: round(maxAdded(afterLoad), 1),
        settledAddedMb: round(maxAdded(settled.mem), 1),
      },
    };
  } finally {
    await cluster.stop();
  }
}

/**
 * One failover trial on a fresh cluster: kill -9 the leader, then keep proposing on every
 * survivor until one commits. Attempts are fired without waiting for earlier ones, so a write
 * stuck on a node that is not (or no longer) leader cannot delay the measurement.
 */
async function failoverTrial(trial) {
  const cluster = new Cluster(3, { config: CONFIG, nodeOptions: { initArgs: { record: false }, ...LINK_DELAY_ENV } });
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

function printTable(r) {
  const rows = [];
  const meets = (ok) => (ok === null ? '' : ok ? 'yes' : 'NO');
  const op = r.paths.operation;
  const level = (n) => op.load.find((l) => l.inFlight === n);
  const l256 = level(256);
  const l100 = level(100);
  const l1 = level(1);
  rows.push(['replicateOperation 256 in flight', `${fmt(l256.opsPerSec, 0)} ops/s`, `>= ${fmt(TARGETS.opsPerSec256, 0)}`, meets(l256.opsPerSec >= TARGETS.opsPerSec256)]);
  rows.push(['replicateOperation 256 in flight p99', `${fmt(l256.p99Ms, 2)} ms`, `<= ${TARGETS.p99Ms256}`, meets(l256.p99Ms <= TARGETS.p99Ms256)]);
  rows.push(['replicateOperation 100 in flight', `${fmt(l100.opsPerSec, 0)} ops/s`, `>= ${fmt(TARGETS.opsPerSec100, 0)}`, meets(l100.opsPerSec >= TARGETS.opsPerSec100)]);
  rows.push(['replicateOperation sequential p50', `${fmt(l1.p50Ms, 3)} ms`, `<= ${TARGETS.p50Ms1}`, meets(l1.p50Ms <= TARGETS.p50Ms1)]);
  const fo = r.failover;
  rows.push([
    `failover median (${fo.trials.length} trials)`,
    `${fmt(fo.medianMs)} ms  [${fo.trials.map((t) => (t.ms === null ? 'fail' : fmt(t.ms))).join(', ')}]`,
    `<= ${TARGETS.failoverMedianMs}`,
    meets(fo.medianMs === null ? false : fo.medianMs <= TARGETS.failoverMedianMs),
  ]);
  rows.push(['bare node idle RSS', `${fmt(r.bareNode.rssMb)} MB`, '', '']);
  const guideIdle = r.guideStackIdle.addedMb;
  rows.push([`the guide's stack alone: RSS above bare node, idle (max node)`, `${fmt(guideIdle)} MB`, `<= ${TARGETS.idleAddedMb}`, meets(guideIdle <= TARGETS.idleAddedMb)]);
  for (const p of PATHS) {
    const m = r.paths[p.key].memory;
    rows.push([`${p.title}: ... idle, with the benchmark's worker code`, `${fmt(m.idleAddedMb)} MB`, '', '']);
    rows.push([
      `${p.title}: ... right after ${fmt(r.paths[p.key].totalOps, 0)} ops (max node)`,
      `${fmt(m.afterLoadAddedMb)} MB`,
      `<= ${TARGETS.afterLoadAddedMb}`,
      meets(m.afterLoadAddedMb <= TARGETS.afterLoadAddedMb),
    ]);
    rows.push([
      `${p.title}: ... once V8 gave back the heap the load grew (max node)`,
      `${fmt(m.settledAddedMb)} MB, ${m.settledAfterMs === null ? `not given back within ${SETTLE_GIVE_UP_MS / 1000} s` : `${fmt(m.settledAfterMs / 1000, 0)} s after the load`}`,
      `<= ${TARGETS.afterLoadAddedMb}`,
      meets(m.settledAddedMb <= TARGETS.afterLoadAddedMb),
    ]);
  }
  const termChanges = PATHS.reduce((a, p) => a + r.paths[p.key].termChanges, 0);
  rows.push(['load levels during which the term changed', String(termChanges), '0', meets(termChanges === 0)]);
  console.log();
  printRows(['measurement', 'result', 'target', 'meets'], rows);
  console.log();
}

/** Every figure of both paths as a ratio to etcd's from the same run. */
function etcdRatios(r) {
  if (!r.etcd || r.etcd.skipped) return null;
  const ratio = (ours, theirs) => (ours === null || theirs === null || !theirs ? null : round(ours / theirs, 2));
  const levels = LEVELS.map(({ inFlight }) => {
    const e = r.etcd.load.find((l) => l.inFlight === inFlight);
    const etcdCpu = e.cpuPerWriteUs ? e.cpuPerWriteUs.total : null;
    const row = { inFlight, etcd: { opsPerSec: e.opsPerSec, p50Ms: e.p50Ms, p99Ms: e.p99Ms, cpuUs: etcdCpu } };
    for (const p of PATHS) {
      const o = r.paths[p.key].load.find((l) => l.inFlight === inFlight);
      const cpuUs = o.cpuPerWriteUs ? o.cpuPerWriteUs.total : null;
      row[p.key] = {
        opsPerSec: o.opsPerSec,
        p50Ms: o.p50Ms,
        p99Ms: o.p99Ms,
        cpuUs,
        opsRatio: ratio(o.opsPerSec, e.opsPerSec),
        p50Ratio: ratio(o.p50Ms, e.p50Ms),
        p99Ratio: ratio(o.p99Ms, e.p99Ms),
        cpuRatio: ratio(cpuUs, etcdCpu),
      };
    }
    return row;
  });
  const etcdFailover = median(r.etcd.failover.map((t) => t.ms));
  const memory = {};
  for (const p of PATHS) {
    const m = r.paths[p.key].memory;
    memory[p.key] = {
      idleRatio: ratio(maxRssMb(m.idle), maxRssMb(r.etcd.memory.idle)),
      afterLoadRatio: ratio(maxRssMb(m.afterLoad), maxRssMb(r.etcd.memory.afterLoad)),
    };
  }
  return { levels, failover: { oursMs: r.failover.medianMs, etcdMs: etcdFailover, ratio: ratio(r.failover.medianMs, etcdFailover) }, memory };
}

function printEtcd(r) {
  if (!r.etcd) return;
  if (r.etcd.skipped) {
    console.log(`etcd side by side: skipped (${r.etcd.skipped})\n`);
    return;
  }
  const x = r.etcdRatios;
  const times = (v) => (v === null ? 'n/a' : `${fmt(v, 2)}x`);
  console.log('Beside etcd 3.4 in the same run (ratio = ours / etcd; throughput: higher is better, latency, CPU and memory: lower is better)');
  console.log('CPU: microseconds of CPU per write, every process of the cluster and the client that drives it together');
  const rows = [];
  for (const l of x.levels) {
    rows.push([
      `${l.inFlight} in flight`,
      `${fmt(l.etcd.opsPerSec, 0)} ops/s, p50 ${fmt(l.etcd.p50Ms, 2)}, p99 ${fmt(l.etcd.p99Ms, 2)}, CPU ${fmt(l.etcd.cpuUs, 1)} us`,
      ...PATHS.map(
        (p) =>
          `${fmt(l[p.key].opsPerSec, 0)} (${times(l[p.key].opsRatio)}), p50 ${fmt(l[p.key].p50Ms, 2)} (${times(l[p.key].p50Ratio)}), ` +
          `p99 ${fmt(l[p.key].p99Ms, 2)} (${times(l[p.key].p99Ratio)}), CPU ${fmt(l[p.key].cpuUs, 1)} us (${times(l[p.key].cpuRatio)})`,
      ),
    ]);
  }
  // One failover figure serves both paths: the kill and the election happen below either.
  rows.push(['failover median ms', fmt(x.failover.etcdMs), ...PATHS.map(() => `${fmt(x.failover.oursMs)} (${times(x.failover.ratio)})`)]);
  rows.push([
    'RSS per node idle / after load, MB',
    `${fmt(maxRssMb(r.etcd.memory.idle))} / ${fmt(maxRssMb(r.etcd.memory.afterLoad))}`,
    ...PATHS.map((p) => {
      const m = r.paths[p.key].memory;
      return `${fmt(maxRssMb(m.idle))} (${times(x.memory[p.key].idleRatio)}) / ${fmt(maxRssMb(m.afterLoad))} (${times(x.memory[p.key].afterLoadRatio)})`;
    }),
  ]);
  printRows(['level', 'etcd', ...PATHS.map((p) => p.title)], rows);
  console.log();
}

/** The cost centres of every level's flame graph, as shares of the leader's samples. */
function printFlameShares() {
  const names = Object.keys(COST_CENTRES);
  const rows = [];
  for (const p of PATHS) {
    for (const { inFlight } of LEVELS) {
      const file = path.join(FLAME_DIR, `${p.title}-${inFlight}-in-flight.folded`);
      if (!fs.existsSync(file)) continue;
      const r = shares(file, COST_CENTRES);
      rows.push([`${p.title}, ${inFlight} in flight`, ...names.map((n) => `${Math.round(r.shares[n] * 100)}%`)]);
    }
  }
  console.log(`Where the leader's CPU went (flame graphs in ${FLAME_DIR})`);
  printRows(['level', ...names], rows);
  console.log();
}

async function main() {
  build();
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  if (SOAK_MINUTES !== null) {
    await runSoak({ minutes: SOAK_MINUTES, rate: SOAK_RATE, resultsDir: RESULTS_DIR });
    return;
  }
  if (args.includes('--state-only')) {
    const state = await benchState({ scale: SCALE });
    printState(state);
    fs.writeFileSync(path.join(RESULTS_DIR, 'state-latest.json'), `${JSON.stringify(state, null, 2)}\n`);
    return;
  }
  if (LINK_DELAY_MS) {
    console.log(`every request between nodes is held back ${LINK_DELAY_MS} ms in the levels and failover trials (the split and the DistributedStateMachine figures run without)`);
  }
  if (VS_ETCD) {
    const why = etcdUnavailable();
    console.log(why ? `--vs-etcd: etcd will be skipped: ${why}` : '--vs-etcd: etcd 3.4 runs on the same workload after this package');
  }
  const results = {
    startedAt: new Date().toISOString(),
    machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, totalMemMb: Math.round(os.totalmem() / MB), node: process.version },
    options: { quick: QUICK, opsScale: SCALE, operationIds: WITH_IDS, config: CONFIG, vsEtcd: VS_ETCD, linkDelayMs: LINK_DELAY_MS },
    targets: TARGETS,
  };
  results.bareNode = await bareNodeRssMb();
  const guideIdle = await guideStackIdle();
  results.guideStackIdle = { nodes: guideIdle, addedMb: round(maxRssMb(guideIdle) - results.bareNode.rssMb, 1) };
  console.log(`the guide's stack alone, idle: ${Object.values(guideIdle).map((m) => fmt(m.rssMb)).join(' / ')} MB (bare node ${fmt(results.bareNode.rssMb)} MB)`);
  results.paths = {};
  for (const p of PATHS) results.paths[p.key] = await benchPath(p, results.bareNode.rssMb);

  const trials = [];
  for (let i = 1; i <= FAILOVER_TRIALS; i++) {
    const t = await failoverTrial(i);
    trials.push(t);
    console.log(
      `failover trial ${i}: ${t.ms === null ? t.error : `${fmt(t.ms)} ms (leader_elected seen at ${t.electedMs} ms), new leader ${t.newLeader}`}`,
    );
  }
  results.failover = { trials, medianMs: round(median(trials.map((t) => t.ms)), 1) };
  results.split = await split();
  if (VS_ETCD) {
    results.etcd = await benchEtcd({ levels: LEVELS, warmupCount: WARMUP.count, failoverTrials: FAILOVER_TRIALS });
    results.etcdRatios = etcdRatios(results);
  }
  results.finishedAt = new Date().toISOString();

  printTable(results);
  printEtcd(results);
  printSplit(results.split);
  if (FLAME_DIR) printFlameShares();
  results.state = await benchState({ scale: SCALE, withEtcd: VS_ETCD });
  printState(results.state);
  const out = path.join(RESULTS_DIR, 'latest.json');
  fs.writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);
  console.log(`results written to ${path.relative(process.cwd(), out)}`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
