//! Writes: replicating a command on the leader, and sending it (or another request) on to the
//! leader from a follower.

use std::time::{Duration, Instant};

use openraft::errors::{ClientWriteError, RaftError};
use openraft::{RaftMetrics, ServerState};

use super::rpc::{AppReply, AppRequest, FORWARD_REPLY_MARGIN};
use super::{ErrorCode, Node, NodeError, Written};
use crate::now_ms;
use crate::types::{Applied, Command, NodeName, RegistryWrite, TypeConfig};

impl Node {
    pub(super) fn not_leader(&self, m: &RaftMetrics<TypeConfig>) -> NodeError {
        let leader = m.current_leader.as_ref().map(|l| l.0.clone());
        let hint = match &leader {
            Some(l) => format!("this node ({}) is not the leader; send it to {l}", self.id),
            None => format!(
                "this node ({}) is not the leader and no leader is known yet; retry shortly",
                self.id
            ),
        };
        NodeError::new(ErrorCode::NotLeader, hint).with_leader(leader)
    }

    /// Replicates a command; resolves once a majority holds it durably and it is applied on the
    /// leader. With `forward`, a follower sends it on to the leader it knows.
    pub async fn replicate(
        &self,
        json: String,
        op_id: Option<String>,
        registry: Option<RegistryWrite>,
        timeout: Duration,
        forward: bool,
    ) -> Result<Written, NodeError> {
        let m = self.metrics();
        if m.current_leader.as_ref() != Some(&self.id) || m.state != ServerState::Leader {
            if !forward {
                return Err(self.not_leader(&m));
            }
            let applied = self.forward(json, op_id, registry, timeout).await?;
            return Ok(Written {
                applied,
                here: false,
            });
        }
        let here = |applied| Written {
            applied,
            here: true,
        };
        if self.quorum_lost(&m) && !self.fresh_lease(timeout).await {
            return Err(self.no_quorum_error());
        }
        if let Some(id) = &op_id {
            if let Some((index, term)) = self.operation(id)? {
                return Ok(here(Applied {
                    index,
                    term,
                    duplicate: true,
                    condition_failed: false,
                }));
            }
        }
        let command = Command {
            json,
            op_id,
            proposed_at_ms: now_ms(),
            registry,
        };
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.raft.client_write(command.clone())).await {
                Ok(Ok(resp)) => return Ok(here(resp.data)),
                Ok(Err(e)) if self.lease_lapsed_among_live_voters(&e) => {
                    // openraft refused before appending anything, so proposing again cannot
                    // write the command twice.
                    if !self.wait_for_raft_lease(deadline).await {
                        return Err(self.no_progress_error(timeout));
                    }
                }
                Ok(Err(e)) => return Err(self.write_error(e)),
                Err(_) => return Err(self.no_progress_error(timeout)),
            }
        }
    }

    /// openraft refuses writes once no quorum acknowledged an append or heartbeat sent within
    /// its lease, and a follower acknowledges only after its fsync of everything sent before:
    /// a slow follower disk, not a partition. When a majority's transports answered within the
    /// lease, the write waits for the lease instead of failing.
    fn lease_lapsed_among_live_voters(
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

    async fn forward(
        &self,
        json: String,
        op_id: Option<String>,
        registry: Option<RegistryWrite>,
        timeout: Duration,
    ) -> Result<Applied, NodeError> {
        // Sending it again after leadership moved is safe only when the operation id lets the
        // new leader recognise a write the old one may already have committed.
        let retry = op_id.is_some();
        let deadline = Instant::now() + timeout + FORWARD_REPLY_MARGIN;
        let reply = self
            .call_leader(deadline, retry, |left| AppRequest::Forward {
                json: json.clone(),
                op_id: op_id.clone(),
                registry: registry.clone(),
                timeout_ms: left.saturating_sub(FORWARD_REPLY_MARGIN).as_millis() as u64,
            })
            .await?;
        match reply {
            AppReply::Forwarded(result) => result.map_err(NodeError::from),
            other => Err(NodeError::new(
                ErrorCode::Timeout,
                format!("the leader gave no answer to a forwarded write: {other:?}"),
            )),
        }
    }

    pub(super) fn no_progress_error(&self, timeout: Duration) -> NodeError {
        let m = self.metrics();
        let voters: Vec<NodeName> = m.membership_config.membership().voter_ids().collect();
        let connected = self.pool.connected_peers();
        let reachable = voters
            .iter()
            .filter(|v| **v == self.id || connected.contains(&v.0))
            .count();
        let ms = timeout.as_millis();
        if reachable * 2 <= voters.len() {
            NodeError::new(
                ErrorCode::NoQuorum,
                format!(
                    "no majority reachable: {reachable} of {} voters; the command was not committed within {ms} ms and may still commit if the cluster heals",
                    voters.len()
                ),
            )
        } else {
            NodeError::new(
                ErrorCode::Timeout,
                format!("the command was not committed within {ms} ms; it may still commit"),
            )
        }
    }

    pub(super) fn write_error(
        &self,
        e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>,
    ) -> NodeError {
        match e {
            // openraft's leader lease ran out between our check and the proposal.
            RaftError::APIError(ClientWriteError::ForwardToLeader(f))
                if f.leader_id.is_none() && self.metrics().state == ServerState::Leader =>
            {
                self.no_quorum_error()
            }
            RaftError::APIError(ClientWriteError::ForwardToLeader(f))
            | RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => {
                let leader = f.leader_id.map(|l| l.0);
                NodeError::new(
                    ErrorCode::NotLeader,
                    format!(
                        "this node ({}) is not the leader{}",
                        self.id,
                        leader
                            .as_ref()
                            .map(|l| format!("; send it to {l}"))
                            .unwrap_or_default()
                    ),
                )
                .with_leader(leader)
            }
            RaftError::APIError(other) => {
                NodeError::new(ErrorCode::InvalidOperation, other.to_string())
            }
            RaftError::Fatal(f) => {
                NodeError::new(ErrorCode::Shutdown, format!("raft stopped: {f}")).with_cause(f)
            }
        }
    }
}
