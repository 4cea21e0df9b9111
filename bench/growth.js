'use strict';
// `node bench/growth.js`: whether a long run keeps its cost per operation. One 3-process
// loopback cluster running the guide's stack (daemon, ClusterManager, ConsensusManager) takes
// rounds of ConsensusManager.replicateOperation with unique ids at a fixed number in flight; after
// each round it prints throughput, p99 latency, failed operations, the RSS of every node (and the
// part of it that is the JavaScript heap in use) and the size of every data directory. Memory or
// disk that grows round after round is a per-operation cost that is not bounded. As in the
// benchmark, the daemon only counts and the node worker keeps nothing per operation, so what is
// measured is the package's. It asserts nothing; it exits non-zero only if something crashes.
//
//   --rounds=N      rounds to run (default 6)
//   --ops=N         operations per round (default 50000)
//   --in-flight=N   operations in flight (default 256)
//   --json=FILE     also write the rows as JSON to FILE
const fs = require('node:fs');
const path = require('node:path');
const { Cluster } = require('../support/cluster');

const USAGE = `usage: node bench/growth.js [--rounds=N] [--ops=N] [--in-flight=N] [--json=FILE]
`;
const args = process.argv.slice(2);
if (args.includes('--help') || args.includes('-h')) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const options = { rounds: 6, ops: 50000, 'in-flight': 256, json: null };
for (const arg of args) {
  const m = /^--(rounds|ops|in-flight|json)=(.+)$/.exec(arg);
  if (!m) {
    process.stderr.write(`unknown option ${arg}\n\n${USAGE}`);
    process.exit(2);
  }
  options[m[1]] = m[1] === 'json' ? m[2] : Number(m[2]);
  if (m[1] !== 'json' && !(Number.isInteger(options[m[1]]) && options[m[1]] > 0)) {
    process.stderr.write(`--${m[1]} expects a positive integer\n`);
    process.exit(2);
  }
}

const MB = 1024 * 1024;

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/** Bytes the files under `dir` occupy on disk (LMDB's file is sparse: its apparent size is the map). */
function diskBytes(dir) {
  let total = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) total += diskBytes(p);
    else if (entry.isFile()) total += fs.statSync(p).blocks * 512;
  }
  return total;
}

function rssMb(pid) {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : null;
}

async function main() {
  const cluster = new Cluster(3, { guide: { daemonStyle: 'counting' }, nodeOptions: { initArgs: { record: false } } });
  const rows = [];
  try {
    await cluster.start();
    const leader = await cluster.form();
    const header = [
      'round',
      'total ops',
      'ops/s',
      'p99 ms',
      'failed',
      ...cluster.nodes.map((n) => `${n.nodeId} RSS MB`),
      ...cluster.nodes.map((n) => `${n.nodeId} heap MB`),
      ...cluster.nodes.map((n) => `${n.nodeId} disk MB`),
    ];
    process.stdout.write(`${header.join(' | ')}\n`);
    for (let round = 1; round <= options.rounds; round++) {
      const r = await leader.call('guideLoad', { count: options.ops, concurrency: options['in-flight'], prefix: `growth${round}` }, 3600000);
      const sorted = Float64Array.from(r.latencies).sort();
      const failed = Object.values(r.errors).reduce((a, b) => a + b, 0);
      const memory = await Promise.all(cluster.nodes.map((n) => n.call('memory')));
      const row = {
        round,
        totalOps: round * options.ops,
        opsPerSec: Math.round((r.acked.length / r.elapsedMs) * 1000),
        p99Ms: Number((percentile(sorted, 99) ?? 0).toFixed(1)),
        failed,
        errors: r.errors,
        rssMb: Object.fromEntries(cluster.nodes.map((n) => [n.nodeId, Number(rssMb(n.child.pid).toFixed(1))])),
        heapUsedMb: Object.fromEntries(cluster.nodes.map((n, i) => [n.nodeId, Number((memory[i].heapUsed / MB).toFixed(1))])),
        diskMb: Object.fromEntries(cluster.nodes.map((n) => [n.nodeId, Number((diskBytes(n.dataDir) / MB).toFixed(1))])),
      };
      rows.push(row);
      const cells = [row.round, row.totalOps, row.opsPerSec, row.p99Ms, failed ? `${failed} ${JSON.stringify(r.errors)}` : 0];
      cells.push(...Object.values(row.rssMb), ...Object.values(row.heapUsedMb), ...Object.values(row.diskMb));
      process.stdout.write(`${cells.join(' | ')}\n`);
    }
  } finally {
    await cluster.stop();
  }
  if (options.json) fs.writeFileSync(options.json, `${JSON.stringify({ options, rows }, null, 2)}\n`);
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
