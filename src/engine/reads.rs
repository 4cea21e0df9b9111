//! Linearizable reads of the replicated registry, by read index (Raft thesis 6.4).
//!
//! The leader confirms with a quorum that it still leads and takes its commit index as the read
//! index; the reading node waits until its own state machine applied that far, then reads its
//! local replica. A follower asks the leader for the read index over the wire and then reads
//! locally, so the data never travels to the leader and back. A leader cut off from its quorum
//! cannot confirm and fails within the timeout instead of serving what may be stale.

use std::time::{Duration, Instant};

use openraft::errors::{LinearizableReadError, RaftError};
use openraft::{ReadPolicy, ServerState};

use super::rpc::{AppReply, AppRequest, FORWARD_REPLY_MARGIN};
use super::{ErrorCode, Node, NodeError};
use crate::storage::Changes;

/// What a linearizable read saw: the key's JSON (None when unset) as of at least `index`.
#[derive(Debug, Clone)]
pub struct LinearRead {
    pub index: u64,
    pub value: Option<String>,
}

impl Node {
    /// The JSON under `key` as this replica applied it (sequentially consistent).
    pub fn registry_get(&self, key: &str) -> Result<Option<String>, NodeError> {
        self.store.registry_get(key).map_err(NodeError::storage)
    }

    /// How many registry keys under `prefix` this replica holds.
    pub fn registry_count(&self, prefix: &str) -> Result<u64, NodeError> {
        self.store
            .registry_count(prefix)
            .map_err(NodeError::storage)
    }

    /// This replica's history of registry changes under `prefix` after index `after`.
    pub fn registry_changes(
        &self,
        prefix: &str,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Changes, NodeError> {
        self.store
            .registry_changes(prefix, after, up_to, limit)
            .map_err(NodeError::storage)
    }

    /// Leader only: confirms leadership with a quorum and returns the read index.
    pub async fn read_index(&self, timeout: Duration) -> Result<u64, NodeError> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.metrics();
            if m.current_leader.as_ref() != Some(&self.id) || m.state != ServerState::Leader {
                return Err(self.not_leader(&m));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let asked = self.raft.get_read_linearizer(ReadPolicy::ReadIndex);
            let q = match tokio::time::timeout(left, asked).await {
                Ok(Ok(linearizer)) => return Ok(linearizer.read_log_id().index()),
                Ok(Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(q)))) => q,
                Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => {
                    let leader = f.leader_id.map(|l| l.0);
                    return Err(NodeError::new(
                        ErrorCode::NotLeader,
                        format!(
                            "this node ({}) is no longer the leader{}",
                            self.id,
                            leader
                                .as_ref()
                                .map(|l| format!("; read from {l}"))
                                .unwrap_or_default()
                        ),
                    )
                    .with_leader(leader));
                }
                Ok(Err(RaftError::Fatal(f))) => {
                    return Err(NodeError::new(
                        ErrorCode::Shutdown,
                        format!("raft stopped: {f}"),
                    )
                    .with_cause(f))
                }
                Err(_) => {
                    return Err(NodeError::new(
                        ErrorCode::NoQuorum,
                        format!(
                            "this node ({}) could not confirm with a majority that it still leads within {} ms; a linearizable read is not served from a node that may be stale",
                            self.id,
                            timeout.as_millis()
                        ),
                    ))
                }
            };
            // openraft waits for the quorum's answers to its heartbeats only for its lease, and
            // a follower answers them only once its disk is done with what came before: a stalled
            // disk, not a lost quorum. While a majority's transports are there, confirmation is
            // asked for again (each attempt waits for fresh answers, so none reads stale); a
            // leader cut off from its quorum stops hearing it and fails.
            if Instant::now() >= deadline
                || !self.quorum_heard_within(&self.metrics(), self.check_quorum_window())
            {
                return Err(NodeError::new(
                    ErrorCode::NoQuorum,
                    format!("leadership not confirmed: {q}"),
                ));
            }
        }
    }

    /// Reads `key` from the registry once this replica reflects every write acknowledged before
    /// the call. From a follower the read index comes from the leader.
    pub async fn linearizable_get(
        &self,
        key: &str,
        timeout: Duration,
    ) -> Result<LinearRead, NodeError> {
        let deadline = Instant::now() + timeout;
        let m = self.metrics();
        let leads = m.current_leader.as_ref() == Some(&self.id) && m.state == ServerState::Leader;
        let index = if leads {
            self.read_index(timeout).await?
        } else {
            self.remote_read_index(deadline).await?
        };
        let caught_up = self
            .wait_for(deadline, |m| {
                m.last_applied.as_ref().map(|l| l.index()) >= Some(index)
            })
            .await;
        if !caught_up {
            return Err(NodeError::new(
                ErrorCode::Timeout,
                format!(
                    "this node ({}) did not apply up to the read index {index} within {} ms",
                    self.id,
                    timeout.as_millis()
                ),
            ));
        }
        let value = self.registry_get(key)?;
        Ok(LinearRead { index, value })
    }

    async fn remote_read_index(&self, deadline: Instant) -> Result<u64, NodeError> {
        // A read changes nothing, so asking again after leadership moved is always safe.
        let reply = self
            .call_leader(deadline, true, |left| AppRequest::ReadIndex {
                timeout_ms: left.saturating_sub(FORWARD_REPLY_MARGIN).as_millis() as u64,
            })
            .await?;
        match reply {
            AppReply::ReadIndex(result) => result.map_err(NodeError::from),
            other => Err(NodeError::new(
                ErrorCode::Timeout,
                format!("the leader gave no read index: {other:?}"),
            )),
        }
    }
}
