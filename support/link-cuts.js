'use strict';
// Partitions without network namespaces: each node process is told which peers it must not
// dial and which it must not accept (the native fault hook, enabled in the node processes by
// UNRDF_CONSENSUS_FAULT_HOOKS=1). Same interface as TestNetwork in netns.js, with hosts
// numbered from 1 in the order of `nodes`. Weaker than real partitions: connections are
// refused or dropped at once instead of going silent, and cuts do not survive a restart.

const { crossGroupPairs } = require('./netns');

const FAULT_HOOKS_ENV = 'UNRDF_CONSENSUS_FAULT_HOOKS';

class LinkCutNetwork {
  /** @param {Array<import('./cluster').NodeProcess>} nodes */
  constructor(nodes) {
    this.nodes = nodes;
    this.cuts = nodes.map(() => ({ outbound: new Set(), inbound: new Set() }));
  }

  async push(host) {
    const node = this.nodes[host - 1];
    const { outbound, inbound } = this.cuts[host - 1];
    if (!node.running) return;
    await node.call('cutLinks', { outbound: [...outbound], inbound: [...inbound] }, 5000);
  }

  /**
   * Host `from` no longer reaches host `to`: `from` stops dialing it and `to` stops accepting
   * `from`. Connections `to` opens to `from` still work, so the fault is one-way.
   */
  async block(from, to) {
    this.cuts[from - 1].outbound.add(this.nodes[to - 1].nodeId);
    this.cuts[to - 1].inbound.add(this.nodes[from - 1].nodeId);
    await Promise.all([this.push(from), this.push(to)]);
  }

  async unblock(from, to) {
    this.cuts[from - 1].outbound.delete(this.nodes[to - 1].nodeId);
    this.cuts[to - 1].inbound.delete(this.nodes[from - 1].nodeId);
    await Promise.all([this.push(from), this.push(to)]);
  }

  async isolate(i) {
    for (let j = 1; j <= this.nodes.length; j++) {
      if (j === i) continue;
      await this.block(i, j);
      await this.block(j, i);
    }
  }

  async heal(i) {
    for (let j = 1; j <= this.nodes.length; j++) {
      if (j === i) continue;
      await this.unblock(i, j);
      await this.unblock(j, i);
    }
  }

  async split(groups) {
    const blocked = crossGroupPairs(groups);
    for (const [from, to] of blocked) await this.block(from, to);
    return blocked;
  }

  teardown() {}
}

module.exports = { LinkCutNetwork, FAULT_HOOKS_ENV };
