//! Which storage format a data directory is in, and the migration from the previous one.
//!
//! A new directory records `FORMAT_VERSION` when it is created. Format 1 (the first releases)
//! recorded nothing: a directory with data and no version is in format 1 and is migrated in
//! place, in one LMDB write transaction, so a crash leaves it wholly in one format or the other.
//! A directory in a format newer than this build knows is refused, never guessed at.
//! Format 2 kept the operation-id registry keyed by id; its migration moves the registry into
//! log order (`crate::ops::move_into_log_order`), in the same single transaction.

use std::io;

use heed::types::Bytes;
use heed::{Database, RwTxn};

use super::legacy::{self, ChangeV1, SnapshotMetaV1};
use super::records::Record;
use super::{
    history::StoredChange, storage_err, OpRecord, Store, KEY_COMMITTED, KEY_LAST_APPLIED,
    KEY_MEMBERSHIP, KEY_PURGED, KEY_SNAPSHOT_META, KEY_VOTE,
};
use crate::types::{Entry, LogId, SnapshotMeta, StoredMembership, Vote};

/// The format this build writes: 3, the operation-id registry in log order (`ops_log`).
/// Format 2 kept it keyed by id; its records were already this crate's own structs in postcard.
pub const FORMAT_VERSION: u32 = 3;

/// The registry keyed by id, which `crate::ops::move_into_log_order` puts in log order.
const FORMAT_V2: u32 = 2;

/// The first releases' format: bincode 1 of openraft's serde forms, no version key.
const FORMAT_V1: u32 = 1;

/// In the `raft` database: the format version, as 4 big-endian bytes.
const KEY_FORMAT_VERSION: &str = "format_version";

impl Store {
    /// Brings the directory to `FORMAT_VERSION`, or refuses it.
    pub(super) fn check_format(&self) -> io::Result<()> {
        let mut wtxn = self.env.write_txn().map_err(storage_err)?;
        let found = match self
            .raft
            .get(&wtxn, KEY_FORMAT_VERSION)
            .map_err(storage_err)?
        {
            Some(bytes) => Some(
                <[u8; 4]>::try_from(bytes)
                    .map(u32::from_be_bytes)
                    .map_err(|_| storage_err("malformed format_version"))?,
            ),
            None if self.is_empty(&wtxn)? => None,
            None => Some(FORMAT_V1),
        };
        match found {
            Some(FORMAT_VERSION) => return Ok(()),
            Some(newer) if newer > FORMAT_VERSION => {
                return Err(storage_err(format!(
                    "data directory {} is in storage format {newer}, written by a newer release; \
                     this release reads formats 1 to {FORMAT_VERSION}. Run the release that wrote \
                     it (or a newer one), or restore a backup taken before the upgrade",
                    self.path.display()
                )))
            }
            Some(FORMAT_V1) => {
                let migrated = self.migrate_v1(&mut wtxn)?;
                crate::ops::move_into_log_order(self, &mut wtxn)?;
                tracing::info!(
                    target: "unrdf_consensus::storage",
                    dir = %self.path.display(),
                    records = migrated,
                    "migrated the data directory from storage format {FORMAT_V1} to {FORMAT_VERSION}"
                );
            }
            Some(FORMAT_V2) => {
                let moved = crate::ops::move_into_log_order(self, &mut wtxn)?;
                tracing::info!(
                    target: "unrdf_consensus::storage",
                    dir = %self.path.display(),
                    operation_ids = moved,
                    "migrated the data directory from storage format {FORMAT_V2} to {FORMAT_VERSION}"
                );
            }
            Some(other) => {
                return Err(storage_err(format!(
                    "data directory {} records storage format {other}, which no release wrote",
                    self.path.display()
                )))
            }
            None => {}
        }
        self.raft
            .put(&mut wtxn, KEY_FORMAT_VERSION, &FORMAT_VERSION.to_be_bytes())
            .map_err(storage_err)?;
        super::commit_durably(&self.env, wtxn)
    }

    /// True when no database holds anything: a directory created just now.
    fn is_empty(&self, txn: &heed::RoTxn<heed::WithoutTls>) -> io::Result<bool> {
        let counts = [
            self.log.len(txn),
            self.raft.len(txn),
            self.applied.len(txn),
            self.ops_log.len(txn),
            self.legacy_ops.len(txn),
            self.registry.len(txn),
            self.snapshot.len(txn),
            self.changes.len(txn),
        ];
        for n in counts {
            if n.map_err(storage_err)? > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Re-encodes every record format 1 stored; returns how many.
    fn migrate_v1(&self, wtxn: &mut RwTxn) -> io::Result<u64> {
        let mut count = 0u64;

        let mut entries = Vec::new();
        for item in self.log.iter(wtxn).map_err(storage_err)? {
            let (index, bytes) = item.map_err(storage_err)?;
            let entry = legacy::read_v1::<Entry>(bytes).map_err(|e| unreadable("log entry", e))?;
            entries.push((index, entry.to_bytes()?));
        }
        for (index, bytes) in entries {
            self.log.put(wtxn, &index, &bytes).map_err(storage_err)?;
            count += 1;
        }

        count += rewrite::<Vote, Vote>(wtxn, &self.raft, KEY_VOTE, |v| v)?;
        count += rewrite::<LogId, LogId>(wtxn, &self.raft, KEY_PURGED, |v| v)?;
        count += rewrite::<Option<LogId>, Option<LogId>>(wtxn, &self.raft, KEY_COMMITTED, |v| v)?;
        count +=
            rewrite::<Option<LogId>, Option<LogId>>(wtxn, &self.applied, KEY_LAST_APPLIED, |v| v)?;
        count += rewrite::<StoredMembership, StoredMembership>(
            wtxn,
            &self.applied,
            KEY_MEMBERSHIP,
            |v| v,
        )?;
        count += rewrite::<SnapshotMetaV1, SnapshotMeta>(
            wtxn,
            &self.snapshot,
            KEY_SNAPSHOT_META,
            |v| SnapshotMeta {
                last_log_id: v.last_log_id,
                last_membership: v.last_membership,
            },
        )?;

        let mut ops = Vec::new();
        for item in self.legacy_ops.iter(wtxn).map_err(storage_err)? {
            let (id, bytes) = item.map_err(storage_err)?;
            ops.push((
                id.to_string(),
                legacy::read_v1::<OpRecord>(bytes)
                    .map_err(|e| unreadable("operation record", e))?
                    .to_bytes()?,
            ));
        }
        for (id, bytes) in ops {
            self.legacy_ops
                .put(wtxn, &id, &bytes)
                .map_err(storage_err)?;
            count += 1;
        }

        let mut changes = Vec::new();
        for item in self.changes.iter(wtxn).map_err(storage_err)? {
            let (key, bytes) = item.map_err(storage_err)?;
            let old: ChangeV1 =
                legacy::read_v1(bytes).map_err(|e| unreadable("registry change", e))?;
            let new = StoredChange {
                key: old.key,
                value: old.value,
            };
            changes.push((key.to_vec(), new.to_bytes()?));
        }
        for (key, bytes) in changes {
            self.changes.put(wtxn, &key, &bytes).map_err(storage_err)?;
            count += 1;
        }
        Ok(count)
    }
}

/// A format 1 record that does not decode: the directory is damaged, or not in format 1.
fn unreadable(what: &str, e: io::Error) -> io::Error {
    storage_err(format!(
        "cannot migrate from storage format {FORMAT_V1}: a stored {what} does not decode ({e})"
    ))
}

/// Re-encodes the record under `key` (if there is one) from format 1's `Old` to `New`.
fn rewrite<Old: serde::de::DeserializeOwned, New: Record>(
    wtxn: &mut RwTxn,
    db: &Database<heed::types::Str, Bytes>,
    key: &str,
    convert: impl FnOnce(Old) -> New,
) -> io::Result<u64> {
    let Some(bytes) = db.get(wtxn, key).map_err(storage_err)? else {
        return Ok(0);
    };
    let old = legacy::read_v1::<Old>(bytes).map_err(|e| unreadable(key, e))?;
    let new = convert(old).to_bytes()?;
    db.put(wtxn, key, &new).map_err(storage_err)?;
    Ok(1)
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
