// Guide, "Operation Replication": replicate an operation on the leader, retry it safely by id,
// and execute committed operations once with the guide's idempotent OperationHandler (each
// node's daemon does so for every committed operation, in log order).
import { setupGuideCluster } from './lib/setup.mjs';

const { consensus1, daemon1, local, stop } = await setupGuideCluster();
const state = consensus1.getConsensusState();

// Replicating Operations: only leader can replicate operations
if (state.isLeader) {
  const result = await consensus1.replicateOperation({
    id: 'task-123',
    daemonId: 'daemon-1',
    type: 'data_import',
    payload: {
      sourceUrl: 'https://data.example.com/dataset',
      batchSize: 1000,
    },
    timestamp: Date.now(),
  });

  console.log({
    operationId: result.operationId,
    replicated: result.replicated, // true = replicated to majority
    committed: result.committed, // true = durably stored
    logIndex: result.logIndex, // Position in log
    term: result.term, // Current Raft term
  });

  // Idempotence: safe to retry failed operations (use operation ID)
  const retry = await consensus1.replicateOperation({ id: 'task-123', daemonId: 'daemon-1', type: 'data_import', payload: {} });
  console.log('retry of task-123: duplicate =', retry.duplicate === true, 'logIndex =', retry.logIndex);
}

for (let i = 0; i < 20; i++) {
  await consensus1.replicateOperation({ id: `task-${i}`, daemonId: 'daemon-1', type: 'task', payload: { i } });
}
// Every node's daemon executes each committed operation exactly once, in the same order.
const expected = 21;
const executed = async (peer) => (await peer.call('executed')).length;
while (daemon1.executed.length < expected || (await executed(local.peers['node-2'])) < expected || (await executed(local.peers['node-3'])) < expected) {
  await new Promise((r) => setTimeout(r, 20));
}
const orders = [daemon1.executed, await local.peers['node-2'].call('executed'), await local.peers['node-3'].call('executed')];
console.log('operations executed per node:', orders.map((o) => o.length).join(', '));
console.log('same order on every node:', orders.every((o) => o.join() === orders[0].join()));
await stop();
