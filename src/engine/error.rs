//! Errors with the stable codes of the JavaScript API.

use serde_json::json;

/// The stable error codes; JavaScript sees them as `error.code`.
#[allow(non_snake_case)]
pub mod ERR {
    pub const INVALID_CONFIG: &str = "ERR_INVALID_CONFIG";
    pub const INVALID_OPERATION: &str = "ERR_INVALID_OPERATION";
    pub const NOT_LEADER: &str = "ERR_NOT_LEADER";
    pub const NO_QUORUM: &str = "ERR_NO_QUORUM";
    pub const TIMEOUT: &str = "ERR_TIMEOUT";
    pub const NODE_NOT_FOUND: &str = "ERR_NODE_NOT_FOUND";
    pub const ADDRESS_IN_USE: &str = "ERR_ADDRESS_IN_USE";
    pub const STORAGE: &str = "ERR_STORAGE";
    pub const SHUTDOWN: &str = "ERR_SHUTDOWN";
    pub const AUTH: &str = "ERR_AUTH";
    /// A watch asked for history this node no longer keeps (etcd's compacted revision).
    pub const COMPACTED: &str = "ERR_COMPACTED";

    /// The static code for a code received from a peer; unknown codes become `ERR_TIMEOUT`
    /// (the outcome is unknown to us).
    pub fn from_wire(code: &str) -> &'static str {
        [
            INVALID_CONFIG,
            INVALID_OPERATION,
            NOT_LEADER,
            NO_QUORUM,
            TIMEOUT,
            NODE_NOT_FOUND,
            ADDRESS_IN_USE,
            STORAGE,
            SHUTDOWN,
            AUTH,
            COMPACTED,
        ]
        .into_iter()
        .find(|known| *known == code)
        .unwrap_or(TIMEOUT)
    }
}

#[derive(Debug, Clone)]
pub struct NodeError {
    pub code: &'static str,
    pub message: String,
    pub leader_id: Option<String>,
    /// The config setting an ERR_INVALID_CONFIG concerns.
    pub field: Option<&'static str>,
}

impl NodeError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        NodeError {
            code,
            message: message.into(),
            leader_id: None,
            field: None,
        }
    }

    pub fn with_field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }

    pub fn with_leader(mut self, leader_id: Option<String>) -> Self {
        self.leader_id = leader_id;
        self
    }

    /// The form that crosses into JavaScript, where `index.js` turns it into a `ConsensusError`.
    pub fn to_json(&self) -> String {
        json!({
            "code": self.code,
            "message": self.message,
            "leaderId": self.leader_id,
            "field": self.field,
        })
        .to_string()
    }
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for NodeError {}
