'use strict';
// Who gets in: with a secret, only peers that prove they know it; once in a cluster, only its
// members. Refusals are reported as ERR_AUTH warnings on both sides.
const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const { Cluster } = require('../support/cluster');

const SECRET = 'correct horse battery staple';

// Variant order of `Frame` in src/transport/codec.rs: bincode writes the index as a u32 LE.
const FRAME_KINDS = ['Hello', 'Challenge', 'Proof', 'Welcome', 'Refused', 'Request', 'Response'];
const WS_BINARY = 0x2;
// The handshake and the first requests fit well inside this; a cap keeps a long test from
// holding every heartbeat in memory.
const RECORD_LIMIT = 256 * 1024;

/**
 * A TCP proxy on 127.0.0.1 in front of `targetPort` that pipes both ways untouched (pings and
 * pongs included, so keepalive works through it) and records each connection's bytes.
 */
async function startRecordingProxy(targetPort) {
  const connections = [];
  const sockets = new Set();
  const track = (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    // A reset on either side only ends this connection; the close handlers below end its twin.
    socket.on('error', () => {});
  };
  const record = (chunks, socket) => {
    let size = 0;
    socket.on('data', (d) => {
      if (size >= RECORD_LIMIT) return;
      chunks.push(Buffer.from(d));
      size += d.length;
    });
  };
  const server = net.createServer((dialer) => {
    const conn = { fromDialer: [], fromListener: [] };
    connections.push(conn);
    const listener = net.connect(targetPort, '127.0.0.1');
    track(dialer);
    track(listener);
    record(conn.fromDialer, dialer);
    record(conn.fromListener, listener);
    dialer.pipe(listener);
    listener.pipe(dialer);
    // One side going away takes the other with it, as on a direct link.
    dialer.on('close', () => listener.destroy());
    listener.on('close', () => dialer.destroy());
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: server.address().port,
    connections,
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * The WebSocket frames in one direction of a recorded connection (after the HTTP upgrade),
 * unmasked, each with the offset where it ends in `bytes`. A frame cut off by the recording
 * limit ends the list.
 */
function wsFrames(bytes) {
  const headEnd = bytes.indexOf('\r\n\r\n');
  if (headEnd < 0) return [];
  const frames = [];
  let at = headEnd + 4;
  while (at + 2 <= bytes.length) {
    const opcode = bytes[at] & 0x0f;
    const masked = (bytes[at + 1] & 0x80) !== 0;
    let len = bytes[at + 1] & 0x7f;
    let cursor = at + 2;
    if (len === 126) {
      if (cursor + 2 > bytes.length) break;
      len = bytes.readUInt16BE(cursor);
      cursor += 2;
    } else if (len === 127) {
      if (cursor + 8 > bytes.length) break;
      len = Number(bytes.readBigUInt64BE(cursor));
      cursor += 8;
    }
    const mask = masked ? bytes.subarray(cursor, cursor + 4) : null;
    if (masked) cursor += 4;
    if (cursor + len > bytes.length) break;
    const payload = Buffer.from(bytes.subarray(cursor, cursor + len));
    if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
    at = cursor + len;
    frames.push({ opcode, payload, end: at });
  }
  return frames;
}

/** Our protocol's frames among the WebSocket frames: kind, and for a refusal its message. */
function protocolFrames(bytes) {
  return wsFrames(bytes)
    .filter((f) => f.opcode === WS_BINARY && f.payload.length >= 4)
    .map((f) => {
      const kind = FRAME_KINDS[f.payload.readUInt32LE(0)] || 'unknown';
      let message = null;
      if (kind === 'Refused') {
        // Refused { code: String, message: String }: each a u64 LE length, then UTF-8.
        const codeLen = Number(f.payload.readBigUInt64LE(4));
        const messageAt = 12 + codeLen;
        const messageLen = Number(f.payload.readBigUInt64LE(messageAt));
        message = f.payload.subarray(messageAt + 8, messageAt + 8 + messageLen).toString();
      }
      return { kind, message, end: f.end };
    });
}

/**
 * Replays a recorded dialer stream on a new connection to `port`: the upgrade request, then,
 * once the node has answered it, the frames. The pause is the only liberty taken: the node
 * rejects frames that arrive together with the request, as a real client never sends them.
 * Collects the answer until the node closes the connection or `timeoutMs` passes (then
 * `closed` is false).
 */
function replay(port, recorded, timeoutMs) {
  const requestEnd = recorded.indexOf('\r\n\r\n') + 4;
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const received = [];
    let framesSent = false;
    const done = (closed) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ closed, received: Buffer.concat(received) });
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.on('connect', () => socket.write(recorded.subarray(0, requestEnd)));
    socket.on('data', (d) => {
      received.push(d);
      if (!framesSent && Buffer.concat(received).includes('\r\n\r\n')) {
        framesSent = true;
        socket.write(recorded.subarray(requestEnd));
      }
    });
    // A reset is the node hanging up too.
    socket.on('error', () => {});
    socket.on('close', () => done(true));
  });
}

test('with the right secret a cluster forms and replicates; a node with a wrong secret is refused on both sides', async () => {
  const cluster = await new Cluster(3, { config: { secret: SECRET } }).start();
  try {
    const leader = await cluster.form();
    const load = await leader.call('load', { count: 200, concurrency: 10, prefix: 'auth' });
    assert.equal(load.acked.length, 200);

    const wrong = await cluster.outsider('node-4', { secret: 'wrong horse battery staple', addPeerTimeoutMs: 2000 });
    try {
      await wrong.start();
      // The leader tries to add it: the impostor cannot prove the secret, so the leader refuses
      // to send it anything, and the impostor reports the leader as unable to prove it either.
      const added = leader.call('addPeer', { nodeId: 'node-4', host: wrong.host, port: wrong.port }).catch((e) => e);
      const onLeader = await leader.waitEvent('warning', (w) => w.code === 'ERR_AUTH' && /node-4/.test(w.message), 15000);
      assert.match(onLeader.message, /did not prove it knows the cluster secret/);
      await wrong.waitEvent('warning', (w) => w.code === 'ERR_AUTH', 15000);
      const err = await added;
      // The refusal is the answer: addPeer says so at once instead of waiting for a learner
      // that can never catch up.
      assert.equal(err.code, 'ERR_AUTH');
      assert.match(err.message, /did not prove it knows the cluster secret/);
      const s = await leader.call('state');
      assert.ok(!s.membership.voters.includes('node-4'), 'never promoted to voter');
      assert.equal((await wrong.call('state')).lastLogIndex, 0, 'received no entries');
    } finally {
      await wrong.stop();
    }
    // Members keep replicating.
    const after = await leader.call('load', { count: 100, concurrency: 10, prefix: 'after' });
    assert.deepEqual(after.errors, {});
  } finally {
    await cluster.stop();
  }
});

test('a node without the secret cannot join a cluster that has one, and vice versa', async () => {
  const cluster = await new Cluster(2, { config: { secret: SECRET, addPeerTimeoutMs: 2000 } }).start();
  const open = await cluster.outsider('open-node', { addPeerTimeoutMs: 2000 });
  try {
    const leader = await cluster.form();
    await open.start();
    const added = await leader.call('addPeer', { nodeId: 'open-node', host: open.host, port: open.port }).catch((e) => e);
    assert.equal(added.code, 'ERR_AUTH');
    await leader.waitEvent('warning', (w) => w.code === 'ERR_AUTH');
  } finally {
    await open.stop();
    await cluster.stop();
  }
});

test('a node that is not a member is refused, and a fresh node does not found a cluster beside one it probed', async () => {
  const cluster = await new Cluster(3).start();
  try {
    await cluster.form();
    const outsider = await cluster.outsider('outsider', { addPeerTimeoutMs: 2000 });
    try {
      await outsider.start();
      // A fresh node asked to add a member of an existing cluster must not found a second one.
      const node2 = cluster.node('node-2');
      const err = await outsider.call('addPeer', { nodeId: 'node-2', host: node2.host, port: node2.port }).catch((e) => e);
      assert.equal(err.code, 'ERR_NOT_LEADER');
      assert.match(err.message, /already belongs to a cluster/);
      const s = await outsider.call('state');
      assert.deepEqual(s.membership.voters, [], 'the outsider founded nothing');
      const refused = await node2.waitEvent('warning', (w) => w.code === 'ERR_AUTH' && /outsider is not a member/.test(w.message));
      assert.ok(refused);
    } finally {
      await outsider.stop();
    }
  } finally {
    await cluster.stop();
  }
});

test('a recorded handshake replayed on a new connection is refused', async () => {
  const cluster = await new Cluster(2, { config: { secret: SECRET } }).start();
  const [dialer, listener] = cluster.nodes;
  let proxy = null;
  try {
    proxy = await startRecordingProxy(listener.port);
    // The membership address of the listener is the proxy, so every connection the dialer
    // opens to it passes through the recorder.
    await dialer.call('addPeer', { nodeId: listener.nodeId, host: '127.0.0.1', port: proxy.port });
    await cluster.waitFor(async () => {
      const states = await cluster.states();
      return states.every((s) => s.leaderId === dialer.nodeId && !s.membership.changing);
    });
    const before = await dialer.call('load', { count: 20, concurrency: 5, prefix: 'through-proxy' });
    assert.equal(before.acked.length, 20);

    // A connection the listener welcomed: its dialer side holds a complete, genuine handshake.
    const recorded = proxy.connections.find((c) =>
      protocolFrames(Buffer.concat(c.fromListener)).some((f) => f.kind === 'Welcome'),
    );
    assert.ok(recorded, 'the proxy saw a successful handshake');
    const dialerBytes = Buffer.concat(recorded.fromDialer);
    const [hello, proof] = protocolFrames(dialerBytes);
    assert.equal(hello?.kind, 'Hello');
    assert.equal(proof?.kind, 'Proof');
    // The upgrade request, Hello and Proof exactly as the genuine dialer sent them; nothing
    // after, so the node has read everything when it decides.
    const handshake = dialerBytes.subarray(0, proof.end);

    const refusal = (w) =>
      w.code === 'ERR_AUTH' && /node-1 did not prove it knows the cluster secret/.test(w.message);
    assert.ok(
      !listener.events.some((e) => e.name === 'warning' && refusal(e.payload)),
      'no refusal before the replay, so the one awaited below is the replay',
    );
    const answer = await replay(listener.port, handshake, 10000);
    assert.ok(answer.closed, 'the node hung up on the replay');
    // The node answers with a fresh challenge, so the recorded proof cannot match it.
    const frames = protocolFrames(answer.received);
    const kinds = frames.map((f) => f.kind);
    assert.equal(kinds[0], 'Challenge');
    assert.ok(!kinds.includes('Welcome'), `no welcome for a replayed proof (got ${kinds.join(', ')})`);
    assert.ok(!kinds.includes('Response'), 'nothing served on the replayed connection');
    const refused = frames.find((f) => f.kind === 'Refused');
    assert.match(refused?.message ?? '', /node-1 did not prove it knows the cluster secret/);
    const warning = await listener.waitEvent('warning', refusal, 10000);
    assert.match(warning.message, /refused a connection/);

    // The genuine link through the proxy is untouched: with two voters every ack needs node-2,
    // which the leader reaches only through the proxy.
    const after = await dialer.call('load', { count: 50, concurrency: 5, prefix: 'after-replay' });
    assert.equal(after.acked.length, 50);
    assert.deepEqual(after.errors, {});
  } finally {
    try {
      await cluster.stop();
    } finally {
      await proxy?.close();
    }
  }
});
