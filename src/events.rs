//! Events that flow one way, from the Rust core to JavaScript.
//!
//! Producers (state machine, metrics watcher, transport) push onto one unbounded channel and
//! never wait; a single pump drains it in batches and hands each batch to JavaScript as one JSON
//! array, so a busy node crosses into the JS thread once per batch, not once per event.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::ser::Error as _;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, Notify};

use crate::lock;

/// A warning with the same key (peer and cause) is sent at most once per this interval; the next
/// one says how many were held back. A misconfigured peer redialing must not flood the log.
pub const WARNING_INTERVAL: Duration = Duration::from_secs(60);
/// Keys remembered for rate limiting; peers named in refused handshakes are chosen by whoever
/// connects, so the table is bounded.
const MAX_WARNING_KEYS: usize = 1024;

/// Serialized as JavaScript emits it: `type` is the event's public name and `payload` its
/// argument, with the public field names, so `lib/raft-coordinator.js` passes it on as is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum Event {
    #[serde(serialize_with = "command_applied")]
    CommandApplied {
        index: u64,
        term: u64,
        /// JSON text exactly as the application submitted it.
        command: String,
        op_id: Option<String>,
        /// Handed over again after a restart: a previous run of this node may have delivered it.
        redelivered: bool,
    },
    #[serde(rename_all = "camelCase")]
    SnapshotInstalled {
        #[serde(rename = "lastIncludedIndex")]
        index: u64,
        term: u64,
        /// The application's state (JSON) carried by the snapshot, if it provided one.
        #[serde(rename = "appState", serialize_with = "raw_json")]
        app: Option<String>,
        /// Handed over at start-up from the local snapshot, not just received from a leader.
        redelivered: bool,
    },
    /// A write handed over in a batch finished (`replicateBatch`): where it was applied, or
    /// `error`, the engine's error as JSON. The ticket names the write.
    #[serde(rename_all = "camelCase")]
    WriteDone {
        ticket: u64,
        index: u64,
        term: u64,
        duplicate: bool,
        /// This node's state machine applied it (false: the leader it was forwarded to did).
        here: bool,
        /// The registry write's condition did not hold: nothing changed.
        condition_failed: bool,
        #[serde(serialize_with = "raw_json")]
        error: Option<String>,
    },
    /// A snapshot is being built: the application is asked for its state as of `index`.
    SnapshotRequest {
        id: u64,
        index: u64,
    },
    #[serde(rename_all = "camelCase")]
    LeaderElected {
        leader_id: String,
        term: u64,
    },
    #[serde(rename_all = "camelCase")]
    LeaderLost {
        previous_leader_id: String,
        term: u64,
    },
    TermUpdated {
        term: u64,
    },
    #[serde(rename_all = "camelCase")]
    BecameFollower {
        term: u64,
        leader_id: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    PeerConnected {
        node_id: String,
    },
    #[serde(rename_all = "camelCase")]
    PeerDisconnected {
        node_id: String,
    },
    #[serde(rename_all = "camelCase")]
    PeerAdded {
        node_id: String,
        host: String,
        port: u16,
        voter: bool,
    },
    #[serde(rename_all = "camelCase")]
    PeerRemoved {
        node_id: String,
    },
    #[serde(rename = "log_compacted", rename_all = "camelCase")]
    LogPurged {
        up_to_index: u64,
        #[serde(rename = "entriesRemoved")]
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

/// `command_applied` as listeners receive it: the command as the application submitted it (JSON
/// embedded as is), the entry it was applied at, and its operation id.
fn command_applied<S: Serializer>(
    index: &u64,
    term: &u64,
    command: &str,
    op_id: &Option<String>,
    redelivered: &bool,
    s: S,
) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct EntryId {
        index: u64,
        term: u64,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Applied<'a> {
        command: &'a RawValue,
        entry: EntryId,
        operation_id: Option<&'a str>,
        redelivered: bool,
    }
    Applied {
        command: raw(command).map_err(S::Error::custom)?,
        entry: EntryId {
            index: *index,
            term: *term,
        },
        operation_id: op_id.as_deref(),
        redelivered: *redelivered,
    }
    .serialize(s)
}

/// JSON text embedded as is, not as a string.
fn raw_json<S: Serializer>(json: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match json {
        Some(json) => raw(json).map_err(S::Error::custom)?.serialize(s),
        None => s.serialize_none(),
    }
}

fn raw(json: &str) -> serde_json::Result<&RawValue> {
    serde_json::from_str(json)
}

/// How many bytes of events may wait for JavaScript before the state machine waits to apply
/// more (`EventSink::room`). At 300 bytes an event that is over 50,000 events, more than a
/// second at the fastest this package commits, so a daemon that keeps up never meets it.
const BACKLOG_LIMIT_BYTES: u64 = 16 << 20;
/// How long the state machine waits for room before the node says it is held back.
const HELD_BACK_WARNING_AFTER: Duration = Duration::from_secs(5);

impl Event {
    /// About what the event weighs on its way to JavaScript, as `Backlog` counts it: its
    /// application JSON and a fixed allowance for the rest.
    pub fn cost(&self) -> u64 {
        let carried = match self {
            Event::CommandApplied { command, op_id, .. } => {
                command.len() + op_id.as_ref().map_or(0, String::len)
            }
            Event::SnapshotInstalled { app, .. } => app.as_ref().map_or(0, String::len),
            _ => 0,
        };
        carried as u64 + 96
    }
}

/// Events emitted and not yet taken by JavaScript (queued for the pump, or handed to it). A
/// daemon slower than the cluster commits would otherwise let them pile up in memory without
/// bound (about 1 KB of the process's memory each): with the limit, the node applies no faster
/// than its daemon takes what it applied, and the entries wait in the log on disk instead.
#[derive(Default)]
pub struct Backlog {
    bytes: AtomicU64,
    /// Set once nobody will take events any more (the node stops): nothing waits then.
    closed: AtomicBool,
    room: Notify,
    /// The costs of the events JavaScript holds for a `command_applied` listener not attached
    /// yet, oldest first. They stay counted until handed to one (`release_held`): a node whose
    /// application listens late, or never, holds back its applies, not its memory.
    held: Mutex<VecDeque<u64>>,
}

impl Backlog {
    fn handed_over(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    pub fn taken(&self, bytes: u64) {
        let _ = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some(b.saturating_sub(bytes))
            });
        self.room.notify_waiters();
    }

    /// JavaScript's handler ran for events costing `bytes` in all and held those costing
    /// `held`, which stay counted.
    pub fn taken_holding(&self, bytes: u64, held: &[u64]) {
        if !held.is_empty() {
            lock(&self.held).extend(held);
        }
        self.taken(bytes.saturating_sub(held.iter().sum()));
    }

    /// JavaScript handed the `count` events it held longest to a listener.
    pub fn release_held(&self, count: usize) {
        let freed: u64 = {
            let mut held = lock(&self.held);
            let count = count.min(held.len());
            held.drain(..count).sum()
        };
        self.taken(freed);
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.room.notify_waiters();
    }

    /// True while the state machine would wait to apply more (see `EventSink::room`).
    pub fn full(&self) -> bool {
        !self.has_room()
    }

    fn has_room(&self) -> bool {
        self.closed.load(Ordering::Acquire)
            || self.bytes.load(Ordering::Acquire) < BACKLOG_LIMIT_BYTES
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
    backlog: Arc<Backlog>,
}

impl EventSink {
    pub fn new() -> (EventSink, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            EventSink {
                tx,
                warned: Arc::default(),
                warning_interval: WARNING_INTERVAL,
                backlog: Arc::default(),
            },
            rx,
        )
    }

    /// What was emitted and not yet taken by JavaScript: `emit` adds to it, the event pump takes
    /// off what JavaScript's handler has run for.
    pub fn backlog(&self) -> Arc<Backlog> {
        self.backlog.clone()
    }

    /// Resolves once JavaScript has taken enough of what it was handed (see `Backlog`). A wait
    /// past `HELD_BACK_WARNING_AFTER` is reported: the node stopped applying, and a daemon
    /// that is slow or never attached a listener is the cause the operator has to look at.
    pub async fn room(&self) {
        let mut warned = false;
        loop {
            let freed = self.backlog.room.notified();
            if self.backlog.has_room() {
                return;
            }
            if warned {
                freed.await;
            } else if tokio::time::timeout(HELD_BACK_WARNING_AFTER, freed)
                .await
                .is_err()
            {
                warned = true;
                self.warn_limited(
                    "held back",
                    "ERR_TIMEOUT",
                    format!(
                        "this node applies no further: about {} MiB of applied entries have waited {} s for its command_applied listeners (a daemon slower than the cluster, or no listener attached); the entries wait in the log",
                        BACKLOG_LIMIT_BYTES >> 20,
                        HELD_BACK_WARNING_AFTER.as_secs()
                    ),
                );
            }
        }
    }

    pub fn emit(&self, event: Event) {
        let cost = event.cost();
        if self.tx.send(event).is_ok() {
            self.backlog.handed_over(cost);
        }
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

/// Encodes a batch as a JSON array. An event that cannot be encoded (a command that is not
/// JSON) becomes a warning in its place, so the rest of the batch still arrives.
pub fn batch_to_json(batch: &[Event]) -> String {
    let mut out = Vec::with_capacity(64 * batch.len() + 2);
    out.push(b'[');
    for (i, e) in batch.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let start = out.len();
        if let Err(why) = serde_json::to_writer(&mut out, e) {
            out.truncate(start);
            let warning = Event::Warning {
                code: "ERR_STORAGE",
                message: format!("an event could not be handed over: {why}"),
            };
            // A warning holds only strings and cannot fail to encode.
            let _ = serde_json::to_writer(&mut out, &warning);
        }
    }
    out.push(b']');
    String::from_utf8(out).unwrap_or_default()
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
    fn held_events_stay_counted_until_released_oldest_first() {
        let backlog = Backlog::default();
        backlog.handed_over(BACKLOG_LIMIT_BYTES);
        assert!(!backlog.has_room());
        // JavaScript ran its handler and held two events: a quarter and a half of the limit.
        let (quarter, half) = (BACKLOG_LIMIT_BYTES / 4, BACKLOG_LIMIT_BYTES / 2);
        backlog.taken_holding(BACKLOG_LIMIT_BYTES, &[quarter, half]);
        assert_eq!(backlog.bytes.load(Ordering::Acquire), quarter + half);
        assert!(backlog.has_room());
        backlog.handed_over(BACKLOG_LIMIT_BYTES / 4);
        assert!(!backlog.has_room());
        // Releasing the oldest frees its cost, not the newer one's.
        backlog.release_held(1);
        assert_eq!(backlog.bytes.load(Ordering::Acquire), half + quarter);
        // More than is held releases what is held, nothing below zero.
        backlog.release_held(5);
        assert_eq!(backlog.bytes.load(Ordering::Acquire), quarter);
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
        assert_eq!(v[0]["type"], "command_applied");
        assert_eq!(v[0]["payload"]["command"]["n"][1], 2);
        assert_eq!(v[0]["payload"]["entry"]["index"], 3);
        assert_eq!(v[0]["payload"]["entry"]["term"], 1);
        assert_eq!(v[0]["payload"]["operationId"], "a\"b");
        assert_eq!(v[0]["payload"]["redelivered"], true);
        assert_eq!(v[1]["type"], "leader_elected");
        assert_eq!(v[1]["payload"]["leaderId"], "node-1");
    }

    #[test]
    fn events_carry_their_public_names() {
        let batch = vec![
            Event::SnapshotInstalled {
                index: 9,
                term: 2,
                app: Some(r#"{"k":1}"#.into()),
                redelivered: false,
            },
            Event::LogPurged {
                up_to_index: 9,
                removed: 10,
            },
            Event::BecameFollower {
                term: 2,
                leader_id: None,
            },
        ];
        let v: serde_json::Value =
            serde_json::from_str(&batch_to_json(&batch)).expect("valid json");
        assert_eq!(
            v,
            serde_json::json!([
                {"type": "snapshot_installed", "payload": {"lastIncludedIndex": 9, "term": 2, "appState": {"k": 1}, "redelivered": false}},
                {"type": "log_compacted", "payload": {"upToIndex": 9, "entriesRemoved": 10}},
                {"type": "became_follower", "payload": {"term": 2, "leaderId": null}},
            ])
        );
    }

    #[test]
    fn an_event_that_cannot_be_encoded_becomes_a_warning_and_the_batch_still_arrives() {
        let batch = vec![
            Event::CommandApplied {
                index: 1,
                term: 1,
                command: "not json".into(),
                op_id: None,
                redelivered: false,
            },
            Event::TermUpdated { term: 1 },
        ];
        let v: serde_json::Value =
            serde_json::from_str(&batch_to_json(&batch)).expect("valid json");
        assert_eq!(v[0]["type"], "warning");
        assert_eq!(v[0]["payload"]["code"], "ERR_STORAGE");
        assert_eq!(
            v[1],
            serde_json::json!({"type": "term_updated", "payload": {"term": 1}})
        );
    }
}
