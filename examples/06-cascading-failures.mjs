// Guide, "Scenario 4: Cascading Failures": after the 2nd node failure the cluster cannot commit;
// once a majority is back it is operational again.
import { setupGuideCluster } from './lib/setup.mjs';

const { consensus1, clusterManager, local, stop } = await setupGuideCluster({
  cluster: { healthCheckInterval: 200, healthCheckTimeout: 200, maxFailedHealthChecks: 2 },
  consensus: { operationTimeoutMs: 2000 },
});

await local.peers['node-2'].kill('SIGKILL');
await local.peers['node-3'].kill('SIGKILL');
console.log('node-2 and node-3 crashed');

// Monitor available nodes
while (clusterManager.getHealthyNodes().length >= 2) await new Promise((r) => setTimeout(r, 50));
const healthyNodes = clusterManager.getHealthyNodes();
if (healthyNodes.length < 2) {
  console.warn('CRITICAL: Cluster lost quorum, no new operations accepted');
  // Page on-call engineer
}
try {
  await consensus1.replicateOperation({ id: 'during-outage', daemonId: 'daemon-1', type: 'task', payload: {} });
  console.log('unexpected: the operation committed without a majority');
} catch (error) {
  console.log(`operation refused: ${error.code}`);
}

// Recovery: wait for majority of nodes to return
await local.peers['node-2'].start();
for (;;) {
  // Monitor recovery
  const availableNodes = clusterManager.getHealthyNodes();
  if (availableNodes.length >= 2) {
    console.log('Quorum restored, cluster operational again');
    break;
  }
  await new Promise((r) => setTimeout(r, 50));
}
for (;;) {
  const leader = consensus1.isLeader ? 'node-1' : consensus1.leaderId;
  if (leader) {
    const target = leader === 'node-1' ? null : local.peers[leader];
    const op = { id: 'after-recovery', daemonId: 'daemon-1', type: 'task', payload: {} };
    const r = await (target ? target.call('replicateOperation', { operation: op }) : consensus1.replicateOperation(op)).catch(() => null);
    if (r) {
      console.log(`operation committed at index ${r.logIndex}`);
      break;
    }
  }
  await new Promise((r) => setTimeout(r, 50));
}
await stop();
