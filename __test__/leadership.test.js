'use strict';
// Leadership is never claimed without a quorum (etcd's CheckQuorum): an isolated leader soon
// reports that it does not lead and refuses writes at once with ERR_NO_QUORUM, while the
// majority elects a leader and commits; after healing there is one leader. And shutdown with a
// call in flight releases the data directory before it resolves.
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Cluster, freePort } = require('../support/cluster');
const { available, TestNetwork } = require('../support/netns');
const { LinkCutNetwork, FAULT_HOOKS_ENV } = require('../support/link-cuts');

const netns = available();
const ELECTION_TIMEOUT_MAX = 300; // the default

/** Isolates the leader and checks what each side says and does; heals and checks one leader. */
async function isolateLeader(cluster, network, label) {
  const leader = await cluster.form();
  await leader.call('replicate', { command: { type: 'before' } });
  const index = cluster.nodes.indexOf(leader) + 1;
  const others = cluster.nodes.filter((n) => n !== leader);

  const stepsDown = leader.call('untilNotLeader', { timeoutMs: 10000 });
  const cutAt = Date.now();
  await network.isolate(index);
  try {
    const { at, role } = await stepsDown;
    const detectedMs = at - cutAt;
    const write = await leader.call('timedReplicate', { command: { type: 'minority' } });
    console.log(
      `# ${label}: the isolated leader stopped claiming leadership ${detectedMs} ms after the cut (target ${ELECTION_TIMEOUT_MAX + 100} ms), role '${role}'; a write there was refused with ${write.error?.code} in ${write.ms.toFixed(2)} ms (target 50 ms)`,
    );
    assert.equal(role, 'follower');
    assert.ok(detectedMs < ELECTION_TIMEOUT_MAX + 1000, `stepped down after ${detectedMs} ms`);
    assert.equal(write.ok, false);
    assert.equal(write.error.code, 'ERR_NO_QUORUM', write.error.message);
    assert.ok(write.ms < 500, `refused after ${write.ms} ms`);

    // The majority side elects a leader of its own and commits (a write that lands during the
    // election, or while this busy machine delays a heartbeat past the lease, is retried).
    const committed = await commitSomewhere(cluster, others, 'majority');
    assert.equal(committed.committed, true);
    const isolated = await leader.call('state');
    assert.equal(isolated.isLeader, false);
    assert.equal(isolated.leaderId, null);
  } finally {
    await network.heal(index);
  }
  const states = await cluster.waitFor(async () => {
    const s = await cluster.states();
    const leaders = s.filter((x) => x.isLeader);
    return leaders.length === 1 && s.every((x) => x.leaderId === leaders[0].nodeId) ? s : null;
  }, 15000);
  assert.equal(new Set(states.map((s) => s.term)).size, 1, 'one term after healing');
  assert.equal((await commitSomewhere(cluster, cluster.nodes, 'after')).committed, true);
}

/** A write through whichever of `among` leads, retried while leadership is settling. */
function commitSomewhere(cluster, among, type) {
  return cluster.waitFor(async () => {
    const leader = await cluster.leader(10000, among);
    return leader.call('replicate', { command: { type } }).catch((err) => {
      if (['ERR_NO_QUORUM', 'ERR_NOT_LEADER'].includes(err.code)) return null;
      throw err;
    });
  }, 15000);
}

test('CheckQuorum with a real partition: the isolated leader stops leading and refuses writes with ERR_NO_QUORUM; the majority commits; one leader after healing', { skip: netns.ok ? false : netns.why }, async () => {
  const network = new TestNetwork(3).setup();
  try {
    const cluster = await new Cluster(3, { network }).start();
    try {
      await isolateLeader(cluster, network, 'netns');
    } finally {
      await cluster.stop();
    }
  } finally {
    network.teardown();
  }
});

test('CheckQuorum with the loopback link-cut fault hook: the same', async () => {
  process.env[FAULT_HOOKS_ENV] = '1';
  const cluster = new Cluster(3);
  try {
    await cluster.start();
    await isolateLeader(cluster, new LinkCutNetwork(cluster.nodes), 'link cuts');
  } finally {
    delete process.env[FAULT_HOOKS_ENV];
    await cluster.stop();
  }
});

test('a one-voter cluster always has quorum', async () => {
  const cluster = await new Cluster(1, { config: { bootstrap: true } }).start();
  try {
    const [solo] = cluster.nodes;
    await cluster.leader();
    // Idle for several leases: no follower ever acknowledges, and none needs to. What is awaited
    // here is the passing of time itself.
    await new Promise((r) => setTimeout(r, 4 * ELECTION_TIMEOUT_MAX));
    const s = await solo.call('state');
    assert.equal(s.isLeader, true);
    assert.equal(s.leaderId, 'node-1');
    const write = await solo.call('timedReplicate', { command: { type: 'solo' } });
    assert.equal(write.ok, true);
  } finally {
    await cluster.stop();
  }
});

/**
 * Runs `script` in a fresh Node.js process that must exit by itself; resolves with its output
 * (the last line parsed as JSON) and how long it ran.
 */
function runChild(script, timeoutMs = 30000) {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['-e', script], { cwd: path.resolve(__dirname, '..'), timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) {
        reject(Object.assign(new Error(`child failed (${err.signal ?? err.code}): ${stderr || stdout}`), { stdout, stderr }));
        return;
      }
      const lines = stdout.trim().split('\n');
      resolve({ result: JSON.parse(lines[lines.length - 1]), ranMs: Date.now() - started, stderr });
    });
  });
}

test('shutdown with addPeer in flight: it resolves once the data directory is free, the call rejects with ERR_SHUTDOWN, the process exits by itself', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'consensus-shutdown-'));
  // A port nobody listens on: the node founds, then waits for a learner that never catches up.
  const deadPort = await freePort();
  const script = `
    const { createRaftCoordinator } = require('.');
    const root = ${JSON.stringify(dir)};
    (async () => {
      const out = {};
      // A peer that accepts the connection and then says nothing, as one behind a dead link.
      const silent = require('node:net').createServer(() => {});
      await new Promise((r) => silent.listen(0, '127.0.0.1', r));
      silent.unref();
      for (const [round, host, port] of [['refused', '127.0.0.1', ${deadPort}], ['silent', '127.0.0.1', silent.address().port]]) {
        const dataDir = require('node:path').join(root, round);
        const raft = createRaftCoordinator({ nodeId: 'keeper', port: 0, dataDir });
        await raft.initialize();
        const pending = raft.addPeer('ghost', host, port);
        const settled = pending.then(() => 'resolved', (e) => e.code);
        // In flight for real: founded and adding the peer nothing listens for, or still claiming
        // the silent one.
        if (round === 'refused') {
          while (!raft.isLeader) await new Promise((r) => setTimeout(r, 5));
        }
        const t0 = Date.now();
        await raft.shutdown();
        const stopMs = Date.now() - t0;
        const reopen = createRaftCoordinator({ nodeId: 'keeper', port: 0, dataDir });
        const t1 = Date.now();
        let reopened;
        try {
          await reopen.initialize();
          reopened = 'ok';
        } catch (e) {
          reopened = e.code + ': ' + e.message;
        }
        const reopenMs = Date.now() - t1;
        await reopen.shutdown();
        out[round] = { stopMs, reopened, reopenMs, pending: await settled };
      }
      console.log(JSON.stringify(out));
    })();
  `;
  try {
    const { result, ranMs } = await runChild(script);
    console.log(`# shutdown with addPeer in flight: ${JSON.stringify(result)}; the child exited by itself after ${ranMs} ms`);
    for (const round of ['refused', 'silent']) {
      assert.equal(result[round].reopened, 'ok', `${round}: ${result[round].reopened}`);
      assert.equal(result[round].pending, 'ERR_SHUTDOWN', round);
      assert.ok(result[round].stopMs < 5000, `${round}: shutdown took ${result[round].stopMs} ms`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
