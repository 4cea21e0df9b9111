//! The napi surface: thin conversions between JavaScript values and the engine. `index.js` wraps
//! it in the public `RaftCoordinator` class; nothing here is meant to be called directly.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

mod admin;

use crate::engine::{Bootstrap, ErrorCode, Node, NodeConfig, NodeError, Write, Written};
use crate::events::{batch_to_json, Backlog, Event, EventSink};
use crate::lock;
use crate::ops::IdWindow;
use crate::storage::ResumeFrom;
use crate::transport::link_cuts::Cuts;
use crate::transport::tls::TlsFiles;
use crate::types::{PeerAddr, RegistryWrite};

/// Receives each batch of events as a JSON array. Strong: while a node runs, its event callback
/// keeps the process alive; `stop()` releases it.
/// Takes a batch of events as JSON; returns the positions of those it held for a
/// `command_applied` listener not attached yet (see `Backlog::taken_holding`).
type EventCallback = ThreadsafeFunction<String, Option<Vec<u32>>, String, Status, false>;

fn js_error(e: NodeError) -> Error {
    Error::new(Status::GenericFailure, e.to_json())
}

/// Every code a `ConsensusError` can carry, as the engine declares them; `lib/errors.js` and
/// `index.d.ts` are tested against this list.
#[napi]
pub fn error_codes() -> Vec<&'static str> {
    ErrorCode::ALL.iter().map(|code| code.as_str()).collect()
}

/// Configuration as `index.js` passes it: already validated, defaults filled in.
/// A member of `initialMembers`.
#[napi(object)]
pub struct NativePeer {
    pub node_id: String,
    pub host: String,
    pub port: u32,
}

/// The files of mutual TLS, as `tls` in the configuration (resolved to absolute paths).
#[napi(object)]
pub struct NativeTls {
    pub cert_file: String,
    pub key_file: String,
    pub ca_file: String,
}

#[napi(object)]
pub struct NativeConfig {
    pub node_id: String,
    pub host: String,
    /// The address peers dial; `host` when absent.
    pub advertise_host: Option<String>,
    pub port: u32,
    pub initial_members: Option<Vec<NativePeer>>,
    pub data_dir: String,
    pub cluster_id: String,
    /// The cluster secrets, first the one this node proves with.
    pub secrets: Option<Vec<String>>,
    pub election_timeout_min: u32,
    pub election_timeout_max: u32,
    pub heartbeat_interval: u32,
    pub snapshot_threshold: u32,
    pub logs_kept_after_snapshot: u32,
    /// "auto", "always" or "never".
    pub bootstrap: String,
    pub operation_ttl_ms: f64,
    pub operation_id_window: Option<f64>,
    pub operation_id_window_bytes: Option<f64>,
    pub command_timeout_ms: u32,
    pub add_peer_timeout_ms: u32,
    pub map_size_mb: u32,
    pub max_frame_bytes: u32,
    pub max_connections: u32,
    /// Mutual TLS between nodes.
    pub tls: Option<NativeTls>,
    /// The application holds every entry up to this index durably: delivery resumes after it.
    /// Absent: the node's own delivery cursor decides.
    pub applied_index: Option<f64>,
    /// Snapshots ask for the application's state from the first one on.
    pub app_snapshots: Option<bool>,
    /// Forward the core's log records at this level and above ("error" .. "trace") as `log`
    /// events; absent: none are forwarded.
    pub log_level: Option<String>,
}

/// One histogram as the metrics getter hands it over: cumulative counts per upper bound.
#[napi(object)]
pub struct NativeHistogram {
    pub bounds: Vec<f64>,
    pub cumulative: Vec<f64>,
    pub count: f64,
    pub sum: f64,
}

#[napi(object)]
pub struct NativePeerRtt {
    pub node_id: String,
    pub rtt: NativeHistogram,
    /// The network's round trip to the peer in seconds, measured by a ping when the connection
    /// started; null before that.
    pub network_rtt: Option<f64>,
}

/// Counters of the core that change per write, read once per scrape.
#[napi(object)]
pub struct NativeStats {
    pub log_fsync: NativeHistogram,
    pub apply_commit: NativeHistogram,
    pub snapshot_save: NativeHistogram,
    pub snapshot_install: NativeHistogram,
    pub snapshot_read: NativeHistogram,
    pub snapshot_bytes: f64,
    pub peers: Vec<NativePeerRtt>,
}

fn histogram(r: crate::stats::HistogramReading) -> NativeHistogram {
    NativeHistogram {
        bounds: r.bounds,
        cumulative: r.cumulative.into_iter().map(|c| c as f64).collect(),
        count: r.count as f64,
        sum: r.sum_seconds,
    }
}

/// A write as `replicateCommand` hands it over, checked already: one element of the JSON array
/// `replicateBatch` takes, `[command, operationId, timeoutMs, forward, registryKey,
/// registryDelete, registrySpec]`. The command and the registry's spec are JSON values written
/// in place, so a batch crosses as one string and each command keeps the very text JavaScript
/// made (reading each write's fields as a JavaScript object was a fifth of the leader's
/// JavaScript time at full load).
#[derive(serde::Deserialize)]
struct BatchedWrite<'a>(
    #[serde(borrow)] &'a serde_json::value::RawValue,
    Option<String>,
    /// Absent: the node's command timeout.
    Option<u32>,
    /// On a follower, send the write on to the leader instead of refusing it.
    bool,
    Option<String>,
    bool,
    /// Conditions and values of the registry write (see `RegistryWrite::from_spec_json`).
    #[serde(borrow)]
    Option<&'a serde_json::value::RawValue>,
);

/// The engine's form of a write, with its registry part parsed and checked.
fn engine_write(node: &Node, write: BatchedWrite) -> std::result::Result<Write, NodeError> {
    let BatchedWrite(
        command,
        operation_id,
        timeout_ms,
        forward,
        registry_key,
        registry_delete,
        registry_spec,
    ) = write;
    let invalid = |m| NodeError::new(ErrorCode::InvalidOperation, m);
    let registry = match registry_spec {
        Some(spec) => Some(RegistryWrite::from_spec_json(spec.get()).map_err(invalid)?),
        None => registry_key.map(|key| RegistryWrite::plain(key, registry_delete)),
    };
    if let Some(w) = &registry {
        w.check_keys().map_err(invalid)?;
    }
    Ok(Write {
        json: command.get().to_string(),
        op_id: operation_id,
        registry,
        timeout: timeout_ms
            .map(|ms| Duration::from_millis(ms.into()))
            .unwrap_or_else(|| node.command_timeout()),
        forward,
    })
}

fn write_done(ticket: u64, result: std::result::Result<Written, NodeError>) -> Event {
    match result {
        Ok(written) => Event::WriteDone {
            ticket,
            index: written.applied.index,
            term: written.applied.term,
            duplicate: written.applied.duplicate,
            here: written.here,
            condition_failed: written.applied.condition_failed,
            error: None,
        },
        Err(e) => Event::WriteDone {
            ticket,
            index: 0,
            term: 0,
            duplicate: false,
            here: false,
            condition_failed: false,
            error: Some(e.to_json()),
        },
    }
}

#[napi(object)]
pub struct NativeChange {
    pub index: f64,
    pub key: String,
    pub value: Option<String>,
}

#[napi(object)]
pub struct NativeChanges {
    pub floor: f64,
    pub through: f64,
    pub changes: Vec<NativeChange>,
}

#[napi(object)]
pub struct NativeRead {
    pub index: f64,
    pub value: Option<String>,
}

#[napi(object)]
pub struct NativeAppliedOperation {
    pub index: f64,
    pub term: f64,
}

/// A member as `getState().membership.nodes` lists it.
#[napi(object)]
pub struct MemberInfo {
    pub host: String,
    pub port: u32,
    pub voter: bool,
}

#[napi(object)]
pub struct Membership {
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    pub nodes: BTreeMap<String, MemberInfo>,
    /// A membership change is half done (joint config); `voters` lists both configs' voters.
    pub changing: bool,
}

/// `getState()` of a running node: `RaftState` in index.d.ts, field for field.
#[napi(object, use_nullable = true)]
pub struct RaftState {
    pub node_id: String,
    pub role: String,
    pub is_leader: bool,
    pub leader_id: Option<String>,
    pub term: f64,
    pub port: u32,
    pub last_log_index: f64,
    pub commit_index: f64,
    pub last_applied: f64,
    pub log_length: f64,
    pub snapshot_index: Option<f64>,
    /// Member ids other than this node.
    pub peers: Vec<String>,
    pub connected_peers: Vec<String>,
    pub membership: Membership,
    /// Leader only: per member, the highest log index known to be replicated there.
    pub replication: BTreeMap<String, Option<f64>>,
    /// Follower: when a leader was last heard from; leader: when a quorum last acknowledged it
    /// (ms since epoch, 0 for never).
    pub last_contact: f64,
    /// Why this node's Raft stopped on its own (its storage failed), with what to do; null
    /// while it runs or after `stop()`.
    pub failure: Option<String>,
}

#[napi]
pub struct NativeNode {
    /// Taken out at `stop()`, so the node (and its LMDB lock) is released as soon as the calls
    /// still in flight finish, not whenever JavaScript collects this object.
    node: Mutex<Option<Arc<Node>>>,
    stop_pump: Mutex<Option<oneshot::Sender<()>>>,
    /// Where write results go, with the node's other events.
    events: EventSink,
    /// Forwarding of this node's log records, ended at `stop()`.
    logs: Mutex<Option<crate::log_forward::Registration>>,
}

fn node_config(c: NativeConfig) -> std::result::Result<NodeConfig, NodeError> {
    let bootstrap = match c.bootstrap.as_str() {
        "auto" => Bootstrap::Auto,
        "always" => Bootstrap::Always,
        "never" => Bootstrap::Never,
        other => {
            return Err(NodeError::new(
                ErrorCode::InvalidConfig,
                format!("bootstrap: expected 'auto', true or false, got {other}"),
            ))
        }
    };
    let port = u16::try_from(c.port).map_err(|_| {
        NodeError::new(
            ErrorCode::InvalidConfig,
            format!("port: {} is not a valid port", c.port),
        )
    })?;
    let resume_from = match c.applied_index {
        None => ResumeFrom::Cursor,
        Some(i) if i.is_finite() && i >= 0.0 && i.fract() == 0.0 => {
            ResumeFrom::AppliedIndex(i as u64)
        }
        Some(i) => {
            return Err(NodeError::new(
                ErrorCode::InvalidConfig,
                format!("appliedIndex: expected a log index (an integer >= 0), got {i}"),
            )
            .with_field("appliedIndex"))
        }
    };
    let initial_members = match c.initial_members {
        Some(members) => Some(
            members
                .into_iter()
                .map(|m| {
                    let port = u16::try_from(m.port).map_err(|_| {
                        NodeError::new(
                            ErrorCode::InvalidConfig,
                            format!("initialMembers: {} is not a valid port", m.port),
                        )
                        .with_field("initialMembers")
                    })?;
                    Ok((m.node_id, PeerAddr { host: m.host, port }))
                })
                .collect::<std::result::Result<Vec<_>, NodeError>>()?,
        ),
        None => None,
    };
    Ok(NodeConfig {
        resume_from,
        app_snapshots: c.app_snapshots.unwrap_or(false),
        node_id: c.node_id,
        advertise_host: c.advertise_host.unwrap_or_else(|| c.host.clone()),
        host: c.host,
        port,
        initial_members,
        data_dir: PathBuf::from(c.data_dir),
        cluster_id: c.cluster_id,
        secrets: c.secrets.unwrap_or_default(),
        election_timeout_min_ms: c.election_timeout_min.into(),
        election_timeout_max_ms: c.election_timeout_max.into(),
        heartbeat_interval_ms: c.heartbeat_interval.into(),
        snapshot_threshold: c.snapshot_threshold.into(),
        logs_kept_after_snapshot: c.logs_kept_after_snapshot.into(),
        bootstrap,
        id_window: IdWindow {
            ttl_ms: c.operation_ttl_ms.max(0.0) as u64,
            max_ids: c
                .operation_id_window
                .map_or(IdWindow::DEFAULT_MAX_IDS, |n| n.max(1.0) as u64),
            max_bytes: c
                .operation_id_window_bytes
                .map_or(IdWindow::DEFAULT_MAX_BYTES, |n| n.max(1.0) as u64),
        },
        command_timeout: Duration::from_millis(c.command_timeout_ms.into()),
        add_peer_timeout: Duration::from_millis(c.add_peer_timeout_ms.into()),
        map_size_bytes: (c.map_size_mb as usize) << 20,
        max_frame_bytes: c.max_frame_bytes as usize,
        max_connections: c.max_connections as usize,
        tls: c.tls.map(|tls| TlsFiles {
            cert: tls.cert_file.into(),
            key: tls.key_file.into(),
            ca: tls.ca_file.into(),
        }),
    })
}

/// How many event batches may be on their way to JavaScript, or running there, at once. A batch
/// waits for its turn, and events that come meanwhile join it: the busier JavaScript is, the
/// larger the batches it gets. Without the limit every event that found the channel empty went
/// over alone, and since a daemon proposes again in the batch its writes were answered in, writes
/// once answered one by one stayed one write per Raft append: at 16 in flight a leader could run
/// at a fifth of its rate until the load stopped. One rather than two: in interleaved runs one
/// gave the larger batches and more writes per second, and no slower sequential writes.
const DELIVERIES_IN_FLIGHT: usize = 1;

/// Delivers events to JavaScript in batches until told to stop; then flushes what is left and
/// drops the callback, which lets the process exit.
async fn pump_events(
    mut rx: mpsc::UnboundedReceiver<Event>,
    callback: EventCallback,
    backlog: Arc<Backlog>,
    mut stop: oneshot::Receiver<()>,
) {
    const MAX_BATCH: usize = 4096;
    let places = Arc::new(Semaphore::new(DELIVERIES_IN_FLIGHT));
    let deliver = |batch: &[Event], place: Option<OwnedSemaphorePermit>| {
        if batch.is_empty() {
            return;
        }
        // Counted when emitted (`EventSink::emit`), so what waits in the channel counts too.
        let costs: Vec<u64> = batch.iter().map(Event::cost).collect();
        let bytes: u64 = costs.iter().sum();
        let json = batch_to_json(batch);
        let taken = backlog.clone();
        // Counted as taken once JavaScript's handler returned (its listeners ran), or at once
        // when the call could not be queued; what it held stays counted until released. The
        // place goes back with it (or when a call the process drops at exit is dropped).
        let status = callback.call_with_return_value(
            json,
            ThreadsafeFunctionCallMode::NonBlocking,
            move |held: Result<Option<Vec<u32>>>, _| {
                let held: Vec<u64> = held
                    .ok()
                    .flatten()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|position| costs.get(position as usize).copied())
                    .collect();
                taken.taken_holding(bytes, &held);
                drop(place);
                Ok(())
            },
        );
        if status != Status::Ok {
            backlog.taken(bytes);
        }
    };
    let drain = |rx: &mut mpsc::UnboundedReceiver<Event>, batch: &mut Vec<Event>| {
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
    };
    loop {
        let first = tokio::select! {
            first = rx.recv() => first,
            _ = &mut stop => None,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        let place = tokio::select! {
            place = places.clone().acquire_owned() => place.ok(),
            _ = &mut stop => {
                deliver(&batch, None);
                break;
            }
        };
        drain(&mut rx, &mut batch);
        deliver(&batch, place);
    }
    // Stopped: what is left goes over at once, whatever is in flight.
    loop {
        let mut rest = Vec::new();
        drain(&mut rx, &mut rest);
        if rest.is_empty() {
            break;
        }
        deliver(&rest, None);
    }
    // Nobody takes events any more: an apply waiting for room must not wait for ever.
    backlog.close();
}

/// Log records of the Rust core go to the application's logger of the node they belong to (see
/// `log_forward`), and to stderr when `UNRDF_CONSENSUS_LOG` holds a filter such as `info` or
/// `openraft=debug`, for debugging. Nothing is printed otherwise.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let forward =
            crate::log_forward::ForwardLayer.with_filter(crate::log_forward::ForwardFilter);
        let stderr = std::env::var("UNRDF_CONSENSUS_LOG").ok().map(|filter| {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Targets reads the same `info` / `openraft=debug,warn` directives as an env filter
                // without the regex engine, which was a tenth of the binary.
                .with_filter(
                    filter
                        .parse::<tracing_subscriber::filter::Targets>()
                        .unwrap_or_default(),
                )
        });
        // Another subscriber already installed by the host process wins; logs then go there.
        let _ = tracing_subscriber::registry()
            .with(forward)
            .with(stderr)
            .try_init();
    });
}

/// Starts a node. Resolves once storage is open, the port is bound and Raft runs.
#[napi]
pub async fn start_node(
    config: NativeConfig,
    // A batch of events as one JSON array, so a burst crosses into JavaScript once.
    #[napi(ts_arg_type = "(batch: string) => number[] | undefined")] on_events: EventCallback,
) -> Result<NativeNode> {
    use tracing::Instrument;
    init_logging();
    let log_level = match config.log_level.as_deref() {
        None => None,
        Some(name) => Some(crate::log_forward::parse_level(name).ok_or_else(|| {
            js_error(
                NodeError::new(
                    ErrorCode::InvalidConfig,
                    format!("logLevel: expected error, warn, info, debug or trace, got {name}"),
                )
                .with_field("logLevel"),
            )
        })?),
    };
    let config = node_config(config).map_err(js_error)?;
    let (events, rx) = EventSink::new();
    let logs =
        log_level.map(|level| crate::log_forward::register(&config.node_id, level, events.clone()));
    let (stop_tx, stop_rx) = oneshot::channel();
    tokio::spawn(pump_events(rx, on_events, events.backlog(), stop_rx));
    // Raft's core task starts inside this span, so its records name this node.
    let span = tracing::error_span!(
        crate::log_forward::NODE_SPAN,
        node_id = config.node_id.as_str()
    );
    let events_for_writes = events.clone();
    match Node::start(config, events).instrument(span).await {
        Ok(node) => Ok(NativeNode {
            node: Mutex::new(Some(node)),
            stop_pump: Mutex::new(Some(stop_tx)),
            events: events_for_writes,
            logs: Mutex::new(logs),
        }),
        Err(e) => {
            let _ = stop_tx.send(());
            Err(js_error(e))
        }
    }
}

/// How long `stop()` waits for calls in flight to let go of the node; a wedged one must not
/// hang it.
const STOP_LIMIT: Duration = Duration::from_secs(5);

fn peer_port(port: u32) -> Result<u16> {
    u16::try_from(port).map_err(|_| {
        js_error(NodeError::new(
            ErrorCode::InvalidConfig,
            format!("port: {port} is not a valid port"),
        ))
    })
}

fn index(i: Option<u64>) -> Option<f64> {
    i.map(|v| v as f64)
}

#[napi]
impl NativeNode {
    fn node(&self) -> Result<Arc<Node>> {
        lock(&self.node)
            .clone()
            .ok_or_else(|| js_error(NodeError::new(ErrorCode::Shutdown, "the node is stopped")))
    }

    /// Registers the target of an `addPeer` call at once, on the JavaScript thread, so every
    /// call made in the same synchronous run is known before any of them starts founding.
    /// `add_peer` with `registered: true` follows for each.
    #[napi]
    pub fn expect_peer(&self, node_id: String, host: String, port: u32) -> Result<()> {
        let port = peer_port(port)?;
        self.node()?.expect_peer(&node_id, PeerAddr { host, port });
        Ok(())
    }

    #[napi]
    pub async fn add_peer(
        &self,
        node_id: String,
        host: String,
        port: u32,
        registered: Option<bool>,
    ) -> Result<()> {
        let port = peer_port(port)?;
        let node = self.node()?;
        node.unless_stopped(node.add_peer(
            node_id,
            PeerAddr { host, port },
            registered.unwrap_or(false),
        ))
        .await
        .map_err(js_error)
    }

    #[napi]
    pub async fn remove_peer(&self, node_id: String, forward: Option<bool>) -> Result<()> {
        let node = self.node()?;
        node.unless_stopped(node.remove_peer(node_id, forward.unwrap_or(false)))
            .await
            .map_err(js_error)
    }

    #[napi]
    pub async fn transfer_leadership(&self, to: String, timeout_ms: u32) -> Result<()> {
        let node = self.node()?;
        node.unless_stopped(node.transfer_leadership(to, Duration::from_millis(timeout_ms.into())))
            .await
            .map_err(js_error)
    }

    /// Replicates writes in one crossing from JavaScript: the write at position `i` is ticket
    /// `first_ticket + i`, and its result comes back as a `write_done` event with that ticket,
    /// each as soon as it is known.
    #[napi]
    pub fn replicate_batch(&self, writes: String, first_ticket: f64) -> Result<()> {
        let node = self.node()?;
        let writes: Vec<BatchedWrite> = serde_json::from_str(&writes).map_err(|e| {
            js_error(NodeError::new(
                ErrorCode::InvalidOperation,
                format!("malformed batch of writes: {e}"),
            ))
        })?;
        let events = self.events.clone();
        let first_ticket = first_ticket as u64;
        let mut batch = Vec::with_capacity(writes.len());
        let mut tickets = Vec::with_capacity(writes.len());
        for (position, write) in writes.into_iter().enumerate() {
            let ticket = first_ticket + position as u64;
            match engine_write(&node, write) {
                Ok(write) => {
                    batch.push(write);
                    tickets.push(Some(ticket));
                }
                Err(e) => events.emit(write_done(ticket, Err(e))),
            }
        }
        napi::bindgen_prelude::spawn(async move {
            // Each ticket is answered once: taken out when its result goes to JavaScript.
            let unanswered = Mutex::new(tickets);
            let answer = |position: usize, result| {
                if let Some(ticket) = lock(&unanswered).get_mut(position).and_then(Option::take) {
                    events.emit(write_done(ticket, result));
                }
            };
            let writing = node.replicate_many(batch, &answer);
            if let Err(stopped) = node
                .unless_stopped(async {
                    writing.await;
                    Ok(())
                })
                .await
            {
                let left: Vec<u64> = lock(&unanswered)
                    .iter_mut()
                    .filter_map(Option::take)
                    .collect();
                for ticket in left {
                    events.emit(write_done(ticket, Err(stopped.clone())));
                }
            }
        });
        Ok(())
    }

    /// Replaces the cluster secrets (see `Secrets`).
    #[napi]
    pub fn set_secrets(&self, secrets: Vec<String>) -> Result<()> {
        self.node()?.set_secrets(secrets).map_err(js_error)
    }

    /// Reads the TLS certificate, key and CA files again (see `Tls::reload`).
    #[napi]
    pub fn reload_tls(&self) -> Result<()> {
        self.node()?.reload_tls().map_err(js_error)
    }

    /// Delivery in this run starts after this index (null: from the start of the log).
    #[napi]
    pub fn resumed_after(&self) -> Result<Option<f64>> {
        Ok(index(self.node()?.resumed_after()))
    }

    /// JavaScript ran the listeners of every event up to log index `index` (and, for a daemon
    /// with `appliedIndex`, the daemon holds them): the delivery cursor may move past it.
    #[napi]
    pub fn delivered(&self, index: f64) -> Result<()> {
        if index.is_finite() && index >= 0.0 {
            self.node()?.delivered(index as u64);
        }
        Ok(())
    }

    /// Makes every snapshot ask JavaScript for the application's state (`snapshot_request`).
    #[napi]
    pub fn enable_app_snapshots(&self, on: bool) -> Result<()> {
        self.node()?.enable_app_snapshots(on);
        Ok(())
    }

    /// JavaScript handed the `count` events it held longest (no `command_applied` listener
    /// was attached) to a listener: the node may apply as much further.
    #[napi]
    pub fn release_held_events(&self, count: u32) {
        self.events.backlog().release_held(count as usize);
    }

    /// Answers a `snapshot_request` with the application's state as JSON (or null).
    #[napi]
    pub fn provide_app_snapshot(&self, id: f64, state: Option<String>) -> Result<bool> {
        Ok(self.node()?.provide_app_snapshot(id as u64, state))
    }

    /// Answers a `snapshot_request` whose state the application could not give: no snapshot is
    /// taken this time, and the node asks again after more entries.
    #[napi]
    pub fn decline_app_snapshot(&self, id: f64) -> Result<bool> {
        Ok(self.node()?.decline_app_snapshot(id as u64))
    }

    /// Replicated registry records under `prefix`: `[key, json]` pairs in key order.
    #[napi]
    pub fn registry(&self, prefix: String) -> Result<Vec<Vec<String>>> {
        let entries = self.node()?.registry(&prefix).map_err(js_error)?;
        Ok(entries.into_iter().map(|(k, v)| vec![k, v]).collect())
    }

    /// The JSON under `key` in the registry as this replica applied it.
    #[napi]
    pub fn registry_get(&self, key: String) -> Result<Option<String>> {
        self.node()?.registry_get(&key).map_err(js_error)
    }

    /// How many registry keys start with `prefix` on this replica.
    #[napi]
    pub fn registry_count(&self, prefix: String) -> Result<f64> {
        Ok(self.node()?.registry_count(&prefix).map_err(js_error)? as f64)
    }

    /// Registry changes under `prefix` after log index `after` (through `up_to` when given).
    #[napi]
    pub fn registry_changes(
        &self,
        prefix: String,
        after: f64,
        up_to: Option<f64>,
        limit: u32,
    ) -> Result<NativeChanges> {
        let up_to = up_to.map(|i| i as u64).unwrap_or(u64::MAX);
        let found = self
            .node()?
            .registry_changes(&prefix, after as u64, up_to, limit as usize)
            .map_err(js_error)?;
        Ok(NativeChanges {
            floor: found.floor as f64,
            through: found.through as f64,
            changes: found
                .changes
                .into_iter()
                .map(|c| NativeChange {
                    index: c.index as f64,
                    key: c.key,
                    value: c.value,
                })
                .collect(),
        })
    }

    /// Reads `key` linearizably: after the leader confirmed its leadership with a quorum.
    #[napi]
    pub async fn linearizable_get(
        &self,
        key: String,
        timeout_ms: Option<u32>,
    ) -> Result<NativeRead> {
        let node = self.node()?;
        let timeout = timeout_ms
            .map(|ms| Duration::from_millis(ms.into()))
            .unwrap_or_else(|| node.command_timeout());
        let read = node
            .linearizable_get(&key, timeout)
            .await
            .map_err(js_error)?;
        Ok(NativeRead {
            index: read.index as f64,
            value: read.value,
        })
    }

    /// Fault injection for chaos runs without network namespaces: peers not to dial, and peers
    /// not to accept. Refused unless the process started with `UNRDF_CONSENSUS_FAULT_HOOKS=1`.
    #[napi]
    pub fn set_link_cuts(&self, outbound: Vec<String>, inbound: Vec<String>) -> Result<()> {
        let cuts = Cuts {
            outbound: outbound.into_iter().collect(),
            inbound: inbound.into_iter().collect(),
        };
        self.node()?.set_link_cuts(cuts).map_err(js_error)
    }

    /// Where this replica applied operation `op_id` (`index`, `term`), or null.
    #[napi]
    pub fn operation(&self, op_id: String) -> Result<Option<NativeAppliedOperation>> {
        let found = self.node()?.operation(&op_id).map_err(js_error)?;
        Ok(found.map(|(index, term)| NativeAppliedOperation {
            index: index as f64,
            term: term as f64,
        }))
    }

    /// Round-trip time to a member in ms; rejects when it does not answer within `timeout_ms`.
    #[napi]
    pub async fn ping(&self, node_id: String, timeout_ms: u32) -> Result<f64> {
        let node = self.node()?;
        let rtt = node
            .unless_stopped(node.ping(&node_id, Duration::from_millis(timeout_ms.into())))
            .await
            .map_err(js_error)?;
        Ok(rtt.as_secs_f64() * 1000.0)
    }

    /// Snapshots now and purges the log to `keep` entries before the snapshot; resolves with the
    /// last purged index, or null when nothing was purged.
    #[napi]
    pub async fn compact(&self, keep: u32, timeout_ms: u32) -> Result<Option<f64>> {
        let node = self.node()?;
        let upto = node
            .unless_stopped(node.compact(keep.into(), Duration::from_millis(timeout_ms.into())))
            .await
            .map_err(js_error)?;
        Ok(upto.map(|i| i as f64))
    }

    /// Disk timings, snapshot size and per-peer round trips, read at scrape time.
    #[napi]
    pub fn stats(&self) -> Result<NativeStats> {
        let node = self.node()?;
        let s = node.storage_stats();
        Ok(NativeStats {
            log_fsync: histogram(s.log_fsync.read()),
            apply_commit: histogram(s.apply_commit.read()),
            snapshot_save: histogram(s.snapshot_save.read()),
            snapshot_install: histogram(s.snapshot_install.read()),
            snapshot_read: histogram(s.snapshot_read.read()),
            snapshot_bytes: s.snapshot_bytes.load(std::sync::atomic::Ordering::Relaxed) as f64,
            peers: node
                .round_trips()
                .into_iter()
                .map(|trips| NativePeerRtt {
                    node_id: trips.node_id,
                    rtt: histogram(trips.calls),
                    network_rtt: trips.network.map(|d| d.as_secs_f64()),
                })
                .collect(),
        })
    }

    #[napi]
    pub fn state(&self) -> Result<RaftState> {
        let s = self.node()?.state();
        let mut voters = Vec::new();
        let mut learners = Vec::new();
        let mut nodes = BTreeMap::new();
        for (id, addr) in s.nodes {
            let voter = s.voters.contains(&id);
            if voter {
                voters.push(id.clone());
            } else {
                learners.push(id.clone());
            }
            nodes.insert(
                id,
                MemberInfo {
                    host: addr.host,
                    port: addr.port.into(),
                    voter,
                },
            );
        }
        let at = |i: Option<u64>| i.unwrap_or(0) as f64;
        Ok(RaftState {
            peers: nodes
                .keys()
                .filter(|id| **id != s.node_id)
                .cloned()
                .collect(),
            is_leader: s.role == "leader",
            role: s.role.to_string(),
            node_id: s.node_id,
            leader_id: s.leader_id,
            term: s.term as f64,
            port: s.port.into(),
            last_log_index: at(s.last_log_index),
            commit_index: at(s.commit_index),
            last_applied: at(s.last_applied),
            log_length: s.log_length as f64,
            snapshot_index: index(s.snapshot_index),
            connected_peers: s.connected_peers,
            membership: Membership {
                voters,
                learners,
                nodes,
                changing: s.joint,
            },
            replication: s
                .replication
                .into_iter()
                .map(|(node_id, matched)| (node_id, index(matched)))
                .collect(),
            last_contact: s.last_contact_ms as f64,
            failure: s.failure,
        })
    }

    /// Stops the node and releases the event callback. Idempotent. Resolves once the node is
    /// gone with its storage (bounded), so the same data directory can be opened right away:
    /// calls still in flight see the stop and end with ERR_SHUTDOWN, letting go of the node.
    #[napi]
    pub async fn stop(&self) -> Result<()> {
        let node = lock(&self.node).take();
        if let Some(node) = node {
            node.stop().await;
            let dropped = node.dropped();
            drop(node);
            if let Some(dropped) = dropped {
                let _ = tokio::time::timeout(STOP_LIMIT, dropped).await;
            }
        }
        drop(lock(&self.logs).take());
        let stop = lock(&self.stop_pump).take();
        if let Some(tx) = stop {
            let _ = tx.send(());
        }
        Ok(())
    }
}
