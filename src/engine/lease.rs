//! The leader lease (etcd's CheckQuorum): whether a leader may still act as one.

use std::future::Future;
use std::time::{Duration, Instant};

use openraft::errors::{ClientWriteError, RaftError};
use openraft::Instant as _;
use openraft::{RaftMetrics, ServerState};

use super::{ErrorCode, Node, NodeError};
use crate::types::TypeConfig;

impl Node {
    /// etcd's CheckQuorum: a leader that no quorum acknowledged within `electionTimeoutMax`
    /// does not claim leadership: a majority elsewhere may have elected another leader
    /// meanwhile. A single voter is its own quorum.
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
        let lease = self.check_quorum_window();
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
        if since_ack < lease {
            return false;
        }
        // openraft counts a follower's reply only once the follower's fsync of everything sent
        // before it is done, and a heartbeat reply later than the heartbeat interval not at all:
        // a busy follower disk would make a busy leader refuse writes. A majority whose
        // transports answered within the lease is there and reads this leader's frames in
        // order; it has not elected anyone else, so the leader keeps its role and its writes
        // wait for commit instead of failing.
        !self.quorum_heard_within(m, lease)
    }

    /// Whether every voter configuration has a majority that sent this node a frame within
    /// `window` (this node counting for itself).
    pub(super) fn quorum_heard_within(
        &self,
        m: &RaftMetrics<TypeConfig>,
        window: Duration,
    ) -> bool {
        m.membership_config
            .membership()
            .get_joint_config()
            .iter()
            .all(|voters| {
                let heard = voters
                    .iter()
                    .filter(|v| **v == self.id || self.pool.heard_within(v, window))
                    .count();
                heard * 2 > voters.len()
            })
    }

    /// CheckQuorum's window: `electionTimeoutMax`.
    pub(super) fn check_quorum_window(&self) -> Duration {
        Duration::from_millis(self.config.election_timeout_max_ms)
    }

    /// openraft's own leader lease, within which a quorum must have acknowledged for it to
    /// accept a write (shorter than CheckQuorum's; see `RaftElectionTimeouts`).
    fn raft_lease(&self) -> Duration {
        Duration::from_millis(self.config.raft_election_timeouts().max_ms)
    }

    /// Waits until openraft's own lease holds again (or this node stops leading), up to
    /// `deadline`. The metrics watch does not announce every acknowledgement, so the wait looks
    /// again at every heartbeat interval.
    pub(super) async fn wait_for_raft_lease(&self, deadline: Instant) -> bool {
        let lease = self.raft_lease();
        let step = Duration::from_millis(self.config.heartbeat_interval_ms.max(1));
        let fresh = |m: &RaftMetrics<TypeConfig>| {
            m.state != ServerState::Leader
                || m.last_quorum_acked
                    .as_ref()
                    .is_some_and(|at| at.elapsed() < lease)
        };
        loop {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            if self.wait_for((now + step).min(deadline), fresh).await {
                return true;
            }
        }
    }

    /// Runs a proposal (a write or a membership change) until openraft takes it. openraft
    /// refuses every proposal, before appending anything, while no quorum acknowledged this
    /// leader within its lease: moments after an election, before the voters' first answers
    /// arrive, and while a follower's disk stalls its acknowledgements. When a majority's
    /// transports are there, the proposal waits for the lease and goes again, up to `deadline`;
    /// then the last refusal is returned.
    pub(super) async fn propose_when_leased<T, F, Fut>(
        &self,
        deadline: Instant,
        mut propose: F,
    ) -> Result<T, RaftError<TypeConfig, ClientWriteError<TypeConfig>>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RaftError<TypeConfig, ClientWriteError<TypeConfig>>>>,
    {
        loop {
            let outcome = propose().await;
            match &outcome {
                Err(e) if self.lease_lapsed_among_live_voters(e) => {
                    if !self.wait_for_raft_lease(deadline).await {
                        return outcome;
                    }
                }
                _ => return outcome,
            }
        }
    }

    /// Whether openraft refused a proposal only for its lease, at a leader that a majority's
    /// transports answered within CheckQuorum's window: a slow follower disk or a new term, not
    /// a partition.
    pub(super) fn lease_lapsed_among_live_voters(
        &self,
        e: &RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
    ) -> bool {
        let RaftError::APIError(ClientWriteError::ForwardToLeader(f)) = e else {
            return false;
        };
        let m = self.metrics();
        f.leader_id.is_none()
            && m.state == ServerState::Leader
            && self.quorum_heard_within(&m, self.check_quorum_window())
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
        let lease = self.check_quorum_window();
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
