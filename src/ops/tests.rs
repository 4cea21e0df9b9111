//! The registry's window: TTL expiry and count/byte eviction in log order, and what a replica
//! decides about a retry inside and outside the window.

use std::sync::Arc;

use futures_util::stream;
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use openraft::EntryPayload;

use super::{entry_bytes, expire, export, find, remember, replace, IdWindow, OpRecord};
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

/// Remembers `(id, index, proposed_at_ms)` in order, one write transaction each.
fn remember_all(store: &Store, w: &IdWindow, ids: &[(&str, u64, u64)]) {
    for (id, index, at) in ids {
        let mut wtxn = store.env.write_txn().expect("txn");
        remember(store, &mut wtxn, w, id, &record(*index, *at)).expect("remember");
        wtxn.commit().expect("commit");
    }
}

fn remembered(store: &Store) -> Vec<String> {
    let rtxn = store.env.read_txn().expect("txn");
    export(store, &rtxn)
        .expect("export")
        .into_iter()
        .map(|(id, _)| id)
        .collect()
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
    let mut wtxn = store.env.write_txn().expect("txn");
    expire(&store, &mut wtxn, &w, 2400).expect("expire");
    wtxn.commit().expect("commit");
    assert_eq!(
        remembered(&store),
        vec!["b", "late", "c"],
        "a (100 < 1400) expired; b (1500) is live, so the walk stops there"
    );
    let mut wtxn = store.env.write_txn().expect("txn");
    expire(&store, &mut wtxn, &w, 2600).expect("expire");
    wtxn.commit().expect("commit");
    assert_eq!(remembered(&store), vec!["c"]);
}

#[test]
fn a_snapshot_restores_the_window_in_log_order_within_this_node_bounds() {
    let (_dir, store) = open();
    let ids: Vec<(String, OpRecord)> = (1..=5).map(|i| (format!("op-{i}"), record(i, 0))).collect();
    let mut wtxn = store.env.write_txn().expect("txn");
    replace(&store, &mut wtxn, &window(3, u64::MAX, u64::MAX), &ids).expect("replace");
    wtxn.commit().expect("commit");
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
        log.durability(),
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
fn a_registry_written_without_log_order_is_reindexed_when_opened() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path(), 64 << 20).expect("open");
        // As an earlier version left it: ids with their records, nothing in log order.
        let mut wtxn = store.env.write_txn().expect("txn");
        for (id, index) in [("zeta", 1u64), ("alpha", 3), ("mid", 2)] {
            let bytes = crate::storage::encode(&record(index, 0)).expect("encode");
            store.ops.put(&mut wtxn, id, &bytes).expect("put");
        }
        wtxn.commit().expect("commit");
    }
    let store = Store::open(dir.path(), 64 << 20).expect("reopen");
    assert_eq!(remembered(&store), vec!["zeta", "mid", "alpha"]);
    // The byte count was rebuilt too: a window of three ids' bytes takes one more by evicting one.
    let w = window(
        1000,
        entry_bytes("zeta") + entry_bytes("mid") + entry_bytes("alpha"),
        u64::MAX,
    );
    remember_all(&store, &w, &[("new", 4, 0)]);
    assert_eq!(remembered(&store), vec!["mid", "alpha", "new"]);
}
