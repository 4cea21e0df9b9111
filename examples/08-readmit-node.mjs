// Guide, "Readmitting Rejoined Node": node-2 goes down, the cluster moves on (and compacts its
// log), then node-2 comes back in this process on its data directory with a new daemon and
// ConsensusManager, and catches up: by snapshot past the compaction, then by log.
import { createRaftCoordinator, createClusterManager, ConsensusManager } from '@unrdf/consensus';
import { Daemon } from './lib/daemon.js';
import { setupGuideCluster } from './lib/setup.mjs';

const compaction = { logCompactionThreshold: 200, maxLogSize: 400 };
const { consensus1, local, ports, stop } = await setupGuideCluster({ consensus: compaction, peers: { consensus: compaction } });
await local.peers['node-2'].kill('SIGKILL');
console.log('node-2 went down');
for (let i = 0; i < 600; i++) {
  await consensus1.replicateOperation({ id: `missed-${i}`, daemonId: 'daemon-1', type: 'task', payload: { i } });
}
console.log('600 operations committed while node-2 was down; log size now', consensus1.getConsensusState().logSize);

// When node comes back online
const daemon2 = new Daemon({
  daemonId: 'daemon-2',
  name: 'cluster-node-2',
  nodeId: 'node-2',
  clusterId: 'prod-cluster',
});
const raftNode2 = createRaftCoordinator({ nodeId: 'node-2', host: '127.0.0.1', port: ports['node-2'], dataDir: local.dataDir('node-2') });
const clusterMgr2 = createClusterManager({ nodeId: 'node-2' });

const consensus2 = new ConsensusManager(daemon2, raftNode2, clusterMgr2, compaction);
daemon2.attach(consensus2);
consensus2.on('consensus:snapshot_installed', ({ lastIncludedIndex }) => {
  console.log(`Installed a snapshot through index ${lastIncludedIndex}`);
});
await raftNode2.initialize();
await clusterMgr2.initialize(raftNode2);
await consensus2.initialize();

// Consensus automatically replicates missing log entries
consensus2.on('log:compacted', ({ entriesRemoved }) => {
  console.log(`Caught up on ${entriesRemoved} operations`);
});

const target = consensus1.getConsensusState().commitIndex;
while (consensus2.getConsensusState().lastAppliedIndex < target) await new Promise((r) => setTimeout(r, 20));
console.log(`node-2 caught up to index ${target}; its daemon executed ${daemon2.executed.length} operations since it came back`);
await consensus2.shutdown();
await clusterMgr2.shutdown();
await raftNode2.stop();
await stop();
