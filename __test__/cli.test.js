'use strict';
// The `unrdf-consensus` CLI against real node processes and real data directories: status of a
// cluster of `unrdf-consensus node` processes (and of one that lost its quorum), backup while
// writes continue and restore, recovery of a survivor with --force-new-cluster, export, and the
// refusals that keep an operator's mistake harmless.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Cluster, NodeProcess, freePort } = require('../support/cluster');
const { runCli, startCliNode } = require('../support/cli');

const TOKEN = 'cli-token-0123456789abcdef';
const env = { UNRDF_CONSENSUS_TOKEN: TOKEN };

function tmpdir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

async function until(check, timeoutMs = 15000, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await check();
    if (last) return last;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`condition not met within ${timeoutMs} ms`);
}

test('usage: --help on every command, exit code 2 for bad usage', async () => {
  for (const command of ['status', 'members', 'backup', 'restore', 'recover', 'export', 'node']) {
    const r = await runCli([command, '--help']);
    assert.equal(r.code, 0, command);
    assert.match(r.stdout, new RegExp(`Usage: unrdf-consensus ${command}`));
  }
  assert.equal((await runCli(['--help'])).code, 0);
  assert.equal((await runCli([])).code, 2);
  assert.equal((await runCli(['frobnicate'])).code, 2);
  assert.equal((await runCli(['status'])).code, 2);
  assert.equal((await runCli(['status', 'http://127.0.0.1:1', '--bogus'])).code, 2);
  assert.equal((await runCli(['recover', '--data-dir', '/nonexistent'])).code, 2, 'recover without --force-new-cluster');
});

test('status: `unrdf-consensus node` processes, a table and JSON, and a non-zero exit without quorum', { timeout: 180000 }, async () => {
  const root = tmpdir('unrdf-cli-status-');
  const ports = [await freePort(), await freePort(), await freePort()];
  const members = ports.map((p, i) => `node-${i + 1}@127.0.0.1:${p}`).join(',');
  const nodes = [];
  try {
    for (let i = 0; i < 3; i++) {
      const config = path.join(root, `node-${i + 1}.json`);
      fs.writeFileSync(config, JSON.stringify({ nodeId: `node-${i + 1}`, port: ports[i], dataDir: path.join(root, `node-${i + 1}`), admin: { port: 0 } }));
      nodes.push(startCliNode(['--config', config, '--initial-members', members], { env }));
    }
    const procs = await Promise.all(nodes);
    const urls = procs.map((p) => p.ready.admin);

    // Every node follows the leader and answers healthy (the first moments after start are an
    // election, and followers that have not heard from the winner yet).
    await until(async () => {
      const r = await runCli(['status', ...urls, '--json'], { env });
      if (r.code !== 0) return false;
      const status = JSON.parse(r.stdout);
      // The leader's view too: every voter holds its log (a node that just joined may not yet).
      return status.healthyVoters === 3 && status.nodes.every((n) => n.healthy && n.leader !== null && typeof n.lag === 'number');
    }, 30000);
    const healthy = await runCli(['status', ...urls], { env });
    assert.equal(healthy.code, 0, healthy.stdout);
    assert.match(healthy.stdout, /quorum: yes \(3 of 3 voters healthy\)/);
    assert.match(healthy.stdout, /^NODE\s+ROLE\s+TERM\s+LEADER\s+COMMIT\/APPLIED\s+LAG\s+HEALTH/m);
    const leaderLine = /^leader (node-\d), term (\d+), quorum: yes/m.exec(healthy.stdout);
    assert.ok(leaderLine, healthy.stdout);
    for (const n of ['node-1', 'node-2', 'node-3']) assert.match(healthy.stdout, new RegExp(`^${n}\\s+(leader|follower)\\s+\\d+\\s+${leaderLine[1]}\\s+\\d+/\\d+\\s+\\d+\\s+ok$`, 'm'));

    const json = await runCli(['status', ...urls, '--json'], { env });
    assert.equal(json.code, 0, json.stderr);
    const parsed = JSON.parse(json.stdout);
    assert.equal(parsed.leader, leaderLine[1]);
    assert.equal(parsed.quorum, true);
    assert.equal(parsed.term, Number(leaderLine[2]));
    assert.equal(parsed.nodes.length, 3);
    for (const n of parsed.nodes) {
      assert.equal(n.reachable, true);
      assert.equal(typeof n.lag, 'number');
      assert.equal(n.healthy, true);
    }

    // A follower alone vouches for the quorum it hears from.
    const followerUrl = urls[parsed.nodes.findIndex((n) => n.role === 'follower')];
    const one = await runCli(['status', followerUrl], { env });
    assert.equal(one.code, 0, one.stdout);
    assert.match(one.stdout, new RegExp(`leader ${leaderLine[1]}, term \\d+, quorum: yes \\(as node-\\d sees it`));

    // A wrong token is a failure, not a cluster without quorum that looks fine.
    const denied = await runCli(['status', urls[0], '--token', 'wrong-token-0123456789abcdef']);
    assert.equal(denied.code, 1);
    assert.match(denied.stdout, /401 ERR_AUTH/);

    // Two of three gone: no quorum, a non-zero exit, and the dead ones shown unreachable.
    const leaderIndex = Number(leaderLine[1].slice(5)) - 1;
    const victims = [leaderIndex, (leaderIndex + 1) % 3];
    for (const i of victims) {
      procs[i].child.kill('SIGKILL');
      await procs[i].exited;
    }
    const survivor = procs.find((_, i) => !victims.includes(i));
    const lost = await until(async () => {
      const r = await runCli(['status', ...urls, '--json'], { env });
      return r.code === 1 ? r : null;
    }, 20000);
    const view = JSON.parse(lost.stdout);
    assert.equal(view.quorum, false);
    assert.equal(view.leader, null);
    assert.equal(view.nodes.filter((n) => !n.reachable).length, 2);
    const table = await runCli(['status', ...urls], { env });
    assert.equal(table.code, 1);
    assert.match(table.stdout, /quorum: no/);

    // SIGTERM stops the survivor gracefully.
    survivor.child.kill('SIGTERM');
    const exit = await survivor.exited;
    assert.equal(exit.code, 0, survivor.stderr);
    assert.match(survivor.stderr, /SIGTERM: stopping[\s\S]*stopped/);
  } finally {
    for (const p of nodes) {
      const proc = await p.catch(() => null);
      if (proc && proc.child.exitCode === null && proc.child.signalCode === null) {
        proc.child.kill('SIGKILL');
        await proc.exited;
      }
    }
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('backup while 10,000 operations stream in, restore into a fresh directory: a node there holds every operation acknowledged before', { timeout: 240000 }, async () => {
  const cluster = new Cluster(3);
  const work = tmpdir('unrdf-cli-backup-');
  let restored = null;
  try {
    await cluster.start();
    const first = await cluster.form();
    const admin = await first.call('listenAdmin', { token: TOKEN });

    const pre = await first.call('load', { count: 10000, concurrency: 64, prefix: 'pre' }, 180000);
    assert.deepEqual(pre.errors, {});
    const acked = new Set(pre.acked.map(([seq]) => `pre-${seq}`));

    // Writes keep coming while the backup runs.
    const during = [];
    first.onEvent = (e) => {
      if (e.name === 'acked') for (const [seq] of e.payload) during.push(`during-${seq}`);
    };
    await first.call('stream', { concurrency: 16, prefix: 'during' });
    await until(() => during.length >= 200);
    for (const id of during) acked.add(id);
    const seenBefore = during.length;

    const file = path.join(work, 'node-1.backup');
    const backup = await runCli(['backup', admin.url, file], { env });
    assert.equal(backup.code, 0, backup.stderr);
    assert.match(backup.stdout, /wrote \d+ bytes \(node node-1\)/);
    assert.ok(during.length > seenBefore, 'writes went on during the backup');
    // The same file again is refused without --force.
    const again = await runCli(['backup', admin.url, file], { env });
    assert.equal(again.code, 1);
    assert.match(again.stderr, /exists/);

    // Restore: refused into a non-empty directory, done into a fresh one.
    const occupied = path.join(work, 'occupied');
    fs.mkdirSync(occupied);
    fs.writeFileSync(path.join(occupied, 'keep.txt'), 'mine');
    const refused = await runCli(['restore', file, '--data-dir', occupied]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /not empty.*--force/);
    assert.equal(fs.readFileSync(path.join(occupied, 'keep.txt'), 'utf8'), 'mine');
    const notBackup = path.join(work, 'not-a-backup');
    fs.writeFileSync(notBackup, 'x'.repeat(10000));
    const bad = await runCli(['restore', notBackup, '--data-dir', path.join(work, 'bad')]);
    assert.equal(bad.code, 1);
    assert.ok(!fs.existsSync(path.join(work, 'bad')), 'a bad file leaves nothing behind');

    const fresh = path.join(work, 'restored');
    const ok = await runCli(['restore', file, '--data-dir', fresh]);
    assert.equal(ok.code, 0, ok.stderr);

    // A node started there (in a cluster id of its own, so it stays apart from the running
    // cluster) holds every operation acknowledged before the backup began.
    restored = new NodeProcess({ nodeId: 'node-1', port: await freePort(), dataDir: fresh, config: { clusterId: 'restored' } });
    await restored.start();
    const ids = [...acked];
    const found = await restored.call('operations', { operationIds: ids }, 60000);
    const lost = ids.filter((_, i) => found[i] === null);
    assert.deepEqual(lost.slice(0, 10), [], `${lost.length} of ${ids.length} acknowledged operations missing`);
    await restored.stop();

    // --force replaces a restored directory that no node runs on.
    const forced = await runCli(['restore', file, '--data-dir', fresh, '--force']);
    assert.equal(forced.code, 0, forced.stderr);
  } finally {
    if (restored) await restored.stop();
    await cluster.stop();
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test('recover --force-new-cluster: a survivor of 3 serves writes alone with every acknowledged operation, then two new nodes join it', { timeout: 240000 }, async () => {
  const cluster = new Cluster(3);
  const work = tmpdir('unrdf-cli-recover-');
  const extra = [];
  try {
    await cluster.start();
    const first = await cluster.form();
    const load = await first.call('load', { count: 2500, concurrency: 32, prefix: 'ack' });
    assert.deepEqual(load.errors, {});
    const ids = load.acked.map(([seq]) => `ack-${seq}`);

    // The leader acknowledged them all: it survives; the others die and lose their disks. It
    // snapshots and purges its log first (openraft keeps entries a lagging follower still needs,
    // so every node catches up before), so the recovery starts from a compacted log.
    const survivor = await cluster.leader();
    await cluster.waitFor(async () => {
      const states = await cluster.states();
      return states.every((s) => s.lastApplied === states[0].lastApplied);
    }, 30000);
    await survivor.call('compact', { keep: 0 });
    await cluster.waitFor(async () => {
      const s = await survivor.call('state');
      return s.logLength < s.lastLogIndex;
    }, 30000);
    for (const n of cluster.nodes.filter((x) => x !== survivor)) {
      await n.kill('SIGKILL');
      fs.rmSync(n.dataDir, { recursive: true, force: true });
    }
    await survivor.kill('SIGKILL');

    // Refusals first: not a node's directory, and a node's directory without the flag.
    const empty = path.join(work, 'empty');
    fs.mkdirSync(empty);
    const notNode = await runCli(['recover', '--data-dir', empty, '--force-new-cluster']);
    assert.equal(notNode.code, 1);
    assert.match(notNode.stderr, /holds no node's data/);
    assert.deepEqual(fs.readdirSync(empty), [], 'nothing was created there');
    const junk = path.join(work, 'junk');
    fs.mkdirSync(junk);
    fs.writeFileSync(path.join(junk, 'data.mdb'), 'not lmdb');
    const notLmdb = await runCli(['recover', '--data-dir', junk, '--force-new-cluster']);
    assert.equal(notLmdb.code, 1);
    const wrongId = await runCli(['recover', '--data-dir', survivor.dataDir, '--force-new-cluster', '--node-id', 'node-9']);
    assert.equal(wrongId.code, 1);
    assert.match(wrongId.stderr, new RegExp(`belongs to node ${survivor.nodeId}`));

    const recover = await runCli(['recover', '--data-dir', survivor.dataDir, '--force-new-cluster']);
    assert.equal(recover.code, 0, recover.stderr);
    assert.match(recover.stderr, /FORCE-NEW-CLUSTER/);
    const report = JSON.parse(recover.stdout);
    assert.equal(report.recovered, survivor.nodeId);
    assert.equal(report.previousVoters.length, 3);

    // Export while it is stopped: the log and the operation registry as NDJSON.
    const exportFile = path.join(work, 'export.ndjson');
    const exported = await runCli(['export', '--data-dir', survivor.dataDir, '--out', exportFile]);
    assert.equal(exported.code, 0, exported.stderr);
    const lines = fs.readFileSync(exportFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(lines[0].type, 'header');
    assert.equal(lines[0].nodeId, survivor.nodeId);
    // The survivor had snapshotted and purged: recovery works from a compacted log too.
    assert.ok(lines[0].purgedIndex > 0, JSON.stringify(lines[0]));
    const exportedOps = new Set(lines.filter((l) => l.type === 'operation').map((l) => l.id));
    assert.ok(ids.every((id) => exportedOps.has(id)), 'every acknowledged operation id is exported');
    const last = lines.filter((l) => l.type === 'entry').at(-1);
    assert.equal(last.kind, 'membership');
    assert.deepEqual(last.voters, [survivor.nodeId]);
    const toStdout = await runCli(['export', '--data-dir', survivor.dataDir]);
    assert.equal(toStdout.code, 0);
    assert.equal(toStdout.stdout.trim().split('\n').length, lines.length);

    // Restarted, it leads a one-node cluster and serves writes.
    await survivor.start();
    await cluster.waitFor(async () => {
      const s = await survivor.call('state');
      return s.isLeader && s.membership.voters.length === 1 ? s : null;
    }, 20000);
    const write = await survivor.call('replicate', { command: { type: 'after-recovery' }, operationId: 'after-recovery' });
    assert.equal(write.committed, true);
    const found = await survivor.call('operations', { operationIds: ids });
    assert.deepEqual(ids.filter((_, i) => found[i] === null), []);

    // Two new nodes (wiped, on new ports) join it.
    for (const id of cluster.nodes.filter((x) => x !== survivor).map((x) => x.nodeId)) {
      const n = new NodeProcess({ nodeId: id, port: await freePort(), dataDir: path.join(work, `${id}-new`) });
      extra.push(n);
      await n.start();
      await survivor.call('addPeer', { nodeId: n.nodeId, host: n.host, port: n.port });
    }
    const s = await survivor.call('state');
    assert.equal(s.membership.voters.length, 3);
    for (const n of extra) {
      await cluster.waitFor(async () => {
        const got = await n.call('operations', { operationIds: [...ids, 'after-recovery'] });
        return got.every((x) => x !== null);
      }, 30000);
    }
    const more = await survivor.call('load', { count: 50, concurrency: 8, prefix: 'grown' });
    assert.deepEqual(more.errors, {});
  } finally {
    for (const n of extra) await n.stop();
    await cluster.stop();
    fs.rmSync(work, { recursive: true, force: true });
  }
});
