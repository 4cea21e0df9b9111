// Release check on each platform's own machine: the binary next to lib/native.js loads through it,
// and a one-node cluster commits an operation to its LMDB log.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { createRaftCoordinator } = require('..');

async function main() {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'consensus-smoke-'));
  const raft = createRaftCoordinator({ nodeId: 'smoke', port: 0, dataDir, bootstrap: true });
  await raft.initialize();
  const deadline = Date.now() + 30000;
  while (!raft.isLeader) {
    if (Date.now() > deadline) throw new Error('no leader within 30 s');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const result = await raft.replicateCommand({ type: 'smoke' });
  await raft.stop();
  fs.rmSync(dataDir, { recursive: true, force: true });
  if (!result.committed) throw new Error(`not committed: ${JSON.stringify(result)}`);
  console.log(`${process.platform}-${process.arch}: committed at log index ${result.logIndex}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
