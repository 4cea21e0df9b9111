//! A Raft node: storage, transport and openraft wired together. Each job has its module:
//! `lifecycle` starts and stops the node, `membership` adds and removes members (with the
//! bootstrap rules of `formation`), `writes` replicates commands and forwards them to the
//! leader, `lease` judges whether a leader still holds its quorum, `state` is the view
//! `getState()` reads, and `watcher` turns openraft's metrics into events.

mod admin;
mod compaction;
mod cursor;
mod error;
mod formation;
mod lease;
mod lifecycle;
mod membership;
mod reads;
mod rpc;
mod state;
mod watcher;
mod writes;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::type_config::async_runtime::WatchReceiver;
use openraft::RaftMetrics;
use tokio::sync::{oneshot, watch, Mutex};

pub use error::{ErrorCode, NodeError};
use formation::Formation;
pub use reads::LinearRead;
pub use state::NodeState;
pub use writes::Write;

use crate::storage::{AppSnapshots, Delivery, ResumeFrom, StateMachine, Store};
use crate::transport::client::PeerPool;
use crate::transport::link_cuts::{Cuts, FAULT_HOOKS_ENV};
use crate::transport::tls::TlsFiles;
use crate::types::{Applied, NodeName, PeerAddr, Raft, TypeConfig};

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

/// The least time an election is given: below it, waits are bounded by the scheduling of a busy
/// machine rather than by Raft's timeouts.
const ELECTION_WAIT_FLOOR: Duration = Duration::from_secs(2);

/// The election timeouts handed to openraft, which counts differently from the user's setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftElectionTimeouts {
    pub min_ms: u64,
    /// Also openraft's leader lease.
    pub max_ms: u64,
}

impl RaftElectionTimeouts {
    /// The user's `electionTimeoutMin..Max` is, as in etcd and the Raft paper, how long a
    /// follower waits after it last heard from its leader before it stands. openraft starts
    /// that wait only when its leader lease (its `election_timeout_max`) has run out, so a
    /// follower stands `lease + U[min, max)` after the last contact: 450-600 ms for 150-300 ms.
    /// These values make openraft stand within the first third of the user's range (151-200 ms
    /// at the defaults), which keeps the randomness that prevents split votes and respects
    /// openraft's own rule that its minimum exceeds the heartbeat interval. Where that rule
    /// leaves no room (a heartbeat close to the minimum), the window starts later.
    pub fn for_user_timeouts(min: u64, max: u64, heartbeat: u64) -> Self {
        let spread = (max.saturating_sub(min) / 3).max(1);
        let half_window_end = min.saturating_add(spread).div_ceil(2);
        let raft_min = heartbeat
            .saturating_add(1)
            .max(min.saturating_sub(half_window_end));
        let lease = half_window_end.max(raft_min.saturating_add(spread));
        RaftElectionTimeouts {
            min_ms: raft_min,
            max_ms: lease,
        }
    }

    /// When a follower that last heard from its leader at 0 stands: `[from, until)` ms.
    pub fn stands_within(&self) -> (u64, u64) {
        (self.max_ms + self.min_ms, 2 * self.max_ms)
    }
}

impl NodeConfig {
    pub fn raft_election_timeouts(&self) -> RaftElectionTimeouts {
        RaftElectionTimeouts::for_user_timeouts(
            self.election_timeout_min_ms,
            self.election_timeout_max_ms,
            self.heartbeat_interval_ms,
        )
    }

    /// How long an election may take with these timeouts (two rounds of the longest election
    /// timeout, at least `ELECTION_WAIT_FLOOR`): how long a node waits for its view of the leader
    /// to settle before it judges a request by it.
    pub fn election_wait(&self) -> Duration {
        Duration::from_millis(self.election_timeout_max_ms.saturating_mul(2))
            .max(ELECTION_WAIT_FLOOR)
    }
}

/// A write's outcome, and whether this node's own state machine applied it (it led) or the
/// leader it was forwarded to did.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub applied: Applied,
    pub here: bool,
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
    /// What waits for JavaScript: while it is full, the node applies and snapshots nothing.
    backlog: Arc<crate::events::Backlog>,
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
    pub fn id(&self) -> &str {
        &self.id.0
    }

    /// Replicated registry records under `prefix`, as this node has applied them.
    pub fn registry(&self, prefix: &str) -> Result<Vec<(String, String)>, NodeError> {
        self.store
            .registry_entries(prefix)
            .map_err(NodeError::storage)
    }

    /// Where this replica's state machine applied operation `op_id`: `(index, term)`, or `None`
    /// when it has not applied it (or its id expired from the registry).
    pub fn operation(&self, op_id: &str) -> Result<Option<(u64, u64)>, NodeError> {
        StateMachine::find_op(&self.store, op_id)
            .map(|found| found.map(|op| (op.index, op.term)))
            .map_err(NodeError::storage)
    }

    /// Fault injection: stop dialing the `outbound` peers and accepting the `inbound` ones, and
    /// drop such connections now. Only in a process started with the fault-hook variable set.
    pub fn set_link_cuts(&self, cuts: Cuts) -> Result<(), NodeError> {
        let Some(link_cuts) = &self.pool.config().link_cuts else {
            return Err(NodeError::new(
                ErrorCode::InvalidOperation,
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
                ErrorCode::InvalidOperation,
                "this node was started without a secret; start every node with one to use secrets",
            ));
        };
        if !current.set(secrets.into_iter().map(String::into_bytes).collect()) {
            return Err(NodeError::new(
                ErrorCode::InvalidConfig,
                "secret: at least one secret is required once a cluster uses them",
            )
            .with_field("secret"));
        }
        self.pool.redial(None);
        Ok(())
    }

    /// Reads the TLS files again: new connections use the new certificate, key and CA; open
    /// ones keep theirs until they reconnect. A file that does not load changes nothing.
    pub fn reload_tls(&self) -> Result<(), NodeError> {
        let Some(tls) = &self.pool.config().tls else {
            return Err(NodeError::new(
                ErrorCode::InvalidOperation,
                "this node was started without tls; there is nothing to reload",
            ));
        };
        tls.reload().map_err(|e| {
            NodeError::new(
                ErrorCode::InvalidConfig,
                format!("{}: {}", e.field, e.message),
            )
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

    /// The application could not give its state for snapshot request `id`: no snapshot is
    /// taken this time.
    pub fn decline_app_snapshot(&self, id: u64) -> bool {
        self.app_snapshots.decline(id)
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
        self.store.has_raft_state().map_err(NodeError::storage)
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

    /// Disk timings of this node's storage, for metrics.
    pub fn storage_stats(&self) -> Arc<crate::stats::StorageStats> {
        self.store.stats().clone()
    }

    /// Round-trip histograms of calls to each peer, for metrics.
    pub fn round_trips(&self) -> Vec<crate::transport::client::PeerTrips> {
        self.pool.round_trips()
    }
}

#[cfg(test)]
mod tests {
    use super::RaftElectionTimeouts;

    #[test]
    fn followers_stand_within_the_users_election_timeout() {
        let defaults = RaftElectionTimeouts::for_user_timeouts(150, 300, 50);
        assert_eq!(defaults.stands_within(), (152, 202));
        for (min, max, heartbeat) in [
            (150, 300, 50),
            (1000, 2000, 100),
            (5000, 10_000, 500),
            (300, 301, 10),
            (2, 3, 1),
            (150, 300, 100),
            (150, 300, 149),
        ] {
            let t = RaftElectionTimeouts::for_user_timeouts(min, max, heartbeat);
            // openraft's own rules for a valid config.
            assert!(
                t.min_ms > heartbeat && t.max_ms > t.min_ms,
                "{min}/{max}/{heartbeat}: {t:?}"
            );
            let (from, until) = t.stands_within();
            assert!(from >= min, "{min}/{max}/{heartbeat}: stands at {from}");
            // The randomness survives: at least a third of the user's range, or 1 ms.
            assert!(
                until - from >= ((max - min) / 3).max(1) - 1,
                "{min}/{max}/{heartbeat}: {from}..{until}"
            );
            if heartbeat * 3 <= min {
                // Within the user's range, give or take the rounding of halving it.
                assert!(
                    until <= max + 1,
                    "{min}/{max}/{heartbeat}: stands as late as {until}"
                );
            }
        }
    }
}
