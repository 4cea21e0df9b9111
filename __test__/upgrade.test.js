'use strict';
// Upgrading in place: the data directories of a 3-node cluster written by the release before
// storage format 2 (fixtures/format-v1, made as its README says) start with this build, are
// migrated, and hold everything they held; a directory in a format newer than this build knows
// is refused with ERR_STORAGE by the node and by the offline tools.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { Cluster, canListen, tempRoot } = require('../support/cluster');
const { runCli } = require('../support/cli');
const { createRaftCoordinator } = require('..');

const FIXTURE = path.join(__dirname, 'fixtures', 'format-v1');
const manifest = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'manifest.json'), 'utf8'));
/** Longer than any fixture will be kept: 100 years. */
const FIXTURE_LIFETIME_MS = 100 * 365 * 24 * 3600 * 1000;
const GUIDE = {
  consensus: { partitionDetectionMs: 1000, operationTimeoutMs: 4000 },
  cluster: { healthCheckInterval: 250, healthCheckTimeout: 250, maxFailedHealthChecks: 2 },
};

/**
 * Starts `node` on the port the fixture gave it, which lies in the kernel's range for outgoing connections.
 * Between the check that it is free and the node's bind, a connection may take it as its local port for a
 * moment: the cluster's own nodes reach for each other as they start. A start refused that way is tried
 * again, in a new process, once the port is free.
 */
async function startOnFixturePort(cluster, node) {
  for (let attempt = 1; ; attempt++) {
    await cluster.waitFor(() => canListen(node.port), 30000);
    try {
      return await node.start();
    } catch (err) {
      if (err.code !== 'ERR_ADDRESS_IN_USE' || attempt === 5) throw err;
      await node.kill('SIGKILL');
    }
  }
}

/** A copy of the fixture's directories in a fresh temporary root. */
function copyFixture() {
  const root = tempRoot();
  for (const id of Object.keys(manifest.nodes)) {
    fs.mkdirSync(path.join(root, id));
    fs.copyFileSync(path.join(FIXTURE, id, 'data.mdb'), path.join(root, id, 'data.mdb'));
  }
  return root;
}

test('a format 1 cluster starts on this build: every operation and registry record is found again, and it takes new writes', { timeout: 180000 }, async () => {
  const root = copyFixture();
  // The fixture's operations were proposed when it was made; with the default 24 h window the
  // first write of this run would expire them all a day later. The window is not what this test
  // is about, so it spans the fixture's whole life.
  const cluster = new Cluster(3, {
    root,
    config: { snapshotThreshold: 100, logsKeptAfterSnapshot: 20, operationTtlMs: FIXTURE_LIFETIME_MS },
    guide: GUIDE,
  });
  await cluster.prepare();
  // The membership stored in the log names the ports the fixture's nodes had.
  for (const n of cluster.nodes) n.port = manifest.nodes[n.nodeId].port;
  try {
    await Promise.all(cluster.nodes.map((n) => startOnFixturePort(cluster, n)));
    // The node that led before the restart leads again at once, but a node that starts before it
    // can reach it stands after an election timeout: leadership may move once. The writes go to a
    // leader that has committed in its term and that every node follows.
    const leader = await cluster.waitFor(async () => {
      const candidate = await cluster.leader(30000);
      await candidate.call('replicate', { command: { type: 'after-restart' }, operationId: 'v2-first' });
      const states = await cluster.states();
      return states.every((s) => s.leaderId === candidate.nodeId) ? candidate : null;
    }, 30000);
    const operationIds = Object.keys(manifest.operations);
    assert.ok(operationIds.length > 300);
    for (const n of cluster.nodes) {
      const found = await n.call('operations', { operationIds });
      assert.deepEqual(
        Object.fromEntries(operationIds.map((id, i) => [id, found[i]])),
        manifest.operations,
        `${n.nodeId} finds every operation where it took effect`,
      );
      const state = await n.call('state');
      assert.ok(state.lastApplied >= manifest.nodes[n.nodeId].lastApplied, `${n.nodeId} applied what it had`);
    }
    await cluster.waitFor(async () => {
      const lists = await Promise.all(cluster.nodes.map((n) => n.call('clusterNodes')));
      return lists.every((l) => manifest.members.every((id) => l.some((m) => (m.nodeId ?? m.id) === id)));
    }, 20000);

    const load = await leader.call('load', { count: 150, concurrency: 8, prefix: 'v2op' });
    assert.equal(load.acked.length, 150, `the upgraded cluster acknowledges new writes: ${JSON.stringify(load.errors)}`);
    const last = await leader.call('replicate', { command: { type: 'after-upgrade' }, operationId: 'v2-last' });
    const newIds = ['v2-first', ...load.acked.map(([seq]) => `v2op-${seq}`), 'v2-last'];
    await cluster.waitFor(async () => {
      const states = await cluster.states();
      return states.every((s) => s.lastApplied >= last.logIndex);
    }, 20000);
    for (const n of cluster.nodes) {
      const found = await n.call('operations', { operationIds: newIds });
      assert.ok(found.every((f) => f !== null), `${n.nodeId} applied every new write`);
    }
  } finally {
    await cluster.stop();
  }
});

/**
 * Marks a data directory as written in storage format `version`. LMDB keeps a small value right
 * after its key in the leaf page, without a checksum, so the stored version can be rewritten in
 * the file of a stopped node as a newer release would have written it.
 */
function markFormat(dataFile, version) {
  const bytes = fs.readFileSync(dataFile);
  const key = Buffer.from('format_version');
  let patched = 0;
  for (let at = bytes.indexOf(key); at !== -1; at = bytes.indexOf(key, at + 1)) {
    bytes.writeUInt32BE(version, at + key.length);
    patched++;
  }
  assert.ok(patched > 0, 'the directory records its format version');
  fs.writeFileSync(dataFile, bytes);
}

test('a data directory in a newer storage format is refused with ERR_STORAGE, saying what to do', { timeout: 60000 }, async () => {
  const root = tempRoot();
  const dataDir = path.join(root, 'node-1');
  const first = createRaftCoordinator({ nodeId: 'node-1', port: 0, dataDir, bootstrap: true });
  await first.initialize();
  await first.replicateCommand({ type: 'before' }, { operationId: 'op-1' });
  await first.shutdown();
  markFormat(path.join(dataDir, 'data.mdb'), 99);

  const again = createRaftCoordinator({ nodeId: 'node-1', port: 0, dataDir });
  await assert.rejects(again.initialize(), (err) => {
    assert.equal(err.code, 'ERR_STORAGE');
    assert.match(err.message, /storage format 99/);
    assert.match(err.message, /formats 1 to \d+/);
    assert.match(err.message, /restore a backup/);
    return true;
  });
  await again.shutdown().catch(() => {});

  const exported = await runCli(['export', '--data-dir', dataDir]);
  assert.notEqual(exported.code, 0);
  assert.match(exported.stderr, /ERR_STORAGE/);
  assert.match(exported.stderr, /storage format 99/);
});
