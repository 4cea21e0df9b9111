'use strict';
// Prometheus metrics: the exposition parses with promtool, joins a prom-client registry, shows
// each family once for several nodes in one process, and tells a failover as etcd's metrics do.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { Cluster } = require('../support/cluster');
const { createRaftCoordinator, registerMetrics, metricsText } = require('..');

function promtoolAvailable() {
  return !spawnSync('promtool', ['--version']).error;
}

/** `promtool check metrics` on exposition text: its status and what it said. */
function checkMetrics(text) {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** Parses exposition text into `name{labels}` -> value, with labels in sorted order. */
function samples(text) {
  const out = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `malformed sample line: ${line}`);
    const labels = m[2] ? m[2].split(/,(?=[a-z_]+=")/).sort().join(',') : '';
    out.set(`${m[1]}{${labels}}`, Number(m[3]));
  }
  return out;
}

function value(text, name, labels) {
  const key = `${name}{${Object.entries(labels).map(([k, v]) => `${k}="${v}"`).sort().join(',')}}`;
  return samples(text).get(key);
}

function assertPromtoolClean(t, text) {
  if (!promtoolAvailable()) {
    t.diagnostic('promtool is not installed (Debian package "prometheus"): exposition not linted');
    return;
  }
  const r = checkMetrics(text);
  assert.strictEqual(r.status, 0, `promtool check metrics:\n${r.out}`);
}

test('two nodes in one process: one HELP and TYPE per family, node_id labels, prom-client registry', async (t) => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'unrdf-consensus-metrics-'));
  const nodes = ['m-1', 'm-2'].map((nodeId) =>
    createRaftCoordinator({ nodeId, port: 0, dataDir: path.join(root, nodeId), bootstrap: true }),
  );
  try {
    await Promise.all(nodes.map((n) => n.initialize()));
    await Promise.all(nodes.map((n) => n.waitForLeader({ timeoutMs: 10000 })));
    await nodes[0].replicateCommand({ type: 'x' });
    const text = metricsText();
    const help = text.split('\n').filter((l) => l.startsWith('# HELP '));
    assert.strictEqual(new Set(help).size, help.length, 'a HELP line appears twice');
    assert.ok(!/\{node="/.test(text) && !/,node="/.test(text), 'the reserved-clashing label "node" is used');
    for (const id of ['m-1', 'm-2']) assert.strictEqual(value(text, 'consensus_has_leader', { node_id: id }), 1);
    assert.ok(value(text, 'consensus_proposal_commit_duration_seconds_count', { node_id: 'm-1' }) >= 1);
    assert.ok(value(text, 'consensus_disk_wal_fsync_duration_seconds_count', { node_id: 'm-1' }) >= 1, 'no fsync observed');
    assertPromtoolClean(t, text);

    const client = require('prom-client');
    const registry = new client.Registry();
    client.collectDefaultMetrics({ register: registry });
    registerMetrics(registry);
    registerMetrics(registry); // again: no change, no "already registered" error
    const scraped = await registry.metrics();
    assert.strictEqual(value(scraped, 'consensus_is_leader', { node_id: 'm-2' }), 1);
    assert.strictEqual(scraped.split('\n').filter((l) => l === '# TYPE process_resident_memory_bytes gauge').length, 1);
    // prom-client's own nodejs_* gauges end in _total, which promtool flags: lint ours only.
    assertPromtoolClean(t, scraped.split('\n').filter((l) => !/^(# (HELP|TYPE) )?nodejs_/.test(l)).join('\n'));
    const open = new client.Registry(client.Registry.OPENMETRICS_CONTENT_TYPE);
    registerMetrics(open);
    const openText = await open.metrics();
    assert.match(openText, /^consensus_leader_changes_seen_total\{node_id="m-1"\} 1$/m);
    assert.ok(!openText.includes('_total_total'));
    // A coordinator's own text covers it alone.
    assert.ok(!nodes[0].prometheusMetrics().includes('node_id="m-2"'));
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('across a failover: has_leader, leader_changes_seen_total and the commit histogram move', { timeout: 120000 }, async (t) => {
  const cluster = new Cluster(3);
  t.after(() => cluster.stop());
  await cluster.start();
  const first = await cluster.form();
  const write = (node, n, tag) =>
    Promise.all(Array.from({ length: n }, (_, i) => node.call('replicate', { command: { type: tag, seq: i } })));
  await write(first, 20, 'before');
  const before = {};
  for (const n of cluster.nodes) {
    const text = await n.call('prometheus');
    assertPromtoolClean(t, text);
    assert.strictEqual(value(text, 'consensus_has_leader', { node_id: n.nodeId }), 1, `${n.nodeId} sees no leader`);
    before[n.nodeId] = text;
  }
  const histCount = (text, id) => value(text, 'consensus_proposal_commit_duration_seconds_count', { node_id: id }) ?? 0;
  assert.ok(histCount(before[first.nodeId], first.nodeId) >= 20);

  await first.kill('SIGKILL');
  const survivors = cluster.nodes.filter((n) => n !== first);
  const second = await cluster.leader(15000, survivors);
  await write(second, 20, 'after');
  for (const n of survivors) {
    const text = await n.call('prometheus');
    assertPromtoolClean(t, text);
    assert.strictEqual(value(text, 'consensus_has_leader', { node_id: n.nodeId }), 1);
    const seen = (x) => value(x, 'consensus_leader_changes_seen_total', { node_id: n.nodeId });
    assert.ok(seen(text) > seen(before[n.nodeId]), `${n.nodeId}: leader_changes_seen_total did not grow (${seen(before[n.nodeId])} -> ${seen(text)})`);
    assert.strictEqual(value(text, 'consensus_is_leader', { node_id: n.nodeId }), n === second ? 1 : 0);
  }
  const after = await second.call('prometheus');
  assert.ok(histCount(after, second.nodeId) >= histCount(before[second.nodeId], second.nodeId) + 20, 'the new leader timed no commits');
  const sum = (x) => value(x, 'consensus_proposal_commit_duration_seconds_sum', { node_id: second.nodeId });
  assert.ok(sum(after) > sum(before[second.nodeId]));

  // The last survivor alone holds no quorum: it reports no leader.
  await second.kill('SIGKILL');
  const last = survivors.find((n) => n !== second);
  await cluster.waitFor(async () => value(await last.call('prometheus'), 'consensus_has_leader', { node_id: last.nodeId }) === 0, 15000);
  const alone = await last.call('prometheus');
  assert.strictEqual(value(alone, 'consensus_has_quorum', { node_id: last.nodeId }), 0);
});
