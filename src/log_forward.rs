//! Hands the Rust core's log records (tracing) to the application's logger, through each node's
//! event channel as `log` events.
//!
//! One process may run several nodes, and tracing has one global subscriber, so each record is
//! routed by the `consensus_node` span it was emitted in (the node's start-up and Raft core run
//! inside it). A record outside any node's span (a task shared or spawned without the span) goes
//! to the only node that forwards logs, or to every one of them when there are several: a record
//! may then reach two loggers, but none is lost. Each node's records are rate-bounded; the next
//! record forwarded says how many were dropped.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event as TracingEvent, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::events::{Event, EventSink, WARNING_TARGET};
use crate::{lock, read_lock, write_lock};

/// Name of the span every node's work runs in; its `node_id` field routes records.
pub const NODE_SPAN: &str = "consensus_node";

/// Records per node per second forwarded at most, and the burst allowed above that.
const RATE_PER_SEC: f64 = 50.0;
const BURST: f64 = 200.0;

struct Target {
    node_id: String,
    /// Most verbose level forwarded (tracing orders TRACE > DEBUG > INFO > WARN > ERROR).
    level: Level,
    sink: EventSink,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    dropped: u64,
}

static TARGETS: RwLock<Vec<Arc<Target>>> = RwLock::new(Vec::new());
/// The most verbose level any node forwards, as a `level_rank`; 0 when none forwards.
static MAX_RANK: AtomicU8 = AtomicU8::new(0);

fn level_rank(l: &Level) -> u8 {
    match *l {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

fn level_name(l: &Level) -> &'static str {
    match *l {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// Parses the `logLevel` names the JavaScript side accepts.
pub fn parse_level(name: &str) -> Option<Level> {
    match name {
        "error" => Some(Level::ERROR),
        "warn" => Some(Level::WARN),
        "info" => Some(Level::INFO),
        "debug" => Some(Level::DEBUG),
        "trace" => Some(Level::TRACE),
        _ => None,
    }
}

fn refresh_max_rank(targets: &[Arc<Target>]) {
    let rank = targets
        .iter()
        .map(|t| level_rank(&t.level))
        .max()
        .unwrap_or(0);
    if MAX_RANK.swap(rank, Ordering::Relaxed) != rank {
        // Callsites cache whether they are enabled; a new level must reach them.
        tracing::callsite::rebuild_interest_cache();
    }
}

/// Forwards this node's records at `level` and above to `sink` until the returned guard drops.
pub fn register(node_id: &str, level: Level, sink: EventSink) -> Registration {
    let target = Arc::new(Target {
        node_id: node_id.to_string(),
        level,
        sink,
        bucket: Mutex::new(Bucket {
            tokens: BURST,
            at: Instant::now(),
            dropped: 0,
        }),
    });
    let mut targets = write_lock(&TARGETS);
    targets.push(target.clone());
    refresh_max_rank(&targets);
    Registration { target }
}

/// Stops forwarding for one node when dropped.
pub struct Registration {
    target: Arc<Target>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut targets = write_lock(&TARGETS);
        targets.retain(|t| !Arc::ptr_eq(t, &self.target));
        refresh_max_rank(&targets);
    }
}

/// The node a span belongs to, stored in the span's extensions.
struct NodeTag(String);

#[derive(Default)]
struct NodeIdVisitor(Option<String>);

impl Visit for NodeIdVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "node_id" {
            self.0 = Some(value.to_string());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "node_id" {
            self.0 = Some(format!("{value:?}").trim_matches('"').to_string());
        }
    }
}

#[derive(Default)]
struct RecordVisitor {
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl Visit for RecordVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields.insert(field.name().into(), value.into());
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.insert(field.name().into(), text.into());
        }
    }
}

/// Lets through our node spans (always, so records can be routed) and records no more verbose
/// than the most verbose level some node forwards.
pub struct ForwardFilter;

impl<S> Filter<S> for ForwardFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        if meta.is_span() {
            return meta.name() == NODE_SPAN;
        }
        level_rank(meta.level()) <= MAX_RANK.load(Ordering::Relaxed)
            && meta.target() != WARNING_TARGET
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        use tracing::level_filters::LevelFilter;
        Some(match MAX_RANK.load(Ordering::Relaxed) {
            0 => LevelFilter::ERROR, // our node spans are ERROR-level, records are filtered above
            1 => LevelFilter::ERROR,
            2 => LevelFilter::WARN,
            3 => LevelFilter::INFO,
            4 => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        })
    }
}

pub struct ForwardLayer;

impl<S> Layer<S> for ForwardLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != NODE_SPAN {
            return;
        }
        let mut v = NodeIdVisitor::default();
        attrs.record(&mut v);
        if let (Some(node_id), Some(span)) = (v.0, ctx.span(id)) {
            span.extensions_mut().insert(NodeTag(node_id));
        }
    }

    fn on_event(&self, event: &TracingEvent<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let node = ctx.event_scope(event).and_then(|scope| {
            scope
                .from_root()
                .find_map(|span| span.extensions().get::<NodeTag>().map(|t| t.0.clone()))
        });
        let targets: Vec<Arc<Target>> = {
            let all = read_lock(&TARGETS);
            all.iter()
                .filter(|t| meta.level() <= &t.level)
                .filter(|t| node.as_ref().is_none_or(|n| *n == t.node_id))
                .cloned()
                .collect()
        };
        if targets.is_empty() {
            return;
        }
        let mut record = RecordVisitor::default();
        event.record(&mut record);
        for t in targets {
            let Some(suppressed) = t.admit() else {
                continue;
            };
            t.sink.emit(Event::Log {
                level: level_name(meta.level()),
                target: meta.target().to_string(),
                message: record.message.clone(),
                fields: record.fields.clone(),
                suppressed,
            });
        }
    }
}

impl Target {
    /// Takes a token: `Some(records dropped since the last one forwarded)`, or `None` to drop.
    fn admit(&self) -> Option<u64> {
        let mut b = lock(&self.bucket);
        let now = Instant::now();
        let elapsed = now.duration_since(b.at).min(Duration::from_secs(60));
        b.at = now;
        b.tokens = (b.tokens + elapsed.as_secs_f64() * RATE_PER_SEC).min(BURST);
        if b.tokens < 1.0 {
            b.dropped += 1;
            return None;
        }
        b.tokens -= 1.0;
        Some(std::mem::take(&mut b.dropped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_beyond_the_burst_are_dropped_and_counted_in_the_next() {
        let (sink, _rx) = EventSink::new();
        let target = Target {
            node_id: "node-1".into(),
            level: Level::INFO,
            sink,
            bucket: Mutex::new(Bucket {
                tokens: BURST,
                at: Instant::now(),
                dropped: 0,
            }),
        };
        let admitted = (0..(BURST as usize + 50))
            .filter(|_| target.admit().is_some())
            .count();
        // A few tokens may refill while the loop runs; far fewer than the 50 over the burst.
        assert!(admitted >= BURST as usize && admitted < BURST as usize + 10);
        // The bucket refills with time; the next record forwarded counts the ones dropped.
        std::thread::sleep(Duration::from_millis(100));
        let dropped = target.admit();
        assert!(matches!(dropped, Some(n) if n > 40), "{dropped:?}");
        assert_eq!(target.admit(), Some(0));
    }
}
