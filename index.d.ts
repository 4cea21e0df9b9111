// Type definitions for @unrdf/consensus.
import { EventEmitter } from 'node:events';

/** Stable error codes carried by every `ConsensusError`. */
export type ErrorCodeValue =
  | 'ERR_INVALID_CONFIG'
  | 'ERR_INVALID_OPERATION'
  | 'ERR_NOT_LEADER'
  | 'ERR_NO_QUORUM'
  | 'ERR_TIMEOUT'
  | 'ERR_NODE_NOT_FOUND'
  | 'ERR_ADDRESS_IN_USE'
  | 'ERR_STORAGE'
  | 'ERR_SHUTDOWN'
  | 'ERR_AUTH'
  | 'ERR_COMPACTED'
  | 'ERR_NOT_INITIALIZED';

export declare const ErrorCode: Readonly<{
  INVALID_CONFIG: 'ERR_INVALID_CONFIG';
  INVALID_OPERATION: 'ERR_INVALID_OPERATION';
  NOT_LEADER: 'ERR_NOT_LEADER';
  NO_QUORUM: 'ERR_NO_QUORUM';
  TIMEOUT: 'ERR_TIMEOUT';
  NODE_NOT_FOUND: 'ERR_NODE_NOT_FOUND';
  ADDRESS_IN_USE: 'ERR_ADDRESS_IN_USE';
  STORAGE: 'ERR_STORAGE';
  SHUTDOWN: 'ERR_SHUTDOWN';
  AUTH: 'ERR_AUTH';
  COMPACTED: 'ERR_COMPACTED';
  NOT_INITIALIZED: 'ERR_NOT_INITIALIZED';
}>;

export declare class ConsensusError extends Error {
  constructor(code: ErrorCodeValue, message: string, details?: { leaderId?: string | null; field?: string; cause?: unknown });
  readonly code: ErrorCodeValue;
  /** With ERR_NOT_LEADER: the leader to send the request to, when known. */
  readonly leaderId?: string | null;
  /** With ERR_INVALID_CONFIG / ERR_INVALID_OPERATION: the offending field. */
  readonly field?: string;
}

/** A voter of the cluster `initialMembers` founds. */
export interface InitialMember {
  nodeId: string;
  /** The address peers dial (this node's entry: its advertiseHost, or host). */
  host: string;
  port: number;
}

export interface RaftCoordinatorConfig {
  /** 1-64 characters of [A-Za-z0-9._-]. */
  nodeId: string;
  /** Address to bind. Default '127.0.0.1'. May be a wildcard ('0.0.0.0', '::') with advertiseHost. */
  host?: string;
  /** Address peers dial, recorded in the membership. Default `host`; required when `host` is a wildcard. */
  advertiseHost?: string;
  /** WebSocket port; 0 picks a free one (then `getState().port` tells), or with initialMembers binds this node's listed port. */
  port: number;
  /**
   * Every voter of the cluster, this node included (etcd's initial-cluster): a node with an empty
   * data directory founds the cluster with exactly these voters; every node given the same list,
   * started in any order, forms one cluster. Ignored once the data directory holds state.
   */
  initialMembers?: InitialMember[];
  /** LMDB directory, created if missing. Default `.consensus/<nodeId>` under the working directory. */
  dataDir?: string;
  /** Peers of another cluster are refused at the handshake. Default 'default'. */
  clusterId?: string;
  /**
   * Shared secret (16+ characters): every peer proves it knows it at the handshake; it never
   * crosses the wire. A list rotates: the first proves this node, any verifies a peer. Shows as
   * '[redacted]' in `config`.
   */
  secret?: string | string[];
  /** Mutual TLS between nodes (PEM files): this node's certificate chain and key, and the CA that signed every member's certificate. */
  tls?: { certFile: string; keyFile: string; caFile: string };
  /** Default 150 ms. */
  electionTimeoutMin?: number;
  /** Default 300 ms. */
  electionTimeoutMax?: number;
  /** Default 50 ms. */
  heartbeatInterval?: number;
  /** Log entries since the last snapshot that trigger a snapshot and purge. Default 1000. */
  snapshotThreshold?: number;
  /** Entries kept in the log after a snapshot, for slightly lagging followers. Default snapshotThreshold / 4. */
  logsKeptAfterSnapshot?: number;
  /** 'auto' (default): a fresh node's addPeer founds the cluster unless a fresh peer it adds does; true: found at initialize(); false: only join. Not with initialMembers. */
  bootstrap?: 'auto' | boolean;
  /** How long replicateCommand waits for a commit. Default 5000 ms. */
  commandTimeoutMs?: number;
  /** How long addPeer waits for the new member to catch up. Default 30000 ms. */
  addPeerTimeoutMs?: number;
  /** How long an operation id is remembered for idempotence. Default 24 h. */
  operationTtlMs?: number;
  /**
   * The most operation ids remembered for idempotence. Default 100000. Past it the oldest ids
   * (in log order) are forgotten, and a retry of a forgotten id takes effect again. Give every
   * node the same value: replicas then agree on which retries are duplicates.
   */
  operationIdWindow?: number;
  /**
   * The most bytes of remembered operation ids (each counts its UTF-8 length + 32); bounds the
   * registry in memory, on disk and in snapshots. Default 16 MiB (at least 1024).
   */
  operationIdWindowBytes?: number;
  /** Largest command accepted, as JSON; at most half of `maxFrameBytes`. Default 1 MiB. */
  maxCommandBytes?: number;
  /** LMDB map size (the most the data directory may hold). Default 1024 MiB. */
  mapSizeMb?: number;
  /** Largest frame on the wire. Snapshots go in pieces of at most half of it (and 1 MiB). Default 64 MiB. */
  maxFrameBytes?: number;
  /** Inbound connections accepted at once. Default 256. */
  maxConnections?: number;
  /**
   * Where delivery resumes at initialize(), for a daemon that stores the index of what it handled
   * atomically with its effects: it holds every entry up to this index, so it receives each
   * entry after it exactly once. A function is also asked, after each batch of events, how far the
   * daemon holds durably: the node keeps later entries in its log until then. `0` with
   * snapshot/restore rebuilds an in-memory daemon at every start. Absent: the node's own
   * delivery cursor, with `redelivered: true` on what a crash left unproven.
   */
  appliedIndex?: number | (() => number);
  /** A pino-style logger: the core's log records (and every warning) reach it. */
  logger?: Logger;
  /** Least severe level of core records handed to `logger`. Default 'warn'. */
  logLevel?: 'error' | 'warn' | 'info' | 'debug' | 'trace';
}

/** A command: any JSON-serializable plain object with a string `type`. */
export interface Command {
  type: string;
  [key: string]: unknown;
}

export interface ReplicateResult {
  committed: true;
  logIndex: number;
  term: number;
  /** Present when the operation id had already taken effect; nothing new was applied. */
  duplicate?: true;
  /** With `registry.ifEquals` / `registry.ifAbsent`: whether the condition held (false: nothing changed). */
  conditionMet?: boolean;
}

export type Role = 'leader' | 'follower' | 'candidate' | 'learner' | 'shutdown';

export interface MemberInfo {
  host: string;
  port: number;
  voter: boolean;
}

export interface RaftState {
  nodeId: string;
  role: Role;
  isLeader: boolean;
  leaderId: string | null;
  term: number;
  port: number;
  lastLogIndex: number;
  commitIndex: number;
  lastApplied: number;
  /** Entries currently in the log (after compaction). */
  logLength: number;
  snapshotIndex: number | null;
  /** Member ids other than this node. */
  peers: string[];
  connectedPeers: string[];
  /** `changing`: a membership change is half done (joint config); voters lists both configs' voters. */
  membership: { voters: string[]; learners: string[]; nodes: Record<string, MemberInfo>; changing: boolean };
  /** Leader only: per member, the highest log index known to be replicated there. */
  replication: Record<string, number | null>;
  /** Follower: when a leader was last heard from; leader: when a quorum last acknowledged it (ms since epoch, 0 for never). */
  lastContact: number;
  /** Why this node's Raft stopped on its own (its storage failed; `role` is then 'shutdown'), with what to do; null otherwise. */
  failure: string | null;
}

export interface ReplicateOptions {
  /** Makes retries idempotent: the same id takes effect once. */
  operationId?: string;
  /** Overrides commandTimeoutMs for this call. */
  timeoutMs?: number;
  /** On a follower, send the command on to the leader instead of rejecting with ERR_NOT_LEADER. */
  forward?: boolean;
  /** Also record the command under `key` in the replicated registry (or delete the key). */
  registry?: RegistryWrite;
  /** Rejects at once with an AbortError (a DOMException) when it aborts. */
  signal?: AbortSignal;
}

/** A write to the replicated registry, applied atomically with its command. */
export interface RegistryWrite {
  key: string;
  delete?: boolean;
  /** Store this JSON value under `key` instead of the command. */
  value?: unknown;
  /** Apply only if `key` holds this value now (compared as JSON). */
  ifEquals?: unknown;
  /** Apply only if `key` is unset now. */
  ifAbsent?: boolean;
  /** Further keys written in the same entry, all or none. */
  also?: Array<{ key: string; value?: unknown; delete?: boolean }>;
}

/** What the `logger` option takes: pino, or anything with the same four methods. */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  trace?(obj: object, msg?: string): void;
}

/** The part of prom-client's Registry that registerMetrics uses. */
export interface MetricsRegistry {
  registerMetric(metric: unknown): void;
  getSingleMetric?(name: string): unknown;
}

/** Adds the metrics of every node in this process to a prom-client registry; returns it. */
export declare function registerMetrics<R extends MetricsRegistry>(registry: R): R;
/** The Prometheus text exposition of every node in this process, each family once. */
export declare function metricsText(): string;

export interface RaftCoordinatorEvents {
  initialized: [{ nodeId: string; port: number }];
  leader_elected: [{ leaderId: string; term: number }];
  leader_lost: [{ previousLeaderId: string; term: number }];
  term_updated: [{ term: number }];
  became_follower: [{ term: number; leaderId: string | null }];
  /** Every committed command, on every node, in log order; `redelivered`: a previous run of this node may have delivered it already. */
  command_applied: [{ command: Command; entry: { index: number; term: number }; operationId?: string; redelivered: boolean }];
  /** The application's state up to `lastIncludedIndex` (caught up from a snapshot, or handed over again at start: `redelivered`). */
  snapshot_installed: [{ lastIncludedIndex: number; term: number; appState: unknown; redelivered: boolean }];
  log_compacted: [{ upToIndex: number; entriesRemoved: number }];
  peer_connected: [{ nodeId: string }];
  peer_disconnected: [{ nodeId: string }];
  peer_added: [{ nodeId: string; host: string; port: number; voter: boolean }];
  peer_removed: [{ nodeId: string }];
  peer_add_failed: [{ nodeId: string; error: ConsensusError }];
  warning: [ConsensusError];
  shutdown: [{ nodeId: string }];
}

type Listener<Args extends unknown[]> = (...args: Args) => void;

/**
 * The admin endpoint: GET /metrics, /health, /status, /members, /backup; POST /members,
 * /leader/transfer, /compact; DELETE /members/:id.
 */
export interface AdminServerOptions {
  /** 0 (the default) picks a free port. */
  port?: number;
  /** Default '127.0.0.1'. An address other than loopback requires `token`. */
  host?: string;
  /** At least 16 characters; every request must then send `Authorization: Bearer <token>`. */
  token?: string;
}

export interface AdminServer {
  readonly port: number;
  readonly host: string;
  /** `http://host:port`. */
  readonly url: string;
  /** Stops listening and closes open connections. Also happens when the node stops. */
  close(): Promise<void>;
}

/** What `GET /status` answers. */
export interface AdminStatus {
  nodeId: string;
  role: 'leader' | 'follower' | 'candidate' | 'learner' | 'shutdown';
  term: number;
  leader: string | null;
  isLeader: boolean;
  commitIndex: number;
  appliedIndex: number;
  lastLogIndex: number;
  logLength: number;
  snapshotIndex: number | null;
  /** This node has a leader with a quorum (and hears from it). */
  quorum: boolean;
  health: { ok: boolean; reason: string | null };
  membershipChanging: boolean;
  partitionState?: PartitionStateValue;
  lastContact: number;
  members: Array<{
    nodeId: string;
    host: string;
    port: number;
    voter: boolean;
    health: NodeHealthValue | 'unreachable';
    /** Highest index known replicated there (leader's view); null where unknown. */
    matchedIndex: number | null;
    /** Entries behind the leader's log; null where unknown (on a follower). */
    lag: number | null;
  }>;
  timestamp: number;
}

export declare class RaftCoordinator extends EventEmitter {
  constructor(config: RaftCoordinatorConfig);
  readonly config: Required<Omit<RaftCoordinatorConfig, 'bootstrap' | 'appliedIndex' | 'initialMembers' | 'secret' | 'tls' | 'logger'>> & {
    bootstrap: 'auto' | 'always' | 'never';
    /** '[redacted]' (or one per secret of a list) when set: the secrets themselves never show. */
    secret?: string | string[];
    tls?: RaftCoordinatorConfig['tls'];
    appliedIndex?: number | (() => number);
    initialMembers?: InitialMember[];
  };
  readonly nodeId: string;
  readonly isLeader: boolean;
  readonly leaderId: string | null;
  readonly currentTerm: number;
  initialize(): Promise<void>;
  addPeer(nodeId: string, host: string, port: number, options?: { signal?: AbortSignal }): Promise<void>;
  removePeer(nodeId: string, options?: { forward?: boolean; signal?: AbortSignal }): Promise<void>;
  /** Resolves once this node knows a leader; ERR_TIMEOUT after timeoutMs, AbortError on abort. */
  waitForLeader(options?: { timeoutMs?: number; signal?: AbortSignal }): Promise<{ leaderId: string; term: number }>;
  /** This node's metrics in the Prometheus text format. */
  prometheusMetrics(): string;
  transferLeadership(nodeId: string, timeoutMs?: number): Promise<void>;
  /** Replaces the cluster secrets at run time (rotation: [A, B] everywhere, then [B, A], then [B]). */
  setSecrets(secrets: string | string[]): void;
  /** Reads the TLS certificate, key and CA files again; new connections use them. */
  reloadTls(): Promise<void>;
  /** Identity and config, secrets redacted. */
  toJSON(): { nodeId: string; config: RaftCoordinator['config'] };
  replicateCommand(command: Command, options?: ReplicateOptions): Promise<ReplicateResult>;
  /** Makes every snapshot carry the application's state, as returned by `provider`; null stops it. */
  setSnapshotProvider(provider: ((info: { lastIncludedIndex: number }) => unknown) | null): void;
  /** Replicated registry records whose key starts with `prefix`. */
  getRegistry(prefix?: string): Array<{ key: string; value: Command }>;
  /** Where this node applied operation `operationId`, or null when it has not (yet). */
  getOperation(operationId: string): { logIndex: number; term: number } | null;
  /** Round-trip time in ms to a member; rejects with ERR_TIMEOUT when it does not answer in time. */
  ping(nodeId: string, timeoutMs?: number): Promise<number>;
  /** Snapshots now and purges the log, keeping `keep` entries before the snapshot. */
  compact(keep?: number, timeoutMs?: number): Promise<{ purgedUpTo: number | null }>;
  /** Serves the admin endpoint of this node (see `AdminServerOptions`). */
  listenAdmin(options?: AdminServerOptions): Promise<AdminServer>;
  /** Writes a consistent copy of this node's data to `file` (which must not exist) while it runs. */
  backup(file: string): Promise<{ bytes: number }>;
  getState(): RaftState;
  stop(): Promise<void>;
  shutdown(): Promise<void>;

  on<E extends keyof RaftCoordinatorEvents>(event: E, listener: Listener<RaftCoordinatorEvents[E]>): this;
  once<E extends keyof RaftCoordinatorEvents>(event: E, listener: Listener<RaftCoordinatorEvents[E]>): this;
  off<E extends keyof RaftCoordinatorEvents>(event: E, listener: Listener<RaftCoordinatorEvents[E]>): this;
  emit<E extends keyof RaftCoordinatorEvents>(event: E, ...args: RaftCoordinatorEvents[E]): boolean;
}

export declare function createRaftCoordinator(config: RaftCoordinatorConfig): RaftCoordinator;

export declare const NodeHealth: Readonly<{ HEALTHY: 'healthy'; DEGRADED: 'degraded'; UNHEALTHY: 'unhealthy'; UNKNOWN: 'unknown' }>;
export type NodeHealthValue = 'healthy' | 'degraded' | 'unhealthy' | 'unknown';
export declare const PartitionState: Readonly<{ HEALTHY: 'healthy'; PARTITIONED: 'partitioned'; RECOVERING: 'recovering' }>;
export type PartitionStateValue = 'healthy' | 'partitioned' | 'recovering';
export declare const OperationState: Readonly<{ PENDING: 'pending'; REPLICATED: 'replicated'; COMMITTED: 'committed'; FAILED: 'failed' }>;
export type OperationStateValue = 'pending' | 'replicated' | 'committed' | 'failed';

export interface ClusterManagerConfig {
  nodeId: string;
  /** Default 5000 ms. */
  healthCheckInterval?: number;
  /** Default 2000 ms. */
  healthCheckTimeout?: number;
  /** Failed checks after which a node is unhealthy (degraded before). Default 3. */
  maxFailedHealthChecks?: number;
  /** Every Raft member appears in `nodes`, not only those registered with addNode. Default false. */
  autoDiscovery?: boolean;
  /** Default 10000 ms. */
  discoveryInterval?: number;
  /** How long addNode keeps trying while no leader is reachable. Default 30000 ms. */
  writeTimeoutMs?: number;
  /**
   * This node's capabilities, published in its own registry record once it is a member. When
   * non-empty they win over those an addNode() call gave it; when empty, addNode's show. Default [].
   */
  capabilities?: string[];
  /** This node's metadata (JSON-serializable), merged over addNode's key by key. Default {}. */
  metadata?: Record<string, unknown>;
}

export interface NodeInfo {
  nodeId: string;
  host: string;
  port: number;
  capabilities?: string[];
  metadata?: Record<string, unknown>;
}

export interface ClusterNode extends Required<NodeInfo> {
  joinedAt: number;
  local: boolean;
  health: NodeHealthValue;
}

export interface ClusterStats {
  nodeId: string;
  totalNodes: number;
  healthyNodes: number;
  degradedNodes: number;
  unhealthyNodes: number;
  unknownNodes: number;
  healthChecks: number;
  failedHealthChecks: number;
  leaderId: string | null;
  timestamp: number;
}

export interface ClusterManagerEvents {
  node_joined: [{ nodeId: string; metadata: ClusterNode | undefined; rejoined: boolean }];
  node_left: [{ nodeId: string }];
  node_health_changed: [{ nodeId: string; health: NodeHealthValue; previousHealth: NodeHealthValue }];
  node_unhealthy: [{ nodeId: string }];
  health_degraded: [{ nodeId: string; health: NodeHealthValue }];
  node_add_failed: [{ nodeId: string; error: ConsensusError }];
  /** Something unexpected stopped this node's own record from being written (the manager goes on). */
  warning: [Error];
  shutdown: [{ nodeId: string }];
}

export declare class ClusterManager extends EventEmitter {
  constructor(config: ClusterManagerConfig);
  readonly config: Required<ClusterManagerConfig>;
  readonly nodeId: string;
  /**
   * nodeId -> node record: each member's own record (address, config capabilities and metadata)
   * merged with what addNode() registered for it; the same on every node.
   */
  readonly nodes: Map<string, Omit<ClusterNode, 'health'>>;
  initialize(raftCoordinator: RaftCoordinator): Promise<void>;
  addNode(node: NodeInfo): Promise<Omit<ClusterNode, 'health'> | NodeInfo>;
  removeNode(nodeId: string): Promise<{ nodeId: string; removed: true }>;
  getNodes(): ClusterNode[];
  /** Healthy nodes, the local node included. */
  getHealthyNodes(): ClusterNode[];
  getNodeHealth(nodeId: string): NodeHealthValue;
  getStats(): ClusterStats;
  shutdown(): Promise<void>;

  on<E extends keyof ClusterManagerEvents>(event: E, listener: Listener<ClusterManagerEvents[E]>): this;
  once<E extends keyof ClusterManagerEvents>(event: E, listener: Listener<ClusterManagerEvents[E]>): this;
  off<E extends keyof ClusterManagerEvents>(event: E, listener: Listener<ClusterManagerEvents[E]>): this;
  emit<E extends keyof ClusterManagerEvents>(event: E, ...args: ClusterManagerEvents[E]): boolean;
}

export declare function createClusterManager(config: ClusterManagerConfig): ClusterManager;

export interface ConsensusManagerConfig {
  /** Expected voter count; a mismatch is reported as consensus:warning. Default 3. */
  replicationFactor?: number;
  /** Default 3000 ms. */
  partitionDetectionMs?: number;
  /** While partitioned, how often the node probes its peers to rejoin. Default 1000 ms. */
  recoveryRetryMs?: number;
  /** How often compaction is checked, ms. Default 1000. */
  snapshotInterval?: number;
  /** Log entries that trigger compaction. Default 5000. */
  logCompactionThreshold?: number;
  /** The log never holds more entries than this. Default 10000. */
  maxLogSize?: number;
  /** Default 5000 ms. */
  operationTimeoutMs?: number;
  /** How long operation ids are remembered. Default 24 h. */
  operationTtlMs?: number;
  /**
   * Most operation ids this manager keeps records of: operations that failed here and the
   * daemon's reports of executing them (getOperationState). Duplicates are decided by the
   * coordinator's registry and its own operationIdWindow. Default: the coordinator's operationIdWindow.
   */
  operationIdWindow?: number;
  /** Bytes of those records' ids. Default: the coordinator's operationIdWindowBytes. */
  operationIdWindowBytes?: number;
  /** Default 256. */
  maxOperationIdLength?: number;
  /** Default 1 MiB. */
  maxPayloadBytes?: number;
  /** The application's state for a snapshot (JSON-serializable), reflecting every operation delivered so far. */
  snapshot?: (info: { lastIncludedIndex: number }) => unknown;
  /** Takes over the state of a snapshot this node caught up from. */
  restore?: (state: any, info: { lastIncludedIndex: number; term: number }) => unknown;
}

export interface Operation {
  id: string;
  daemonId?: string;
  type: string;
  payload?: Record<string, unknown>;
  timestamp?: number;
}

export interface CommittedOperation {
  id: string;
  daemonId: string | null;
  type: string;
  payload: Record<string, unknown>;
  timestamp: number;
}

export interface ReplicateOperationResult {
  operationId: string;
  replicated: true;
  committed: true;
  logIndex: number;
  term: number;
  duplicate?: true;
}

export interface ConsensusState {
  nodeId: string;
  isLeader: boolean;
  leaderId: string | null;
  currentTerm: number;
  logSize: number;
  commitIndex: number;
  lastAppliedIndex: number;
  partitionState: PartitionStateValue;
  replicatedOperationsCount: number;
  timestamp: number;
}

export interface ConsensusManagerEvents {
  'consensus:initialized': [{ nodeId: string }];
  'consensus:leader_elected': [{ leaderId: string; term: number; isLeader: boolean }];
  'consensus:leader_lost': [{ previousLeaderId: string; term: number }];
  'consensus:term_updated': [{ term: number }];
  'consensus:operation_committed': [{ operation: CommittedOperation; logIndex: number; term: number; redelivered: boolean }];
  'consensus:operation_failed': [{ operationId: string; error: ConsensusError }];
  'consensus:snapshot_installed': [{ lastIncludedIndex: number; term: number; redelivered: boolean }];
  'consensus:warning': [ConsensusError];
  'consensus:shutdown': [{ nodeId: string }];
  'partition:detected': [{ nodeId: string; health: string }];
  'partition:recovered': [{ newLeader: string | null }];
  'partition:healthy': [{ leaderId: string | null }];
  'log:compacted': [{ entriesRemoved: number; entriesRemaining: number }];
}

export declare class ConsensusManager extends EventEmitter {
  constructor(
    daemon: EventEmitter,
    raftCoordinator: RaftCoordinator,
    clusterManager: ClusterManager | null,
    config?: ConsensusManagerConfig,
  );
  readonly nodeId: string;
  readonly isLeader: boolean;
  readonly leaderId: string | null;
  readonly currentTerm: number;
  readonly partitionState: PartitionStateValue;
  /** ms since epoch of the last contact with a leader (follower) or quorum (leader). */
  readonly lastHeartbeat: number;
  initialize(): Promise<void>;
  replicateOperation(operation: Operation, options?: { timeoutMs?: number; signal?: AbortSignal }): Promise<ReplicateOperationResult>;
  getOperationState(operationId: string): {
    state: OperationStateValue;
    logIndex: number | null;
    term: number | null;
    execution: 'success' | 'failure' | null;
  } | null;
  removeNodeGracefully(nodeId: string): Promise<{ nodeId: string; removed: true }>;
  getConsensusState(): ConsensusState;
  getMetrics(): Record<string, number | string | null>;
  prometheusMetrics(): string;
  /** Serves the admin endpoint of this node; `/metrics` is `prometheusMetrics()`. */
  listenAdmin(options?: AdminServerOptions): Promise<AdminServer>;
  shutdown(): Promise<void>;

  on<E extends keyof ConsensusManagerEvents>(event: E, listener: Listener<ConsensusManagerEvents[E]>): this;
  once<E extends keyof ConsensusManagerEvents>(event: E, listener: Listener<ConsensusManagerEvents[E]>): this;
  off<E extends keyof ConsensusManagerEvents>(event: E, listener: Listener<ConsensusManagerEvents[E]>): this;
  emit<E extends keyof ConsensusManagerEvents>(event: E, ...args: ConsensusManagerEvents[E]): boolean;
}

export declare function createConsensusManager(
  daemon: EventEmitter,
  raftCoordinator: RaftCoordinator,
  clusterManager: ClusterManager | null,
  config?: ConsensusManagerConfig,
): ConsensusManager;

export declare const StateOperation: Readonly<{ SET: 'set'; DELETE: 'delete'; UPDATE: 'update'; BATCH: 'batch' }>;
export type StateOperationValue = 'set' | 'delete' | 'update' | 'batch';

export interface DistributedStateMachineConfig {
  /** When given, must equal the coordinator's nodeId. */
  nodeId?: string;
  /** Registry prefix of this state's keys (default `'state/'`); never `'cluster/'`. */
  prefix?: string;
  /** Writes on a follower go to the leader instead of rejecting with ERR_NOT_LEADER. */
  forward?: boolean;
  /** Accepted for compatibility with the pure-JS original; the engine's snapshotThreshold decides. */
  snapshotInterval?: number;
  maxStateSize?: number;
  enableSnapshots?: boolean;
  persistSnapshots?: boolean;
}

export interface StateWriteOptions {
  forward?: boolean;
  timeoutMs?: number;
}

export interface StateChange<V = unknown> {
  key: string;
  /** Absent for deletions. */
  value?: V;
  operation: 'set' | 'delete';
  /** The log index of the entry that made the change. */
  index: number;
}

export interface SnapshotInfo {
  snapshotId: string;
  index: number;
  stateSize: number;
}

export interface DistributedStateMachineStats {
  stateSize: number;
  changeLogSize: number;
  snapshotCount: number;
  lastSnapshotIndex: number;
  latestSnapshot: string | null;
  appliedIndex: number;
}

export interface DistributedStateMachineEvents {
  initialized: [{ nodeId: string }];
  state_changed: [StateChange];
  snapshot_created: [SnapshotInfo];
  snapshot_restored: [SnapshotInfo];
  shutdown: [{ nodeId: string }];
  /** This node could not read its replica while following the log. */
  warning: [ConsensusError];
}

export declare class DistributedStateMachine extends EventEmitter {
  constructor(config?: DistributedStateMachineConfig);
  readonly config: Required<Omit<DistributedStateMachineConfig, 'nodeId'>> & { nodeId?: string };
  readonly nodeId: string | undefined;
  raftCoordinator: RaftCoordinator | null;
  initialize(raftCoordinator: RaftCoordinator): Promise<void>;
  set(key: string, value: unknown, options?: StateWriteOptions): Promise<void>;
  /** This replica's value (sequentially consistent). */
  get<V = unknown>(key: string, options?: { linearizable?: false }): V | undefined;
  /** Resolves after the leader confirmed its leadership; never older than an acknowledged write. */
  get<V = unknown>(key: string, options: { linearizable: true; timeoutMs?: number }): Promise<V | undefined>;
  has(key: string): boolean;
  delete(key: string, options?: StateWriteOptions): Promise<void>;
  update<V = unknown>(key: string, updateFn: (oldValue: V | undefined) => V | Promise<V>, options?: StateWriteOptions & { maxAttempts?: number }): Promise<V>;
  batchUpdate(changes: Array<{ key: string; value?: unknown; delete?: boolean }>, options?: StateWriteOptions): Promise<void>;
  compareAndSet<V = unknown>(key: string, expected: V | undefined, value: V, options?: StateWriteOptions): Promise<{ ok: boolean; value: V | undefined }>;
  watch<V = unknown>(prefix?: string, options?: { fromIndex?: number; signal?: AbortSignal }): AsyncIterableIterator<StateChange<V>>;
  keys(): string[];
  values(): unknown[];
  entries(): Array<[string, unknown]>;
  getStats(): DistributedStateMachineStats;
  shutdown(): Promise<void>;
  on<E extends keyof DistributedStateMachineEvents>(event: E, listener: Listener<DistributedStateMachineEvents[E]>): this;
  once<E extends keyof DistributedStateMachineEvents>(event: E, listener: Listener<DistributedStateMachineEvents[E]>): this;
  off<E extends keyof DistributedStateMachineEvents>(event: E, listener: Listener<DistributedStateMachineEvents[E]>): this;
  emit<E extends keyof DistributedStateMachineEvents>(event: E, ...args: DistributedStateMachineEvents[E]): boolean;
}

export declare function createDistributedStateMachine(config?: DistributedStateMachineConfig): DistributedStateMachine;
