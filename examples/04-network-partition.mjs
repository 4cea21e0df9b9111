// Guide, "Scenario 2: Network Partition (Split-Brain)": three nodes, each in its own network
// namespace (needs root on Linux), the leader cut off from the other two. The minority refuses
// operations and reports the partition; the majority elects a leader and goes on; after healing
// the old leader recovers and replays the log it missed. The guide's listeners run in each node
// process; this script prints what the isolated node reported.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { Cluster } = require('../support/cluster.js');
const { available, TestNetwork } = require('../support/netns.js');

const netns = available();
if (!netns.ok) {
  console.log(`SKIPPED: ${netns.why}; real partitions need network namespaces`);
  process.exit(0);
}
const network = new TestNetwork(3).setup();
const cluster = await new Cluster(3, {
  network,
  guide: { consensus: { partitionDetectionMs: 1000, operationTimeoutMs: 2000 } },
}).start();
try {
  const leader = await cluster.form();
  await leader.call('guideLoad', { count: 100, concurrency: 10, prefix: 'before' });
  console.log(`cluster formed; ${leader.nodeId} leads`);

  network.isolate(1);
  console.log(`${leader.nodeId} cut off from the other two nodes`);
  const detected = await leader.waitEvent('partition:detected', () => true, 10000);
  console.log(`Partition detected from node ${detected.nodeId}`);
  console.log(`Partition state: ${(await leader.call('consensusState')).partitionState}`);
  try {
    await leader.call('replicateOperation', { operation: { id: 'minority-write', type: 'task' } });
    console.log('unexpected: the minority accepted an operation');
  } catch (error) {
    console.log(`Minority partition refuses operations: ${error.code}`);
  }
  const majority = await cluster.leader(10000, cluster.nodes.slice(1));
  const during = await majority.call('guideLoad', { count: 100, concurrency: 10, prefix: 'during' });
  console.log(`Majority partition continues: ${majority.nodeId} leads and committed ${during.acked.length} operations`);

  network.heal(1);
  const recovered = await leader.waitEvent('partition:recovered', () => true, 15000);
  console.log(`Partition recovered, leader: ${recovered.newLeader}`);
  await cluster.waitFor(async () => {
    const executed = new Set(await leader.call('executed'));
    return during.acked.every(([id]) => executed.has(id));
  }, 15000);
  console.log(`${leader.nodeId} replayed the ${during.acked.length} operations it missed`);
  console.log(`Partition state: ${(await cluster.waitFor(async () => {
    const s = await leader.call('consensusState');
    return s.partitionState === 'healthy' ? s : null;
  })).partitionState}`);
} finally {
  await cluster.stop();
  network.teardown();
}
