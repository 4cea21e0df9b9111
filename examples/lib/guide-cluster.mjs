// Runs the guide's node-2 and node-3 as separate processes on this machine, each with its own
// daemon, RaftCoordinator, ClusterManager and ConsensusManager, data directory and port, so an
// example can play node-1 in its own process exactly as the guide's snippets do.
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { NodeProcess, freePort } = require('../../support/cluster.js');

export async function startGuideCluster({ consensus = {}, cluster = {} } = {}) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'unrdf-guide-'));
  const ports = { 'node-1': await freePort(), 'node-2': await freePort(), 'node-3': await freePort() };
  const peers = {};
  for (const nodeId of ['node-2', 'node-3']) {
    peers[nodeId] = new NodeProcess({
      nodeId,
      port: ports[nodeId],
      dataDir: path.join(root, nodeId),
      guide: { consensus, cluster },
    });
  }
  await Promise.all(Object.values(peers).map((p) => p.start()));
  return {
    root,
    ports,
    peers,
    dataDir: (nodeId) => path.join(root, nodeId),
    async stop() {
      await Promise.all(Object.values(peers).map((p) => p.stop()));
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

/** Resolves once `raft` sees `count` voters (the guide's addPeer calls are not awaited). */
export async function votersJoined(raft, count) {
  const done = () => {
    const s = raft.getState();
    return s.membership.voters.length >= count && !s.membership.changing && s.leaderId;
  };
  while (!done()) {
    const abort = new AbortController();
    await Promise.race([once(raft, 'peer_added', { signal: abort.signal }).catch(() => {}), new Promise((r) => setTimeout(r, 20))]);
    abort.abort();
  }
}
