#!/usr/bin/env node
// `npm run demo`: three node processes on this machine elect a leader, replicate a stream of
// commands, lose their leader to kill -9, elect a new one, and take the old node back, which
// catches up. At the end every node must hold every acknowledged command, in the same order.
'use strict';
const { build } = require('../scripts/build');
const { Cluster } = require('../support/cluster');

const say = (...args) => console.log(...args);

async function applied(node) {
  return (await node.call('applied')).entries.map(([index, , opId]) => `${index}:${opId}`);
}

async function main() {
  build();
  const cluster = await new Cluster(3).start();
  try {
    say(`started 3 node processes: ${cluster.nodes.map((n) => `${n.nodeId} (pid ${n.child.pid}, port ${n.port})`).join(', ')}`);
    let leader = await cluster.form();
    const { term } = await leader.call('state');
    say(`${leader.nodeId} founded the cluster and leads at term ${term}; node-2 and node-3 joined as voters`);

    const first = await leader.call('load', { count: 500, concurrency: 16, prefix: 'before' });
    say(`replicated ${first.acked.length} commands through ${leader.nodeId} in ${Math.round(first.elapsedMs)} ms`);

    const killedAt = Date.now();
    await leader.kill('SIGKILL');
    say(`kill -9 ${leader.nodeId}`);
    const old = leader;
    leader = await cluster.leader(10000, cluster.nodes.filter((n) => n !== old));
    const committed = await cluster.waitFor(
      () => leader.call('replicate', { command: { type: 'after-failover' }, operationId: 'after-failover' }).catch(() => null),
      10000,
      5,
    );
    say(`${leader.nodeId} took over at term ${committed.term} and committed ${Date.now() - killedAt} ms after the kill`);

    const second = await leader.call('load', { count: 500, concurrency: 16, prefix: 'after' });
    say(`replicated ${second.acked.length} more commands through ${leader.nodeId} while ${old.nodeId} was down`);

    await old.start();
    say(`restarted ${old.nodeId} on its data directory`);
    const acked = first.acked.length + 1 + second.acked.length;
    const target = (await leader.call('state')).lastApplied;
    await cluster.waitFor(async () => (await cluster.states()).every((s) => s.lastApplied >= target), 20000);

    // The survivors applied everything; the restarted node applied, since its restart, exactly
    // the tail it had missed, in the same order (what it applied before the kill is on its disk).
    const survivors = cluster.nodes.filter((n) => n !== old);
    const [seqA, seqB] = await Promise.all(survivors.map(applied));
    const tail = await applied(old);
    const sameOrder = seqA.join() === seqB.join() && seqA.slice(seqA.length - tail.length).join() === tail.join();
    const ackedIds = [...first.acked.map(([s]) => `before-${s}`), 'after-failover', ...second.acked.map(([s]) => `after-${s}`)];
    const missing = ackedIds.filter((id) => !seqA.some((e) => e.endsWith(`:${id}`)) || !seqB.some((e) => e.endsWith(`:${id}`)));
    const { snapshots } = await old.call('applied');
    const viaSnapshot = snapshots.length ? `a snapshot through index ${snapshots[0].lastIncludedIndex}, then ` : '';
    const caughtUp = (await old.call('state')).lastApplied >= target;
    const states = await cluster.states();
    say('');
    say('summary');
    for (const s of states) {
      say(`  ${s.nodeId.padEnd(7)} ${s.role.padEnd(9)} term ${s.term}  leader ${s.leaderId}  applied through index ${s.lastApplied}`);
    }
    say(`  acknowledged commands: ${acked}; missing on a survivor: ${missing.length}`);
    say(`  ${old.nodeId} came back and caught up from ${viaSnapshot}${tail.length} commands: ${caughtUp ? 'yes' : 'NO'}`);
    say(`  every node applied the same sequence in the same order: ${sameOrder ? 'yes' : 'NO'}`);
    if (!sameOrder || !caughtUp || missing.length > 0) process.exitCode = 1;
  } finally {
    await cluster.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
