'use strict';
// AbortSignal on writes and membership calls, and waitForLeader: a caller that gives up is
// answered at once, and nothing of the call (timer, listener) stays behind.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Cluster } = require('../support/cluster');
const { available, TestNetwork } = require('../support/netns');
const { createRaftCoordinator, ConsensusError } = require('..');

const netns = available();

test('aborting a replicateOperation in a minority partition rejects at once with AbortError, leaving no timer', { timeout: 120000 }, async (t) => {
  // The leader alone on its side of a partition: its link taken down in a network namespace
  // where this machine allows it (root on Linux), else its followers paused (SIGSTOP), which it
  // cannot tell from a partition. Long election timeouts keep the cut-off leader leading
  // (CheckQuorum has not yet made it step down) while the write waits for a quorum that cannot
  // answer: the abort is what ends it.
  const network = netns.ok ? new TestNetwork(3).setup() : null;
  if (!network) t.diagnostic(`no network namespaces (${netns.why}): the followers are paused instead`);
  const cluster = new Cluster(3, {
    config: { electionTimeoutMin: 4000, electionTimeoutMax: 8000, heartbeatInterval: 100 },
    guide: { consensus: { operationTimeoutMs: 30000 } },
    network,
  });
  t.after(async () => {
    for (const n of cluster.nodes) if (n.running) n.child.kill('SIGCONT');
    await cluster.stop();
    if (network) network.teardown();
  });
  await cluster.start();
  const leader = await cluster.form();
  await leader.call('replicateOperation', { operation: { id: 'before', type: 'task', payload: {} } });
  if (network) network.isolate(cluster.nodes.indexOf(leader) + 1); // hosts count from 1
  else for (const n of cluster.nodes) if (n !== leader) n.child.kill('SIGSTOP');
  const r = await leader.call('abortedWrite', { abortAfterMs: 300, viaOperation: true });
  assert.strictEqual(r.outcome.ok, false, 'the write succeeded without a quorum');
  assert.strictEqual(r.outcome.name, 'AbortError', JSON.stringify(r.outcome));
  assert.ok(r.waitedMs < 500, `the abort took ${r.waitedMs} ms to answer`);
  assert.ok(r.timersAfter <= r.timersBefore, `timers before ${r.timersBefore}, after ${r.timersAfter}`);
  const bare = await leader.call('abortedWrite', { abortAfterMs: 100 });
  assert.strictEqual(bare.outcome.name, 'AbortError', JSON.stringify(bare.outcome));
  assert.ok(bare.timersAfter <= bare.timersBefore);
});

test('waitForLeader resolves {leaderId, term}; a signal or a timeout ends it without leftovers', async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'unrdf-consensus-abort-'));
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  const lonely = createRaftCoordinator({ nodeId: 'w-lonely', port: 0, dataDir: path.join(root, 'l') });
  const founder = createRaftCoordinator({ nodeId: 'w-founder', port: 0, dataDir: path.join(root, 'f'), bootstrap: true });
  t.after(() => Promise.all([lonely.stop(), founder.stop()]));
  await Promise.all([lonely.initialize(), founder.initialize()]);

  const leader = await founder.waitForLeader({ timeoutMs: 10000 });
  assert.deepStrictEqual(leader, { leaderId: 'w-founder', term: founder.getState().term });

  const listenersBefore = lonely.eventNames().map((n) => `${n}:${lonely.listenerCount(n)}`).join();
  const timersBefore = process.getActiveResourcesInfo().filter((x) => x === 'Timeout').length;
  const controller = new AbortController();
  const waiting = lonely.waitForLeader({ timeoutMs: 60000, signal: controller.signal });
  controller.abort();
  await assert.rejects(waiting, (err) => err instanceof DOMException && err.name === 'AbortError');
  await assert.rejects(lonely.waitForLeader({ timeoutMs: 50 }), (err) => err instanceof ConsensusError && err.code === 'ERR_TIMEOUT');
  assert.strictEqual(lonely.eventNames().map((n) => `${n}:${lonely.listenerCount(n)}`).join(), listenersBefore);
  assert.ok(process.getActiveResourcesInfo().filter((x) => x === 'Timeout').length <= timersBefore);

  // Already aborted: rejected before anything starts, for each call that takes a signal.
  const aborted = AbortSignal.abort();
  const isAbort = (err) => err.name === 'AbortError';
  await assert.rejects(founder.replicateCommand({ type: 'x' }, { signal: aborted }), isAbort);
  await assert.rejects(founder.addPeer('w-lonely', '127.0.0.1', lonely.getState().port, { signal: aborted }), isAbort);
  await assert.rejects(founder.removePeer('w-lonely', { signal: aborted }), isAbort);
  await assert.rejects(founder.replicateCommand({ type: 'x' }, { signal: 'no' }), (err) => err.code === 'ERR_INVALID_OPERATION');
});
