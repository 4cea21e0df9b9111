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
 * Bytes a process has caused to be written to the block device so far (`write_bytes` of
 * /proc/PID/io): the pages its commits dirtied, whichever thread flushed them.
 */
function procWriteBytes(pid) {
  const m = /^write_bytes:\s+(\d+)$/m.exec(fs.readFileSync(`/proc/${pid}/io`, 'utf8'));
  return m ? Number(m[1]) : null;
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

module.exports = { MB, sleep, round, makeValue, percentile, summarize, runClosedLoop, closedLoop, procStatusMb, procWriteBytes, diskUsageBytes, histogramMeanMs, median, fmt, printRows };
