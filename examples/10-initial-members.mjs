// Deploying without a bootstrap node: every node is started with the same initialMembers (etcd's
// initial-cluster), in any order, and they found one cluster together. This process plays node-1,
// bound to every interface and advertising its loopback address to the others; node-2 and node-3
// run as two more processes, started first.
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { createRaftCoordinator } from '@unrdf/consensus';

const require = createRequire(import.meta.url);
const { NodeProcess, freePort } = require('../support/cluster.js');

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'unrdf-initial-members-'));
const initialMembers = [];
for (const nodeId of ['node-1', 'node-2', 'node-3']) {
  initialMembers.push({ nodeId, host: '127.0.0.1', port: await freePort() });
}
const portOf = (nodeId) => initialMembers.find((m) => m.nodeId === nodeId).port;

// The same list everywhere; each node finds itself in it.
const others = ['node-3', 'node-2'].map(
  (nodeId) => new NodeProcess({ nodeId, port: portOf(nodeId), dataDir: path.join(root, nodeId), config: { initialMembers } }),
);
for (const node of others) {
  await node.start();
  console.log(`${node.nodeId} started`);
}

const raft = createRaftCoordinator({
  nodeId: 'node-1',
  host: '0.0.0.0', // bind every interface...
  advertiseHost: '127.0.0.1', // ...and tell peers where to dial
  port: portOf('node-1'),
  dataDir: path.join(root, 'node-1'),
  initialMembers,
});
await raft.initialize();
console.log('node-1 started');

if (raft.leaderId === null) await once(raft, 'leader_elected');
const state = raft.getState();
console.log(`Leader: ${state.leaderId} at term ${state.term}`);
console.log(`Voters: ${[...state.membership.voters].sort().join(', ')}`);
console.log(`node-1 is reached at ${state.membership.nodes['node-1'].host}:${state.membership.nodes['node-1'].port === portOf('node-1') ? 'its listed port' : 'another port'}`);

// Any node can write; a follower forwards to the leader.
const { logIndex } = await raft.replicateCommand({ type: 'hello', from: 'node-1' }, { forward: true });
const applied = await Promise.all(
  others.map(async (node) => {
    for (;;) {
      const s = await node.call('state');
      if (s.lastApplied >= logIndex) return node.nodeId;
      await new Promise((r) => setTimeout(r, 20));
    }
  }),
);
console.log(`committed at index ${logIndex}; applied on node-1, ${applied.sort().join(', ')}`);

await raft.stop();
await Promise.all(others.map((n) => n.stop()));
fs.rmSync(root, { recursive: true, force: true });
