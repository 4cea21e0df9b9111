// Guide, "Cluster Setup Procedures", Steps 1-4: node-1 (this process) founds the cluster and adds
// node-2 and node-3 (two more processes on this machine). Loopback addresses replace 10.0.1.x.
import { createRaftCoordinator, createClusterManager, ConsensusManager } from '@unrdf/consensus';
import { Daemon } from './lib/daemon.js';
import { startGuideCluster, votersJoined } from './lib/guide-cluster.mjs';

const local = await startGuideCluster();
const { ports } = local;

// Step 1: Initialize Cluster
// Node 1 (Bootstrap)
const daemon1 = new Daemon({
  daemonId: 'daemon-1',
  name: 'cluster-node-1',
  nodeId: 'node-1',
  clusterId: 'prod-cluster',
});

const raftNode1 = createRaftCoordinator({
  nodeId: 'node-1',
  port: ports['node-1'],
  host: '127.0.0.1', // Internal IP
  dataDir: local.dataDir('node-1'),
});

const clusterMgr1 = createClusterManager({
  nodeId: 'node-1',
  healthCheckInterval: 5000,
  autoDiscovery: true,
});

const consensus1 = new ConsensusManager(daemon1, raftNode1, clusterMgr1, {
  replicationFactor: 3,
  partitionDetectionMs: 3000,
});

await daemon1.start();
await raftNode1.initialize();
await clusterMgr1.initialize(raftNode1);
await consensus1.initialize();

// Step 2: Add Cluster Peers
// On leader (node-1)
raftNode1.addPeer('node-2', '127.0.0.1', ports['node-2']);
raftNode1.addPeer('node-3', '127.0.0.1', ports['node-3']);

// Add to cluster manager
clusterMgr1.addNode({
  nodeId: 'node-2',
  host: '127.0.0.1',
  port: ports['node-2'],
  capabilities: ['task-execution', 'event-processing'],
});

clusterMgr1.addNode({
  nodeId: 'node-3',
  host: '127.0.0.1',
  port: ports['node-3'],
  capabilities: ['task-execution', 'event-processing'],
});

// The guide does not await Step 2's calls; before verifying, wait until both peers are voters.
await votersJoined(raftNode1, 3);

// Step 3: Verify Cluster Health
// Check leader election
const state = consensus1.getConsensusState();
console.log('Leader:', state.leaderId);
console.log('Is Leader:', state.isLeader);
console.log('Current Term:', state.currentTerm);
console.log('Partition State:', state.partitionState);

// Step 4: Monitor Ongoing Health
const monitor = setInterval(() => {
  const state = consensus1.getConsensusState();
  const daemon1Health = daemon1.getHealth();

  console.log(`[${new Date().toISOString()}] Consensus State`, {
    leader: state.leaderId,
    term: state.currentTerm,
    logSize: state.logSize,
    partitions: state.partitionState,
    activeOps: daemon1Health.activeOperations,
  });
}, Number(process.env.MONITOR_INTERVAL_MS ?? 10000));

// Let the monitor report once, then shut everything down.
await new Promise((resolve) => setTimeout(resolve, Number(process.env.MONITOR_INTERVAL_MS ?? 10000) + 100));
clearInterval(monitor);
console.log('Cluster nodes:', [...clusterMgr1.nodes.keys()].sort().join(', '));
await consensus1.shutdown();
await clusterMgr1.shutdown();
await raftNode1.stop();
await local.stop();
