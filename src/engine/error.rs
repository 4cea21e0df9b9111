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
}

#[derive(Debug, Clone)]
pub struct NodeError {
    pub code: &'static str,
    pub message: String,
    pub leader_id: Option<String>,
}

impl NodeError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        NodeError {
            code,
            message: message.into(),
            leader_id: None,
        }
    }

    pub fn with_leader(mut self, leader_id: Option<String>) -> Self {
        self.leader_id = leader_id;
        self
    }

    /// The form that crosses into JavaScript, where `index.js` turns it into a `ConsensusError`.
    pub fn to_json(&self) -> String {
        json!({"code": self.code, "message": self.message, "leaderId": self.leader_id}).to_string()
    }
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for NodeError {}
