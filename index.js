'use strict';
// @unrdf/consensus: Raft consensus for Node.js daemons.
const { RaftCoordinator, createRaftCoordinator } = require('./lib/raft-coordinator');
const { ClusterManager, createClusterManager } = require('./lib/cluster-manager');
const { ConsensusManager, createConsensusManager } = require('./lib/consensus-manager');
const {
  DistributedStateMachine,
  createDistributedStateMachine,
  StateOperation,
} = require('./lib/distributed-state-machine');
const { NodeHealth, PartitionState, OperationState } = require('./lib/constants');
const { ConsensusError, ErrorCode } = require('./lib/errors');
const { registerMetrics, metricsText } = require('./lib/metrics');

module.exports = {
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
};
