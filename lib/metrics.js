'use strict';
// Prometheus metrics of every node in this process, named as Prometheus asks (`_total`
// counters, `_seconds` histograms, `node_id` label: Kubernetes service discovery adds its own
// `node`) and covering what etcd exposes for the same questions. One registry-style collector
// for the whole process: two nodes in one process share one HELP/TYPE per family.

/** Proposal commit latency buckets (seconds): 0.5 ms to about 8 s, doubling. */
const PROPOSAL_BUCKETS = [0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192];

/** A histogram kept in JavaScript (the native ones are read from the core at scrape time). */
class Histogram {
  constructor(bounds) {
    this.bounds = bounds;
    this.counts = new Array(bounds.length + 1).fill(0);
    this.sum = 0;
    this.count = 0;
  }

  observe(seconds) {
    let i = 0;
    while (i < this.bounds.length && seconds > this.bounds[i]) i++;
    this.counts[i]++;
    this.sum += seconds;
    this.count++;
  }

  read() {
    let running = 0;
    const cumulative = this.bounds.map((_, i) => (running += this.counts[i]));
    return { bounds: this.bounds, cumulative, count: this.count, sum: this.sum };
  }
}

/** What a coordinator counts itself: leader changes seen, proposals pending, failed, timed. */
class NodeCounters {
  constructor() {
    this.leaderChanges = 0;
    this.lastLeader = null;
    this.pending = 0;
    this.failed = 0;
    this.proposal = new Histogram(PROPOSAL_BUCKETS);
  }

  /** A leader as this node sees it; a change from one known leader to another is counted. */
  sawLeader(leaderId) {
    if (leaderId && leaderId !== this.lastLeader) {
      this.leaderChanges++;
      this.lastLeader = leaderId;
    }
  }
}

const PARTITION_STATE_VALUE = { healthy: 0, recovering: 1, partitioned: 2 };

/** Operation commit latency buckets (seconds), as replicateOperation's callers see it. */
const OPERATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** What a ConsensusManager counts: operations by outcome, compactions, executions, latency. */
class ManagerCounters {
  constructor() {
    this.replicated = 0;
    this.committed = 0;
    this.failed = 0;
    this.duplicates = 0;
    this.compactions = 0;
    this.entriesCompacted = 0;
    this.executionsSucceeded = 0;
    this.executionsFailed = 0;
    this.latency = new Histogram(OPERATION_BUCKETS);
  }
}

/**
 * The guide's dashboard keys of a ConsensusManager, plus a few more an operator needs: one
 * coordinator state read, the manager's counters and partition state.
 */
function managerMetrics(m) {
  const s = m.raft.getState();
  const c = m._counters;
  const healthy = m.clusterManager ? m.clusterManager.getHealthyNodes().length : null;
  const total = m.clusterManager ? m.clusterManager.nodes.size : s.membership.voters.length;
  return {
    'consensus.leader_id': s.leaderId,
    'consensus.is_leader': s.isLeader ? 1 : 0,
    'consensus.current_term': s.term,
    'consensus.partition_state': PARTITION_STATE_VALUE[m.partitionState],
    'consensus.log_size': s.logLength,
    'consensus.operations.replicated': c.replicated,
    'consensus.operations.committed': c.committed,
    'consensus.operations.failed': c.failed,
    'consensus.operations.duplicates': c.duplicates,
    'consensus.partitions_detected': m._partitions.detected,
    'consensus.commit_index': s.commitIndex,
    'consensus.last_applied_index': s.lastApplied,
    'consensus.compactions': c.compactions,
    'cluster.healthy_nodes': healthy,
    'cluster.total_nodes': total,
  };
}

/** Live sources: coordinators (Raft families) and managers (operation families). */
const coordinators = new Set();
const managers = new Set();

function track(kind, source) {
  (kind === 'manager' ? managers : coordinators).add(source);
}

function untrack(kind, source) {
  (kind === 'manager' ? managers : coordinators).delete(source);
}

/**
 * Every family: name, type, help, and `collect(coordinators, managers)` returning samples
 * `[{labels, value, suffix?}]` (histograms: via `histogramSamples`).
 */
const FAMILIES = [];

function family(name, type, help, collect) {
  FAMILIES.push({ name, type, help, collect });
}

function histogramSamples(labels, h) {
  const out = [];
  h.bounds.forEach((le, i) => out.push({ suffix: '_bucket', labels: { ...labels, le: String(le) }, value: h.cumulative[i] }));
  out.push({ suffix: '_bucket', labels: { ...labels, le: '+Inf' }, value: h.count });
  out.push({ suffix: '_sum', labels, value: h.sum });
  out.push({ suffix: '_count', labels, value: h.count });
  return out;
}

/** A coordinator's view at scrape time, or null when it is not running. */
function view(raft) {
  if (!raft._native || raft._stopped) return null;
  let state;
  let stats;
  try {
    state = raft.getState();
    stats = raft._native.stats();
  } catch {
    return null;
  }
  return { state, stats, config: raft.config, counters: raft._counters, labels: { node_id: raft.config.nodeId } };
}

function perNode(fn) {
  return (cs) => {
    const out = [];
    for (const c of cs) {
      const v = view(c);
      if (v) out.push(...[].concat(fn(v)));
    }
    return out;
  };
}

/**
 * Whether the node knows a live leader: the leader itself (CheckQuorum makes it step down
 * without a quorum), or a follower that heard from its leader within twice the longest election
 * timeout. A follower cut off from everyone keeps the last leader's id in its state, so the id
 * alone would report a leader long gone.
 */
function knowsLeader(s, config) {
  if (!s.leaderId) return false;
  if (s.isLeader) return true;
  const window = Math.max(1000, 2 * config.electionTimeoutMax);
  return s.lastContact > 0 && Date.now() - s.lastContact <= window;
}

function hasQuorum(s, config) {
  if (s.isLeader) return 1;
  const voters = s.membership.voters;
  if (voters.length === 0) return 0;
  const connected = new Set(s.connectedPeers);
  const reachable = voters.filter((id) => id === s.nodeId || connected.has(id)).length;
  return reachable >= Math.floor(voters.length / 2) + 1 && knowsLeader(s, config) ? 1 : 0;
}

family('consensus_has_leader', 'gauge', 'Whether this node knows a leader that holds a quorum (1) or not (0)', perNode((v) => ({ labels: v.labels, value: knowsLeader(v.state, v.config) ? 1 : 0 })));
family('consensus_is_leader', 'gauge', 'Whether this node is the leader (1) or not (0)', perNode((v) => ({ labels: v.labels, value: v.state.isLeader ? 1 : 0 })));
family('consensus_has_quorum', 'gauge', 'Whether this node has a leader and reaches a majority of voters (1) or not (0)', perNode((v) => ({ labels: v.labels, value: hasQuorum(v.state, v.config) })));
family('consensus_leader_changes_seen_total', 'counter', 'Leader changes this node has seen since it started', perNode((v) => ({ labels: v.labels, value: v.counters.leaderChanges })));
family('consensus_term', 'gauge', 'Current Raft term', perNode((v) => ({ labels: v.labels, value: v.state.term })));
family('consensus_voters', 'gauge', 'Voting members in this node\'s membership', perNode((v) => ({ labels: v.labels, value: v.state.membership.voters.length })));
family('consensus_learners', 'gauge', 'Learners (non-voting members catching up) in this node\'s membership', perNode((v) => ({ labels: v.labels, value: v.state.membership.learners.length })));
family('consensus_proposals_committed_total', 'counter', 'Highest log index known committed (etcd: proposals_committed_total)', perNode((v) => ({ labels: v.labels, value: v.state.commitIndex })));
family('consensus_proposals_applied_total', 'counter', 'Highest log index applied on this node (etcd: proposals_applied_total)', perNode((v) => ({ labels: v.labels, value: v.state.lastApplied })));
family('consensus_proposals_pending', 'gauge', 'Proposals made on this node still waiting to commit', perNode((v) => ({ labels: v.labels, value: v.counters.pending })));
family('consensus_proposals_failed_total', 'counter', 'Proposals made on this node that failed (not leader, no quorum, timeout)', perNode((v) => ({ labels: v.labels, value: v.counters.failed })));
family('consensus_proposal_commit_duration_seconds', 'histogram', 'Time from a proposal on this node to its commit', perNode((v) => histogramSamples(v.labels, v.counters.proposal.read())));
family('consensus_log_entries', 'gauge', 'Entries in the log since the last purge', perNode((v) => ({ labels: v.labels, value: v.state.logLength })));
family('consensus_disk_wal_fsync_duration_seconds', 'histogram', 'Durations of log appends, each an fsynced LMDB commit (etcd: disk_wal_fsync_duration_seconds)', perNode((v) => histogramSamples(v.labels, v.stats.logFsync)));
family('consensus_disk_backend_commit_duration_seconds', 'histogram', 'Durations of state-machine commits of applied entries (etcd: disk_backend_commit_duration_seconds)', perNode((v) => histogramSamples(v.labels, v.stats.applyCommit)));
family('consensus_snapshot_save_duration_seconds', 'histogram', 'Durations of building and saving a snapshot', perNode((v) => histogramSamples(v.labels, v.stats.snapshotSave)));
family('consensus_snapshot_read_duration_seconds', 'histogram', 'Durations of reading the stored snapshot out to send it to a peer', perNode((v) => histogramSamples(v.labels, v.stats.snapshotRead)));
family('consensus_snapshot_install_duration_seconds', 'histogram', 'Durations of installing a snapshot received from the leader', perNode((v) => histogramSamples(v.labels, v.stats.snapshotInstall)));
family('consensus_snapshot_size_bytes', 'gauge', 'Size of the latest snapshot built or installed on this node', perNode((v) => ({ labels: v.labels, value: v.stats.snapshotBytes })));
family('consensus_peer_connected', 'gauge', 'Whether this node holds a connection to the peer (1) or not (0)', perNode((v) =>
  v.state.peers.map((peer) => ({ labels: { ...v.labels, peer }, value: v.state.connectedPeers.includes(peer) ? 1 : 0 })),
));
family('consensus_peer_round_trip_time_seconds', 'histogram', 'Round trips of calls to each peer (etcd: network_peer_round_trip_time_seconds)', perNode((v) =>
  v.stats.peers.flatMap((p) => histogramSamples({ ...v.labels, peer: p.nodeId }, p.rtt)),
));
family('consensus_peer_network_round_trip_seconds', 'gauge', 'The network\'s round trip to each peer, without its disk: a ping when the connection started', perNode((v) =>
  v.stats.peers.filter((p) => p.networkRtt != null).map((p) => ({ labels: { ...v.labels, peer: p.nodeId }, value: p.networkRtt })),
));
family('consensus_peer_replication_lag_entries', 'gauge', 'Entries a member is behind the leader\'s last log index (reported by the leader)', perNode((v) => {
  if (!v.state.isLeader) return [];
  return Object.entries(v.state.replication)
    .filter(([peer]) => peer !== v.state.nodeId)
    .map(([peer, matched]) => ({ labels: { ...v.labels, peer }, value: Math.max(0, v.state.lastLogIndex - (matched ?? -1)) }));
}));

function perManager(fn) {
  return (_, ms) => {
    const out = [];
    for (const m of ms) {
      if (m._shutdown) continue;
      out.push(...[].concat(fn(m, { node_id: m.nodeId })));
    }
    return out;
  };
}

family('consensus_operations_replicated_total', 'counter', 'Operations replicated through replicateOperation on this node', perManager((m, labels) => ({ labels, value: m._counters.replicated })));
family('consensus_operations_committed_total', 'counter', 'Operations committed and delivered to the daemon on this node', perManager((m, labels) => ({ labels, value: m._counters.committed })));
family('consensus_operations_failed_total', 'counter', 'Operations that failed to replicate on this node', perManager((m, labels) => ({ labels, value: m._counters.failed })));
family('consensus_operations_duplicate_total', 'counter', 'Operations submitted again under an id already committed', perManager((m, labels) => ({ labels, value: m._counters.duplicates })));
family('consensus_operation_commit_duration_seconds', 'histogram', 'Time from replicateOperation to commit', perManager((m, labels) => histogramSamples(labels, m._counters.latency.read())));
family('consensus_partitions_detected_total', 'counter', 'Network partitions detected by this node', perManager((m, labels) => ({ labels, value: m._partitions.detected })));
family('consensus_partition_state', 'gauge', 'Partition state: 0 healthy, 1 recovering, 2 partitioned', perManager((m, labels) => ({ labels, value: PARTITION_STATE_VALUE[m.partitionState] ?? 0 })));
family('consensus_log_size', 'gauge', 'Current operation log size (the guide\'s consensus.log_size)', perManager((m, labels) => ({ labels, value: m.raft.getState().logLength })));
family('consensus_cluster_healthy_nodes', 'gauge', 'Members this node sees healthy, itself included', perManager((m, labels) => (m.clusterManager ? { labels, value: m.clusterManager.getHealthyNodes().length } : [])));
family('consensus_cluster_nodes', 'gauge', 'Members this node knows of', perManager((m, labels) => (m.clusterManager ? { labels, value: m.clusterManager.nodes.size } : [])));

/** Process memory, once per process: the memory alert reads it. */
const PROCESS_FAMILIES = [
  { name: 'process_resident_memory_bytes', type: 'gauge', help: 'Resident memory size in bytes.', collect: () => [{ labels: {}, value: process.memoryUsage.rss() }] },
];

function escapeLabel(value) {
  return String(value).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function formatValue(v) {
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  if (Number.isNaN(v)) return 'NaN';
  return String(v);
}

function renderFamily(f, samples, out) {
  out.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
  for (const s of samples) {
    const labels = Object.entries(s.labels)
      .map(([k, val]) => `${k}="${escapeLabel(val)}"`)
      .join(',');
    out.push(`${f.name}${s.suffix ?? ''}${labels ? `{${labels}}` : ''} ${formatValue(s.value)}`);
  }
}

/**
 * The Prometheus text exposition of the given sources (default: every running node and
 * manager in this process), each family once.
 */
function metricsText({ coordinators: cs = [...coordinators], managers: ms = [...managers], process: withProcess = true } = {}) {
  const out = [];
  for (const f of FAMILIES) renderFamily(f, f.collect(cs, ms), out);
  if (withProcess) for (const f of PROCESS_FAMILIES) renderFamily(f, f.collect(), out);
  return `${out.join('\n')}\n`;
}

/** Every metric family name this package exposes. */
function metricNames() {
  return [...FAMILIES, ...PROCESS_FAMILIES].map((f) => f.name);
}

const registered = new WeakSet();

/**
 * Adds the metrics of every node in this process to a `prom-client` Registry (or any object
 * with its `registerMetric`): one collector per family, read at scrape time. Families the
 * registry already has (prom-client's default `process_resident_memory_bytes`) are left to it.
 * Calling it again for the same registry changes nothing.
 */
function registerMetrics(registry) {
  if (!registry || typeof registry.registerMetric !== 'function') {
    const { invalidConfig } = require('./errors');
    throw invalidConfig('registry', 'expected a prom-client Registry (an object with registerMetric)');
  }
  if (registered.has(registry)) return registry;
  registered.add(registry);
  const existing = (name) => typeof registry.getSingleMetric === 'function' && registry.getSingleMetric(name) !== undefined;
  // In the OpenMetrics format a counter family is named without `_total` and prom-client adds it
  // to each sample.
  const openMetrics = typeof registry.contentType === 'string' && registry.contentType.includes('openmetrics');
  for (const f of [...FAMILIES, ...PROCESS_FAMILIES]) {
    const name = openMetrics && f.type === 'counter' ? f.name.replace(/_total$/, '') : f.name;
    if (existing(name) || existing(f.name)) continue;
    registry.registerMetric({
      name,
      help: f.help,
      type: f.type,
      aggregator: 'sum',
      get: async () => ({
        name,
        help: f.help,
        type: f.type,
        aggregator: 'sum',
        values: f.collect([...coordinators], [...managers]).map((s) => ({
          value: s.value,
          labels: s.labels,
          metricName: s.suffix ? f.name + s.suffix : undefined,
        })),
      }),
      reset: () => {},
    });
  }
  return registry;
}

module.exports = { NodeCounters, ManagerCounters, managerMetrics, Histogram, track, untrack, metricsText, metricNames, registerMetrics, knowsLeader, PROPOSAL_BUCKETS };
