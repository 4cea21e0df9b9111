//! Inbound side: accepts WebSocket connections from peers, checks the handshake, and hands each
//! Raft request to the local Raft and each application request to the `AppHandler`. Anything
//! that is not our protocol gets the connection closed; the listener itself never stops serving
//! because of one bad peer.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};

use openraft::raft::{AppendEntriesRequest, SnapshotResponse};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::accept_async_with_config;
use tokio_tungstenite::tungstenite::Message;

use super::append_pipeline;
use super::client::PeerPool;
use super::codec::{self, Frame, RaftReply, RaftRpc, Reply, Rpc, StreamAppend};
use super::handshake::{self, Admission, NotAccepted};
use super::link_cuts::{inbound_cut, until_cut};
use super::snapshot_chunks::{Assembly, Progress};
use super::tls::PeerStream;
use super::{tls_refusal, valid_node_id, ws_config, TransportConfig};
use openraft::type_config::async_runtime::WatchReceiver;

use crate::events::EventSink;
use crate::types::{NodeName, Raft, Snapshot, SnapshotMeta, TypeConfig};

/// What the application (the engine) answers its peers' requests with. Requests and replies
/// are in the application's own encoding; the transport only carries them.
pub trait AppHandler: Send + Sync + 'static {
    /// Answers one request from `peer` (the node id the connection authenticated). `Err`: no
    /// answer could be encoded; the peer gets a failure reply.
    fn handle<'a>(
        &'a self,
        peer: &'a str,
        request: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send + 'a>>;
}

pub struct Server {
    pub raft: Raft,
    /// For the application's requests. Weak: the application owns the server's lifetime, not
    /// the other way round.
    pub app: Weak<dyn AppHandler>,
    /// This node's outbound connections: a peer that reached us may be worth dialing again.
    pub pool: Arc<PeerPool>,
    pub config: Arc<TransportConfig>,
    pub events: EventSink,
    /// When this node last accepted entries or a heartbeat from a leader (ms since epoch).
    pub leader_contact_ms: Arc<AtomicU64>,
}

impl Server {
    /// Serves `listener` until `stop` turns true.
    pub async fn run(self: Arc<Self>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.config.max_connections));
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((tcp, _)) = accepted else { continue };
                    // Over the limit: close at once instead of queueing unbounded work.
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        drop(tcp);
                        continue;
                    };
                    let server = self.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        server.serve(tcp, stop).await;
                        drop(permit);
                    });
                }
                _ = stop.changed() => return,
            }
        }
    }

    async fn serve(&self, tcp: TcpStream, mut stop: watch::Receiver<bool>) {
        let _ = tcp.set_nodelay(true);
        let peer_ip = tcp
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let config = &self.config;
        let limit = config.max_frame_bytes as u64;
        let handshake = async {
            let stream = match &config.tls {
                Some(tls) => match tls.accept(tcp).await {
                    Ok(stream) => stream,
                    Err(e) => {
                        // A peer whose certificate we reject (or that rejects ours) is reported;
                        // a scanner or a dropped connection is not news.
                        if tls_refusal(&e) {
                            self.events.warn_limited(
                                &format!("accept tls {peer_ip}"),
                                "ERR_AUTH",
                                format!("refused a TLS connection from {peer_ip}: {e}"),
                            );
                        }
                        return None;
                    }
                },
                None => PeerStream::Plain(tcp),
            };
            let mut ws = accept_async_with_config(stream, Some(ws_config(config)))
                .await
                .ok()?;
            let me = handshake::Local {
                cluster_id: &config.cluster_id,
                node_id: &config.node_id,
                secret: config.secret.as_deref(),
                versions: handshake::SUPPORTED,
                limit,
            };
            let admit = |cluster_id: &str, node_id: &str| {
                if let Some((code, message)) = self.refusal(cluster_id, node_id) {
                    return Admission::Refuse(code, message);
                }
                let cut = config.link_cuts.as_ref();
                if cut.is_some_and(|c| c.is_cut(node_id, inbound_cut)) {
                    return Admission::Drop;
                }
                Admission::Admit
            };
            match handshake::accept(&mut ws, &me, admit).await {
                Ok(agreed) => {
                    tracing::debug!(peer = %agreed.peer, protocol = agreed.protocol, "accepted");
                    Some((ws, agreed.peer))
                }
                Err(NotAccepted::Refused { code, message }) => {
                    // The message names the peer and the cause: one warning per both per interval.
                    self.events.warn_limited(
                        &format!("accept {code} {message}"),
                        "ERR_AUTH",
                        format!("refused a connection: {message}"),
                    );
                    None
                }
                Err(NotAccepted::RefusedBy {
                    peer,
                    code,
                    message,
                }) => {
                    self.events.warn_limited(
                        &format!("accept {peer} refused-us {code}"),
                        "ERR_AUTH",
                        format!("{peer} refused this node: {message}"),
                    );
                    None
                }
                Err(NotAccepted::Dropped) => None,
            }
        };
        let Ok(Some((ws, peer))) = tokio::time::timeout(config.handshake_timeout, handshake).await
        else {
            return;
        };
        // Whatever refused our dials to this peer may be fixed now.
        self.pool.redial(Some(&NodeName(peer.clone())));
        let cut = until_cut(config.link_cuts.as_ref(), &peer, inbound_cut);
        tokio::pin!(cut);

        let (mut sink, mut stream) = ws.split();
        // Replies come from concurrently running handlers; one writer task owns the sink.
        let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let writer = tokio::spawn(async move {
            while let Some(first) = reply_rx.recv().await {
                if sink.feed(Message::binary(first)).await.is_err() {
                    return;
                }
                while let Ok(more) = reply_rx.try_recv() {
                    if sink.feed(Message::binary(more)).await.is_err() {
                        return;
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
        });

        // Each pipelined stream of appends the dialer opened (protocol 6), by its number: each
        // goes to Raft in the order its appends came.
        let mut pipelines: HashMap<
            u64,
            mpsc::UnboundedSender<(u64, AppendEntriesRequest<TypeConfig>)>,
        > = HashMap::new();

        let mut snapshot_pieces = Assembly::default();
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(config.idle_timeout, stream.next()) => next,
                _ = stop.changed() => break,
                _ = &mut cut => break,
            };
            let bytes = match next {
                Ok(Some(Ok(Message::Binary(bytes)))) => bytes,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                // Text frames, protocol errors, oversize frames, EOF, or silence: hang up.
                _ => break,
            };
            let Ok(Frame::Request { id, rpc }) = codec::decode(&bytes, limit) else {
                break;
            };
            // Pieces of a snapshot are taken here, in the order they came: one by one they only
            // grow the connection's transfer; the last one's install runs as any request does.
            let rpc = match rpc {
                Rpc::SnapshotChunk(piece) => match snapshot_pieces.take(piece) {
                    Progress::Complete(whole) => Rpc::Raft(RaftRpc::Snapshot {
                        vote: whole.vote,
                        last_log_id: whole.last_log_id,
                        last_membership: whole.last_membership,
                        data: whole.data,
                    }),
                    Progress::Partial => {
                        let vote = self.raft.metrics().borrow_watched().vote.clone();
                        let ack = RaftReply::Snapshot(SnapshotResponse::new(vote));
                        answer(&reply_tx, id, Reply::Raft(ack));
                        continue;
                    }
                    Progress::Refused(why) => {
                        answer(&reply_tx, id, Reply::Failed(why));
                        continue;
                    }
                },
                Rpc::StreamAppend(StreamAppend { stream, append }) => {
                    if !pipelines.contains_key(&stream) {
                        pipelines.retain(|_, pipeline| !pipeline.is_closed());
                        let (tx, rx) = mpsc::unbounded_channel();
                        tokio::spawn(append_pipeline::serve_appends(
                            self.raft.clone(),
                            self.leader_contact_ms.clone(),
                            rx,
                            reply_tx.clone(),
                        ));
                        pipelines.insert(stream, tx);
                    }
                    let taken = pipelines
                        .get(&stream)
                        .is_some_and(|pipeline| pipeline.send((id, append)).is_ok());
                    if !taken {
                        let why = "the append's stream already ended".to_string();
                        answer(&reply_tx, id, Reply::Failed(why));
                    }
                    continue;
                }
                rpc => rpc,
            };
            let raft = self.raft.clone();
            let app = self.app.clone();
            let contact = self.leader_contact_ms.clone();
            let reply_tx = reply_tx.clone();
            let peer = peer.clone();
            tokio::spawn(async move {
                let reply = match rpc {
                    Rpc::Raft(rpc) => handle_raft(&raft, &contact, rpc).await,
                    Rpc::SnapshotChunk(_) => Reply::Failed("a snapshot piece out of place".into()),
                    Rpc::StreamAppend(_) => Reply::Failed("a pipelined append out of place".into()),
                    Rpc::App(request) => match app.upgrade() {
                        Some(app) => match app.handle(&peer, request).await {
                            Ok(reply) => Reply::App(reply),
                            Err(why) => Reply::Failed(why),
                        },
                        None => Reply::Failed("node stopped".into()),
                    },
                };
                answer(&reply_tx, id, reply);
            });
        }
        drop(reply_tx);
        // Their tasks end once they see the connection's appends stop.
        drop(pipelines);
        writer.abort();
    }
}

/// Queues the answer to request `id` for the connection's writer; a connection already gone
/// drops it.
pub(super) fn answer(replies: &mpsc::UnboundedSender<Vec<u8>>, id: u64, reply: Reply) {
    if let Ok(bytes) = codec::encode(&Frame::Response { id, reply }) {
        let _ = replies.send(bytes);
    }
}

impl Server {
    /// Why a peer announcing itself with this hello is not let in, if it is not.
    fn refusal(&self, cluster_id: &str, node_id: &str) -> Option<(&'static str, String)> {
        let config = &self.config;
        if cluster_id != config.cluster_id {
            return Some((
                "ERR_AUTH",
                format!(
                    "node {node_id} belongs to cluster '{cluster_id}', this node to '{}'",
                    config.cluster_id
                ),
            ));
        }
        if !valid_node_id(node_id) {
            return Some(("ERR_AUTH", "invalid node id in handshake".to_string()));
        }
        // Once in a cluster, only its members get in. A fresh node lets anyone of its cluster in:
        // that is how the node that adds it reaches it.
        let metrics = self.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let has_members = membership.nodes().next().is_some();
        if has_members
            && membership
                .get_node(&NodeName(node_id.to_string()))
                .is_none()
        {
            return Some((
                ERR_NOT_MEMBER,
                format!("{node_id} is not a member of this node's cluster"),
            ));
        }
        None
    }
}

/// The refusal code for a peer that is not a member: to a fresh node claiming before it founds a
/// cluster, it means "this peer already belongs to a cluster".
pub const ERR_NOT_MEMBER: &str = "ERR_NOT_MEMBER";

async fn handle_raft(raft: &Raft, leader_contact_ms: &AtomicU64, rpc: RaftRpc) -> Reply {
    match rpc {
        RaftRpc::Append(req) => match raft.append_entries(req).await {
            Ok(r) => {
                append_pipeline::note_leader_contact(leader_contact_ms, &r);
                Reply::Raft(RaftReply::Append(r))
            }
            Err(e) => Reply::Failed(e.to_string()),
        },
        RaftRpc::Vote(req) => match raft.vote(req).await {
            Ok(r) => Reply::Raft(RaftReply::Vote(r)),
            Err(e) => Reply::Failed(e.to_string()),
        },
        RaftRpc::PreVote(req) => match raft.pre_vote(req).await {
            Ok(r) => Reply::Raft(RaftReply::Vote(r)),
            Err(e) => Reply::Failed(e.to_string()),
        },
        RaftRpc::Snapshot {
            vote,
            last_log_id,
            last_membership,
            data,
        } => {
            let snapshot = Snapshot {
                meta: SnapshotMeta {
                    last_log_id,
                    last_membership,
                },
                snapshot: std::io::Cursor::new(data),
            };
            match raft.install_full_snapshot(vote, snapshot).await {
                Ok(r) => Reply::Raft(RaftReply::Snapshot(r)),
                Err(e) => Reply::Failed(e.to_string()),
            }
        }
        RaftRpc::TransferLeader(req) => match raft.handle_transfer_leader(req).await {
            Ok(r) => Reply::Raft(RaftReply::TransferLeader(r)),
            Err(e) => Reply::Failed(e.to_string()),
        },
    }
}
