//! Every durable byte of a node lives in one LMDB environment in its data directory.
//!
//! Databases:
//! - `log`: Raft log entries, keyed by index (big-endian, so LMDB's order is log order).
//! - `raft`: vote, committed and purge markers, the storage format version (see `format`), and
//!   the boot id and redelivery mark described below.
//! - `applied`: the state machine's last-applied log id and membership, and the delivery cursor
//!   (see `delivery`).
//! - `ops_log`: log index -> the operation id that took effect there (the idempotence registry,
//!   in log order; its rules live in `crate::ops`).
//! - `ops`, `ops_by_index`: the registry keyed by id, as earlier releases kept it; emptied into
//!   `ops_log` when such a directory is opened.
//! - `registry`: replicated key -> JSON records (cluster membership metadata).
//! - `snapshot`: the current snapshot's meta and data.
//! - `changes`: (index, seq) -> registry change, a bounded history for watches (see `history`).
//!
//! The environment runs with LMDB's `NO_META_SYNC`: a commit flushes its pages, then writes the
//! meta page that makes it current without waiting for that page to reach the disk. LMDB stays
//! consistent that way (a power loss can undo the last commit, never tear one), and the next
//! commit's flush makes it durable. Every commit that something relies on surviving a power loss
//! (log appends, votes, truncations, snapshots, the delivery cursor) goes through
//! `commit_durably`, which flushes the meta page too before it returns: the same two flushes as
//! LMDB's default. An applied batch that commits alone does not: the log holds every entry it
//! applied, so a batch a power loss undid is applied again from the log at the next start (and
//! `Delivery` keeps the application from receiving again what it reported holding). That takes
//! one of the two flushes of the state machine's commit off a write's path.
//!
//! The kernel keeps such a batch across a crash of this process (it is in the page cache), not
//! across a machine's. So the directory records the kernel's boot id while a node has it open,
//! and forgets it when the node closes cleanly (everything flushed). Opened under another boot
//! with the id still recorded, the last applied batch may be lost: every entry through the log's
//! end as it then stands may have reached the application before, and is marked `redelivered`
//! when it is delivered again (`KEY_REDELIVER_THROUGH`).

mod app_state;
mod delivery;
mod format;
mod history;
mod legacy;
mod lock_file;
mod log_store;
mod log_writer;
mod offline;
mod records;
mod state_machine;

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use heed::byteorder::BigEndian;
use heed::types::{Bytes, Str, U64};
use heed::{Database, Env, EnvFlags, EnvOpenOptions, RwTxn, WithoutTls};
use records::Record;

pub use crate::ops::OpRecord;
pub use app_state::AppSnapshots;
pub use delivery::{catch_up, Delivery, Replayed, ResumeFrom};
pub use format::FORMAT_VERSION;
pub use history::{Change, Changes, HISTORY_ENTRIES};
pub use log_store::LogStore;
pub use log_writer::ApplyQueue;
pub(crate) use log_writer::{ApplyWork, Publish};
pub use offline::{open_existing, restore, Exported, OfflineError, Recovered};
pub use state_machine::StateMachine;

/// Open LMDB environment and its databases; shared by the log store and the state machine.
pub struct Store {
    pub(crate) env: Env<WithoutTls>,
    /// Declared after `env`, so that it goes after the environment closed.
    _memory_lock: Option<lock_file::MemoryLockFile>,
    log: Database<'static, U64<BigEndian>, Bytes>,
    raft: Database<'static, Str, Bytes>,
    pub(crate) applied: Database<'static, Str, Bytes>,
    pub(crate) ops_log: Database<'static, U64<BigEndian>, Bytes>,
    pub(crate) legacy_ops: Database<'static, Str, Bytes>,
    pub(crate) legacy_ops_by_index: Database<'static, U64<BigEndian>, Str>,
    registry: Database<'static, Str, Str>,
    snapshot: Database<'static, Str, Bytes>,
    changes: Database<'static, Bytes, Bytes>,
    /// Held for the lifetime of the store: an advisory lock that keeps a second node (in this or
    /// another process) from opening the same data directory.
    _dir_lock: File,
    path: PathBuf,
    stats: Arc<crate::stats::StorageStats>,
    /// Where each remembered operation id is in `ops_log` (see `crate::ops::IdIndex`).
    pub(crate) ids: std::sync::Mutex<crate::ops::IdIndex>,
    /// Set once this open recorded the boot: only then does the close forget it (a directory
    /// refused at open, say of a newer format, is left as it was).
    boot_recorded: bool,
}

pub(crate) fn storage_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("storage: {e}"))
}

/// Commits `wtxn` and flushes it, meta page included: once this returns the write survives a
/// power loss (see the module's notes).
pub(crate) fn commit_durably(env: &Env<WithoutTls>, wtxn: RwTxn<'_>) -> io::Result<()> {
    wtxn.commit().map_err(storage_err)?;
    env.force_sync().map_err(storage_err)
}

/// Runs a write whose commit fsyncs. On a multi-threaded runtime the worker hands its other tasks
/// to another thread for the duration, so network I/O does not wait behind the disk.
pub(crate) fn blocking<T>(write: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(write)
        }
        _ => write(),
    }
}

/// A log index stored as 8 big-endian bytes; `what` names it in the error.
pub(crate) fn decode_index(bytes: &[u8], what: &str) -> io::Result<u64> {
    let raw: [u8; 8] = bytes
        .try_into()
        .map_err(|_| storage_err(format!("{what} is not 8 bytes")))?;
    Ok(u64::from_be_bytes(raw))
}

/// A record in the current storage format (see `records`).
pub(crate) fn encode<T: Record>(value: &T) -> io::Result<Vec<u8>> {
    value.to_bytes()
}

pub(crate) fn decode<T: Record>(bytes: &[u8]) -> io::Result<T> {
    T::from_bytes(bytes)
}

/// Why a data directory could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Another node holds the directory's lock.
    Locked(PathBuf),
    Io(io::Error),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Locked(p) => write!(
                f,
                "data directory {} is in use by another node; give each node its own dataDir",
                p.display()
            ),
            OpenError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl Store {
    /// Timings of this store's disk work, for metrics.
    pub fn stats(&self) -> &Arc<crate::stats::StorageStats> {
        &self.stats
    }

    /// Opens (creating if missing) the LMDB environment under `dir`.
    pub fn open(dir: &Path, map_size_bytes: usize) -> Result<Arc<Store>, OpenError> {
        Self::open_in_boot(dir, map_size_bytes, current_boot_id().as_deref())
    }

    /// `open`, as if the kernel's boot id were `boot` (`None`: not known on this system).
    pub(crate) fn open_in_boot(
        dir: &Path,
        map_size_bytes: usize,
        boot: Option<&str>,
    ) -> Result<Arc<Store>, OpenError> {
        std::fs::create_dir_all(dir).map_err(OpenError::Io)?;
        let lock_path = dir.join("node.lock");
        let dir_lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(OpenError::Io)?;
        match dir_lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::Locked(dir.to_path_buf()))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(OpenError::Io(e)),
        }

        let memory_lock = lock_file::place_in_memory(dir);
        let page = 4096usize;
        let map_size = map_size_bytes.div_ceil(page) * page;
        // SAFETY: heed requires that an environment is not opened twice in one process and that
        // its files are not changed behind LMDB's back. The exclusive `node.lock` taken above
        // (an OS file lock, held until this `Store` is dropped) guarantees no other `Store` in
        // any process has this directory open, and nothing else writes to it. heed counts
        // `NO_META_SYNC` among the unsafe flags because it gives up durability: LMDB still flushes
        // a commit's pages before the meta page that points at them, so the environment stays
        // consistent, and every commit that must be durable flushes itself (`commit_durably`).
        let env = unsafe {
            EnvOpenOptions::new()
                .read_txn_without_tls()
                .flags(EnvFlags::NO_META_SYNC)
                .map_size(map_size)
                .max_dbs(16)
                .open(dir)
        }
        .map_err(|e| OpenError::Io(storage_err(e)))?;

        let io = |e: heed::Error| OpenError::Io(storage_err(e));
        let wtxn = env.write_txn().map_err(io)?;
        let (
            log,
            raft,
            applied,
            ops_log,
            legacy_ops,
            legacy_ops_by_index,
            registry,
            snapshot,
            changes,
            ops_by_age,
        ) = env
            .create_databases_and_commit(wtxn, |dbs, wtxn| -> heed::Result<_> {
                Ok(heed::CommitOrAbort::<_, ()>::Commit((
                    dbs.create_database(wtxn, Some("log"))?,
                    dbs.create_database(wtxn, Some("raft"))?,
                    dbs.create_database(wtxn, Some("applied"))?,
                    dbs.create_database(wtxn, Some("ops_log"))?,
                    dbs.create_database(wtxn, Some("ops"))?,
                    dbs.create_database(wtxn, Some("ops_by_index"))?,
                    dbs.create_database(wtxn, Some("registry"))?,
                    dbs.create_database(wtxn, Some("snapshot"))?,
                    dbs.create_database(wtxn, Some("changes"))?,
                    dbs.open_database::<Bytes, Bytes>(wtxn, Some("ops_by_age"))?,
                )))
            })
            .map_err(io)?
            .unwrap_commit();
        env.force_sync().map_err(io)?;

        let mut store = Store {
            env,
            _memory_lock: memory_lock,
            log,
            raft,
            applied,
            ops_log,
            legacy_ops,
            legacy_ops_by_index,
            registry,
            snapshot,
            changes,
            _dir_lock: dir_lock,
            path: dir.to_path_buf(),
            stats: Arc::default(),
            ids: Default::default(),
            boot_recorded: false,
        };
        store.check_format().map_err(OpenError::Io)?;
        if let Some(ops_by_age) = ops_by_age {
            // An order of the registry older than `ops_by_index`, of no use since.
            let mut wtxn = store.env.write_txn().map_err(io)?;
            ops_by_age.clear(&mut wtxn).map_err(io)?;
            commit_durably(&store.env, wtxn).map_err(OpenError::Io)?;
        }
        store.mark_new_directory().map_err(OpenError::Io)?;
        store.note_boot(boot).map_err(OpenError::Io)?;
        store.boot_recorded = true;
        store.init_history().map_err(OpenError::Io)?;
        store.ids = std::sync::Mutex::new(crate::ops::load_index(&store).map_err(OpenError::Io)?);
        Ok(Arc::new(store))
    }

    /// The state machine's last applied log id as stored (`None` before anything was applied).
    pub(crate) fn stored_last_applied(
        &self,
        txn: &heed::RoTxn<'_, WithoutTls>,
    ) -> io::Result<Option<crate::types::LogId>> {
        match self
            .applied
            .get(txn, KEY_LAST_APPLIED)
            .map_err(storage_err)?
        {
            Some(bytes) => decode(bytes),
            None => Ok(None),
        }
    }

    /// The last log id openraft purged, as stored.
    pub(crate) fn stored_purged(
        &self,
        txn: &heed::RoTxn<'_, WithoutTls>,
    ) -> io::Result<Option<crate::types::LogId>> {
        match self.raft.get(txn, KEY_PURGED).map_err(storage_err)? {
            Some(bytes) => decode(bytes).map(Some),
            None => Ok(None),
        }
    }

    /// A directory without Raft state starts with an empty delivery cursor: nothing delivered.
    /// (A directory with state but no cursor was written before delivery was tracked.)
    fn mark_new_directory(&self) -> io::Result<()> {
        if self.has_raft_state()? {
            return Ok(());
        }
        let mut wtxn = self.env.write_txn().map_err(storage_err)?;
        if self
            .applied
            .get(&wtxn, KEY_DELIVERED)
            .map_err(storage_err)?
            .is_none()
        {
            self.applied
                .put(&mut wtxn, KEY_DELIVERED, &[])
                .map_err(storage_err)?;
        }
        commit_durably(&self.env, wtxn)
    }

    /// Records `boot` as the boot the directory is open in; when the directory was left open
    /// (not closed cleanly) under another, marks the log's end as possibly delivered (see the
    /// module's notes). Without a boot id every such open counts as another boot.
    fn note_boot(&self, boot: Option<&str>) -> io::Result<()> {
        let mut wtxn = self.env.write_txn().map_err(storage_err)?;
        let recorded = self.raft.get(&wtxn, KEY_BOOT).map_err(storage_err)?;
        let another_boot = match (recorded, boot) {
            (Some(recorded), Some(boot)) => recorded != boot.as_bytes(),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if another_boot {
            let log_end = self.log.last(&wtxn).map_err(storage_err)?.map(|(i, _)| i);
            let through = log_end.max(self.stored_redeliver_through(&wtxn)?);
            if let Some(through) = through {
                self.raft
                    .put(&mut wtxn, KEY_REDELIVER_THROUGH, &through.to_be_bytes())
                    .map_err(storage_err)?;
            }
        }
        self.raft
            .put(&mut wtxn, KEY_BOOT, boot.unwrap_or_default().as_bytes())
            .map_err(storage_err)?;
        commit_durably(&self.env, wtxn)
    }

    /// Through this index, entries may have reached the application in a run a machine restart
    /// ended (see the module's notes).
    pub(crate) fn stored_redeliver_through(
        &self,
        txn: &heed::RoTxn<'_, WithoutTls>,
    ) -> io::Result<Option<u64>> {
        self.raft
            .get(txn, KEY_REDELIVER_THROUGH)
            .map_err(storage_err)?
            .map(|bytes| decode_index(bytes, "redelivery mark"))
            .transpose()
    }

    /// Closed cleanly, every commit flushed: no applied batch can be lost any more.
    fn forget_boot(&self) -> io::Result<()> {
        let mut wtxn = self.env.write_txn().map_err(storage_err)?;
        self.raft.delete(&mut wtxn, KEY_BOOT).map_err(storage_err)?;
        commit_durably(&self.env, wtxn)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when this directory holds Raft state (a vote or a log): such a node never founds a
    /// cluster again, it rejoins the one it belonged to.
    pub fn has_raft_state(&self) -> io::Result<bool> {
        let rtxn = self.env.read_txn().map_err(storage_err)?;
        let has_vote = self
            .raft
            .get(&rtxn, KEY_VOTE)
            .map_err(storage_err)?
            .is_some();
        let has_log = self.log.first(&rtxn).map_err(storage_err)?.is_some();
        let has_snapshot = self
            .snapshot
            .get(&rtxn, KEY_SNAPSHOT_META)
            .map_err(storage_err)?
            .is_some();
        Ok(has_vote || has_log || has_snapshot)
    }

    /// Registry records whose key starts with `prefix`, in key order.
    pub fn registry_entries(&self, prefix: &str) -> io::Result<Vec<(String, String)>> {
        let rtxn = self.env.read_txn().map_err(storage_err)?;
        let mut out = Vec::new();
        // LMDB refuses an empty key, so an empty prefix (every record) is a plain iteration.
        type Items<'t> = Box<dyn Iterator<Item = heed::Result<(&'t str, &'t str)>> + 't>;
        let items: Items = if prefix.is_empty() {
            Box::new(self.registry.iter(&rtxn).map_err(storage_err)?)
        } else {
            Box::new(
                self.registry
                    .prefix_iter(&rtxn, prefix)
                    .map_err(storage_err)?,
            )
        };
        for item in items {
            let (k, v) = item.map_err(storage_err)?;
            out.push((k.to_string(), v.to_string()));
        }
        Ok(out)
    }

    /// Number of entries currently in the log (after purges).
    pub fn log_len(&self) -> io::Result<u64> {
        let rtxn = self.env.read_txn().map_err(storage_err)?;
        self.log.len(&rtxn).map_err(storage_err)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if !self.boot_recorded {
            return;
        }
        if let Err(e) = self.forget_boot() {
            // The next open under another boot marks more entries `redelivered` than it need.
            tracing::warn!(
                target: "unrdf_consensus::storage",
                dir = %self.path.display(),
                "could not record a clean close: {e}"
            );
        }
    }
}

/// The running kernel's boot id, where the system has one.
fn current_boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_string())
}

const KEY_VOTE: &str = "vote";
const KEY_BOOT: &str = "boot";
const KEY_REDELIVER_THROUGH: &str = "redeliver_through";
const KEY_PURGED: &str = "purged";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_APPLIED: &str = "last_applied";
const KEY_MEMBERSHIP: &str = "membership";
const KEY_DELIVERED: &str = "delivered";
const KEY_SNAPSHOT_META: &str = "meta";
const KEY_SNAPSHOT_DATA: &str = "data";
/// With a snapshot built here: the first log index of its operation-id window (see
/// `StateMachine::get_current_snapshot`).
const KEY_SNAPSHOT_OPS_FROM: &str = "ops_from";

#[cfg(test)]
mod tests;
