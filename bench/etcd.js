'use strict';
// etcd 3.4 beside this package in the same run: a 3-member cluster on loopback with etcd's
// default durability and timeouts, driven from Node through the `etcd3` client on the same
// workload, so that each figure can be given as a ratio of two measured under the same load of a
// shared machine.
//
// Neither etcd nor its client is a dependency of this package: `etcd` comes from PATH (Debian:
// etcd-server) and `etcd3` from the working directory's node_modules, this package's own, or
// UNRDF_BENCH_ETCD3_DIR (a directory whose node_modules holds it).
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { freePort } = require('../support/cluster');
const { sleep, round, makeValue, closedLoop, procStatusMb, processCpuUs } = require('./measure');

function findEtcd() {
  try {
    return execFileSync('sh', ['-c', 'command -v etcd'], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}

function loadEtcd3() {
  const dirs = [process.cwd(), path.join(__dirname, '..'), process.env.UNRDF_BENCH_ETCD3_DIR].filter(Boolean);
  try {
    return require(require.resolve('etcd3', { paths: dirs }));
  } catch {
    return null;
  }
}

/** Why etcd cannot run beside us here, or null when it can. */
function etcdUnavailable() {
  if (!findEtcd()) return 'no etcd binary on PATH (Debian: apt-get install etcd-server)';
  if (!loadEtcd3()) return 'the etcd3 client is not installed (npm install etcd3, or set UNRDF_BENCH_ETCD3_DIR)';
  return null;
}

/** A 3-member etcd cluster in a temporary directory; `stop()` removes it. */
class EtcdCluster {
  async start() {
    this.bin = findEtcd();
    this.root = fs.mkdtempSync(path.join(os.tmpdir(), 'unrdf-bench-etcd-'));
    this.members = [];
    for (let i = 1; i <= 3; i++) this.members.push({ name: `n${i}`, client: await freePort(), peer: await freePort(), proc: null });
    for (const m of this.members) this._spawn(m);
    this.endpoints = this.members.map((m) => `http://127.0.0.1:${m.client}`);
    const { Etcd3 } = loadEtcd3();
    this.client = new Etcd3({ hosts: this.endpoints });
    const deadline = Date.now() + 30000;
    for (;;) {
      try {
        await this.client.put('ready').value('1');
        return this;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`etcd did not become ready: ${err.message}`);
        await sleep(100);
      }
    }
  }

  _spawn(m) {
    const initial = this.members.map((x) => `${x.name}=http://127.0.0.1:${x.peer}`).join(',');
    m.proc = spawn(
      this.bin,
      [
        '--name', m.name,
        '--data-dir', path.join(this.root, `${m.name}.etcd`),
        '--listen-client-urls', `http://127.0.0.1:${m.client}`,
        '--advertise-client-urls', `http://127.0.0.1:${m.client}`,
        '--listen-peer-urls', `http://127.0.0.1:${m.peer}`,
        '--initial-advertise-peer-urls', `http://127.0.0.1:${m.peer}`,
        '--initial-cluster', initial,
        '--initial-cluster-token', `bench-${process.pid}`,
        '--initial-cluster-state', 'new',
      ],
      { stdio: ['ignore', 'ignore', 'ignore'] },
    );
    m.exited = new Promise((r) => m.proc.once('exit', r));
  }

  /** The member that reports itself leader on its /metrics, or null while there is none. */
  async leader() {
    for (const m of this.members) {
      if (m.proc.exitCode !== null || m.proc.signalCode !== null) continue;
      try {
        const text = await (await fetch(`http://127.0.0.1:${m.client}/metrics`)).text();
        if (/^etcd_server_is_leader 1$/m.test(text)) return m;
      } catch {
        // a member starting or stopping
      }
    }
    return null;
  }

  memory() {
    const out = {};
    for (const m of this.members) {
      if (m.proc.exitCode === null && m.proc.signalCode === null) out[m.name] = procStatusMb(m.proc.pid);
    }
    return out;
  }

  /** CPU time so far, in microseconds: the members' processes, and this process (the client's). */
  cpuUs() {
    let members = 0;
    for (const m of this.members) {
      if (m.proc.exitCode === null && m.proc.signalCode === null) members += processCpuUs(m.proc.pid).us;
    }
    const own = process.cpuUsage();
    return { members, client: own.user + own.system };
  }

  async stop() {
    this.client?.close();
    for (const m of this.members) if (m.proc.exitCode === null && m.proc.signalCode === null) m.proc.kill('SIGTERM');
    await Promise.all(this.members.map((m) => m.exited));
    fs.rmSync(this.root, { recursive: true, force: true });
  }
}

const putValue = (client, key, n) => client.put(key).value(JSON.stringify(makeValue(n)));

/**
 * etcd on the benchmark's levels (a new key per put, `levels` as [{inFlight, count}]), its RSS
 * idle and after the load, and `failoverTrials` kill -9s of the leader to the next put.
 */
async function benchEtcd({ levels, warmupCount, failoverTrials }) {
  const skipped = etcdUnavailable();
  if (skipped) return { skipped };
  const out = { load: [], memory: {}, failover: [] };
  const etcd = await new EtcdCluster().start();
  try {
    await sleep(1000);
    out.memory.idle = etcd.memory();
    await closedLoop(warmupCount, 16, (n) => putValue(etcd.client, `warm/${n}`, n));
    for (const { inFlight, count } of levels) {
      const cpuBefore = etcd.cpuUs();
      const r = await closedLoop(count, inFlight, (n) => putValue(etcd.client, `c${inFlight}/${n}`, n));
      const cpuAfter = etcd.cpuUs();
      const perPut = (key) => (cpuAfter[key] - cpuBefore[key]) / Math.max(1, r.acked);
      // The client runs in this process, as the load runs in our leader's: both count.
      const [members, client] = [perPut('members'), perPut('client')];
      const cpuPerWriteUs = { members: round(members, 1), client: round(client, 1), total: round(members + client, 1) };
      out.load.push({ inFlight, count, ...r, cpuPerWriteUs });
      console.log(`etcd ${String(inFlight).padStart(3)} in flight: ${r.opsPerSec} ops/s, p50 ${r.p50Ms} p99 ${r.p99Ms} ms, errors ${JSON.stringify(r.errors)}`);
    }
    out.memory.afterLoad = etcd.memory();
  } finally {
    await etcd.stop();
  }
  for (let trial = 1; trial <= failoverTrials; trial++) {
    const t = await etcdFailoverTrial(trial);
    out.failover.push(t);
    console.log(`etcd failover trial ${trial}: ${t.ms === null ? t.error : `${t.ms} ms`}`);
  }
  return out;
}

/**
 * A fresh cluster, kill -9 of its leader, then puts with a 250 ms deadline each and no client
 * retries, in a loop from the moment of the kill, until one succeeds: the same probe as ours.
 */
async function etcdFailoverTrial(trial, giveUpMs = 15000) {
  const etcd = await new EtcdCluster().start();
  try {
    await closedLoop(200, 16, (n) => putValue(etcd.client, `fo${trial}-warm/${n}`, n));
    await sleep(300);
    const leader = await etcd.leader();
    if (!leader) return { trial, ms: null, error: 'no leader before the kill' };
    const { Etcd3 } = loadEtcd3();
    const noRetry = { execute: (fn) => fn({ signal: new AbortController().signal, attempt: 0 }) };
    const survivors = etcd.members.filter((m) => m !== leader).map((m) => `http://127.0.0.1:${m.client}`);
    const probe = new Etcd3({
      hosts: survivors,
      faultHandling: { host: () => noRetry, global: noRetry },
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + 250 }),
    });
    try {
      const t0 = performance.now();
      leader.proc.kill('SIGKILL');
      await leader.exited;
      let n = 0;
      while (performance.now() - t0 < giveUpMs) {
        const s = performance.now();
        try {
          await putValue(probe, `fo${trial}-probe/${n++}`, n);
          return { trial, ms: round(performance.now() - t0, 1) };
        } catch {
          // No leader yet: etcd refuses at once or the deadline passes; try again, without spinning.
          if (performance.now() - s < 5) await sleep(5);
        }
      }
      return { trial, ms: null, error: `no put within ${giveUpMs} ms` };
    } finally {
      probe.close();
    }
  } finally {
    await etcd.stop();
  }
}

module.exports = { etcdUnavailable, EtcdCluster, benchEtcd, putValue };
