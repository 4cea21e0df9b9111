//! The openraft type configuration shared by storage, transport and engine.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's name as the user chose it (`node-1`). A newtype rather than a bare `String` because
/// openraft's storage test suite builds node ids from integers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeName(pub String);

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<u64> for NodeName {
    fn from(n: u64) -> Self {
        NodeName(n.to_string())
    }
}

impl From<&str> for NodeName {
    fn from(s: &str) -> Self {
        NodeName(s.to_string())
    }
}

/// Where a member listens for Raft traffic.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PeerAddr {
    pub host: String,
    pub port: u16,
}

impl PeerAddr {
    pub fn url(&self) -> String {
        if self.host.contains(':') {
            format!("ws://[{}]:{}/raft", self.host, self.port)
        } else {
            format!("ws://{}:{}/raft", self.host, self.port)
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A replicated command: the JSON text the application handed in, plus the operation id and
/// proposal time that make idempotence deterministic on every replica. Its serde form is the
/// wire's; storage converts it to a record of its own (`storage::records`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The command as JSON text; applied and delivered verbatim.
    pub json: String,
    /// Operation id for idempotence; `None` means the command is never deduplicated.
    pub op_id: Option<String>,
    /// Leader's wall clock at proposal (ms since epoch); bounds the id registry by TTL
    /// identically on every replica, because it comes from the log and not the local clock.
    pub proposed_at_ms: u64,
    /// Also record this command in the replicated registry (cluster membership metadata).
    #[serde(with = "crate::registry_write::compat")]
    pub registry: Option<RegistryWrite>,
}

pub use crate::registry_write::{Condition, RegistryWrite};

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op_id {
            Some(id) => write!(f, "command(op {id}, {} bytes)", self.json.len()),
            None => write!(f, "command({} bytes)", self.json.len()),
        }
    }
}

/// What the state machine answers for an applied command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Applied {
    /// The log index under which the command (or its first copy) took effect.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// True when `op_id` had already been applied; this entry changed nothing.
    pub duplicate: bool,
    /// True when the registry write's condition did not hold; this entry changed nothing.
    pub condition_failed: bool,
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = NodeName,
        Node = PeerAddr,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, NodeName>,
);

pub type Raft = openraft::Raft<TypeConfig, crate::storage::StateMachine>;
pub type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
pub type Vote = <TypeConfig as openraft::RaftTypeConfig>::Vote;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type SnapshotData = std::io::Cursor<Vec<u8>>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;
