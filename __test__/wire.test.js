'use strict';
// What arrives at a node's Raft port that is not our protocol: the connection is closed and the
// node keeps serving its cluster.
const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const net = require('node:net');
const { Cluster } = require('../support/cluster');

/** Opens a TCP connection, sends `chunks`, resolves when the server closes it. */
function sendAndAwaitClose(port, chunks, { timeoutMs = 15000 } = {}) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let received = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the node kept a bad connection open for ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on('connect', () => {
      for (const c of chunks) socket.write(c);
    });
    socket.on('data', (d) => {
      received = Buffer.concat([received, d]);
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(received);
    });
  });
}

const upgrade = (port) =>
  Buffer.from(
    `GET /raft HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );

/** A masked client frame header announcing a binary payload of `len` bytes. */
function frameHeader(len) {
  const mask = crypto.randomBytes(4);
  if (len < 126) return Buffer.concat([Buffer.from([0x82, 0x80 | len]), mask]);
  const h = Buffer.alloc(10);
  h[0] = 0x82;
  h[1] = 0x80 | 127;
  h.writeBigUInt64BE(BigInt(len), 2);
  return Buffer.concat([h, mask]);
}

function maskedFrame(payload) {
  const header = frameHeader(payload.length);
  const mask = header.subarray(header.length - 4);
  const body = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
  return Buffer.concat([header, body]);
}

test('garbage, HTTP, truncated and oversized frames, and a foreign cluster get the connection closed; the cluster keeps serving', async () => {
  const cluster = await new Cluster(3).start();
  try {
    const leader = await cluster.form();
    const follower = cluster.node('node-2');
    for (const target of [leader, follower]) {
      const port = target.port;
      // Random bytes instead of an HTTP upgrade.
      await sendAndAwaitClose(port, [crypto.randomBytes(4096)]);
      // A plain HTTP request.
      const http = await sendAndAwaitClose(port, [Buffer.from(`GET / HTTP/1.1\r\nHost: x\r\n\r\n`)]);
      assert.ok(!http.toString().startsWith('HTTP/1.1 101'), 'no websocket upgrade for a plain request');
      // A valid upgrade, then a frame that announces 100 bytes and sends 10.
      await sendAndAwaitClose(port, [upgrade(port), Buffer.concat([frameHeader(100), crypto.randomBytes(10)])]);
      // A valid upgrade, then a frame announcing a terabyte.
      await sendAndAwaitClose(port, [upgrade(port), frameHeader(2 ** 40)]);
      // A valid upgrade, then a well-formed frame holding garbage instead of a handshake.
      await sendAndAwaitClose(port, [upgrade(port), maskedFrame(crypto.randomBytes(64))]);
    }
    // A node of another cluster that tries to add a member is refused at the handshake; both
    // sides report ERR_AUTH and the member stays in its own cluster.
    const intruder = await cluster.outsider('intruder', { clusterId: 'other-cluster', addPeerTimeoutMs: 1500 });
    try {
      await intruder.start();
      await intruder.call('addPeer', { nodeId: 'node-2', host: follower.host, port: follower.port, fireAndForget: true });
      const refused = await follower.waitEvent('warning', (w) => w.code === 'ERR_AUTH' && /other-cluster/.test(w.message));
      assert.match(refused.message, /intruder/);
      await intruder.waitEvent('warning', (w) => w.code === 'ERR_AUTH');
      await intruder.waitEvent('peer_add_failed', (e) => e.nodeId === 'node-2', 15000);
      const s = await follower.call('state');
      assert.equal(s.leaderId, leader.nodeId);
      assert.deepEqual([...s.membership.voters].sort(), ['node-1', 'node-2', 'node-3']);
    } finally {
      await intruder.stop();
    }
    const ok = await leader.call('replicate', { command: { type: 'still-serving' } });
    assert.equal(ok.committed, true);

    // A thousand bad connections at once, while members keep replicating.
    const storm = [];
    for (let i = 0; i < 1000; i++) {
      const port = i % 2 ? leader.port : follower.port;
      storm.push(sendAndAwaitClose(port, i % 3 ? [crypto.randomBytes(512)] : [upgrade(port), frameHeader(2 ** 40)]));
    }
    const load = leader.call('load', { count: 500, concurrency: 20, prefix: 'storm' });
    await Promise.all(storm);
    const result = await load;
    assert.deepEqual(result.errors, {});
    assert.equal(result.acked.length, 500);
  } finally {
    await cluster.stop();
  }
});
