'use strict';
// Chaos runs of 3 nodes, every fault the nemesis knows, then the history check: 60 s with real
// partitions (network namespaces, where available) and 30 s of the loopback fallback.
// The seed is new each run (CHAOS_SEED repeats one); a failure prints it for the rerun.
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { available } = require('../support/netns');

const root = path.resolve(__dirname, '..');

/** Runs scripts/chaos.js and returns its summary, after checking what every run must show. */
async function chaosRun(seconds, extraArgs) {
  const seed = process.env.CHAOS_SEED ?? String(Math.floor(Math.random() * 2 ** 31));
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'unrdf-chaos-')), 'chaos.json');
  const args = ['scripts/chaos.js', '--seconds', String(seconds), '--nodes', '3', '--seed', seed, '--out', out, ...extraArgs];
  const { code, output } = await new Promise((resolve) => {
    execFile(process.execPath, args, { cwd: root, timeout: 600000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? (err.code ?? err.signal) : 0, output: stdout + stderr });
    });
  });
  const tail = output.split('\n').slice(-60).join('\n');
  assert.equal(code, 0, `chaos run with seed ${seed} failed:\n${tail}`);
  const summary = JSON.parse(fs.readFileSync(out, 'utf8'));
  fs.rmSync(path.dirname(out), { recursive: true, force: true });
  assert.equal(summary.violations.total, 0, tail);
  assert.ok(summary.operations.acknowledged > 100, `only ${summary.operations.acknowledged} operations acknowledged:\n${tail}`);
  assert.ok(summary.convergenceMs !== null, tail);
  const kinds = Object.keys(summary.faults);
  assert.ok(kinds.length >= 4, `only ${kinds} faults ran:\n${tail}`);
  // Every acknowledged operation is in the history with where it was committed.
  const acked = summary.operations_log.filter((op) => op.outcome === 'ok');
  assert.equal(acked.length, summary.operations.acknowledged);
  assert.ok(acked.every((op) => Number.isInteger(op.index) && op.index > 0));
  return { summary, tail };
}

test('npm run chaos, 3 nodes for 60 s: no violation, progress under faults, convergence after healing', async () => {
  const { summary, tail } = await chaosRun(60, []);
  if (available().ok) assert.match(summary.network, /namespaces/, tail);
});

test('npm run chaos --link-cuts, 3 nodes for 30 s: the loopback fallback partitions in-process and says so', async () => {
  const { summary, tail } = await chaosRun(30, ['--link-cuts']);
  assert.match(summary.network, /link cuts/, tail);
  assert.match(tail, /NO REAL PARTITIONS/);
});
