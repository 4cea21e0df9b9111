'use strict';
// What every part of the benchmark measures the same way: the operation it writes, closed-loop
// load, latency percentiles, process memory and directory sizes. One place, so that figures of
// this package and of etcd side by side come from the same arithmetic.
const fs = require('node:fs');
const path = require('node:path');

const MB = 1024 * 1024;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const round = (x, digits = 2) => (x === null || x === undefined || Number.isNaN(x) ? null : Number(x.toFixed(digits)));

/**
 * The guide's operation, about 250 bytes of JSON: the payload both this package and etcd carry in
 * every write of the benchmark.
 */
function makeValue(n) {
  return {
    id: `task-${n}`,
    daemonId: `daemon-${(n % 8) + 1}`,
    type: 'data_import',
    payload: {
      sourceUrl: 'https://data.example.com/dataset',
      batchSize: 1000,
      format: 'csv',
      compression: 'gzip',
      destination: 's3://warehouse-bucket/imports/daily',
    },
    timestamp: Date.now(),
  };
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

/** ops/s and latency percentiles (ms) of one load level. */
function summarize(latencies, elapsedMs, errors = {}) {
  const sorted = Float64Array.from(latencies).sort();
  return {
    acked: sorted.length,
    errors,
    elapsedMs: round(elapsedMs, 1),
    opsPerSec: Math.round((sorted.length / elapsedMs) * 1000),
    p50Ms: round(percentile(sorted, 50), 3),
    p95Ms: round(percentile(sorted, 95), 3),
    p99Ms: round(percentile(sorted, 99), 3),
    maxMs: round(sorted[sorted.length - 1], 3),
  };
}

/**
 * `count` calls of `fn(n)` with `concurrency` in flight, each started when one ends (a closed
 * loop, as a daemon's workers are): each call's latency in ms, the failures by error code (never
 * thrown) and the elapsed time.
 */
async function runClosedLoop(count, concurrency, fn) {
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
          const code = err.code || err.constructor?.name || 'error';
          errors[code] = (errors[code] || 0) + 1;
        }
      }
    }),
  );
  return { latencies, errors, elapsedMs: Number(process.hrtime.bigint() - t0) / 1e6 };
}

/** `runClosedLoop`, summarized: ops/s and latency percentiles. */
async function closedLoop(count, concurrency, fn) {
  const r = await runClosedLoop(count, concurrency, fn);
  return summarize(r.latencies, r.elapsedMs, r.errors);
}

/** kB fields of /proc/<pid>/status, in MB (VmRSS, VmHWM, RssAnon, RssFile). */
function procStatusMb(pid) {
  const out = {};
  for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const m = /^(Vm\w+|Rss\w+):\s+(\d+) kB/.exec(line);
    if (m) out[m[1]] = round(Number(m[2]) / 1024, 1);
  }
  return out;
}

/**
 * Bytes of the page cache a process has dirtied so far (`write_bytes` of /proc/PID/io),
 * whichever thread flushed them. The kernel counts a whole page-cache folio when any of its
 * pages is dirtied, and a file read back after a restart sits in larger folios than one built
 * by 4 KB writes: a restarted node can count two to three times the bytes that reach the
 * device (see `deviceWrittenBytes`).
 */
function procWriteBytes(pid) {
  let io;
  try {
    io = fs.readFileSync(`/proc/${pid}/io`, 'utf8');
  } catch {
    return null; // the process is gone, or its io is not ours to read
  }
  const m = /^write_bytes:\s+(\d+)$/m.exec(io);
  return m ? Number(m[1]) : null;
}

/**
 * Bytes written to the block device that holds `dir` so far (sectors written, from
 * /sys/dev/block): what reached the disk, from every process on the machine. Null when the
 * directory is not on a block device (tmpfs) or the kernel does not say.
 */
function deviceWrittenBytes(dir) {
  try {
    const { dev } = fs.statSync(dir);
    const major = Math.floor(dev / 256) & 0xfff;
    const minor = (dev & 0xff) | (Math.floor(dev / 4096) & 0xfff00);
    const fields = fs.readFileSync(`/sys/dev/block/${major}:${minor}/stat`, 'utf8').trim().split(/\s+/);
    // The seventh field: sectors written, always of 512 bytes.
    return Number(fields[6]) * 512;
  } catch {
    return null;
  }
}

/** Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux). */
const USER_HZ = 100;

/** User and kernel CPU times, in microseconds, from a /proc stat line (its fields 14 and 15). */
function statCpuUs(stat) {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const [user, kernel] = [Number(fields[11]), Number(fields[12])].map((ticks) => (ticks * 1e6) / USER_HZ);
  return { us: user + kernel, kernelUs: kernel };
}

/** CPU time so far of a whole process (all its threads), in microseconds. */
function processCpuUs(pid) {
  return statCpuUs(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
}

/**
 * CPU time so far, in microseconds, of each of a process's threads by the kind of work it does:
 * the engine's tokio workers, its log writer, and Node's own threads (Node names its main thread,
 * V8's helpers and libuv's pool all `node`). `kernelUs` is the part spent in the kernel.
 */
function threadCpuUs(pid) {
  const out = {};
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    let stat;
    try {
      stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    } catch {
      continue; // the thread ended between the listing and the read
    }
    const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const kind = comm.startsWith('tokio') ? 'tokio' : comm === 'raft-log-writer' ? 'logWriter' : 'node';
    const { us, kernelUs } = statCpuUs(stat);
    out[kind] = out[kind] || { us: 0, kernelUs: 0 };
    out[kind].us += us;
    out[kind].kernelUs += kernelUs;
  }
  return out;
}

/**
 * CPU per operation between two `threadCpuUs` readings of each role ('leader', 'followers'), by
 * thread kind, in microseconds; `total` adds them all. A thread that ended meanwhile is not counted.
 */
function cpuPerOpUs(before, after, ops) {
  const out = { total: 0 };
  for (const [role, readings] of Object.entries(after)) {
    for (const [i, reading] of readings.entries()) {
      for (const [kind, t] of Object.entries(reading)) {
        const b = before[role][i][kind] || { us: 0, kernelUs: 0 };
        const key = `${role}.${kind}`;
        out[key] = out[key] || { us: 0, kernelUs: 0 };
        out[key].us += (t.us - b.us) / ops;
        out[key].kernelUs += (t.kernelUs - b.kernelUs) / ops;
        out.total += (t.us - b.us) / ops;
      }
    }
  }
  for (const v of Object.values(out)) {
    if (typeof v === 'object') {
      v.us = round(v.us, 1);
      v.kernelUs = round(v.kernelUs, 1);
    }
  }
  out.total = round(out.total, 1);
  return out;
}

/** Bytes the files under `dir` occupy on disk (sparse LMDB maps count what is allocated). */
function diskUsageBytes(dir) {
  let total = 0;
  const visit = (p) => {
    let st;
    try {
      st = fs.statSync(p);
    } catch {
      return; // removed while we looked
    }
    if (st.isDirectory()) {
      for (const name of fs.readdirSync(p)) visit(path.join(p, name));
    } else {
      total += st.blocks * 512;
    }
  };
  visit(dir);
  return total;
}

/**
 * The mean of one engine histogram (as `nativeStats` reads it: count and sum in seconds) between
 * two readings, in ms; null when nothing was observed in between. A reading whose count went
 * down comes from a restarted process, whose histograms began again at zero.
 */
function histogramMeanMs(after, before) {
  if (!after) return null;
  const base = !before || before.count > after.count ? { count: 0, sum: 0 } : before;
  const n = after.count - base.count;
  return n > 0 ? ((after.sum - base.sum) / n) * 1000 : null;
}

function median(values) {
  const v = values.filter((x) => x !== null && x !== undefined).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

function fmt(x, digits = 1) {
  if (x === null || x === undefined) return 'n/a';
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** Prints rows as a plain aligned table under `header`. */
function printRows(header, rows) {
  const cells = rows.map((r) => r.map((c) => String(c ?? '')));
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((row) => row[i].length)));
  const line = (r) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const row of cells) console.log(line(row));
}

module.exports = { MB, sleep, round, makeValue, percentile, summarize, runClosedLoop, closedLoop, procStatusMb, procWriteBytes, deviceWrittenBytes, processCpuUs, threadCpuUs, cpuPerOpUs, diskUsageBytes, histogramMeanMs, median, fmt, printRows };
