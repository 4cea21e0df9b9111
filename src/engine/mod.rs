//! A Raft node's lifecycle: storage, transport and openraft wired together, membership changes
//! with the bootstrap rules, command replication, and metrics turned into events.

mod cursor;
mod error;
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
use tokio::sync::{watch, Mutex};

pub use error::{NodeError, ERR};
pub use reads::LinearRead;

use crate::events::EventSink;
use crate::storage::{
    AppSnapshots, Delivery, LogStore, OpenError, ResumeFrom, StateMachine, Store,
};
use crate::transport::client::PeerPool;
use crate::transport::codec::{Reply, Rpc};
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
    pub host: String,
    pub port: u16,
    pub data_dir: PathBuf,
    pub cluster_id: String,
    /// Shared secret every peer must prove it knows at the handshake.
    pub secret: Option<String>,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub snapshot_threshold: u64,
    /// Log entries kept after a snapshot, so slightly lagging followers catch up from the log.
    pub logs_kept_after_snapshot: u64,
    pub bootstrap: Bootstrap,
    pub op_ttl_ms: u64,
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
            secret: config.secret.as_ref().map(|s| s.as_bytes().to_vec()),
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
            config.op_ttl_ms,
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
        tokio::spawn(watcher::watch_metrics(
            raft.clone(),
            id.clone(),
            pool.clone(),
            events.clone(),
            stop_rx.clone(),
        ));

        let addr = PeerAddr {
            host: config.host.clone(),
            port,
        };
        let leader_contact_ms = Arc::new(AtomicU64::new(0));
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
        });
        let server = Arc::new(Server {
            raft,
            node: Arc::downgrade(&node),
            config: transport,
            events,
            leader_contact_ms,
        });
        tokio::spawn(server.run(listener, stop_rx));

        if node.config.bootstrap == Bootstrap::Always && !node.has_state()? {
            node.found().await?;
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

    /// Founds a one-node cluster with this node as its only voter and waits until it leads.
    async fn found(&self) -> Result<(), NodeError> {
        let members = BTreeMap::from([(self.id.clone(), self.addr.clone())]);
        if let Err(e) = self.raft.initialize(members).await {
            // Already initialized is fine: someone (or a restart) got here first.
            if !matches!(e, RaftError::APIError(_)) {
                return Err(NodeError::new(ERR::STORAGE, e.to_string()));
            }
        }
        let me = self.id.clone();
        let deadline = Instant::now() + self.config.add_peer_timeout;
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

    /// Asks a peer whether it already belongs to a cluster. `None` when it cannot be reached.
    async fn probe(
        &self,
        id: &NodeName,
        addr: &PeerAddr,
    ) -> Option<crate::transport::codec::ProbeReply> {
        let conn = self.pool.get(id, addr);
        let deadline = Instant::now() + Duration::from_millis(1500);
        while !conn.is_connected() && Instant::now() < deadline {
            // The connection task dials right away; give it a moment before deciding.
            let _ = conn.call(Rpc::Probe, Duration::from_millis(50)).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match conn.call(Rpc::Probe, Duration::from_millis(1000)).await {
            Ok(Reply::Probe(p)) => Some(p),
            // Refused as a non-member: the peer belongs to a cluster already.
            _ if conn
                .refusal()
                .is_some_and(|r| r.starts_with(ERR_NOT_MEMBER)) =>
            {
                Some(crate::transport::codec::ProbeReply {
                    initialized: true,
                    leader_id: None,
                    voters: Vec::new(),
                })
            }
            _ => None,
        }
    }

    /// Adds a member: as a learner first, then, once it holds the log, as a voter.
    pub async fn add_peer(&self, id: String, addr: PeerAddr) -> Result<(), NodeError> {
        if id == self.id.0 {
            return Err(NodeError::new(
                ERR::INVALID_CONFIG,
                format!("addPeer: '{id}' is this node itself"),
            ));
        }
        let peer = NodeName(id.clone());
        let _guard = self.membership_lock.lock().await;

        let m = self.metrics();
        let is_member = m
            .membership_config
            .membership()
            .get_node(&self.id)
            .is_some();
        if !is_member && !self.has_state()? {
            if self.config.bootstrap == Bootstrap::Never {
                return Err(NodeError::new(
                    ERR::INVALID_CONFIG,
                    "this node has bootstrap: false and belongs to no cluster yet; call addPeer on the cluster's leader",
                ));
            }
            // Founding here is only safe if the peer is not already in a cluster: otherwise we
            // would create a second cluster beside the one it belongs to.
            if let Some(probe) = self.probe(&peer, &addr).await {
                if probe.initialized {
                    let leader = probe.leader_id.clone();
                    return Err(NodeError::new(
                        ERR::NOT_LEADER,
                        format!(
                            "{id} already belongs to a cluster (leader: {}); call addPeer for {} on that cluster's leader instead of founding a new one",
                            leader.as_deref().unwrap_or("unknown"),
                            self.id
                        ),
                    )
                    .with_leader(leader));
                }
            }
            self.found().await?;
        }

        let m = self.metrics();
        if m.current_leader.as_ref() != Some(&self.id) {
            return Err(self.not_leader(&m));
        }
        let membership = m.membership_config.membership();
        let existing = membership.get_node(&peer).cloned();
        let is_voter = membership.voter_ids().any(|v| v == peer);
        if is_voter && existing.as_ref() == Some(&addr) {
            return Ok(());
        }
        if existing.is_some() && existing.as_ref() != Some(&addr) {
            return Err(NodeError::new(
                ERR::INVALID_CONFIG,
                format!(
                    "{id} is already a member at {}; remove it before adding it at {addr}",
                    existing.map(|a| a.to_string()).unwrap_or_default()
                ),
            ));
        }

        let deadline = Instant::now() + self.config.add_peer_timeout;
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
                    .and_then(|r| r.get(&peer).cloned().flatten())
                    .map(|l| l.index());
                matched.is_some() && matched >= target
            })
            .await;
        if !caught_up {
            return Err(NodeError::new(
                ERR::TIMEOUT,
                format!(
                    "{id} at {addr} did not catch up within {} ms and stays a learner; check that it runs and is reachable, then call addPeer again",
                    self.config.add_peer_timeout.as_millis()
                ),
            ));
        }
        if !is_voter {
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([peer])), true)
                .await
                .map_err(|e| self.write_error(e))?;
        }
        Ok(())
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
    pub async fn settle_leadership(&self, deadline: Instant) {
        let me = self.id.clone();
        self.wait_for(deadline, |m| match &m.current_leader {
            Some(leader) if *leader == me => m.state == ServerState::Leader,
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

    pub fn state(&self) -> NodeState {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: Vec<String> = membership.voter_ids().map(|v| v.0).collect();
        let learners: Vec<String> = membership.learner_ids().map(|v| v.0).collect();
        let nodes = membership
            .nodes()
            .map(|(id, addr)| (id.0.clone(), addr.clone()))
            .collect();
        let role = match m.state {
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
            leader_id: m.current_leader.as_ref().map(|l| l.0.clone()),
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
