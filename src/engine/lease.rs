//! The leader lease (etcd's CheckQuorum): whether a leader may still act as one.

use std::time::{Duration, Instant};

use openraft::Instant as _;
use openraft::{RaftMetrics, ServerState};

use super::{ErrorCode, Node, NodeError};
use crate::types::TypeConfig;

impl Node {
    /// etcd's CheckQuorum: a leader that no quorum acknowledged within the leader lease
    /// (`electionTimeoutMax`, as openraft's own lease) does not claim leadership: a majority
    /// elsewhere may have elected another leader meanwhile. A single voter is its own quorum.
    pub(super) fn quorum_lost(&self, m: &RaftMetrics<TypeConfig>) -> bool {
        if m.state != ServerState::Leader {
            return false;
        }
        let only_me = m
            .membership_config
            .membership()
            .get_joint_config()
            .iter()
            .all(|voters| voters.len() == 1 && voters.contains(&self.id));
        if only_me {
            return false;
        }
        let lease = Duration::from_millis(self.config.election_timeout_max_ms);
        // The votes that elected it count as an acknowledgement: an acknowledgement from an
        // earlier term of this node's (openraft keeps the last one across terms) must not make
        // a leader that was just elected again look cut off. A term the watcher has not seen
        // yet has just begun.
        let since_elected = match *crate::lock(&self.leading_since) {
            Some((term, since)) if term == m.current_term => since.elapsed(),
            _ => Duration::ZERO,
        };
        let since_ack = match &m.last_quorum_acked {
            Some(at) => at.elapsed().min(since_elected),
            None => since_elected,
        };
        since_ack >= lease
    }

    /// A leader elected moments ago whose quorum has not answered in this term yet (on a busy
    /// machine that can take longer than the lease) waits for that first answer, up to
    /// `timeout`. One whose quorum answered in this term and then went silent does not wait: its
    /// writes fail at once.
    pub(super) async fn fresh_lease(&self, timeout: Duration) -> bool {
        let m = self.metrics();
        let term = m.current_term;
        let since_elected = match *crate::lock(&self.leading_since) {
            Some((t, since)) if t == term => since.elapsed(),
            _ => Duration::ZERO,
        };
        let acked_this_term = m
            .last_quorum_acked
            .as_ref()
            .is_some_and(|at| at.elapsed() < since_elected);
        if acked_this_term {
            return false;
        }
        let lease = Duration::from_millis(self.config.election_timeout_max_ms);
        let deadline = Instant::now() + timeout.min(lease * 2);
        self.wait_for(deadline, |m| {
            m.current_term == term && m.state == ServerState::Leader && !self.quorum_lost(m)
        })
        .await
    }

    pub(super) fn no_quorum_error(&self) -> NodeError {
        NodeError::new(
            ErrorCode::NoQuorum,
            format!(
                "this node ({}) leads but has not heard from a majority of the voters for {} ms; nothing was written. Retry once the cluster heals (another node may lead by then)",
                self.id, self.config.election_timeout_max_ms
            ),
        )
    }
}
