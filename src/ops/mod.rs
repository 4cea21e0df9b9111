//! Operation semantics: the idempotence registry that makes a retried operation id take effect
//! once.
//!
//! The registry remembers where each operation id took effect, for a bounded window: at most
//! `max_ids` ids and `max_bytes` bytes (see `entry_bytes`), and no id proposed more than `ttl_ms`
//! before the entry being applied. Past the window the oldest ids are forgotten first, in log
//! order, and a retry of a forgotten id takes effect again. Every bound is decided by the log
//! alone (order of entries, their proposal times) and checked before each entry is applied, so
//! every replica, whatever its batching or clock, agrees on whether an id is a duplicate.
//!
//! Storage keeps the registry in log order only (`Store::ops_log`: log index -> id and record),
//! so remembering an id appends at the end of a B-tree and forgetting one removes from its front:
//! a batch of writes touches a few pages, where a table keyed by id put each write on a random
//! page. What is remembered is the part of `ops_log` from `WindowState::from` on; entries before
//! it are forgotten, and stay on disk only while the stored snapshot still refers to them (see
//! `Registry::finish`). Finding an id goes through `IdIndex`, kept in memory and rebuilt when the
//! store opens.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::io;
use std::sync::MutexGuard;

use heed::{RoTxn, RwTxn, WithoutTls};
use serde::{Deserialize, Serialize};

use crate::storage::{decode, encode, storage_err, Store};

/// Where an operation id took effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRecord {
    pub index: u64,
    pub term: u64,
    pub proposed_at_ms: u64,
}

/// An operation id as `ops_log` stores it, under the log index where it took effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LoggedOp {
    pub id: String,
    pub term: u64,
    pub proposed_at_ms: u64,
}

impl LoggedOp {
    fn record(&self, index: u64) -> OpRecord {
        OpRecord {
            index,
            term: self.term,
            proposed_at_ms: self.proposed_at_ms,
        }
    }
}

/// Which part of `ops_log` is remembered (`from` on) and its size, as the window counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WindowState {
    pub from: u64,
    pub count: u64,
    pub bytes: u64,
}

/// How much of the past the registry remembers. Every replica of a cluster must use the same
/// window, as they use the same TTL: the window decides which retries are duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdWindow {
    pub ttl_ms: u64,
    pub max_ids: u64,
    pub max_bytes: u64,
}

impl IdWindow {
    pub const DEFAULT_MAX_IDS: u64 = 100_000;
    pub const DEFAULT_MAX_BYTES: u64 = 16 << 20;
}

impl Default for IdWindow {
    fn default() -> Self {
        IdWindow {
            ttl_ms: 24 * 3600 * 1000,
            max_ids: Self::DEFAULT_MAX_IDS,
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }
}

/// What one remembered id counts against `max_bytes`: its size in a snapshot (length prefix,
/// id, record), so the window also bounds the snapshot.
pub fn entry_bytes(id: &str) -> u64 {
    id.len() as u64 + 32
}

/// Remembered ids by a hash of the id: where in `ops_log` to look for one. 16 bytes per id
/// instead of the id itself; a hash shared by two remembered ids sends the second to
/// `collided`, keyed by the id. Every hit is checked against the stored id.
#[derive(Debug, Default)]
pub struct IdIndex {
    hasher: RandomState,
    by_hash: HashMap<u64, u64, BuildHasherDefault<HashedAlready>>,
    collided: HashMap<String, u64>,
}

/// The hasher of `IdIndex::by_hash`, whose keys are already hashes (keyed by `RandomState`):
/// hashing them again would only cost time.
#[derive(Debug, Default)]
struct HashedAlready(u64);

impl Hasher for HashedAlready {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys come here (`write_u64`); any other input is folded in, never dropped.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl IdIndex {
    /// The log indexes where `id` may have been remembered.
    fn candidates(&self, id: &str) -> [Option<u64>; 2] {
        let hash = self.hasher.hash_one(id);
        [
            self.by_hash.get(&hash).copied(),
            self.collided.get(id).copied(),
        ]
    }

    /// `id` is remembered at `index` (and was not remembered before).
    fn insert(&mut self, id: &str, index: u64) {
        let hash = self.hasher.hash_one(id);
        if let std::collections::hash_map::Entry::Vacant(slot) = self.by_hash.entry(hash) {
            slot.insert(index);
        } else {
            self.collided.insert(id.to_string(), index);
        }
    }

    fn remove(&mut self, id: &str, index: u64) {
        let hash = self.hasher.hash_one(id);
        if self.by_hash.get(&hash) == Some(&index) {
            self.by_hash.remove(&hash);
        } else if self.collided.get(id) == Some(&index) {
            self.collided.remove(id);
        }
    }

    fn clear(&mut self) {
        self.by_hash.clear();
        self.collided.clear();
    }
}

fn index_of(store: &Store) -> MutexGuard<'_, IdIndex> {
    crate::lock(&store.ids)
}

/// Builds the in-memory index of the remembered ids, when the store opens.
pub(crate) fn load_index(store: &Store) -> io::Result<IdIndex> {
    let rtxn = store.env.read_txn().map_err(storage_err)?;
    let from = window_state(store, &rtxn)?.from;
    let mut index = IdIndex::default();
    for item in store.ops_log.range(&rtxn, &(from..)).map_err(storage_err)? {
        let (at, bytes) = item.map_err(storage_err)?;
        let op: LoggedOp = decode(bytes)?;
        index.insert(&op.id, at);
    }
    Ok(index)
}

/// Where `id` took effect, if the registry still remembers it (as `txn` sees the log order).
pub fn find(store: &Store, txn: &RoTxn<'_, WithoutTls>, id: &str) -> io::Result<Option<OpRecord>> {
    let candidates = index_of(store).candidates(id);
    for at in candidates.into_iter().flatten() {
        if let Some(bytes) = store.ops_log.get(txn, &at).map_err(storage_err)? {
            let op: LoggedOp = decode(bytes)?;
            if op.id == id {
                return Ok(Some(op.record(at)));
            }
        }
    }
    Ok(None)
}

/// `find` in a read transaction of its own, opened only when the index knows the id.
pub fn lookup(store: &Store, id: &str) -> io::Result<Option<OpRecord>> {
    if index_of(store).candidates(id).iter().all(Option::is_none) {
        return Ok(None);
    }
    let rtxn = store.env.read_txn().map_err(storage_err)?;
    find(store, &rtxn, id)
}

pub(crate) fn window_state(store: &Store, txn: &RoTxn<'_, WithoutTls>) -> io::Result<WindowState> {
    match store.applied.get(txn, KEY_WINDOW).map_err(storage_err)? {
        Some(bytes) => decode(bytes),
        None => Ok(WindowState::default()),
    }
}

/// The registry's changes in one write transaction: the window's state is read once at the
/// start and written once by `finish`.
pub struct Registry<'a> {
    store: &'a Store,
    window: IdWindow,
    state: WindowState,
    /// The oldest remembered id once read, until it is forgotten: the TTL check before every
    /// entry reads it.
    oldest: Option<(u64, LoggedOp)>,
}

impl<'a> Registry<'a> {
    pub fn open(
        store: &'a Store,
        txn: &RoTxn<'_, WithoutTls>,
        window: IdWindow,
    ) -> io::Result<Self> {
        Ok(Registry {
            store,
            window,
            state: window_state(store, txn)?,
            oldest: None,
        })
    }

    /// The first log index the registry remembers from.
    pub fn from(&self) -> u64 {
        self.state.from
    }

    /// The remembered ids' bytes, as a snapshot carries them.
    pub fn bytes(&self) -> u64 {
        self.state.bytes
    }

    /// The oldest remembered id, read once and kept until it is forgotten.
    fn oldest(&mut self, txn: &RoTxn<'_, WithoutTls>) -> io::Result<Option<&(u64, LoggedOp)>> {
        if self.oldest.is_none() {
            if let Some(item) = self
                .store
                .ops_log
                .range(txn, &(self.state.from..))
                .map_err(storage_err)?
                .next()
            {
                let (at, bytes) = item.map_err(storage_err)?;
                self.oldest = Some((at, decode(bytes)?));
            }
        }
        Ok(self.oldest.as_ref())
    }

    /// Forgets the oldest remembered id (as `oldest` read it).
    fn forget_oldest(&mut self) {
        let Some((at, op)) = self.oldest.take() else {
            return;
        };
        index_of(self.store).remove(&op.id, at);
        self.state.from = at + 1;
        self.state.count = self.state.count.saturating_sub(1);
        self.state.bytes = self.state.bytes.saturating_sub(entry_bytes(&op.id));
    }

    /// Before the entry proposed at `proposed_at_ms` is applied: forgets the ids proposed more
    /// than the TTL before it, oldest first in log order. The walk stops at the first id still
    /// within the TTL, so an id from a leader whose clock ran behind stays until those before it
    /// expire (the count and byte bounds hold regardless).
    pub fn expire(&mut self, wtxn: &RwTxn<'_>, proposed_at_ms: u64) -> io::Result<()> {
        let Some(cutoff) = proposed_at_ms.checked_sub(self.window.ttl_ms) else {
            return Ok(());
        };
        while let Some((_, op)) = self.oldest(wtxn)? {
            if op.proposed_at_ms >= cutoff {
                break;
            }
            self.forget_oldest();
        }
        Ok(())
    }

    /// Remembers that `id` took effect at `record` (the newest entry so far), then forgets the
    /// oldest ids until the window's count and byte bounds hold. The newest id always stays.
    pub fn remember(
        &mut self,
        wtxn: &mut RwTxn<'_>,
        id: &str,
        record: &OpRecord,
    ) -> io::Result<()> {
        let op = LoggedOp {
            id: id.to_string(),
            term: record.term,
            proposed_at_ms: record.proposed_at_ms,
        };
        self.store
            .ops_log
            .put(wtxn, &record.index, &encode(&op)?)
            .map_err(storage_err)?;
        index_of(self.store).insert(id, record.index);
        self.state.count += 1;
        self.state.bytes += entry_bytes(id);
        let w = self.window;
        while self.state.count > 1
            && (self.state.count > w.max_ids || self.state.bytes > w.max_bytes)
        {
            if self.oldest(wtxn)?.is_none() {
                break;
            }
            self.forget_oldest();
        }
        Ok(())
    }

    /// Replaces the registry with a snapshot's ids (oldest first), kept within this node's
    /// window.
    pub fn replace(&mut self, wtxn: &mut RwTxn<'_>, ids: &[(String, OpRecord)]) -> io::Result<()> {
        self.store.ops_log.clear(wtxn).map_err(storage_err)?;
        index_of(self.store).clear();
        self.state = WindowState::default();
        self.oldest = None;
        for (id, record) in ids {
            self.remember(wtxn, id, record)?;
        }
        Ok(())
    }

    /// Stores the window's state, and drops the forgotten entries from disk, except those from
    /// `keep_from` on: the stored snapshot's registry is read from them when it is sent.
    pub fn finish(self, wtxn: &mut RwTxn<'_>, keep_from: Option<u64>) -> io::Result<()> {
        let below = keep_from.map_or(self.state.from, |k| k.min(self.state.from));
        self.store
            .ops_log
            .delete_range(wtxn, &(..below))
            .map_err(storage_err)?;
        self.store
            .applied
            .put(wtxn, KEY_WINDOW, &encode(&self.state)?)
            .map_err(storage_err)
    }
}

/// The ids `ops_log` holds from `from` through `through`, in log order: the registry as it stood
/// when `through` was applied, if `from` was its window's start then.
pub fn export(
    store: &Store,
    txn: &RoTxn<'_, WithoutTls>,
    from: u64,
    through: u64,
) -> io::Result<Vec<(String, OpRecord)>> {
    let mut out = Vec::new();
    if from > through {
        return Ok(out);
    }
    for item in store
        .ops_log
        .range(txn, &(from..=through))
        .map_err(storage_err)?
    {
        let (at, bytes) = item.map_err(storage_err)?;
        let op: LoggedOp = decode(bytes)?;
        let record = op.record(at);
        out.push((op.id, record));
    }
    Ok(out)
}

/// The ids the registry remembers now, in log order.
pub fn remembered(
    store: &Store,
    txn: &RoTxn<'_, WithoutTls>,
) -> io::Result<Vec<(String, OpRecord)>> {
    export(store, txn, window_state(store, txn)?.from, u64::MAX)
}

/// Directories of storage formats 1 and 2 keep the registry keyed by id (`Store::legacy_ops`,
/// with `legacy_ops_by_index` in log order or, in the oldest, no order at all): moves it into
/// `ops_log`, within the format migration's write transaction. Returns how many ids moved.
pub(crate) fn move_into_log_order(store: &Store, wtxn: &mut RwTxn<'_>) -> io::Result<u64> {
    let mut ids = Vec::new();
    for item in store.legacy_ops.iter(wtxn).map_err(storage_err)? {
        let (id, bytes) = item.map_err(storage_err)?;
        ids.push((id.to_string(), decode::<OpRecord>(bytes)?));
    }
    ids.sort_by_key(|(_, record)| record.index);
    // Every id the earlier release kept stays: it was within that release's window.
    let everything = IdWindow {
        ttl_ms: u64::MAX,
        max_ids: u64::MAX,
        max_bytes: u64::MAX,
    };
    let mut registry = Registry::open(store, wtxn, everything)?;
    registry.replace(wtxn, &ids)?;
    let moved = registry.state.count;
    registry.finish(wtxn, None)?;
    store
        .applied
        .delete(wtxn, LEGACY_KEY_WINDOW_BYTES)
        .map_err(storage_err)?;
    store.legacy_ops.clear(wtxn).map_err(storage_err)?;
    store.legacy_ops_by_index.clear(wtxn).map_err(storage_err)?;
    Ok(moved)
}

/// In `applied`: the window's `WindowState`.
const KEY_WINDOW: &str = "op_window";
/// In `applied`, before `ops_log`: the window's byte count alone.
const LEGACY_KEY_WINDOW_BYTES: &str = "op_window_bytes";

#[cfg(test)]
mod tests;
