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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::EntryPayload;
use tokio::sync::Notify;

use super::state_machine::SnapshotPayload;
use super::{
    blocking, decode, storage_err, Store, KEY_DELIVERED, KEY_SNAPSHOT_DATA, KEY_SNAPSHOT_META,
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
    /// Highest index the state machine has applied and committed to disk (its events are queued
    /// for JavaScript at that point).
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
    /// Wakes the cursor writer.
    pub moved: Notify,
    /// When false, purges delete entries at once (no application behind this store, as in the
    /// storage test suite).
    retain: bool,
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

    pub fn applied(&self) -> Option<u64> {
        load(&self.applied)
    }

    pub(crate) fn set_applied(&self, index: u64) {
        raise(&self.applied, index);
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
            wtxn.commit().map_err(storage_err)
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

/// What the start-up hand-over delivered.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Everything up to this index is taken as delivered before this run: the first event of
    /// this run comes after it.
    pub resumed_after: Option<u64>,
    pub snapshot: Option<u64>,
    pub entries: u64,
    /// Entries the application should have received again but that neither the log nor a
    /// snapshot holds any more (`first..=last`); delivery resumed after them.
    pub missing: Option<(u64, u64)>,
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
            Some(bytes) => {
                let raw: [u8; 8] = bytes
                    .try_into()
                    .map_err(|_| storage_err("delivery cursor is not 8 bytes"))?;
                Ok(Some(u64::from_be_bytes(raw)))
            }
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

    /// Queues, before Raft starts, the events the application may not hold: from the resume
    /// point through what the state machine had applied, each marked `redelivered`. When the
    /// log no longer holds the resume point, the latest snapshot is handed over first.
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
        let Some(last_applied) = self.last_applied_index()? else {
            return Ok(replayed);
        };
        delivery.set_applied(last_applied);
        let cursor = self.delivery_cursor(Some(last_applied))?;
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
        if next > last_applied {
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
        for item in self
            .log
            .range(&rtxn, &(next..=last_applied))
            .map_err(storage_err)?
        {
            let (index, bytes) = item.map_err(storage_err)?;
            let entry: Entry = decode(bytes)?;
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
                redelivered: true,
            });
            replayed.entries += 1;
        }
        Ok(replayed)
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
