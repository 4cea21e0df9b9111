//! Operators' tools over a data directory: a consistent copy of a running node's environment
//! (backup), laying such a copy down as a new data directory (restore), reading the log and
//! registries out as NDJSON (export), and rewriting a stopped node's membership so it restarts
//! as a one-node cluster after its cluster lost quorum for good (force-new-cluster).
//!
//! Everything but `copy_to` runs on a stopped node: the directory's lock is taken as `Store::open`
//! takes it, so a node that is still running makes these refuse instead of racing them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use heed::CompactionOption;
use openraft::entry::RaftEntry;
use openraft::vote::{RaftLeaderId, RaftVote};
use openraft::{EntryPayload, LogId, Membership};
use serde_json::{json, Value};

use super::{
    decode, encode, storage_err, OpenError, Store, KEY_MEMBERSHIP, KEY_PURGED, KEY_SNAPSHOT_META,
    KEY_VOTE,
};
use crate::types::{
    Entry, LogId as RaftLogId, NodeName, PeerAddr, StoredMembership, TypeConfig, Vote,
};

/// The LMDB data file: a directory without it holds no node's data.
pub const DATA_FILE: &str = "data.mdb";

/// How the admin endpoint names the backup copies it writes into the data directory before
/// streaming them (`.backup-<pid>-<random>.mdb`).
pub const BACKUP_PREFIX: &str = ".backup-";
pub const BACKUP_SUFFIX: &str = ".mdb";

/// Which node a directory belongs to, recorded at every start (older directories lack it).
const KEY_NODE_ID: &str = "node_id";

/// Why an offline tool refused or failed. `code` is one of the API's stable error codes.
#[derive(Debug)]
pub struct OfflineError {
    pub code: &'static str,
    pub message: String,
}

impl OfflineError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        OfflineError {
            code,
            message: message.into(),
        }
    }

    fn storage(e: impl std::fmt::Display) -> Self {
        OfflineError::new("ERR_STORAGE", e.to_string())
    }

    fn refused(message: impl Into<String>) -> Self {
        OfflineError::new("ERR_INVALID_OPERATION", message)
    }
}

impl std::fmt::Display for OfflineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// What `force_new_cluster` changed, for the loud report the operator gets.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub node_id: String,
    pub addr: PeerAddr,
    pub previous_voters: Vec<String>,
    pub previous_learners: Vec<String>,
    /// Index of the membership entry written: every entry before it is kept and will commit.
    pub membership_index: u64,
    pub last_applied: Option<u64>,
    pub term: u64,
}

/// Counts of what `export_ndjson` wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct Exported {
    pub entries: u64,
    pub operations: u64,
    pub registry: u64,
}

fn term_of(log_id: &RaftLogId) -> u64 {
    log_id.committed_leader_id().term
}

/// Opens the data directory of a stopped node. Refuses a directory that holds no node's data
/// (without creating anything there) and one that a running node holds.
pub fn open_existing(dir: &Path, map_size_bytes: usize) -> Result<Arc<Store>, OfflineError> {
    if !dir.is_dir() {
        return Err(OfflineError::refused(format!(
            "{} is not a directory; give the data directory of a node (its dataDir)",
            dir.display()
        )));
    }
    if !dir.join(DATA_FILE).is_file() {
        return Err(OfflineError::refused(format!(
            "{} holds no node's data (no {DATA_FILE}); give the data directory of a node (its dataDir)",
            dir.display()
        )));
    }
    let store = Store::open(dir, map_size_bytes).map_err(|e| match e {
        OpenError::Locked(_) => OfflineError::new(
            "ERR_STORAGE",
            format!("{e}; stop that node first (or take a backup from its admin endpoint)"),
        ),
        OpenError::Io(io) => OfflineError::storage(format!(
            "{} is not a readable node data directory: {io}",
            dir.display()
        )),
    })?;
    if !store.has_raft_state().map_err(OfflineError::storage)? {
        return Err(OfflineError::refused(format!(
            "{} holds no Raft state (no vote, log or snapshot); it is not a node's data",
            dir.display()
        )));
    }
    Ok(store)
}

/// Lays a backup file down as the data directory `dir`. The file is checked by opening it as a
/// node's environment in a directory beside `dir` first; `dir` is replaced only once that
/// succeeded, so a bad file leaves `dir` as it was.
pub fn restore(
    file: &Path,
    dir: &Path,
    force: bool,
    map_size_bytes: usize,
) -> Result<(), OfflineError> {
    if !file.is_file() {
        return Err(OfflineError::refused(format!(
            "{} is not a file; give a file written by `backup`",
            file.display()
        )));
    }
    let occupied = match fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(OfflineError::storage(format!("{}: {e}", dir.display()))),
    };
    if occupied && !force {
        return Err(OfflineError::refused(format!(
            "{} is not empty; restore into an empty directory, or pass --force to replace what is there",
            dir.display()
        )));
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent)
        .map_err(|e| OfflineError::storage(format!("{}: {e}", parent.display())))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".to_string());
    let staging = parent.join(format!(".{name}.restoring-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)
        .map_err(|e| OfflineError::storage(format!("{}: {e}", staging.display())))?;
    let staged = (|| {
        fs::copy(file, staging.join(DATA_FILE))
            .map_err(|e| OfflineError::storage(format!("copying {}: {e}", file.display())))?;
        // Durable before it takes the directory's place: a crash then leaves a whole copy.
        fs::File::open(staging.join(DATA_FILE))
            .and_then(|f| f.sync_all())
            .map_err(|e| OfflineError::storage(format!("syncing the copy: {e}")))?;
        open_existing(&staging, map_size_bytes).map_err(|e| {
            OfflineError::refused(format!(
                "{} is not a backup of a node: {}",
                file.display(),
                e.message
            ))
        })?;
        // The check's lock file is not part of the data.
        let _ = fs::remove_file(staging.join("node.lock"));
        Ok(())
    })();
    if let Err(e) = staged {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    if occupied {
        // A running node there holds the lock: refuse rather than pull its files away.
        if dir.join(DATA_FILE).is_file() {
            if let Err(OpenError::Locked(_)) = Store::open(dir, map_size_bytes).map(drop) {
                let _ = fs::remove_dir_all(&staging);
                return Err(OfflineError::new(
                    "ERR_STORAGE",
                    format!(
                        "{} is in use by a running node; stop it first",
                        dir.display()
                    ),
                ));
            }
        }
        fs::remove_dir_all(dir)
            .map_err(|e| OfflineError::storage(format!("removing {}: {e}", dir.display())))?;
    }
    fs::rename(&staging, dir).map_err(|e| {
        OfflineError::storage(format!(
            "moving {} to {}: {e}",
            staging.display(),
            dir.display()
        ))
    })
}

impl Store {
    /// A compacted copy of the whole environment, written to `to` (which must not exist) from
    /// one LMDB read transaction: consistent however many writes commit meanwhile.
    pub fn copy_to(&self, to: &Path) -> io::Result<u64> {
        let file = self
            .env
            .copy_to_path(to, CompactionOption::Enabled)
            .map_err(storage_err)?;
        file.sync_all()?;
        Ok(file.metadata()?.len())
    }

    /// Deletes backup copies that a node writing them left behind when it died: only a node
    /// holding the directory's lock writes them, so while this store holds it none is in progress.
    pub fn remove_stale_copies(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.path)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(BACKUP_PREFIX) && name.ends_with(BACKUP_SUFFIX) {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Records which node this directory belongs to, the first time a node runs on it.
    pub fn remember_node_id(&self, node_id: &str) -> io::Result<()> {
        let mut wtxn = self.env.write_txn().map_err(storage_err)?;
        if self
            .raft
            .get(&wtxn, KEY_NODE_ID)
            .map_err(storage_err)?
            .is_none()
        {
            self.raft
                .put(&mut wtxn, KEY_NODE_ID, node_id.as_bytes())
                .map_err(storage_err)?;
        }
        super::commit_durably(&self.env, wtxn)
    }

    /// The node this directory belongs to, when a node recorded it.
    pub fn recorded_node_id(&self) -> io::Result<Option<String>> {
        let rtxn = self.env.read_txn().map_err(storage_err)?;
        Ok(self
            .raft
            .get(&rtxn, KEY_NODE_ID)
            .map_err(storage_err)?
            .map(|b| String::from_utf8_lossy(b).into_owned()))
    }

    /// The newest membership this node knows: the last membership entry in its log, else the
    /// one its state machine applied, else its snapshot's.
    fn newest_membership(
        &self,
        rtxn: &heed::RoTxn<heed::WithoutTls>,
    ) -> io::Result<Option<StoredMembership>> {
        for item in self.log.rev_iter(rtxn).map_err(storage_err)? {
            let (_, bytes) = item.map_err(storage_err)?;
            let entry: Entry = decode(bytes)?;
            if let EntryPayload::Membership(m) = entry.payload {
                return Ok(Some(StoredMembership::new(Some(entry.log_id), m)));
            }
        }
        if let Some(bytes) = self
            .applied
            .get(rtxn, KEY_MEMBERSHIP)
            .map_err(storage_err)?
        {
            let m: StoredMembership = decode(bytes)?;
            if m.log_id().is_some() {
                return Ok(Some(m));
            }
        }
        if let Some(bytes) = self
            .snapshot
            .get(rtxn, KEY_SNAPSHOT_META)
            .map_err(storage_err)?
        {
            let meta: crate::types::SnapshotMeta = decode(bytes)?;
            return Ok(Some(meta.last_membership));
        }
        Ok(None)
    }

    /// etcd's `--force-new-cluster`, hashicorp raft's `RecoverCluster`: appends, after the last
    /// entry, a membership entry naming this node as the only voter, and records a vote for
    /// itself in a new term that no leader reached. openraft takes the last membership entry of
    /// the log as the one in effect, so on restart the node elects itself (it alone is a
    /// majority), and its first entry as leader commits every entry it holds, the membership
    /// entry included. The entry carries the term of the entry before it, so the log stays in
    /// term order; nothing is deleted.
    pub fn force_new_cluster(&self, node_id: Option<&str>) -> Result<Recovered, OfflineError> {
        let recorded = self.recorded_node_id().map_err(OfflineError::storage)?;
        let me = match (recorded, node_id) {
            (Some(r), Some(given)) if r != given => {
                return Err(OfflineError::refused(format!(
                    "this directory belongs to node {r}, not {given}; run recover with the node id it was started with"
                )))
            }
            (Some(r), _) => r,
            (None, Some(given)) => given.to_string(),
            (None, None) => {
                return Err(OfflineError::refused(
                    "this directory does not record its node id (written by an older version); pass --node-id",
                ))
            }
        };
        let me_name = NodeName(me.clone());
        let mut wtxn = self.env.write_txn().map_err(OfflineError::storage)?;
        let membership = self
            .newest_membership(&wtxn)
            .map_err(OfflineError::storage)?
            .ok_or_else(|| {
                OfflineError::refused(
                    "this directory holds no membership; it is not a cluster member's data",
                )
            })?;
        let addr = membership.get_node(&me_name).cloned().ok_or_else(|| {
            let members: Vec<String> = membership.nodes().map(|(id, _)| id.0.clone()).collect();
            OfflineError::refused(format!(
                "node {me} is not in the membership stored here (members: {}); nothing to recover",
                members.join(", ")
            ))
        })?;
        let previous_voters: Vec<String> = membership.voter_ids().map(|v| v.0).collect();
        let previous_learners: Vec<String> = membership
            .nodes()
            .map(|(id, _)| id.0.clone())
            .filter(|id| !previous_voters.contains(id))
            .collect();

        let get_raft = |key: &str| -> Result<Option<Vec<u8>>, OfflineError> {
            Ok(self
                .raft
                .get(&wtxn, key)
                .map_err(OfflineError::storage)?
                .map(|b| b.to_vec()))
        };
        let vote: Option<Vote> = get_raft(KEY_VOTE)?
            .map(|b| decode(&b))
            .transpose()
            .map_err(OfflineError::storage)?;
        let purged: Option<RaftLogId> = get_raft(KEY_PURGED)?
            .map(|b| decode(&b))
            .transpose()
            .map_err(OfflineError::storage)?;
        let last_entry: Option<RaftLogId> =
            match self.log.last(&wtxn).map_err(OfflineError::storage)? {
                Some((_, bytes)) => Some(
                    decode::<Entry>(bytes)
                        .map_err(OfflineError::storage)?
                        .log_id,
                ),
                None => None,
            };
        // As the log store reports it: entries kept for delivery may sit at or below the purge
        // point, which is then the last log id.
        let last = match (last_entry, purged) {
            (Some(l), Some(p)) if l.index() <= p.index() => Some(p),
            (l, p) => l.or(p),
        }
        .ok_or_else(|| {
            OfflineError::refused("this directory holds no log; it is not a cluster member's data")
        })?;
        let last_applied = self
            .stored_last_applied(&wtxn)
            .map_err(OfflineError::storage)?;

        let log_term = term_of(&last);
        let vote_term = vote.as_ref().map(|v| v.leader_id().term()).unwrap_or(0);
        let new_term = vote_term.max(log_term) + 1;
        let index = last.index() + 1;
        let sole = Membership::new(
            vec![BTreeSet::from([me_name.clone()])],
            BTreeMap::from([(me_name.clone(), addr.clone())]),
        )
        .map_err(|e| OfflineError::storage(format!("membership: {e}")))?;
        let entry =
            <Entry as RaftEntry>::new_membership(LogId::new_term_index(log_term, index), sole);
        let entry_bytes = encode(&entry).map_err(OfflineError::storage)?;
        // Not committed: a committed vote would make openraft restore the node as leader of that
        // term without the fresh election whose first entry commits the log.
        let leader =
            <openraft::alias::LeaderIdOf<TypeConfig> as RaftLeaderId>::new(new_term, me_name);
        let new_vote = <Vote as RaftVote>::from_leader_id(leader, false);
        let vote_bytes = encode(&new_vote).map_err(OfflineError::storage)?;
        self.log
            .put(&mut wtxn, &index, &entry_bytes)
            .map_err(OfflineError::storage)?;
        self.raft
            .put(&mut wtxn, KEY_VOTE, &vote_bytes)
            .map_err(OfflineError::storage)?;
        super::commit_durably(&self.env, wtxn).map_err(OfflineError::storage)?;
        Ok(Recovered {
            node_id: me,
            addr,
            previous_voters,
            previous_learners,
            membership_index: index,
            last_applied: last_applied.map(|l| l.index()),
            term: new_term,
        })
    }

    /// Writes the log (every entry still on disk), the operation-id registry and the replicated
    /// registry as NDJSON, one JSON object per line, after a header line.
    pub fn export_ndjson(&self, out: &mut dyn Write) -> io::Result<Exported> {
        let rtxn = self.env.read_txn().map_err(storage_err)?;
        let mut counts = Exported::default();
        let first = self.log.first(&rtxn).map_err(storage_err)?.map(|(i, _)| i);
        let last = self.log.last(&rtxn).map_err(storage_err)?.map(|(i, _)| i);
        let purged = self.stored_purged(&rtxn)?;
        let last_applied = self.stored_last_applied(&rtxn)?;
        let node_id = self
            .raft
            .get(&rtxn, KEY_NODE_ID)
            .map_err(storage_err)?
            .map(|b| String::from_utf8_lossy(b).into_owned());
        let line = |out: &mut dyn Write, v: Value| -> io::Result<()> {
            serde_json::to_writer(&mut *out, &v).map_err(io::Error::other)?;
            out.write_all(b"\n")
        };
        line(
            out,
            json!({
                "type": "header",
                "format": 1,
                "nodeId": node_id,
                "firstIndex": first,
                "lastIndex": last,
                "purgedIndex": purged.map(|p| p.index()),
                "lastApplied": last_applied.map(|l| l.index()),
            }),
        )?;
        for item in self.log.iter(&rtxn).map_err(storage_err)? {
            let (index, bytes) = item.map_err(storage_err)?;
            let entry: Entry = decode(bytes)?;
            let term = term_of(&entry.log_id);
            let v = match entry.payload {
                EntryPayload::Blank => {
                    json!({"type": "entry", "index": index, "term": term, "kind": "blank"})
                }
                EntryPayload::Normal(cmd) => {
                    let command: Value =
                        serde_json::from_str(&cmd.json).unwrap_or(Value::String(cmd.json.clone()));
                    json!({
                        "type": "entry",
                        "index": index,
                        "term": term,
                        "kind": "command",
                        "operationId": cmd.op_id,
                        "proposedAtMs": cmd.proposed_at_ms,
                        "registryKey": cmd.registry.as_ref().map(|r| r.key.clone()),
                        "command": command,
                    })
                }
                EntryPayload::Membership(m) => {
                    let voters: Vec<String> = m.voter_ids().map(|v| v.0).collect();
                    let nodes: serde_json::Map<String, Value> = m
                        .nodes()
                        .map(|(id, a)| (id.0.clone(), json!({"host": a.host, "port": a.port})))
                        .collect();
                    json!({"type": "entry", "index": index, "term": term, "kind": "membership", "voters": voters, "nodes": nodes})
                }
            };
            line(out, v)?;
            counts.entries += 1;
        }
        for (id, op) in crate::ops::remembered(self, &rtxn)? {
            line(
                out,
                json!({"type": "operation", "id": id, "index": op.index, "term": op.term, "proposedAtMs": op.proposed_at_ms}),
            )?;
            counts.operations += 1;
        }
        for item in self.registry.iter(&rtxn).map_err(storage_err)? {
            let (key, value) = item.map_err(storage_err)?;
            let value: Value =
                serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
            line(out, json!({"type": "registry", "key": key, "value": value}))?;
            counts.registry += 1;
        }
        out.flush()?;
        Ok(counts)
    }
}

#[cfg(test)]
#[path = "offline_tests.rs"]
mod tests;
