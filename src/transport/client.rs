//! Outbound side: one multiplexed WebSocket connection per peer, kept up by a task that
//! reconnects with backoff. Calls made while the peer is down fail at once as `Unreachable`, so
//! openraft never waits on a dead peer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{client_async_with_config, WebSocketStream};

use super::codec::{self, Frame, Reply, Rpc};
use super::handshake;
use super::link_cuts::{outbound_cut, until_cut};
use super::tls::PeerStream;
use super::{tls_refusal, ws_config, TransportConfig};
use crate::events::{Event, EventSink};
use crate::lock;
use crate::stats::{Histogram, HistogramReading, RTT_BUCKETS};
use crate::types::{NodeName, PeerAddr};

/// Redials of a peer that refused us start this far apart and double up to `REFUSED_MAX`.
const REFUSED_MIN: Duration = Duration::from_millis(500);
const REFUSED_MAX: Duration = Duration::from_secs(30);

/// Why a call to a peer did not get an answer.
#[derive(Debug, Clone)]
pub enum CallError {
    /// Not connected (or the connection broke before the answer came).
    Unreachable(String),
    Timeout,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(why) => write!(f, "peer unreachable: {why}"),
            CallError::Timeout => write!(f, "peer did not answer in time"),
        }
    }
}

impl std::error::Error for CallError {}

/// Why the last dial to a peer did not give a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialFailure {
    /// Nothing listens at the address (the connection was actively refused).
    NoListener,
    /// The peer answered but the handshake failed on its side or ours: wrong secret, another
    /// cluster, another node id at that address, a certificate not trusted. `code` is an
    /// `ERR_...` code; retrying does not help until someone changes a configuration.
    Refused { code: String, message: String },
    /// Anything else: a timeout, a reset, a cut link. May clear by itself.
    Network(String),
}

impl std::fmt::Display for DialFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DialFailure::NoListener => write!(f, "nothing listens there"),
            DialFailure::Refused { code, message } => write!(f, "{code}: {message}"),
            DialFailure::Network(why) => f.write_str(why),
        }
    }
}

impl DialFailure {
    pub(super) fn refused(code: &str, message: impl Into<String>) -> Self {
        DialFailure::Refused {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

/// The outcome of the latest finished dial: its sequence number, and why it failed (if it did).
type DialOutcome = (u64, Option<DialFailure>);

struct Outgoing {
    queued_at: Instant,
    id: u64,
    bytes: Vec<u8>,
    reply: oneshot::Sender<Reply>,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// A dial is under way: a call waits for its outcome instead of failing at once, so the
    /// first vote to a peer this node never talked to is not lost to connection setup.
    Dialing,
    Connected,
    /// The last dial failed; calls fail fast until the next attempt.
    Down,
}

/// A request on its way to a peer, its reply still to come (see `PeerConn::send`).
pub struct Sent {
    reply: oneshot::Receiver<Reply>,
    sent_at: Instant,
    deadline: Instant,
}

/// A connection to one peer, shared by every openraft client for that peer.
pub struct PeerConn {
    target: NodeName,
    addr: Mutex<PeerAddr>,
    link: watch::Sender<Link>,
    next_id: AtomicU64,
    queue: mpsc::UnboundedSender<Outgoing>,
    closed: AtomicBool,
    wake: Notify,
    /// Each finished dial, so a caller can wait for the next one and learn why it failed.
    dials: watch::Sender<DialOutcome>,
    /// Round trips of answered calls (etcd's peer_round_trip_time_seconds).
    rtt: Histogram,
    /// When a frame of any kind last came from the peer, as microseconds after `born` (0 for
    /// never): whether the peer is alive and reachable both ways, apart from Raft's replies.
    heard_at_us: AtomicU64,
    born: Instant,
    /// The protocol version the current (or last) connection speaks, 0 before the first.
    protocol: AtomicU32,
    /// The network's round trip to the peer in microseconds, from a ping at the start of the
    /// current (or last) connection; 0 before the first answer.
    network_rtt_us: AtomicU64,
}

impl PeerConn {
    /// A connection whose requests go to `queue`, still to be dialed.
    fn new(target: NodeName, addr: PeerAddr, queue: mpsc::UnboundedSender<Outgoing>) -> Self {
        PeerConn {
            target,
            addr: Mutex::new(addr),
            link: watch::Sender::new(Link::Dialing),
            next_id: AtomicU64::new(1),
            queue,
            closed: AtomicBool::new(false),
            wake: Notify::new(),
            dials: watch::Sender::new((0, None)),
            rtt: Histogram::new(RTT_BUCKETS),
            heard_at_us: AtomicU64::new(0),
            born: Instant::now(),
            protocol: AtomicU32::new(0),
            network_rtt_us: AtomicU64::new(0),
        }
    }

    pub fn target(&self) -> &NodeName {
        &self.target
    }

    /// The protocol version the peer and this node agreed on at the last handshake.
    pub fn protocol(&self) -> u32 {
        self.protocol.load(Ordering::Acquire)
    }

    /// The network's round trip to the peer, without its disk: measured by a WebSocket ping when
    /// the connection starts, which the peer's transport answers at once. `None` before that.
    pub fn network_rtt(&self) -> Option<Duration> {
        match self.network_rtt_us.load(Ordering::Acquire) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    fn heard_now(&self) {
        let us = u64::try_from(self.born.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.heard_at_us.store(us.max(1), Ordering::Release);
    }

    /// Whether a frame came from the peer within `window`.
    fn heard_within(&self, window: Duration) -> bool {
        let at = self.heard_at_us.load(Ordering::Acquire);
        if at == 0 {
            return false;
        }
        let now = u64::try_from(self.born.elapsed().as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(now.saturating_sub(at)) < window
    }

    /// Waits for a connection: `Ok` once connected, or why the next finished dial failed. A
    /// link already down is dialed again now rather than judged by its last failure, since the
    /// peer may have come up or been fixed since. `None` when `timeout` passes first.
    pub async fn dial_outcome(&self, timeout: Duration) -> Option<Result<(), DialFailure>> {
        let mut dials = self.dials.subscribe();
        let seen = dials.borrow_and_update().0;
        if self.is_connected() {
            return Some(Ok(()));
        }
        self.wake.notify_one();
        let next = tokio::time::timeout(timeout, dials.wait_for(|(n, _)| *n > seen)).await;
        match next {
            Ok(Ok(outcome)) => Some(match &outcome.1 {
                None => Ok(()),
                Some(failure) => Err(failure.clone()),
            }),
            _ => None,
        }
    }

    /// Why the last finished dial failed, if it did.
    pub fn last_failure(&self) -> Option<DialFailure> {
        self.dials.borrow().1.clone()
    }

    fn finish_dial(&self, failure: Option<DialFailure>) {
        self.dials.send_modify(|(n, last)| {
            *n += 1;
            *last = failure;
        });
    }

    pub fn is_connected(&self) -> bool {
        *self.link.borrow() == Link::Connected
    }

    /// Sends one RPC and waits for its reply.
    pub async fn call(&self, rpc: Rpc, timeout: Duration) -> Result<Reply, CallError> {
        let deadline = Instant::now() + timeout;
        self.ready(timeout).await?;
        let sent = self.send(rpc, deadline)?;
        self.reply(sent).await
    }

    /// Waits out a dial under way, then fails at once unless connected.
    pub async fn ready(&self, timeout: Duration) -> Result<(), CallError> {
        let link = *self.link.borrow();
        if link == Link::Dialing {
            let mut rx = self.link.subscribe();
            let _ = tokio::time::timeout(timeout, rx.wait_for(|l| *l != Link::Dialing)).await;
        }
        if self.is_connected() {
            return Ok(());
        }
        // Ask the connection task to retry now rather than after its backoff, unless the peer
        // refused us: that lasts until someone fixes a configuration, and Raft's heartbeats
        // would otherwise turn the backoff into a redial every few milliseconds.
        if !matches!(self.last_failure(), Some(DialFailure::Refused { .. })) {
            self.wake.notify_one();
        }
        Err(CallError::Unreachable(format!(
            "not connected to {}",
            self.target
        )))
    }

    /// Waits up to `limit` for the connection to be up; whether it is.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        let mut link = self.link.subscribe();
        let up = async { link.wait_for(|l| *l == Link::Connected).await.is_ok() };
        tokio::time::timeout(limit, up).await.unwrap_or(false)
    }

    /// A number no other stream of appends on this connection has (see `append_pipeline`).
    pub fn new_stream_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues `rpc` for the connection's writer without waiting for its reply. Frames go out in
    /// the order of these calls, which is what lets appends be pipelined.
    pub fn send(&self, rpc: Rpc, deadline: Instant) -> Result<Sent, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = codec::encode(&Frame::Request { id, rpc }).map_err(CallError::Unreachable)?;
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        self.queue
            .send(Outgoing {
                queued_at: now,
                id,
                bytes,
                reply: tx,
                deadline,
            })
            .map_err(|_| CallError::Unreachable("transport stopped".into()))?;
        Ok(Sent {
            reply: rx,
            sent_at: now,
            deadline,
        })
    }

    /// The reply to a request `send` queued, by its deadline.
    pub async fn reply(&self, sent: Sent) -> Result<Reply, CallError> {
        match tokio::time::timeout_at(sent.deadline.into(), sent.reply).await {
            Ok(Ok(reply)) => {
                self.rtt.observe(sent.sent_at.elapsed());
                Ok(reply)
            }
            Ok(Err(_)) => Err(CallError::Unreachable(format!(
                "connection to {} closed",
                self.target
            ))),
            Err(_) => Err(CallError::Timeout),
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// A peer's round trips (see `PeerPool::round_trips`).
pub struct PeerTrips {
    pub node_id: String,
    pub calls: HistogramReading,
    pub network: Option<Duration>,
}

/// All outbound connections of a node, one per peer.
pub struct PeerPool {
    local: NodeName,
    config: Arc<TransportConfig>,
    events: EventSink,
    peers: Mutex<HashMap<NodeName, Arc<PeerConn>>>,
}

impl PeerPool {
    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    pub fn local(&self) -> &NodeName {
        &self.local
    }

    pub fn new(local: NodeName, config: Arc<TransportConfig>, events: EventSink) -> Arc<Self> {
        Arc::new(PeerPool {
            local,
            config,
            events,
            peers: Mutex::new(HashMap::new()),
        })
    }

    /// The connection to `target`, created (and its task started) on first use; an address
    /// change replaces the old connection.
    pub fn get(&self, target: &NodeName, addr: &PeerAddr) -> Arc<PeerConn> {
        let mut peers = lock(&self.peers);
        if let Some(conn) = peers.get(target) {
            let same_addr = *lock(&conn.addr) == *addr;
            if same_addr {
                return conn.clone();
            }
            conn.close();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let delay = self.config.link_cuts.as_ref().and_then(|cuts| cuts.delay);
        let rx = match delay {
            Some(delay) => hold_back(rx, delay),
            None => rx,
        };
        let conn = Arc::new(PeerConn::new(target.clone(), addr.clone(), tx));
        tokio::spawn(run_connection(
            conn.clone(),
            rx,
            self.local.clone(),
            self.config.clone(),
            self.events.clone(),
        ));
        peers.insert(target.clone(), conn.clone());
        conn
    }

    /// Drops the connection to a peer that left the cluster.
    pub fn forget(&self, target: &NodeName) {
        let removed = lock(&self.peers).remove(target);
        if let Some(conn) = removed {
            conn.close();
        }
    }

    pub fn connected_peers(&self) -> Vec<String> {
        let peers = lock(&self.peers);
        peers
            .values()
            .filter(|c| c.is_connected())
            .map(|c| c.target.0.clone())
            .collect()
    }

    /// Redials now the peers whose last dial failed (a refused one waits up to 30 s otherwise):
    /// after this node's secrets or certificates changed, or when the peer just reached us.
    pub fn redial(&self, target: Option<&NodeName>) {
        let peers = lock(&self.peers);
        for (name, conn) in peers.iter() {
            if target.is_none_or(|t| t == name) && !conn.is_connected() {
                conn.wake.notify_one();
            }
        }
    }

    /// Whether `peer` sent this node a frame of any kind within `window`.
    pub fn heard_within(&self, peer: &NodeName, window: Duration) -> bool {
        lock(&self.peers)
            .get(peer)
            .is_some_and(|c| c.heard_within(window))
    }

    /// Each peer's round trips: the histogram of answered calls, and the network's own round
    /// trip as the connection's start measured it.
    pub fn round_trips(&self) -> Vec<PeerTrips> {
        let peers = lock(&self.peers);
        peers
            .values()
            .map(|c| PeerTrips {
                node_id: c.target.0.clone(),
                calls: c.rtt.read(),
                network: c.network_rtt(),
            })
            .collect()
    }

    pub fn close_all(&self) {
        let drained: Vec<_> = lock(&self.peers).drain().map(|(_, c)| c).collect();
        for conn in drained {
            conn.close();
        }
    }
}

/// Passes each frame on `delay` after it was queued, in order (the link-delay fault hook).
fn hold_back(
    mut queued: mpsc::UnboundedReceiver<Outgoing>,
    delay: Duration,
) -> mpsc::UnboundedReceiver<Outgoing> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(out) = queued.recv().await {
            tokio::time::sleep_until((out.queued_at + delay).into()).await;
            if tx.send(out).is_err() {
                return;
            }
        }
    });
    rx
}

type Ws = WebSocketStream<PeerStream>;

async fn dial(
    addr: &PeerAddr,
    local: &NodeName,
    config: &TransportConfig,
) -> Result<(Ws, handshake::Agreed), DialFailure> {
    use DialFailure::Network;
    let connect = async {
        // A short connect timeout of its own: toward an unreachable host the SYN is dropped, not
        // refused, and the kernel would retry for much longer than a partition needs to heal.
        let tcp = tokio::time::timeout(
            config.connect_timeout,
            TcpStream::connect((addr.host.as_str(), addr.port)),
        )
        .await
        .map_err(|_| Network(format!("connect {addr}: timed out")))?
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                DialFailure::NoListener
            } else {
                Network(format!("connect {addr}: {e}"))
            }
        })?;
        tcp.set_nodelay(true).map_err(|e| Network(e.to_string()))?;
        let stream = match &config.tls {
            Some(tls) => tls.connect(&addr.host, tcp).await.map_err(|e| {
                if tls_refusal(&e) {
                    DialFailure::refused("ERR_AUTH", format!("TLS with {addr} failed: {e}"))
                } else {
                    Network(format!("TLS with {addr}: {e}"))
                }
            })?,
            None => PeerStream::Plain(tcp),
        };
        let (mut ws, _) = client_async_with_config(addr.url(), stream, Some(ws_config(config)))
            .await
            .map_err(|e| Network(format!("websocket handshake with {addr}: {e}")))?;
        let me = handshake::Local {
            cluster_id: &config.cluster_id,
            node_id: &local.0,
            secret: config.secret.as_deref(),
            versions: handshake::SUPPORTED,
            limit: config.max_frame_bytes as u64,
        };
        let agreed = handshake::dial(&mut ws, &me, &addr.to_string()).await?;
        tracing::debug!(peer = %agreed.peer, protocol = agreed.protocol, "connected");
        Ok((ws, agreed))
    };
    tokio::time::timeout(config.handshake_timeout, connect)
        .await
        .map_err(|_| Network(format!("handshake with {addr} timed out")))?
}

async fn run_connection(
    conn: Arc<PeerConn>,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    local: NodeName,
    config: Arc<TransportConfig>,
    events: EventSink,
) {
    let mut backoff = config.reconnect_min;
    let mut refused_backoff: Option<Duration> = None;
    while !conn.closed.load(Ordering::Acquire) {
        let addr = lock(&conn.addr).clone();
        conn.link.send_replace(Link::Dialing);
        let cut = config
            .link_cuts
            .as_ref()
            .is_some_and(|c| c.is_cut(&conn.target.0, outbound_cut));
        let dialed = if cut {
            Err(DialFailure::Network(format!(
                "the link to {} is cut (fault hook)",
                conn.target
            )))
        } else {
            dial(&addr, &local, &config).await
        };
        let dialed = match dialed {
            Ok((_, agreed)) if agreed.peer != conn.target.0 => Err(DialFailure::refused(
                "ERR_INVALID_CONFIG",
                format!(
                    "{addr} answered as {}, expected {}; check the address given for {}",
                    agreed.peer, conn.target, conn.target
                ),
            )),
            other => other,
        };
        match dialed {
            Ok((ws, agreed)) => {
                conn.protocol.store(agreed.protocol, Ordering::Release);
                backoff = config.reconnect_min;
                refused_backoff = None;
                conn.link.send_replace(Link::Connected);
                conn.finish_dial(None);
                events.emit(Event::PeerConnected {
                    node_id: conn.target.0.clone(),
                });
                serve_connection(&conn, ws, &mut queue, &config).await;
                conn.link.send_replace(Link::Down);
                events.emit(Event::PeerDisconnected {
                    node_id: conn.target.0.clone(),
                });
                continue;
            }
            Err(failure) => {
                conn.link.send_replace(Link::Down);
                if let DialFailure::Refused { code, message } = &failure {
                    let text = if code == "ERR_INVALID_CONFIG" {
                        message.clone()
                    } else {
                        format!("{} refused us: {code}: {message}", conn.target)
                    };
                    events.warn_limited(&format!("dial {} {code}", conn.target), "ERR_AUTH", text);
                    refused_backoff = Some(
                        refused_backoff
                            .map(|b| (b * 2).min(REFUSED_MAX))
                            .unwrap_or(REFUSED_MIN),
                    );
                } else {
                    refused_backoff = None;
                }
                conn.finish_dial(Some(failure));
            }
        }
        // Not connected: fail whatever was queued, then wait for the backoff or a wake-up.
        while let Ok(out) = queue.try_recv() {
            drop(out.reply);
        }
        tokio::select! {
            _ = tokio::time::sleep(refused_backoff.unwrap_or(backoff)) => {}
            _ = conn.wake.notified() => {}
        }
        backoff = (backoff * 2).min(config.reconnect_max);
    }
}

/// The payload of the ping that measures a connection's round trip (keepalives carry none).
const RTT_PROBE: &[u8] = b"rtt";

/// Pumps requests out and replies back until the connection breaks or the peer is closed.
async fn serve_connection(
    conn: &PeerConn,
    ws: Ws,
    queue: &mut mpsc::UnboundedReceiver<Outgoing>,
    config: &TransportConfig,
) {
    let (mut sink, mut stream) = ws.split();
    let mut pending: HashMap<u64, (oneshot::Sender<Reply>, Instant)> = HashMap::new();
    let mut keepalive =
        tokio::time::interval(config.contact_interval.min(config.keepalive_interval));
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let limit = config.max_frame_bytes as u64;
    // A connection whose peer went silent (a partition drops packets, it does not close the
    // socket) is given up after a few missed keepalives, so a fresh dial finds the peer as soon
    // as the network heals instead of waiting out TCP's retransmission backoff.
    let silent_limit = config.keepalive_interval * 3;
    let mut last_heard = Instant::now();
    let write_timeout = config.keepalive_interval * 2;
    let cut = until_cut(config.link_cuts.as_ref(), &conn.target.0, outbound_cut);
    tokio::pin!(cut);
    // The network's round trip, before any request: a ping the peer answers without its disk.
    let probe_sent = Instant::now();
    if let Some(delay) = config.link_cuts.as_ref().and_then(|cuts| cuts.delay) {
        tokio::time::sleep(delay).await;
    }
    let probe = sink.send(Message::Ping(RTT_PROBE.to_vec().into()));
    if !matches!(tokio::time::timeout(write_timeout, probe).await, Ok(Ok(()))) {
        return;
    }
    let mut probe_answered = false;
    loop {
        if conn.closed.load(Ordering::Acquire) {
            let _ = sink.close().await;
            return;
        }
        tokio::select! {
            out = queue.recv() => {
                let Some(first) = out else { return };
                // Feed everything already queued, then flush once: one syscall for a burst.
                let mut batch = vec![first];
                while batch.len() < 256 {
                    match queue.try_recv() {
                        Ok(o) => batch.push(o),
                        Err(_) => break,
                    }
                }
                let write = async {
                    for out in batch {
                        pending.insert(out.id, (out.reply, out.deadline));
                        sink.feed(Message::binary(out.bytes)).await?;
                    }
                    sink.flush().await
                };
                // A write that cannot drain (the peer stopped reading) means the link is gone.
                if !matches!(tokio::time::timeout(write_timeout, write).await, Ok(Ok(()))) {
                    return;
                }
            }
            msg = stream.next() => {
                last_heard = Instant::now();
                conn.heard_now();
                match msg {
                    Some(Ok(Message::Binary(bytes))) => match codec::decode(&bytes, limit) {
                        Ok(Frame::Response { id, reply }) => {
                            if let Some((tx, _)) = pending.remove(&id) {
                                let _ = tx.send(reply);
                            }
                        }
                        _ => return,
                    },
                    Some(Ok(Message::Pong(payload))) if !probe_answered && payload.as_ref() == RTT_PROBE => {
                        probe_answered = true;
                        let us = u64::try_from(probe_sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                        conn.network_rtt_us.store(us.max(1), Ordering::Release);
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    _ => return,
                }
            }
            _ = keepalive.tick() => {
                let now = Instant::now();
                pending.retain(|_, (_, deadline)| *deadline > now);
                if now.duration_since(last_heard) > silent_limit {
                    return;
                }
                // While replies flow they tell that the peer is there; a ping then would only
                // wait behind the data this loop is writing.
                if now.duration_since(last_heard) < config.contact_interval {
                    continue;
                }
                let ping = sink.send(Message::Ping(Vec::new().into()));
                if !matches!(tokio::time::timeout(write_timeout, ping).await, Ok(Ok(()))) {
                    return;
                }
            }
            _ = conn.wake.notified() => {}
            _ = &mut cut => return,
        }
    }
}

/// A peer that a unit test plays by hand: it takes each request `PeerConn::send` queued and
/// answers it.
#[cfg(test)]
pub(crate) struct PlayedPeer {
    requests: mpsc::UnboundedReceiver<Outgoing>,
}

#[cfg(test)]
impl PlayedPeer {
    /// A connection that no task serves, and the test's end of it.
    pub(crate) fn connect(target: &str) -> (Arc<PeerConn>, PlayedPeer) {
        let (queue, requests) = mpsc::unbounded_channel();
        let addr = PeerAddr {
            host: "127.0.0.1".into(),
            port: 1,
        };
        let conn = PeerConn::new(NodeName(target.into()), addr, queue);
        (Arc::new(conn), PlayedPeer { requests })
    }

    /// Waits for the next request and answers it with `reply`; false if none came.
    pub(crate) async fn answer_next(&mut self, reply: Reply) -> bool {
        let Some(out) = self.requests.recv().await else {
            return false;
        };
        let _ = out.reply.send(reply);
        true
    }
}
