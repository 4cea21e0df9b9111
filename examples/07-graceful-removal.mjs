// Guide, "Graceful Node Removal": the leader removes node-2 once it holds every entry, then runs
// the guide's shutdown procedure for itself (as leader it hands over and leaves the cluster).
import { setupGuideCluster } from './lib/setup.mjs';

const { consensus1, raftNode1, daemon1, local } = await setupGuideCluster();
for (let i = 0; i < 20; i++) {
  await consensus1.replicateOperation({ id: `op-${i}`, daemonId: 'daemon-1', type: 'task', payload: { i } });
}

// Removing a Node from Cluster: only leader can remove nodes
if (consensus1.isLeader) {
  try {
    const result = await consensus1.removeNodeGracefully('node-2');
    console.log(`Node removed: ${result.nodeId}`);
  } catch (error) {
    console.error(`Failed to remove node: ${error.message}`);
  }
}
console.log('voters now:', raftNode1.getState().membership.voters.join(', '));

// Graceful Shutdown Procedure
async function shutdownNode() {
  const nodeId = daemon1.nodeId;

  // Step 1: Stop accepting new operations
  daemon1.isRunning = false;

  // Step 2: Wait for current operations to complete (max 30s)
  const startTime = Date.now();
  while (daemon1.activeCount > 0 && Date.now() - startTime < 30000) {
    await new Promise(resolve => setTimeout(resolve, 100));
  }

  // Step 3: Remove from cluster
  if (consensus1.isLeader) {
    await consensus1.removeNodeGracefully(nodeId);
  } else {
    // Follower: Just shutdown
    await consensus1.shutdown();
  }

  // Step 4: Stop all services
  await raftNode1.stop();
  await daemon1.stop();

  console.log(`Node ${nodeId} shutdown gracefully`);
}

await shutdownNode();
const node3 = await local.peers['node-3'].call('state');
console.log(`node-3 now leads a cluster of ${node3.membership.voters.join(', ')} at term ${node3.term}`);
const after = await local.peers['node-3'].call('replicateOperation', { operation: { id: 'after-shutdown', type: 'task' } });
console.log('node-3 still commits:', after.committed);
await local.stop();
