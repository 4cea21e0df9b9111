//! The replicated state machine: what has been applied, the membership, and the operation-id
//! registry that makes retries idempotent (its rules live in `crate::ops`). Persistent: each
//! applied batch commits before its events and responses go out, so a restarted node resumes
//! after its last applied entry. It commits in the log writer's transaction, with the log
//! appends queued beside it: one fsync for both. A batch that commits alone is durable only with
//! the next commit that flushes; a power loss before that undoes it, and the node applies it
//! again from the log (see the storage module's notes).

use std::io;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use heed::{RoTxn, WithoutTls};
use openraft::storage::{ApplyResponder, EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use super::legacy;
use super::{
    blocking, decode, encode, storage_err, AppSnapshots, ApplyQueue, ApplyWork, Delivery, Publish,
    Store, KEY_LAST_APPLIED, KEY_MEMBERSHIP, KEY_SNAPSHOT_DATA, KEY_SNAPSHOT_META,
    KEY_SNAPSHOT_OPS_FROM,
};
use crate::events::{Event, EventSink};
use crate::ops::{self, IdWindow, OpRecord, Registry};
use crate::types::{
    Applied, LogId, RegistryWrite, Snapshot, SnapshotData, SnapshotMeta, StoredMembership,
    TypeConfig,
};

/// The state machine's whole state as carried by a snapshot (encoded by `legacy`: it crosses
/// the wire to followers of any release). A snapshot built here is stored without its `ops`,
/// which stay in the registry's own table until the snapshot is sent (`get_current_snapshot`):
/// building one then costs the size of the application's state, not of the id window.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotPayload {
    pub last_applied: Option<LogId>,
    membership: StoredMembership,
    ops: Vec<(String, OpRecord)>,
    registry: Vec<(String, String)>,
    /// The application's state (JSON) as of `last_applied`, when it registered a provider.
    pub app: Option<String>,
}

/// At most this many entries, and about this many bytes of commands, are applied in one
/// transaction (see `apply`).
const APPLY_PIECE_ENTRIES: usize = 4096;
const APPLY_PIECE_BYTES: usize = 4 << 20;

pub struct StateMachine {
    store: Arc<Store>,
    events: EventSink,
    app: Arc<AppSnapshots>,
    delivery: Arc<Delivery>,
    /// What the operation-id registry remembers; a retry past it is treated as a new operation.
    id_window: IdWindow,
    log: ApplyQueue,
}

impl StateMachine {
    pub fn new(
        store: Arc<Store>,
        events: EventSink,
        app: Arc<AppSnapshots>,
        delivery: Arc<Delivery>,
        id_window: IdWindow,
        log: ApplyQueue,
    ) -> Self {
        StateMachine {
            store,
            events,
            app,
            delivery,
            id_window,
            log,
        }
    }

    /// Applies `batch` in the log writer's next transaction; returns once it committed and its
    /// events and answers are out.
    async fn apply_piece(&self, batch: Vec<EntryResponder<TypeConfig>>) -> io::Result<()> {
        let store = self.store.clone();
        let id_window = self.id_window;
        let delivery = self.delivery.clone();
        let events = self.events.clone();
        let work: ApplyWork = Box::new(move |wtxn| {
            let applied = apply_batch(&store, wtxn, id_window, batch)?;
            let publish: Publish = Box::new(move || {
                if let Some(last) = &applied.last_applied {
                    delivery.set_applied(last.index());
                }
                // While the node starts, the catch-up hands these over once it has started.
                if !delivery.starting() {
                    for event in applied.events {
                        if let Some(event) = delivery.outgoing(event) {
                            events.emit(event);
                        }
                    }
                }
                // Writers hear back after the events are queued: a write made on this node then
                // finds its own `command_applied` ahead of its answer, and need not wait for it.
                // Last to first: writes proposed together read their answers in order, so the
                // reader wakes once, at the first, with every answer there, and hands them to
                // JavaScript together (answers handed over apart are proposed again apart).
                for (responder, reply) in applied.replies.into_iter().rev() {
                    if let Some(r) = responder {
                        r.send(reply);
                    }
                }
            });
            Ok(publish)
        });
        // A crash before the commit re-applies these entries on restart, and their events are
        // emitted only after it, so each reaches JavaScript once.
        self.log.apply(work, self.app.clone()).await
    }

    /// Looks an operation id up in the applied registry.
    pub fn find_op(store: &Store, op_id: &str) -> io::Result<Option<OpRecord>> {
        ops::lookup(store, op_id)
    }

    fn read_applied(&self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let rtxn = self.store.env.read_txn().map_err(storage_err)?;
        self.read_applied_in(&rtxn)
    }

    fn read_applied_in(
        &self,
        rtxn: &RoTxn<WithoutTls>,
    ) -> io::Result<(Option<LogId>, StoredMembership)> {
        let s = &self.store;
        let last_applied = s.stored_last_applied(rtxn)?;
        let membership = match s.applied.get(rtxn, KEY_MEMBERSHIP).map_err(storage_err)? {
            Some(b) => decode(b)?,
            None => StoredMembership::default(),
        };
        Ok((last_applied, membership))
    }

    /// The state as `rtxn` sees it (one read transaction, so one applied index throughout),
    /// without the operation ids, and where the id window starts.
    fn build_payload(
        &self,
        rtxn: &RoTxn<WithoutTls>,
    ) -> io::Result<(SnapshotPayload, Registry<'_>)> {
        let (last_applied, membership) = self.read_applied_in(rtxn)?;
        let s = &self.store;
        let ids = Registry::open(s, rtxn, self.id_window)?;
        let mut registry = Vec::new();
        for item in s.registry.iter(rtxn).map_err(storage_err)? {
            let (k, v) = item.map_err(storage_err)?;
            registry.push((k.to_string(), v.to_string()));
        }
        let payload = SnapshotPayload {
            last_applied,
            membership,
            ops: Vec::new(),
            registry,
            app: None,
        };
        Ok((payload, ids))
    }

    fn stored_snapshot_meta(&self, rtxn: &RoTxn<WithoutTls>) -> io::Result<Option<SnapshotMeta>> {
        self.store
            .snapshot
            .get(rtxn, KEY_SNAPSHOT_META)
            .map_err(storage_err)?
            .map(decode)
            .transpose()
    }

    /// Stores a snapshot: `data` whole, or (`ops_from` given) without the ids the registry's
    /// table holds from `ops_from` through the snapshot's index.
    fn save_snapshot(
        &self,
        wtxn: &mut heed::RwTxn,
        meta: &SnapshotMeta,
        data: &[u8],
        ops_from: Option<u64>,
    ) -> io::Result<()> {
        let s = &self.store;
        s.snapshot
            .put(wtxn, KEY_SNAPSHOT_META, &encode(meta)?)
            .map_err(storage_err)?;
        s.snapshot
            .put(wtxn, KEY_SNAPSHOT_DATA, data)
            .map_err(storage_err)?;
        match ops_from {
            Some(from) => s
                .snapshot
                .put(wtxn, KEY_SNAPSHOT_OPS_FROM, &from.to_be_bytes())
                .map_err(storage_err),
            None => s
                .snapshot
                .delete(wtxn, KEY_SNAPSHOT_OPS_FROM)
                .map(|_| ())
                .map_err(storage_err),
        }
    }
}

/// Builds snapshots from a consistent read of the state machine.
pub struct SnapshotBuilder {
    sm: StateMachine,
}

impl SnapshotBuilder {
    /// Builds nothing, for an application that did not provide its state: openraft stops the
    /// node when building a snapshot fails, and an application that did not answer (busy,
    /// restarting, or its provider threw) must cost a snapshot, not the node. The snapshot
    /// already stored (or none) is handed back; openraft keeps what it has, as it does with
    /// any built snapshot no newer than its own, and asks again once more entries are applied.
    fn unchanged(&self, why: io::Error) -> Result<Snapshot, io::Error> {
        self.sm.events.warn_limited(
            "app-snapshot",
            "ERR_STORAGE",
            format!("no snapshot was taken: {why}; the log is kept until the next one succeeds"),
        );
        let rtxn = self.sm.store.env.read_txn().map_err(storage_err)?;
        let meta = self.sm.stored_snapshot_meta(&rtxn)?.unwrap_or_default();
        Ok(Snapshot {
            meta,
            snapshot: std::io::Cursor::new(Vec::new()),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        // The application's state must follow every entry the snapshot covers.
        self.sm.delivery.caught_up().await;
        let started = std::time::Instant::now();
        let s = &self.sm.store;
        // Only the start of the read and the request to the application hold the gate (apply
        // waits at it): the read transaction fixes the state at one applied index, and reading
        // the replicated registry out of it happens after writes resume.
        let (rtxn, request) = {
            let _gate = self.sm.app.gate();
            let rtxn = s.env.read_txn().map_err(storage_err)?;
            let index = s
                .stored_last_applied(&rtxn)?
                .map(|l| l.index())
                .unwrap_or(0);
            (rtxn, self.sm.app.request(index, &self.sm.events))
        };
        let (mut payload, ids) = self.sm.build_payload(&rtxn)?;
        let (ops_from, ops_bytes) = (ids.from(), ids.bytes());
        drop(rtxn);
        if let Some(rx) = request {
            match self.sm.app.wait(rx).await {
                Ok(app) => payload.app = app,
                Err(why) => return self.unchanged(why),
            }
        }
        let data = legacy::encode_snapshot_payload(&payload)?;
        let meta = SnapshotMeta {
            last_log_id: payload.last_applied,
            last_membership: payload.membership.clone(),
        };
        let mut wtxn = s.env.write_txn().map_err(storage_err)?;
        // openraft builds in a task of its own, and a snapshot from the leader may be installed
        // meanwhile: that one is newer, the log before it may already be gone, and a restart
        // must find it, not this one. openraft ignores a built snapshot older than its own.
        let superseded = self.sm.stored_snapshot_meta(&wtxn)?.is_some_and(|saved| {
            saved.last_log_id.is_some() && saved.last_log_id >= meta.last_log_id
        });
        if superseded {
            drop(wtxn);
        } else {
            self.sm
                .save_snapshot(&mut wtxn, &meta, &data, Some(ops_from))?;
            super::commit_durably(&s.env, wtxn)?;
            s.stats.snapshot_save.observe(started.elapsed());
            // The size it has when sent, with its ids.
            s.stats.snapshot_bytes.store(
                data.len() as u64 + ops_bytes,
                std::sync::atomic::Ordering::Relaxed,
            );
            // With the application's state inside, this snapshot can restore it: the entries
            // it covers need not be kept for delivery.
            if let (Some(_), Some(last)) = (&payload.app, &payload.last_applied) {
                self.sm.delivery.set_covered(last.index());
            }
        }
        // openraft keeps only the meta of a snapshot it had built; to send one it asks
        // `get_current_snapshot`, which puts the ids in.
        Ok(Snapshot {
            meta,
            snapshot: std::io::Cursor::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        self.read_applied()
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        // While the node starts nothing goes out (the catch-up after the start hands it over),
        // so nothing waits for JavaScript either: an application that attaches its listener after
        // the start holds what came meanwhile, and the start would wait for ever. After the
        // start, what was applied before it goes out first.
        let starting = self.delivery.starting();
        if !starting {
            self.delivery.caught_up().await;
        }
        // Applied in pieces: after falling behind, openraft hands over everything committed since
        // in one stream, and each piece waits for JavaScript to have room for its events.
        loop {
            // Gathered first: an LMDB write transaction must not be held across an await.
            let mut batch = Vec::new();
            let mut bytes = 0;
            while batch.len() < APPLY_PIECE_ENTRIES && bytes < APPLY_PIECE_BYTES {
                let Some(item) = entries.next().await else {
                    break;
                };
                let item = item?;
                if let EntryPayload::Normal(cmd) = &item.0.payload {
                    bytes += cmd.json.len();
                }
                batch.push(item);
            }
            if batch.is_empty() {
                return Ok(());
            }
            // A daemon slower than the cluster: the entries wait in the log, not as events in
            // memory (see `Backlog`).
            if !starting {
                self.events.room().await;
            }
            self.apply_piece(batch).await?;
        }
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            sm: StateMachine {
                store: self.store.clone(),
                events: self.events.clone(),
                app: self.app.clone(),
                delivery: self.delivery.clone(),
                id_window: self.id_window,
                log: self.log.clone(),
            },
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        // Handed over after the entries before it, not ahead of them.
        if !self.delivery.starting() {
            self.delivery.caught_up().await;
        }
        let started = std::time::Instant::now();
        let data = snapshot.into_inner();
        let mut payload: SnapshotPayload = legacy::decode_snapshot_payload(&data)?;
        let s = &self.store;
        let mut wtxn = s.env.write_txn().map_err(storage_err)?;
        let mut ids = Registry::open(s, &wtxn, self.id_window)?;
        // Writing a full window of ids takes a while: as in `get_current_snapshot`.
        let window = std::mem::take(&mut payload.ops);
        blocking(|| ids.replace(&mut wtxn, &window))?;
        drop(window);
        // Stored as a snapshot built here is: without its ids, which the registry's table now holds
        // and keeps while this snapshot refers to them. Stored whole, every install would add a
        // second copy of the window, megabytes that LMDB must place in one contiguous run.
        let ops_from = ids.from();
        ids.finish(&mut wtxn, Some(ops_from))?;
        s.registry.clear(&mut wtxn).map_err(storage_err)?;
        for (key, json) in &payload.registry {
            s.registry.put(&mut wtxn, key, json).map_err(storage_err)?;
        }
        let floor = meta.last_log_id.as_ref().map(|l| l.index()).unwrap_or(0);
        s.reset_history(&mut wtxn, floor)?;
        s.applied
            .put(&mut wtxn, KEY_LAST_APPLIED, &encode(&meta.last_log_id)?)
            .map_err(storage_err)?;
        s.applied
            .put(&mut wtxn, KEY_MEMBERSHIP, &encode(&meta.last_membership)?)
            .map_err(storage_err)?;
        let stored = legacy::encode_snapshot_payload(&payload)?;
        self.save_snapshot(&mut wtxn, meta, &stored, Some(ops_from))?;
        super::commit_durably(&s.env, wtxn)?;
        s.stats.snapshot_install.observe(started.elapsed());
        s.stats
            .snapshot_bytes
            .store(data.len() as u64, std::sync::atomic::Ordering::Relaxed);

        if let Some(last) = &meta.last_log_id {
            // The application is handed this snapshot instead of the entries it covers.
            self.delivery.set_covered(last.index());
            self.delivery.set_applied(last.index());
            if payload.app.is_some() {
                self.delivery.restored_to(last.index());
            }
            self.events.emit(Event::SnapshotInstalled {
                index: last.index(),
                term: last.committed_leader_id().term,
                app: payload.app,
                redelivered: false,
            });
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let started = std::time::Instant::now();
        let s = &self.store;
        let rtxn = s.env.read_txn().map_err(storage_err)?;
        let Some(meta) = self.stored_snapshot_meta(&rtxn)? else {
            return Ok(None);
        };
        let stored = s
            .snapshot
            .get(&rtxn, KEY_SNAPSHOT_DATA)
            .map_err(storage_err)?
            .ok_or_else(|| storage_err("snapshot meta present but data missing"))?;
        let data = match s.snapshot_ops_from(&rtxn)? {
            // Built here: its ids are those the registry's table holds from its window's start
            // through its index, kept there while this snapshot is the stored one. Reading and
            // encoding a full window takes tens of ms: the runtime's other tasks (heartbeats
            // among them) move to another worker meanwhile.
            Some(from) => blocking(|| -> io::Result<Vec<u8>> {
                let mut payload: SnapshotPayload = legacy::decode_snapshot_payload(stored)?;
                let through = meta.last_log_id.as_ref().map(|l| l.index()).unwrap_or(0);
                payload.ops = ops::export(s, &rtxn, from, through)?;
                legacy::encode_snapshot_payload(&payload)
            })?,
            None => stored.to_vec(),
        };
        s.stats.snapshot_read.observe(started.elapsed());
        Ok(Some(Snapshot {
            meta,
            snapshot: std::io::Cursor::new(data),
        }))
    }
}

/// What applying a batch produced, handed out once its transaction committed.
struct AppliedBatch {
    replies: Vec<(Option<ApplyResponder<TypeConfig>>, Applied)>,
    events: Vec<Event>,
    last_applied: Option<LogId>,
}

/// Writes a batch of committed entries into the state machine's tables within `wtxn`.
fn apply_batch(
    s: &Store,
    wtxn: &mut heed::RwTxn,
    id_window: IdWindow,
    batch: Vec<EntryResponder<TypeConfig>>,
) -> io::Result<AppliedBatch> {
    let mut ids = Registry::open(s, wtxn, id_window)?;
    let mut replies = Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    let mut last_applied = None;
    let mut membership = None;

    for (entry, responder) in batch {
        let log_id = entry.log_id;
        let index = log_id.index();
        let term = log_id.committed_leader_id().term;
        let mut reply = Applied {
            index,
            term,
            duplicate: false,
            condition_failed: false,
        };
        match entry.payload {
            EntryPayload::Blank => {}
            EntryPayload::Normal(cmd) => {
                let earlier = match &cmd.op_id {
                    Some(id) => {
                        ids.expire(wtxn, cmd.proposed_at_ms)?;
                        ops::find(s, wtxn, id)?
                    }
                    None => None,
                };
                match earlier {
                    Some(first) => {
                        reply = Applied {
                            index: first.index,
                            term: first.term,
                            duplicate: true,
                            condition_failed: false,
                        };
                    }
                    None => {
                        if let Some(write) = &cmd.registry {
                            reply.condition_failed =
                                !apply_registry(s, wtxn, index, write, &cmd.json)?;
                        }
                        if let Some(id) = &cmd.op_id {
                            let record = OpRecord {
                                index,
                                term,
                                proposed_at_ms: cmd.proposed_at_ms,
                            };
                            ids.remember(wtxn, id, &record)?;
                        }
                        events.push(Event::CommandApplied {
                            index,
                            term,
                            command: cmd.json,
                            op_id: cmd.op_id,
                            redelivered: false,
                        });
                    }
                }
            }
            EntryPayload::Membership(m) => {
                membership = Some(StoredMembership::new(Some(log_id), m));
            }
        }
        last_applied = Some(log_id);
        replies.push((responder, reply));
    }

    let keep_from = s.snapshot_ops_from(wtxn)?;
    ids.finish(wtxn, keep_from)?;
    if let Some(last) = &last_applied {
        s.prune_history(wtxn, last.index())?;
    }
    s.applied
        .put(wtxn, KEY_LAST_APPLIED, &encode(&last_applied)?)
        .map_err(storage_err)?;
    if let Some(m) = &membership {
        s.applied
            .put(wtxn, KEY_MEMBERSHIP, &encode(m)?)
            .map_err(storage_err)?;
    }
    Ok(AppliedBatch {
        replies,
        events,
        last_applied,
    })
}

/// Applies a command's registry writes, all or none: every condition is checked against the
/// registry as it stands before any of them. Returns false when a condition did not hold.
fn apply_registry(
    s: &Store,
    wtxn: &mut heed::RwTxn,
    index: u64,
    write: &RegistryWrite,
    command_json: &str,
) -> io::Result<bool> {
    let mut writes = Vec::new();
    let mut pending = vec![write];
    while let Some(w) = pending.pop() {
        writes.push(w);
        pending.extend(w.also.iter().rev());
    }
    for w in &writes {
        if !crate::registry_write::valid_key(&w.key) {
            return Ok(false);
        }
        if let Some(condition) = &w.condition {
            let current = s.registry.get(wtxn, &w.key).map_err(storage_err)?;
            if !condition.holds(current) {
                return Ok(false);
            }
        }
    }
    for (seq, w) in writes.iter().enumerate() {
        let value = if w.delete {
            s.registry.delete(wtxn, &w.key).map_err(storage_err)?;
            None
        } else {
            let json = w.value.as_deref().unwrap_or(command_json);
            s.registry.put(wtxn, &w.key, json).map_err(storage_err)?;
            Some(json)
        };
        let seq = u32::try_from(seq).map_err(|_| storage_err("too many writes in one entry"))?;
        s.record_change(wtxn, index, seq, &w.key, value)?;
    }
    Ok(true)
}

impl Store {
    /// The first log index of the stored snapshot's id window, when the snapshot was built here
    /// and its ids stay in the registry's table.
    fn snapshot_ops_from(&self, rtxn: &RoTxn<WithoutTls>) -> io::Result<Option<u64>> {
        match self
            .snapshot
            .get(rtxn, KEY_SNAPSHOT_OPS_FROM)
            .map_err(storage_err)?
        {
            Some(bytes) => super::decode_index(bytes, "the snapshot's ops_from").map(Some),
            None => Ok(None),
        }
    }
}
