// Compiled with `tsc --noEmit` by `npm test`: the declarations must describe the API as used.
import { once } from 'node:events';
import {
  ConsensusError,
  ErrorCode,
  RaftCoordinator,
  createRaftCoordinator,
  createDistributedStateMachine,
  DistributedStateMachine,
  StateOperation,
  type StateChange,
  type InitialMember,
  type RaftState,
  type ReplicateResult,
} from '@unrdf/consensus';
import type { AdminServer, AdminStatus } from '@unrdf/consensus';

async function main(): Promise<void> {
  const raft: RaftCoordinator = createRaftCoordinator({ nodeId: 'node-1', port: 8080, host: '127.0.0.1' });
  const secured = createRaftCoordinator({
    nodeId: 'node-2',
    port: 8081,
    secret: 'a secret of sixteen+ chars',
    tls: { certFile: 'node.pem', keyFile: 'node-key.pem', caFile: 'ca.pem' },
  });
  void secured;
  secured.setSecrets(['a secret of sixteen+ chars', 'the next secret, 16+ chars']);
  await secured.reloadTls().catch((err: ConsensusError) => void err.code);
  const shown: string = JSON.stringify(secured.toJSON());
  void shown;
  // A daemon that stores the index with its effects resumes after it, exactly once.
  let handledThrough = 0;
  const exactlyOnce = createRaftCoordinator({ nodeId: 'node-4', port: 8083, appliedIndex: () => handledThrough });
  exactlyOnce.on('command_applied', ({ entry }) => {
    handledThrough = entry.index;
  });
  const inMemory = createRaftCoordinator({ nodeId: 'node-5', port: 8084, appliedIndex: 0 });
  void inMemory;
  const members: InitialMember[] = [
    { nodeId: 'node-1', host: '10.0.1.100', port: 8080 },
    { nodeId: 'node-2', host: '10.0.1.101', port: 8081 },
  ];
  const formed = createRaftCoordinator({
    nodeId: 'node-1',
    port: 8080,
    host: '0.0.0.0',
    advertiseHost: '10.0.1.100',
    initialMembers: members,
  });
  const listed: InitialMember[] | undefined = formed.config.initialMembers;
  const advertised: string = formed.config.advertiseHost;
  void listed;
  void advertised;
  raft.on('leader_elected', ({ leaderId, term }) => {
    const id: string = leaderId;
    const t: number = term;
    void id;
    void t;
  });
  raft.on('command_applied', ({ command, entry, redelivered }) => {
    const again: boolean = redelivered;
    void again;
    const type: string = command.type;
    const index: number = entry.index;
    void type;
    void index;
  });
  raft.on('peer_add_failed', ({ nodeId, error }) => {
    const code: string = error.code;
    void nodeId;
    void code;
  });
  await raft.initialize();
  raft.addPeer('node-2', '127.0.0.1', 8081);
  await raft.addPeer('node-3', '127.0.0.1', 8082);
  const [elected] = await once(raft, 'leader_elected');
  void elected;
  try {
    const result: ReplicateResult = await raft.replicateCommand({ type: 'set', key: 'a', value: 1 }, { operationId: 'op-1' });
    const index: number = result.logIndex;
    void index;
  } catch (err) {
    if (err instanceof ConsensusError && err.code === ErrorCode.NOT_LEADER) {
      const leader: string | null | undefined = err.leaderId;
      void leader;
    }
  }
  const where: { logIndex: number; term: number } | null = raft.getOperation('op-1');
  void where;
  const state: RaftState = raft.getState();
  const voters: string[] = state.membership.voters;
  void voters;
  const failure: string | null = state.failure;
  void failure;
  const leader: boolean = raft.isLeader;
  const term: number = raft.currentTerm;
  void leader;
  void term;
  await raft.stop();
}

void main;

// The guide's stack, as in its Steps 1-3 and scenarios.
import { EventEmitter } from 'node:events';
import {
  ClusterManager,
  ConsensusManager,
  createClusterManager,
  createConsensusManager,
  NodeHealth,
  OperationState,
  PartitionState,
  type ConsensusState,
} from '@unrdf/consensus';

class Daemon extends EventEmitter {
  nodeId = 'node-1';
}

async function guide(): Promise<void> {
  const daemon1 = new Daemon();
  const raftNode1 = createRaftCoordinator({ nodeId: 'node-1', port: 8080, host: '127.0.0.1' });
  const clusterMgr1: ClusterManager = createClusterManager({ nodeId: 'node-1', healthCheckInterval: 5000, autoDiscovery: true });
  const consensus1: ConsensusManager = new ConsensusManager(daemon1, raftNode1, clusterMgr1, {
    replicationFactor: 3,
    partitionDetectionMs: 3000,
    snapshot: () => ({ executed: [] as string[] }),
    restore: (state: { executed: string[] }) => void state.executed,
  });
  await raftNode1.initialize();
  await clusterMgr1.initialize(raftNode1);
  await consensus1.initialize();
  clusterMgr1.addNode({ nodeId: 'node-2', host: '127.0.0.1', port: 8081, capabilities: ['task-execution'] });
  const clusterMgr2: ClusterManager = createClusterManager({
    nodeId: 'node-2',
    capabilities: ['task-execution', 'event-processing'],
    metadata: { zone: 'eu-1', weight: 2 },
  });
  const caps: string[] = clusterMgr2.config.capabilities;
  const meta: Record<string, unknown> = clusterMgr2.config.metadata;
  void [caps, meta];
  // @ts-expect-error capabilities are strings
  createClusterManager({ nodeId: 'node-3', capabilities: [1] });
  for (const n of clusterMgr1.getNodes()) void [n.nodeId, n.host, n.port, n.capabilities.join(','), n.metadata, n.local];
  const state: ConsensusState = consensus1.getConsensusState();
  const healthy: boolean = state.partitionState === PartitionState.HEALTHY;
  void healthy;
  consensus1.on('consensus:leader_elected', ({ leaderId, term, isLeader }) => void [leaderId, term, isLeader]);
  consensus1.on('partition:detected', ({ nodeId, health }) => void [nodeId, health]);
  consensus1.on('log:compacted', ({ entriesRemoved }) => void entriesRemoved);
  consensus1.on('consensus:operation_committed', ({ operation, logIndex, redelivered }) => void [operation.id, logIndex, redelivered]);
  clusterMgr1.on('node_joined', ({ nodeId, rejoined }) => void [nodeId, rejoined]);
  clusterMgr1.on('warning', (err) => void err.message);
  const result = await consensus1.replicateOperation({ id: 'task-123', daemonId: 'daemon-1', type: 'data_import', payload: { batchSize: 1000 }, timestamp: Date.now() });
  const idx: number = result.logIndex;
  void idx;
  const op = consensus1.getOperationState('task-123');
  if (op && op.state === OperationState.COMMITTED) void op.logIndex;
  if (clusterMgr1.getHealthyNodes().length < 2) console.warn('quorum lost');
  const h: string = clusterMgr1.getNodeHealth('node-2');
  void (h === NodeHealth.DEGRADED);
  const removed = await consensus1.removeNodeGracefully('node-2');
  void removed.removed;
  const text: string = consensus1.prometheusMetrics();
  void text;
  const admin: AdminServer = await consensus1.listenAdmin({ port: 0, host: '127.0.0.1', token: 'a-token-of-16-chars-or-more' });
  const adminUrl: string = admin.url;
  void adminUrl;
  await admin.close();
  const bare = await raftNode1.listenAdmin();
  void bare.port;
  await bare.close();
  const { bytes } = await raftNode1.backup('/tmp/node-1.backup');
  void bytes;
  const status = (await (await fetch(`${adminUrl}/status`)).json()) as AdminStatus;
  const lag: number | null = status.members[0].lag;
  void lag;
  const other = createConsensusManager(daemon1, raftNode1, null);
  await other.shutdown();
  await consensus1.shutdown();
  await clusterMgr1.shutdown();
}

void guide;

async function stateMachine(raft: RaftCoordinator): Promise<void> {
  const state: DistributedStateMachine = createDistributedStateMachine({ nodeId: 'node-1', enableSnapshots: true, snapshotInterval: 1000 });
  await state.initialize(raft);
  await state.set('workflow:123', { status: 'running', progress: 0.5 });
  const local = state.get<{ status: string }>('workflow:123');
  if (local) void local.status;
  const fresh = await state.get<{ status: string }>('workflow:123', { linearizable: true, timeoutMs: 2000 });
  void fresh;
  const has: boolean = state.has('workflow:123');
  void has;
  const n: number = await state.update<number>('counter', (old) => (old ?? 0) + 1);
  void n;
  const cas = await state.compareAndSet<number>('counter', 1, 2, { forward: true });
  if (!cas.ok) void cas.value;
  await state.batchUpdate([{ key: 'a', value: 1 }, { key: 'b', delete: true }]);
  await state.delete('a');
  const keys: string[] = state.keys();
  void [keys, state.values(), state.entries()];
  state.on('state_changed', ({ key, value, operation, index }) => void [key, value, operation === StateOperation.SET, index]);
  state.on('snapshot_restored', ({ snapshotId, index, stateSize }) => void [snapshotId, index, stateSize]);
  const ac = new AbortController();
  for await (const change of state.watch<number>('work', { fromIndex: 10, signal: ac.signal })) {
    const c: StateChange<number> = change;
    void c.index;
    break;
  }
  const r = await raft.replicateCommand({ type: 'x' }, { registry: { key: 'k', value: 1, ifAbsent: true } });
  void r.conditionMet;
  void state.getStats().stateSize;
  await state.shutdown();
}

void stateMachine;
import { registerMetrics, metricsText, type Logger } from '@unrdf/consensus';

async function observability(): Promise<void> {
  const logger: Logger = {
    debug: (obj, msg) => void [obj, msg],
    info: () => {},
    warn: () => {},
    error: () => {},
  };
  const raft = createRaftCoordinator({ nodeId: 'obs-1', port: 0, logger, logLevel: 'info' });
  const { leaderId, term }: { leaderId: string; term: number } = await raft.waitForLeader({ timeoutMs: 5000, signal: AbortSignal.timeout(6000) });
  void [leaderId, term];
  await raft.replicateCommand({ type: 'x' }, { signal: new AbortController().signal });
  await raft.addPeer('obs-2', '127.0.0.1', 9000, { signal: AbortSignal.timeout(1000) });
  await raft.removePeer('obs-2', { signal: AbortSignal.timeout(1000) });
  const text: string = metricsText() + raft.prometheusMetrics();
  const registry = registerMetrics({ registerMetric: (_m: unknown) => {}, getSingleMetric: (_n: string) => undefined });
  void [text, registry];
}
void observability;
