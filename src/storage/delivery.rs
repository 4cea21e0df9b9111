//! Delivery of committed entries to the application, as DESIGN's Delivery rules say: in log
//! order, with no gap, and counted as delivered only once JavaScript reports that the listeners
//! ran. The node keeps a durable cursor of what was proven delivered; after a crash it hands the
//! application again what lies between that cursor (or the application's own `appliedIndex`)
//! and what the state machine had applied, marked `redelivered`.
//!
//! The log must still hold those entries, so a purge that openraft asks for only moves the purge
//! marker past entries the application has not yet been proven to hold: the entries themselves
//! stay until the cursor passes them, or until a snapshot that carries the application's state
//! (or one installed from the leader) covers them.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use openraft::EntryPayload;
use tokio::sync::Notify;

use super::state_machine::SnapshotPayload;
use super::{
    blocking, decode, decode_index, storage_err, Store, KEY_DELIVERED, KEY_SNAPSHOT_DATA,
    KEY_SNAPSHOT_META,
};
use crate::events::{Event, EventSink};
use crate::types::{Entry, LogId};

/// `u64` atomics hold `index + 1`, so that 0 can mean "none".
fn load(a: &AtomicU64) -> Option<u64> {
    a.load(Ordering::Acquire).checked_sub(1)
}

fn raise(a: &AtomicU64, index: u64) {
    a.fetch_max(index.saturating_add(1), Ordering::AcqRel);
}

/// Delivery progress shared by the state machine, the log store and the engine.
#[derive(Default)]
pub struct Delivery {
    /// Highest index the state machine has applied and committed (its events are queued for
    /// JavaScript at that point).
    applied: AtomicU64,
    /// Highest index JavaScript reported delivered (listeners ran), not yet necessarily on disk.
    acked: AtomicU64,
    /// The delivery cursor as last written to disk.
    persisted: AtomicU64,
    /// Highest index covered by a durable snapshot that the application can be restored from
    /// (one carrying its state, or one installed from the leader).
    covered: AtomicU64,
    /// Highest index openraft asked to purge; entries up to it are gone for openraft.
    purged: AtomicU64,
    /// Where delivery resumed at the start: the application holds every entry up to it. The
    /// state machine may apply some of those again, when a power loss undid the commit that
    /// applied them (see the storage module's notes); they do not go out a second time.
    held_at_start: AtomicU64,
    /// Entries up to here may have reached the application before this run: they go out marked
    /// `redelivered`, also when the state machine applies them again after the start.
    redeliver_through: AtomicU64,
    /// Wakes the cursor writer.
    pub moved: Notify,
    /// When false, purges delete entries at once (no application behind this store, as in the
    /// storage test suite).
    retain: bool,
    /// While the node starts, openraft applies what was committed but not applied before; those
    /// entries are handed over by the catch-up after the start, not as they are applied.
    starting: AtomicBool,
    /// Set from the start until the catch-up handed over everything applied before it: the state
    /// machine applies and snapshots nothing meanwhile, so its events stay in log order.
    catching_up: AtomicBool,
    caught_up: Notify,
}

impl Delivery {
    /// Delivery for a node whose application receives events: undelivered entries are retained.
    pub fn retaining() -> Arc<Delivery> {
        Arc::new(Delivery {
            retain: true,
            ..Delivery::default()
        })
    }

    /// No application: purges delete at once.
    pub fn none() -> Arc<Delivery> {
        Arc::new(Delivery::default())
    }

    /// The node starts: nothing applied is handed over until `catch_up` has run.
    pub fn begin_start(&self) {
        self.starting.store(true, Ordering::Release);
        self.catching_up.store(true, Ordering::Release);
    }

    /// Raft runs: what is applied from now on waits for the catch-up, then goes out as applied.
    pub fn started(&self) {
        self.starting.store(false, Ordering::Release);
    }

    pub(crate) fn starting(&self) -> bool {
        self.starting.load(Ordering::Acquire)
    }

    /// Resolves once the catch-up handed over everything applied before the node started.
    pub(crate) async fn caught_up(&self) {
        loop {
            let done = self.caught_up.notified();
            if !self.catching_up.load(Ordering::Acquire) {
                return;
            }
            done.await;
        }
    }

    fn finish_catch_up(&self) {
        self.catching_up.store(false, Ordering::Release);
        self.caught_up.notify_waiters();
    }

    pub fn applied(&self) -> Option<u64> {
        load(&self.applied)
    }

    pub(crate) fn set_applied(&self, index: u64) {
        raise(&self.applied, index);
    }

    /// What goes out of an event the state machine produced: nothing for an entry the
    /// application reported holding when the node started, and the mark for one it may have
    /// received before.
    pub(crate) fn outgoing(&self, mut event: Event) -> Option<Event> {
        if let Event::CommandApplied {
            index, redelivered, ..
        } = &mut event
        {
            if load(&self.held_at_start).is_some_and(|held| *index <= held) {
                return None;
            }
            *redelivered |= self.redelivered(*index);
        }
        Some(event)
    }

    /// The application restores a snapshot through `index`: what it held past that is replaced,
    /// so the entries after it go out again.
    pub(crate) fn restored_to(&self, index: u64) {
        self.held_at_start
            .fetch_min(index.saturating_add(1), Ordering::AcqRel);
    }

    fn redelivered(&self, index: u64) -> bool {
        load(&self.redeliver_through).is_some_and(|through| index <= through)
    }

    /// JavaScript ran the listeners of every entry up to `index`.
    pub fn ack(&self, index: u64) {
        let before = self.acked.load(Ordering::Acquire);
        raise(&self.acked, index);
        if self.acked.load(Ordering::Acquire) != before {
            self.moved.notify_one();
        }
    }

    pub(crate) fn set_covered(&self, index: u64) {
        raise(&self.covered, index);
    }

    pub(crate) fn purged(&self) -> Option<u64> {
        load(&self.purged)
    }

    pub(crate) fn set_purged(&self, index: u64) {
        raise(&self.purged, index);
    }

    /// Entries up to this index may leave the log once they are purged.
    pub(crate) fn deletable_through(&self) -> Option<u64> {
        if !self.retain {
            return Some(u64::MAX);
        }
        load(&self.persisted).max(load(&self.covered))
    }

    /// Writes the acknowledged cursor and drops retained entries the cursor has passed. Returns
    /// false when there was nothing new to write.
    pub(crate) fn persist(&self, store: &Store) -> io::Result<bool> {
        let Some(acked) = load(&self.acked) else {
            return Ok(false);
        };
        if load(&self.persisted) >= Some(acked) {
            return Ok(false);
        }
        blocking(|| {
            let mut wtxn = store.env.write_txn().map_err(storage_err)?;
            store
                .applied
                .put(&mut wtxn, KEY_DELIVERED, &acked.to_be_bytes())
                .map_err(storage_err)?;
            let through = Some(acked).max(load(&self.covered));
            if let (Some(through), Some(purged)) = (through, load(&self.purged)) {
                store
                    .log
                    .delete_range(&mut wtxn, &(..=through.min(purged)))
                    .map_err(storage_err)?;
            }
            super::commit_durably(&store.env, wtxn)
        })?;
        raise(&self.persisted, acked);
        Ok(true)
    }
}

/// Where delivery resumes when a node starts.
#[derive(Debug, Clone, Copy)]
pub enum ResumeFrom {
    /// The node's own durable cursor.
    Cursor,
    /// The application holds every entry up to this index durably.
    AppliedIndex(u64),
}

/// Where the start-up hand-over resumes delivery.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Everything up to this index is taken as delivered before this run: the first event of
    /// this run comes after it.
    pub resumed_after: Option<u64>,
    pub snapshot: Option<u64>,
    /// Entries the application should have received again but that neither the log nor a
    /// snapshot holds any more (`first..=last`); delivery resumed after them.
    pub missing: Option<(u64, u64)>,
    /// The first entry `catch_up` hands over.
    pub catch_up_from: u64,
    /// The last entry that may have reached the application before this run: the last applied,
    /// or after a machine restart the log's end (see the storage module's notes). Entries up to
    /// it are marked `redelivered`.
    pub redeliver_through: Option<u64>,
}

/// At most this many entries, and about this many bytes of commands, go out per piece of the
/// catch-up, each after JavaScript made room (`EventSink::room`).
const CATCH_UP_PIECE_ENTRIES: usize = 1024;
const CATCH_UP_PIECE_BYTES: usize = 1 << 20;

/// Hands over, after the start, every entry from `replayed.catch_up_from` through what the state
/// machine has applied: what a previous run may not have delivered (marked `redelivered`) and
/// what openraft applied during the start. It goes in pieces, each once JavaScript has room, so
/// a node that restarts far behind its daemon holds the entries in its log, not in memory. The
/// state machine applies nothing more until it is done; a stop ends it early (what it did not
/// hand over is not counted delivered, and the next start hands it over).
pub async fn catch_up(
    store: Arc<Store>,
    delivery: Arc<Delivery>,
    events: EventSink,
    replayed: Replayed,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut next = replayed.catch_up_from;
    if let Some(last) = delivery.applied() {
        while next <= last && !*stop.borrow() {
            // A stop must not wait for room: this task holds the store, which the stop releases.
            tokio::select! {
                _ = events.room() => {}
                _ = stop.changed() => break,
            }
            let piece = blocking(|| store.hand_over(next, last, &delivery, &events));
            match piece {
                Ok(after) => next = after,
                Err(e) => {
                    events.emit(Event::Warning {
                        code: "ERR_STORAGE",
                        message: format!(
                            "entries {next} to {last} could not be handed over again: {e}"
                        ),
                    });
                    break;
                }
            }
        }
    }
    delivery.finish_catch_up();
}

impl Store {
    /// The durable delivery cursor: empty while nothing was delivered (written when the directory
    /// is created). A directory written before the cursor existed counts as delivered through
    /// what it applied, as delivery worked then.
    fn delivery_cursor(&self, last_applied: Option<u64>) -> io::Result<Option<u64>> {
        let rtxn = self.env.read_txn().map_err(storage_err)?;
        match self
            .applied
            .get(&rtxn, KEY_DELIVERED)
            .map_err(storage_err)?
        {
            Some([]) => Ok(None),
            Some(bytes) => decode_index(bytes, "delivery cursor").map(Some),
            None => Ok(last_applied),
        }
    }

    fn purged_index(&self) -> io::Result<Option<u64>> {
        let rtxn = self.env.read_txn().map_err(storage_err)?;
        Ok(self.stored_purged(&rtxn)?.map(|l| l.index()))
    }

    fn last_applied_index(&self) -> io::Result<Option<u64>> {
        let rtxn = self.env.read_txn().map_err(storage_err)?;
        Ok(self.stored_last_applied(&rtxn)?.map(|l| l.index()))
    }

    /// Works out, before Raft starts, where delivery resumes: from the resume point through
    /// what the state machine had applied, the application may not hold the entries. When the
    /// log no longer holds the resume point, the latest snapshot is handed over at once; the
    /// entries follow after the start (`catch_up`).
    pub fn replay_undelivered(
        &self,
        from: ResumeFrom,
        delivery: &Delivery,
        events: &EventSink,
    ) -> io::Result<Replayed> {
        let mut replayed = Replayed::default();
        if let Some(purged) = self.purged_index()? {
            delivery.set_purged(purged);
        }
        let last_applied = self.last_applied_index()?;
        let rebooted_through = {
            let rtxn = self.env.read_txn().map_err(storage_err)?;
            self.stored_redeliver_through(&rtxn)?
        };
        replayed.redeliver_through = last_applied.max(rebooted_through);
        if let Some(through) = replayed.redeliver_through {
            raise(&delivery.redeliver_through, through);
        }
        if let Some(last) = last_applied {
            delivery.set_applied(last);
        }
        let cursor = self.delivery_cursor(last_applied)?;
        if let Some(c) = cursor {
            // What is on disk is proven: it is both the persisted and the acknowledged cursor.
            raise(&delivery.persisted, c);
            raise(&delivery.acked, c);
        }
        let mut next = match from {
            ResumeFrom::Cursor => cursor.map(|c| c + 1).unwrap_or(0),
            ResumeFrom::AppliedIndex(i) => i.saturating_add(1),
        };
        replayed.resumed_after = next.checked_sub(1);
        if let Some(held) = replayed.resumed_after {
            raise(&delivery.held_at_start, held);
        }
        replayed.catch_up_from = next;
        if last_applied.is_none_or(|last| next > last) {
            return Ok(replayed);
        }

        let rtxn = self.env.read_txn().map_err(storage_err)?;
        let first_held = self.log.first(&rtxn).map_err(storage_err)?.map(|(i, _)| i);
        if first_held.is_none_or(|first| next < first) {
            if let Some((meta, payload)) = self.read_snapshot(&rtxn)? {
                if let Some(last) = meta.filter(|s| s.index() + 1 >= next) {
                    events.emit(Event::SnapshotInstalled {
                        index: last.index(),
                        term: last.committed_leader_id().term,
                        app: payload.app,
                        redelivered: true,
                    });
                    replayed.snapshot = Some(last.index());
                    next = last.index() + 1;
                }
            }
        }
        if let Some(first) = first_held.filter(|first| next < *first) {
            replayed.missing = Some((next, first - 1));
            next = first;
        }
        replayed.catch_up_from = next;
        Ok(replayed)
    }

    /// Emits the entries from `from` on, at most one piece of them, up to `through`; returns
    /// the index to go on from.
    fn hand_over(
        &self,
        from: u64,
        through: u64,
        delivery: &Delivery,
        events: &EventSink,
    ) -> io::Result<u64> {
        let rtxn = self.env.read_txn().map_err(storage_err)?;
        let (mut count, mut bytes) = (0, 0);
        for item in self
            .log
            .range(&rtxn, &(from..=through))
            .map_err(storage_err)?
        {
            let (index, raw) = item.map_err(storage_err)?;
            if count >= CATCH_UP_PIECE_ENTRIES || bytes >= CATCH_UP_PIECE_BYTES {
                return Ok(index);
            }
            count += 1;
            bytes += raw.len();
            let entry: Entry = decode(raw)?;
            let EntryPayload::Normal(cmd) = entry.payload else {
                continue;
            };
            // A retry of an operation that had already taken effect was never delivered.
            if let Some(id) = &cmd.op_id {
                if let Some(first) = crate::ops::find(self, &rtxn, id)? {
                    if first.index != index {
                        continue;
                    }
                }
            }
            events.emit(Event::CommandApplied {
                index,
                term: entry.log_id.committed_leader_id().term,
                command: cmd.json,
                op_id: cmd.op_id,
                redelivered: delivery.redelivered(index),
            });
        }
        Ok(through + 1)
    }

    fn read_snapshot(
        &self,
        rtxn: &heed::RoTxn<heed::WithoutTls>,
    ) -> io::Result<Option<(Option<LogId>, SnapshotPayload)>> {
        if self
            .snapshot
            .get(rtxn, KEY_SNAPSHOT_META)
            .map_err(storage_err)?
            .is_none()
        {
            return Ok(None);
        }
        let Some(data) = self
            .snapshot
            .get(rtxn, KEY_SNAPSHOT_DATA)
            .map_err(storage_err)?
        else {
            return Ok(None);
        };
        let payload: SnapshotPayload = super::legacy::decode_snapshot_payload(data)?;
        Ok(Some((payload.last_applied, payload)))
    }
}
