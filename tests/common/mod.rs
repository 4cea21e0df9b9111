//! Clusters of engine nodes inside one test process: each node has its own LMDB environment in a
//! temporary directory and its own port on 127.0.0.1, and the nodes talk over the real WebSocket
//! transport. Every node has a small application behind it that keeps what its node delivers, as
//! an application of the library does: a key-value map built from the applied commands, handed
//! to snapshots and restored from them.

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::mpsc::UnboundedReceiver;
use unrdf_consensus::engine::{Bootstrap, Node, NodeConfig, NodeError, NodeState, Write, Written};
use unrdf_consensus::events::{Event, EventSink};
use unrdf_consensus::storage::ResumeFrom;
use unrdf_consensus::types::{PeerAddr, RegistryWrite};

pub const HOST: &str = "127.0.0.1";
const CLUSTER_ID: &str = "integration-tests";
const SECRET: &str = "integration-test-secret-with-enough-entropy";

/// How long any awaited condition may take before the test fails. Elections here take a few
/// hundred milliseconds; the margin is for a machine busy with other builds.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Poll interval of `eventually`.
const POLL: Duration = Duration::from_millis(10);

/// A port on 127.0.0.1 that was free a moment ago. `initialMembers` needs every member's port
/// before any member starts, so the port cannot come from binding port 0 in the node itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind((HOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("the OS hands out a free loopback port")
}

pub fn addr(port: u16) -> PeerAddr {
    PeerAddr {
        host: HOST.to_string(),
        port,
    }
}

/// A node's configuration as the tests run it: snapshots only when a test asks for one, and
/// snapshots that carry the application's state. Elections take longer than the library's
/// default (150-300 ms): a leader that no quorum acknowledged within the longest election
/// timeout refuses writes, and on a machine busy with builds a node can be starved of CPU for
/// 300 ms; a test must not fail for that.
pub fn config(node_id: &str, port: u16, data_dir: &Path) -> NodeConfig {
    NodeConfig {
        node_id: node_id.to_string(),
        host: HOST.to_string(),
        advertise_host: HOST.to_string(),
        port,
        initial_members: None,
        data_dir: data_dir.to_path_buf(),
        cluster_id: CLUSTER_ID.to_string(),
        secrets: vec![SECRET.to_string()],
        election_timeout_min_ms: 500,
        election_timeout_max_ms: 1000,
        heartbeat_interval_ms: 100,
        snapshot_threshold: 100_000,
        logs_kept_after_snapshot: 0,
        bootstrap: Bootstrap::Auto,
        id_window: unrdf_consensus::ops::IdWindow {
            ttl_ms: 24 * 3600 * 1000,
            max_ids: unrdf_consensus::ops::IdWindow::DEFAULT_MAX_IDS,
            max_bytes: unrdf_consensus::ops::IdWindow::DEFAULT_MAX_BYTES,
        },
        command_timeout: Duration::from_secs(5),
        add_peer_timeout: Duration::from_secs(15),
        map_size_bytes: 64 << 20,
        max_frame_bytes: 16 << 20,
        max_connections: 64,
        tls: None,
        resume_from: ResumeFrom::Cursor,
        app_snapshots: true,
    }
}

/// Polls `probe` until it yields a value; fails the test with `what` and the last observation
/// once `PATIENCE` has passed.
pub async fn eventually<T, O: std::fmt::Debug>(
    what: impl Display,
    mut probe: impl FnMut() -> Result<T, O>,
) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(observed) if Instant::now() >= deadline => {
                panic!("{what}: not within {PATIENCE:?}; last seen: {observed:?}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// A command of the test application: set `key` to `value`.
pub fn set_command(key: &str, value: u64) -> String {
    serde_json::json!({ "key": key, "value": value }).to_string()
}

/// The operation id of `set key = value`: writing a key again with another value is another
/// operation, writing the same value again is the same one.
pub fn op_id(key: &str, value: u64) -> String {
    format!("{key}={value}")
}

/// What one node's application received, in delivery order.
#[derive(Debug, Default, Clone)]
pub struct AppState {
    /// Commands as delivered, by log index.
    pub commands: BTreeMap<u64, String>,
    /// The application's own state: each command's `value` under its `key`.
    pub kv: BTreeMap<String, Value>,
    /// The highest index whose effect `kv` holds (from a command or an installed snapshot).
    pub through: Option<u64>,
    /// Snapshots installed: (last included index, handed over again at start).
    pub snapshots: Vec<(u64, bool)>,
    /// `peer_removed` events, by node id.
    pub removed_peers: Vec<String>,
}

impl AppState {
    fn apply(&mut self, index: u64, command: &str) {
        self.commands.insert(index, command.to_string());
        if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(command) {
            if let (Some(Value::String(key)), Some(value)) =
                (fields.get("key"), fields.get("value"))
            {
                self.kv.insert(key.clone(), value.clone());
            }
        }
        self.through = self.through.max(Some(index));
    }

    fn restore(&mut self, index: u64, app: Option<&str>, redelivered: bool) {
        self.snapshots.push((index, redelivered));
        if let Some(Ok(Value::Object(kv))) = app.map(serde_json::from_str::<Value>) {
            self.kv = kv.into_iter().collect();
        }
        self.through = self.through.max(Some(index));
    }

    fn snapshot_json(&self) -> String {
        Value::Object(self.kv.clone().into_iter().collect()).to_string()
    }
}

/// Drains a node's events into its application, and answers for the application as the
/// JavaScript layer does: reports delivery and provides the state snapshots ask for.
async fn run_app(
    mut events: UnboundedReceiver<Event>,
    app: Arc<Mutex<AppState>>,
    node: Weak<Node>,
) {
    while let Some(event) = events.recv().await {
        let mut state = app.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let delivered = match event {
            Event::CommandApplied { index, command, .. } => {
                state.apply(index, &command);
                Some(index)
            }
            Event::SnapshotInstalled {
                index,
                app,
                redelivered,
                ..
            } => {
                state.restore(index, app.as_deref(), redelivered);
                Some(index)
            }
            Event::SnapshotRequest { id, .. } => {
                // Every command up to the requested index came through this channel before the
                // request, so `kv` is the state as of that index.
                let snapshot = state.snapshot_json();
                if let Some(node) = node.upgrade() {
                    node.provide_app_snapshot(id, Some(snapshot));
                }
                None
            }
            Event::PeerRemoved { node_id } => {
                state.removed_peers.push(node_id);
                None
            }
            _ => None,
        };
        drop(state);
        if let (Some(index), Some(node)) = (delivered, node.upgrade()) {
            node.delivered(index);
        }
    }
}

/// A running node and the application behind it.
pub struct TestNode {
    pub id: String,
    pub port: u16,
    pub config: NodeConfig,
    pub node: Arc<Node>,
    app: Arc<Mutex<AppState>>,
}

impl TestNode {
    pub async fn start(config: NodeConfig) -> Result<TestNode, NodeError> {
        let (sink, events) = EventSink::new();
        let node = Node::start(config.clone(), sink).await?;
        let app = Arc::new(Mutex::new(AppState::default()));
        // Events sent during start wait in the channel, so none is missed by starting late.
        tokio::spawn(run_app(events, app.clone(), Arc::downgrade(&node)));
        Ok(TestNode {
            id: config.node_id.clone(),
            port: node.port(),
            config,
            node,
            app,
        })
    }

    pub fn state(&self) -> NodeState {
        self.node.state()
    }

    pub fn app(&self) -> AppState {
        self.app
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn addr(&self) -> PeerAddr {
        addr(self.port)
    }

    /// Writes `set key = value` under its operation id, recording the command in the replicated
    /// registry under `key` too.
    pub async fn set(&self, key: &str, value: u64, forward: bool) -> Result<Written, NodeError> {
        self.node
            .replicate(Write {
                json: set_command(key, value),
                op_id: Some(op_id(key, value)),
                registry: Some(RegistryWrite::plain(key.to_string(), false)),
                timeout: self.node.command_timeout(),
                forward,
            })
            .await
    }

    /// Stops the node and waits until its data directory is released, so that it can start
    /// again on the same directory. Returns the configuration to start it with.
    pub async fn stop(self) -> NodeConfig {
        let released = self.node.dropped();
        self.node.stop().await;
        drop(self.node);
        if let Some(released) = released {
            // Either outcome of the receiver means the node, and its store, are gone.
            tokio::time::timeout(PATIENCE, released)
                .await
                .unwrap_or_else(|_| panic!("{} did not release its data directory", self.id))
                .ok();
        }
        self.config
    }
}

/// Nodes started in one temporary root, each with a data directory of its own.
pub struct Cluster {
    root: TempDir,
    pub nodes: BTreeMap<String, TestNode>,
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster {
            root: tempfile::Builder::new()
                .prefix("unrdf-consensus-cluster-")
                .tempdir()
                .expect("a temporary directory can be created"),
            nodes: BTreeMap::new(),
        }
    }

    /// A data directory under this cluster's root that no node used yet.
    pub fn fresh_dir(&self, name: &str) -> PathBuf {
        let mut dir = self.root.path().join(name);
        let mut n = 1;
        while dir.exists() {
            n += 1;
            dir = self.root.path().join(format!("{name}-{n}"));
        }
        dir
    }

    /// Configurations of the nodes `ids` founding one cluster: each is given the same
    /// `initialMembers` in an order of its own (rotated by its position), as an operator's
    /// config files may list them.
    pub fn initial_member_configs(&self, ids: &[&str]) -> Vec<NodeConfig> {
        let members: Vec<(String, PeerAddr)> = ids
            .iter()
            .map(|id| (id.to_string(), addr(free_port())))
            .collect();
        members
            .iter()
            .enumerate()
            .map(|(i, (id, addr))| {
                let mut c = config(id, addr.port, &self.fresh_dir(id));
                let mut listed = members.clone();
                listed.rotate_left(i);
                c.initial_members = Some(listed);
                c.bootstrap = Bootstrap::Never;
                c
            })
            .collect()
    }

    /// Starts the nodes `ids` all at once with `initialMembers` (see `initial_member_configs`).
    pub async fn with_initial_members(ids: &[&str]) -> Cluster {
        let mut cluster = Cluster::new();
        let configs = cluster.initial_member_configs(ids);
        let started =
            futures_util::future::join_all(configs.into_iter().map(TestNode::start)).await;
        for node in started {
            let node = node.expect("a node with initialMembers starts");
            cluster.nodes.insert(node.id.clone(), node);
        }
        cluster
    }

    /// Starts a fresh node with the default `bootstrap: auto`, not yet in any cluster.
    pub async fn start_fresh(&mut self, id: &str) -> &TestNode {
        let c = config(id, 0, &self.fresh_dir(id));
        self.start(c).await
    }

    pub async fn start(&mut self, config: NodeConfig) -> &TestNode {
        let id = config.node_id.clone();
        let node = TestNode::start(config)
            .await
            .unwrap_or_else(|e| panic!("{id} starts: {e}"));
        self.nodes.insert(id.clone(), node);
        &self.nodes[&id]
    }

    pub fn node(&self, id: &str) -> &TestNode {
        self.nodes
            .get(id)
            .unwrap_or_else(|| panic!("{id} is not running in this test"))
    }

    /// Stops `id` (its data stays) and returns its configuration.
    pub async fn stop(&mut self, id: &str) -> NodeConfig {
        let node = self
            .nodes
            .remove(id)
            .unwrap_or_else(|| panic!("{id} is not running in this test"));
        node.stop().await
    }

    /// Waits until the running nodes `ids` agree on one leader among them in one term, with
    /// exactly one of them in the leader role; returns the leader's id.
    pub async fn agreed_leader(&self, ids: &[&str]) -> String {
        eventually(format!("{ids:?} agree on one leader"), || {
            let states: Vec<NodeState> = ids.iter().map(|id| self.node(id).state()).collect();
            let leaders: Vec<&str> = states
                .iter()
                .filter(|s| s.role == "leader")
                .map(|s| s.node_id.as_str())
                .collect();
            let summary = || {
                states
                    .iter()
                    .map(|s| (s.node_id.clone(), s.role, s.leader_id.clone(), s.term))
                    .collect::<Vec<_>>()
            };
            let [leader] = leaders[..] else {
                return Err(summary());
            };
            let term = states[0].term;
            let agreed = states
                .iter()
                .all(|s| s.leader_id.as_deref() == Some(leader) && s.term == term);
            if agreed {
                Ok(leader.to_string())
            } else {
                Err(summary())
            }
        })
        .await
    }

    /// Ids of the running nodes other than `id`.
    pub fn others(&self, id: &str) -> Vec<String> {
        self.nodes.keys().filter(|k| *k != id).cloned().collect()
    }

    /// Waits until every node in `ids` has delivered log index `index` to its application.
    pub async fn applied_everywhere(&self, ids: &[&str], index: u64) {
        eventually(format!("{ids:?} applied index {index}"), || {
            let behind: Vec<(&str, Option<u64>)> = ids
                .iter()
                .map(|id| (*id, self.node(id).app().through))
                .filter(|(_, through)| *through < Some(index))
                .collect();
            if behind.is_empty() {
                Ok(())
            } else {
                Err(behind)
            }
        })
        .await
    }

    /// Stops every node, so that the temporary root goes with no node still writing to it.
    pub async fn shutdown(mut self) {
        let ids: Vec<String> = self.nodes.keys().cloned().collect();
        for id in ids {
            self.stop(&id).await;
        }
    }
}
