'use strict';
// A small operation executor in the role of the guide's Daemon (the user's own class): an
// EventEmitter with a nodeId that executes each committed operation once, using the guide's
// idempotent OperationHandler, and reports operation:success / operation:failure.
const { EventEmitter } = require('node:events');
const fs = require('node:fs');

class OperationHandler {
  constructor(daemon, consensus) {
    this.daemon = daemon;
    this.consensus = consensus;
    this.executedOps = new Set(); // Persistent store in production
  }

  async executeOperation(opId, handler) {
    // Prevent duplicate execution
    if (this.executedOps.has(opId)) {
      return { skipped: true, opId };
    }

    try {
      const result = await handler();
      this.executedOps.add(opId);
      return { success: true, opId, result };
    } catch (error) {
      return { error: error.message, opId };
    }
  }
}

class Daemon extends EventEmitter {
  /**
   * @param {{daemonId: string, name: string, nodeId: string, clusterId: string, stateFile?: string}} options
   *   `stateFile` is where the daemon keeps what it executed: one line per operation, its log
   *   index and id, appended in the same write that records the effect. Its last index is the
   *   daemon's `appliedIndex`: pass `appliedIndex: () => daemon.appliedIndex` to
   *   createRaftCoordinator and, after a crash, delivery resumes right after what the daemon
   *   holds, so it executes each operation exactly once.
   */
  constructor({ daemonId, name, nodeId, clusterId, stateFile }) {
    super();
    this.stateFile = stateFile ?? null;
    this.daemonId = daemonId;
    this.name = name;
    this.nodeId = nodeId;
    this.clusterId = clusterId;
    this.isRunning = false;
    this.activeCount = 0;
    /** Operation ids in the order this daemon executed them. */
    this.executed = [];
    /** The log index of the last operation executed: everything up to it is in `stateFile`. */
    this.appliedIndex = 0;
    this.handler = null;
    if (this.stateFile && fs.existsSync(this.stateFile)) {
      const text = fs.readFileSync(this.stateFile, 'utf8');
      // A line cut short by a crash was never executed: drop it.
      const whole = text.slice(0, text.lastIndexOf('\n') + 1);
      if (whole.length < text.length) fs.writeFileSync(this.stateFile, whole);
      for (const line of whole.split('\n').filter(Boolean)) {
        const [index, id] = line.split(' ');
        this.executed.push(id);
        this.appliedIndex = Number(index);
      }
    }
  }

  /** The daemon's state for a consensus snapshot: what it has executed. */
  async snapshot({ lastIncludedIndex } = {}) {
    await this._chain;
    return { executed: this.executed, appliedIndex: lastIncludedIndex ?? this.appliedIndex };
  }

  /** Takes over the state of a snapshot (this node caught up past operations it never saw). */
  restore(state, { lastIncludedIndex } = {}) {
    this.executed = [...state.executed];
    this.appliedIndex = lastIncludedIndex ?? state.appliedIndex ?? this.appliedIndex;
    this.handler.executedOps = new Set(this.executed);
    if (this.stateFile) {
      // Every line carries the snapshot's index: the whole file is as of that point.
      fs.writeFileSync(this.stateFile, this.executed.map((id) => `${this.appliedIndex} ${id}\n`).join(''));
    }
  }

  async start() {
    this.isRunning = true;
  }

  async stop() {
    this.isRunning = false;
  }

  getHealth() {
    return { nodeId: this.nodeId, isRunning: this.isRunning, activeOperations: this.activeCount };
  }

  /** Executes every operation `consensus` commits, once, in log order. */
  attach(consensus) {
    this.handler = new OperationHandler(this, consensus);
    this.handler.executedOps = new Set(this.executed);
    this._chain = Promise.resolve();
    consensus.on('consensus:operation_committed', ({ operation, logIndex }) => {
      // Serialize: operations run in log order even when one of them is asynchronous.
      this._chain = this._chain.then(() => this._execute(operation, logIndex));
    });
  }

  async _execute(operation, logIndex) {
    this.activeCount++;
    try {
      const outcome = await this.handler.executeOperation(operation.id, async () => {
        this.executed.push(operation.id);
        // The effect and its log index in one write: after a crash both are there, or neither.
        if (this.stateFile) fs.appendFileSync(this.stateFile, `${logIndex} ${operation.id}\n`);
        this.appliedIndex = logIndex;
        return { logIndex, type: operation.type };
      });
      if (outcome.success) this.emit('operation:success', { operationId: operation.id, logIndex });
      else if (outcome.error) this.emit('operation:failure', { operationId: operation.id, error: outcome.error });
    } finally {
      this.activeCount--;
    }
  }
}

module.exports = { Daemon, OperationHandler };
