//! The view of a node that `getState()` reads.

use std::sync::atomic::Ordering;

use openraft::Instant as _;
use openraft::ServerState;

use super::{Node, NodeError};
use crate::now_ms;
use crate::types::PeerAddr;

/// A snapshot of what a node knows, for `getState()`.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub node_id: String,
    pub role: &'static str,
    pub leader_id: Option<String>,
    pub term: u64,
    pub port: u16,
    pub last_log_index: Option<u64>,
    pub commit_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub log_length: u64,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    /// A membership change is in progress (joint config).
    pub joint: bool,
    pub nodes: Vec<(String, PeerAddr)>,
    pub connected_peers: Vec<String>,
    /// Leader only: per follower, the highest index known to be replicated there.
    pub replication: Vec<(String, Option<u64>)>,
    /// Follower: ms since epoch of the last entries or heartbeat accepted from a leader.
    /// Leader: ms since epoch of the last acknowledgement by a quorum. 0 when never.
    pub last_contact_ms: u64,
    /// Why Raft stopped on its own (a storage failure), while the node was not stopped.
    pub failure: Option<String>,
}

impl Node {
    pub fn state(&self) -> NodeState {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: Vec<String> = membership.voter_ids().map(|v| v.0).collect();
        let learners: Vec<String> = membership.learner_ids().map(|v| v.0).collect();
        let nodes = membership
            .nodes()
            .map(|(id, addr)| (id.0.clone(), addr.clone()))
            .collect();
        let quorum_lost = self.quorum_lost(&m);
        let role = match m.state {
            // Documented: a leader without a quorum reports itself a follower with no leader,
            // as etcd's leader steps down under CheckQuorum.
            ServerState::Leader if quorum_lost => "follower",
            ServerState::Leader => "leader",
            ServerState::Candidate => "candidate",
            ServerState::Follower => "follower",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let purged = m.purged.as_ref().map(|l| l.index());
        let first = purged.map(|p| p + 1).unwrap_or(0);
        let log_length = m
            .last_log_index
            .map(|l| (l + 1).saturating_sub(first))
            .unwrap_or(0);
        let last_contact_ms = if m.state == ServerState::Leader {
            m.last_quorum_acked
                .as_ref()
                .map(|at| now_ms().saturating_sub(at.elapsed().as_millis() as u64))
                .unwrap_or(0)
        } else {
            self.leader_contact_ms.load(Ordering::Relaxed)
        };
        NodeState {
            failure: NodeError::core_failed(&m).map(|e| e.message),
            joint: membership.get_joint_config().len() > 1,
            last_contact_ms,
            node_id: self.id.0.clone(),
            role,
            leader_id: m
                .current_leader
                .as_ref()
                .filter(|_| !quorum_lost)
                .map(|l| l.0.clone()),
            term: m.current_term,
            port: self.addr.port,
            last_log_index: m.last_log_index,
            commit_index: m
                .cluster_committed
                .as_ref()
                .or(m.local_committed.as_ref())
                .map(|l| l.index()),
            // The state machine's own mark moves before its events are queued, so a caller that
            // saw an entry's event also sees it applied here; openraft's metrics trail a little.
            last_applied: m
                .last_applied
                .as_ref()
                .map(|l| l.index())
                .max(self.delivery.applied()),
            snapshot_index: m.snapshot.as_ref().map(|l| l.index()),
            purged_index: purged,
            log_length,
            voters,
            learners,
            nodes,
            connected_peers: self.pool.connected_peers(),
            replication: m
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .map(|(id, l)| (id.0.clone(), l.as_ref().map(|l| l.index())))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}
