'use strict';
// The monitoring files hold together: the alert rules load and each alert fires and resolves on
// synthetic series (promtool test rules), and every metric the dashboard and the rules name is
// one this package exposes.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { metricNames } = require('../lib/metrics');

const root = path.join(__dirname, '..', 'monitoring');
const rulesDir = path.join(root, 'prometheus');

function promtool() {
  const found = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  return found.error ? null : 'promtool';
}

function run(args, cwd) {
  const r = spawnSync('promtool', args, { cwd, encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** Metric family names in PromQL or exposition text: histogram series map to their family. */
function referencedMetrics(text) {
  const names = new Set();
  for (const m of text.matchAll(/\b((?:consensus|process)_[a-z0-9_]+)\b/g)) {
    names.add(m[1].replace(/_(bucket|sum|count)$/, ''));
  }
  return names;
}

test('alerts.yml passes promtool check rules and its unit tests', (t) => {
  if (!promtool()) {
    t.skip('promtool is not installed (Debian package "prometheus"); the alert rules were not checked');
    return;
  }
  const check = run(['check', 'rules', 'alerts.yml'], rulesDir);
  assert.strictEqual(check.status, 0, check.out);
  const unit = run(['test', 'rules', 'alerts.test.yml'], rulesDir);
  assert.strictEqual(unit.status, 0, unit.out);
});

test('every alert of the guide is unit-tested firing and resolving', () => {
  const rules = fs.readFileSync(path.join(rulesDir, 'alerts.yml'), 'utf8');
  const tests = fs.readFileSync(path.join(rulesDir, 'alerts.test.yml'), 'utf8');
  const alerts = [...rules.matchAll(/- alert: (\w+)/g)].map((m) => m[1]);
  assert.ok(alerts.length >= 6, `expected the guide's six thresholds, found ${alerts.join(', ')}`);
  for (const alert of alerts) {
    const evals = [...tests.matchAll(new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:(.*)`, 'g'))].map((m) => m[1].trim());
    assert.ok(evals.some((e) => e === ''), `${alert} is never expected to fire`);
    assert.ok(evals.some((e) => e === '[]'), `${alert} is never expected to be quiet`);
  }
});

test('the rules and the dashboard name only metrics this package exposes', () => {
  const known = new Set(metricNames());
  const dashboard = JSON.parse(fs.readFileSync(path.join(root, 'grafana', 'dashboard.json'), 'utf8'));
  assert.ok(Array.isArray(dashboard.panels) && dashboard.panels.length > 0);
  const exprs = dashboard.panels.flatMap((p) => (p.targets || []).map((t) => t.expr));
  for (const [source, text] of [
    ['dashboard.json', exprs.join('\n')],
    ['alerts.yml', fs.readFileSync(path.join(rulesDir, 'alerts.yml'), 'utf8').replace(/^\s*(#|summary|description).*$/gm, '')],
  ]) {
    const used = referencedMetrics(text);
    assert.ok(used.size > 0, `${source} names no metric`);
    for (const name of used) assert.ok(known.has(name), `${source} uses ${name}, which the package does not expose`);
  }
  // The guide's dashboard keys each have a panel.
  for (const name of ['consensus_is_leader', 'consensus_term', 'consensus_partition_state', 'consensus_log_size', 'consensus_operations_replicated_total', 'consensus_operations_committed_total', 'consensus_cluster_healthy_nodes', 'consensus_cluster_nodes']) {
    assert.ok(exprs.some((e) => e.includes(name)), `no dashboard panel shows ${name}`);
  }
});

module.exports = { referencedMetrics, promtool };
