'use strict';
// `npm run bench -- --soak MINUTES`: whether the cost of the guide's path stays flat over a long
// run. A fixed rate of replicateOperation calls, issued from inside the leader's process without
// waiting for earlier ones, runs on a 3-process cluster with the guide's stack while, every
// 5 minutes, a follower is killed (kill -9) for 60 s and then has to catch up, by snapshot once
// the leader has compacted past it. Every minute it prints ops/s, p99, failures, RSS and data
// directory size per node, and the snapshot size; at the end, the catch-ups and whether p99 and
// RSS stayed flat (DESIGN §5: the last 5 minutes within 20% of minutes 5-10). Beside each minute's
// p99 stand the longest fsync of a probe on the same disk and the longest stall of the leader's
// event loop, so that a slow minute says whether the disk, the JavaScript or the cluster held it.
const path = require('node:path');
const fs = require('node:fs');
const { Cluster } = require('../support/cluster');
const { DiskProbe } = require('./disk-probe');
const { MB, sleep, round, summarize, procStatusMb, procWriteBytes, deviceWrittenBytes, diskUsageBytes, histogramMeanMs, median, fmt, printRows } = require('./measure');

const MINUTE_MS = 60000;
const KILL_EVERY_MINUTES = 5;
const KILLED_FOR_MS = 60000;
const CATCH_UP_GIVE_UP_MS = 120000;
/** A probe fsync this slow is a stall of the disk itself: its usual fsync takes well under 10 ms. */
const DISK_STALL_MS = 100;
/** Shorter soaks are too short for minutes 5-10 and the last 5 to be apart. */
const FLATNESS_MIN_MINUTES = 15;
/** The fresh cluster after the soak: one minute to warm up, two to compare with. */
const CONTROL_MINUTES = 3;

/**
 * A node's RSS, and where it sits: file-backed pages (the addon's code, LMDB's map), the V8 heap,
 * and the rest of the anonymous memory, which is native: the engine's and Node's own allocations.
 */
async function nodeFigures(node) {
  const dataMb = round(diskUsageBytes(node.dataDir) / MB, 1);
  if (!node.running) return { rssMb: null, dataMb };
  const status = procStatusMb(node.child.pid);
  const js = await node.call('memory').catch(() => null);
  const heapMb = js ? round(js.heapTotal / MB, 1) : null;
  return {
    // A process being reaped reads as 0 kB.
    rssMb: status.VmRSS || null,
    fileMb: status.RssFile,
    heapMb,
    heapUsedMb: js ? round(js.heapUsed / MB, 1) : null,
    nativeMb: heapMb === null ? null : round(status.RssAnon - heapMb, 1),
    dataMb,
  };
}

/** A node's disk-write counter, tied to its process: a restarted node counts again from zero. */
function writeCounter(node) {
  const writeBytes = node.running ? procWriteBytes(node.child.pid) : null;
  return writeBytes === null ? null : { pid: node.child.pid, writeBytes };
}

/**
 * Kills `victim`, restarts it after KILLED_FOR_MS on the same data directory, and measures how
 * long it takes to hold everything the leader had committed at the restart, and whether it got
 * there by snapshot.
 */
async function killAndCatchUp(cluster, victim, log) {
  const killedAt = Date.now();
  await victim.kill('SIGKILL');
  log(`minute ${((killedAt - cluster.soakStartedAt) / MINUTE_MS).toFixed(1)}: killed follower ${victim.nodeId} for ${KILLED_FOR_MS / 1000} s`);
  await sleep(KILLED_FOR_MS);
  const leader = await cluster.leader(15000);
  const target = (await leader.call('state')).commitIndex;
  const t0 = performance.now();
  await victim.start();
  const restartMs = performance.now() - t0;
  const caughtUp = await cluster
    .waitFor(async () => {
      const s = await victim.call('state');
      return s.lastApplied >= target ? s : null;
    }, CATCH_UP_GIVE_UP_MS, 100)
    .then(() => round(performance.now() - t0, 0))
    .catch(() => null);
  const bySnapshot = victim.events.some((e) => e.name === 'snapshot_installed');
  const stats = await victim.call('nativeStats').catch(() => null);
  const result = {
    nodeId: victim.nodeId,
    killedAt,
    leaderCommitAtRestart: target,
    restartMs: round(restartMs, 0),
    caughtUpMs: caughtUp,
    bySnapshot,
    snapshotMb: stats ? round(stats.snapshotBytes / MB, 2) : null,
    installMs: stats && stats.snapshotInstall.count ? round((stats.snapshotInstall.sum / stats.snapshotInstall.count) * 1000, 0) : null,
  };
  log(
    `${victim.nodeId} restarted in ${fmt(result.restartMs, 0)} ms, caught up to index ${target} in ` +
      `${result.caughtUpMs === null ? `more than ${CATCH_UP_GIVE_UP_MS / 1000} s` : `${fmt(result.caughtUpMs, 0)} ms`}` +
      `${bySnapshot ? ` by a snapshot of ${fmt(result.snapshotMb, 2)} MB` : ' from the log'}`,
  );
  return result;
}

/**
 * The writer: runs in the leader's process and follows leadership as soon as any node reports a
 * new leader, carrying its numbering and what it measured over.
 */
class Writer {
  constructor(cluster, rate, log) {
    Object.assign(this, { cluster, rate, log, node: null, next: 0, moving: Promise.resolve() });
    this.carried = Writer.empty();
  }

  static empty() {
    return { latencies: [], errors: {}, shed: 0, loopDelayMaxMs: 0, gcMaxMs: 0 };
  }

  async start(node) {
    this.node = node;
    await node.call('soakStart', { rate: this.rate, prefix: 'soak', from: this.next });
  }

  _carry(sample) {
    if (!sample) return;
    for (const l of sample.latencies) this.carried.latencies.push(l);
    for (const [k, v] of Object.entries(sample.errors)) this.carried.errors[k] = (this.carried.errors[k] || 0) + v;
    this.carried.shed += sample.shed;
    this.carried.loopDelayMaxMs = Math.max(this.carried.loopDelayMaxMs, sample.loopDelayMaxMs);
    this.carried.gcMaxMs = Math.max(this.carried.gcMaxMs, sample.gcMaxMs);
    this.next = Math.max(this.next, sample.next);
  }

  follow(leaderId) {
    this.moving = this.moving.then(async () => {
      const target = this.cluster.node(leaderId);
      if (!target || target === this.node || !target.running || this.stopped) return;
      this._carry(await this.node.call('soakStop').catch(() => null));
      this.log(`leadership moved to ${leaderId}: the writer follows`);
      await this.start(target).catch((err) => this.log(`could not start the writer on ${leaderId}: ${err.message}`));
    });
  }

  /** Everything measured since the last call, wherever the writer ran. */
  async sample() {
    await this.moving;
    this._carry(await this.node.call('soakSample').catch(() => null));
    const out = this.carried;
    this.carried = Writer.empty();
    return out;
  }

  async stop() {
    this.stopped = true;
    await this.moving;
    this._carry(await this.node.call('soakStop').catch(() => null));
  }
}

/**
 * The engine's own means over the minute, per node: its log appends (LMDB commit and fsync), its
 * applied batches' commits, and, on the leader, the round trip of appends to each peer. When
 * p99 moves, these say whether a disk, a follower or the path around them moved with it.
 */
async function engineReadings(cluster) {
  return Object.fromEntries(
    await Promise.all(cluster.nodes.map(async (n) => [n.nodeId, n.running ? await n.call('nativeStats').catch(() => null) : null])),
  );
}

function engineMinute(before, after) {
  return Object.fromEntries(
    Object.entries(after).map(([id, cur]) => {
      const prev = before[id];
      if (!cur) return [id, null];
      const rttMs = Object.fromEntries(Object.entries(cur.peers).map(([peer, h]) => [peer, round(histogramMeanMs(h, prev?.peers[peer]), 3)]));
      return [id, { fsyncMs: round(histogramMeanMs(cur.logFsync, prev?.logFsync), 3), applyMs: round(histogramMeanMs(cur.applyCommit, prev?.applyCommit), 3), rttMs }];
    }),
  );
}

/**
 * One cluster at `rate` for `minutes`, a row per minute; with `kills`, a follower is killed for
 * KILLED_FOR_MS every KILL_EVERY_MINUTES and its catch-up measured.
 */
async function phase({ minutes, rate, kills, log }) {
  // The harness keeps nothing per operation (record: false), so memory is the package's own.
  const cluster = new Cluster(3, { guide: { daemonStyle: 'counting' }, nodeOptions: { initArgs: { record: false } } });
  const rows = [];
  const catchUps = [];
  let disk = null;
  try {
    await cluster.start();
    disk = new DiskProbe(cluster.root);
    const first = await cluster.form();
    log(`cluster formed, leader ${first.nodeId}; ${rate} ops/s through replicateOperation for ${minutes} min`);
    const writer = new Writer(cluster, rate, log);
    await writer.start(first);
    for (const n of cluster.nodes) {
      n.onEvent = (e) => {
        if (e.name === 'leader_elected' && e.payload.leaderId) writer.follow(e.payload.leaderId);
      };
    }
    cluster.soakStartedAt = Date.now();
    let sampledAt = performance.now();
    let engineBefore = await engineReadings(cluster);
    const writeCounters = () => Object.fromEntries(cluster.nodes.map((n) => [n.nodeId, writeCounter(n)]));
    let writtenBefore = writeCounters();
    let deviceBefore = deviceWrittenBytes(cluster.root);
    let killing = null;
    let lastTerm = (await first.call('state')).term;
    for (let minute = 1; minute <= minutes; minute++) {
      await sleep(cluster.soakStartedAt + minute * MINUTE_MS - Date.now());
      const raw = await writer.sample();
      const diskSample = await disk.sample();
      const now = performance.now();
      const sample = summarize(raw.latencies, now - sampledAt, raw.errors);
      sampledAt = now;
      const engineAfter = await engineReadings(cluster);
      const engine = engineMinute(engineBefore, engineAfter);
      engineBefore = engineAfter;
      const leader = await cluster.leader(15000).catch(() => null);
      const state = leader ? await leader.call('state') : null;
      const figures = Object.fromEntries(await Promise.all(cluster.nodes.map(async (n) => [n.nodeId, await nodeFigures(n)])));
      // What each node dirtied per write this minute, and what reached the device from all of
      // them: a commit that writes more pages as the run goes on would show here before it
      // shows in p99. Only the device's count is bytes on the disk (see `procWriteBytes`).
      const deviceNow = deviceWrittenBytes(cluster.root);
      const deviceKbPerWrite = deviceNow !== null && deviceBefore !== null && sample.acked ? round((deviceNow - deviceBefore) / 1024 / sample.acked, 2) : null;
      deviceBefore = deviceNow;
      const writtenNow = writeCounters();
      for (const [id, now] of Object.entries(writtenNow)) {
        const prev = writtenBefore[id];
        const since = prev && prev.pid === now?.pid ? prev.writeBytes : 0;
        figures[id].diskKbPerWrite = now && sample.acked ? round((now.writeBytes - since) / 1024 / sample.acked, 2) : null;
      }
      writtenBefore = writtenNow;
      const row = {
        minute,
        opsPerSec: sample.opsPerSec,
        p50Ms: sample.p50Ms,
        p99Ms: sample.p99Ms,
        failed: Object.values(sample.errors).reduce((a, b) => a + b, 0),
        errors: sample.errors,
        shed: raw.shed,
        diskFsyncMaxMs: diskSample.maxMs,
        leaderLoopStallMs: round(raw.loopDelayMaxMs, 0),
        leaderGcMaxMs: round(raw.gcMaxMs, 0),
        term: state ? state.term : null,
        termChanged: state ? state.term !== lastTerm : null,
        nodes: figures,
        deviceKbPerWrite,
        engine,
        writerNode: writer.node ? writer.node.nodeId : null,
        snapshotMb: leader && engineAfter[leader.nodeId] ? round(engineAfter[leader.nodeId].snapshotBytes / MB, 2) : null,
        logLength: state ? state.logLength : null,
      };
      if (state) lastTerm = state.term;
      rows.push(row);
      log(
        `minute ${minute}: ${fmt(row.opsPerSec, 0)} ops/s, p99 ${fmt(row.p99Ms, 1)} ms (disk fsync max ${fmt(row.diskFsyncMaxMs, 0)}, leader event loop stall ${row.leaderLoopStallMs}), failed ${row.failed} ${row.failed ? JSON.stringify(row.errors) : ''}, shed ${row.shed}, ` +
          `RSS ${Object.values(figures).map((f) => fmt(f.rssMb, 0)).join('/')} MB, data ${Object.values(figures).map((f) => fmt(f.dataMb, 0)).join('/')} MB, ` +
          `snapshot ${fmt(row.snapshotMb, 2)} MB, term ${row.term}; ${engineParts(row)}; ${memoryParts(row)}`,
      );
      if (kills && minute % KILL_EVERY_MINUTES === 0 && minute < minutes && !killing) {
        const victim = cluster.nodes.find((n) => n !== writer.node && n.running);
        killing = killAndCatchUp(cluster, victim, log).then((r) => {
          catchUps.push(r);
          killing = null;
        });
      }
    }
    await writer.stop();
    if (killing) await killing;
  } finally {
    if (disk) await disk.stop();
    await cluster.stop();
  }
  return { rows, catchUps };
}

async function soak({ minutes, rate }) {
  const log = (msg) => console.log(`[soak] ${msg}`);
  const main = await phase({ minutes, rate, kills: true, log });
  // A shared machine drifts by the hour too. A fresh cluster at the same rate right after tells
  // a late rise of the soak's cluster from the machine's: only the first would show in the soak
  // and not in the fresh cluster.
  let control = null;
  if (minutes >= FLATNESS_MIN_MINUTES) {
    log(`a fresh cluster at the same rate for ${CONTROL_MINUTES} min, to compare the late minutes with`);
    control = (await phase({ minutes: CONTROL_MINUTES, rate, kills: false, log: (msg) => console.log(`[soak control] ${msg}`) })).rows;
  }
  return { minutes, rate, rows: main.rows, catchUps: main.catchUps, control, verdict: verdict(main.rows, main.catchUps, control) };
}

/**
 * DESIGN §5's flatness check: the last 5 minutes against minutes 5-10, within 20%. Beside it, the
 * late minutes against the fresh cluster after the soak (its first minute left out as warm-up).
 */
function verdict(rows, catchUps, control) {
  if (rows.length < FLATNESS_MIN_MINUTES) return { note: `flatness is judged on runs of ${FLATNESS_MIN_MINUTES} minutes or more` };
  const window = (from, to) => rows.filter((r) => r.minute >= from && r.minute <= to);
  const maxRss = (r) => Math.max(...Object.values(r.nodes).map((f) => f.rssMb ?? 0));
  const early = window(5, 10);
  const late = window(rows.length - 4, rows.length);
  const ratio = (f) => round(median(late.map(f)) / median(early.map(f)), 2);
  const p99Ratio = ratio((r) => r.p99Ms);
  const rssRatio = ratio(maxRss);
  const lateP99 = median(late.map((r) => r.p99Ms));
  const controlP99 = control ? median(control.slice(1).map((r) => r.p99Ms)) : null;
  return {
    p99LateOverEarly: p99Ratio,
    p99EarlyMs: median(early.map((r) => r.p99Ms)),
    p99LateMs: lateP99,
    p99FreshClusterMs: controlP99,
    p99LateOverFreshCluster: controlP99 ? round(lateP99 / controlP99, 2) : null,
    rssLateOverEarly: rssRatio,
    p99Flat: p99Ratio <= 1.2,
    rssFlat: rssRatio <= 1.2,
    failed: rows.reduce((a, r) => a + r.failed, 0),
    termChanges: rows.filter((r) => r.termChanged).length,
    minutesTheDiskStalled: rows.filter((r) => r.diskFsyncMaxMs >= DISK_STALL_MS).length,
    catchUpsWithin10s: catchUps.filter((c) => c.caughtUpMs !== null && c.caughtUpMs <= 10000).length,
    catchUps: catchUps.length,
  };
}

/**
 * The engine's means over the minute (every node's log append, the leader's apply and round trips),
 * the page cache each node dirtied per write, and the bytes per write that reached the device.
 */
function engineParts(row) {
  const ids = Object.keys(row.engine);
  const writer = row.engine[row.writerNode];
  const rtt = writer ? Object.entries(writer.rttMs).map(([peer, ms]) => `${peer} ${fmt(ms, 2)}`).join(', ') : '-';
  const written = ids.map((id) => fmt(row.nodes[id]?.diskKbPerWrite, 2)).join('/');
  return `append ms ${ids.map((id) => fmt(row.engine[id]?.fsyncMs, 2)).join('/')}, apply ms ${fmt(writer?.applyMs, 2)}, round trip ms ${rtt}, KB per write dirtied ${written}, on the device ${fmt(row.deviceKbPerWrite, 2)}`;
}

/** The writer's node's RSS in parts: it holds the load generator beside the package. */
function memoryParts(row) {
  const f = row.nodes[row.writerNode];
  if (!f || f.rssMb === null) return 'writer node -';
  return `writer node ${row.writerNode}: file ${fmt(f.fileMb, 0)}, V8 heap ${fmt(f.heapMb, 0)} (in use ${fmt(f.heapUsedMb, 0)}), native ${fmt(f.nativeMb, 0)} MB`;
}

function printSoak(r) {
  console.log(`\nSoak: ${r.rate} ops/s through replicateOperation for ${r.minutes} minutes (3 processes, durable storage)`);
  const ids = Object.keys(r.rows[0]?.nodes || {});
  printRows(
    ['min', 'ops/s', 'p50 ms', 'p99 ms', 'disk fsync max ms', 'leader loop stall ms', 'failed', 'shed', 'term', ...ids.map((id) => `${id} RSS MB`), ...ids.map((id) => `${id} data MB`), 'snapshot MB', 'log', 'engine means', 'writer node RSS in parts'],
    r.rows.map((x) => [
      x.minute,
      fmt(x.opsPerSec, 0),
      fmt(x.p50Ms, 2),
      fmt(x.p99Ms, 1),
      fmt(x.diskFsyncMaxMs, 0),
      x.leaderLoopStallMs,
      x.failed,
      x.shed,
      `${x.term}${x.termChanged ? ' (changed)' : ''}`,
      ...ids.map((id) => fmt(x.nodes[id].rssMb, 0)),
      ...ids.map((id) => fmt(x.nodes[id].dataMb, 1)),
      fmt(x.snapshotMb, 2),
      x.logLength,
      engineParts(x),
      memoryParts(x),
    ]),
  );
  if (r.catchUps.length) {
    console.log('\nFollower kills (60 s each) and catch-up:');
    printRows(
      ['node', 'leader commit at restart', 'restart ms', 'caught up ms', 'by snapshot', 'snapshot MB', 'install ms'],
      r.catchUps.map((c) => [c.nodeId, c.leaderCommitAtRestart, c.restartMs, c.caughtUpMs ?? 'gave up', c.bySnapshot ? 'yes' : 'no', fmt(c.snapshotMb, 2), c.installMs ?? '']),
    );
  }
  if (r.control) {
    console.log(`\nA fresh cluster at the same rate right after the soak (minute 1 is its warm-up):`);
    printRows(
      ['min', 'ops/s', 'p50 ms', 'p99 ms', 'disk fsync max ms', 'failed', 'engine means'],
      r.control.map((x) => [x.minute, fmt(x.opsPerSec, 0), fmt(x.p50Ms, 2), fmt(x.p99Ms, 1), fmt(x.diskFsyncMaxMs, 0), x.failed, engineParts(x)]),
    );
  }
  console.log(`\nverdict: ${JSON.stringify(r.verdict)}`);
}

async function runSoak({ minutes, rate, resultsDir }) {
  const r = await soak({ minutes, rate });
  printSoak(r);
  fs.mkdirSync(resultsDir, { recursive: true });
  const out = path.join(resultsDir, 'soak-latest.json');
  fs.writeFileSync(out, `${JSON.stringify(r, null, 2)}\n`);
  console.log(`results written to ${path.relative(process.cwd(), out)}`);
  return r;
}

module.exports = { runSoak };
