'use strict';
// examples/service: three real service processes on 127.0.0.1, writes over HTTP, SIGTERM on the
// leader while clients write: it drains and exits cleanly, and no acknowledged write is lost.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { freePort } = require('../support/cluster');

const SERVER = path.join(__dirname, '..', 'examples', 'service', 'server.js');

class Service {
  constructor({ nodeId, httpPort, dataDir, members }) {
    Object.assign(this, { nodeId, httpPort, dataDir, members, output: '', child: null });
  }

  start() {
    this.output = '';
    this.child = spawn(process.execPath, [SERVER], {
      env: {
        ...process.env,
        NODE_ID: this.nodeId,
        INITIAL_MEMBERS: this.members,
        HTTP_PORT: String(this.httpPort),
        DATA_DIR: this.dataDir,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    for (const s of [this.child.stdout, this.child.stderr]) s.on('data', (d) => (this.output += d));
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  get running() {
    return this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  async get(route) {
    const res = await fetch(`http://127.0.0.1:${this.httpPort}${route}`, { signal: AbortSignal.timeout(5000) });
    return { status: res.status, body: await res.json() };
  }

  async post(route, body) {
    const res = await fetch(`http://127.0.0.1:${this.httpPort}${route}`, {
      method: 'POST',
      body: JSON.stringify(body),
      headers: { 'content-type': 'application/json' },
      signal: AbortSignal.timeout(10000),
    });
    return { status: res.status, body: await res.json() };
  }
}

async function until(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}: not within ${timeoutMs} ms (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}

test('examples/service: 3 processes, HTTP writes, SIGTERM on the leader, nothing lost', { timeout: 180000 }, async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'unrdf-consensus-service-'));
  const ids = ['node-1', 'node-2', 'node-3'];
  const raftPorts = await Promise.all(ids.map(() => freePort()));
  const members = ids.map((id, i) => `${id}@127.0.0.1:${raftPorts[i]}`).join(',');
  const services = [];
  for (const nodeId of ids) {
    services.push(new Service({ nodeId, httpPort: await freePort(), dataDir: path.join(root, nodeId), members }));
  }
  t.after(async () => {
    for (const s of services) if (s.running) s.child.kill('SIGKILL');
    await Promise.all(services.map((s) => s.exited));
    fs.rmSync(root, { recursive: true, force: true });
  });
  for (const s of services) s.start();
  await until(async () => {
    const all = await Promise.all(services.map((s) => s.get('/health')));
    return all.every((h) => h.status === 200);
  }, 30000, 'every service healthy');

  // A client as a load balancer would be: any node, following 421 (not the leader) to the
  // leader, trying another node on 503 or a refused connection, the same id every time.
  const acked = new Set();
  async function write(id) {
    const deadline = Date.now() + 30000;
    let target = services[0];
    for (;;) {
      try {
        const r = await target.post('/ops', { id, type: 'set', payload: { key: id, value: id.length } });
        if (r.status === 200) return acked.add(id);
        const leader = r.status === 421 && services.find((s) => s.nodeId === r.body.leaderId && s.running);
        target = leader || services[(services.indexOf(target) + 1) % services.length];
      } catch {
        target = services[(services.indexOf(target) + 1) % services.length];
      }
      if (Date.now() > deadline) throw new Error(`write ${id} not acknowledged within 30 s`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  let next = 0;
  const total = 300;
  let terminated = null;
  const writers = Array.from({ length: 6 }, async () => {
    while (next < total) {
      const id = `op-${next++}`;
      await write(id);
      if (acked.size === 100 && !terminated) {
        const leaderId = (await services[0].get('/health').catch(() => services[1].get('/health'))).body.leaderId;
        terminated = services.find((s) => s.nodeId === leaderId);
        terminated.child.kill('SIGTERM');
      }
    }
  });
  await Promise.all(writers);
  assert.ok(terminated, 'no leader was terminated');
  const exit = await terminated.exited;
  assert.deepStrictEqual(exit, { code: 0, signal: null }, `the drained service did not exit cleanly:\n${terminated.output}`);
  assert.match(terminated.output, /SIGTERM: draining/);
  assert.strictEqual(acked.size, total);

  // Back on its data directory, the terminated node catches up; every node holds every write once.
  terminated.start();
  for (const s of services) {
    await until(async () => {
      const { body } = await s.get('/ops');
      return body.applied.length >= total ? body : null;
    }, 30000, `${s.nodeId} holding every write`);
    const { body } = await s.get('/ops');
    assert.strictEqual(new Set(body.applied).size, body.applied.length, `${s.nodeId} applied an operation twice`);
    for (const id of acked) assert.ok(body.applied.includes(id), `${s.nodeId} lost ${id}`);
  }
  const metrics = await fetch(`http://127.0.0.1:${services[0].httpPort}/metrics`).then((r) => r.text());
  assert.match(metrics, /^consensus_has_leader\{node_id="node-1"\} 1$/m);
});
