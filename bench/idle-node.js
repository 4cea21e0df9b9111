'use strict';
// One node of the guide's stack and nothing more: the examples' daemon, a RaftCoordinator, a
// ClusterManager and a ConsensusManager, formed with the initialMembers its parent passes. The
// benchmark measures this process's idle memory: what a daemon pays for the package, without the
// benchmark's own worker code that its other figures include.
const { createRaftCoordinator, createClusterManager, ConsensusManager } = require('..');
const { Daemon } = require('../examples/lib/daemon');

process.once('message', async ({ nodeId, initialMembers, dataDir }) => {
  const me = initialMembers.find((m) => m.nodeId === nodeId);
  const daemon = new Daemon({ daemonId: `daemon-${nodeId}`, name: nodeId, nodeId, clusterId: 'bench-idle' });
  const raft = createRaftCoordinator({ nodeId, host: me.host, port: me.port, dataDir, initialMembers });
  const cluster = createClusterManager({ nodeId });
  const consensus = new ConsensusManager(daemon, raft, cluster);
  daemon.attach(consensus);
  await daemon.start();
  await raft.initialize();
  await cluster.initialize(raft);
  await consensus.initialize();
  const report = () => process.send({ leaderId: raft.getState().leaderId });
  if (raft.getState().leaderId) report();
  else raft.once('leader_elected', report);
});
