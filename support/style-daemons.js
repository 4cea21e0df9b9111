'use strict';
// Three ways a daemon can hold what the cluster commits, as DESIGN's Delivery rules describe
// them, each recording what it holds so a test can check it after kill -9 and restarts:
// - 'cursor': relies on the node's own delivery cursor; it appends every delivered operation to
//   a file, with the `redelivered` mark, and may see an operation again only with that mark.
// - 'appliedIndex': stores the log index with each effect (one appended line) and tells the node
//   where it stands through `appliedIndex`, so it sees each operation exactly once.
// - 'memory': keeps its state in memory only; `appliedIndex: 0` with snapshot/restore rebuilds
//   it at every start from the latest local snapshot and the entries after it.
// - 'counting': the benchmark's daemon; it counts what it takes and keeps nothing per operation,
//   so that a node's memory over a long run is the package's, not the daemon's.
const { EventEmitter } = require('node:events');
const fs = require('node:fs');
const path = require('node:path');

/** Lines of `file` that were written whole; a torn last line (kill -9 mid-write) is cut off. */
function readWholeLines(file) {
  if (!fs.existsSync(file)) return [];
  const text = fs.readFileSync(file, 'utf8');
  const end = text.lastIndexOf('\n') + 1;
  if (end < text.length) fs.truncateSync(file, Buffer.byteLength(text.slice(0, end)));
  return text.slice(0, end).split('\n').filter(Boolean);
}

class StyleDaemon extends EventEmitter {
  constructor(style, { nodeId, dataDir }) {
    super();
    this.style = style;
    this.nodeId = nodeId;
    this.daemonId = `daemon-${nodeId}`;
    this.file = path.join(dataDir, `daemon-${style}.log`);
    fs.mkdirSync(dataDir, { recursive: true });
    /** [logIndex, operationId, redelivered] in the order this daemon took them. */
    this.held = [];
    this.appliedIndex = 0;
    if (style === 'cursor' || style === 'appliedIndex') {
      for (const line of readWholeLines(this.file)) {
        const [index, id, redelivered] = line.split(' ');
        this.held.push([Number(index), id, redelivered === '1']);
        this.appliedIndex = Math.max(this.appliedIndex, Number(index));
      }
    }
  }

  /** Options for the RaftCoordinator. */
  raftOptions() {
    if (this.style === 'appliedIndex') return { appliedIndex: () => this.appliedIndex };
    if (this.style === 'memory') return { appliedIndex: 0 };
    return {};
  }

  /** Options for the ConsensusManager. */
  consensusOptions() {
    if (this.style !== 'memory') return {};
    return {
      snapshot: () => ({ held: this.held.map(([index, id]) => [index, id]) }),
      restore: (state) => {
        this.held = state.held.map(([index, id]) => [index, id, false]);
      },
    };
  }

  attach(consensus) {
    consensus.on('consensus:operation_committed', ({ operation, logIndex, redelivered }) => {
      if (this.style === 'counting') {
        this.taken = (this.taken || 0) + 1;
        this.appliedIndex = logIndex;
        return;
      }
      const record = [logIndex, operation.id, redelivered];
      if (this.style !== 'memory') {
        // The index goes to disk in the same write as the effect: one line.
        fs.appendFileSync(this.file, `${logIndex} ${operation.id} ${redelivered ? 1 : 0}\n`);
      }
      this.held.push(record);
      this.appliedIndex = logIndex;
      this.emit('operation:success', { operationId: operation.id, logIndex });
    });
  }

  async start() {}

  async stop() {}
}

module.exports = { StyleDaemon };
