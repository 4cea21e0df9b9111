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
//! Storage keeps the bytes (`Store::ops`: id -> record, `Store::ops_by_index`: log index -> id,
//! and the window's byte count); this module decides what they mean.

use std::io;

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

/// Where `id` took effect, if the registry still remembers it.
pub fn find(store: &Store, txn: &RoTxn<'_, WithoutTls>, id: &str) -> io::Result<Option<OpRecord>> {
    match store.ops.get(txn, id).map_err(storage_err)? {
        Some(bytes) => Ok(Some(decode(bytes)?)),
        None => Ok(None),
    }
}

/// `find` in a read transaction of its own.
pub fn lookup(store: &Store, id: &str) -> io::Result<Option<OpRecord>> {
    let rtxn = store.env.read_txn().map_err(storage_err)?;
    find(store, &rtxn, id)
}

fn window_bytes(store: &Store, txn: &RoTxn<'_, WithoutTls>) -> io::Result<u64> {
    match store
        .applied
        .get(txn, KEY_WINDOW_BYTES)
        .map_err(storage_err)?
    {
        Some(bytes) => <[u8; 8]>::try_from(bytes)
            .map(u64::from_be_bytes)
            .map_err(|_| storage_err("the operation-id window's byte count is not 8 bytes")),
        None => Ok(0),
    }
}

fn set_window_bytes(store: &Store, wtxn: &mut RwTxn<'_>, bytes: u64) -> io::Result<()> {
    store
        .applied
        .put(wtxn, KEY_WINDOW_BYTES, &bytes.to_be_bytes())
        .map_err(storage_err)
}

/// The oldest remembered id (by log order) and its record.
fn oldest(store: &Store, txn: &RoTxn<'_, WithoutTls>) -> io::Result<Option<(String, OpRecord)>> {
    let Some((_, id)) = store.ops_by_index.first(txn).map_err(storage_err)? else {
        return Ok(None);
    };
    let id = id.to_string();
    match find(store, txn, &id)? {
        Some(record) => Ok(Some((id, record))),
        None => Err(storage_err(format!(
            "operation id {id} is in the registry's order but not in the registry"
        ))),
    }
}

fn forget(store: &Store, wtxn: &mut RwTxn<'_>, id: &str, record: &OpRecord) -> io::Result<u64> {
    store.ops.delete(wtxn, id).map_err(storage_err)?;
    store
        .ops_by_index
        .delete(wtxn, &record.index)
        .map_err(storage_err)?;
    Ok(entry_bytes(id))
}

/// Before the entry proposed at `proposed_at_ms` is applied: forgets the ids proposed more than
/// the TTL before it, oldest first in log order. The walk stops at the first id still within the
/// TTL, so an id from a leader whose clock ran behind stays until those before it expire (the
/// count and byte bounds hold regardless).
pub fn expire(
    store: &Store,
    wtxn: &mut RwTxn<'_>,
    window: &IdWindow,
    proposed_at_ms: u64,
) -> io::Result<()> {
    let Some(cutoff) = proposed_at_ms.checked_sub(window.ttl_ms) else {
        return Ok(());
    };
    let mut freed = 0;
    while let Some((id, record)) = oldest(store, wtxn)? {
        if record.proposed_at_ms >= cutoff {
            break;
        }
        freed += forget(store, wtxn, &id, &record)?;
    }
    if freed > 0 {
        let bytes = window_bytes(store, wtxn)?.saturating_sub(freed);
        set_window_bytes(store, wtxn, bytes)?;
    }
    Ok(())
}

/// Remembers that `id` took effect at `record`, then forgets the oldest ids until the window's
/// count and byte bounds hold. The newest id always stays.
pub fn remember(
    store: &Store,
    wtxn: &mut RwTxn<'_>,
    window: &IdWindow,
    id: &str,
    record: &OpRecord,
) -> io::Result<()> {
    store
        .ops
        .put(wtxn, id, &encode(record)?)
        .map_err(storage_err)?;
    store
        .ops_by_index
        .put(wtxn, &record.index, id)
        .map_err(storage_err)?;
    let mut bytes = window_bytes(store, wtxn)? + entry_bytes(id);
    loop {
        let count = store.ops.len(wtxn).map_err(storage_err)?;
        if count <= 1 || (count <= window.max_ids && bytes <= window.max_bytes) {
            break;
        }
        let Some((old_id, old)) = oldest(store, wtxn)? else {
            break;
        };
        bytes = bytes.saturating_sub(forget(store, wtxn, &old_id, &old)?);
    }
    set_window_bytes(store, wtxn, bytes)
}

/// Every remembered id in log order, as a snapshot carries them.
pub fn export(store: &Store, txn: &RoTxn<'_, WithoutTls>) -> io::Result<Vec<(String, OpRecord)>> {
    let mut out = Vec::new();
    for item in store.ops_by_index.iter(txn).map_err(storage_err)? {
        let (_, id) = item.map_err(storage_err)?;
        if let Some(record) = find(store, txn, id)? {
            out.push((id.to_string(), record));
        }
    }
    Ok(out)
}

/// Replaces the registry with a snapshot's ids (oldest first), kept within this node's window.
pub fn replace(
    store: &Store,
    wtxn: &mut RwTxn<'_>,
    window: &IdWindow,
    ids: &[(String, OpRecord)],
) -> io::Result<()> {
    store.ops.clear(wtxn).map_err(storage_err)?;
    store.ops_by_index.clear(wtxn).map_err(storage_err)?;
    set_window_bytes(store, wtxn, 0)?;
    for (id, record) in ids {
        remember(store, wtxn, window, id, record)?;
    }
    Ok(())
}

/// A data directory written before the registry was kept in log order has ids without that
/// order: it is rebuilt from the records, which carry their log index.
pub(crate) fn upgrade(store: &Store) -> io::Result<()> {
    let mut wtxn = store.env.write_txn().map_err(storage_err)?;
    let count = store.ops.len(&wtxn).map_err(storage_err)?;
    if count == store.ops_by_index.len(&wtxn).map_err(storage_err)? {
        return Ok(());
    }
    let mut ids = Vec::new();
    for item in store.ops.iter(&wtxn).map_err(storage_err)? {
        let (id, bytes) = item.map_err(storage_err)?;
        ids.push((id.to_string(), decode::<OpRecord>(bytes)?));
    }
    ids.sort_by_key(|(_, record)| record.index);
    store.ops_by_index.clear(&mut wtxn).map_err(storage_err)?;
    let mut bytes = 0;
    for (id, record) in &ids {
        store
            .ops_by_index
            .put(&mut wtxn, &record.index, id)
            .map_err(storage_err)?;
        bytes += entry_bytes(id);
    }
    set_window_bytes(store, &mut wtxn, bytes)?;
    wtxn.commit().map_err(storage_err)
}

const KEY_WINDOW_BYTES: &str = "op_window_bytes";

#[cfg(test)]
mod tests;
