import cjs from './index.js';

export const {
  RaftCoordinator,
  createRaftCoordinator,
  ClusterManager,
  createClusterManager,
  ConsensusManager,
  createConsensusManager,
  DistributedStateMachine,
  createDistributedStateMachine,
  StateOperation,
  NodeHealth,
  PartitionState,
  OperationState,
  ConsensusError,
  ErrorCode,
  registerMetrics,
  metricsText,
} = cjs;
export default cjs;
