//! Format versions on real LMDB directories: a new one is marked, a format 1 one is migrated in
//! place, a newer one is refused by the node and the offline tools alike.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::entry::RaftEntry;
use openraft::Membership;

use super::super::legacy::write_v1;
use super::{FORMAT_VERSION, KEY_FORMAT_VERSION};
use crate::storage::{
    decode, open_existing, OpRecord, OpenError, Store, KEY_COMMITTED, KEY_LAST_APPLIED,
    KEY_MEMBERSHIP, KEY_PURGED, KEY_SNAPSHOT_DATA, KEY_SNAPSHOT_META, KEY_VOTE,
};
use crate::types::{
    Command, Entry, LogId, NodeName, PeerAddr, RegistryWrite, SnapshotMeta, StoredMembership, Vote,
};

const MAP: usize = 64 << 20;

fn stored_version(store: &Store) -> Option<u32> {
    let rtxn = store.env.read_txn().expect("txn");
    store
        .raft
        .get(&rtxn, KEY_FORMAT_VERSION)
        .expect("get")
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
}

fn membership() -> Membership<NodeName, PeerAddr> {
    let ids = ["n1", "n2", "n3"].map(NodeName::from);
    let nodes: BTreeMap<_, _> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                id.clone(),
                PeerAddr {
                    host: "127.0.0.1".into(),
                    port: 7001 + i as u16,
                },
            )
        })
        .collect();
    Membership::new(vec![ids.into_iter().collect::<BTreeSet<_>>()], nodes).expect("membership")
}

/// What the first releases left in a directory: every kind of record, bincode 1 of openraft's
/// serde forms, no format version.
fn write_format_1(dir: &Path) -> (Vec<Entry>, Vote, StoredMembership) {
    let store = Store::open(dir, MAP).expect("open");
    let first = <Entry as RaftEntry>::new_membership(LogId::new_term_index(1, 1), membership());
    let mut entries = vec![first];
    for i in 2..=4u64 {
        let cmd = Command {
            json: format!(r#"{{"n":{i}}}"#),
            op_id: Some(format!("op-{i}")),
            proposed_at_ms: 1000 + i,
            registry: Some(RegistryWrite::plain(format!("node/n{i}"), false)),
        };
        entries.push(<Entry as RaftEntry>::new_normal(
            LogId::new_term_index(2, i),
            cmd,
        ));
    }
    let vote = Vote::new_committed(2, NodeName::from("n1"));
    let last = Some(LogId::new_term_index(2, 4));
    let stored = StoredMembership::new(Some(LogId::new_term_index(1, 1)), membership());
    let mut wtxn = store.env.write_txn().expect("txn");
    store.raft.clear(&mut wtxn).expect("clear");
    for e in &entries {
        store
            .log
            .put(&mut wtxn, &e.log_id.index, &write_v1(e))
            .expect("put");
    }
    store
        .raft
        .put(&mut wtxn, KEY_VOTE, &write_v1(&vote))
        .expect("put");
    store
        .raft
        .put(
            &mut wtxn,
            KEY_PURGED,
            &write_v1(&LogId::new_term_index(1, 1)),
        )
        .expect("put");
    store
        .raft
        .put(&mut wtxn, KEY_COMMITTED, &write_v1(&last))
        .expect("put");
    store
        .applied
        .put(&mut wtxn, KEY_LAST_APPLIED, &write_v1(&last))
        .expect("put");
    store
        .applied
        .put(&mut wtxn, KEY_MEMBERSHIP, &write_v1(&stored))
        .expect("put");
    #[derive(serde::Serialize)]
    struct MetaV1<'a> {
        last_log_id: Option<LogId>,
        last_membership: &'a StoredMembership,
    }
    let meta = MetaV1 {
        last_log_id: Some(LogId::new_term_index(1, 1)),
        last_membership: &stored,
    };
    store
        .snapshot
        .put(&mut wtxn, KEY_SNAPSHOT_META, &write_v1(&meta))
        .expect("put");
    store
        .snapshot
        .put(
            &mut wtxn,
            KEY_SNAPSHOT_DATA,
            b"payload bytes stay as they are",
        )
        .expect("put");
    for i in 2..=4u64 {
        let op = OpRecord {
            index: i,
            term: 2,
            proposed_at_ms: 1000 + i,
        };
        store
            .legacy_ops
            .put(&mut wtxn, &format!("op-{i}"), &write_v1(&op))
            .expect("put");
        let mut key = [0u8; 12];
        key[..8].copy_from_slice(&i.to_be_bytes());
        store
            .changes
            .put(
                &mut wtxn,
                &key,
                &write_v1(&(format!("node/n{i}"), Some(format!(r#"{{"n":{i}}}"#)))),
            )
            .expect("put");
    }
    wtxn.commit().expect("commit");
    (entries, vote, stored)
}

#[test]
fn a_new_directory_records_the_current_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), MAP).expect("open");
    assert_eq!(stored_version(&store), Some(FORMAT_VERSION));
}

#[test]
fn a_format_1_directory_is_migrated_in_place_and_reads_back_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (entries, vote, stored) = write_format_1(dir.path());

    let store = Store::open(dir.path(), MAP).expect("open migrates");
    assert_eq!(stored_version(&store), Some(FORMAT_VERSION));
    let rtxn = store.env.read_txn().expect("txn");
    for e in &entries {
        let bytes = store.log.get(&rtxn, &e.log_id.index).expect("get");
        let back: Entry = decode(bytes.expect("entry kept")).expect("new format");
        assert_eq!(&back, e);
    }
    let raft = |key| store.raft.get(&rtxn, key).expect("get").expect("present");
    assert_eq!(decode::<Vote>(raft(KEY_VOTE)).expect("vote"), vote);
    assert_eq!(
        decode::<LogId>(raft(KEY_PURGED)).expect("purged"),
        LogId::new_term_index(1, 1)
    );
    let applied = |key| {
        store
            .applied
            .get(&rtxn, key)
            .expect("get")
            .expect("present")
    };
    assert_eq!(
        decode::<StoredMembership>(applied(KEY_MEMBERSHIP)).expect("membership"),
        stored
    );
    assert_eq!(
        store.stored_last_applied(&rtxn).expect("last applied"),
        Some(LogId::new_term_index(2, 4))
    );
    let meta_bytes = store
        .snapshot
        .get(&rtxn, KEY_SNAPSHOT_META)
        .expect("get")
        .expect("meta");
    let meta: SnapshotMeta = decode(meta_bytes).expect("meta");
    assert_eq!(meta.last_membership, stored);
    assert_eq!(
        crate::storage::state_machine::StateMachine::find_op(&store, "op-3").expect("op"),
        Some(OpRecord {
            index: 3,
            term: 2,
            proposed_at_ms: 1003
        })
    );
    drop(rtxn);
    let changes = store.registry_changes("node/", 0, 10, 10).expect("changes");
    assert_eq!(changes.changes.len(), 3);
    assert_eq!(changes.changes[0].key, "node/n2");
    drop(store);

    // A second open finds the current format and leaves the records alone.
    let again = Store::open(dir.path(), MAP).expect("reopen");
    assert_eq!(stored_version(&again), Some(FORMAT_VERSION));
}

#[test]
fn the_offline_tools_migrate_a_format_1_directory_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_format_1(dir.path());
    let store = open_existing(dir.path(), MAP).expect("offline open");
    let mut out = Vec::new();
    let counts = store.export_ndjson(&mut out).expect("export");
    assert_eq!((counts.entries, counts.operations), (4, 3));
}

#[test]
fn a_newer_format_is_refused_saying_what_was_found_and_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), MAP).expect("open");
    let mut wtxn = store.env.write_txn().expect("txn");
    store
        .raft
        .put(
            &mut wtxn,
            KEY_FORMAT_VERSION,
            &(FORMAT_VERSION + 1).to_be_bytes(),
        )
        .expect("put");
    store
        .raft
        .put(&mut wtxn, KEY_VOTE, b"a vote of the future")
        .expect("put");
    wtxn.commit().expect("commit");
    drop(store);

    let Err(OpenError::Io(e)) = Store::open(dir.path(), MAP) else {
        panic!("a newer format must be refused");
    };
    let message = e.to_string();
    let newer = FORMAT_VERSION + 1;
    assert!(
        message.contains(&format!("storage format {newer}")),
        "{message}"
    );
    assert!(
        message.contains(&format!("formats 1 to {FORMAT_VERSION}")),
        "{message}"
    );
    assert!(message.contains("restore a backup"), "{message}");
    let Err(offline) = open_existing(dir.path(), MAP) else {
        panic!("the offline tools must refuse a newer format too");
    };
    assert_eq!(offline.code, "ERR_STORAGE");
    assert!(offline.message.contains(&format!("storage format {newer}")));
}

#[test]
fn a_format_2_registry_keyed_by_id_moves_into_log_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = |index| OpRecord {
        index,
        term: 1,
        proposed_at_ms: 0,
    };
    {
        let store = Store::open(dir.path(), MAP).expect("open");
        // As format 2 left it: ids with their records, keyed by id.
        let mut wtxn = store.env.write_txn().expect("txn");
        for (id, index) in [("zeta", 1u64), ("alpha", 3), ("mid", 2)] {
            let bytes = crate::storage::encode(&record(index)).expect("encode");
            store.legacy_ops.put(&mut wtxn, id, &bytes).expect("put");
        }
        store
            .raft
            .put(&mut wtxn, KEY_FORMAT_VERSION, &2u32.to_be_bytes())
            .expect("put");
        wtxn.commit().expect("commit");
    }
    let store = Store::open(dir.path(), MAP).expect("reopen migrates");
    assert_eq!(stored_version(&store), Some(FORMAT_VERSION));
    let ids = |store: &Store| -> Vec<String> {
        let rtxn = store.env.read_txn().expect("txn");
        crate::ops::remembered(store, &rtxn)
            .expect("remembered")
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    };
    assert_eq!(ids(&store), vec!["zeta", "mid", "alpha"]);
    let rtxn = store.env.read_txn().expect("txn");
    assert_eq!(
        crate::ops::find(&store, &rtxn, "mid").expect("find"),
        Some(record(2))
    );
    assert_eq!(store.legacy_ops.len(&rtxn).expect("len"), 0);
    drop(rtxn);
    // The byte count was rebuilt too: a window of three ids' bytes takes one more by evicting one.
    let entry = crate::ops::entry_bytes;
    let window = crate::ops::IdWindow {
        ttl_ms: u64::MAX,
        max_ids: 1000,
        max_bytes: entry("zeta") + entry("mid") + entry("alpha"),
    };
    let mut wtxn = store.env.write_txn().expect("txn");
    let mut registry = crate::ops::Registry::open(&store, &wtxn, window).expect("registry");
    registry
        .remember(&mut wtxn, "new", &record(4))
        .expect("remember");
    registry.finish(&mut wtxn, None).expect("finish");
    wtxn.commit().expect("commit");
    assert_eq!(ids(&store), vec!["mid", "alpha", "new"]);
}
