//! Events that flow one way, from the Rust core to JavaScript.
//!
//! Producers (state machine, metrics watcher, transport) push onto one unbounded channel and
//! never wait; a single pump drains it in batches and hands each batch to JavaScript as one JSON
//! array, so a busy node crosses into the JS thread once per batch, not once per event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;

use crate::lock;

/// A warning with the same key (peer and cause) is sent at most once per this interval; the next
/// one says how many were held back. A misconfigured peer redialing must not flood the log.
pub const WARNING_INTERVAL: Duration = Duration::from_secs(60);
/// Keys remembered for rate limiting; peers named in refused handshakes are chosen by whoever
/// connects, so the table is bounded.
const MAX_WARNING_KEYS: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    CommandApplied {
        index: u64,
        term: u64,
        /// JSON text exactly as the application submitted it.
        command: String,
        op_id: Option<String>,
        /// Handed over again after a restart: a previous run of this node may have delivered it.
        redelivered: bool,
    },
    SnapshotInstalled {
        index: u64,
        term: u64,
        /// The application's state (JSON) carried by the snapshot, if it provided one.
        app: Option<String>,
        /// Handed over at start-up from the local snapshot, not just received from a leader.
        redelivered: bool,
    },
    /// A snapshot is being built: the application is asked for its state as of `index`.
    SnapshotRequest {
        id: u64,
        index: u64,
    },
    LeaderElected {
        leader_id: String,
        term: u64,
    },
    LeaderLost {
        previous_leader_id: String,
        term: u64,
    },
    TermUpdated {
        term: u64,
    },
    BecameFollower {
        term: u64,
        leader_id: Option<String>,
    },
    PeerConnected {
        node_id: String,
    },
    PeerDisconnected {
        node_id: String,
    },
    PeerAdded {
        node_id: String,
        host: String,
        port: u16,
        voter: bool,
    },
    PeerRemoved {
        node_id: String,
    },
    LogPurged {
        up_to_index: u64,
        removed: u64,
    },
    /// Something the operator should know that is not tied to a call (a refused handshake, a
    /// storage failure); `code` is one of the stable error codes.
    Warning {
        code: &'static str,
        message: String,
    },
    /// A log record of the Rust core, for the application's logger.
    Log {
        level: &'static str,
        target: String,
        message: String,
        fields: serde_json::Map<String, serde_json::Value>,
        /// Records dropped by the rate bound since the previous one.
        suppressed: u64,
    },
}

impl Event {
    /// Appends this event as one JSON object to `out`.
    pub fn write_json(&self, out: &mut String) {
        let value = match self {
            Event::CommandApplied {
                index,
                term,
                command,
                op_id,
                redelivered,
            } => {
                // The command is already JSON; embed it as is instead of parsing and re-encoding.
                let op = match op_id {
                    Some(id) => serde_json::Value::String(id.clone()).to_string(),
                    None => "null".to_string(),
                };
                out.push_str(&format!(
                    r#"{{"type":"command_applied","index":{index},"term":{term},"opId":{op},"redelivered":{redelivered},"command":{command}}}"#
                ));
                return;
            }
            Event::SnapshotInstalled {
                index,
                term,
                app,
                redelivered,
            } => {
                // The application's state is JSON already; embed it without re-encoding.
                let app = app.as_deref().unwrap_or("null");
                out.push_str(&format!(
                    r#"{{"type":"snapshot_installed","lastIncludedIndex":{index},"term":{term},"redelivered":{redelivered},"appState":{app}}}"#
                ));
                return;
            }
            Event::SnapshotRequest { id, index } => {
                json!({"type": "snapshot_request", "id": id, "index": index})
            }
            Event::LeaderElected { leader_id, term } => {
                json!({"type": "leader_elected", "leaderId": leader_id, "term": term})
            }
            Event::LeaderLost {
                previous_leader_id,
                term,
            } => {
                json!({"type": "leader_lost", "previousLeaderId": previous_leader_id, "term": term})
            }
            Event::TermUpdated { term } => json!({"type": "term_updated", "term": term}),
            Event::BecameFollower { term, leader_id } => {
                json!({"type": "became_follower", "term": term, "leaderId": leader_id})
            }
            Event::PeerConnected { node_id } => {
                json!({"type": "peer_connected", "nodeId": node_id})
            }
            Event::PeerDisconnected { node_id } => {
                json!({"type": "peer_disconnected", "nodeId": node_id})
            }
            Event::PeerAdded {
                node_id,
                host,
                port,
                voter,
            } => {
                json!({"type": "peer_added", "nodeId": node_id, "host": host, "port": port, "voter": voter})
            }
            Event::PeerRemoved { node_id } => json!({"type": "peer_removed", "nodeId": node_id}),
            Event::LogPurged {
                up_to_index,
                removed,
            } => json!({"type": "log_purged", "upToIndex": up_to_index, "entriesRemoved": removed}),
            Event::Warning { code, message } => {
                json!({"type": "warning", "code": code, "message": message})
            }
            Event::Log {
                level,
                target,
                message,
                fields,
                suppressed,
            } => json!({
                "type": "log",
                "level": level,
                "target": target,
                "message": message,
                "fields": fields,
                "suppressed": suppressed,
            }),
        };
        out.push_str(&value.to_string());
    }
}

/// Cheap, cloneable handle for pushing events; sending never blocks and never fails loudly
/// (after `stop()` nobody listens, and that is fine).
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::UnboundedSender<Event>,
    /// Per warning key: when one was last sent, and how many were held back since.
    warned: Arc<Mutex<HashMap<String, (Instant, u64)>>>,
    warning_interval: Duration,
}

impl EventSink {
    pub fn new() -> (EventSink, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            EventSink {
                tx,
                warned: Arc::default(),
                warning_interval: WARNING_INTERVAL,
            },
            rx,
        )
    }

    pub fn emit(&self, event: Event) {
        let _ = self.tx.send(event);
    }

    /// A warning about a condition that repeats (a peer refused at every redial): sent at most
    /// once per `key` and `WARNING_INTERVAL`, the next one counting those held back.
    pub fn warn_limited(&self, key: &str, code: &'static str, message: String) {
        let now = Instant::now();
        let held_back = {
            let mut warned = lock(&self.warned);
            if let Some((last, held)) = warned.get_mut(key) {
                if now.duration_since(*last) < self.warning_interval {
                    *held += 1;
                    return;
                }
            }
            if warned.len() >= MAX_WARNING_KEYS {
                let interval = self.warning_interval;
                warned.retain(|_, (last, _)| now.duration_since(*last) < interval);
                if warned.len() >= MAX_WARNING_KEYS {
                    warned.clear();
                }
            }
            warned
                .insert(key.to_string(), (now, 0))
                .map(|(_, held)| held)
                .unwrap_or(0)
        };
        let message = if held_back > 0 {
            format!("{message} ({held_back} more like it in the last minute were not reported)")
        } else {
            message
        };
        // For UNRDF_CONSENSUS_LOG's stderr output; the application's logger gets it as a warning.
        tracing::warn!(target: WARNING_TARGET, code, "{message}");
        self.emit(Event::Warning { code, message });
    }
}

/// The tracing target of warnings that also travel as `warning` events: the log forwarder
/// leaves them out, so an application's logger does not see each twice.
pub const WARNING_TARGET: &str = "unrdf_consensus::warning";

/// Encodes a batch as a JSON array.
pub fn batch_to_json(batch: &[Event]) -> String {
    let mut out = String::with_capacity(64 * batch.len() + 2);
    out.push('[');
    for (i, e) in batch.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        e.write_json(&mut out);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_warnings_are_held_back_and_counted_in_the_next() {
        let (mut sink, mut rx) = EventSink::new();
        sink.warning_interval = Duration::from_millis(200);
        for _ in 0..5 {
            sink.warn_limited(
                "dial node-2 ERR_AUTH",
                "ERR_AUTH",
                "node-2 refused us".into(),
            );
        }
        sink.warn_limited(
            "dial node-3 ERR_AUTH",
            "ERR_AUTH",
            "node-3 refused us".into(),
        );
        let mut messages = Vec::new();
        while let Ok(Event::Warning { message, .. }) = rx.try_recv() {
            messages.push(message);
        }
        assert_eq!(messages, vec!["node-2 refused us", "node-3 refused us"]);
        // The interval itself has to pass: nothing else ends it.
        std::thread::sleep(Duration::from_millis(250));
        sink.warn_limited(
            "dial node-2 ERR_AUTH",
            "ERR_AUTH",
            "node-2 refused us".into(),
        );
        match rx.try_recv() {
            Ok(Event::Warning { message, .. }) => assert_eq!(
                message,
                "node-2 refused us (4 more like it in the last minute were not reported)"
            ),
            other => panic!("expected a warning, got {other:?}"),
        }
    }

    #[test]
    fn batch_is_valid_json_with_raw_command() {
        let batch = vec![
            Event::CommandApplied {
                index: 3,
                term: 1,
                command: r#"{"type":"x","n":[1,2]}"#.into(),
                op_id: Some("a\"b".into()),
                redelivered: true,
            },
            Event::LeaderElected {
                leader_id: "node-1".into(),
                term: 1,
            },
        ];
        let v: serde_json::Value =
            serde_json::from_str(&batch_to_json(&batch)).expect("valid json");
        assert_eq!(v[0]["command"]["n"][1], 2);
        assert_eq!(v[0]["opId"], "a\"b");
        assert_eq!(v[0]["redelivered"], true);
        assert_eq!(v[1]["leaderId"], "node-1");
    }
}
