'use strict';
// A 60-second chaos run of 3 nodes: every fault the nemesis knows, then the history check.
// The seed is new each run (CHAOS_SEED repeats one); a failure prints it for the rerun.
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { available } = require('../support/netns');

const root = path.resolve(__dirname, '..');

test('npm run chaos, 3 nodes for 60 s: no violation, progress under faults, convergence after healing', async () => {
  const seed = process.env.CHAOS_SEED ?? String(Math.floor(Math.random() * 2 ** 31));
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'unrdf-chaos-')), 'chaos.json');
  const args = ['scripts/chaos.js', '--seconds', '60', '--nodes', '3', '--seed', seed, '--out', out];
  const { code, output } = await new Promise((resolve) => {
    execFile(process.execPath, args, { cwd: root, timeout: 600000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      resolve({ code: err ? (err.code ?? err.signal) : 0, output: stdout + stderr });
    });
  });
  const tail = output.split('\n').slice(-60).join('\n');
  assert.equal(code, 0, `chaos run with seed ${seed} failed:\n${tail}`);
  const summary = JSON.parse(fs.readFileSync(out, 'utf8'));
  assert.equal(summary.violations.total, 0, tail);
  assert.ok(summary.operations.acknowledged > 100, `only ${summary.operations.acknowledged} operations acknowledged:\n${tail}`);
  assert.ok(summary.convergenceMs !== null, tail);
  const kinds = Object.keys(summary.faults);
  assert.ok(kinds.length >= 4, `only ${kinds} faults ran:\n${tail}`);
  if (available().ok) assert.match(summary.network, /namespaces/);
  // Every acknowledged operation is in the history with where it was committed.
  const acked = summary.operations_log.filter((op) => op.outcome === 'ok');
  assert.equal(acked.length, summary.operations.acknowledged);
  assert.ok(acked.every((op) => Number.isInteger(op.index) && op.index > 0));
  fs.rmSync(path.dirname(out), { recursive: true, force: true });
});
