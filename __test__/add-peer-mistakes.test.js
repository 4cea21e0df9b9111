'use strict';
// addPeer with a wrong address: the real cause comes back, nothing is left in the membership,
// and the advice given (call addPeer again with the right address) works.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { createRaftCoordinator } = require('..');
const { freePort } = require('../support/cluster');

test('addPeer at a wrong port: fails with the cause, leaves no learner, and the retry works', { timeout: 60000 }, async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'unrdf-consensus-addpeer-'));
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  const make = (nodeId, extra = {}) => createRaftCoordinator({ nodeId, port: 0, dataDir: path.join(root, nodeId), addPeerTimeoutMs: 1500, ...extra });
  const n1 = make('ap-1', { bootstrap: true });
  const n2 = make('ap-2');
  const n3 = make('ap-3');
  t.after(() => Promise.all([n1.stop(), n2.stop(), n3.stop()]));
  await Promise.all([n1.initialize(), n2.initialize(), n3.initialize()]);
  await n1.waitForLeader({ timeoutMs: 10000 });
  const members = () => Object.keys(n1.getState().membership.nodes).sort();

  // Another node answers at that port: refused at the handshake, at once.
  let started = Date.now();
  await assert.rejects(n1.addPeer('ap-2', '127.0.0.1', n3.getState().port), (err) => {
    assert.strictEqual(err.code, 'ERR_INVALID_CONFIG');
    assert.match(err.message, /answered as ap-3, expected ap-2/);
    return true;
  });
  assert.ok(Date.now() - started < 10000, `the refusal took ${Date.now() - started} ms`);
  assert.deepStrictEqual(members(), ['ap-1']);

  // Nothing listens at that port: after addPeerTimeoutMs, the cause, and no phantom learner.
  const nothing = await freePort();
  started = Date.now();
  await assert.rejects(n1.addPeer('ap-2', '127.0.0.1', nothing), (err) => {
    assert.strictEqual(err.code, 'ERR_TIMEOUT');
    assert.match(err.message, /nothing listens there/);
    assert.match(err.message, /not added/);
    return true;
  });
  assert.deepStrictEqual(members(), ['ap-1']);
  assert.deepStrictEqual(n1.getState().membership.learners, []);

  // The advice: the same call with the right address.
  await n1.addPeer('ap-2', '127.0.0.1', n2.getState().port);
  assert.deepStrictEqual(n1.getState().membership.voters.sort(), ['ap-1', 'ap-2']);
});
