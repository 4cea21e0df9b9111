'use strict';
// Flame graphs of a node process while a load level runs (`npm run bench -- --flame DIR`): `perf`
// samples the leader's process, and inferno (`cargo install inferno`) folds the stacks and draws
// them. Node runs with --perf-basic-prof so that JavaScript frames carry their function names;
// the addon's frames come from its symbols (a build that is not stripped).
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const SAMPLE_HZ = 499;

/** Why flame graphs cannot be drawn here, or null when they can. */
function flameUnavailable() {
  for (const [tool, hint] of [
    ['perf', 'Debian: apt-get install linux-perf'],
    ['inferno-collapse-perf', 'cargo install inferno'],
    ['inferno-flamegraph', 'cargo install inferno'],
  ]) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `${tool} is not on PATH (${hint})`;
  }
  return null;
}

/**
 * What a node process needs for its JavaScript frames to have names in perf's samples; V8's own
 * log, which the option also turns on, goes to `dir` rather than the working directory.
 */
function flameNodeArgs(dir) {
  fs.mkdirSync(dir, { recursive: true });
  return ['--perf-basic-prof', '--no-logfile-per-isolate', `--logfile=${path.resolve(dir, 'v8-%p.log')}`];
}

/**
 * Samples process `pid` while `work()` runs and writes `<dir>/<name>.svg` (and the folded stacks
 * beside it, for diffing two runs). Returns work()'s result.
 */
async function withFlameGraph(dir, name, pid, work) {
  fs.mkdirSync(dir, { recursive: true });
  const data = path.join(dir, `${name}.perf.data`);
  const perf = spawn('perf', ['record', '-F', String(SAMPLE_HZ), '-g', '-p', String(pid), '-o', data], { stdio: 'ignore' });
  const exited = new Promise((r) => perf.once('exit', r));
  // perf needs a moment to attach; a level lasts seconds, so the first few samples lost are noise.
  await new Promise((r) => setTimeout(r, 200));
  let result;
  try {
    result = await work();
  } finally {
    perf.kill('SIGINT');
    await exited;
  }
  const script = spawnSync('perf', ['script', '-i', data], { maxBuffer: 1 << 30 });
  const folded = spawnSync('inferno-collapse-perf', [], { input: script.stdout, maxBuffer: 1 << 30 });
  fs.writeFileSync(path.join(dir, `${name}.folded`), folded.stdout);
  const svg = spawnSync('inferno-flamegraph', ['--title', name], { input: folded.stdout, maxBuffer: 1 << 30 });
  fs.writeFileSync(path.join(dir, `${name}.svg`), svg.stdout);
  fs.rmSync(data, { force: true });
  return result;
}

/** Where a level's CPU goes, by the frames a stack passes through (bench/README.md's table). */
const COST_CENTRES = {
  napi: /napi/,
  'promise machinery': /Builtins_(FulfillPromise|RunMicrotasks|ResumeGeneratorTrampoline|PromiseFulfillReactionJob|AsyncFunction)/,
  LMDB: /mdb_/,
  memmove: /__memmove/,
  'JSON (V8 and serde)': /JsonStringifier|JsonParser|serde_json/,
  GC: /Scavenger|MarkCompact|Heap::/,
  'kernel wake-ups': /futex|epoll_wait|finish_task_switch/,
};

/**
 * The share of samples whose stack contains each of `patterns` (a frame name matching the
 * regular expression), from a folded-stacks file: where the time of a level goes, in numbers.
 */
function shares(foldedFile, patterns) {
  const out = Object.fromEntries(Object.keys(patterns).map((k) => [k, 0]));
  let total = 0;
  for (const line of fs.readFileSync(foldedFile, 'utf8').split('\n')) {
    const at = line.lastIndexOf(' ');
    if (at < 0) continue;
    const n = Number(line.slice(at + 1));
    const stack = line.slice(0, at);
    total += n;
    for (const [k, re] of Object.entries(patterns)) if (re.test(stack)) out[k] += n;
  }
  return { shares: Object.fromEntries(Object.entries(out).map(([k, v]) => [k, total ? Number((v / total).toFixed(3)) : 0])) };
}

module.exports = { flameUnavailable, flameNodeArgs, withFlameGraph, shares, COST_CENTRES };
