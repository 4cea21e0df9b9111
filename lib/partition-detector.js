'use strict';
const { PartitionState } = require('./constants');

/**
 * Whether this node is cut off from its cluster, from what its coordinator reports (last contact
 * with the leader, or with a majority when it leads): healthy -> partitioned -> recovering ->
 * healthy. `check()` runs on the owner's timer; each transition calls `emit(name, payload)` with
 * `partition:detected`, `partition:recovered` or `partition:healthy`.
 */
class PartitionDetector {
  /**
   * @param {import('./raft-coordinator').RaftCoordinator} raft
   * @param {{partitionDetectionMs: number, recoveryRetryMs: number}} config
   * @param {(name: string, payload: object) => void} emit
   */
  constructor(raft, { partitionDetectionMs, recoveryRetryMs }, emit) {
    this.raft = raft;
    this.detectionMs = partitionDetectionMs;
    this.retryMs = recoveryRetryMs;
    this.emit = emit;
    this.state = PartitionState.HEALTHY;
    /** When this node last heard from the leader (or a majority), ms since epoch. */
    this.lastHeartbeat = 0;
    /** Partitions detected so far. */
    this.detected = 0;
    this._lostSince = undefined;
    this._lastRecoveryProbe = 0;
  }

  /** How often `check()` should run: a quarter of the detection time, within 10-250 ms. */
  get tickMs() {
    return Math.max(10, Math.min(250, Math.floor(this.detectionMs / 4)));
  }

  check() {
    const s = this.raft.getState();
    if (s.membership.voters.length === 0) return; // not in a cluster yet
    const now = Date.now();
    if (s.lastContact > 0) this.lastHeartbeat = s.lastContact;
    const age = s.lastContact > 0 ? now - s.lastContact : Infinity;
    const alone = s.membership.voters.length === 1 && s.membership.voters[0] === s.nodeId;
    const lost = !alone && (s.isLeader ? age > this.detectionMs : !s.leaderId || age > this.detectionMs);
    if (this.state === PartitionState.HEALTHY && lost) {
      if (this._lostSince === undefined) this._lostSince = now;
      // A fresh follower that never heard a leader waits out one detection period first.
      if (s.lastContact === 0 && now - this._lostSince < this.detectionMs) return;
      this._partitioned();
    } else if (this.state === PartitionState.PARTITIONED && !lost) {
      this.state = PartitionState.RECOVERING;
      this.emit('partition:recovered', { newLeader: s.leaderId });
    } else if (this.state === PartitionState.RECOVERING) {
      if (lost) {
        this._partitioned();
      } else if (s.lastApplied >= s.commitIndex) {
        this.state = PartitionState.HEALTHY;
        this.emit('partition:healthy', { leaderId: s.leaderId });
      }
    }
    if (!lost) this._lostSince = undefined;
    if (this.state === PartitionState.PARTITIONED) this._probeForRecovery(s, now);
  }

  _partitioned() {
    this.state = PartitionState.PARTITIONED;
    this.detected++;
    this.emit('partition:detected', { nodeId: this.raft.nodeId, health: 'unhealthy' });
  }

  /**
   * While partitioned, every recoveryRetryMs: a round trip to each member, which also makes the
   * transport redial at once instead of after its backoff, so the node rejoins soon after the
   * network heals.
   */
  _probeForRecovery(s, now) {
    if (now - this._lastRecoveryProbe < this.retryMs) return;
    this._lastRecoveryProbe = now;
    const timeout = Math.max(1, Math.min(this.retryMs, 2000));
    for (const id of s.membership.voters) {
      if (id !== s.nodeId) this.raft.ping(id, timeout).catch(() => {});
    }
  }
}

module.exports = { PartitionDetector };
