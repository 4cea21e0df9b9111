'use strict';

/** Health of a cluster member as the ClusterManager's checks see it. */
const NodeHealth = Object.freeze({
  HEALTHY: 'healthy',
  DEGRADED: 'degraded',
  UNHEALTHY: 'unhealthy',
  UNKNOWN: 'unknown',
});

/** Whether this node is in contact with its cluster (leader or quorum). */
const PartitionState = Object.freeze({
  HEALTHY: 'healthy',
  PARTITIONED: 'partitioned',
  RECOVERING: 'recovering',
});

/** Lifecycle of an operation submitted through ConsensusManager. */
const OperationState = Object.freeze({
  PENDING: 'pending',
  REPLICATED: 'replicated',
  COMMITTED: 'committed',
  FAILED: 'failed',
});

/** Command types of the replicated log that belong to this package, not to the application. */
const CommandType = Object.freeze({
  OPERATION: '__consensus:operation',
  NODE_UPSERT: '__cluster:node_upsert',
  NODE_REMOVE: '__cluster:node_remove',
});

module.exports = { NodeHealth, PartitionState, OperationState, CommandType };
