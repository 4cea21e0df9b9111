'use strict';
// The `unrdf-consensus` commands. Each returns its exit code: 0 done, 1 failed (or, for
// `status`, no quorum), 2 usage. Online commands talk to admin endpoints; restore, recover and
// export work on a stopped node's data directory.
const fs = require('node:fs');
const path = require('node:path');
const { parse, UsageError } = require('./args');
const { request, describe, parseUrl } = require('./http');

const TOKEN_ENV = 'UNRDF_CONSENSUS_TOKEN';
const SECRET_ENV = 'UNRDF_CONSENSUS_SECRET';

const HELP = {
  main: `Usage: unrdf-consensus <command> [options]

Operate an @unrdf/consensus cluster through its nodes' admin endpoints, and work on a stopped
node's data directory.

Commands:
  status <url...>                      who leads, term, quorum, commit/applied index and lag
  members list|add|remove <url> ...    list, add or remove members (sent on to the leader)
  backup <url> <file>                  save a consistent copy of a running node's data
  restore <file> --data-dir D          lay a backup down as a node's data directory
  recover --data-dir D --force-new-cluster
                                       after losing quorum for good: restart one survivor as a
                                       one-node cluster with its whole log
  export --data-dir D                  the operation log and registries as NDJSON
  node --config file.json              run a node (SIGTERM or SIGINT stops it gracefully)

The admin token comes from --token or ${TOKEN_ENV}.
Run 'unrdf-consensus <command> --help' for a command's options.
Exit codes: 0 success, 1 failure (status: no leader or no quorum), 2 usage error.`,
  status: `Usage: unrdf-consensus status <url...> [--json] [--token T] [--timeout MS]

Asks every node's admin endpoint (http://host:port) for its status and prints one line per node:
node, role, term, leader, commit/applied index, replication lag (as the leader sees it) and
health, then who leads and whether a quorum stands.
Exits 0 when a leader with a quorum answered, 1 when none did.

  --json         print the result as one JSON object instead of a table
  --token T      admin token (default: $${TOKEN_ENV})
  --timeout MS   wait per node, default 3000`,
  members: `Usage: unrdf-consensus members list <url> [--json]
       unrdf-consensus members add <url> <nodeId> <host>:<port>
       unrdf-consensus members remove <url> <nodeId>

<url> is any member's admin endpoint; changes are sent on to the leader. 'add' makes the node a
learner, then a voter once it holds the log; start it first, with an empty data directory.

  --json         (list) print JSON
  --token T      admin token (default: $${TOKEN_ENV})
  --timeout MS   wait for the change, default 60000`,
  backup: `Usage: unrdf-consensus backup <url> <file> [--force] [--token T]

Saves a consistent copy of the node's data (its LMDB environment, compacted) while it keeps
running. Restore it with 'unrdf-consensus restore'. Refuses to overwrite <file> without --force.`,
  restore: `Usage: unrdf-consensus restore <file> --data-dir D [--force]

Lays the backup <file> down as data directory D. A node started there holds everything the
backed-up node held. Refuses a non-empty D unless --force (which replaces what is there; a
running node's directory is never replaced). To start it as a cluster of its own, run
'unrdf-consensus recover --data-dir D --force-new-cluster' next.`,
  recover: `Usage: unrdf-consensus recover --data-dir D --force-new-cluster [--node-id ID]

For a cluster that lost its quorum for good (a majority of the voters and their disks are gone).
Rewrites the stopped node's stored membership so that, started again, it is the only voter of a
new one-node cluster and commits every entry of its log, including entries the old cluster had
not committed. Then add new members to it. Never run it on more than one survivor: each would
lead a cluster of its own.

  --force-new-cluster   required: says you mean it
  --node-id ID          the node's id, for a directory that does not record it`,
  export: `Usage: unrdf-consensus export --data-dir D [--out FILE]

Writes a stopped node's log (every entry still on disk), operation-id registry and replicated
registry as NDJSON: a header line, then {"type":"entry"...}, {"type":"operation"...} and
{"type":"registry"...} lines. To stdout unless --out.`,
  node: `Usage: unrdf-consensus node --config file.json [options]
       unrdf-consensus node --node-id ID --port P [options]

Runs a cluster node until SIGTERM or SIGINT, then stops it gracefully. The config file holds a
RaftCoordinator config ({nodeId, host, port, dataDir, initialMembers, clusterId, ...}) and an
optional "admin": {port, host}. Flags override the file.

  --node-id ID            --host H            --port P           --data-dir D
  --cluster-id C          --advertise-host H
  --initial-members LIST  id@host:port,id@host:port,... (this node included)
  --bootstrap             found a one-node cluster when the data directory is empty
  --admin-port P          serve the admin endpoint (0 picks a free port)
  --admin-host H          default 127.0.0.1; another address needs a token
  --token T               admin token (default: $${TOKEN_ENV})
The cluster secret comes from the config file or ${SECRET_ENV}.`,
};

function out(text) {
  process.stdout.write(`${text}\n`);
}

function err(text) {
  process.stderr.write(`${text}\n`);
}

function tokenOf(options) {
  return options.token ?? process.env[TOKEN_ENV] ?? undefined;
}

function timeoutOf(options, fallback) {
  if (options.timeout === undefined) return fallback;
  const n = Number(options.timeout);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--timeout: expected milliseconds, got ${options.timeout}`);
  return n;
}

function table(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  return rows.map((r) => r.map((c, i) => String(c).padEnd(widths[i])).join('  ').trimEnd()).join('\n');
}

function needHelp(name, options) {
  if (options.help) {
    out(HELP[name]);
    return true;
  }
  return false;
}

async function status(argv) {
  const { options, positionals } = parse(argv, { values: ['token', 'timeout'], flags: ['json'] });
  if (needHelp('status', options)) return 0;
  if (positionals.length === 0) throw new UsageError('status: give at least one admin URL');
  positionals.forEach(parseUrl);
  const token = tokenOf(options);
  const timeoutMs = timeoutOf(options, 3000);
  const nodes = await Promise.all(
    positionals.map(async (url) => {
      try {
        const res = await request(url, '/status', { token, timeoutMs });
        if (res.status !== 200 || !res.json) return { url, ok: false, error: describe(res) };
        return { url, ok: true, status: res.json };
      } catch (e) {
        return { url, ok: false, error: e.message };
      }
    }),
  );
  const leaderNode = nodes.find((n) => n.ok && n.status.isLeader && n.status.health.ok);
  const leader = leaderNode ? leaderNode.status : null;
  const lagOf = (nodeId) => {
    if (!leader) return null;
    const m = leader.members.find((x) => x.nodeId === nodeId);
    return m ? m.lag : null;
  };
  // A healthy follower hears from a leader, and a leader keeps leading only with a quorum
  // (CheckQuorum): its view vouches for the quorum when the leader's URL was not given.
  const witness = leader ? null : nodes.find((n) => n.ok && n.status.health.ok && n.status.leader);
  const leaderId = leader ? leader.nodeId : witness ? witness.status.leader : null;
  const voters = leader ? leader.members.filter((m) => m.voter) : [];
  const healthyVoters = voters.filter((m) => m.health === 'healthy').length;
  const result = {
    leader: leaderId,
    term: leader ? leader.term : Math.max(0, ...nodes.filter((n) => n.ok).map((n) => n.status.term)),
    quorum: leaderId !== null,
    voters: voters.length,
    healthyVoters,
    nodes: nodes.map((n) =>
      n.ok
        ? {
            url: n.url,
            reachable: true,
            nodeId: n.status.nodeId,
            role: n.status.role,
            term: n.status.term,
            leader: n.status.leader,
            commitIndex: n.status.commitIndex,
            appliedIndex: n.status.appliedIndex,
            lag: lagOf(n.status.nodeId),
            healthy: n.status.health.ok,
            reason: n.status.health.reason,
          }
        : { url: n.url, reachable: false, error: n.error },
    ),
  };
  if (options.json) {
    out(JSON.stringify(result, null, 2));
  } else {
    const rows = [['NODE', 'ROLE', 'TERM', 'LEADER', 'COMMIT/APPLIED', 'LAG', 'HEALTH']];
    for (const n of result.nodes) {
      if (!n.reachable) rows.push([n.url, '-', '-', '-', '-', '-', `unreachable: ${n.error}`]);
      else rows.push([n.nodeId, n.role, n.term, n.leader ?? '-', `${n.commitIndex}/${n.appliedIndex}`, n.lag ?? '-', n.healthy ? 'ok' : `unhealthy: ${n.reason}`]);
    }
    out(table(rows));
    out('');
    if (leader) out(`leader ${leader.nodeId}, term ${leader.term}, quorum: yes (${healthyVoters} of ${voters.length} voters healthy)`);
    else if (witness) out(`leader ${leaderId}, term ${witness.status.term}, quorum: yes (as ${witness.status.nodeId} sees it; add the leader's URL for lag)`);
    else out(`no leader with a quorum answered (term ${result.term}): quorum: no`);
  }
  return leaderId !== null ? 0 : 1;
}

function parseHostPort(text) {
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(text || '');
  if (!m) throw new UsageError(`expected <host>:<port>, got ${JSON.stringify(text)}`);
  const port = Number(m[2]);
  if (port < 1 || port > 65535) throw new UsageError(`port out of range: ${m[2]}`);
  return { host: m[1].replace(/^\[|\]$/g, ''), port };
}

async function members(argv) {
  const { options, positionals } = parse(argv, { values: ['token', 'timeout'], flags: ['json'] });
  if (needHelp('members', options)) return 0;
  const [action, url, ...rest] = positionals;
  if (!['list', 'add', 'remove'].includes(action)) throw new UsageError('members: expected list, add or remove');
  if (!url) throw new UsageError(`members ${action}: give a member's admin URL`);
  parseUrl(url);
  const token = tokenOf(options);
  const timeoutMs = timeoutOf(options, action === 'list' ? 5000 : 60000);
  let res;
  if (action === 'list') {
    if (rest.length) throw new UsageError('members list: takes one URL');
    res = await request(url, '/members', { token, timeoutMs });
    if (res.status !== 200) {
      err(`members list: ${describe(res)}`);
      return 1;
    }
    if (options.json) {
      out(JSON.stringify(res.json.members, null, 2));
    } else {
      const rows = [['NODE', 'ADDRESS', 'VOTER', 'HEALTH', 'MATCHED', 'LAG']];
      for (const m of res.json.members) rows.push([m.nodeId, `${m.host}:${m.port}`, m.voter ? 'yes' : 'learner', m.health, m.matchedIndex ?? '-', m.lag ?? '-']);
      out(table(rows));
    }
    return 0;
  }
  if (action === 'add') {
    if (rest.length !== 2) throw new UsageError('members add: expected <url> <nodeId> <host>:<port>');
    const [nodeId, address] = rest;
    const { host, port } = parseHostPort(address);
    res = await request(url, '/members', { method: 'POST', token, timeoutMs, body: { nodeId, host, port } });
    if (res.status !== 200) {
      err(`members add: ${describe(res)}`);
      return 1;
    }
    out(`added ${nodeId} at ${host}:${port}`);
    return 0;
  }
  if (rest.length !== 1) throw new UsageError('members remove: expected <url> <nodeId>');
  res = await request(url, `/members/${encodeURIComponent(rest[0])}`, { method: 'DELETE', token, timeoutMs });
  if (res.status !== 200) {
    err(`members remove: ${describe(res)}`);
    return 1;
  }
  out(`removed ${rest[0]}`);
  return 0;
}

async function backup(argv) {
  const { options, positionals } = parse(argv, { values: ['token', 'timeout'], flags: ['force'] });
  if (needHelp('backup', options)) return 0;
  if (positionals.length !== 2) throw new UsageError('backup: expected <url> <file>');
  const [url, file] = positionals;
  parseUrl(url);
  const target = path.resolve(file);
  if (fs.existsSync(target) && !options.force) {
    err(`backup: ${target} exists; pass --force to overwrite it`);
    return 1;
  }
  const res = await request(url, '/backup', { token: tokenOf(options), timeoutMs: timeoutOf(options, 120000), stream: true });
  if (res.status !== 200) {
    err(`backup: ${describe(res)}`);
    return 1;
  }
  const expected = Number(res.headers['content-length']);
  const part = `${target}.part`;
  let written = 0;
  try {
    await new Promise((resolve, reject) => {
      const file = fs.createWriteStream(part);
      res.res.on('data', (c) => (written += c.length));
      res.res.on('error', reject);
      res.res.on('aborted', () => reject(new Error('the node closed the connection before the backup was complete')));
      file.on('error', reject);
      file.on('finish', resolve);
      res.res.pipe(file);
    });
    if (Number.isFinite(expected) && written !== expected) throw new Error(`received ${written} of ${expected} bytes`);
    const fd = fs.openSync(part, 'r');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(part, target);
  } catch (e) {
    fs.rmSync(part, { force: true });
    err(`backup: ${e.message}`);
    return 1;
  }
  out(`wrote ${written} bytes (node ${res.headers['x-consensus-node-id'] ?? 'unknown'}) to ${target}`);
  return 0;
}

function native() {
  return require('../native');
}

function nativeFailure(command, e) {
  const { fromNative } = require('../errors');
  const c = fromNative(e);
  err(`${command}: ${c.code}: ${c.message}`);
  return 1;
}

async function restore(argv) {
  const { options, positionals } = parse(argv, { values: ['data-dir'], flags: ['force'] });
  if (needHelp('restore', options)) return 0;
  if (positionals.length !== 1) throw new UsageError('restore: expected <file>');
  if (!options.dataDir) throw new UsageError('restore: --data-dir is required');
  const file = path.resolve(positionals[0]);
  const dir = path.resolve(options.dataDir);
  try {
    native().offlineRestore(file, dir, options.force === true);
  } catch (e) {
    return nativeFailure('restore', e);
  }
  out(`restored ${file} into ${dir}`);
  return 0;
}

async function recover(argv) {
  const { options, positionals } = parse(argv, { values: ['data-dir', 'node-id'], flags: ['force-new-cluster'] });
  if (needHelp('recover', options)) return 0;
  if (positionals.length) throw new UsageError(`recover: unexpected ${positionals[0]}`);
  if (!options.dataDir) throw new UsageError('recover: --data-dir is required');
  if (!options.forceNewCluster) {
    throw new UsageError('recover: --force-new-cluster is required (it makes this node the only member of a new cluster)');
  }
  const dir = path.resolve(options.dataDir);
  let r;
  try {
    r = native().offlineForceNewCluster(dir, options.nodeId);
  } catch (e) {
    return nativeFailure('recover', e);
  }
  const bar = '!'.repeat(78);
  err(bar);
  err(`!! FORCE-NEW-CLUSTER: ${r.nodeId} in ${dir}`);
  err(`!! The old membership (voters: ${r.previousVoters.join(', ') || 'none'}${r.previousLearners.length ? `; learners: ${r.previousLearners.join(', ')}` : ''}) is replaced:`);
  err(`!! when started, ${r.nodeId} (${r.host}:${r.port}) is the only voter of a new cluster, term ${r.term}.`);
  err(`!! Every entry of its log up to index ${r.membershipIndex - 1} commits, also ones the old cluster had not.`);
  err('!! Do not start the old members again with their data: add new or wiped nodes to it.');
  err(bar);
  out(JSON.stringify({ recovered: r.nodeId, host: r.host, port: r.port, term: r.term, membershipIndex: r.membershipIndex, lastApplied: r.lastApplied ?? null, previousVoters: r.previousVoters }));
  return 0;
}

async function exportData(argv) {
  const { options, positionals } = parse(argv, { values: ['data-dir', 'out'] });
  if (needHelp('export', options)) return 0;
  if (positionals.length) throw new UsageError(`export: unexpected ${positionals[0]}`);
  if (!options.dataDir) throw new UsageError('export: --data-dir is required');
  let counts;
  try {
    counts = native().offlineExport(path.resolve(options.dataDir), options.out === undefined ? undefined : path.resolve(options.out));
  } catch (e) {
    return nativeFailure('export', e);
  }
  err(`exported ${counts.entries} log entries, ${counts.operations} operation ids, ${counts.registry} registry records`);
  return 0;
}

function parseMembers(text) {
  return text.split(',').map((item) => {
    const m = /^([^@]+)@(.+)$/.exec(item.trim());
    if (!m) throw new UsageError(`--initial-members: expected id@host:port, got ${JSON.stringify(item)}`);
    return { nodeId: m[1], ...parseHostPort(m[2]) };
  });
}

async function runNode(argv) {
  const { options, positionals } = parse(argv, {
    values: ['config', 'node-id', 'host', 'port', 'data-dir', 'cluster-id', 'advertise-host', 'initial-members', 'admin-port', 'admin-host', 'token'],
    flags: ['bootstrap'],
  });
  if (needHelp('node', options)) return 0;
  if (positionals.length) throw new UsageError(`node: unexpected ${positionals[0]}`);
  let config = {};
  if (options.config) {
    try {
      config = JSON.parse(fs.readFileSync(options.config, 'utf8'));
    } catch (e) {
      throw new UsageError(`node: cannot read --config ${options.config}: ${e.message}`);
    }
    if (config === null || typeof config !== 'object' || Array.isArray(config)) throw new UsageError('node: the config file must hold a JSON object');
  }
  let admin = config.admin;
  delete config.admin;
  const num = (name, text) => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UsageError(`--${name}: expected a port, got ${text}`);
    return n;
  };
  if (options.nodeId) config.nodeId = options.nodeId;
  if (options.host) config.host = options.host;
  if (options.port !== undefined) config.port = num('port', options.port);
  if (options.dataDir) config.dataDir = options.dataDir;
  if (options.clusterId) config.clusterId = options.clusterId;
  if (options.advertiseHost) config.advertiseHost = options.advertiseHost;
  if (options.initialMembers) config.initialMembers = parseMembers(options.initialMembers);
  if (options.bootstrap) config.bootstrap = true;
  if (config.secret === undefined && process.env[SECRET_ENV]) config.secret = process.env[SECRET_ENV];
  if (options.adminPort !== undefined || options.adminHost !== undefined) {
    admin = { ...admin, port: options.adminPort === undefined ? admin?.port ?? 0 : num('admin-port', options.adminPort) };
    if (options.adminHost) admin.host = options.adminHost;
  }
  if (config.nodeId === undefined) throw new UsageError('node: a node id is required (--node-id or "nodeId" in --config)');
  if (config.port === undefined) throw new UsageError('node: a port is required (--port or "port" in --config)');

  const { createRaftCoordinator } = require('../..');
  const raft = createRaftCoordinator(config);
  raft.on('warning', (w) => err(`${raft.config.nodeId}: warning ${w.code}: ${w.message}`));
  raft.on('leader_elected', ({ leaderId, term }) => err(`${raft.config.nodeId}: leader ${leaderId}, term ${term}`));
  // Delivery needs a listener: this node holds the log for its cluster and applies nothing else.
  raft.on('command_applied', () => {});
  await raft.initialize();
  let server = null;
  if (admin) {
    const token = admin.token ?? tokenOf(options);
    server = await raft.listenAdmin({ port: admin.port ?? 0, host: admin.host ?? '127.0.0.1', ...(token ? { token } : {}) });
  }
  const s = raft.getState();
  out(`ready ${JSON.stringify({ nodeId: s.nodeId, port: s.port, admin: server ? server.url : null })}`);

  return new Promise((resolve) => {
    let stopping = false;
    const stop = async (signal) => {
      if (stopping) return;
      stopping = true;
      err(`${raft.config.nodeId}: ${signal}: stopping`);
      try {
        if (server) await server.close();
        await raft.stop();
        err(`${raft.config.nodeId}: stopped`);
        resolve(0);
      } catch (e) {
        err(`${raft.config.nodeId}: stop failed: ${e.message}`);
        resolve(1);
      }
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}

const COMMANDS = { status, members, backup, restore, recover, export: exportData, node: runNode };

async function main(argv) {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    out(HELP.main);
    return command === undefined ? 2 : 0;
  }
  const run = COMMANDS[command];
  if (!run) {
    err(`unrdf-consensus: unknown command ${command}\n\n${HELP.main}`);
    return 2;
  }
  try {
    return await run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      err(`unrdf-consensus ${command}: ${e.message}\nRun 'unrdf-consensus ${command} --help' for usage.`);
      return 2;
    }
    if (e && e.name === 'ConsensusError') {
      err(`unrdf-consensus ${command}: ${e.code}: ${e.message}`);
      return 1;
    }
    err(`unrdf-consensus ${command}: ${e && e.message ? e.message : e}`);
    return 1;
  }
}

module.exports = { main, HELP };
