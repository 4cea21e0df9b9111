//! Errors with the stable codes of the JavaScript API.

use serde_json::json;

/// The stable error codes; JavaScript sees them as `error.code`, and `lib/errors.js` and
/// `index.d.ts` list exactly these (a test holds them to `ErrorCode::ALL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidConfig,
    InvalidOperation,
    NotLeader,
    NoQuorum,
    Timeout,
    NodeNotFound,
    AddressInUse,
    Storage,
    Shutdown,
    Auth,
    /// A watch asked for history this node no longer keeps (etcd's compacted revision).
    Compacted,
    /// A call came before the node was started (`initialize()` had not completed).
    NotInitialized,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::InvalidConfig,
        ErrorCode::InvalidOperation,
        ErrorCode::NotLeader,
        ErrorCode::NoQuorum,
        ErrorCode::Timeout,
        ErrorCode::NodeNotFound,
        ErrorCode::AddressInUse,
        ErrorCode::Storage,
        ErrorCode::Shutdown,
        ErrorCode::Auth,
        ErrorCode::Compacted,
        ErrorCode::NotInitialized,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidConfig => "ERR_INVALID_CONFIG",
            ErrorCode::InvalidOperation => "ERR_INVALID_OPERATION",
            ErrorCode::NotLeader => "ERR_NOT_LEADER",
            ErrorCode::NoQuorum => "ERR_NO_QUORUM",
            ErrorCode::Timeout => "ERR_TIMEOUT",
            ErrorCode::NodeNotFound => "ERR_NODE_NOT_FOUND",
            ErrorCode::AddressInUse => "ERR_ADDRESS_IN_USE",
            ErrorCode::Storage => "ERR_STORAGE",
            ErrorCode::Shutdown => "ERR_SHUTDOWN",
            ErrorCode::Auth => "ERR_AUTH",
            ErrorCode::Compacted => "ERR_COMPACTED",
            ErrorCode::NotInitialized => "ERR_NOT_INITIALIZED",
        }
    }

    /// The code named `code`, if it is one of ours.
    pub fn parse(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|known| known.as_str() == code)
    }

    /// The code for one received from a peer; unknown codes become `ERR_TIMEOUT` (the outcome
    /// is unknown to us).
    pub fn from_wire(code: &str) -> ErrorCode {
        ErrorCode::parse(code).unwrap_or(ErrorCode::Timeout)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct NodeError {
    pub code: ErrorCode,
    pub message: String,
    pub leader_id: Option<String>,
    /// The config setting an ERR_INVALID_CONFIG concerns.
    pub field: Option<&'static str>,
    /// The text of the underlying error (storage, network, openraft), when there is one.
    pub cause: Option<String>,
}

impl NodeError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        NodeError {
            code,
            message: message.into(),
            leader_id: None,
            field: None,
            cause: None,
        }
    }

    /// What callers of a node whose Raft core stopped on its own get from then on, as `metrics`
    /// tell: `None` for a core that was stopped (`stop()`), or still runs. A storage failure
    /// stops openraft for good, and without this every later call would fail as if the node
    /// were not the leader.
    pub fn core_failed(metrics: &openraft::RaftMetrics<crate::types::TypeConfig>) -> Option<Self> {
        use openraft::errors::Fatal;
        let fatal = metrics.running_state.as_ref().err()?;
        let text = fatal.to_string();
        let message = match fatal {
            Fatal::Stopped => return None,
            Fatal::StorageError(_) if text.contains("MDB_MAP_FULL") => {
                "this node stopped: its data directory reached mapSizeMb. It holds every write made \
                 before that; start the node again with a larger mapSizeMb"
                    .to_string()
            }
            Fatal::StorageError(_) => format!(
                "this node stopped on a storage failure ({text}). Its data directory holds every \
                 write made before that; fix the cause (a full disk, permissions, a failing \
                 disk) and start the node again"
            ),
            Fatal::Panicked => "this node stopped after an internal error; start it again".into(),
        };
        Some(NodeError::new(ErrorCode::Storage, message).with_cause(text))
    }

    /// `ERR_STORAGE` for a failure of the storage layer, which is also its cause.
    pub fn storage(e: impl std::fmt::Display) -> Self {
        let text = e.to_string();
        NodeError::new(ErrorCode::Storage, text.clone()).with_cause(text)
    }

    pub fn with_field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }

    pub fn with_leader(mut self, leader_id: Option<String>) -> Self {
        self.leader_id = leader_id;
        self
    }

    pub fn with_cause(mut self, cause: impl std::fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }

    /// The form that crosses into JavaScript, where `lib/errors.js` turns it into a
    /// `ConsensusError`.
    pub fn to_json(&self) -> String {
        json!({
            "code": self.code.as_str(),
            "message": self.message,
            "leaderId": self.leader_id,
            "field": self.field,
            "cause": self.cause,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_and_unknown_wire_codes_mean_timeout() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert_eq!(ErrorCode::from_wire(code.as_str()), code);
        }
        assert_eq!(ErrorCode::parse("ERR_PROTOCOL"), None);
        assert_eq!(
            ErrorCode::from_wire("ERR_FROM_A_NEWER_PEER"),
            ErrorCode::Timeout
        );
    }

    #[test]
    fn the_json_form_carries_code_leader_field_and_cause() {
        let e = NodeError::new(ErrorCode::NotLeader, "not me")
            .with_leader(Some("n2".into()))
            .with_cause("io: disk full");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).expect("json");
        assert_eq!(v["code"], "ERR_NOT_LEADER");
        assert_eq!(v["leaderId"], "n2");
        assert_eq!(v["cause"], "io: disk full");
        assert!(v["field"].is_null());
    }
}
