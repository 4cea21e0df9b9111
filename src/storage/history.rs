//! A bounded history of registry changes, keyed by the log index that made them, so a watcher
//! can resume from an index after a restart (etcd's watch from a revision).
//!
//! Every replica records the same changes in the same apply transaction that makes them, and
//! prunes by log index, so the history is as durable as the registry itself. What it no longer
//! holds is marked by the floor: every change at an index above the floor is kept. The floor
//! rises as old changes are pruned, and jumps to a snapshot's index when one is installed (the
//! snapshot carries the registry, not how it got there).

use std::io;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::{decode, encode, storage_err, Store};

/// How many log indices of changes are kept behind the newest applied entry.
pub const HISTORY_ENTRIES: u64 = 100_000;

const KEY_HISTORY_FLOOR: &str = "history_floor";

/// One registry change: `value` is the key's new JSON, `None` when it was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub index: u64,
    pub key: String,
    pub value: Option<String>,
}

/// Changes after some index, and the floor below which history is gone.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub floor: u64,
    /// The listing is complete through this index: resume after it.
    pub through: u64,
    pub changes: Vec<Change>,
}

/// A change as stored, under its (index, seq) key.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredChange {
    pub key: String,
    pub value: Option<String>,
}

fn change_key(index: u64, seq: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&index.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl Store {
    /// A directory written before history was kept has none for what it already applied.
    pub(super) fn init_history(&self) -> io::Result<()> {
        let mut wtxn = self.env.write_txn().map_err(storage_err)?;
        if self
            .applied
            .get(&wtxn, KEY_HISTORY_FLOOR)
            .map_err(storage_err)?
            .is_some()
        {
            return Ok(());
        }
        let last_applied = self.stored_last_applied(&wtxn)?;
        let floor = last_applied.map(|l| l.index()).unwrap_or(0);
        self.applied
            .put(&mut wtxn, KEY_HISTORY_FLOOR, &floor.to_be_bytes())
            .map_err(storage_err)?;
        super::commit_durably(&self.env, wtxn)
    }

    fn history_floor(&self, txn: &heed::RoTxn<heed::WithoutTls>) -> io::Result<u64> {
        let bytes = self
            .applied
            .get(txn, KEY_HISTORY_FLOOR)
            .map_err(storage_err)?;
        Ok(bytes
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    pub(super) fn record_change(
        &self,
        wtxn: &mut heed::RwTxn,
        index: u64,
        seq: u32,
        key: &str,
        value: Option<&str>,
    ) -> io::Result<()> {
        let stored = StoredChange {
            key: key.to_string(),
            value: value.map(str::to_string),
        };
        self.changes
            .put(wtxn, &change_key(index, seq), &encode(&stored)?)
            .map_err(storage_err)
    }

    /// Drops changes more than `HISTORY_ENTRIES` indices behind `last_index`.
    pub(super) fn prune_history(&self, wtxn: &mut heed::RwTxn, last_index: u64) -> io::Result<()> {
        let cutoff = last_index.saturating_sub(HISTORY_ENTRIES);
        if cutoff <= self.history_floor(wtxn)? {
            return Ok(());
        }
        let upper = change_key(cutoff + 1, 0);
        self.changes
            .delete_range(wtxn, &(Bound::Unbounded, Bound::Excluded(&upper[..])))
            .map_err(storage_err)?;
        self.applied
            .put(wtxn, KEY_HISTORY_FLOOR, &cutoff.to_be_bytes())
            .map_err(storage_err)
    }

    /// After a snapshot install: history restarts at the snapshot's index.
    pub(super) fn reset_history(&self, wtxn: &mut heed::RwTxn, floor: u64) -> io::Result<()> {
        self.changes.clear(wtxn).map_err(storage_err)?;
        self.applied
            .put(wtxn, KEY_HISTORY_FLOOR, &floor.to_be_bytes())
            .map_err(storage_err)
    }

    /// The JSON under `key` in the registry as this replica applied it.
    pub fn registry_get(&self, key: &str) -> io::Result<Option<String>> {
        let rtxn = self.env.read_txn().map_err(storage_err)?;
        Ok(self
            .registry
            .get(&rtxn, key)
            .map_err(storage_err)?
            .map(str::to_string))
    }

    /// How many registry keys start with `prefix`, without copying them out.
    pub fn registry_count(&self, prefix: &str) -> io::Result<u64> {
        let rtxn = self.env.read_txn().map_err(storage_err)?;
        if prefix.is_empty() {
            return self.registry.len(&rtxn).map_err(storage_err);
        }
        let mut n = 0;
        for item in self
            .registry
            .remap_data_type::<heed::types::DecodeIgnore>()
            .prefix_iter(&rtxn, prefix)
            .map_err(storage_err)?
        {
            item.map_err(storage_err)?;
            n += 1;
        }
        Ok(n)
    }

    /// Changes to keys under `prefix` made by entries `after < index <= up_to`, oldest first, at
    /// most `limit` of them; stops early only between entries, so a batch is never split.
    pub fn registry_changes(
        &self,
        prefix: &str,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> io::Result<Changes> {
        let rtxn = self.env.read_txn().map_err(storage_err)?;
        let floor = self.history_floor(&rtxn)?;
        // Read in the transaction that reads the history: both are written by one apply.
        let last_applied = self.stored_last_applied(&rtxn)?;
        let up_to = up_to.min(last_applied.map(|l| l.index()).unwrap_or(0));
        let mut out = Vec::new();
        let mut through = up_to.max(after);
        if up_to <= after {
            return Ok(Changes {
                floor,
                through,
                changes: out,
            });
        }
        let lower = change_key(after.saturating_add(1), 0);
        let upper = change_key(up_to.saturating_add(1), 0);
        let range = (Bound::Included(&lower[..]), Bound::Excluded(&upper[..]));
        for item in self.changes.range(&rtxn, &range).map_err(storage_err)? {
            let (k, v) = item.map_err(storage_err)?;
            let index = k
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| storage_err("malformed history key"))?;
            if out.len() >= limit && out.last().map(|c: &Change| c.index) != Some(index) {
                through = index.saturating_sub(1);
                break;
            }
            let stored: StoredChange = decode(v)?;
            if stored.key.starts_with(prefix) {
                out.push(Change {
                    index,
                    key: stored.key,
                    value: stored.value,
                });
            }
        }
        Ok(Changes {
            floor,
            through,
            changes: out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::KEY_LAST_APPLIED;
    use crate::types::LogId;

    fn store() -> (tempfile::TempDir, std::sync::Arc<Store>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), 16 << 20).expect("open");
        (dir, store)
    }

    fn write(store: &Store, index: u64, changes: &[(&str, Option<&str>)]) {
        let mut wtxn = store.env.write_txn().expect("txn");
        for (seq, (key, value)) in changes.iter().enumerate() {
            store
                .record_change(&mut wtxn, index, seq as u32, key, *value)
                .expect("record");
        }
        let last: Option<LogId> = Some(openraft::LogId::new(
            openraft::vote::leader_id_std::CommittedLeaderId::new(1),
            index,
        ));
        store
            .applied
            .put(&mut wtxn, KEY_LAST_APPLIED, &encode(&last).expect("encode"))
            .expect("put");
        store.prune_history(&mut wtxn, index).expect("prune");
        wtxn.commit().expect("commit");
    }

    #[test]
    fn lists_by_prefix_in_order_and_never_splits_an_entry() {
        let (_dir, s) = store();
        write(&s, 1, &[("state/a", Some("1"))]);
        write(&s, 2, &[("cluster/n", Some("{}"))]);
        write(&s, 3, &[("state/b", Some("2")), ("state/c", None)]);
        write(&s, 4, &[("state/a", None)]);
        let all = s
            .registry_changes("state/", 0, u64::MAX, 100)
            .expect("list");
        assert_eq!(all.floor, 0);
        assert_eq!(all.through, 4);
        let seen: Vec<_> = all
            .changes
            .iter()
            .map(|c| (c.index, c.key.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (1, "state/a"),
                (3, "state/b"),
                (3, "state/c"),
                (4, "state/a")
            ]
        );
        // A page that ends inside entry 3 takes all of it, and says where to resume.
        let page = s.registry_changes("state/", 0, u64::MAX, 2).expect("page");
        assert_eq!(page.changes.len(), 3);
        assert_eq!(page.through, 3);
        let rest = s
            .registry_changes("state/", page.through, 3, 2)
            .expect("rest");
        assert!(rest.changes.is_empty());
        assert_eq!(rest.through, 3);
    }

    #[test]
    fn pruning_and_snapshots_raise_the_floor() {
        let (_dir, s) = store();
        write(&s, 1, &[("state/a", Some("1"))]);
        write(&s, HISTORY_ENTRIES + 5, &[("state/b", Some("2"))]);
        let after = s.registry_changes("", 0, u64::MAX, 10).expect("list");
        assert_eq!(after.floor, 5);
        assert_eq!(after.changes.len(), 1);
        let mut wtxn = s.env.write_txn().expect("txn");
        s.reset_history(&mut wtxn, HISTORY_ENTRIES + 9)
            .expect("reset");
        wtxn.commit().expect("commit");
        let reset = s.registry_changes("", 0, u64::MAX, 10).expect("list");
        assert_eq!(reset.floor, HISTORY_ENTRIES + 9);
        assert!(reset.changes.is_empty());
    }
}
