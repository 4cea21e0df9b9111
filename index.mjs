import cjs from './index.js';

export const { RaftCoordinator, createRaftCoordinator, ConsensusError, ErrorCode } = cjs;
export default cjs;
