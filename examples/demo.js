#!/usr/bin/env node
// `npm run demo`: a cluster's life in a minute. Three node processes, each with a daemon that
// executes committed operations once: it stores each effect together with its log index and gives
// the node that index as `appliedIndex`, so after a crash delivery resumes right after what it
// holds; its state also travels in consensus snapshots. A stream of operations; the leader killed
// with SIGKILL; a new leader; the old node restarted on its data directory and caught up. At the
// end every acknowledged operation must have been executed exactly once on every node.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { buildOrExit: build } = require('../scripts/build');
const { Cluster } = require('../support/cluster');

const say = (...args) => console.log(...args);

async function main() {
  build();
  const guide = { daemonState: true, consensus: { logCompactionThreshold: 300, maxLogSize: 600 } };
  const cluster = await new Cluster(3, { guide }).start();
  try {
    say(`started 3 node processes: ${cluster.nodes.map((n) => `${n.nodeId} (pid ${n.child.pid}, port ${n.port})`).join(', ')}`);
    let leader = await cluster.form();
    say(`${leader.nodeId} founded the cluster and leads at term ${(await leader.call('state')).term}; node-2 and node-3 joined as voters`);
    say('  (a term is a numbered period of leadership: every election starts a new one, and a term has at most one leader)');

    const acked = [];
    const first = await leader.call('guideLoad', { count: 500, concurrency: 16, prefix: 'before' });
    acked.push(...first.acked.map(([id]) => id));
    say(`replicated ${first.acked.length} operations through ${leader.nodeId} in ${first.elapsedMs} ms`);
    say('  (each operation is an entry of the replicated log, at an index: its position in the log; it is acknowledged');
    say('   once a majority of nodes stored it on disk, and every node applies the entries in index order)');

    const killedAt = Date.now();
    await leader.kill('SIGKILL');
    say(`kill -9 ${leader.nodeId}`);
    const old = leader;
    leader = await cluster.leader(10000, cluster.nodes.filter((n) => n !== old));
    const op = { id: 'after-failover', type: 'task', payload: {} };
    const committed = await cluster.waitFor(() => leader.call('replicateOperation', { operation: op }).catch(() => null), 10000, 5);
    acked.push('after-failover');
    say(`${leader.nodeId} took over at term ${committed.term} and committed ${Date.now() - killedAt} ms after the kill`);

    const second = await leader.call('guideLoad', { count: 500, concurrency: 16, prefix: 'after' });
    acked.push(...second.acked.map(([id]) => id));
    say(`replicated ${second.acked.length} more operations through ${leader.nodeId} while ${old.nodeId} was down`);

    await old.start();
    say(`restarted ${old.nodeId} on its data directory`);
    const target = (await leader.call('state')).lastApplied;
    await cluster.waitFor(async () => (await cluster.states()).every((s) => s.lastApplied >= target), 20000);
    const installed = old.events.find((e) => e.name === 'consensus:snapshot_installed');
    await cluster.waitFor(async () => {
      const lists = await Promise.all(cluster.nodes.map((n) => n.call('executed')));
      return lists.every((l) => acked.every((id) => l.includes(id)));
    }, 20000);

    // What each daemon executed, as recorded on its disk.
    const counts = cluster.nodes.map((n) => {
      // One line per executed operation: its log index and id.
      const lines = fs.readFileSync(path.join(n.dataDir, 'daemon-executed.log'), 'utf8').split('\n').filter(Boolean);
      const ids = lines.map((line) => line.split(' ')[1]);
      const seen = new Map();
      for (const id of ids) seen.set(id, (seen.get(id) || 0) + 1);
      return { node: n.nodeId, missing: acked.filter((id) => !seen.has(id)).length, twice: [...seen.values()].filter((c) => c > 1).length };
    });
    const states = await cluster.states();
    say('');
    say('summary');
    for (const s of states) {
      say(`  ${s.nodeId.padEnd(7)} ${s.role.padEnd(9)} term ${s.term}  leader ${s.leaderId}  applied through index ${s.lastApplied}`);
    }
    const caughtUp = installed ? `a snapshot through index ${installed.payload.lastIncludedIndex}, then the log` : 'the log';
    say(`  ${old.nodeId} came back and caught up from ${caughtUp}: yes`);
    for (const c of counts) say(`  ${c.node}: ${acked.length} acknowledged operations, ${c.missing} never executed, ${c.twice} executed twice`);
    say('');
    say(`  "applied through index ${states[0].lastApplied}" counts every log entry, and the log holds more than operations:`);
    say('  each new leader first appends an empty entry of its term, and membership changes and the nodes\' registrations');
    say(`  are entries too. So the index is higher than the ${acked.length} operations.`);
    say('  A snapshot is the applied state as of one index, saved so the log before it can be deleted (compaction); a');
    say('  node that was away longer than the log reaches back receives the snapshot, then the entries after it.');
    const exactlyOnce = counts.every((c) => c.missing === 0 && c.twice === 0);
    say(`  every acknowledged operation executed exactly once on every node: ${exactlyOnce ? 'yes' : 'NO'}`);
    if (!exactlyOnce) process.exitCode = 1;
  } finally {
    await cluster.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
