'use strict';
// Error codes are declared once, in the engine: lib/errors.js and index.d.ts must list exactly
// them, and an error from below keeps what caused it.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const native = require('../lib/native');
const { ErrorCode, ConsensusError, fromNative } = require('../lib/errors');
const { createRaftCoordinator } = require('..');

const sorted = (list) => [...list].sort();

test('lib/errors.js lists exactly the codes the engine declares', () => {
  const engine = native.errorCodes();
  assert.ok(engine.includes('ERR_NOT_INITIALIZED'));
  assert.deepEqual(sorted(Object.values(ErrorCode)), sorted(engine));
  for (const [name, code] of Object.entries(ErrorCode)) assert.equal(`ERR_${name}`, code);
});

test('index.d.ts lists exactly the codes the engine declares, in its union and in ErrorCode', () => {
  const dts = fs.readFileSync(path.join(__dirname, '..', 'index.d.ts'), 'utf8');
  const union = dts.match(/export type ErrorCodeValue =([^;]*);/);
  assert.ok(union, 'index.d.ts declares ErrorCodeValue');
  const unionCodes = [...union[1].matchAll(/'(ERR_[A-Z_]+)'/g)].map((m) => m[1]);
  const object = dts.match(/export declare const ErrorCode: Readonly<\{([^}]*)\}>/);
  assert.ok(object, 'index.d.ts declares ErrorCode');
  const objectCodes = [...object[1].matchAll(/(\w+): '(ERR_[A-Z_]+)'/g)].map((m) => {
    assert.equal(`ERR_${m[1]}`, m[2]);
    return m[2];
  });
  const engine = sorted(native.errorCodes());
  assert.deepEqual(sorted(unionCodes), engine);
  assert.deepEqual(sorted(objectCodes), engine);
});

test('fromNative keeps the native cause, and the original error when it is not the engine\'s', () => {
  const engine = fromNative(new Error(JSON.stringify({ code: 'ERR_STORAGE', message: 'no space', cause: 'MDB_MAP_FULL' })));
  assert.ok(engine instanceof ConsensusError);
  assert.equal(engine.code, 'ERR_STORAGE');
  assert.equal(engine.message, 'no space');
  assert.equal(engine.cause, 'MDB_MAP_FULL');

  const foreign = new TypeError('boom');
  const wrapped = fromNative(foreign);
  assert.equal(wrapped.code, 'ERR_STORAGE');
  assert.equal(wrapped.cause, foreign);
});

test('a data directory that cannot be opened rejects with ERR_STORAGE and the cause from the disk', async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'unrdf-errors-'));
  const notADir = path.join(tmp, 'file');
  fs.writeFileSync(notADir, 'not a directory');
  const raft = createRaftCoordinator({ nodeId: 'n1', port: 0, dataDir: notADir });
  try {
    await assert.rejects(raft.initialize(), (err) => {
      assert.equal(err.code, 'ERR_STORAGE');
      assert.equal(typeof err.cause, 'string');
      assert.ok(err.cause.length > 0);
      return true;
    });
  } finally {
    await raft.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test('a call before initialize rejects with ERR_NOT_INITIALIZED', async () => {
  const raft = createRaftCoordinator({ nodeId: 'n1', port: 0, dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'unrdf-errors-')) });
  await assert.rejects(raft.replicateCommand({ type: 't' }), { code: 'ERR_NOT_INITIALIZED' });
  await assert.rejects(raft.transferLeadership('n2'), { code: 'ERR_NOT_INITIALIZED' });
});
