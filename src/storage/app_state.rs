//! The application's own state in snapshots. When JavaScript registers a snapshot provider, each
//! snapshot asks it for the state as of the snapshot's index and carries it; a follower that
//! installs the snapshot hands that state to the application's restore callback.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::events::{Event, EventSink};
use crate::lock;

pub struct AppSnapshots {
    enabled: AtomicBool,
    /// Set when the node stops: nobody will answer any more (see `close`).
    closed: AtomicBool,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<Option<String>>>>,
    /// Held by the state machine from committing an applied batch until its events are queued,
    /// and by a snapshot builder while it reads the state and queues its request: the request
    /// then reaches JavaScript exactly after the events of the entries the snapshot covers.
    gate: Mutex<()>,
    timeout: Duration,
}

impl AppSnapshots {
    pub fn new(timeout: Duration) -> Self {
        AppSnapshots {
            enabled: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            gate: Mutex::new(()),
            timeout,
        }
    }

    pub fn enable(&self, on: bool) {
        self.enabled.store(on, Ordering::Release);
    }

    pub fn gate(&self) -> std::sync::MutexGuard<'_, ()> {
        lock(&self.gate)
    }

    /// Queues a request for the application's state as of `index` (call with the gate held).
    /// `None` when no provider is registered.
    pub fn request(
        &self,
        index: u64,
        events: &EventSink,
    ) -> Option<oneshot::Receiver<Option<String>>> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut pending = lock(&self.pending);
        if self.closed.load(Ordering::Acquire) {
            // Answered at once with "could not": no snapshot, rather than one without the state.
            return Some(rx);
        }
        pending.insert(id, tx);
        drop(pending);
        events.emit(Event::SnapshotRequest { id, index });
        Some(rx)
    }

    /// Waits for the application's answer to a request.
    pub async fn wait(&self, rx: oneshot::Receiver<Option<String>>) -> io::Result<Option<String>> {
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(state)) => Ok(state),
            Ok(Err(_)) if self.closed.load(Ordering::Acquire) => Err(io::Error::other(
                "the node stopped before the application provided its snapshot state",
            )),
            Ok(Err(_)) => Err(io::Error::other(
                "the application could not provide its snapshot state",
            )),
            Err(_) => Err(io::Error::other(format!(
                "the application did not provide its snapshot state within {} s",
                self.timeout.as_secs()
            ))),
        }
    }

    /// The node stops: every request waiting, and every one made from now on, is declined at once.
    /// A snapshot build waiting for an answer would otherwise hold the store (and the data
    /// directory's lock) past the stop, for up to the timeout, when the application's provider
    /// is slow or its answer comes after JavaScript stopped listening.
    pub fn close(&self) {
        let mut pending = lock(&self.pending);
        self.closed.store(true, Ordering::Release);
        pending.clear();
    }

    /// The application cannot answer request `id`: its waiter learns at once instead of at the
    /// timeout. False when no such request is waiting.
    pub fn decline(&self, id: u64) -> bool {
        lock(&self.pending).remove(&id).is_some()
    }

    /// The application's answer to request `id`. False when no such request is waiting.
    pub fn provide(&self, id: u64, state: Option<String>) -> bool {
        let tx = lock(&self.pending).remove(&id);
        match tx {
            Some(tx) => tx.send(state).is_ok(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopping_error(result: io::Result<Option<String>>) -> String {
        match result {
            Err(e) => e.to_string(),
            Ok(state) => format!("answered with {state:?}"),
        }
    }

    #[tokio::test]
    async fn a_stopping_node_gives_up_its_snapshot_requests_at_once() {
        // The timeout is far beyond the test's: only `close` can end these waits.
        let app = AppSnapshots::new(Duration::from_secs(3600));
        app.enable(true);
        let (events, mut queued) = EventSink::new();
        let waiting = app.request(7, &events).expect("a provider is registered");
        assert!(matches!(
            queued.recv().await,
            Some(Event::SnapshotRequest { index: 7, .. })
        ));
        app.close();
        let message = stopping_error(app.wait(waiting).await);
        assert!(message.contains("the node stopped"), "{message}");
        // A snapshot begun after the stop is declined too, without asking JavaScript.
        let late = app.request(8, &events).expect("still a provider");
        let message = stopping_error(app.wait(late).await);
        assert!(message.contains("the node stopped"), "{message}");
        assert!(queued.try_recv().is_err());
    }
}
