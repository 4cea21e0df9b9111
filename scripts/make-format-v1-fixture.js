'use strict';
// Regenerates __test__/fixtures/format-v1/: the data directories of a 3-node cluster written by a
// build that stores records in the first storage format (bincode 1 of the engine's own types, no
// `format_version` key). Run it with that build's binary:
//
//   NAPI_RS_NATIVE_LIBRARY_PATH=/path/to/old/consensus.linux-x64-gnu.node \
//     node scripts/make-format-v1-fixture.js [outDir]
//
// The cluster runs the guide's stack (ClusterManager registers every member in the replicated
// registry), takes a few hundred writes with operation ids, and snapshots and purges its log on
// every node. manifest.json records what a later build must find again.
const fs = require('node:fs');
const path = require('node:path');
const { Cluster } = require('../support/cluster');

const OUT = path.resolve(process.argv[2] || path.join(__dirname, '..', '__test__', 'fixtures', 'format-v1'));
/** The membership stored in the log names these ports, so the nodes must get them again. */
const PORTS = [47311, 47312, 47313];
const WRITES = 300;

async function main() {
  const cluster = new Cluster(3, {
    config: { snapshotThreshold: 100, logsKeptAfterSnapshot: 20 },
    guide: {
      consensus: { partitionDetectionMs: 1000, operationTimeoutMs: 4000 },
      cluster: { healthCheckInterval: 250, healthCheckTimeout: 250, maxFailedHealthChecks: 2 },
    },
  });
  await cluster.prepare();
  cluster.nodes.forEach((n, i) => (n.port = PORTS[i]));
  try {
    await Promise.all(cluster.nodes.map((n) => n.start()));
    const first = await cluster.form();
    const load = await first.call('load', { count: WRITES, concurrency: 8, prefix: 'v1op' });
    if (load.acked.length !== WRITES) throw new Error(`only ${load.acked.length} of ${WRITES} writes acknowledged`);
    // A registry write that is not a membership record, and a few writes without an id.
    await first.call('addNode', { node: { nodeId: 'node-9', host: '127.0.0.1', port: 1, capabilities: ['archived'] } });
    for (let i = 0; i < 5; i++) await first.call('replicate', { command: { type: 'no-id', seq: i } });
    const last = await first.call('replicate', { command: { type: 'last' }, operationId: 'v1-last' });
    await cluster.waitFor(async () => (await cluster.states()).every((s) => s.lastApplied >= last.logIndex));
    for (const n of cluster.nodes) await n.call('compact', { keep: 20 }).catch(() => null);

    const operationIds = [...load.acked.map(([seq]) => `v1op-${seq}`), 'v1-last'];
    const expected = await first.call('operations', { operationIds });
    const members = (await first.call('clusterNodes')).map((m) => m.nodeId ?? m.id).sort();
    const states = await cluster.states();
    await cluster.stop({ keepData: true });

    fs.rmSync(OUT, { recursive: true, force: true });
    const nodes = {};
    for (const [i, n] of cluster.nodes.entries()) {
      const dir = path.join(OUT, n.nodeId);
      fs.mkdirSync(dir, { recursive: true });
      fs.copyFileSync(path.join(n.dataDir, 'data.mdb'), path.join(dir, 'data.mdb'));
      nodes[n.nodeId] = { port: PORTS[i], lastApplied: states[i].lastApplied, term: states[i].term };
    }
    const manifest = {
      nodes,
      operations: Object.fromEntries(operationIds.map((id, i) => [id, expected[i]])),
      members,
    };
    fs.writeFileSync(path.join(OUT, 'manifest.json'), JSON.stringify(manifest, null, 1) + '\n');
    fs.rmSync(cluster.root, { recursive: true, force: true });
    for (const id of Object.keys(nodes)) {
      console.log(`${id}: ${fs.statSync(path.join(OUT, id, 'data.mdb')).size} bytes`);
    }
  } finally {
    await cluster.stop().catch(() => {});
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
