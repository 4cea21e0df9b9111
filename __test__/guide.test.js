'use strict';
// The integration guide's stack (daemon, RaftCoordinator, ClusterManager, ConsensusManager) on a
// real 3-process cluster, and the guide's API contract within one process.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Cluster } = require('../support/cluster');
const { createRaftCoordinator, createClusterManager, ConsensusManager, PartitionState, OperationState } = require('..');
const { Daemon } = require('../examples/lib/daemon');

const FAST_HEALTH = { healthCheckInterval: 200, healthCheckTimeout: 200, maxFailedHealthChecks: 2 };

async function waitExecuted(cluster, nodes, count) {
  return cluster.waitFor(async () => {
    const lists = await Promise.all(nodes.map((n) => n.call('executed')));
    return lists.every((l) => l.length >= count) ? lists : null;
  }, 30000);
}

test('1000 operations: every daemon executes the same sequence once; a retried id applies once; a follower refuses with the leader id', async () => {
  const cluster = await new Cluster(3, { guide: {} }).start();
  try {
    const leader = await cluster.form();
    const load = await leader.call('guideLoad', { count: 1000, concurrency: 50, prefix: 'op' });
    assert.deepEqual(load.errors, {});
    const retry = await leader.call('replicateOperation', { operation: { id: 'op-7', type: 'task', payload: { seq: 7 } } });
    assert.equal(retry.duplicate, true);
    assert.equal(retry.logIndex, load.acked.find(([id]) => id === 'op-7')[1]);
    const follower = cluster.node('node-2');
    await assert.rejects(follower.call('replicateOperation', { operation: { id: 'f-1', type: 'task', payload: {} } }), (err) => {
      assert.equal(err.code, 'ERR_NOT_LEADER');
      assert.equal(err.leaderId, 'node-1');
      return true;
    });
    const [a, b, c] = await waitExecuted(cluster, cluster.nodes, 1000);
    assert.equal(a.length, 1000);
    assert.deepEqual(b, a);
    assert.deepEqual(c, a);
    assert.equal(new Set(a).size, 1000, 'each operation executed once');
    const state = await follower.call('operationState', { operationId: 'op-7' });
    assert.equal(state.state, OperationState.COMMITTED);
    assert.equal(state.execution, 'success');
    const { metrics, prometheus } = await leader.call('metrics');
    assert.equal(metrics['consensus.leader_id'], 'node-1');
    assert.equal(metrics['consensus.is_leader'], 1);
    assert.equal(metrics['consensus.operations.replicated'], 1000);
    assert.equal(metrics['cluster.total_nodes'], 3);
    assert.ok(metrics['cluster.healthy_nodes'] >= 1);
    assert.match(prometheus, /^consensus_operations_replicated_total\{node_id="node-1"\} 1000$/m);
    assert.match(prometheus, /^consensus_log_size\{node_id="node-1"\} \d+$/m);
    assert.match(prometheus, /^consensus_partitions_detected_total\{node_id="node-1"\} 0$/m);
    assert.match(prometheus, /^consensus_operation_commit_duration_seconds_count\{node_id="node-1"\} 1000$/m);
    assert.match(prometheus, /^consensus_peer_replication_lag_entries\{node_id="node-1",peer="node-2"\} \d+$/m);
  } finally {
    await cluster.stop();
  }
});

test('operation id window: a retry inside it is a duplicate, one older is applied again, identically on every node', async () => {
  const cluster = await new Cluster(3, { config: { operationIdWindow: 50 }, guide: {} }).start();
  try {
    const leader = await cluster.form();
    const load = await leader.call('guideLoad', { count: 100, concurrency: 10, prefix: 'w' });
    assert.deepEqual(load.errors, {});
    const indexOf = (id) => load.acked.find(([acked]) => acked === id)[1];
    const recent = await leader.call('replicateOperation', { operation: { id: 'w-95', type: 'task', payload: {} } });
    assert.equal(recent.duplicate, true);
    assert.equal(recent.logIndex, indexOf('w-95'));
    const old = await leader.call('replicateOperation', { operation: { id: 'w-3', type: 'task', payload: {} } });
    assert.equal(old.duplicate, undefined, 'an id older than the window is a new operation');
    assert.ok(old.logIndex > indexOf('w-99'));
    const sequences = await cluster.waitFor(async () => {
      const lists = await Promise.all(cluster.nodes.map((n) => n.call('applied')));
      const ids = lists.map((l) => l.entries.map((e) => e[2]).filter((id) => id !== null && id.startsWith('w-')));
      return ids.every((l) => l.length >= 101) ? ids : null;
    }, 30000);
    for (const ids of sequences) {
      assert.deepEqual(ids, sequences[0], 'every node applied the same operations in the same order');
      assert.equal(ids.filter((id) => id === 'w-3').length, 2);
      assert.equal(ids.filter((id) => id === 'w-95').length, 1);
    }
  } finally {
    await cluster.stop();
  }
});

test('leader failure: every survivor sees consensus:leader_elected for the new leader; nothing acknowledged is missing', async () => {
  const cluster = await new Cluster(3, { guide: {} }).start();
  try {
    const old = await cluster.form();
    const load = await old.call('guideLoad', { count: 300, concurrency: 20, prefix: 'pre' });
    assert.equal(load.acked.length, 300);
    await old.kill('SIGKILL');
    const survivors = cluster.nodes.filter((n) => n !== old);
    const leader = await cluster.leader(10000, survivors);
    const { term } = await leader.call('state');
    for (const n of survivors) {
      const e = await n.waitEvent('consensus:leader_elected', (x) => x.leaderId === leader.nodeId && x.term === term);
      assert.equal(e.isLeader, n === leader);
    }
    await cluster.waitFor(() => leader.call('replicateOperation', { operation: { id: 'post-0', type: 'task' } }).catch(() => null));
    const lists = await waitExecuted(cluster, survivors, 301);
    for (const list of lists) {
      for (const [id] of load.acked) assert.ok(list.includes(id), `${id} missing`);
    }
  } finally {
    await cluster.stop();
  }
});

test('cascading failures: with 2 of 3 down the survivor has < 2 healthy nodes and refuses within operationTimeoutMs; with one back, operations succeed', async () => {
  const cluster = await new Cluster(3, { guide: { cluster: FAST_HEALTH, consensus: { operationTimeoutMs: 1500 } } }).start();
  try {
    const leader = await cluster.form();
    await leader.call('replicateOperation', { operation: { id: 'ok-1', type: 'task' } });
    await cluster.waitFor(async () => (await leader.call('healthyNodes')).length === 3);
    const [a, b] = cluster.nodes.filter((n) => n !== leader);
    await a.kill('SIGKILL');
    await b.kill('SIGKILL');
    await cluster.waitFor(async () => (await leader.call('healthyNodes')).length < 2, 10000);
    await leader.waitEvent('node_unhealthy', (e) => e.nodeId === a.nodeId);
    await leader.waitEvent('health_degraded', (e) => e.nodeId === b.nodeId);
    const t0 = Date.now();
    await assert.rejects(leader.call('replicateOperation', { operation: { id: 'lost-1', type: 'task' } }), (err) => {
      assert.ok(['ERR_NO_QUORUM', 'ERR_NOT_LEADER'].includes(err.code), err.code);
      return true;
    });
    assert.ok(Date.now() - t0 < 1500 + 3000);
    await a.start();
    const ok = await cluster.waitFor(async () => {
      const l = await cluster.leader(10000, [leader, a]);
      return l.call('replicateOperation', { operation: { id: 'back-1', type: 'task' } }).catch(() => null);
    }, 20000);
    assert.equal(ok.committed, true);
    const rejoined = await leader.waitEvent('node_joined', (e) => e.nodeId === a.nodeId && e.rejoined === true, 10000);
    assert.equal(rejoined.rejoined, true);
  } finally {
    await cluster.stop();
  }
});

test('compaction: 2000 operations with threshold 200 and maxLogSize 400 fire log:compacted, the log stays <= 400, and a node that was down catches up by snapshot', async () => {
  const consensus = { logCompactionThreshold: 200, maxLogSize: 400, snapshotInterval: 50 };
  const cluster = await new Cluster(3, { guide: { consensus } }).start();
  try {
    const leader = await cluster.form();
    const lagging = cluster.node('node-3');
    await lagging.kill('SIGKILL');
    let maxLog = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const s = await leader.call('consensusState');
        maxLog = Math.max(maxLog, s.logSize);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    for (let batch = 0; batch < 4; batch++) {
      const r = await leader.call('guideLoad', { count: 500, concurrency: 10, prefix: `c${batch}` });
      assert.deepEqual(r.errors, {});
    }
    sampling = false;
    await sampler;
    const compacted = await leader.waitEvent('log:compacted', () => true);
    assert.ok(compacted.entriesRemoved > 0);
    assert.ok(compacted.entriesRemaining <= 400);
    assert.ok(maxLog <= 400, `log grew to ${maxLog}`);
    assert.ok((await leader.call('consensusState')).logSize <= 400);

    await lagging.start();
    const installed = await lagging.waitEvent('consensus:snapshot_installed', () => true, 20000);
    assert.ok(installed.lastIncludedIndex > 0);
    const target = (await leader.call('state')).lastApplied;
    await cluster.waitFor(async () => (await lagging.call('state')).lastApplied >= target, 20000);
  } finally {
    await cluster.stop();
  }
});

test('removeNodeGracefully of a follower and of the leader itself; a removed node accepts no writes', async () => {
  const cluster = await new Cluster(3, { guide: {} }).start();
  try {
    const leader = await cluster.form();
    await leader.call('guideLoad', { count: 100, concurrency: 10, prefix: 'r' });
    const removed = await leader.call('removeNodeGracefully', { nodeId: 'node-3' });
    assert.deepEqual(removed, { nodeId: 'node-3', removed: true });
    const s = await leader.call('state');
    assert.deepEqual(s.membership.voters.sort(), ['node-1', 'node-2']);
    await assert.rejects(cluster.node('node-3').call('replicateOperation', { operation: { id: 'x', type: 't' } }), {
      code: 'ERR_NOT_LEADER',
    });
    await assert.rejects(leader.call('removeNodeGracefully', { nodeId: 'node-9' }), { code: 'ERR_NODE_NOT_FOUND' });

    // The leader removes itself: it hands over to node-2 first.
    const self = await leader.call('removeNodeGracefully', { nodeId: 'node-1' });
    assert.deepEqual(self, { nodeId: 'node-1', removed: true });
    const node2 = cluster.node('node-2');
    const after = await cluster.waitFor(async () => {
      const st = await node2.call('state');
      return st.isLeader && st.membership.voters.length === 1 ? st : null;
    });
    assert.deepEqual(after.membership.voters, ['node-2']);
    const ok = await node2.call('replicateOperation', { operation: { id: 'after-removal', type: 'task' } });
    assert.equal(ok.committed, true);
    await assert.rejects(leader.call('replicateOperation', { operation: { id: 'y', type: 't' } }), { code: 'ERR_NOT_LEADER' });
  } finally {
    await cluster.stop();
  }
});

test('the ConsensusManager contract in one process: validation, idempotence, shutdown', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'consensus-guide-'));
  const raft = createRaftCoordinator({ nodeId: 'solo', port: 0, dataDir: dir, bootstrap: true });
  const daemon = new Daemon({ daemonId: 'd', name: 'solo', nodeId: 'solo', clusterId: 'c' });
  const cluster = createClusterManager({ nodeId: 'solo' });
  const consensus = new ConsensusManager(daemon, raft, cluster, { replicationFactor: 1, maxPayloadBytes: 512 });
  daemon.attach(consensus);
  try {
    assert.throws(() => new ConsensusManager(daemon, raft, cluster, { maxLogSize: 10, logCompactionThreshold: 20 }), {
      code: 'ERR_INVALID_CONFIG',
      field: 'maxLogSize',
    });
    assert.throws(() => new ConsensusManager({}, raft, cluster), { code: 'ERR_INVALID_CONFIG', field: 'daemon' });
    await raft.initialize();
    await cluster.initialize(raft);
    await consensus.initialize();
    await new Promise((resolve) => {
      const check = () => (raft.isLeader ? resolve() : setTimeout(check, 10));
      check();
    });
    const cyclic = {};
    cyclic.self = cyclic;
    const bad = [
      [undefined, 'operation'],
      [{ type: 't' }, 'id'],
      [{ id: '', type: 't' }, 'id'],
      [{ id: 42, type: 't' }, 'id'],
      [{ id: 'x'.repeat(300), type: 't' }, 'id'],
      [{ id: 'a' }, 'type'],
      [{ id: 'a', type: 7 }, 'type'],
      [{ id: 'a', type: 't', daemonId: 5 }, 'daemonId'],
      [{ id: 'a', type: 't', timestamp: 'now' }, 'timestamp'],
      [{ id: 'a', type: 't', payload: [1, 2] }, 'payload'],
      [{ id: 'a', type: 't', payload: 'text' }, 'payload'],
      [{ id: 'a', type: 't', payload: new Date() }, 'payload'],
      [{ id: 'a', type: 't', payload: cyclic }, 'payload'],
      [{ id: 'a', type: 't', payload: { n: 1n } }, 'payload'],
      [{ id: 'a', type: 't', payload: { blob: 'x'.repeat(1024) } }, 'payload'],
    ];
    for (const [op, field] of bad) {
      await assert.rejects(consensus.replicateOperation(op), (err) => {
        assert.equal(err.code, 'ERR_INVALID_OPERATION', `${field}: ${err.code} ${err.message}`);
        assert.equal(err.field, field);
        return true;
      });
    }
    const first = consensus.replicateOperation({ id: 'same', daemonId: 'd', type: 't', payload: { a: 1 }, timestamp: Date.now() });
    const concurrent = consensus.replicateOperation({ id: 'same', type: 't', payload: { a: 1 } });
    const [r1, r2] = await Promise.all([first, concurrent]);
    assert.deepEqual(Object.keys(r1).sort(), ['committed', 'logIndex', 'operationId', 'replicated', 'term']);
    assert.equal(r1.replicated, true);
    assert.equal(r2.duplicate, true);
    assert.equal(r2.logIndex, r1.logIndex);
    const r3 = await consensus.replicateOperation({ id: 'same', type: 't', payload: { a: 1 } });
    assert.equal(r3.duplicate, true);
    await new Promise((resolve) => {
      const check = () => (daemon.executed.length >= 1 ? resolve() : setTimeout(check, 10));
      check();
    });
    assert.deepEqual(daemon.executed, ['same']);
    const state = consensus.getConsensusState();
    for (const key of ['nodeId', 'isLeader', 'leaderId', 'currentTerm', 'logSize', 'commitIndex', 'lastAppliedIndex', 'partitionState', 'replicatedOperationsCount', 'timestamp']) {
      assert.ok(key in state, key);
    }
    assert.equal(state.partitionState, PartitionState.HEALTHY);
    assert.equal(state.replicatedOperationsCount, 1);
    await assert.rejects(consensus.removeNodeGracefully('ghost'), { code: 'ERR_NODE_NOT_FOUND' });

    const listenersBefore = raft.listenerCount('command_applied');
    await consensus.shutdown();
    assert.equal(raft.listenerCount('command_applied'), listenersBefore - 1);
    assert.equal(daemon.listenerCount('operation:success'), 0);
    await assert.rejects(consensus.replicateOperation({ id: 'late', type: 't' }), { code: 'ERR_SHUTDOWN' });
    await assert.rejects(consensus.removeNodeGracefully('solo'), { code: 'ERR_SHUTDOWN' });
    await assert.rejects(consensus.initialize(), { code: 'ERR_SHUTDOWN' });
  } finally {
    await cluster.shutdown();
    await raft.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
