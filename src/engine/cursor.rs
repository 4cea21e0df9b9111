//! Keeps the delivery cursor on disk while the node runs.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::ErrorCode;
use crate::events::{Event, EventSink};
use crate::storage::{Delivery, Store};

/// At most one cursor write per this interval: under load the cursor moves thousands of times a
/// second, and a crash costs at most this much redelivery.
pub const CURSOR_WRITE_INTERVAL: Duration = Duration::from_millis(50);

/// Writes the acknowledged delivery cursor whenever it moved, and once more when the node stops,
/// so a graceful stop redelivers nothing.
pub async fn write_cursor(
    store: Arc<Store>,
    delivery: Arc<Delivery>,
    events: EventSink,
    mut stop: watch::Receiver<bool>,
) {
    let persist = || {
        if let Err(e) = delivery.persist(&store) {
            events.emit(Event::Warning {
                code: ErrorCode::Storage.as_str(),
                message: format!("could not record how far delivery got: {e}"),
            });
        }
    };
    loop {
        tokio::select! {
            _ = delivery.moved.notified() => {}
            _ = stop.changed() => break,
        }
        persist();
        tokio::select! {
            _ = tokio::time::sleep(CURSOR_WRITE_INTERVAL) => {}
            _ = stop.changed() => break,
        }
    }
    persist();
}
