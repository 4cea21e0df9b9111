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
  | 'ERR_AUTH';

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
}>;

export declare class ConsensusError extends Error {
  constructor(code: ErrorCodeValue, message: string, details?: { leaderId?: string | null; field?: string });
  readonly code: ErrorCodeValue;
  /** With ERR_NOT_LEADER: the leader to send the request to, when known. */
  readonly leaderId?: string | null;
  /** With ERR_INVALID_CONFIG / ERR_INVALID_OPERATION: the offending field. */
  readonly field?: string;
}

export interface RaftCoordinatorConfig {
  /** 1-64 characters of [A-Za-z0-9._-]. */
  nodeId: string;
  /** Address to bind and to advertise to peers. Default '127.0.0.1'. */
  host?: string;
  /** WebSocket port; 0 picks a free one (then `getState().port` tells). */
  port: number;
  /** LMDB directory, created if missing. Default `.consensus/<nodeId>` under the working directory. */
  dataDir?: string;
  /** Peers of another cluster are refused at the handshake. Default 'default'. */
  clusterId?: string;
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
  /** 'auto' (default): the first addPeer on a fresh node founds the cluster; true: found at initialize(); false: only join. */
  bootstrap?: 'auto' | boolean;
  /** How long replicateCommand waits for a commit. Default 5000 ms. */
  commandTimeoutMs?: number;
  /** How long addPeer waits for the new member to catch up. Default 30000 ms. */
  addPeerTimeoutMs?: number;
  /** How long an operation id is remembered for idempotence. Default 24 h. */
  operationTtlMs?: number;
  /** Largest command accepted, as JSON. Default 1 MiB. */
  maxCommandBytes?: number;
  /** LMDB map size (the most the data directory may hold). Default 1024 MiB. */
  mapSizeMb?: number;
  /** Largest frame on the wire (bounds snapshot size). Default 64 MiB. */
  maxFrameBytes?: number;
  /** Inbound connections accepted at once. Default 256. */
  maxConnections?: number;
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
}

export interface ReplicateOptions {
  /** Makes retries idempotent: the same id takes effect once. */
  operationId?: string;
  /** Overrides commandTimeoutMs for this call. */
  timeoutMs?: number;
  /** On a follower, send the command on to the leader instead of rejecting with ERR_NOT_LEADER. */
  forward?: boolean;
  /** Also record the command under `key` in the replicated registry (or delete the key). */
  registry?: { key: string; delete?: boolean };
}

export interface RaftCoordinatorEvents {
  initialized: [{ nodeId: string; port: number }];
  leader_elected: [{ leaderId: string; term: number }];
  leader_lost: [{ previousLeaderId: string; term: number }];
  term_updated: [{ term: number }];
  became_follower: [{ term: number; leaderId: string | null }];
  command_applied: [{ command: Command; entry: { index: number; term: number }; operationId?: string }];
  snapshot_installed: [{ lastIncludedIndex: number; term: number; appState: unknown }];
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

export declare class RaftCoordinator extends EventEmitter {
  constructor(config: RaftCoordinatorConfig);
  readonly config: Required<Omit<RaftCoordinatorConfig, 'bootstrap'>> & { bootstrap: 'auto' | 'always' | 'never' };
  readonly nodeId: string;
  readonly isLeader: boolean;
  readonly leaderId: string | null;
  readonly currentTerm: number;
  initialize(): Promise<void>;
  addPeer(nodeId: string, host: string, port: number): Promise<void>;
  removePeer(nodeId: string, options?: { forward?: boolean }): Promise<void>;
  transferLeadership(nodeId: string, timeoutMs?: number): Promise<void>;
  replicateCommand(command: Command, options?: ReplicateOptions): Promise<ReplicateResult>;
  /** Makes every snapshot carry the application's state, as returned by `provider`; null stops it. */
  setSnapshotProvider(provider: ((info: { lastIncludedIndex: number }) => unknown) | null): void;
  /** Replicated registry records whose key starts with `prefix`. */
  getRegistry(prefix?: string): Array<{ key: string; value: Command }>;
  /** Round-trip time in ms to a member; rejects with ERR_TIMEOUT when it does not answer in time. */
  ping(nodeId: string, timeoutMs?: number): Promise<number>;
  /** Snapshots now and purges the log, keeping `keep` entries before the snapshot. */
  compact(keep?: number, timeoutMs?: number): Promise<{ purgedUpTo: number | null }>;
  getState(): RaftState;
  stop(): Promise<void>;
  shutdown(): Promise<void>;

  on<E extends keyof RaftCoordinatorEvents>(event: E, listener: Listener<RaftCoordinatorEvents[E]>): this;
  once<E extends keyof RaftCoordinatorEvents>(event: E, listener: Listener<RaftCoordinatorEvents[E]>): this;
  off<E extends keyof RaftCoordinatorEvents>(event: E, listener: Listener<RaftCoordinatorEvents[E]>): this;
  emit<E extends keyof RaftCoordinatorEvents>(event: E, ...args: RaftCoordinatorEvents[E]): boolean;
}

export declare function createRaftCoordinator(config: RaftCoordinatorConfig): RaftCoordinator;
