//! A Raft node's lifecycle: storage, transport and openraft wired together, membership changes
//! with the bootstrap rules, command replication, and metrics turned into events.

mod admin;
mod cursor;
mod error;
mod formation;
mod reads;
mod watcher;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::errors::{ClientWriteError, RaftError};
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::Instant as _;
use openraft::{ChangeMembers, Config, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Mutex};

pub use error::{NodeError, ERR};
use formation::{Answer, Formation, Verdict};
pub use reads::LinearRead;

use crate::events::EventSink;
use crate::storage::{
    AppSnapshots, Delivery, LogStore, OpenError, ResumeFrom, StateMachine, Store,
};
use crate::transport::client::{DialFailure, PeerPool};
use crate::transport::codec::{ClaimReply, Reply, Rpc};
use crate::transport::handshake::Secrets;
use crate::transport::link_cuts::{Cuts, LinkCuts, FAULT_HOOKS_ENV};
use crate::transport::server::{Server, ERR_NOT_MEMBER};
use crate::transport::tls::{Tls, TlsFiles};
use crate::transport::{Network, TransportConfig};
use crate::types::{Applied, Command, NodeName, PeerAddr, Raft, RegistryWrite, TypeConfig};

/// When a fresh node may found a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    /// The first `addPeer` on a node with an empty data directory founds the cluster.
    Auto,
    /// Found the cluster at start when the data directory is empty.
    Always,
    /// Only ever join a cluster that contacts this node.
    Never,
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: String,
    /// The address bound.
    pub host: String,
    /// The address peers dial, recorded in the membership (differs from `host` when that is a
    /// wildcard such as `0.0.0.0`).
    pub advertise_host: String,
    pub port: u16,
    /// Every voter of a cluster to found when the data directory is empty, this node included
    /// (etcd's initial-cluster). Every node given the same list founds the same cluster.
    pub initial_members: Option<Vec<(String, PeerAddr)>>,
    pub data_dir: PathBuf,
    pub cluster_id: String,
    /// Shared secrets: the first proves this node, any verifies a peer (see `Secrets`).
    pub secrets: Vec<String>,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub snapshot_threshold: u64,
    /// Log entries kept after a snapshot, so slightly lagging followers catch up from the log.
    pub logs_kept_after_snapshot: u64,
    pub bootstrap: Bootstrap,
    /// What the operation-id registry remembers (TTL, count, bytes).
    pub id_window: crate::ops::IdWindow,
    /// Default wait for a commit when a call names none.
    pub command_timeout: Duration,
    pub add_peer_timeout: Duration,
    pub map_size_bytes: usize,
    pub max_frame_bytes: usize,
    pub max_connections: usize,
    /// Mutual TLS between nodes.
    pub tls: Option<TlsFiles>,
    /// Where delivery to the application resumes at start.
    pub resume_from: ResumeFrom,
    /// Snapshots carry the application's state from the start (no snapshot without it).
    pub app_snapshots: bool,
}

/// A write's outcome, and whether this node's own state machine applied it (it led) or the
/// leader it was forwarded to did.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub applied: Applied,
    pub here: bool,
}

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
}

pub struct Node {
    id: NodeName,
    addr: PeerAddr,
    config: NodeConfig,
    raft: Raft,
    store: Arc<Store>,
    pool: Arc<PeerPool>,
    stop_tx: watch::Sender<bool>,
    /// Serializes membership changes started on this node (openraft allows one at a time).
    membership_lock: Mutex<()>,
    /// When this node last accepted entries or a heartbeat from a leader (ms since epoch).
    leader_contact_ms: Arc<AtomicU64>,
    app_snapshots: Arc<AppSnapshots>,
    delivery: Arc<Delivery>,
    /// Delivery in this run starts after this index.
    resumed_after: Option<u64>,
    formation: Formation,
    /// Since when this node leads (term, instant), as the metrics watcher saw it: a leader that
    /// no quorum acknowledged yet is given its lease from there.
    leading_since: Arc<std::sync::Mutex<Option<(u64, Instant)>>>,
    dropped_rx: std::sync::Mutex<Option<oneshot::Receiver<()>>>,
    /// Declared last, so it drops after `store`: a receiver that sees it go knows the data
    /// directory's lock went with the node.
    _dropped: oneshot::Sender<()>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How long start waits for openraft's first metrics report; it comes within milliseconds.
const FIRST_METRICS_LIMIT: Duration = Duration::from_secs(5);

/// A forwarded write waits this much beyond the leader's own deadline, so the leader's answer
/// (even a timeout) gets back.
const FORWARD_REPLY_MARGIN: Duration = Duration::from_millis(500);

/// How long a request refused by the leader we know waits for our view to move on before it
/// asks again.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// How long `addPeer` waits for the first dial to a new peer before it goes on: long enough for
/// any peer that answers to refuse the handshake, short enough that the caller hears why
/// within two seconds.
const HANDSHAKE_CHECK: Duration = Duration::from_millis(1500);

/// One claim's wait for a connection, and for its answer.
const CLAIM_WAIT: Duration = Duration::from_millis(1000);

/// Pause before claims that got no answer (the peer timed out or is still connecting) are sent
/// again.
const CLAIM_RETRY: Duration = Duration::from_millis(100);

/// How long a node that just joined waits to learn its leader before forwarding to it.
const LEADER_WAIT: Duration = Duration::from_secs(2);

/// The error code for a peer's handshake refusal, as the caller of `addPeer` sees it.
fn refusal_code(code: &str) -> &'static str {
    match code {
        "ERR_INVALID_CONFIG" | "ERR_PROTOCOL" => ERR::INVALID_CONFIG,
        _ => ERR::AUTH,
    }
}

/// Ends one `addPeer` target registration when the call ends, however it ends.
struct Registration<'a> {
    formation: &'a Formation,
    peer: NodeName,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.formation.release(&self.peer);
    }
}

/// The leader this node knows, with its address.
fn known_leader(m: &RaftMetrics<TypeConfig>) -> Option<(NodeName, PeerAddr)> {
    let leader = m.current_leader.as_ref()?;
    let addr = m.membership_config.membership().get_node(leader)?.clone();
    Some((leader.clone(), addr))
}

/// True once the node has applied the membership it runs under.
fn membership_applied(m: &RaftMetrics<TypeConfig>) -> bool {
    let membership_log = m.membership_config.log_id().map(|l| l.index());
    let applied = m.last_applied.map(|l| l.index());
    membership_log.is_none() || applied >= membership_log
}

impl Node {
    /// Opens storage, binds the Raft port, and starts openraft. Fails fast with
    /// `ERR_ADDRESS_IN_USE` or `ERR_STORAGE` before anything runs.
    pub async fn start(config: NodeConfig, events: EventSink) -> Result<Arc<Node>, NodeError> {
        let listener = TcpListener::bind((config.host.as_str(), config.port))
            .await
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AddrInUse {
                    NodeError::new(
                        ERR::ADDRESS_IN_USE,
                        format!(
                            "port {} on {} is already in use; pick another port or 0 for a free one",
                            config.port, config.host
                        ),
                    )
                } else {
                    NodeError::new(
                        ERR::INVALID_CONFIG,
                        format!("cannot listen on {}:{}: {e}", config.host, config.port),
                    )
                }
            })?;
        let port = listener
            .local_addr()
            .map_err(|e| NodeError::new(ERR::STORAGE, e.to_string()))?
            .port();

        let store = Store::open(&config.data_dir, config.map_size_bytes).map_err(|e| match e {
            OpenError::Locked(_) => NodeError::new(ERR::STORAGE, e.to_string()),
            OpenError::Io(io) => NodeError::new(
                ERR::STORAGE,
                format!(
                    "cannot open data directory {}: {io}",
                    config.data_dir.display()
                ),
            ),
        })?;
        store
            .remember_node_id(&config.node_id)
            .and_then(|()| store.remove_stale_copies().map(drop))
            .map_err(|e| NodeError::new(ERR::STORAGE, e.to_string()))?;

        let raft_config = Config {
            cluster_name: config.cluster_id.clone(),
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: config.election_timeout_max_ms,
            heartbeat_interval: config.heartbeat_interval_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_threshold),
            max_in_snapshot_log_to_keep: config.logs_kept_after_snapshot,
            purge_batch_size: 256,
            install_snapshot_timeout: 10_000,
            enable_pre_vote: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(|e| NodeError::new(ERR::INVALID_CONFIG, e.to_string()))?;

        let tls = match &config.tls {
            Some(files) => Some(Arc::new(Tls::load(files).map_err(|e| {
                NodeError::new(ERR::INVALID_CONFIG, format!("{}: {}", e.field, e.message))
                    .with_field(e.field)
            })?)),
            None => None,
        };
        let transport = Arc::new(TransportConfig {
            node_id: config.node_id.clone(),
            cluster_id: config.cluster_id.clone(),
            secret: Secrets::new(
                config
                    .secrets
                    .iter()
                    .map(|s| s.as_bytes().to_vec())
                    .collect(),
            )
            .map(Arc::new),
            max_frame_bytes: config.max_frame_bytes,
            max_connections: config.max_connections,
            handshake_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_millis(500),
            reconnect_min: Duration::from_millis(20),
            reconnect_max: Duration::from_millis(500),
            tls,
            link_cuts: LinkCuts::from_env(),
        });
        let id = NodeName(config.node_id.clone());
        let pool = PeerPool::new(id.clone(), transport.clone(), events.clone());
        let network = Network { pool: pool.clone() };
        // What a previous run may not have handed to the application goes out first, ahead of
        // anything Raft applies in this run.
        let delivery = Delivery::retaining();
        let replayed = store
            .replay_undelivered(config.resume_from, &delivery, &events)
            .map_err(|e| NodeError::new(ERR::STORAGE, format!("cannot resume delivery: {e}")))?;
        if let Some((first, last)) = replayed.missing {
            events.emit(crate::events::Event::Warning {
                code: ERR::STORAGE,
                message: format!(
                    "entries {first} to {last} are no longer in the log and no snapshot covers them, so they cannot be delivered again; delivery resumed at {}",
                    last + 1
                ),
            });
        }
        let log_store = LogStore::new(store.clone(), delivery.clone());
        let app_snapshots = Arc::new(AppSnapshots::new(Duration::from_secs(60)));
        app_snapshots.enable(config.app_snapshots);
        let state_machine = StateMachine::new(
            store.clone(),
            events.clone(),
            app_snapshots.clone(),
            delivery.clone(),
            config.id_window,
        );
        let raft = Raft::new(
            id.clone(),
            Arc::new(raft_config),
            network,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| NodeError::new(ERR::STORAGE, format!("raft failed to start: {e}")))?;
        // Until its core has run once, openraft publishes placeholder metrics (no log, term 0).
        // Wait for the first real report, so the state read right after start is what is on disk.
        let mut first_report = raft.metrics();
        let _ = tokio::time::timeout(FIRST_METRICS_LIMIT, first_report.changed()).await;

        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(cursor::write_cursor(
            store.clone(),
            delivery.clone(),
            events.clone(),
            stop_rx.clone(),
        ));
        let leading_since = Arc::new(std::sync::Mutex::new(None));
        tokio::spawn(watcher::watch_metrics(
            raft.clone(),
            id.clone(),
            pool.clone(),
            events.clone(),
            leading_since.clone(),
            stop_rx.clone(),
        ));

        let addr = PeerAddr {
            host: config.advertise_host.clone(),
            port,
        };
        let leader_contact_ms = Arc::new(AtomicU64::new(0));
        let (dropped_tx, dropped_rx) = oneshot::channel();
        let formation = Formation::new(id.clone(), config.bootstrap == Bootstrap::Auto);
        let node = Arc::new(Node {
            id,
            addr,
            config,
            raft: raft.clone(),
            store,
            pool,
            stop_tx,
            membership_lock: Mutex::new(()),
            leader_contact_ms: leader_contact_ms.clone(),
            app_snapshots,
            delivery,
            resumed_after: replayed.resumed_after,
            formation,
            leading_since,
            dropped_rx: std::sync::Mutex::new(Some(dropped_rx)),
            _dropped: dropped_tx,
        });
        let server = Arc::new(Server {
            raft,
            node: Arc::downgrade(&node),
            config: transport,
            events,
            leader_contact_ms,
        });
        tokio::spawn(server.run(listener, stop_rx));

        if !node.has_state()? {
            if let Some(members) = node.config.initial_members.clone() {
                node.initialize_members(members).await?;
            } else if node.config.bootstrap == Bootstrap::Always {
                node.found(Instant::now() + node.config.add_peer_timeout)
                    .await?;
            }
        }
        Ok(node)
    }

    pub fn id(&self) -> &str {
        &self.id.0
    }

    /// Replicated registry records under `prefix`, as this node has applied them.
    pub fn registry(&self, prefix: &str) -> Result<Vec<(String, String)>, NodeError> {
        self.store
            .registry_entries(prefix)
            .map_err(|e| NodeError::new(ERR::STORAGE, e.to_string()))
    }

    /// Where this replica's state machine applied operation `op_id`: `(index, term)`, or `None`
    /// when it has not applied it (or its id expired from the registry).
    pub fn operation(&self, op_id: &str) -> Result<Option<(u64, u64)>, NodeError> {
        StateMachine::find_op(&self.store, op_id)
            .map(|found| found.map(|op| (op.index, op.term)))
            .map_err(|e| NodeError::new(ERR::STORAGE, e.to_string()))
    }

    /// Fault injection: stop dialing the `outbound` peers and accepting the `inbound` ones, and
    /// drop such connections now. Only in a process started with the fault-hook variable set.
    pub fn set_link_cuts(&self, cuts: Cuts) -> Result<(), NodeError> {
        let Some(link_cuts) = &self.pool.config().link_cuts else {
            return Err(NodeError::new(
                ERR::INVALID_OPERATION,
                format!(
                    "link cuts are for fault tests; start the process with {FAULT_HOOKS_ENV}=1"
                ),
            ));
        };
        link_cuts.set(cuts);
        Ok(())
    }

    /// The index after which this run's delivery started (what earlier runs handed over).
    pub fn resumed_after(&self) -> Option<u64> {
        self.resumed_after
    }

    /// Replaces the cluster secrets (rotation): the first proves this node from now on, any of
    /// them is accepted from peers. Connections already open stay.
    pub fn set_secrets(&self, secrets: Vec<String>) -> Result<(), NodeError> {
        let Some(current) = &self.pool.config().secret else {
            return Err(NodeError::new(
                ERR::INVALID_OPERATION,
                "this node was started without a secret; start every node with one to use secrets",
            ));
        };
        if !current.set(secrets.into_iter().map(String::into_bytes).collect()) {
            return Err(NodeError::new(
                ERR::INVALID_CONFIG,
                "secret: at least one secret is required once a cluster uses them",
            )
            .with_field("secret"));
        }
        self.pool.redial(None);
        Ok(())
    }

    /// A peer completed a handshake with us: whatever refused our dials to it may be fixed.
    pub fn peer_reached_us(&self, peer: &NodeName) {
        self.pool.redial(Some(peer));
    }

    /// Reads the TLS files again: new connections use the new certificate, key and CA; open
    /// ones keep theirs until they reconnect. A file that does not load changes nothing.
    pub fn reload_tls(&self) -> Result<(), NodeError> {
        let Some(tls) = &self.pool.config().tls else {
            return Err(NodeError::new(
                ERR::INVALID_OPERATION,
                "this node was started without tls; there is nothing to reload",
            ));
        };
        tls.reload().map_err(|e| {
            NodeError::new(ERR::INVALID_CONFIG, format!("{}: {}", e.field, e.message))
                .with_field(e.field)
        })?;
        self.pool.redial(None);
        Ok(())
    }

    /// JavaScript ran the listeners of every entry up to `index`.
    pub fn delivered(&self, index: u64) {
        self.delivery.ack(index);
    }

    /// Whether snapshots ask the application for its state (see `provide_app_snapshot`).
    pub fn enable_app_snapshots(&self, on: bool) {
        self.app_snapshots.enable(on);
    }

    /// The application's state for snapshot request `id`.
    pub fn provide_app_snapshot(&self, id: u64, state: Option<String>) -> bool {
        self.app_snapshots.provide(id, state)
    }

    pub fn command_timeout(&self) -> Duration {
        self.config.command_timeout
    }

    pub fn port(&self) -> u16 {
        self.addr.port
    }

    fn metrics(&self) -> RaftMetrics<TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    fn has_state(&self) -> Result<bool, NodeError> {
        self.store
            .has_raft_state()
            .map_err(|e| NodeError::new(ERR::STORAGE, e.to_string()))
    }

    /// Waits until `done` holds for the metrics, or the deadline passes.
    async fn wait_for(
        &self,
        deadline: Instant,
        mut done: impl FnMut(&RaftMetrics<TypeConfig>) -> bool,
    ) -> bool {
        let mut rx = self.raft.metrics();
        loop {
            if done(&rx.borrow_watched()) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match tokio::time::timeout(left, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return done(&rx.borrow_watched()),
            }
        }
    }

    /// Founds the cluster of `initialMembers`. Every member given the same list does the same,
    /// which openraft allows: identical initial configs elect one leader among them. No wait for
    /// a leader here: the others may start much later.
    async fn initialize_members(&self, members: Vec<(String, PeerAddr)>) -> Result<(), NodeError> {
        self.formation.mark_founded();
        let members: BTreeMap<NodeName, PeerAddr> = members
            .into_iter()
            .map(|(id, addr)| (NodeName(id), addr))
            .collect();
        if let Err(e) = self.raft.initialize(members).await {
            if !matches!(e, RaftError::APIError(_)) {
                return Err(NodeError::new(ERR::STORAGE, e.to_string()));
            }
        }
        Ok(())
    }

    /// Founds a one-node cluster with this node as its only voter and waits until it leads.
    async fn found(&self, deadline: Instant) -> Result<(), NodeError> {
        // From here on, claims from other fresh nodes are answered as by a member.
        self.formation.mark_founded();
        let members = BTreeMap::from([(self.id.clone(), self.addr.clone())]);
        if let Err(e) = self.raft.initialize(members).await {
            // Already initialized is fine: someone (or a restart) got here first.
            if !matches!(e, RaftError::APIError(_)) {
                return Err(NodeError::new(ERR::STORAGE, e.to_string()));
            }
        }
        let me = self.id.clone();
        // Leading is not enough: the founding membership must be committed before the next
        // membership change may start.
        if !self
            .wait_for(deadline, |m| {
                m.current_leader.as_ref() == Some(&me) && membership_applied(m)
            })
            .await
        {
            return Err(NodeError::new(
                ERR::TIMEOUT,
                "the new cluster did not elect this node in time",
            ));
        }
        Ok(())
    }

    fn not_leader(&self, m: &RaftMetrics<TypeConfig>) -> NodeError {
        let leader = m.current_leader.as_ref().map(|l| l.0.clone());
        let hint = match &leader {
            Some(l) => format!("this node ({}) is not the leader; send it to {l}", self.id),
            None => format!(
                "this node ({}) is not the leader and no leader is known yet; retry shortly",
                self.id
            ),
        };
        NodeError::new(ERR::NOT_LEADER, hint).with_leader(leader)
    }

    /// Registers the target of an `addPeer` call before the call runs. JavaScript does this
    /// synchronously for every call, so the calls made in one run are all known to the first
    /// claim round: see `formation`. The call itself then passes `registered: true`.
    pub fn expect_peer(&self, id: &str, addr: PeerAddr) {
        if id != self.id.0 {
            self.formation.expect(NodeName(id.to_string()), addr);
        }
    }

    /// Adds a member: as a learner first, then, once it holds the log, as a voter. On a
    /// follower it is forwarded to the leader; on a fresh node it founds the cluster, unless
    /// another fresh node does (see `formation`).
    pub async fn add_peer(
        &self,
        id: String,
        addr: PeerAddr,
        registered: bool,
    ) -> Result<(), NodeError> {
        let peer = NodeName(id.clone());
        if peer == self.id {
            return Err(NodeError::new(
                ERR::INVALID_CONFIG,
                format!("addPeer: '{id}' is this node itself"),
            ));
        }
        if !registered {
            self.formation.expect(peer.clone(), addr.clone());
        }
        let _registration = Registration {
            formation: &self.formation,
            peer: peer.clone(),
        };
        let deadline = Instant::now() + self.config.add_peer_timeout;
        let result = self.add_peer_until(&peer, &addr, deadline, true).await;
        if result.is_err() && self.membership_addr(&peer).is_none() {
            // Stop dialing a peer that did not make it in.
            self.pool.forget(&peer);
        }
        result
    }

    /// `addPeer` forwarded by a follower: this node must be the leader.
    pub async fn add_forwarded_peer(
        &self,
        id: String,
        addr: PeerAddr,
        timeout: Duration,
    ) -> Result<(), NodeError> {
        let peer = NodeName(id);
        self.add_peer_until(&peer, &addr, Instant::now() + timeout, false)
            .await
    }

    fn membership_addr(&self, peer: &NodeName) -> Option<PeerAddr> {
        self.metrics()
            .membership_config
            .membership()
            .get_node(peer)
            .cloned()
    }

    fn is_fresh(&self) -> Result<bool, NodeError> {
        Ok(self.membership_addr(&self.id).is_none() && !self.has_state()?)
    }

    async fn add_peer_until(
        &self,
        peer: &NodeName,
        addr: &PeerAddr,
        deadline: Instant,
        forward: bool,
    ) -> Result<(), NodeError> {
        self.check_handshake(peer, addr, deadline).await?;
        let guard = self.membership_lock.lock().await;
        if forward && self.is_fresh()? {
            if self.config.bootstrap == Bootstrap::Never {
                return Err(NodeError::new(
                    ERR::INVALID_CONFIG,
                    "this node has bootstrap: false and belongs to no cluster yet; call addPeer on the cluster's leader",
                ));
            }
            // Either this node founded and leads, or it was added to another's cluster and the
            // call goes on to that cluster's leader below.
            self.settle_founding(deadline).await?;
        }

        let m = self.metrics();
        if m.current_leader.as_ref() != Some(&self.id) {
            drop(guard);
            if !forward {
                return Err(self.not_leader(&m));
            }
            return self.forward_add(peer, addr, deadline).await;
        }
        let id = &peer.0;
        let membership = m.membership_config.membership();
        let existing = membership.get_node(peer).cloned();
        let is_voter = membership.voter_ids().any(|v| v == *peer);
        if is_voter && existing.as_ref() == Some(addr) {
            return Ok(());
        }
        if existing.is_some() && existing.as_ref() != Some(addr) {
            return Err(NodeError::new(
                ERR::INVALID_CONFIG,
                format!(
                    "{id} is already a member at {}; remove it before adding it at {addr}",
                    existing.map(|a| a.to_string()).unwrap_or_default()
                ),
            ));
        }

        // A new leader may still be committing the membership it inherited; openraft allows one
        // membership change at a time.
        self.wait_for(deadline, membership_applied).await;
        if existing.is_none() {
            self.raft
                .add_learner(peer.clone(), addr.clone(), false)
                .await
                .map_err(|e| self.write_error(e))?;
        }
        let target = self.metrics().last_log_index;
        let caught_up = self
            .wait_for(deadline, |m| {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(peer).cloned().flatten())
                    .map(|l| l.index());
                matched.is_some() && matched >= target
            })
            .await;
        if !caught_up {
            // Read before the withdrawal, which drops the connection and what it learnt.
            let why = match self.pool.get(peer, addr).last_failure() {
                Some(failure) => format!("the last attempt to reach it: {failure}"),
                None => "it was reachable but did not take the log".to_string(),
            };
            // The learner this call added goes again, so a wrong address leaves nothing behind
            // and a retry with the right one is not refused as "already a member".
            let withdrawn = existing.is_none()
                && self
                    .raft
                    .change_membership(
                        ChangeMembers::RemoveNodes(BTreeSet::from([peer.clone()])),
                        false,
                    )
                    .await
                    .is_ok();
            let next = if withdrawn {
                "it was not added; check that it runs and listens there (and the address given), then call addPeer again"
            } else {
                "it stays a learner; check that it runs and is reachable: it becomes a voter once addPeer is called again and it catches up"
            };
            return Err(NodeError::new(
                ERR::TIMEOUT,
                format!(
                    "{id} at {addr} did not catch up within {} ms ({why}); {next}",
                    self.config.add_peer_timeout.as_millis()
                ),
            ));
        }
        if !is_voter {
            self.raft
                .change_membership(
                    ChangeMembers::AddVoterIds(BTreeSet::from([peer.clone()])),
                    true,
                )
                .await
                .map_err(|e| self.write_error(e))?;
        }
        Ok(())
    }

    /// A peer that refuses our handshake (wrong or missing secret, another cluster, another node
    /// at that address, a certificate we or it do not trust) can never join: say why now,
    /// instead of founding a cluster or adding a learner that never catches up. A peer that is
    /// merely unreachable may come up later, so the call goes on.
    async fn check_handshake(
        &self,
        peer: &NodeName,
        addr: &PeerAddr,
        deadline: Instant,
    ) -> Result<(), NodeError> {
        if self.membership_addr(peer).is_some() {
            // A member already: its connection stays as it is.
            return Ok(());
        }
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(HANDSHAKE_CHECK);
        let conn = self.pool.get(peer, addr);
        match conn.dial_outcome(wait).await {
            Some(Err(DialFailure::Refused { code, message })) if code != ERR_NOT_MEMBER => {
                Err(NodeError::new(
                    refusal_code(&code),
                    format!("{peer} at {addr} refused the handshake: {message}"),
                ))
            }
            _ => Ok(()),
        }
    }

    /// On a fresh node: claims the targets of the pending `addPeer` calls until this node may
    /// found the cluster (and does), or defers to another node and waits to be added.
    async fn settle_founding(&self, deadline: Instant) -> Result<(), NodeError> {
        let mut changes = self.formation.subscribe();
        let me = self.id.clone();
        let added =
            |m: &RaftMetrics<TypeConfig>| m.membership_config.membership().get_node(&me).is_some();
        loop {
            changes.borrow_and_update();
            if !self.is_fresh()? {
                return Ok(());
            }
            let verdict = self.formation.evaluate();
            match verdict {
                Verdict::Found => {
                    return self.found(deadline).await;
                }
                Verdict::Deferred { to, member } => {
                    return self.wait_until_added(&to, member, deadline).await;
                }
                Verdict::Ask(targets) => {
                    let claims = targets.into_iter().map(|(target, addr)| async move {
                        let answer = self.claim(&target, &addr, deadline).await;
                        (target, answer)
                    });
                    let mut learnt = false;
                    for (target, answer) in futures_util::future::join_all(claims).await {
                        if let Some(answer) = answer {
                            self.formation.record(target, answer);
                            learnt = true;
                        }
                    }
                    if !learnt {
                        // Nobody answered (still connecting, or too slow): ask again shortly.
                        let pause = (Instant::now() + CLAIM_RETRY).min(deadline);
                        tokio::select! {
                            _ = changes.changed() => {}
                            _ = self.wait_for(pause, added) => {}
                        }
                    }
                }
                Verdict::Wait => {
                    tokio::select! {
                        _ = changes.changed() => {}
                        _ = self.wait_for(deadline, added) => {}
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(NodeError::new(
                    ERR::TIMEOUT,
                    format!(
                        "the fresh nodes this node adds did not settle who founds the cluster within {} ms; check that they run and are reachable, or start every node with the same initialMembers",
                        self.config.add_peer_timeout.as_millis()
                    ),
                ));
            }
        }
    }

    /// Asks `target` to let this node found the cluster. `None`: no answer (yet).
    async fn claim(&self, target: &NodeName, addr: &PeerAddr, deadline: Instant) -> Option<Answer> {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(CLAIM_WAIT);
        let conn = self.pool.get(target, addr);
        match conn.dial_outcome(wait).await? {
            Ok(()) => {}
            Err(DialFailure::NoListener) => return Some(Answer::Absent),
            // Refused as a non-member: the peer belongs to a cluster already.
            Err(DialFailure::Refused { code, .. }) if code == ERR_NOT_MEMBER => {
                return Some(Answer::Member(None))
            }
            Err(_) => return None,
        }
        match conn.call(Rpc::Claim, wait).await {
            Ok(Reply::Claim(reply)) => Some(Answer::from_reply(reply, target)),
            _ => None,
        }
    }

    /// Answers another fresh node's claim to found the cluster.
    pub fn answer_claim(&self, claimer: &str) -> ClaimReply {
        let m = self.metrics();
        let member = ClaimReply::Member {
            leader_id: m.current_leader.as_ref().map(|l| l.0.clone()),
        };
        // Unknown storage state: answering as a member is the answer that founds nothing.
        if !self.is_fresh().unwrap_or(false) {
            return member;
        }
        self.formation
            .on_claim(&NodeName(claimer.to_string()))
            .unwrap_or(member)
    }

    /// After deferring to `to`: waits until some leader adds this node.
    async fn wait_until_added(
        &self,
        to: &NodeName,
        member: bool,
        deadline: Instant,
    ) -> Result<(), NodeError> {
        let me = self.id.clone();
        let added = self
            .wait_for(deadline, |m| {
                m.membership_config.membership().get_node(&me).is_some()
            })
            .await;
        if added {
            return Ok(());
        }
        let ms = self.config.add_peer_timeout.as_millis();
        Err(if member {
            let leader = self.formation.leader_hint(to);
            NodeError::new(
                ERR::NOT_LEADER,
                format!(
                    "{to} already belongs to a cluster (leader: {}) and it did not add {me} within {ms} ms; call addPeer for {me} on that cluster's leader instead of founding a new one",
                    leader.as_deref().unwrap_or("unknown")
                ),
            )
            .with_leader(leader)
        } else {
            NodeError::new(
                ERR::TIMEOUT,
                format!(
                    "{me} left founding the cluster to {to}, which did not add it within {ms} ms; call addPeer for {me} on {to} or on its cluster's leader"
                ),
            )
        })
    }

    /// Sends `addPeer` on to the leader this node knows.
    async fn forward_add(
        &self,
        peer: &NodeName,
        addr: &PeerAddr,
        deadline: Instant,
    ) -> Result<(), NodeError> {
        // A node that was just added may not have heard from its leader yet, or heard from it
        // before the log carrying the membership (and so the leader's address) arrived.
        let settle = (Instant::now() + LEADER_WAIT).min(deadline);
        self.wait_for(settle, |m| {
            known_leader(m).is_some_and(|(leader, _)| leader != self.id)
        })
        .await;
        // Nor be connected to it yet: an earlier dial (a claim while it was not running) may
        // have left the link down until its next retry.
        if let Some((leader, leader_addr)) = known_leader(&self.metrics()) {
            let conn = self.pool.get(&leader, &leader_addr);
            if !conn.is_connected() {
                let left = deadline.saturating_duration_since(Instant::now());
                let _ = conn.dial_outcome(left.min(HANDSHAKE_CHECK)).await;
            }
        }
        let reply = self
            .call_leader(deadline, true, |left| Rpc::AddMember {
                node_id: peer.0.clone(),
                host: addr.host.clone(),
                port: addr.port,
                timeout_ms: left.saturating_sub(FORWARD_REPLY_MARGIN).as_millis() as u64,
            })
            .await?;
        match reply {
            Reply::Done(result) => result.map_err(NodeError::from),
            other => Err(NodeError::new(
                ERR::TIMEOUT,
                format!("the leader gave no answer to a forwarded addPeer: {other:?}"),
            )),
        }
    }

    /// Removes a member (voter or learner) from the cluster. With `forward`, a node that is not
    /// the leader asks the leader to do it (how a leader that handed over removes itself).
    pub async fn remove_peer(&self, id: String, forward: bool) -> Result<(), NodeError> {
        let peer = NodeName(id.clone());
        let _guard = self.membership_lock.lock().await;
        let m = self.metrics();
        if m.current_leader.as_ref() != Some(&self.id) {
            if !forward {
                return Err(self.not_leader(&m));
            }
            let deadline = Instant::now() + self.config.add_peer_timeout;
            return self
                .call_leader(deadline, true, |_| Rpc::RemoveMember {
                    node_id: id.clone(),
                })
                .await
                .and_then(|reply| match reply {
                    Reply::Done(result) => result.map_err(NodeError::from),
                    other => Err(NodeError::new(
                        ERR::TIMEOUT,
                        format!("the leader gave no answer to a forwarded removal: {other:?}"),
                    )),
                });
        }
        let membership = m.membership_config.membership();
        if membership.get_node(&peer).is_none() {
            return Err(NodeError::new(
                ERR::NODE_NOT_FOUND,
                format!("{id} is not a member of this cluster"),
            ));
        }
        if membership.voter_ids().any(|v| v == peer) {
            self.raft
                .change_membership(
                    ChangeMembers::RemoveVoters(BTreeSet::from([peer.clone()])),
                    false,
                )
                .await
                .map_err(|e| self.write_error(e))?;
        } else {
            self.raft
                .change_membership(
                    ChangeMembers::RemoveNodes(BTreeSet::from([peer.clone()])),
                    false,
                )
                .await
                .map_err(|e| self.write_error(e))?;
        }
        if peer != self.id {
            self.pool.forget(&peer);
        }
        Ok(())
    }

    /// Hands leadership to `to` and waits until it leads.
    pub async fn transfer_leadership(
        &self,
        to: String,
        timeout: Duration,
    ) -> Result<(), NodeError> {
        let target = NodeName(to.clone());
        let m = self.metrics();
        if m.current_leader.as_ref() != Some(&self.id) {
            return Err(self.not_leader(&m));
        }
        if !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == target)
        {
            return Err(NodeError::new(
                ERR::NODE_NOT_FOUND,
                format!("{to} is not a voter of this cluster"),
            ));
        }
        self.raft
            .trigger()
            .transfer_leader(target.clone())
            .await
            .map_err(|e| NodeError::new(ERR::SHUTDOWN, e.to_string()))?;
        let deadline = Instant::now() + timeout;
        if self
            .wait_for(deadline, |m| m.current_leader.as_ref() == Some(&target))
            .await
        {
            Ok(())
        } else {
            Err(NodeError::new(
                ERR::TIMEOUT,
                format!("{to} did not take over leadership in time"),
            ))
        }
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
        match tokio::time::timeout(timeout, self.raft.client_write(command)).await {
            Ok(Ok(resp)) => Ok(here(resp.data)),
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
            .call_leader(deadline, retry, |left| Rpc::Forward {
                json: json.clone(),
                op_id: op_id.clone(),
                registry: registry.clone(),
                timeout_ms: left.saturating_sub(FORWARD_REPLY_MARGIN).as_millis() as u64,
            })
            .await?;
        match reply {
            Reply::Forwarded(result) => result.map_err(NodeError::from),
            other => Err(NodeError::new(
                ERR::TIMEOUT,
                format!("the leader gave no answer to a forwarded write: {other:?}"),
            )),
        }
    }

    /// Sends a request to the leader this node knows. With `retry`, a leader that answers
    /// ERR_NOT_LEADER (leadership moved while the request travelled) is followed to the leader it
    /// names, until `deadline`. `make_rpc` gets the time left.
    async fn call_leader(
        &self,
        deadline: Instant,
        retry: bool,
        make_rpc: impl Fn(Duration) -> Rpc,
    ) -> Result<Reply, NodeError> {
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
            let reply = self
                .pool
                .get(&leader, &addr)
                .call(make_rpc(left), left)
                .await
                .map_err(|e| {
                    NodeError::new(
                        ERR::NOT_LEADER,
                        format!("could not reach leader {leader}: {e}"),
                    )
                    .with_leader(Some(leader.0.clone()))
                })?;
            let refused = match &reply {
                Reply::Forwarded(Err(e)) | Reply::Done(Err(e)) | Reply::ReadIndex(Err(e)) => {
                    ERR::from_wire(&e.code) == ERR::NOT_LEADER
                }
                _ => false,
            };
            if !(refused && retry) || Instant::now() >= deadline {
                return Ok(reply);
            }
            asked = Some(leader);
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
    pub async fn settle_leadership(&self, deadline: Instant) {
        let me = self.id.clone();
        self.wait_for(deadline, |m| match &m.current_leader {
            Some(leader) if *leader == me => m.state == ServerState::Leader && !self.quorum_lost(m),
            Some(_) => true,
            None => false,
        })
        .await;
    }

    /// Round trip to a member, for health checks. Fails when it does not answer in time.
    pub async fn ping(&self, node_id: &str, timeout: Duration) -> Result<Duration, NodeError> {
        let peer = NodeName(node_id.to_string());
        if peer == self.id {
            return Ok(Duration::ZERO);
        }
        let m = self.metrics();
        let Some(addr) = m.membership_config.membership().get_node(&peer).cloned() else {
            return Err(NodeError::new(
                ERR::NODE_NOT_FOUND,
                format!("{node_id} is not a member of this cluster"),
            ));
        };
        let started = Instant::now();
        match self.pool.get(&peer, &addr).call(Rpc::Probe, timeout).await {
            Ok(Reply::Probe(_)) => Ok(started.elapsed()),
            Ok(other) => Err(NodeError::new(
                ERR::TIMEOUT,
                format!("{node_id}: {other:?}"),
            )),
            Err(e) => Err(NodeError::new(ERR::TIMEOUT, format!("{node_id}: {e}"))),
        }
    }

    /// Snapshots the state machine now and purges the log up to `keep` entries before the
    /// snapshot. Resolves with the purge point once both are done.
    pub async fn compact(&self, keep: u64, timeout: Duration) -> Result<Option<u64>, NodeError> {
        let Some(target) = self.metrics().last_applied.map(|l| l.index()) else {
            return Ok(None);
        };
        let stopped =
            |e: openraft::errors::Fatal<TypeConfig>| NodeError::new(ERR::SHUTDOWN, e.to_string());
        self.raft.trigger().snapshot().await.map_err(stopped)?;
        let deadline = Instant::now() + timeout;
        let snapshotted = self
            .wait_for(deadline, |m| m.snapshot.map(|l| l.index()) >= Some(target))
            .await;
        if !snapshotted {
            return Err(NodeError::new(
                ERR::TIMEOUT,
                "the snapshot did not finish in time",
            ));
        }
        let snapshot = self.metrics().snapshot.map(|l| l.index()).unwrap_or(target);
        let Some(upto) = snapshot.checked_sub(keep) else {
            return Ok(None);
        };
        self.raft.trigger().purge_log(upto).await.map_err(stopped)?;
        self.wait_for(deadline, |m| m.purged.map(|l| l.index()) >= Some(upto))
            .await;
        Ok(Some(upto))
    }

    /// etcd's CheckQuorum: a leader that no quorum acknowledged within the leader lease
    /// (`electionTimeoutMax`, as openraft's own lease) does not claim leadership: a majority
    /// elsewhere may have elected another leader meanwhile. A single voter is its own quorum.
    fn quorum_lost(&self, m: &RaftMetrics<TypeConfig>) -> bool {
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
    async fn fresh_lease(&self, timeout: Duration) -> bool {
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

    fn no_quorum_error(&self) -> NodeError {
        NodeError::new(
            ERR::NO_QUORUM,
            format!(
                "this node ({}) leads but has not heard from a majority of the voters for {} ms; nothing was written. Retry once the cluster heals (another node may lead by then)",
                self.id, self.config.election_timeout_max_ms
            ),
        )
    }

    /// Runs `work` unless the node stops first; then it ends with `ERR_SHUTDOWN`, and lets go of
    /// the node so that `stop()` can release the data directory.
    pub async fn unless_stopped<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, NodeError>>,
    ) -> Result<T, NodeError> {
        let mut stop = self.stop_tx.subscribe();
        let stopped = || {
            NodeError::new(
                ERR::SHUTDOWN,
                format!("node {} stopped while the call was in flight", self.id),
            )
        };
        if *stop.borrow_and_update() {
            return Err(stopped());
        }
        let result = tokio::select! {
            result = work => result,
            _ = stop.wait_for(|stopping| *stopping) => Err(stopped()),
        };
        // Work that failed because the node was stopping (a wait cut short) reports the stop,
        // whichever of the two the select saw first.
        match result {
            Err(_) if *stop.borrow() => Err(stopped()),
            other => other,
        }
    }

    /// Resolves once this node is dropped, with its storage: taken once, by `stop()`'s caller.
    pub fn dropped(&self) -> Option<oneshot::Receiver<()>> {
        crate::lock(&self.dropped_rx).take()
    }

    fn no_progress_error(&self, timeout: Duration) -> NodeError {
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
                ERR::NO_QUORUM,
                format!(
                    "no majority reachable: {reachable} of {} voters; the command was not committed within {ms} ms and may still commit if the cluster heals",
                    voters.len()
                ),
            )
        } else {
            NodeError::new(
                ERR::TIMEOUT,
                format!("the command was not committed within {ms} ms; it may still commit"),
            )
        }
    }

    fn write_error(&self, e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> NodeError {
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
                    ERR::NOT_LEADER,
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
            RaftError::APIError(other) => NodeError::new(ERR::INVALID_OPERATION, other.to_string()),
            RaftError::Fatal(f) => NodeError::new(ERR::SHUTDOWN, format!("raft stopped: {f}")),
        }
    }

    /// Disk timings of this node's storage, for metrics.
    pub fn storage_stats(&self) -> Arc<crate::stats::StorageStats> {
        self.store.stats().clone()
    }

    /// Round-trip histograms of calls to each peer, for metrics.
    pub fn round_trips(&self) -> Vec<(String, crate::stats::HistogramReading)> {
        self.pool.round_trips()
    }

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

    /// Stops Raft, the server and every connection. Data stays on disk.
    pub async fn stop(&self) {
        let _ = self.stop_tx.send(true);
        let _ = self.raft.shutdown().await;
        self.pool.close_all();
        // openraft's storage workers wind down just after shutdown returns; wait until they have
        // let go of the store, so the data directory's lock goes with this node (bounded: a
        // wedged worker must not hang stop()).
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.store) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
