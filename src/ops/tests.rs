//! The registry's window: TTL expiry and count/byte eviction in log order, and what a replica
//! decides about a retry inside and outside the window.

use std::sync::Arc;

use futures_util::stream;
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use openraft::EntryPayload;
use openraft::RaftSnapshotBuilder;

use super::{entry_bytes, find, IdWindow, OpRecord, Registry};
use crate::events::{Event, EventSink};
use crate::storage::{AppSnapshots, Delivery, LogStore, StateMachine, Store};
use crate::types::{Command, Entry, TypeConfig};

fn open() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 64 << 20).expect("open");
    (dir, store)
}

fn window(max_ids: u64, max_bytes: u64, ttl_ms: u64) -> IdWindow {
    IdWindow {
        ttl_ms,
        max_ids,
        max_bytes,
    }
}

fn record(index: u64, proposed_at_ms: u64) -> OpRecord {
    OpRecord {
        index,
        term: 1,
        proposed_at_ms,
    }
}

/// Runs `change` on the registry in a write transaction of its own, which it then commits.
fn in_txn(
    store: &Store,
    w: &IdWindow,
    keep_from: Option<u64>,
    change: impl FnOnce(&mut Registry, &mut heed::RwTxn),
) {
    let mut wtxn = store.env.write_txn().expect("txn");
    let mut ids = Registry::open(store, &wtxn, *w).expect("open");
    change(&mut ids, &mut wtxn);
    ids.finish(&mut wtxn, keep_from).expect("finish");
    wtxn.commit().expect("commit");
}

/// Remembers `(id, index, proposed_at_ms)` in order, one write transaction each.
fn remember_all(store: &Store, w: &IdWindow, ids: &[(&str, u64, u64)]) {
    for (id, index, at) in ids {
        in_txn(store, w, None, |r, wtxn| {
            r.remember(wtxn, id, &record(*index, *at))
                .expect("remember")
        });
    }
}

fn remembered(store: &Store) -> Vec<String> {
    let rtxn = store.env.read_txn().expect("txn");
    super::remembered(store, &rtxn)
        .expect("remembered")
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// How many ids the registry's table holds on disk, remembered or not.
fn stored_ids(store: &Store) -> u64 {
    let rtxn = store.env.read_txn().expect("txn");
    store.ops_log.len(&rtxn).expect("len")
}

#[test]
fn the_count_bound_forgets_the_oldest_ids_in_log_order() {
    let (_dir, store) = open();
    let w = window(3, u64::MAX, u64::MAX);
    // Ids whose names sort against their log order: eviction must follow the log, not the name.
    remember_all(
        &store,
        &w,
        &[
            ("e", 1, 10),
            ("d", 2, 10),
            ("c", 3, 10),
            ("b", 4, 10),
            ("a", 5, 10),
        ],
    );
    assert_eq!(remembered(&store), vec!["c", "b", "a"]);
    let rtxn = store.env.read_txn().expect("txn");
    assert_eq!(find(&store, &rtxn, "e").expect("find"), None);
    assert_eq!(find(&store, &rtxn, "c").expect("find"), Some(record(3, 10)));
}

#[test]
fn the_byte_bound_forgets_the_oldest_ids_and_keeps_the_newest() {
    let (_dir, store) = open();
    let long = "x".repeat(100);
    // Room for two short ids, or for the long one alone.
    let w = window(1000, 2 * entry_bytes("s1"), u64::MAX);
    remember_all(&store, &w, &[("s1", 1, 0), ("s2", 2, 0), ("s3", 3, 0)]);
    assert_eq!(remembered(&store), vec!["s2", "s3"]);
    remember_all(&store, &w, &[(&long, 4, 0)]);
    assert_eq!(
        remembered(&store),
        vec![long.clone()],
        "an id larger than the byte bound is still remembered, alone"
    );
    remember_all(&store, &w, &[("s4", 5, 0)]);
    assert_eq!(remembered(&store), vec!["s4"]);
}

#[test]
fn ttl_expiry_walks_the_log_order_and_stops_at_the_first_live_id() {
    let (_dir, store) = open();
    let w = window(1000, u64::MAX, 1000);
    // "late" was proposed by a leader whose clock ran behind: it follows "b" in the log.
    remember_all(
        &store,
        &w,
        &[
            ("a", 1, 100),
            ("b", 2, 1500),
            ("late", 3, 200),
            ("c", 4, 2000),
        ],
    );
    in_txn(&store, &w, None, |r, wtxn| {
        r.expire(wtxn, 2400).expect("expire")
    });
    assert_eq!(
        remembered(&store),
        vec!["b", "late", "c"],
        "a (100 < 1400) expired; b (1500) is live, so the walk stops there"
    );
    in_txn(&store, &w, None, |r, wtxn| {
        r.expire(wtxn, 2600).expect("expire")
    });
    assert_eq!(remembered(&store), vec!["c"]);
}

#[test]
fn a_snapshot_restores_the_window_in_log_order_within_this_node_bounds() {
    let (_dir, store) = open();
    let ids: Vec<(String, OpRecord)> = (1..=5).map(|i| (format!("op-{i}"), record(i, 0))).collect();
    in_txn(&store, &window(3, u64::MAX, u64::MAX), None, |r, wtxn| {
        r.replace(wtxn, &ids).expect("replace")
    });
    assert_eq!(remembered(&store), vec!["op-3", "op-4", "op-5"]);
    // The byte count follows: two more ids push out exactly two.
    remember_all(
        &store,
        &window(3, 3 * entry_bytes("op-1"), u64::MAX),
        &[("op-6", 6, 0), ("op-7", 7, 0)],
    );
    assert_eq!(remembered(&store), vec!["op-5", "op-6", "op-7"]);
}

fn command(index: u64, id: &str, proposed_at_ms: u64) -> Entry {
    Entry::new(
        log_id::<TypeConfig>(1, "n".into(), index),
        EntryPayload::Normal(Command {
            json: format!(r#"{{"type":"t","n":{index}}}"#),
            op_id: Some(id.to_string()),
            proposed_at_ms,
            registry: None,
        }),
    )
}

/// Applies `entries` in batches of `batch` and returns the indexes that took effect (emitted
/// `command_applied`), and the ids remembered at the end.
async fn apply_in_batches(entries: &[Entry], batch: usize, w: IdWindow) -> (Vec<u64>, Vec<String>) {
    let (_dir, store) = open();
    let (events, mut rx) = EventSink::new();
    // The entries go straight to the state machine: the log holds none of them back.
    let log = LogStore::new(store.clone(), Delivery::none()).expect("log writer");
    let mut sm = StateMachine::new(
        store.clone(),
        events,
        Arc::new(AppSnapshots::new(std::time::Duration::from_secs(1))),
        Delivery::none(),
        w,
        log.apply_queue(),
    );
    for chunk in entries.chunks(batch) {
        sm.apply(stream::iter(chunk.iter().cloned().map(|e| Ok((e, None)))))
            .await
            .expect("apply");
    }
    let mut applied = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let Event::CommandApplied { index, .. } = e {
            applied.push(index);
        }
    }
    (applied, remembered(&store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_inside_the_window_is_a_duplicate_and_one_outside_takes_effect_again() {
    let entries = vec![
        command(1, "a", 1000),
        command(2, "b", 1000),
        command(3, "c", 1000),
        command(4, "c", 1000), // retry inside the window: no effect
        command(5, "a", 1000), // "a" was pushed out by b and c: takes effect again
        command(6, "b", 1000), // "b" was pushed out by c and the new a
        command(7, "d", 9000), // later than the TTL after everything before it
        command(8, "a", 9000), // its record from 5 expired: takes effect again
    ];
    let w = window(2, u64::MAX, 5000);
    let (applied, ids) = apply_in_batches(&entries, 1, w).await;
    assert_eq!(applied, vec![1, 2, 3, 5, 6, 7, 8]);
    assert_eq!(ids, vec!["d", "a"]);
    // Every replica decides the same whatever its batches.
    for batch in [2, 3, entries.len()] {
        assert_eq!(
            apply_in_batches(&entries, batch, w).await,
            (applied.clone(), ids.clone()),
            "batches of {batch}"
        );
    }
}

#[test]
fn forgotten_ids_stay_on_disk_only_while_the_stored_snapshot_refers_to_them() {
    let (_dir, store) = open();
    let w = window(2, u64::MAX, u64::MAX);
    for (id, index) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
        in_txn(&store, &w, Some(1), |r, wtxn| {
            r.remember(wtxn, id, &record(index, 0)).expect("remember")
        });
    }
    assert_eq!(remembered(&store), vec!["c", "d"]);
    assert_eq!(
        stored_ids(&store),
        4,
        "a snapshot from index 1 still refers to a and b"
    );
    let rtxn = store.env.read_txn().expect("txn");
    assert_eq!(
        find(&store, &rtxn, "a").expect("find"),
        None,
        "kept, but forgotten"
    );
    drop(rtxn);
    in_txn(&store, &w, Some(2), |_, _| {});
    assert_eq!(stored_ids(&store), 3);
    in_txn(&store, &w, None, |_, _| {});
    assert_eq!(stored_ids(&store), 2);
    assert_eq!(remembered(&store), vec!["c", "d"]);
}

#[test]
fn ids_that_share_a_hash_are_each_found() {
    let (_dir, store) = open();
    let w = window(10, u64::MAX, u64::MAX);
    remember_all(&store, &w, &[("x", 1, 0), ("y", 2, 0), ("z", 3, 0)]);
    // Force a shared hash: "y" and "z" filed under the hash of "x".
    {
        let mut index = store.ids.lock().expect("index");
        index.clear();
        let hash = std::hash::BuildHasher::hash_one(&index.hasher, "x");
        index.by_hash.insert(hash, 1);
        index.collided.insert("y".into(), 2);
        index.collided.insert("z".into(), 3);
    }
    let rtxn = store.env.read_txn().expect("txn");
    for (id, at) in [("y", 2), ("z", 3)] {
        assert_eq!(find(&store, &rtxn, id).expect("find"), Some(record(at, 0)));
    }
    drop(rtxn);
    // Forgetting "x" leaves the others found.
    remember_all(&store, &window(2, u64::MAX, u64::MAX), &[("w", 4, 0)]);
    let rtxn = store.env.read_txn().expect("txn");
    assert_eq!(find(&store, &rtxn, "x").expect("find"), None);
    assert_eq!(find(&store, &rtxn, "z").expect("find"), Some(record(3, 0)));
}

/// A state machine on a fresh directory, and what it emits.
fn state_machine(
    w: IdWindow,
) -> (
    tempfile::TempDir,
    Arc<Store>,
    StateMachine,
    tokio::sync::mpsc::UnboundedReceiver<Event>,
) {
    let (dir, store) = open();
    let (events, rx) = EventSink::new();
    let log = LogStore::new(store.clone(), Delivery::none()).expect("log writer");
    let sm = StateMachine::new(
        store.clone(),
        events,
        Arc::new(AppSnapshots::new(std::time::Duration::from_secs(1))),
        Delivery::none(),
        w,
        log.apply_queue(),
    );
    (dir, store, sm, rx)
}

async fn apply(sm: &mut StateMachine, entries: &[Entry]) {
    sm.apply(stream::iter(entries.iter().cloned().map(|e| Ok((e, None)))))
        .await
        .expect("apply");
}

fn applied_indexes(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) -> Vec<u64> {
    let mut applied = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let Event::CommandApplied { index, .. } = e {
            applied.push(index);
        }
    }
    applied
}

/// A fresh state machine given `from`'s current snapshot, as a node that fell behind gets it (the
/// install's events drained); the snapshot's meta beside it.
async fn install_current_snapshot(
    from: &mut StateMachine,
    w: IdWindow,
) -> (
    crate::types::SnapshotMeta,
    (
        tempfile::TempDir,
        Arc<Store>,
        StateMachine,
        tokio::sync::mpsc::UnboundedReceiver<Event>,
    ),
) {
    let sent = from
        .get_current_snapshot()
        .await
        .expect("read")
        .expect("a snapshot");
    let meta = sent.meta.clone();
    let (dir, store, mut sm, mut rx) = state_machine(w);
    sm.install_snapshot(&sent.meta, sent.snapshot)
        .await
        .expect("install");
    applied_indexes(&mut rx);
    (meta, (dir, store, sm, rx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_sent_later_carries_the_ids_of_its_own_index() {
    let w = window(3, u64::MAX, u64::MAX);
    let (_d1, store, mut leader, mut leader_rx) = state_machine(w);
    apply(
        &mut leader,
        &[command(1, "a", 0), command(2, "b", 0), command(3, "c", 0)],
    )
    .await;
    let built = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    // After the snapshot: a retry of "a" (a duplicate: the window still holds it), then two new
    // ids that push "a" and "b" out before the snapshot is sent.
    let after = [command(4, "a", 0), command(5, "d", 0), command(6, "e", 0)];
    apply(&mut leader, &after).await;
    applied_indexes(&mut leader_rx);
    assert_eq!(
        stored_ids(&store),
        5,
        "a snapshot refers to a and b, forgotten since"
    );

    let (sent, (_d2, follower_store, mut follower, mut follower_rx)) =
        install_current_snapshot(&mut leader, w).await;
    assert_eq!(sent, built.meta);
    assert_eq!(
        remembered(&follower_store),
        vec!["a", "b", "c"],
        "the window as of index 3"
    );
    apply(&mut follower, &after).await;
    assert_eq!(
        applied_indexes(&mut follower_rx),
        vec![5, 6],
        "the retry of a is a duplicate here too"
    );
    assert_eq!(remembered(&follower_store), remembered(&store));
    // The follower stored the snapshot without its ids: they stay in its registry's table, a and b
    // past their eviction, and the snapshot it would send on is the one it got.
    assert_eq!(
        stored_ids(&follower_store),
        5,
        "the installed snapshot refers to a and b, forgotten since"
    );
    let (passed_on, (_d3, third_store, _third, _)) =
        install_current_snapshot(&mut follower, w).await;
    assert_eq!(passed_on, built.meta);
    assert_eq!(remembered(&third_store), vec!["a", "b", "c"]);

    // A newer snapshot (its window: c, d, e) lets a and b go; c, forgotten by the next id,
    // stays for it.
    leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    apply(&mut leader, &[command(7, "f", 0)]).await;
    assert_eq!(remembered(&store), vec!["d", "e", "f"]);
    assert_eq!(stored_ids(&store), 4);
}
