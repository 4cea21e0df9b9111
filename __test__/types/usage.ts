// Compiled with `tsc --noEmit` by `npm test`: the declarations must describe the API as used.
import { once } from 'node:events';
import {
  ConsensusError,
  ErrorCode,
  RaftCoordinator,
  createRaftCoordinator,
  type RaftState,
  type ReplicateResult,
} from '@unrdf/consensus';

async function main(): Promise<void> {
  const raft: RaftCoordinator = createRaftCoordinator({ nodeId: 'node-1', port: 8080, host: '127.0.0.1' });
  raft.on('leader_elected', ({ leaderId, term }) => {
    const id: string = leaderId;
    const t: number = term;
    void id;
    void t;
  });
  raft.on('command_applied', ({ command, entry }) => {
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
  const state: RaftState = raft.getState();
  const voters: string[] = state.membership.voters;
  void voters;
  const leader: boolean = raft.isLeader;
  const term: number = raft.currentTerm;
  void leader;
  void term;
  await raft.stop();
}

void main;
