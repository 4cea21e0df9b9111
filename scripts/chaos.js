#!/usr/bin/env node
// npm run chaos -- --seconds N --nodes 3|5 --seed S [--clients K] [--out file.json] [--link-cuts]
//
// Drives a real cluster (one OS process per node) through its public API while a seeded nemesis
// kills, pauses, partitions, restarts and re-members nodes; then heals everything, waits for the
// cluster to converge and checks the history it recorded. Exits 1 on any violation.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { Cluster } = require('../support/cluster');
const { available, TestNetwork } = require('../support/netns');
const { LinkCutNetwork, FAULT_HOOKS_ENV } = require('../support/link-cuts');
const { buildOrExit: build } = require('./build');
const { checkHistory } = require('../support/history');
const { ErrorCode } = require('..');
const { CommandType } = require('../lib/constants');

const OUR_CODES = new Set(Object.values(ErrorCode));

const RETRYABLE = new Set(['ERR_NOT_LEADER', 'ERR_TIMEOUT', 'ERR_NO_QUORUM', 'ERR_SHUTDOWN', 'ERR_NOT_INITIALIZED']);
/** How long a client keeps retrying one operation before it calls the outcome indeterminate. */
const OPERATION_DEADLINE_MS = 20000;
/** How long the healed cluster gets to agree before that counts as a violation. */
const CONVERGENCE_LIMIT_MS = 60000;
// The check finds each acknowledged operation through its id, so the id window must hold every
// id of the run: the default 100,000 ids fill in about 6 minutes of a 5-node run.
const NODE_CONFIG = {
  snapshotThreshold: 500,
  logsKeptAfterSnapshot: 100,
  addPeerTimeoutMs: 15000,
  commandTimeoutMs: 2000,
  operationIdWindow: 2000000,
  operationIdWindowBytes: 256 * 1024 * 1024,
};
// Every node runs the guide's stack with a daemon that keeps its state in memory and is rebuilt
// at each start from the latest snapshot and the log after it (appliedIndex: 0 with
// snapshot/restore): whatever a node went through, its daemon must end holding every
// acknowledged operation.
const GUIDE = { daemonStyle: 'memory', cluster: { healthCheckInterval: 1000 }, consensus: { partitionDetectionMs: 1000 } };

function parseArgs(argv) {
  const opts = { seconds: 60, nodes: 3, seed: Math.floor(Math.random() * 2 ** 31), clients: 8, out: null, linkCuts: false };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, '');
    // Partitions by the in-process fault hook even where network namespaces are available.
    if (key === 'link-cuts') {
      opts.linkCuts = true;
      continue;
    }
    const value = argv[++i];
    if (!(key in opts) || key === 'linkCuts' || value === undefined) throw new Error(`unknown or incomplete option --${key}`);
    opts[key] = key === 'out' ? value : Number(value);
    if (key !== 'out' && !Number.isInteger(opts[key])) throw new Error(`--${key} expects an integer`);
  }
  if (![3, 5].includes(opts.nodes)) throw new Error('--nodes is 3 or 5');
  if (opts.seconds < 10) throw new Error('--seconds is at least 10');
  opts.out ??= path.join('chaos-results', `chaos-${opts.nodes}n-${opts.seconds}s-seed${opts.seed}.json`);
  return opts;
}

/** A small seeded generator (mulberry32): the same seed gives the same fault schedule. */
function seededRandom(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    between: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: (list) => list[Math.floor(next() * list.length)],
    shuffle: (list) => {
      const out = [...list];
      for (let i = out.length - 1; i > 0; i--) {
        const j = Math.floor(next() * (i + 1));
        [out[i], out[j]] = [out[j], out[i]];
      }
      return out;
    },
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class ChaosRun {
  constructor(opts) {
    this.opts = opts;
    this.faultRandom = seededRandom(opts.seed);
    // Clients draw from their own stream so the fault schedule does not depend on their timing.
    this.clientRandom = seededRandom(opts.seed ^ 0x5bd1e995);
    this.started = Date.now();
    this.ops = [];
    this.faultLog = [];
    this.faultCounts = {};
    this.violations = [];
    this.leadersByTerm = new Map();
    this.lifetimes = []; // one per node process: what it delivered, in order
    this.paused = new Set();
    this.removed = new Set();
    this.network = null; // network namespaces, when the nodes run in them
    this.partitions = null; // what the nemesis partitions with: the namespaces or the link cuts
    this.partitionsWhy = null;
  }

  elapsed() {
    return Date.now() - this.started;
  }

  log(line) {
    const at = (this.elapsed() / 1000).toFixed(1).padStart(6);
    console.log(`[${at}s] ${line}`);
  }

  violation(kind, detail) {
    if (this.violations.filter((v) => v.kind === kind).length < 20) this.log(`VIOLATION ${kind}: ${detail}`);
    this.violations.push({ kind, detail });
  }

  async setup() {
    const net = available();
    if (net.ok && !this.opts.linkCuts) {
      this.network = new TestNetwork(this.opts.nodes).setup();
    } else {
      this.partitionsWhy = this.opts.linkCuts ? '--link-cuts' : net.why;
      // The node processes inherit this and accept link cuts.
      process.env[FAULT_HOOKS_ENV] = '1';
      console.log('!'.repeat(78));
      console.log(`!! NO REAL PARTITIONS (${this.partitionsWhy}).`);
      console.log('!! Nodes run on loopback; partitions are simulated in-process by refusing and');
      console.log('!! dropping connections between chosen nodes. Every other fault is real.');
      console.log('!'.repeat(78));
    }
    this.cluster = new Cluster(this.opts.nodes, { config: NODE_CONFIG, network: this.network, guide: GUIDE });
    await this.cluster.start();
    this.partitions = this.network ?? new LinkCutNetwork(this.cluster.nodes);
    for (const node of this.cluster.nodes) {
      this.trackLifetime(node);
      node.onEvent = (e) => {
        if (e.name === 'leader_elected') this.sawLeader(e.payload.term, e.payload.leaderId);
      };
    }
    await this.cluster.form();
    this.log(`${this.opts.nodes} nodes formed a cluster${this.network ? ' in their own network namespaces' : ' on loopback, partitions by link cuts'}`);
  }

  sawLeader(term, leaderId) {
    if (!this.leadersByTerm.has(term)) this.leadersByTerm.set(term, new Set());
    this.leadersByTerm.get(term).add(leaderId);
  }

  /** A node process just started: what it delivers from now on is a new lifetime. */
  trackLifetime(node) {
    const lifetime = { nodeId: node.nodeId, entries: [], read: 0 };
    node.lifetime = lifetime;
    this.lifetimes.push(lifetime);
  }


  /** Pulls what each live node delivered since the last poll. */
  async pollDeliveries() {
    await Promise.all(
      this.cluster.nodes.map(async (node) => {
        if (!node.running || this.paused.has(node.nodeId)) return;
        const lifetime = node.lifetime;
        try {
          const got = await node.call('applied', { from: lifetime.read }, 5000);
          if (node.lifetime !== lifetime) return;
          for (const entry of got.entries) lifetime.entries.push(entry);
          lifetime.read += got.entries.length;
        } catch {
          // killed or paused meanwhile
        }
      }),
    );
  }

  async pollLeaders() {
    await Promise.all(
      this.cluster.nodes.map(async (node) => {
        if (!node.running || this.paused.has(node.nodeId)) return;
        try {
          const s = await node.call('state', {}, 2000);
          if (s.isLeader) this.sawLeader(s.term, s.nodeId);
        } catch {
          // killed or paused meanwhile
        }
      }),
    );
  }

  async observe(untilDone) {
    while (!untilDone()) {
      await this.pollLeaders();
      await this.pollDeliveries();
      await sleep(200);
    }
  }

  // ---------------------------------------------------------------- workload

  async client(k, until) {
    let seq = 0;
    while (Date.now() < until) {
      const op = { id: `c${k}-${seq++}`, client: k, start: this.elapsed(), attempts: 0, outcome: null };
      this.ops.push(op);
      const giveUp = Date.now() + OPERATION_DEADLINE_MS;
      for (;;) {
        const live = this.cluster.nodes.filter((n) => n.running);
        const node = live.length ? this.clientRandom.pick(live) : null;
        op.attempts++;
        try {
          if (!node) throw new Error('no node process is running');
          const r = await node.call(
            'replicate',
            // An operation as ConsensusManager replicates it, sent through any node (forwarded to
            // the leader), so every node's daemon receives it.
            {
              command: { type: CommandType.OPERATION, operation: { id: op.id, daemonId: `client-${k}`, type: 'chaos', payload: {}, timestamp: Date.now() } },
              operationId: op.id,
              forward: true,
              timeoutMs: 2000,
            },
            5000,
          );
          Object.assign(op, { outcome: 'ok', index: r.logIndex, term: r.term, end: this.elapsed() });
          break;
        } catch (err) {
          // Codes not of ours (EPIPE, none) mean the call never reached a live node: killed,
          // paused or restarting. Worth a retry, as a lost connection is to a real client.
          const ours = OUR_CODES.has(err.code);
          if (ours && !RETRYABLE.has(err.code)) {
            Object.assign(op, { outcome: 'error', error: `${err.code}: ${err.message}`, end: this.elapsed() });
            this.violation('unexpected-error', `${op.id} via ${node.nodeId}: ${err.code}: ${err.message}`);
            break;
          }
          op.lastError = ours ? err.code : 'unreachable';
          if (Date.now() > giveUp) {
            Object.assign(op, { outcome: 'indeterminate', end: this.elapsed() });
            break;
          }
          await sleep(this.clientRandom.between(50, 250));
        }
      }
    }
  }

  // ---------------------------------------------------------------- nemesis

  async currentLeader(timeoutMs = 10000) {
    const among = this.cluster.nodes.filter((n) => !this.paused.has(n.nodeId) && !this.removed.has(n.nodeId));
    return this.cluster.leader(timeoutMs, among).catch(() => null);
  }

  hostOf(node) {
    return this.cluster.nodes.indexOf(node) + 1;
  }

  faultKinds() {
    return ['kill-leader', 'kill-any', 'pause-leader', 'pause-any', 'restart', 'remove-and-readd', 'isolate-leader', 'isolate-follower', 'split', 'one-way'];
  }

  async restart(node) {
    // The new lifetime starts before the process does: a poll of the new process must not
    // read it against the old lifetime's offset.
    this.trackLifetime(node);
    try {
      await node.start();
    } catch (err) {
      this.violation('restart-failed', `${node.nodeId}: ${err.message}`);
    }
  }

  /** Applies one fault of `kind`, holds it for `holdMs`, and undoes it. */
  async fault(kind, holdMs) {
    const r = this.faultRandom;
    const up = this.cluster.nodes.filter((n) => n.running && !this.paused.has(n.nodeId) && !this.removed.has(n.nodeId));
    const leader = ['kill-leader', 'pause-leader', 'isolate-leader', 'remove-and-readd', 'isolate-follower'].includes(kind)
      ? await this.currentLeader()
      : null;
    const followers = leader ? up.filter((n) => n !== leader) : up;
    this.faultCounts[kind] = (this.faultCounts[kind] || 0) + 1;
    const note = (what) => {
      this.log(`nemesis ${kind}: ${what}`);
      this.faultLog.push({ at: this.elapsed(), kind, what });
    };
    switch (kind) {
      case 'kill-leader':
      case 'kill-any': {
        const victim = kind === 'kill-leader' ? leader : r.pick(up);
        if (!victim) return note('no target');
        note(`kill -9 ${victim.nodeId} for ${holdMs} ms`);
        await victim.kill('SIGKILL');
        await sleep(holdMs);
        await this.restart(victim);
        return note(`${victim.nodeId} restarted`);
      }
      case 'pause-leader':
      case 'pause-any': {
        const victim = kind === 'pause-leader' ? leader : r.pick(up);
        if (!victim) return note('no target');
        note(`SIGSTOP ${victim.nodeId} for ${holdMs} ms`);
        this.paused.add(victim.nodeId);
        process.kill(victim.child.pid, 'SIGSTOP');
        await sleep(holdMs);
        process.kill(victim.child.pid, 'SIGCONT');
        this.paused.delete(victim.nodeId);
        return note(`SIGCONT ${victim.nodeId}`);
      }
      case 'restart': {
        const victim = r.pick(up);
        if (!victim) return note('no target');
        note(`graceful restart of ${victim.nodeId}`);
        await victim.stop();
        await this.restart(victim);
        return undefined;
      }
      case 'isolate-leader':
      case 'isolate-follower': {
        const victim = kind === 'isolate-leader' ? leader : r.pick(followers);
        if (!victim) return note('no target');
        note(`isolate ${victim.nodeId} for ${holdMs} ms`);
        await this.partitions.isolate(this.hostOf(victim));
        await sleep(holdMs);
        await this.partitions.heal(this.hostOf(victim));
        return note(`${victim.nodeId} reconnected`);
      }
      case 'split': {
        const hosts = r.shuffle(this.cluster.nodes.map((_, i) => i + 1));
        const minority = hosts.slice(0, Math.floor((hosts.length - 1) / 2) || 1);
        const majority = hosts.slice(minority.length);
        note(`split {${minority.map((h) => `node-${h}`)}} | {${majority.map((h) => `node-${h}`)}} for ${holdMs} ms`);
        const blocked = await this.partitions.split([minority, majority]);
        await sleep(holdMs);
        for (const [from, to] of blocked) await this.partitions.unblock(from, to);
        return note('split healed');
      }
      case 'one-way': {
        const [from, to] = r.shuffle(this.cluster.nodes.map((_, i) => i + 1));
        note(`drop everything node-${from} sends to node-${to} for ${holdMs} ms`);
        await this.partitions.block(from, to);
        await sleep(holdMs);
        await this.partitions.unblock(from, to);
        return note('one-way link healed');
      }
      case 'remove-and-readd': {
        const victim = r.pick(followers);
        if (!leader || !victim) return note('no target');
        note(`remove ${victim.nodeId} from the cluster, wipe it, add it back after ${holdMs} ms`);
        try {
          await leader.call('removePeer', { nodeId: victim.nodeId }, 20000);
        } catch (err) {
          return note(`removal refused (${err.code || err.message}); left as it is`);
        }
        this.removed.add(victim.nodeId);
        await victim.kill('SIGKILL');
        fs.rmSync(victim.dataDir, { recursive: true, force: true });
        await sleep(holdMs);
        await this.restart(victim);
        await this.readd(victim);
        return undefined;
      }
      default:
        throw new Error(`unknown fault ${kind}`);
    }
  }

  /** Adds a removed node back through whoever leads, until it is a member again. */
  async readd(node) {
    const deadline = Date.now() + 30000;
    while (Date.now() < deadline) {
      const leader = await this.currentLeader(5000);
      if (leader) {
        try {
          await leader.call('addPeer', { nodeId: node.nodeId, host: node.host, port: node.port }, 20000);
          this.removed.delete(node.nodeId);
          this.log(`nemesis remove-and-readd: ${node.nodeId} is a member again`);
          return true;
        } catch (err) {
          this.log(`re-adding ${node.nodeId} via ${leader.nodeId} failed (${err.code || err.message}); retrying`);
        }
      }
      await sleep(500);
    }
    return false;
  }

  async nemesis(until) {
    const kinds = this.faultKinds();
    while (Date.now() < until - 2000) {
      await sleep(this.faultRandom.between(500, 2000));
      const hold = Math.min(this.faultRandom.between(800, 4000), Math.max(0, until - Date.now()));
      await this.fault(this.faultRandom.pick(kinds), hold);
    }
  }

  // ---------------------------------------------------------------- heal and check

  async healAll() {
    for (const node of this.cluster.nodes) {
      if (this.paused.delete(node.nodeId)) process.kill(node.child.pid, 'SIGCONT');
      if (!node.running) await this.restart(node);
    }
    for (const node of this.cluster.nodes) {
      if (this.removed.has(node.nodeId) && !(await this.readd(node))) {
        this.violation('readd-failed', `${node.nodeId} could not be added back`);
      }
    }
  }

  /** Waits until every node agrees on the leader, the membership and how far it applied. */
  async converge() {
    const all = this.cluster.nodes.map((n) => n.nodeId).sort();
    const started = Date.now();
    try {
      await this.cluster.waitFor(async () => {
        const states = await this.cluster.states(this.cluster.nodes);
        const leader = states.find((s) => s.isLeader);
        if (!leader) return null;
        const agreed = states.every(
          (s) =>
            s.leaderId === leader.nodeId &&
            s.lastApplied === leader.lastApplied &&
            !s.membership.changing &&
            JSON.stringify([...s.membership.voters].sort()) === JSON.stringify(all),
        );
        return agreed && leader.lastApplied === leader.commitIndex ? states : null;
      }, CONVERGENCE_LIMIT_MS, 100);
      return Date.now() - started;
    } catch (err) {
      this.violation('no-convergence', err.message);
      return null;
    }
  }

  async check() {
    const ids = this.ops.filter((op) => op.outcome !== 'error').map((op) => op.id);
    const where = new Map();
    for (const node of this.cluster.nodes) {
      const found = new Map();
      for (let i = 0; i < ids.length; i += 5000) {
        const chunk = ids.slice(i, i + 5000);
        const got = await node.call('operations', { operationIds: chunk }, 60000);
        chunk.forEach((id, j) => found.set(id, got[j]));
      }
      where.set(node.nodeId, found);
    }
    const found = checkHistory({
      ops: this.ops,
      replicas: where,
      lifetimes: this.lifetimes,
      daemons: this.daemons,
      leadersByTerm: this.leadersByTerm,
    });
    for (const v of found) this.violation(v.kind, v.detail);
  }

  async run() {
    const { seconds, clients } = this.opts;
    await this.setup();
    const until = Date.now() + seconds * 1000;
    let clientsDone = false;
    const workload = Promise.all(Array.from({ length: clients }, (_, k) => this.client(k, until))).then(() => {
      clientsDone = true;
    });
    const observer = this.observe(() => clientsDone);
    await this.nemesis(until);
    this.log('nemesis done; healing everything');
    await this.healAll();
    const healedAt = Date.now();
    await workload;
    await observer;
    const convergeMs = await this.converge();
    this.convergenceMs = convergeMs === null ? null : Date.now() - healedAt;
    await this.collectFinalDeliveries();
    await this.check();
  }

  /**
   * Events reach JavaScript a moment after the native state says they were applied: poll until
   * every node's daemon took everything up to the last acknowledged operation (or a bounded wait
   * ends; whatever is still missing then is the checker's to report).
   */
  async collectFinalDeliveries() {
    // A loop, not Math.max(...): a long run acknowledges more operations than a call takes arguments.
    const last = this.ops.reduce((max, op) => (op.outcome === 'ok' ? Math.max(max, op.index) : max), 0);
    const deadline = Date.now() + 10000;
    for (;;) {
      await this.pollDeliveries();
      this.daemons = new Map();
      for (const node of this.cluster.nodes) {
        const held = await node.call('holdings', {}, 60000).catch(() => []);
        this.daemons.set(
          node.nodeId,
          held.map(([index, id]) => [index, id]),
        );
      }
      const behind = [...this.daemons.values()].filter((held) => (held.length ? held[held.length - 1][0] : -1) < last);
      if (behind.length === 0 || Date.now() > deadline) return;
      await sleep(100);
    }
  }

  summary() {
    const count = (outcome) => this.ops.filter((op) => op.outcome === outcome).length;
    const byKind = {};
    for (const v of this.violations) byKind[v.kind] = (byKind[v.kind] || 0) + 1;
    return {
      seed: this.opts.seed,
      seconds: this.opts.seconds,
      nodes: this.opts.nodes,
      clients: this.opts.clients,
      network: this.network ? 'network namespaces' : `loopback, partitions by in-process link cuts (${this.partitionsWhy})`,
      operations: { attempted: this.ops.length, acknowledged: count('ok'), indeterminate: count('indeterminate'), failed: count('error') },
      retries: this.ops.reduce((n, op) => n + op.attempts - 1, 0),
      faults: this.faultCounts,
      terms: this.leadersByTerm.size,
      convergenceMs: this.convergenceMs,
      violations: { total: this.violations.length, byKind, first: this.violations.slice(0, 50) },
      faultLog: this.faultLog,
    };
  }

  async teardown() {
    for (const node of this.cluster?.nodes ?? []) {
      if (this.paused.has(node.nodeId) && node.running) process.kill(node.child.pid, 'SIGCONT');
    }
    await this.cluster?.stop().catch(() => {});
    this.network?.teardown();
  }
}

function printSummary(s) {
  const rows = [
    ['seed', s.seed],
    ['nodes / clients / seconds', `${s.nodes} / ${s.clients} / ${s.seconds}`],
    ['network', s.network],
    ['operations acknowledged', s.operations.acknowledged],
    ['operations indeterminate', s.operations.indeterminate],
    ['operations failed', s.operations.failed],
    ['client retries', s.retries],
    ...Object.entries(s.faults)
      .sort()
      .map(([k, n]) => [`fault ${k}`, n]),
    ['terms seen', s.terms],
    ['convergence after heal', s.convergenceMs === null ? 'never' : `${s.convergenceMs} ms`],
    ['violations', s.violations.total],
    ...Object.entries(s.violations.byKind).map(([k, n]) => [`  ${k}`, n]),
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  console.log('\nchaos summary');
  for (const [k, v] of rows) console.log(`  ${k.padEnd(width)}  ${v}`);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  build();
  console.log(`chaos: ${opts.nodes} nodes, ${opts.clients} clients, ${opts.seconds} s, seed ${opts.seed} (rerun with --seed ${opts.seed})`);
  const chaos = new ChaosRun(opts);
  const interrupt = () => {
    chaos.teardown().finally(() => process.exit(130));
  };
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);
  try {
    await chaos.run();
  } finally {
    await chaos.teardown();
  }
  const summary = chaos.summary();
  printSummary(summary);
  fs.mkdirSync(path.dirname(path.resolve(opts.out)), { recursive: true });
  fs.writeFileSync(opts.out, `${JSON.stringify({ ...summary, operations_log: chaos.ops }, null, 1)}\n`);
  console.log(`\nhistory and summary written to ${opts.out}`);
  if (summary.violations.total > 0) process.exitCode = 1;
  if (summary.operations.acknowledged === 0) {
    console.log('no operation was acknowledged: the cluster made no progress');
    process.exitCode = 1;
  }
}

main().catch((err) => {
  console.error(err.stack || err);
  process.exit(2);
});
