'use strict';
// The RaftCoordinator API within one process: config validation, input validation, lifecycle,
// EventEmitter behaviour, and a single-node cluster founded with bootstrap: true.
const test = require('node:test');
const assert = require('node:assert/strict');
const events = require('node:events');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { createRaftCoordinator, RaftCoordinator, ConsensusError } = require('..');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'consensus-api-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let dirCount = 0;
const dataDir = () => path.join(tmp, `d${++dirCount}`);

function assertInvalidConfig(config, field) {
  assert.throws(
    () => createRaftCoordinator(config),
    (err) => {
      assert.ok(err instanceof ConsensusError, `expected ConsensusError, got ${err}`);
      assert.equal(err.code, 'ERR_INVALID_CONFIG');
      assert.equal(err.field, field);
      assert.match(err.message, new RegExp(`^${field.replace('.', '\\.')}:`));
      return true;
    },
  );
}

test('an invalid config is refused with ERR_INVALID_CONFIG naming the field', () => {
  assertInvalidConfig(undefined, 'config');
  assertInvalidConfig({ port: 0 }, 'nodeId');
  assertInvalidConfig({ nodeId: 'bad id!', port: 0 }, 'nodeId');
  assertInvalidConfig({ nodeId: 'x'.repeat(65), port: 0 }, 'nodeId');
  assertInvalidConfig({ nodeId: 'n1' }, 'port');
  assertInvalidConfig({ nodeId: 'n1', port: 70000 }, 'port');
  assertInvalidConfig({ nodeId: 'n1', port: '8080' }, 'port');
  assertInvalidConfig({ nodeId: 'n1', port: 0, host: '' }, 'host');
  assertInvalidConfig({ nodeId: 'n1', port: 0, electionTimeoutMin: 300, electionTimeoutMax: 200 }, 'electionTimeoutMax');
  assertInvalidConfig({ nodeId: 'n1', port: 0, heartbeatInterval: 500 }, 'heartbeatInterval');
  assertInvalidConfig({ nodeId: 'n1', port: 0, snapshotThreshold: 0 }, 'snapshotThreshold');
  assertInvalidConfig({ nodeId: 'n1', port: 0, bootstrap: 'yes' }, 'bootstrap');
  assertInvalidConfig({ nodeId: 'n1', port: 0, clusterID: 'typo' }, 'clusterID');
  assertInvalidConfig({ nodeId: 'n1', port: 0, secret: 'too-short' }, 'secret');
  assertInvalidConfig({ nodeId: 'n1', port: 0, secret: 42 }, 'secret');
  // A command must fit in an append's frame with room to spare, or its follower could never take it.
  assertInvalidConfig({ nodeId: 'n1', port: 0, maxFrameBytes: 64 * 1024 }, 'maxCommandBytes');
  assertInvalidConfig({ nodeId: 'n1', port: 0, maxFrameBytes: 1024 * 1024, maxCommandBytes: 600 * 1024 }, 'maxCommandBytes');
});

test('a taken port is refused with ERR_ADDRESS_IN_USE', async () => {
  const blocker = net.createServer();
  await new Promise((r) => blocker.listen(0, '127.0.0.1', r));
  const { port } = blocker.address();
  const raft = createRaftCoordinator({ nodeId: 'n1', port, dataDir: dataDir() });
  await assert.rejects(raft.initialize(), { code: 'ERR_ADDRESS_IN_USE' });
  blocker.close();
  await raft.stop();
});

test('one data directory cannot serve two nodes at once', async () => {
  const dir = dataDir();
  const a = createRaftCoordinator({ nodeId: 'a', port: 0, dataDir: dir });
  await a.initialize();
  const b = createRaftCoordinator({ nodeId: 'b', port: 0, dataDir: dir });
  await assert.rejects(b.initialize(), { code: 'ERR_STORAGE' });
  await a.stop();
});

test('calls before initialize reject with ERR_NOT_INITIALIZED, after stop with ERR_SHUTDOWN', async () => {
  const raft = createRaftCoordinator({ nodeId: 'n1', port: 0, dataDir: dataDir() });
  await assert.rejects(raft.replicateCommand({ type: 't' }), { code: 'ERR_NOT_INITIALIZED' });
  await raft.initialize();
  await raft.stop();
  await raft.stop(); // idempotent
  await assert.rejects(raft.replicateCommand({ type: 't' }), { code: 'ERR_SHUTDOWN' });
  await assert.rejects(raft.addPeer('n2', '127.0.0.1', 1), { code: 'ERR_SHUTDOWN' });
  await assert.rejects(raft.initialize(), { code: 'ERR_SHUTDOWN' });
  assert.equal(raft.getState().role, 'shutdown');
});

test('a single node founded with bootstrap: true leads, applies commands and emits events', async () => {
  const raft = createRaftCoordinator({ nodeId: 'solo', port: 0, dataDir: dataDir(), bootstrap: true });
  assert.ok(raft instanceof RaftCoordinator);
  assert.ok(raft instanceof events.EventEmitter);
  const elected = events.once(raft, 'leader_elected');
  const initialized = events.once(raft, 'initialized');
  await raft.initialize();
  await initialized;
  const [{ leaderId, term }] = await elected;
  assert.equal(leaderId, 'solo');
  assert.equal(term, 1);
  assert.equal(raft.isLeader, true);
  assert.equal(raft.leaderId, 'solo');
  assert.equal(raft.currentTerm, 1);
  assert.ok(raft.getState().port > 0);

  const applied = [];
  raft.on('command_applied', (e) => applied.push(e));
  const result = await raft.replicateCommand({ type: 'greet', who: 'world' });
  assert.equal(result.committed, true);
  assert.equal(result.term, 1);
  assert.ok(result.logIndex > 0);
  await waitUntil(() => applied.length === 1);
  assert.deepEqual(applied[0].command, { type: 'greet', who: 'world' });
  assert.equal(applied[0].entry.index, result.logIndex);

  const again = await raft.replicateCommand({ type: 'greet' }, { operationId: 'op-1' });
  const dup = await raft.replicateCommand({ type: 'greet' }, { operationId: 'op-1' });
  assert.equal(dup.duplicate, true);
  assert.equal(dup.logIndex, again.logIndex);
  await raft.stop();
});

test('bad commands reject with ERR_INVALID_OPERATION and change nothing', async () => {
  const raft = createRaftCoordinator({
    nodeId: 'solo2',
    port: 0,
    dataDir: dataDir(),
    bootstrap: true,
    maxCommandBytes: 1024,
  });
  await raft.initialize();
  await waitUntil(() => raft.isLeader);
  const before = raft.getState().lastLogIndex;
  const cyclic = { type: 'c' };
  cyclic.self = cyclic;
  const bad = [
    [null, 'command'],
    ['text', 'command'],
    [[{ type: 'x' }], 'command'],
    [new Map(), 'command'],
    [{}, 'command.type'],
    [{ type: 42 }, 'command.type'],
    [{ type: '' }, 'command.type'],
    [cyclic, 'command'],
    [{ type: 'big', n: 10n }, 'command'],
    [{ type: 'huge', blob: 'x'.repeat(2048) }, 'command'],
  ];
  for (const [command, field] of bad) {
    await assert.rejects(raft.replicateCommand(command), (err) => {
      assert.equal(err.code, 'ERR_INVALID_OPERATION', `${field}: ${err.message}`);
      assert.equal(err.field, field);
      return true;
    });
  }
  await assert.rejects(raft.replicateCommand({ type: 'x' }, { operationId: '' }), { code: 'ERR_INVALID_OPERATION' });
  assert.equal(raft.getState().lastLogIndex, before);
  await raft.stop();
});

test('a throwing listener surfaces as uncaughtException and later events still arrive', () => {
  const script = `
    const { createRaftCoordinator } = require(${JSON.stringify(path.resolve(__dirname, '..'))});
    let thrown = 0, seen = 0;
    process.on('uncaughtException', (e) => { if (e.message === 'listener boom') thrown++; });
    (async () => {
      const raft = createRaftCoordinator({ nodeId: 'x', port: 0, dataDir: ${JSON.stringify(dataDir())}, bootstrap: true });
      raft.on('command_applied', (e) => { seen++; if (e.command.n === 1) throw new Error('listener boom'); });
      await raft.initialize();
      while (!raft.isLeader) await new Promise((r) => setImmediate(r));
      for (let n = 0; n < 3; n++) await raft.replicateCommand({ type: 't', n });
      while (seen < 3) await new Promise((r) => setImmediate(r));
      await raft.replicateCommand({ type: 't', n: 3 });
      while (seen < 4) await new Promise((r) => setImmediate(r));
      await raft.stop();
      console.log(JSON.stringify({ thrown, seen }));
    })();
  `;
  const res = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30000 });
  assert.equal(res.status, 0, res.stderr);
  assert.deepEqual(JSON.parse(res.stdout.trim()), { thrown: 1, seen: 4 });
});

test('after stop() nothing keeps the process alive', () => {
  const script = `
    const { createRaftCoordinator } = require(${JSON.stringify(path.resolve(__dirname, '..'))});
    (async () => {
      const raft = createRaftCoordinator({ nodeId: 'x', port: 0, dataDir: ${JSON.stringify(dataDir())}, bootstrap: true });
      await raft.initialize();
      await raft.replicateCommand({ type: 't' }).catch(() => {});
      await raft.stop();
      console.log('stopped');
    })();
  `;
  const started = Date.now();
  const res = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20000 });
  assert.equal(res.status, 0, `exit ${res.status} signal ${res.signal}: ${res.stderr}`);
  assert.equal(res.stdout.trim(), 'stopped');
  assert.ok(Date.now() - started < 20000);
});

test('ESM import and CommonJS require expose the same API', () => {
  const root = path.resolve(__dirname, '..');
  const esm = spawnSync(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `import { createRaftCoordinator, RaftCoordinator, ConsensusError } from ${JSON.stringify(path.join(root, 'index.mjs'))};
       import * as cjs from ${JSON.stringify(path.join(root, 'index.js'))};
       if (typeof createRaftCoordinator !== 'function' || cjs.default.RaftCoordinator !== RaftCoordinator) process.exit(3);
       console.log(new ConsensusError('ERR_TIMEOUT', 'm').code);`,
    ],
    { encoding: 'utf8' },
  );
  assert.equal(esm.status, 0, esm.stderr);
  assert.equal(esm.stdout.trim(), 'ERR_TIMEOUT');
});

async function waitUntil(check, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Runs `body(first, second)` with two coordinators of one node on one data directory (the
 * second with `secondConfig` over `config`), for a first run and a start after it; both are
 * stopped whatever happens.
 */
async function twoRuns(config, body, secondConfig = {}) {
  const dir = dataDir();
  const first = createRaftCoordinator({ port: 0, dataDir: dir, bootstrap: true, ...config });
  const second = createRaftCoordinator({ port: 0, dataDir: dir, bootstrap: true, ...config, ...secondConfig });
  try {
    await body(first, second);
  } finally {
    await first.stop();
    await second.stop();
  }
}

test('a stopped node can be started again on its data directory in the same process, state intact', async () => {
  const dir = dataDir();
  const first = createRaftCoordinator({ nodeId: 'again', port: 0, dataDir: dir, bootstrap: true });
  await first.initialize();
  await waitUntil(() => first.isLeader);
  const { logIndex } = await first.replicateCommand({ type: 'keep' });
  await first.stop();
  const second = createRaftCoordinator({ nodeId: 'again', port: 0, dataDir: dir, bootstrap: true });
  await second.initialize();
  await waitUntil(() => second.isLeader);
  const s = second.getState();
  assert.ok(s.lastLogIndex >= logIndex);
  assert.equal(s.leaderId, 'again');
  await second.stop();
});

test('stop() does not wait for a snapshot provider that never answers: the data directory opens again at once', async () => {
  await twoRuns({ nodeId: 'slow-provider', snapshotThreshold: 10 }, async (first, second) => {
    first.on('command_applied', () => {});
    const warnings = [];
    first.on('warning', (w) => warnings.push(w));
    await first.initialize();
    await waitUntil(() => first.isLeader);
    let asked = 0;
    first.setSnapshotProvider(() => {
      asked++;
      return new Promise(() => {});
    });
    for (let n = 0; n < 30; n++) await first.replicateCommand({ type: 'fill', n });
    await waitUntil(() => asked > 0);
    await first.stop();
    // The waiting snapshot was given up, not taken without the application's state.
    assert.ok(warnings.some((w) => w.code === 'ERR_STORAGE' && /no snapshot was taken: the node stopped/.test(w.message)), 'no warning that the snapshot was given up');
    await second.initialize();
    await waitUntil(() => second.isLeader);
    assert.ok(second.getState().lastLogIndex >= 30);
  });
});

test('a full data directory stops the node with one ERR_STORAGE warning and errors that say what to do; a larger mapSizeMb brings it back, every write intact', async () => {
  // The second run, with a larger map, has appliedIndex: 0: every entry is handed over again, so
  // the test sees what the log holds.
  await twoRuns({ nodeId: 'full', mapSizeMb: 2, snapshotThreshold: 100000 }, async (full, again) => {
    const warnings = [];
    full.on('warning', (w) => warnings.push(w));
    full.on('command_applied', () => {});
    await full.initialize();
    await waitUntil(() => full.isLeader);
    const big = 'x'.repeat(20000);
    const acked = [];
    const errors = [];
    for (let n = 0; n < 150; n++) {
      try {
        acked.push([n, (await full.replicateCommand({ type: 'big', n, big }, { timeoutMs: 5000 })).logIndex]);
      } catch (err) {
        errors.push(err);
      }
    }
    assert.ok(acked.length > 10, `only ${acked.length} writes fit`);
    assert.ok(errors.length > 10, 'the map never filled');
    for (const err of errors) {
      assert.equal(err.code, 'ERR_STORAGE', err.message);
      assert.match(err.message, /reached mapSizeMb.*larger mapSizeMb/);
    }
    const state = full.getState();
    assert.equal(state.role, 'shutdown');
    assert.match(state.failure, /reached mapSizeMb/);
    const reported = warnings.filter((w) => /reached mapSizeMb/.test(w.message));
    assert.equal(reported.length, 1, 'the failure is reported once');
    assert.equal(reported[0].code, 'ERR_STORAGE');
    await full.stop();
    const applied = new Map();
    again.on('command_applied', ({ command, entry }) => applied.set(entry.index, command.n));
    await again.initialize();
    await waitUntil(() => again.isLeader);
    assert.equal(again.getState().failure, null);
    const after = await again.replicateCommand({ type: 'after' });
    assert.ok(after.logIndex > Math.max(...acked.map(([, index]) => index)));
    await waitUntil(() => applied.has(after.logIndex));
    for (const [n, index] of acked) assert.equal(applied.get(index), n, `write ${n}, acknowledged at ${index}, is gone`);
  }, { mapSizeMb: 64, appliedIndex: 0 });
});

test('a snapshot the node asks for while initialize() is under way gets the provider\'s answer', async () => {
  await twoRuns({ nodeId: 'early', snapshotThreshold: 20 }, async (first, second) => {
    // No snapshot in the first run: the log is past the threshold when the node starts again,
    // and it builds one at once.
    first.on('command_applied', () => {});
    first.on('warning', () => {});
    first.setSnapshotProvider(() => {
      throw new Error('not now');
    });
    await first.initialize();
    await waitUntil(() => first.isLeader);
    for (let n = 0; n < 60; n++) await first.replicateCommand({ type: 'fill', n });
    assert.equal(first.getState().snapshotIndex, null);
    await first.stop();
    let asked = 0;
    second.on('command_applied', () => {});
    second.setSnapshotProvider(() => {
      asked++;
      return { filled: 60 };
    });
    await second.initialize();
    // Unanswered, the build would wait 60 s for the provider.
    await waitUntil(() => second.getState().snapshotIndex !== null, 20000);
    assert.ok(second.getState().snapshotIndex >= 60);
    assert.equal(asked, 1);
  });
});

test('commands applied while no command_applied listener is attached wait for the next one, in order', async () => {
  const raft = createRaftCoordinator({ nodeId: 'between', port: 0, dataDir: dataDir(), bootstrap: true });
  try {
    const seen = [];
    const first = ({ command }) => seen.push(command.n);
    raft.on('command_applied', first);
    await raft.initialize();
    await waitUntil(() => raft.isLeader);
    await raft.replicateCommand({ type: 'between', n: 0 });
    raft.off('command_applied', first);
    for (let n = 1; n < 4; n++) await raft.replicateCommand({ type: 'between', n });
    assert.deepEqual(seen, [0]);
    raft.on('command_applied', ({ command }) => seen.push(command.n));
    await raft.replicateCommand({ type: 'between', n: 4 });
    await waitUntil(() => seen.length === 5, 3000);
    assert.deepEqual(seen, [0, 1, 2, 3, 4]);
    // removeAllListeners() takes the coordinator's own newListener hook away as well.
    raft.removeAllListeners();
    for (let n = 5; n < 8; n++) await raft.replicateCommand({ type: 'between', n });
    raft.on('command_applied', ({ command }) => seen.push(command.n));
    await raft.replicateCommand({ type: 'between', n: 8 });
    await waitUntil(() => seen.length === 9, 3000);
    assert.deepEqual(seen, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  } finally {
    await raft.stop();
  }
});

test('a listener attached late gets every command held for it, however many', async () => {
  // More commands than a fixed count of held events: none may be dropped, and none counted
  // delivered before a listener ran.
  const total = 60000;
  const raft = createRaftCoordinator({ nodeId: 'late-many', port: 0, dataDir: dataDir(), bootstrap: true });
  const warnings = [];
  raft.on('warning', (w) => warnings.push(w));
  await raft.initialize();
  try {
    await waitUntil(() => raft.isLeader);
    for (let from = 0; from < total; from += 2000) {
      const writes = [];
      for (let n = from; n < from + 2000; n++) writes.push(raft.replicateCommand({ type: 'late', n }));
      await Promise.all(writes);
    }
    const seen = [];
    raft.on('command_applied', ({ command }) => seen.push(command.n));
    await raft.replicateCommand({ type: 'late', n: total });
    await waitUntil(() => seen.at(-1) === total, 30000);
    assert.equal(seen.length, total + 1);
    assert.ok(
      seen.every((n, i) => n === i),
      `delivered out of order or with a gap near ${seen.findIndex((n, i) => n !== i)}`,
    );
    assert.deepEqual(warnings, []);
  } finally {
    await raft.stop();
  }
});

test('commands held for a listener hold the node back, not its memory, until one is attached', async () => {
  // 8,000 commands of 4 KB: twice what the node lets wait for JavaScript (about 16 MiB).
  const total = 8000;
  const pad = 'x'.repeat(4096);
  const raft = createRaftCoordinator({ nodeId: 'late-large', port: 0, dataDir: dataDir(), bootstrap: true });
  const warnings = [];
  raft.on('warning', (w) => warnings.push(w));
  await raft.initialize();
  try {
    await waitUntil(() => raft.isLeader);
    const writes = [];
    for (let n = 0; n < total; n++) writes.push(raft.replicateCommand({ type: 'late', n, pad }, { timeoutMs: 120000 }));
    const firstEntry = raft.getState().lastLogIndex + 1;
    await waitUntil(() => raft.getState().commitIndex >= firstEntry + total - 1, 60000);
    // Applying 8,000 entries takes well under a second here: once the applied index has not
    // moved for 2 s, the node has gone as far as it will without a listener.
    let applied = -1;
    let movedAt = Date.now();
    await waitUntil(() => {
      const now = raft.getState().lastApplied;
      if (now !== applied) [applied, movedAt] = [now, Date.now()];
      return Date.now() - movedAt >= 2000;
    }, 60000);
    assert.ok(
      applied < firstEntry + total / 2 + 1500,
      `every command is committed; the node applied through ${applied}, past what may wait unheard`,
    );
    // The operator hears why the node stopped applying.
    await waitUntil(() => warnings.some((w) => w.code === 'ERR_TIMEOUT'), 30000);
    assert.match(warnings.find((w) => w.code === 'ERR_TIMEOUT').message, /applies no further.*command_applied listeners/);
    // A snapshot waits with the applies, and compact() says why it cannot finish.
    await assert.rejects(raft.compact(0, 1000), (err) => err.code === 'ERR_TIMEOUT' && /command_applied listeners/.test(err.message));
    const seen = [];
    raft.on('command_applied', ({ command }) => seen.push(command.n));
    await Promise.all(writes);
    assert.equal(seen.length, total);
    assert.ok(seen.every((n, i) => n === i));
  } finally {
    await raft.stop();
  }
});

test('stop() does not wait for a start-up hand-over that waits for a listener: the data directory opens again at once', async () => {
  const pad = 'x'.repeat(4096);
  // The first run applies 24 MB of commands; the second hands them all over again
  // (appliedIndex: 0), more than may wait for a listener it never attaches.
  await twoRuns({ nodeId: 'catching-up', snapshotThreshold: 100000 }, async (first, second) => {
    first.on('command_applied', () => {});
    await first.initialize();
    await waitUntil(() => first.isLeader);
    for (let from = 0; from < 6000; from += 500) {
      await Promise.all(Array.from({ length: 500 }, (_, i) => first.replicateCommand({ type: 'big', n: from + i, pad })));
    }
    await first.stop();
    await second.initialize();
    // The coordinator's own count of what it holds for a listener: it stops growing once the
    // hand-over waits for room.
    await waitUntil(() => second._held.length > 3000, 20000);
    const stopping = Date.now();
    await second.stop();
    const took = Date.now() - stopping;
    assert.ok(took < 2000, `stop() took ${took} ms`);
    const third = createRaftCoordinator({ nodeId: 'catching-up', port: 0, dataDir: second.config.dataDir });
    await third.initialize();
    await third.stop();
  }, { appliedIndex: 0 });
});

test('commands applied before any command_applied listener are delivered to the first one, in order', async () => {
  const raft = createRaftCoordinator({ nodeId: 'late', port: 0, dataDir: dataDir(), bootstrap: true });
  await raft.initialize();
  await waitUntil(() => raft.isLeader);
  for (let n = 0; n < 5; n++) await raft.replicateCommand({ type: 'early', n });
  const seen = [];
  raft.on('command_applied', ({ command }) => seen.push(command.n));
  await raft.replicateCommand({ type: 'early', n: 5 });
  await waitUntil(() => seen.length === 6);
  assert.deepEqual(seen, [0, 1, 2, 3, 4, 5]);
  await raft.stop();
});
