//! The engine's requests between nodes (forwarded writes and membership changes, read indexes,
//! founding claims, probes), carried by the transport's application channel: the messages, the
//! side that serves them (`AppHandler`), and the side that asks the leader.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use openraft::ServerState;
use serde::{Deserialize, Serialize};

use super::{known_leader, ErrorCode, Node, NodeError, Write};
use crate::transport::client::PeerConn;
use crate::transport::codec::{self, Reply, Rpc};
use crate::transport::server::AppHandler;
use crate::types::{Applied, NodeName, PeerAddr, RegistryWrite};

/// A forwarded request waits this much beyond the leader's own deadline, so the leader's answer
/// (even a timeout) gets back.
pub(super) const FORWARD_REPLY_MARGIN: Duration = Duration::from_millis(500);

/// How long a request refused by the leader we know waits for our view to move on before it
/// asks again.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// A request of one node's engine to another's. The order of the variants is the wire's (see
/// `transport::codec`): new ones go at the end.
#[derive(Debug, Serialize, Deserialize)]
pub enum AppRequest {
    /// Asks whether the node already belongs to a cluster (before founding one), and serves as
    /// the health check ping.
    Probe,
    /// A write sent on to the leader by a follower on behalf of its application.
    Forward {
        json: String,
        op_id: Option<String>,
        registry: Option<RegistryWrite>,
        timeout_ms: u64,
    },
    /// Asks the leader to remove a member (a leader that hands over and then leaves).
    RemoveMember { node_id: String },
    /// A fresh node asks before founding a cluster: may I found it, or are you (or someone you
    /// deferred to) doing so? The claimer is the connection's authenticated node id.
    Claim,
    /// Asks the leader to add a member (`addPeer` called on a follower).
    AddMember {
        node_id: String,
        host: String,
        port: u16,
        timeout_ms: u64,
    },
    /// Asks the leader for a read index: the log index a linearizable read must wait for, given
    /// once the leader has confirmed with a quorum that it still leads.
    ReadIndex { timeout_ms: u64 },
}

/// The answer to an `AppRequest`. The order of the variants is the wire's.
#[derive(Debug, Serialize, Deserialize)]
pub enum AppReply {
    Probe(ProbeReply),
    Forwarded(Result<Applied, WireError>),
    Done(Result<(), WireError>),
    /// The peer could not answer: its node stopped, or the request or the answer did not
    /// decode. Its tag on the wire is the transport's own failure reply.
    Failed(String),
    Claim(ClaimReply),
    ReadIndex(Result<u64, WireError>),
}

/// The answer to a fresh node's claim to found the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimReply {
    /// The answering node promised never to found a cluster itself: the claimer may.
    Granted,
    /// The answering node will not grant: it promised `promised_to` (another claimer), or it
    /// names itself because it is about to found and wins the tie on the smaller node id.
    Refused { promised_to: String },
    /// The answering node already belongs to a cluster.
    Member { leader_id: Option<String> },
}

/// An engine error as it crosses the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireError {
    pub code: String,
    pub message: String,
    pub leader_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeReply {
    /// The node has Raft state: it is, or was, a member of a cluster.
    pub initialized: bool,
    pub leader_id: Option<String>,
    pub voters: Vec<String>,
}

impl From<NodeError> for WireError {
    fn from(e: NodeError) -> Self {
        WireError {
            code: e.code.to_string(),
            message: e.message,
            leader_id: e.leader_id,
        }
    }
}

impl From<WireError> for NodeError {
    fn from(e: WireError) -> Self {
        NodeError::new(ErrorCode::from_wire(&e.code), e.message).with_leader(e.leader_id)
    }
}

/// Sends `request` over `conn` and reads the answer. `Err` only when no answer came (not
/// connected, or not in time); an answer that is not the engine's becomes `AppReply::Failed`.
pub(super) async fn ask(
    conn: &PeerConn,
    request: &AppRequest,
    timeout: Duration,
) -> Result<AppReply, crate::transport::client::CallError> {
    let payload = match codec::encode_payload(request) {
        Ok(payload) => payload,
        Err(e) => return Ok(AppReply::Failed(e)),
    };
    Ok(match conn.call(Rpc::App(payload), timeout).await? {
        Reply::App(bytes) => codec::decode_payload(&bytes).unwrap_or_else(AppReply::Failed),
        Reply::Failed(why) => AppReply::Failed(why),
        Reply::Raft(other) => AppReply::Failed(format!("unexpected reply {other:?}")),
    })
}

impl AppHandler for Node {
    fn handle<'a>(
        &'a self,
        peer: &'a str,
        request: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send + 'a>> {
        Box::pin(async move {
            let reply = match codec::decode_payload::<AppRequest>(&request) {
                Ok(request) => self.serve(peer, request).await,
                Err(e) => AppReply::Failed(e),
            };
            codec::encode_payload(&reply)
        })
    }
}

impl Node {
    /// `peer`: the node id the connection authenticated at the handshake.
    async fn serve(&self, peer: &str, request: AppRequest) -> AppReply {
        match request {
            AppRequest::Probe => AppReply::Probe(self.probe()),
            AppRequest::Claim => AppReply::Claim(self.answer_claim(peer)),
            // Not forwarded again: a node that is not the leader answers ERR_NOT_LEADER itself.
            AppRequest::Forward {
                json,
                op_id,
                registry,
                timeout_ms,
            } => {
                let timeout = Duration::from_millis(timeout_ms);
                let write = async {
                    self.replicate(Write {
                        json,
                        op_id,
                        registry,
                        timeout,
                        forward: false,
                    })
                    .await
                    .map(|written| written.applied)
                };
                AppReply::Forwarded(self.serve_forwarded(timeout, write).await)
            }
            AppRequest::RemoveMember { node_id } => {
                let removal = self.remove_peer(node_id, false);
                AppReply::Done(
                    self.serve_forwarded(self.config.election_wait(), removal)
                        .await,
                )
            }
            AppRequest::AddMember {
                node_id,
                host,
                port,
                timeout_ms,
            } => {
                let timeout = Duration::from_millis(timeout_ms);
                let addition = self.add_forwarded_peer(node_id, PeerAddr { host, port }, timeout);
                AppReply::Done(self.serve_forwarded(timeout, addition).await)
            }
            AppRequest::ReadIndex { timeout_ms } => {
                let timeout = Duration::from_millis(timeout_ms);
                let read = self.read_index(timeout);
                AppReply::ReadIndex(self.serve_forwarded(timeout, read).await)
            }
        }
    }

    /// Serves a request another node sent here because it saw this node lead: waits (up to
    /// `settle`, at most as long as an election takes) for this node's view of the leader to
    /// settle, runs
    /// `work` unless the node stops meanwhile, and puts the outcome in the wire's form.
    async fn serve_forwarded<T>(
        &self,
        settle: Duration,
        work: impl Future<Output = Result<T, NodeError>>,
    ) -> Result<T, WireError> {
        let settled = async {
            self.settle_leadership(Instant::now() + settle.min(self.config.election_wait()))
                .await;
            work.await
        };
        self.unless_stopped(settled).await.map_err(WireError::from)
    }

    /// What this node knows of its cluster, for a fresh node deciding whether to found one.
    fn probe(&self) -> ProbeReply {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let voters: Vec<String> = membership.voter_ids().map(|id| id.0).collect();
        let initialized =
            metrics.last_log_index.is_some() || metrics.current_term > 0 || !voters.is_empty();
        ProbeReply {
            initialized,
            leader_id: metrics.current_leader.map(|l| l.0),
            voters,
        }
    }

    /// A forwarded request comes because its sender saw this node lead; this node's own view can
    /// trail that by a moment (an election or transfer that just finished). Waits, until
    /// `deadline`, for the view to settle on a leader before the request is judged.
    ///
    /// A leader just elected (a transfer that just finished) hears from its quorum only a moment
    /// later, and on a busy machine that moment can outlast the lease that CheckQuorum allows.
    /// The sender saw this node lead, so the request waits for the quorum to answer rather than
    /// failing at once as a lone leader's own writes do.
    async fn settle_leadership(&self, deadline: Instant) {
        let me = self.id.clone();
        self.wait_for(deadline, |m| match &m.current_leader {
            Some(leader) if *leader == me => m.state == ServerState::Leader && !self.quorum_lost(m),
            Some(_) => true,
            None => false,
        })
        .await;
    }

    /// Sends a request to the leader this node knows. With `retry`, a leader that answers
    /// ERR_NOT_LEADER (leadership moved while the request travelled) is followed to the leader it
    /// names, until `deadline`. `make_request` gets the time left.
    pub(super) async fn call_leader(
        &self,
        deadline: Instant,
        retry: bool,
        make_request: impl Fn(Duration) -> AppRequest,
    ) -> Result<AppReply, NodeError> {
        let mut asked: Option<NodeName> = None;
        loop {
            let m = self.metrics();
            let target = known_leader(&m).filter(|(leader, _)| *leader != self.id);
            let Some((leader, addr)) = target else {
                return Err(self.not_leader(&m));
            };
            if asked.take().as_ref() == Some(&leader) {
                // It refused, yet we still see it lead: one of the two views trails the other.
                // Give ours a moment to move on, then ask again.
                let backoff = (Instant::now() + RETRY_BACKOFF).min(deadline);
                if self
                    .wait_for(backoff, |m| m.current_leader.as_ref() != Some(&leader))
                    .await
                {
                    continue;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = ask(&self.pool.get(&leader, &addr), &make_request(left), left)
                .await
                .map_err(|e| {
                    NodeError::new(
                        ErrorCode::NotLeader,
                        format!("could not reach leader {leader}: {e}"),
                    )
                    .with_leader(Some(leader.0.clone()))
                })?;
            let refused = match &reply {
                AppReply::Forwarded(Err(e))
                | AppReply::Done(Err(e))
                | AppReply::ReadIndex(Err(e)) => {
                    ErrorCode::from_wire(&e.code) == ErrorCode::NotLeader
                }
                _ => false,
            };
            if !(refused && retry) || Instant::now() >= deadline {
                return Ok(reply);
            }
            asked = Some(leader);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::codec::tests::{check_corpus, round_trip};
    use crate::transport::codec::Frame;

    fn request(id: u64, request: AppRequest) -> Frame {
        let payload = codec::encode_payload(&request).expect("encode");
        Frame::Request {
            id,
            rpc: Rpc::App(payload),
        }
    }

    fn response(id: u64, reply: AppReply) -> Frame {
        let payload = codec::encode_payload(&reply).expect("encode");
        Frame::Response {
            id,
            reply: Reply::App(payload),
        }
    }

    /// One frame of every application request and reply, named as in the fuzz corpus, whose
    /// files hold the bytes protocol 3 put on the wire.
    fn seed_frames() -> Vec<(&'static str, Frame)> {
        let wire_error = WireError {
            code: "ERR_NOT_LEADER".into(),
            message: "not the leader".into(),
            leader_id: Some("node-2".into()),
        };
        vec![
            ("request-probe", request(13, AppRequest::Probe)),
            (
                "request-forward",
                request(
                    14,
                    AppRequest::Forward {
                        json: r#"{"type":"t"}"#.into(),
                        op_id: Some("op-1".into()),
                        registry: None,
                        timeout_ms: 5000,
                    },
                ),
            ),
            (
                "request-remove-member",
                request(
                    15,
                    AppRequest::RemoveMember {
                        node_id: "node-3".into(),
                    },
                ),
            ),
            ("request-claim", request(20, AppRequest::Claim)),
            (
                "request-add-member",
                request(
                    21,
                    AppRequest::AddMember {
                        node_id: "node-4".into(),
                        host: "10.0.1.104".into(),
                        port: 8083,
                        timeout_ms: 30000,
                    },
                ),
            ),
            (
                "response-claim-granted",
                response(22, AppReply::Claim(ClaimReply::Granted)),
            ),
            (
                "response-claim-refused",
                response(
                    23,
                    AppReply::Claim(ClaimReply::Refused {
                        promised_to: "node-1".into(),
                    }),
                ),
            ),
            (
                "response-claim-member",
                response(
                    24,
                    AppReply::Claim(ClaimReply::Member {
                        leader_id: Some("node-1".into()),
                    }),
                ),
            ),
            (
                "response-probe",
                response(
                    16,
                    AppReply::Probe(ProbeReply {
                        initialized: true,
                        leader_id: Some("node-1".into()),
                        voters: vec!["node-1".into()],
                    }),
                ),
            ),
            (
                "response-forwarded",
                response(17, AppReply::Forwarded(Err(wire_error.clone()))),
            ),
            (
                "response-done",
                response(18, AppReply::Done(Err(wire_error))),
            ),
            (
                "request-read-index",
                request(20, AppRequest::ReadIndex { timeout_ms: 5000 }),
            ),
            (
                "response-read-index",
                response(21, AppReply::ReadIndex(Ok(42))),
            ),
        ]
    }

    #[test]
    fn application_frames_keep_the_bytes_of_protocol_3() {
        check_corpus(seed_frames());
    }

    #[test]
    fn application_frames_round_trip() {
        round_trip(seed_frames());
    }

    /// A reply's tag on the wire is the transport's failure tag exactly for `AppReply::Failed`,
    /// so a failure the transport sends and one the engine sends read alike.
    #[test]
    fn the_engines_failure_is_the_transports() {
        let frame = response(5, AppReply::Failed("gone".into()));
        let bytes = codec::encode(&frame).expect("encode");
        match codec::decode(&bytes, 1 << 20).expect("decode") {
            Frame::Response {
                reply: Reply::Failed(why),
                ..
            } => assert_eq!(why, "gone"),
            other => panic!("decoded as {other:?}"),
        }
    }
}
