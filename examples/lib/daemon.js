'use strict';
// A small operation executor in the role of the guide's Daemon (the user's own class): an
// EventEmitter with a nodeId that executes each committed operation once, using the guide's
// idempotent OperationHandler, and reports operation:success / operation:failure.
const { EventEmitter } = require('node:events');

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
  constructor({ daemonId, name, nodeId, clusterId }) {
    super();
    this.daemonId = daemonId;
    this.name = name;
    this.nodeId = nodeId;
    this.clusterId = clusterId;
    this.isRunning = false;
    this.activeCount = 0;
    /** Operation ids in the order this daemon executed them. */
    this.executed = [];
    this.handler = null;
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
    let chain = Promise.resolve();
    consensus.on('consensus:operation_committed', ({ operation, logIndex }) => {
      // Serialize: operations run in log order even when one of them is asynchronous.
      chain = chain.then(() => this._execute(operation, logIndex));
    });
  }

  async _execute(operation, logIndex) {
    this.activeCount++;
    try {
      const outcome = await this.handler.executeOperation(operation.id, async () => {
        this.executed.push(operation.id);
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
