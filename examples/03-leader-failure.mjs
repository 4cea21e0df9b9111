// Guide, "Scenario 1: Leader Failure": the leader (node-2 here, so this process survives to
// watch) is killed with SIGKILL; the survivors elect a new leader and lose nothing acknowledged.
import { once } from 'node:events';
import { setupGuideCluster } from './lib/setup.mjs';

const { consensus1, raftNode1, daemon1, local, stop } = await setupGuideCluster();

consensus1.on('consensus:leader_lost', () => {
  console.log('Leader lost, triggering election...');
  // Automatically handled by Raft
});

consensus1.on('consensus:leader_elected', ({ leaderId, term }) => {
  console.log(`New leader elected: ${leaderId} at term ${term}`);
  // Resume operation replication
});

// Make node-2 the leader, let it replicate a batch, then kill it.
await raftNode1.transferLeadership('node-2');
const node2 = local.peers['node-2'];
const batch = await node2.call('guideLoad', { count: 200, concurrency: 10, prefix: 'before-crash' });
console.log(`node-2 replicated ${batch.acked.length} operations`);
const killedAt = Date.now();
const elected = once(consensus1, 'consensus:leader_elected');
await node2.kill('SIGKILL');
console.log('node-2 killed (SIGKILL)');
const [{ leaderId }] = await elected;
console.log(`Time to recovery: ${Date.now() - killedAt} ms (new leader ${leaderId})`);

// Data Loss: None (majority has current state)
while (daemon1.executed.length < batch.acked.length) await new Promise((r) => setTimeout(r, 20));
const missing = batch.acked.filter(([id]) => !daemon1.executed.includes(id));
console.log(`acknowledged operations missing on node-1: ${missing.length}`);
await stop();
