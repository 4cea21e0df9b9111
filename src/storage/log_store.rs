//! The Raft log, vote and purge marker in LMDB.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};

use super::log_writer::{ApplyQueue, LogWriter};
use super::records::Record;
use super::{decode, storage_err, Delivery, Store, KEY_COMMITTED, KEY_PURGED, KEY_VOTE};
use crate::lock;
use crate::types::{Entry, LogId, TypeConfig, Vote};

#[derive(Clone)]
pub struct LogStore {
    store: Arc<Store>,
    /// The newest commit point openraft reported, written to disk with the next log append.
    committed: Arc<Mutex<Option<LogId>>>,
    /// How far the application has been handed the log: purged entries it may still need stay
    /// on disk (invisible to openraft) until it has them.
    delivery: Arc<Delivery>,
    writer: Arc<LogWriter>,
}

impl LogStore {
    pub fn new(store: Arc<Store>, delivery: Arc<Delivery>) -> io::Result<Self> {
        let writer = Arc::new(LogWriter::start(store.clone(), delivery.clone())?);
        Ok(LogStore {
            store,
            committed: Arc::new(Mutex::new(None)),
            delivery,
            writer,
        })
    }

    /// How the state machine commits applied batches: in this log's writer (see `log_writer`).
    pub fn apply_queue(&self) -> ApplyQueue {
        self.writer.apply_queue()
    }

    fn get_raft_meta<T: Record>(&self, key: &str) -> io::Result<Option<T>> {
        let s = &self.store;
        let rtxn = s.env.read_txn().map_err(storage_err)?;
        match s.raft.get(&rtxn, key).map_err(storage_err)? {
            Some(bytes) => Ok(Some(decode(bytes)?)),
            None => Ok(None),
        }
    }
}

fn index_bounds<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let s = &self.store;
        let (mut start, end) = index_bounds(&range);
        // Entries kept for delivery after a purge, or purged and not yet deleted, are not
        // openraft's any more.
        let queued_purge = lock(&self.writer.pending).queued_purge().map(|l| l.index());
        if let Some(purged) = self.delivery.purged().max(queued_purge) {
            let first = purged + 1;
            let before_first = match start {
                Bound::Included(i) => i < first,
                Bound::Excluded(i) => i < purged,
                Bound::Unbounded => true,
            };
            if before_first {
                start = Bound::Included(first);
            }
        }
        let bounds = (start, end);
        // Queued entries first: one the writer commits meanwhile is then in the read below.
        let queued = lock(&self.writer.pending).within(&bounds);
        let rtxn = s.env.read_txn().map_err(storage_err)?;
        let mut entries = BTreeMap::new();
        for item in s.log.range(&rtxn, &bounds).map_err(storage_err)? {
            let (index, bytes) = item.map_err(storage_err)?;
            entries.insert(index, decode::<Entry>(bytes)?);
        }
        for entry in queued {
            entries.insert(entry.log_id.index(), entry);
        }
        Ok(entries.into_values().collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_raft_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let stored_purge: Option<LogId> = self.get_raft_meta(KEY_PURGED)?;
        if let Some(purged) = &stored_purge {
            self.delivery.set_purged(purged.index());
        }
        let (queued_purge, queued_last) = {
            let pending = lock(&self.writer.pending);
            (pending.queued_purge(), pending.last_log_id())
        };
        let last_purged_log_id = match (stored_purge, queued_purge) {
            (Some(stored), Some(queued)) if queued.index() > stored.index() => Some(queued),
            (stored, queued) => stored.or(queued),
        };
        let last = {
            let s = &self.store;
            let rtxn = s.env.read_txn().map_err(storage_err)?;
            match s.log.last(&rtxn).map_err(storage_err)? {
                Some((_, bytes)) => Some(decode::<Entry>(bytes)?.log_id),
                None => None,
            }
        };
        let last = queued_last.or(last);
        // Entries kept for delivery sit at or below the purge point: the purge point is last then.
        let last = match (last, last_purged_log_id) {
            (Some(l), Some(p)) if l.index() <= p.index() => Some(p),
            (l, p) => l.or(p),
        };
        Ok(LogState {
            last_log_id: last,
            last_purged_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.writer.save_vote(vote).await
    }

    /// Lets a restarted node re-apply committed entries at once, without waiting to hear a
    /// commit index from a leader. openraft calls this on its core task at every commit, so it
    /// costs no fsync of its own: the value rides along with the next log append. On disk it may
    /// trail the true commit point, which is safe (the state machine persists what it applied;
    /// the rest is applied once a leader's commit index arrives); it is never ahead of it.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        *lock(&self.committed) = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        if let Some(known) = *lock(&self.committed) {
            return Ok(Some(known));
        }
        Ok(self
            .get_raft_meta::<Option<LogId>>(KEY_COMMITTED)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let committed = *lock(&self.committed);
        self.writer.append(entries, committed, callback)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|id| id.index() + 1).unwrap_or(0);
        self.writer.truncate_from(from).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.writer.purge(log_id)
    }
}
