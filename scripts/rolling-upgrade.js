#!/usr/bin/env node
'use strict';
// A rolling upgrade on real processes: three nodes start on an older release (a commit of this
// repository, checked out in a temporary worktree and built into the shared cargo target
// directory), a client writes without pause, and each node in turn is stopped and started on
// this checkout's code with the same data directory. At the end every acknowledged write must be
// applied on every node, and no pause between two acknowledged writes may exceed what an
// election takes. Prints a short report; exits 1 when a check fails.
//
//   node scripts/rolling-upgrade.js [--from COMMIT] [--from-binary FILE] [--json]
//
// --from         the release to upgrade from (default: the commit that wrote
//                __test__/fixtures/format-v1, the last release of storage format 1 / protocol 3)
// --from-binary  that release's built addon, to skip building it
// Nothing is left behind: the worktree, its build output and the data directories go at exit.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { NodeProcess, freePort, tempRoot, WORKER } = require('../support/cluster');

const ROOT = path.resolve(__dirname, '..');
const DEFAULT_FROM = '7da5905aa8ae1d47a403eb00121ecc4394b4644f';
/** Node config of every step: the defaults' election timeouts, named here for the report, and
 * snapshots often enough that a restarted node may be sent one by a node of the other release. */
const CONFIG = { electionTimeoutMin: 150, electionTimeoutMax: 300, heartbeatInterval: 50, snapshotThreshold: 100, logsKeptAfterSnapshot: 10 };
/** A pause in acknowledged writes longer than this failed the upgrade: a graceful restart may
 * cost an election (a leader handing over, or a follower's vote) but not more. */
const MAX_GAP_MS = 10 * CONFIG.electionTimeoutMax;
/** More than a snapshot's worth of writes. */
const WRITES_WHILE_DOWN = 150;

function arg(name) {
  const i = process.argv.indexOf(name);
  return i === -1 ? undefined : process.argv[i + 1];
}

function git(args, options = {}) {
  const r = spawnSync('git', args, { cwd: ROOT, encoding: 'utf8', ...options });
  if (r.status !== 0) throw new Error(`git ${args.join(' ')}: ${r.stderr || r.error}`);
  return (r.stdout || '').trim();
}

/** A worktree of `commit` with its addon in place; `remove()` takes it away again. */
function checkout(commit, binary) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'unrdf-consensus-old-'));
  fs.rmdirSync(dir);
  const remove = () => {
    spawnSync('git', ['worktree', 'remove', '--force', dir], { cwd: ROOT, stdio: 'ignore' });
    fs.rmSync(dir, { recursive: true, force: true });
    spawnSync('git', ['worktree', 'prune'], { cwd: ROOT, stdio: 'ignore' });
  };
  process.once('exit', remove);
  try {
    git(['worktree', 'add', '--detach', dir, commit]);
    fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
    // Where the old release's own loader looks for its addon: the first releases kept it at the
    // package's root, named by lib/platform.js; later ones in lib/, as napi build names it.
    const firstLayout = fs.existsSync(path.join(dir, 'lib', 'platform.js'));
    const addon = firstLayout
      ? path.join(dir, `consensus.${require(path.join(dir, 'lib', 'platform')).platformSuffix()}.node`)
      : path.join(dir, 'lib', fs.readdirSync(path.join(ROOT, 'lib')).find((f) => /^consensus\..+\.node$/.test(f)));
    if (binary) {
      fs.copyFileSync(binary, addon);
    } else {
      // The shared target directory: only this crate recompiles, not its dependencies.
      const targetDir = process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target');
      const r = spawnSync(process.execPath, ['scripts/build.js', '--force'], {
        cwd: dir,
        stdio: 'inherit',
        env: { ...process.env, CARGO_TARGET_DIR: targetDir },
      });
      if (r.status !== 0) throw new Error(`building ${commit} failed`);
    }
  } catch (err) {
    remove();
    throw err;
  }
  return { dir, worker: path.join(dir, 'support', 'node-worker.js'), remove };
}

/** Writes without pause through whichever node answers, until stopped. */
function startWriter(nodes) {
  const acked = [];
  let stopped = false;
  let attempts = 0;
  const failures = {};
  const done = (async () => {
    let seq = 0;
    let at = 0;
    while (!stopped) {
      const live = nodes.filter((n) => n.running);
      const node = live[at++ % Math.max(live.length, 1)];
      if (!node) {
        await new Promise((r) => setTimeout(r, 10));
        continue;
      }
      const operationId = `rolling-${seq}`;
      attempts++;
      try {
        const r = await node.call('replicate', { command: { type: 'rolling', seq }, operationId, forward: true, timeoutMs: 3000 }, 5000);
        acked.push({ operationId, index: r.logIndex, at: Date.now() });
        seq++;
      } catch (err) {
        // Retried with the same id: a write that took effect is not applied twice.
        failures[err.code || 'ERR_NODE_GONE'] = (failures[err.code || 'ERR_NODE_GONE'] || 0) + 1;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  })();
  return {
    acked,
    failures,
    get attempts() {
      return attempts;
    },
    async stop() {
      stopped = true;
      await done;
    },
  };
}

async function waitFor(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check().catch(() => null);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function main() {
  const from = git(['rev-parse', arg('--from') || DEFAULT_FROM]);
  const t0 = Date.now();
  const old = checkout(from, arg('--from-binary'));
  const prepareMs = Date.now() - t0;
  const root = tempRoot('unrdf-consensus-rolling-');
  const nodes = [];
  for (let i = 1; i <= 3; i++) {
    const nodeId = `node-${i}`;
    nodes.push(new NodeProcess({ nodeId, port: await freePort(), dataDir: path.join(root, nodeId), config: CONFIG, worker: old.worker }));
  }
  const snapshotsInstalled = Object.fromEntries(nodes.map((n) => [n.nodeId, 0]));
  for (const n of nodes) {
    n.onEvent = (e) => {
      if (e.name === 'snapshot_installed') snapshotsInstalled[n.nodeId]++;
    };
  }
  const report = { from, to: git(['rev-parse', 'HEAD']), prepareMs, steps: [] };
  let writer = null;
  try {
    await Promise.all(nodes.map((n) => n.start()));
    const [first, ...rest] = nodes;
    for (const n of rest) await first.call('addPeer', { nodeId: n.nodeId, host: n.host, port: n.port });
    writer = startWriter(nodes);
    await waitFor(async () => writer.acked.length >= 200, 30000, '200 writes on the old release');

    // Followers first, the leader last: it hands leadership over when it stops.
    const states = await Promise.all(nodes.map((n) => n.call('state')));
    const order = [...nodes].sort((a, b) => states[nodes.indexOf(a)].isLeader - states[nodes.indexOf(b)].isLeader);
    for (const node of order) {
      const step = { node: node.nodeId, wasLeader: states[nodes.indexOf(node)].isLeader };
      let t = Date.now();
      await node.stop();
      step.stopMs = Date.now() - t;
      // Down long enough for the others to snapshot and purge past it: it may come back to a
      // snapshot sent by a node of the other release.
      const resumeAt = writer.acked.length + WRITES_WHILE_DOWN;
      await waitFor(async () => writer.acked.length >= resumeAt, 30000, `writes while ${node.nodeId} is down`);
      t = Date.now();
      node.worker = WORKER;
      await node.start();
      step.startMs = Date.now() - t;
      // Caught up: it applied a write acknowledged after it started.
      const target = writer.acked.length + 20;
      await waitFor(async () => writer.acked.length >= target, 30000, `writes after ${node.nodeId} restarted`);
      const index = writer.acked[target - 1].index;
      t = Date.now();
      await waitFor(async () => (await node.call('state')).lastApplied >= index, 30000, `${node.nodeId} catching up`);
      step.catchUpMs = Date.now() - t;
      step.ackedSoFar = writer.acked.length;
      report.steps.push(step);
    }
    await waitFor(async () => writer.acked.length >= report.steps.at(-1).ackedSoFar + 200, 30000, '200 writes on the new release');
    await writer.stop();

    const acked = writer.acked;
    const lastIndex = Math.max(...acked.map((a) => a.index));
    await waitFor(async () => (await Promise.all(nodes.map((n) => n.call('state')))).every((s) => s.lastApplied >= lastIndex), 30000, 'every node applying the last write');
    const ids = acked.map((a) => a.operationId);
    const missing = {};
    for (const n of nodes) {
      const found = await n.call('operations', { operationIds: ids });
      missing[n.nodeId] = found.filter((f) => f === null).length;
    }
    let maxGapMs = 0;
    for (let i = 1; i < acked.length; i++) maxGapMs = Math.max(maxGapMs, acked[i].at - acked[i - 1].at);
    Object.assign(report, {
      writesAcked: acked.length,
      writeAttempts: writer.attempts,
      failedAttempts: writer.failures,
      maxWriteGapMs: maxGapMs,
      maxGapAllowedMs: MAX_GAP_MS,
      missingOnNode: missing,
      snapshotsInstalled,
      totalMs: Date.now() - t0,
    });
    report.ok = Object.values(missing).every((m) => m === 0) && maxGapMs <= MAX_GAP_MS;
  } finally {
    if (writer) await writer.stop();
    await Promise.all(nodes.map((n) => n.stop()));
    fs.rmSync(root, { recursive: true, force: true });
    old.remove();
  }
  if (process.argv.includes('--json')) {
    console.log(JSON.stringify(report));
  } else {
    console.log(`rolling upgrade ${report.from.slice(0, 10)} -> ${report.to.slice(0, 10)} (old release ready in ${report.prepareMs} ms)`);
    for (const s of report.steps) {
      console.log(`  ${s.node}${s.wasLeader ? ' (leader)' : ''}: stopped in ${s.stopMs} ms, new code started in ${s.startMs} ms, caught up in ${s.catchUpMs} ms`);
    }
    console.log(`  writes acknowledged: ${report.writesAcked} (${report.writeAttempts} attempts, failed: ${JSON.stringify(report.failedAttempts)})`);
    console.log(`  longest pause between acknowledged writes: ${report.maxWriteGapMs} ms (allowed ${report.maxGapAllowedMs} ms)`);
    console.log(`  acknowledged writes missing per node: ${JSON.stringify(report.missingOnNode)}`);
    console.log(`  snapshots installed from a peer, per node: ${JSON.stringify(report.snapshotsInstalled)}`);
    console.log(`  ${report.ok ? 'OK' : 'FAILED'} in ${report.totalMs} ms`);
  }
  process.exitCode = report.ok ? 0 : 1;
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err.stack || err.message);
    process.exit(1);
  });
}

module.exports = { main };
