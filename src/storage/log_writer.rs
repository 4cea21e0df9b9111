//! The log's own writer thread.
//!
//! openraft appends from its core task, the task that also sends heartbeats. An append that
//! waited there for LMDB's fsync would hold up the heartbeats of a leader whose disk stalls for
//! a moment, and its followers would elect another leader although nothing failed. So `append`
//! only queues: the entries become readable at once from `Pending`, this thread writes whatever
//! has queued up meanwhile in one LMDB transaction (one fsync for many appends), and only then
//! tells openraft that they are durable. Votes, truncations and purges go through the same queue,
//! so the disk sees every change in the order openraft made it, and the caller waits for those.
//!
//! The state machine's applied batches go through it too (`ApplyQueue`): each runs inside the
//! writer's transaction, in a nested transaction of its own, and commits with the appends queued
//! beside it. Under load a node applies about as often as it appends, and two commits, each with
//! its fsync, cost more CPU than the rest of applying a batch. Queued behind the appends of its
//! entries, an applied batch never reaches the disk before them: a leader commits an entry once a
//! majority holds it, which may be before its own append is flushed, and an entry applied but
//! missing from the log after a kill -9 would leave delivery nothing to replay.

use std::collections::BTreeMap;
use std::io;
use std::ops::Bound;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use heed::RwTxn;
use openraft::storage::IOFlushed;
use tokio::sync::oneshot;

use super::{
    encode, storage_err, AppSnapshots, Delivery, Store, KEY_COMMITTED, KEY_PURGED, KEY_VOTE,
};
use crate::lock;
use crate::types::{Entry, LogId, TypeConfig, Vote};

/// Entries handed to `append` whose transaction has not committed yet, readable meanwhile.
/// Each remembers which append queued it, so that the commit of an earlier append does not
/// remove an entry that a later append (after a truncation) put at the same index.
#[derive(Default)]
pub(super) struct Pending {
    entries: BTreeMap<u64, (u64, Entry)>,
    next_append: u64,
    /// The newest purge queued and not yet written: openraft reads nothing it covers any more.
    purge: Option<LogId>,
}

impl Pending {
    /// The queued entries within `range`.
    pub(super) fn within(&self, range: &(Bound<u64>, Bound<u64>)) -> Vec<Entry> {
        // BTreeMap::range panics on a range that ends before it starts; LMDB's gives nothing.
        let first = match range.0 {
            Bound::Included(i) => Some(i),
            Bound::Excluded(i) => i.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let Some(first) = first else {
            return Vec::new();
        };
        let past_last = match range.1 {
            Bound::Included(i) => i.checked_add(1),
            Bound::Excluded(i) => Some(i),
            Bound::Unbounded => None,
        };
        if past_last.is_some_and(|end| end <= first) {
            return Vec::new();
        }
        self.entries
            .range(first..)
            .take_while(|(i, _)| past_last.is_none_or(|end| **i < end))
            .map(|(_, (_, e))| e.clone())
            .collect()
    }

    pub(super) fn last_log_id(&self) -> Option<LogId> {
        self.entries.values().next_back().map(|(_, e)| e.log_id)
    }

    pub(super) fn queued_purge(&self) -> Option<LogId> {
        self.purge
    }
}

/// Applying a batch inside the writer's transaction. It returns what to do once that transaction
/// has committed.
pub(crate) type ApplyWork = Box<dyn FnOnce(&mut RwTxn<'_>) -> io::Result<Publish> + Send>;
/// Hands an applied batch's results out, after the commit that made it durable, with the
/// application's gate held (see `AppSnapshots`).
pub(crate) type Publish = Box<dyn FnOnce() + Send>;

enum Write {
    Append {
        append: u64,
        records: Vec<(u64, Vec<u8>)>,
        /// The commit point openraft had reported when it queued these entries. It names only
        /// entries queued before, so it is never ahead of what this transaction makes durable.
        committed: Option<LogId>,
        flushed: IOFlushed<TypeConfig>,
    },
    Vote {
        bytes: Vec<u8>,
        done: oneshot::Sender<io::Result<()>>,
    },
    TruncateFrom {
        index: u64,
        /// Appends numbered from here on were queued after the truncation: they stay.
        appends_before: u64,
        done: oneshot::Sender<io::Result<()>>,
    },
    Purge {
        log_id: LogId,
    },
    Apply {
        work: Option<ApplyWork>,
        /// Set once `work` succeeded, run after the commit.
        publish: Option<Publish>,
        /// Set when `work` failed: its nested transaction was dropped, the rest commits.
        failed: Option<io::Error>,
        gate: Arc<AppSnapshots>,
        done: oneshot::Sender<io::Result<()>>,
    },
}

/// The queue to the writer thread. The last `LogStore` or `ApplyQueue` clone to go closes the
/// queue and waits for the thread to write what is queued and exit, so a node stopped and started
/// again in one process finds its data directory closed.
pub(super) struct LogWriter {
    queue: Mutex<Option<Sender<Write>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    pub(super) pending: Arc<Mutex<Pending>>,
}

/// The state machine's way into the writer (see the module's notes). It keeps the writer
/// running, as the log store's clones do.
#[derive(Clone)]
pub struct ApplyQueue {
    writer: Arc<LogWriter>,
}

impl ApplyQueue {
    /// Applies a batch in the writer's next transaction; returns once it committed and was
    /// published.
    pub(super) async fn apply(&self, work: ApplyWork, gate: Arc<AppSnapshots>) -> io::Result<()> {
        self.writer
            .queue(|done, _| Write::Apply {
                work: Some(work),
                publish: None,
                failed: None,
                gate,
                done,
            })?
            .await
            .map_err(|_| io::Error::other("the log writer stopped before it applied"))?
    }
}

impl LogWriter {
    pub(super) fn start(store: Arc<Store>, delivery: Arc<Delivery>) -> io::Result<Self> {
        let (queue, writes) = mpsc::channel();
        let pending = Arc::new(Mutex::new(Pending::default()));
        let thread = {
            let pending = pending.clone();
            std::thread::Builder::new()
                .name("raft-log-writer".into())
                .spawn(move || write_until_closed(&store, &delivery, &pending, &writes))?
        };
        Ok(LogWriter {
            queue: Mutex::new(Some(queue)),
            thread: Mutex::new(Some(thread)),
            pending,
        })
    }

    pub(super) fn apply_queue(self: &Arc<Self>) -> ApplyQueue {
        ApplyQueue {
            writer: self.clone(),
        }
    }

    fn send(&self, write: Write) -> io::Result<()> {
        let closed = || io::Error::other("the log writer has stopped");
        lock(&self.queue)
            .as_ref()
            .ok_or_else(closed)?
            .send(write)
            .map_err(|_| closed())
    }

    /// Queues entries: readable as soon as this returns, durable when `flushed` is called.
    pub(super) fn append(
        &self,
        entries: impl IntoIterator<Item = Entry>,
        committed: Option<LogId>,
        flushed: IOFlushed<TypeConfig>,
    ) -> io::Result<()> {
        let mut records = Vec::new();
        let mut queued = Vec::new();
        for entry in entries {
            records.push((entry.log_id.index(), encode(&entry)?));
            queued.push(entry);
        }
        // Entries enter `pending` and the queue under one lock, so appends reach the thread in
        // the order of their numbers.
        let mut pending = lock(&self.pending);
        let append = pending.next_append;
        pending.next_append += 1;
        for entry in queued {
            pending
                .entries
                .insert(entry.log_id.index(), (append, entry));
        }
        self.send(Write::Append {
            append,
            records,
            committed,
            flushed,
        })
    }

    /// Queues a write whose caller waits for it; returns what the writer will answer on.
    fn queue(
        &self,
        make: impl FnOnce(oneshot::Sender<io::Result<()>>, u64) -> Write,
    ) -> io::Result<oneshot::Receiver<io::Result<()>>> {
        let (done, written) = oneshot::channel();
        let pending = lock(&self.pending);
        self.send(make(done, pending.next_append))?;
        Ok(written)
    }

    async fn wait(
        &self,
        make: impl FnOnce(oneshot::Sender<io::Result<()>>, u64) -> Write,
    ) -> io::Result<()> {
        self.queue(make)?
            .await
            .map_err(|_| io::Error::other("the log writer stopped before it wrote"))?
    }

    pub(super) async fn save_vote(&self, vote: &Vote) -> io::Result<()> {
        let bytes = encode(vote)?;
        self.wait(|done, _| Write::Vote { bytes, done }).await
    }

    pub(super) async fn truncate_from(&self, index: u64) -> io::Result<()> {
        self.wait(|done, appends_before| Write::TruncateFrom {
            index,
            appends_before,
            done,
        })
        .await
    }

    /// Queues a purge without waiting for it. openraft's core waits for this call, the same task
    /// that sends heartbeats: a purge behind an fsync that the disk stalls for hundreds of ms
    /// held up a busy leader's heartbeats until its followers elected another leader. openraft
    /// needs a purge neither durable nor done when this returns, only that nothing it covers is
    /// read any more (`Pending::queued_purge`); a crash before it is written leaves more log.
    pub(super) fn purge(&self, log_id: LogId) -> io::Result<()> {
        let mut pending = lock(&self.pending);
        if pending
            .purge
            .is_none_or(|queued| queued.index() < log_id.index())
        {
            pending.purge = Some(log_id);
        }
        self.send(Write::Purge { log_id })
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        lock(&self.queue).take();
        if let Some(thread) = lock(&self.thread).take() {
            // A panic in the thread has already failed every write it held; nothing to add.
            let _ = thread.join();
        }
    }
}

fn write_until_closed(
    store: &Store,
    delivery: &Delivery,
    pending: &Mutex<Pending>,
    writes: &Receiver<Write>,
) {
    while let Ok(first) = writes.recv() {
        let mut batch = vec![first];
        batch.extend(writes.try_iter());
        let outcome = commit_batch(store, delivery, &mut batch);
        finish(batch, outcome, pending, delivery);
    }
}

/// Everything queued since the last commit, in one transaction (one fsync for many appends and
/// applied batches); applied batches are published once it committed.
///
/// The commit is made durable (meta page flushed) only when it holds what openraft waits on:
/// appends, a vote, a truncation. Applied batches committed alone are not: the log, durable
/// before them, holds their entries, and a batch a power loss undid is applied again at the next
/// start. A purge need not be durable either (see `purge`).
fn commit_batch(store: &Store, delivery: &Delivery, batch: &mut [Write]) -> io::Result<()> {
    let wtxn = write_batch(store, delivery, batch)?;
    let gate = batch.iter().find_map(|write| match write {
        Write::Apply { gate, .. } => Some(gate.clone()),
        _ => None,
    });
    // What openraft waits on is the log's durable write: the WAL fsync histogram counts those
    // commits alone. A purge-only commit skips the meta page's flush and would under-read it.
    let waited_on = batch.iter().any(|w| {
        matches!(
            w,
            Write::Append { .. } | Write::Vote { .. } | Write::TruncateFrom { .. }
        )
    });
    // From the commit until the events are queued: a snapshot that reads the applied state
    // then finds the events of every entry it covers ahead of its own request.
    let _gate = gate.as_ref().map(|g| g.gate());
    let started = Instant::now();
    // Nothing below tells openraft a write is durable before this returns.
    if waited_on {
        super::commit_durably(&store.env, wtxn)?;
    } else {
        wtxn.commit().map_err(storage_err)?;
    }
    let took = started.elapsed();
    if waited_on {
        store.stats.log_fsync.observe(took);
    }
    if gate.is_some() {
        store.stats.apply_commit.observe(took);
    }
    for write in batch.iter_mut() {
        if let Write::Apply { publish, .. } = write {
            if let Some(publish) = publish.take() {
                publish();
            }
        }
    }
    Ok(())
}

/// Writes the batch into one transaction, left for the caller to commit.
fn write_batch<'s>(
    store: &'s Store,
    delivery: &Delivery,
    batch: &mut [Write],
) -> io::Result<RwTxn<'s>> {
    let mut wtxn = store.env.write_txn().map_err(storage_err)?;
    let mut committed = None;
    for write in batch.iter_mut() {
        match write {
            Write::Append {
                records,
                committed: c,
                ..
            } => {
                for (index, bytes) in records.iter() {
                    store
                        .log
                        .put(&mut wtxn, index, bytes)
                        .map_err(storage_err)?;
                }
                committed = c.or(committed);
            }
            Write::Vote { bytes, .. } => {
                store
                    .raft
                    .put(&mut wtxn, KEY_VOTE, bytes)
                    .map_err(storage_err)?;
            }
            Write::TruncateFrom { index, .. } => {
                store
                    .log
                    .delete_range(&mut wtxn, &(*index..))
                    .map_err(storage_err)?;
            }
            Write::Purge { log_id, .. } => {
                // Marker and deletion in one transaction: a crash leaves either both or neither.
                store
                    .raft
                    .put(&mut wtxn, KEY_PURGED, &encode(log_id)?)
                    .map_err(storage_err)?;
                if let Some(through) = delivery.deletable_through() {
                    store
                        .log
                        .delete_range(&mut wtxn, &(..=log_id.index().min(through)))
                        .map_err(storage_err)?;
                }
            }
            Write::Apply {
                work,
                publish,
                failed,
                ..
            } => {
                if let Some(work) = work.take() {
                    match apply_nested(store, &mut wtxn, work) {
                        Ok(p) => *publish = Some(p),
                        Err(e) => *failed = Some(e),
                    }
                }
            }
        }
    }
    if committed.is_some() {
        store
            .raft
            .put(&mut wtxn, KEY_COMMITTED, &encode(&committed)?)
            .map_err(storage_err)?;
    }
    Ok(wtxn)
}

/// Runs an applied batch in a transaction nested in the writer's: a batch that fails leaves
/// nothing behind, and the log writes beside it still commit.
fn apply_nested(store: &Store, wtxn: &mut RwTxn<'_>, work: ApplyWork) -> io::Result<Publish> {
    let mut nested = store.env.nested_write_txn(wtxn).map_err(storage_err)?;
    let publish = work(&mut nested)?;
    nested.commit().map_err(storage_err)?;
    Ok(publish)
}

fn finish(
    batch: Vec<Write>,
    outcome: io::Result<()>,
    pending: &Mutex<Pending>,
    delivery: &Delivery,
) {
    let failed = |e: &io::Error| io::Error::new(e.kind(), format!("log write failed: {e}"));
    for write in batch {
        let result = match &outcome {
            Ok(()) => Ok(()),
            Err(e) => Err(failed(e)),
        };
        match write {
            Write::Append {
                append,
                records,
                flushed,
                ..
            } => {
                if result.is_ok() {
                    let mut pending = lock(pending);
                    for (index, _) in &records {
                        if pending
                            .entries
                            .get(index)
                            .is_some_and(|(a, _)| *a == append)
                        {
                            pending.entries.remove(index);
                        }
                    }
                }
                flushed.io_completed(result);
            }
            Write::TruncateFrom {
                index,
                appends_before,
                done,
            } => {
                if result.is_ok() {
                    lock(pending)
                        .entries
                        .retain(|i, (append, _)| *i < index || *append >= appends_before);
                }
                let _ = done.send(result);
            }
            Write::Purge { log_id } => {
                if result.is_ok() {
                    delivery.set_purged(log_id.index());
                }
                let mut pending = lock(pending);
                if pending
                    .purge
                    .is_some_and(|queued| queued.index() <= log_id.index())
                {
                    pending.purge = None;
                }
                // A purge that failed leaves the log longer; the appends in the same transaction
                // failed too, and openraft hears of those.
            }
            Write::Vote { done, .. } => {
                let _ = done.send(result);
            }
            Write::Apply { failed, done, .. } => {
                // Unpublished (the commit failed, or the batch did), its responders go unanswered
                // and openraft hears of the failure from the state machine.
                let result = match failed {
                    Some(e) => Err(e),
                    None => result,
                };
                let _ = done.send(result);
            }
        }
    }
}
