//! Writes: replicating a command on the leader, and sending it (or another request) on to the
//! leader from a follower.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::{RaftMetrics, ServerState};

use super::rpc::{AppReply, AppRequest, FORWARD_REPLY_MARGIN};
use super::{ErrorCode, Node, NodeError, Written};
use crate::now_ms;
use crate::types::{Applied, Command, NodeName, RegistryWrite, TypeConfig};

/// A write as the application hands it over, checked already.
pub struct Write {
    /// The command as JSON text.
    pub json: String,
    pub op_id: Option<String>,
    pub registry: Option<RegistryWrite>,
    pub timeout: Duration,
    /// On a follower, send it on to the leader instead of refusing it.
    pub forward: bool,
}

impl Write {
    fn into_command(self, proposed_at_ms: u64) -> Command {
        Command {
            json: self.json,
            op_id: self.op_id,
            proposed_at_ms,
            registry: self.registry,
        }
    }
}

/// For each position, the soonest deadline of the writes from there on still unanswered.
fn soonest_deadlines(waiting: &[Proposed]) -> Vec<Option<Instant>> {
    let mut soonest = vec![None; waiting.len()];
    let mut later: Option<Instant> = None;
    for (k, p) in waiting.iter().enumerate().rev() {
        if !p.answered {
            later = Some(later.map_or(p.deadline, |d| d.min(p.deadline)));
        }
        soonest[k] = later;
    }
    soonest
}

/// A write of a batch proposed to Raft, waiting for its result.
struct Proposed {
    position: usize,
    deadline: Instant,
    timeout: Duration,
    command: Command,
    answered: bool,
}

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
    /// leader. With `forward`, a follower sends it on to the leader it knows. A retry of an
    /// operation this node applied already is answered here, leader or not.
    pub async fn replicate(&self, write: Write) -> Result<Written, NodeError> {
        if let Some(done) = self.already_applied(&write.op_id) {
            return done;
        }
        let m = self.metrics();
        if !self.leads(&m) {
            return self.replicate_elsewhere(&m, write).await;
        }
        if self.quorum_lost(&m) && !self.fresh_lease(write.timeout).await {
            return Err(self.no_quorum_error());
        }
        let deadline = Instant::now() + write.timeout;
        let timeout = write.timeout;
        self.propose(write.into_command(now_ms()), deadline, timeout)
            .await
    }

    /// Replicates a batch of writes, calling `done(position, result)` as each one finishes. A
    /// leader proposes them to Raft in one message; a follower, or a leader that must first
    /// wait for its lease, takes each the way `replicate` does, all at once.
    pub async fn replicate_many(
        &self,
        writes: Vec<Write>,
        done: impl Fn(usize, Result<Written, NodeError>),
    ) {
        let m = self.metrics();
        if !self.leads(&m) || self.quorum_lost(&m) {
            let each = writes.into_iter().enumerate().map(|(position, write)| {
                let done = &done;
                async move { done(position, self.replicate(write).await) }
            });
            futures_util::future::join_all(each).await;
            return;
        }
        let proposed_at_ms = now_ms();
        let mut waiting = Vec::with_capacity(writes.len());
        let mut commands = Vec::with_capacity(writes.len());
        for (position, write) in writes.into_iter().enumerate() {
            if let Some(result) = self.already_applied(&write.op_id) {
                done(position, result);
                continue;
            }
            let timeout = write.timeout;
            let command = write.into_command(proposed_at_ms);
            waiting.push(Proposed {
                position,
                deadline: Instant::now() + timeout,
                timeout,
                // Proposed again should openraft refuse it for a lapsed lease.
                command: command.clone(),
                answered: false,
            });
            commands.push(command);
        }
        if waiting.is_empty() {
            return;
        }
        let mut results = match self.raft.client_write_many(commands).await {
            Ok(results) => results,
            Err(fatal) => {
                for p in &waiting {
                    done(
                        p.position,
                        Err(self.write_error(RaftError::Fatal(fatal.clone()))),
                    );
                }
                return;
            }
        };
        // Results come in the order proposed; each write still has its own deadline.
        let mut refused = Vec::new();
        let mut next = 0;
        let mut soonest = soonest_deadlines(&waiting);
        while next < waiting.len() {
            let Some(deadline) = soonest[next] else {
                break;
            };
            let outcome = tokio::time::timeout_at(deadline.into(), results.next()).await;
            let Ok(item) = outcome else {
                let now = Instant::now();
                for p in waiting[next..].iter_mut() {
                    if !p.answered && p.deadline <= now {
                        p.answered = true;
                        done(p.position, Err(self.no_progress_error(p.timeout)));
                    }
                }
                soonest = soonest_deadlines(&waiting);
                continue;
            };
            let p = &mut waiting[next];
            next += 1;
            if p.answered {
                continue;
            }
            p.answered = true;
            let result = match item {
                Some(Ok(Ok(response))) => Ok(Written {
                    applied: response.response,
                    here: true,
                }),
                Some(Ok(Err(e))) => {
                    let e = RaftError::APIError(e);
                    if self.lease_lapsed_among_live_voters(&e) {
                        refused.push(next - 1);
                        continue;
                    }
                    Err(self.write_error(e))
                }
                Some(Err(fatal)) => Err(self.write_error(RaftError::Fatal(fatal))),
                None => Err(NodeError::new(
                    ErrorCode::Shutdown,
                    format!("node {} stopped while the write was in flight", self.id),
                )),
            };
            done(p.position, result);
        }
        // openraft refused these before appending anything: proposed again once the lease is
        // back, as `replicate` does.
        let again = refused.into_iter().map(|k| {
            let p = &waiting[k];
            let done = &done;
            async move {
                let result = if self.wait_for_raft_lease(p.deadline).await {
                    self.propose(p.command.clone(), p.deadline, p.timeout).await
                } else {
                    Err(self.no_progress_error(p.timeout))
                };
                done(p.position, result)
            }
        });
        futures_util::future::join_all(again).await;
    }

    fn leads(&self, m: &RaftMetrics<TypeConfig>) -> bool {
        m.current_leader.as_ref() == Some(&self.id) && m.state == ServerState::Leader
    }

    async fn replicate_elsewhere(
        &self,
        m: &RaftMetrics<TypeConfig>,
        write: Write,
    ) -> Result<Written, NodeError> {
        if !write.forward {
            return Err(self.not_leader(m));
        }
        let applied = self
            .forward(write.json, write.op_id, write.registry, write.timeout)
            .await?;
        Ok(Written {
            applied,
            here: false,
        })
    }

    /// The first result of an operation id this node already applied (a retry).
    fn already_applied(&self, op_id: &Option<String>) -> Option<Result<Written, NodeError>> {
        let id = op_id.as_ref()?;
        match self.operation(id) {
            Ok(Some((index, term))) => Some(Ok(Written {
                applied: Applied {
                    index,
                    term,
                    duplicate: true,
                    condition_failed: false,
                },
                here: true,
            })),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Proposes a command on this leader until it is applied, it fails, or `deadline` passes.
    async fn propose(
        &self,
        command: Command,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Written, NodeError> {
        let left = deadline.saturating_duration_since(Instant::now());
        // openraft refuses for its lease before appending anything, so proposing again cannot
        // write the command twice.
        let proposed =
            self.propose_when_leased(deadline, || self.raft.client_write(command.clone()));
        match tokio::time::timeout(left, proposed).await {
            Ok(Ok(resp)) => Ok(Written {
                applied: resp.data,
                here: true,
            }),
            Ok(Err(e)) if self.lease_lapsed_among_live_voters(&e) => {
                Err(self.no_progress_error(timeout))
            }
            Ok(Err(e)) => Err(self.write_error(e)),
            Err(_) => Err(self.no_progress_error(timeout)),
        }
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
            // A write in flight when the core failed hears only that it stopped.
            RaftError::Fatal(f) => self.core_failure().unwrap_or_else(|| {
                NodeError::new(ErrorCode::Shutdown, format!("raft stopped: {f}")).with_cause(f)
            }),
        }
    }
}
