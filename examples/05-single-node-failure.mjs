// Guide, "Scenario 3: Single Node Failure": node-3 crashes, the cluster keeps committing with 2 of
// 3, and node-3 rejoins and catches up when it comes back.
import { once } from 'node:events';
import { setupGuideCluster } from './lib/setup.mjs';

const { consensus1, clusterManager, local, stop } = await setupGuideCluster({
  cluster: { healthCheckInterval: 200, healthCheckTimeout: 200, maxFailedHealthChecks: 2 },
});

clusterManager.on('node_joined', ({ nodeId, rejoined }) => {
  if (rejoined) console.log(`Node rejoined: ${nodeId}`);
  // Consensus automatically replicates missing operations
});

const node3 = local.peers['node-3'];
await node3.kill('SIGKILL');
console.log('node-3 crashed');
await once(clusterManager, 'node_unhealthy');
console.log('healthy nodes:', clusterManager.getHealthyNodes().map((n) => n.nodeId).join(', '));

// Quorum still available (2/3 nodes): operations continue normally.
for (let i = 0; i < 50; i++) {
  await consensus1.replicateOperation({ id: `while-down-${i}`, daemonId: 'daemon-1', type: 'task', payload: { i } });
}
console.log('50 operations committed with node-3 down');

const rejoined = once(clusterManager, 'node_joined');
await node3.start();
await rejoined;
while ((await node3.call('executed')).length < 50) await new Promise((r) => setTimeout(r, 20));
console.log(`node-3 caught up: executed ${(await node3.call('executed')).length} of the operations it missed`);
await stop();
