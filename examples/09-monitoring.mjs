// Guide, "Monitoring and Alerting": the dashboard metrics and the Prometheus exposition.
import { setupGuideCluster } from './lib/setup.mjs';

const { consensus1, clusterManager, stop } = await setupGuideCluster();
for (let i = 0; i < 100; i++) {
  await consensus1.replicateOperation({ id: `op-${i}`, daemonId: 'daemon-1', type: 'task', payload: { i } });
}
await new Promise((r) => setTimeout(r, 300));

const partitionStateValue = (s) => ({ healthy: 0, recovering: 1, partitioned: 2 })[s];
const state = consensus1.getConsensusState();
const replicatedCount = consensus1.getMetrics()['consensus.operations.replicated'];
const committedCount = consensus1.getMetrics()['consensus.operations.committed'];

// Dashboard metrics
const metrics = {
  'consensus.leader_id': state.leaderId,
  'consensus.is_leader': state.isLeader ? 1 : 0,
  'consensus.current_term': state.currentTerm,
  'consensus.partition_state': partitionStateValue(state.partitionState),
  'consensus.log_size': state.logSize,
  'consensus.operations.replicated': replicatedCount,
  'consensus.operations.committed': committedCount,
  'cluster.healthy_nodes': clusterManager.getHealthyNodes().length,
  'cluster.total_nodes': clusterManager.nodes.size,
};
console.log(metrics);

// Prometheus Integration
console.log(consensus1.prometheusMetrics());
await stop();
