'use strict';
// @unrdf/consensus: Raft consensus for Node.js daemons.
const { RaftCoordinator, createRaftCoordinator } = require('./lib/raft-coordinator');
const { ConsensusError, ErrorCode } = require('./lib/errors');

module.exports = {
  RaftCoordinator,
  createRaftCoordinator,
  ConsensusError,
  ErrorCode,
};
