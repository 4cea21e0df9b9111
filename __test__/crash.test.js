'use strict';
// Crash safety of storage: kill -9 while writing at full speed, 50 times. LMDB reopens every
// time, and every acknowledged entry is still there and readable afterwards.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { NodeProcess, freePort } = require('../support/cluster');

test('kill -9 during writes, 50 times: the node reopens with every acknowledged entry', { timeout: 600000 }, async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'consensus-crash-'));
  const node = new NodeProcess({
    nodeId: 'crash',
    port: await freePort(),
    dataDir: path.join(root, 'crash'),
    config: { bootstrap: true, snapshotThreshold: 500 },
  });
  const acked = new Map(); // operation id -> log index
  try {
    for (let round = 0; round < 50; round++) {
      await node.start();
      await node.waitEvent('leader_elected', () => true, 10000);
      node.child.on('message', (m) => {
        if (m.event === 'acked') for (const [n, index] of m.payload) acked.set(`r${round}-${n}`, index);
      });
      await node.call('stream', { concurrency: 16, prefix: `r${round}` });
      // Let it write for a while (a different moment each round), then pull the plug.
      await new Promise((r) => setTimeout(r, 30 + ((round * 37) % 120)));
      await node.kill('SIGKILL');
    }
    assert.ok(acked.size > 500, `only ${acked.size} writes were acknowledged`);

    // Reopen once more: every acknowledged operation is known (a retry is a duplicate at the
    // same index), and the log still takes writes.
    const state = await node.start();
    assert.ok(state.lastLogIndex >= Math.max(...acked.values()));
    await node.waitEvent('leader_elected', () => true, 10000);
    const sample = [...acked.entries()].filter((_, i) => i % Math.ceil(acked.size / 400) === 0);
    for (const [id, index] of sample) {
      const r = await node.call('replicate', { command: { type: 'stream' }, operationId: id });
      assert.equal(r.duplicate, true, `${id} was acknowledged but is gone`);
      assert.equal(r.logIndex, index);
    }
    const fresh = await node.call('replicate', { command: { type: 'after-crashes' } });
    assert.equal(fresh.committed, true);
  } finally {
    await node.stop();
    fs.rmSync(root, { recursive: true, force: true });
  }
});
