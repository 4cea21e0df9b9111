//! WebSocket transport between nodes: openraft's network traits over multiplexed connections.

pub mod append_pipeline;
pub mod client;
pub mod codec;
pub mod handshake;
pub mod link_cuts;
pub mod server;
pub mod snapshot_chunks;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkV2};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use append_pipeline::AppendResult;
use client::{CallError, PeerConn, PeerPool};
use codec::{RaftReply, RaftRpc, Reply, Rpc};

use crate::types::{NodeName, PeerAddr, Snapshot, SnapshotData, TypeConfig, Vote};

/// Limits and identity of a node's transport.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    pub node_id: String,
    pub cluster_id: String,
    /// Shared secrets: every peer must prove it knows one at the handshake.
    pub secret: Option<Arc<handshake::Secrets>>,
    /// Largest WebSocket message accepted or sent. A snapshot goes in pieces of at most half of
    /// it to peers of protocol 5, and whole, so bounded by it, to older ones.
    pub max_frame_bytes: usize,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    /// TCP connect alone; a dial is retried after the backoff.
    pub connect_timeout: Duration,
    /// An inbound connection silent this long is closed; dialers ping well within it.
    pub idle_timeout: Duration,
    /// A connection with no frame from its peer for three of these is given up and redialed.
    pub keepalive_interval: Duration,
    /// How often a dialer pings its peer. The peer's transport answers at once, whatever its
    /// Raft core and disk are busy with, so the answers tell whether the peer is there (see
    /// `PeerPool::heard_within`); Raft's own replies wait for the peer's fsync.
    pub contact_interval: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Mutual TLS on every connection, when configured.
    pub tls: Option<Arc<tls::Tls>>,
    /// In-process fault injection, when the environment enables it.
    pub link_cuts: Option<link_cuts::LinkCuts>,
}

/// A TLS handshake that failed over a certificate (ours or theirs), as opposed to the network.
pub fn tls_refusal(e: &std::io::Error) -> bool {
    use tokio_rustls::rustls::Error as TlsError;
    let rejected = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsError>());
    matches!(
        rejected,
        Some(
            TlsError::InvalidCertificate(_)
                | TlsError::NoCertificatesPresented
                | TlsError::AlertReceived(_)
        )
    )
}

pub fn ws_config(config: &TransportConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(config.max_frame_bytes))
        .max_frame_size(Some(config.max_frame_bytes))
}

/// Node ids: 1-64 characters of `[A-Za-z0-9._-]`.
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// openraft's view of the transport: hands out per-peer clients backed by the shared pool.
#[derive(Clone)]
pub struct Network {
    pub pool: Arc<PeerPool>,
}

pub struct PeerClient {
    local: NodeName,
    conn: Arc<PeerConn>,
    snapshot_chunk_bytes: usize,
    /// The most bytes of entries one append may carry: its frame must stay under the limit.
    append_budget_bytes: u64,
}

/// Room left in an append's frame for everything but its entries: the frame's header, the vote,
/// the previous log id and the commit index take well under this.
const APPEND_OVERHEAD_BYTES: u64 = 4096;

/// How long a snapshot for a peer that is down waits for it before the attempt fails (see
/// `full_snapshot`): openraft then reads the snapshot again once per this span, not twice a
/// second, while the peer stays down.
const SNAPSHOT_PEER_DOWN_WAIT: Duration = Duration::from_secs(10);

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeName, node: &PeerAddr) -> Self::Network {
        PeerClient {
            local: self.pool.local().clone(),
            conn: self.pool.get(&target, node),
            snapshot_chunk_bytes: snapshot_chunks::chunk_bytes(self.pool.config().max_frame_bytes),
            append_budget_bytes: (self.pool.config().max_frame_bytes as u64)
                .saturating_sub(APPEND_OVERHEAD_BYTES),
        }
    }
}

fn rpc_error(e: CallError) -> RPCError<TypeConfig> {
    match e {
        CallError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
        CallError::Timeout => RPCError::Network(NetworkError::new(&e)),
    }
}

fn unexpected(reply: Reply) -> RPCError<TypeConfig> {
    let why = match reply {
        Reply::Failed(msg) => format!("remote failed: {msg}"),
        other => format!("unexpected reply {other:?}"),
    };
    RPCError::Network(NetworkError::from_string(why))
}

impl PeerClient {
    /// Waits up to `SNAPSHOT_PEER_DOWN_WAIT` for a peer that is down, then ends the attempt to
    /// send it a snapshot in the way that makes openraft go on as it should: at once with a fresh
    /// read when the peer is back (openraft retries a timed-out attempt without its backoff),
    /// after its backoff when it is still down.
    async fn wait_for_peer(&self) -> StreamingError<TypeConfig> {
        if self.conn.wait_connected(SNAPSHOT_PEER_DOWN_WAIT).await {
            StreamingError::Timeout(Timeout {
                action: RPCTypes::InstallSnapshot,
                id: self.local.clone(),
                target: self.conn.target().clone(),
                timeout: SNAPSHOT_PEER_DOWN_WAIT,
            })
        } else {
            let down = CallError::Unreachable(format!("{} is still down", self.conn.target()));
            StreamingError::Unreachable(Unreachable::new(&down))
        }
    }

    async fn call(&self, rpc: RaftRpc, option: &RPCOption) -> Result<Reply, RPCError<TypeConfig>> {
        self.conn
            .call(Rpc::Raft(rpc), option.hard_ttl())
            .await
            .map_err(rpc_error)
    }

    /// Sends `snapshot` to the peer: in pieces when the connection's protocol has them, each
    /// answered before the next goes, else whole in one message as the older protocols want.
    async fn send_snapshot(
        &self,
        vote: Vote,
        snapshot: Snapshot,
        option: &RPCOption,
    ) -> Result<Reply, CallError> {
        let meta = snapshot.meta;
        let data = snapshot.snapshot.into_inner();
        if self.conn.protocol() < codec::CHUNKED_SNAPSHOT_PROTOCOL {
            let rpc = Rpc::Raft(RaftRpc::Snapshot {
                vote,
                last_log_id: meta.last_log_id,
                last_membership: meta.last_membership,
                data,
            });
            return self.conn.call(rpc, option.hard_ttl()).await;
        }
        let pieces = snapshot_chunks::chunks(
            &vote,
            &meta.last_log_id,
            &meta.last_membership,
            &data,
            self.snapshot_chunk_bytes,
        );
        let mut reply = Reply::Failed("no snapshot piece was sent".into());
        for piece in pieces {
            reply = self
                .conn
                .call(Rpc::SnapshotChunk(piece), option.hard_ttl())
                .await?;
            match &reply {
                // The peer answers each piece with its vote; a newer one than ours ends the
                // transfer as the answer to the whole snapshot would.
                Reply::Raft(RaftReply::Snapshot(r)) if r.vote <= vote => {}
                _ => break,
            }
        }
        Ok(reply)
    }
}

impl PeerClient {
    /// Sends `input`'s appends, pipelined to a peer that takes them in order (protocol
    /// `PIPELINED_APPEND_PROTOCOL`) across a network with a round trip worth hiding, one at a
    /// time otherwise, and yields their results in order (see `append_pipeline`).
    async fn appends<S>(
        &self,
        input: S,
        option: RPCOption,
    ) -> Result<BoxStream<'static, AppendResult>, RPCError<TypeConfig>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        let timeout = option.hard_ttl();
        self.conn.ready(timeout).await.map_err(rpc_error)?;
        let pipelined = self.conn.protocol() >= codec::PIPELINED_APPEND_PROTOCOL
            && self
                .conn
                .network_rtt()
                .is_some_and(|rtt| rtt >= append_pipeline::PIPELINE_MIN_RTT);
        let depth = if pipelined {
            append_pipeline::PIPELINE_DEPTH
        } else {
            1
        };
        Ok(append_pipeline::send_appends(
            self.conn.clone(),
            input,
            depth,
            timeout,
            self.append_budget_bytes,
        ))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let (_, last) = append_pipeline::range_of(&rpc);
        let mut results = self
            .appends(futures_util::stream::iter([rpc]), option)
            .await?;
        match results.next().await {
            Some(Ok(Ok(confirmed))) if confirmed == last => Ok(AppendEntriesResponse::Success),
            Some(Ok(Ok(confirmed))) => Ok(AppendEntriesResponse::PartialSuccess(confirmed)),
            Some(Ok(refused)) => Ok(AppendEntriesResponse::from(refused)),
            Some(Err(e)) => Err(e),
            None => Err(RPCError::Network(NetworkError::from_string(
                "the append got no answer".to_string(),
            ))),
        }
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, AppendResult>, RPCError<TypeConfig>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            let results: BoxStream<'s, AppendResult> = self.appends(input, option).await?;
            Ok(results)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(RaftRpc::Vote(rpc), &option).await? {
            Reply::Raft(RaftReply::Vote(r)) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(RaftRpc::PreVote(rpc), &option).await? {
            Reply::Raft(RaftReply::Vote(r)) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let call = async {
            // openraft reads the snapshot out of storage again for every attempt, and a read
            // encodes the whole id window: toward a peer that is down, failing at once meant
            // megabytes read and thrown away twice a second for as long as it stayed down.
            if self.conn.ready(option.hard_ttl()).await.is_err() {
                drop(snapshot);
                return Err(self.wait_for_peer().await);
            }
            match self.send_snapshot(vote, snapshot, &option).await {
                Ok(Reply::Raft(RaftReply::Snapshot(r))) => Ok(r),
                Ok(other) => Err(StreamingError::Network(NetworkError::from_string(format!(
                    "{:?}",
                    unexpected(other)
                )))),
                Err(e @ CallError::Unreachable(_)) => {
                    Err(StreamingError::Unreachable(Unreachable::new(&e)))
                }
                Err(e) => Err(StreamingError::Network(NetworkError::new(&e))),
            }
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = call => result,
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(RaftRpc::TransferLeader(req), &option).await? {
            Reply::Raft(RaftReply::TransferLeader(r)) => Ok(r),
            other => Err(unexpected(other)),
        }
    }
}
