// Steps 1-2 of the guide for node-1 in this process, with node-2 and node-3 as separate processes
// (see 01-cluster-setup.mjs for the steps spelled out). The other examples start from here.
import { createRaftCoordinator, createClusterManager, ConsensusManager } from '@unrdf/consensus';
import { Daemon } from './daemon.js';
import { startGuideCluster, votersJoined } from './guide-cluster.mjs';

export async function setupGuideCluster({ consensus = {}, cluster = {}, peers = {} } = {}) {
  const local = await startGuideCluster(peers);
  const { ports } = local;
  const daemon1 = new Daemon({ daemonId: 'daemon-1', name: 'cluster-node-1', nodeId: 'node-1', clusterId: 'prod-cluster' });
  const raftNode1 = createRaftCoordinator({
    nodeId: 'node-1',
    port: ports['node-1'],
    host: '127.0.0.1',
    dataDir: local.dataDir('node-1'),
  });
  const clusterMgr1 = createClusterManager({ nodeId: 'node-1', healthCheckInterval: 5000, autoDiscovery: true, ...cluster });
  const consensus1 = new ConsensusManager(daemon1, raftNode1, clusterMgr1, {
    replicationFactor: 3,
    partitionDetectionMs: 3000,
    ...consensus,
  });
  daemon1.attach(consensus1);
  await daemon1.start();
  await raftNode1.initialize();
  await clusterMgr1.initialize(raftNode1);
  await consensus1.initialize();
  for (const nodeId of ['node-2', 'node-3']) {
    raftNode1.addPeer(nodeId, '127.0.0.1', ports[nodeId]);
    clusterMgr1.addNode({ nodeId, host: '127.0.0.1', port: ports[nodeId], capabilities: ['task-execution', 'event-processing'] });
  }
  await votersJoined(raftNode1, 3);
  const stop = async () => {
    await consensus1.shutdown();
    await clusterMgr1.shutdown();
    await raftNode1.stop();
    await daemon1.stop();
    await local.stop();
  };
  return { local, ports, daemon1, raftNode1, clusterMgr1, consensus1, clusterManager: clusterMgr1, stop };
}
