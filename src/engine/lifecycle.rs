//! Starting a node (storage, transport, openraft, the watchers) and stopping it.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::errors::RaftError;
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::{Config, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Mutex};

use super::formation::Formation;
use super::{
    compaction, cursor, membership_applied, watcher, Bootstrap, ErrorCode, Node, NodeConfig,
    NodeError,
};
use crate::events::EventSink;
use crate::storage::{AppSnapshots, Delivery, LogStore, OpenError, StateMachine, Store};
use crate::transport::client::PeerPool;
use crate::transport::handshake::Secrets;
use crate::transport::link_cuts::LinkCuts;
use crate::transport::server::{AppHandler, Server};
use crate::transport::tls::Tls;
use crate::transport::{Network, TransportConfig};
use crate::types::{NodeName, PeerAddr, Raft};

/// How long start waits for openraft's first metrics report; it comes within milliseconds.
const FIRST_METRICS_LIMIT: Duration = Duration::from_secs(5);

impl Node {
    /// Opens storage, binds the Raft port, and starts openraft. Fails fast with
    /// `ERR_ADDRESS_IN_USE` or `ERR_STORAGE` before anything runs.
    pub async fn start(config: NodeConfig, events: EventSink) -> Result<Arc<Node>, NodeError> {
        let listener = TcpListener::bind((config.host.as_str(), config.port))
            .await
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AddrInUse {
                    NodeError::new(
                        ErrorCode::AddressInUse,
                        format!(
                            "port {} on {} is already in use; pick another port or 0 for a free one",
                            config.port, config.host
                        ),
                    )
                } else {
                    NodeError::new(
                        ErrorCode::InvalidConfig,
                        format!("cannot listen on {}:{}: {e}", config.host, config.port),
                    )
                }
            })?;
        let port = listener.local_addr().map_err(NodeError::storage)?.port();

        let store = Store::open(&config.data_dir, config.map_size_bytes).map_err(|e| match e {
            OpenError::Locked(_) => NodeError::storage(e),
            OpenError::Io(io) => NodeError::new(
                ErrorCode::Storage,
                format!(
                    "cannot open data directory {}: {io}",
                    config.data_dir.display()
                ),
            )
            .with_cause(io),
        })?;
        store
            .remember_node_id(&config.node_id)
            .and_then(|()| store.remove_stale_copies().map(drop))
            .map_err(NodeError::storage)?;

        let election = config.raft_election_timeouts();
        let raft_config = Config {
            cluster_name: config.cluster_id.clone(),
            election_timeout_min: election.min_ms,
            election_timeout_max: election.max_ms,
            heartbeat_interval: config.heartbeat_interval_ms,
            // `compaction` decides when, from the snapshot's cost as well as the log's length.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: config.logs_kept_after_snapshot,
            purge_batch_size: 256,
            install_snapshot_timeout: 10_000,
            enable_pre_vote: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(|e| NodeError::new(ErrorCode::InvalidConfig, e.to_string()))?;

        let tls = match &config.tls {
            Some(files) => Some(Arc::new(Tls::load(files).map_err(|e| {
                NodeError::new(
                    ErrorCode::InvalidConfig,
                    format!("{}: {}", e.field, e.message),
                )
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
            contact_interval: Duration::from_millis(config.heartbeat_interval_ms.max(1)),
            reconnect_min: Duration::from_millis(20),
            reconnect_max: Duration::from_millis(500),
            tls,
            link_cuts: LinkCuts::from_env(),
        });
        let id = NodeName(config.node_id.clone());
        let pool = PeerPool::new(id.clone(), transport.clone(), events.clone());
        let network = Network { pool: pool.clone() };
        // What a previous run may not have handed to the application goes out first, ahead of
        // anything Raft applies in this run (see `catch_up`).
        let delivery = Delivery::retaining();
        delivery.begin_start();
        let replayed = store
            .replay_undelivered(config.resume_from, &delivery, &events)
            .map_err(|e| {
                NodeError::new(ErrorCode::Storage, format!("cannot resume delivery: {e}"))
                    .with_cause(e)
            })?;
        if let Some((first, last)) = replayed.missing {
            events.emit(crate::events::Event::Warning {
                code: ErrorCode::Storage.as_str(),
                message: format!(
                    "entries {first} to {last} are no longer in the log and no snapshot covers them, so they cannot be delivered again; delivery resumed at {}",
                    last + 1
                ),
            });
        }
        let log_store = LogStore::new(store.clone(), delivery.clone()).map_err(|e| {
            NodeError::new(
                ErrorCode::Storage,
                format!("cannot start the log writer: {e}"),
            )
            .with_cause(e)
        })?;
        let app_snapshots = Arc::new(AppSnapshots::new(Duration::from_secs(60)));
        app_snapshots.enable(config.app_snapshots);
        let state_machine = StateMachine::new(
            store.clone(),
            events.clone(),
            app_snapshots.clone(),
            delivery.clone(),
            config.id_window,
            log_store.apply_queue(),
        );
        let raft = Raft::new(
            id.clone(),
            Arc::new(raft_config),
            network,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| {
            NodeError::new(ErrorCode::Storage, format!("raft failed to start: {e}")).with_cause(e)
        })?;
        delivery.started();
        let (stop_tx, stop_rx) = watch::channel(false);
        let resumed_after = replayed.resumed_after;
        tokio::spawn(crate::storage::catch_up(
            store.clone(),
            delivery.clone(),
            events.clone(),
            replayed,
            stop_rx.clone(),
        ));
        // Until its core has run once, openraft publishes placeholder metrics (no log, term 0).
        // Wait for the first real report, so the state read right after start is what is on disk.
        let mut first_report = raft.metrics();
        let _ = tokio::time::timeout(FIRST_METRICS_LIMIT, first_report.changed()).await;

        tokio::spawn(cursor::write_cursor(
            store.clone(),
            delivery.clone(),
            events.clone(),
            stop_rx.clone(),
        ));
        tokio::spawn(compaction::snapshot_when_due(
            raft.clone(),
            store.stats().clone(),
            config.snapshot_threshold,
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
            backlog: events.backlog(),
            resumed_after,
            formation,
            leading_since,
            dropped_rx: std::sync::Mutex::new(Some(dropped_rx)),
            _dropped: dropped_tx,
        });
        let app: Weak<dyn AppHandler> = Arc::downgrade(&node) as Weak<Node>;
        let server = Arc::new(Server {
            raft,
            app,
            pool: node.pool.clone(),
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

    /// Founds the cluster of `initialMembers`. Every member given the same list does the same,
    /// which openraft allows: identical initial configs elect one leader among them. No wait for
    /// a leader here: the others may start much later.
    pub(super) async fn initialize_members(
        &self,
        members: Vec<(String, PeerAddr)>,
    ) -> Result<(), NodeError> {
        self.formation.mark_founded();
        let members: BTreeMap<NodeName, PeerAddr> = members
            .into_iter()
            .map(|(id, addr)| (NodeName(id), addr))
            .collect();
        if let Err(e) = self.raft.initialize(members).await {
            if !matches!(e, RaftError::APIError(_)) {
                return Err(NodeError::storage(e));
            }
        }
        Ok(())
    }

    /// Founds a one-node cluster with this node as its only voter and waits until it leads.
    pub(super) async fn found(&self, deadline: Instant) -> Result<(), NodeError> {
        // From here on, claims from other fresh nodes are answered as by a member.
        self.formation.mark_founded();
        let members = BTreeMap::from([(self.id.clone(), self.addr.clone())]);
        if let Err(e) = self.raft.initialize(members).await {
            // Already initialized is fine: someone (or a restart) got here first.
            if !matches!(e, RaftError::APIError(_)) {
                return Err(NodeError::storage(e));
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
                ErrorCode::Timeout,
                "the new cluster did not elect this node in time",
            ));
        }
        Ok(())
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
                ErrorCode::Shutdown,
                format!("node {} stopped while the call was in flight", self.id),
            )
        };
        if *stop.borrow_and_update() {
            return Err(stopped());
        }
        if let Some(failed) = self.core_failure() {
            return Err(failed);
        }
        let result = tokio::select! {
            result = work => result,
            _ = stop.wait_for(|stopping| *stopping) => Err(stopped()),
        };
        // Work that failed because the node was stopping (a wait cut short) reports the stop,
        // whichever of the two the select saw first.
        match result {
            Err(_) if *stop.borrow() => Err(stopped()),
            Err(e) => Err(self.core_failure().unwrap_or(e)),
            ok => ok,
        }
    }

    /// Why Raft's core stopped on its own (a storage failure), while this node was not stopped.
    pub(super) fn core_failure(&self) -> Option<NodeError> {
        NodeError::core_failed(&self.raft.metrics().borrow_watched())
    }

    /// Resolves once this node is dropped, with its storage: taken once, by `stop()`'s caller.
    pub fn dropped(&self) -> Option<oneshot::Receiver<()>> {
        crate::lock(&self.dropped_rx).take()
    }

    /// Stops Raft, the server and every connection. Data stays on disk.
    pub async fn stop(&self) {
        let _ = self.stop_tx.send(true);
        self.app_snapshots.close();
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
