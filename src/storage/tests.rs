//! openraft's own storage test suite against our LMDB store, plus crash-restart checks.

use std::sync::Arc;

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};

use super::{AppSnapshots, Delivery, LogStore, StateMachine, Store};
use crate::events::EventSink;
use crate::types::TypeConfig;

struct LmdbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for LmdbBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let io_err = |e: std::io::Error| {
            StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Read, e)
        };
        let dir = tempfile::tempdir().map_err(io_err)?;
        let store = Store::open(dir.path(), 64 << 20)
            .map_err(|e| io_err(std::io::Error::other(e.to_string())))?;
        let (events, _rx) = EventSink::new();
        let log = LogStore::new(store.clone(), Delivery::none()).map_err(io_err)?;
        let applies = log.apply_queue();
        Ok((
            dir,
            log,
            StateMachine::new(
                store,
                events,
                Arc::new(AppSnapshots::new(std::time::Duration::from_secs(1))),
                Delivery::none(),
                crate::ops::IdWindow::default(),
                applies,
            ),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(LmdbBuilder).await
}

#[test]
fn a_data_directory_opens_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Store::open(dir.path(), 1 << 20).expect("first open");
    assert!(matches!(
        Store::open(dir.path(), 1 << 20),
        Err(super::OpenError::Locked(_))
    ));
    drop(first);
    let again: Arc<Store> = Store::open(dir.path(), 1 << 20).expect("reopen after close");
    assert!(!again.has_raft_state().expect("read"));
}

mod delivery {
    use std::sync::Arc;

    use futures_util::stream;
    use openraft::entry::RaftEntry;
    use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
    use openraft::testing::log_id;
    use openraft::{EntryPayload, RaftLogReader, RaftSnapshotBuilder};

    use super::super::{AppSnapshots, Delivery, LogStore, ResumeFrom, StateMachine, Store};
    use crate::events::{Event, EventSink};
    use crate::types::{Command, Entry, TypeConfig};

    fn command(index: u64) -> Entry {
        Entry::new(
            log_id::<TypeConfig>(1, "n".into(), index),
            EntryPayload::Normal(Command {
                json: format!(r#"{{"type":"t","n":{index}}}"#),
                op_id: Some(format!("op-{index}")),
                proposed_at_ms: 1,
                registry: None,
            }),
        )
    }

    struct Node {
        store: Arc<Store>,
        delivery: Arc<Delivery>,
        log: LogStore,
        sm: StateMachine,
    }

    fn open(dir: &std::path::Path) -> Node {
        let (events, _rx) = EventSink::new();
        open_with(
            dir,
            events,
            Arc::new(AppSnapshots::new(std::time::Duration::from_secs(1))),
        )
    }

    fn open_with(dir: &std::path::Path, events: EventSink, app: Arc<AppSnapshots>) -> Node {
        open_in_boot(dir, events, app, "this-boot")
    }

    /// A node opened as if the kernel's boot id were `boot`.
    fn open_in_boot(
        dir: &std::path::Path,
        events: EventSink,
        app: Arc<AppSnapshots>,
        boot: &str,
    ) -> Node {
        let store = Store::open_in_boot(dir, 64 << 20, Some(boot)).expect("open");
        let delivery = Delivery::retaining();
        let log = LogStore::new(store.clone(), delivery.clone()).expect("log writer");
        let applies = log.apply_queue();
        Node {
            log,
            sm: StateMachine::new(
                store.clone(),
                events,
                app,
                delivery.clone(),
                crate::ops::IdWindow {
                    ttl_ms: u64::MAX,
                    ..Default::default()
                },
                applies,
            ),
            store,
            delivery,
        }
    }

    /// The start-up hand-over: what the start finds, then the catch-up after it.
    async fn replay(node: &Node, from: ResumeFrom) -> (super::super::Replayed, Vec<(u64, bool)>) {
        let (events, mut rx) = EventSink::new();
        let replayed = start(node, from, &events).await;
        (replayed, applied_events(&mut rx))
    }

    /// A node's start as the engine runs it: where delivery resumes, Raft running, the catch-up
    /// done, its events on `events`.
    async fn start(node: &Node, from: ResumeFrom, events: &EventSink) -> super::super::Replayed {
        node.delivery.begin_start();
        let replayed = node
            .store
            .replay_undelivered(from, &node.delivery, events)
            .expect("replay");
        node.delivery.started();
        let (_stop, stop_rx) = tokio::sync::watch::channel(false);
        super::super::catch_up(
            node.store.clone(),
            node.delivery.clone(),
            events.clone(),
            replayed.clone(),
            stop_rx,
        )
        .await;
        replayed
    }

    /// The directory as a power loss leaves it after the commit that applied 8-10 was undone (see
    /// the storage module's notes): the log through 10, the state machine through 7, the boot id
    /// of the run that applied them, and the delivery cursor at `cursor`. Their events went out.
    async fn power_loss_undoing_8_to_10(dir: &std::path::Path, boot: &str, cursor: Option<u64>) {
        let before_loss = dir.join("as-the-disk-kept-it.mdb");
        {
            let (events, _rx) = EventSink::new();
            let app = Arc::new(AppSnapshots::new(std::time::Duration::from_secs(1)));
            let mut node = open_in_boot(dir, events, app, boot);
            let entries: Vec<Entry> = (1..=10).map(command).collect();
            node.log
                .append(entries.clone(), IOFlushed::noop())
                .await
                .expect("append");
            node.sm
                .apply(stream::iter(
                    entries[..7].iter().cloned().map(|e| Ok((e, None))),
                ))
                .await
                .expect("apply 1-7");
            if let Some(cursor) = cursor {
                node.delivery.ack(cursor);
                node.delivery.persist(&node.store).expect("cursor");
            }
            node.store.copy_to(&before_loss).expect("copy");
            node.sm
                .apply(stream::iter(
                    entries[7..].iter().cloned().map(|e| Ok((e, None))),
                ))
                .await
                .expect("apply 8-10");
        }
        std::fs::rename(&before_loss, dir.join("data.mdb")).expect("power loss");
    }

    /// Applies entries `first..=last`, already in the log, again (as openraft does after a start
    /// when the state machine is behind).
    async fn apply_again(node: &mut Node, first: u64, last: u64) {
        let entries: Vec<Entry> = (first..=last).map(command).collect();
        node.sm
            .apply(stream::iter(entries.into_iter().map(|e| Ok((e, None)))))
            .await
            .expect("apply again");
    }

    /// `(index, redelivered)` of each `command_applied` queued so far.
    fn applied_events(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) -> Vec<(u64, bool)> {
        let mut seen = Vec::new();
        while let Ok(e) = rx.try_recv() {
            if let Event::CommandApplied {
                index, redelivered, ..
            } = e
            {
                seen.push((index, redelivered));
            }
        }
        seen
    }

    /// Applies entries `1..=last` to a fresh node's log and state machine.
    async fn apply_through(node: &mut Node, last: u64) {
        apply_range(node, 1, last).await;
    }

    /// Applies entries `first..=last` to a node's log and state machine.
    async fn apply_range(node: &mut Node, first: u64, last: u64) {
        let entries: Vec<Entry> = (first..=last).map(command).collect();
        node.log
            .append(entries.clone(), IOFlushed::noop())
            .await
            .expect("append");
        node.sm
            .apply(stream::iter(entries.into_iter().map(|e| Ok((e, None)))))
            .await
            .expect("apply");
    }

    /// The next snapshot request the state machine sent the application: `(id, index)`.
    async fn next_snapshot_request(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
    ) -> (u64, u64) {
        loop {
            if let Event::SnapshotRequest { id, index } = rx.recv().await.expect("events") {
                return (id, index);
            }
        }
    }

    /// A crash between apply and delivery loses nothing: what the cursor does not cover comes
    /// back, marked redelivered, even when openraft purged it meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn purge_keeps_undelivered_entries_and_restart_redelivers_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut node = open(dir.path());
            apply_through(&mut node, 10).await;
            assert_eq!(node.delivery.applied(), Some(10));
            node.delivery.ack(4);
            node.delivery.persist(&node.store).expect("cursor");
            node.log
                .purge(log_id::<TypeConfig>(1, "n".into(), 8))
                .await
                .expect("purge");
            let visible = node.log.try_get_log_entries(0..=10).await.expect("read");
            assert_eq!(
                visible.iter().map(|e| e.log_id.index()).collect::<Vec<_>>(),
                vec![9, 10],
                "openraft sees nothing it purged"
            );
            // kill -9: nothing more is written.
        }
        let node = open(dir.path());
        let (replayed, seen) = replay(&node, ResumeFrom::Cursor).await;
        assert_eq!(replayed.resumed_after, Some(4));
        assert_eq!(replayed.missing, None);
        assert_eq!(
            seen,
            (5..=10).map(|i| (i, true)).collect::<Vec<_>>(),
            "entries 5-10 come back, marked redelivered"
        );

        // A daemon that holds less than the cursor gets what is still there, and is told what
        // is gone (no snapshot covers 3 and 4 here).
        let (replayed, seen) = replay(&node, ResumeFrom::AppliedIndex(2)).await;
        assert_eq!(replayed.missing, Some((3, 4)));
        assert_eq!(seen.first(), Some(&(5, true)));

        // Once delivery is proven through 10, the purged entries leave the disk.
        node.delivery.ack(10);
        node.delivery.persist(&node.store).expect("cursor");
        drop(node);
        let node = open(dir.path());
        let (replayed, seen) = replay(&node, ResumeFrom::Cursor).await;
        assert_eq!(replayed.resumed_after, Some(10));
        assert!(seen.is_empty());
        assert_eq!(node.store.log_len().expect("len"), 2);
    }

    /// What openraft applies while the node starts (committed before a crash, never applied) is
    /// handed over by the catch-up after what the last run may not have delivered, unmarked; an
    /// apply after the start waits for the catch-up, so the events stay in log order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_applied_while_starting_follow_the_catch_up_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut node = open(dir.path());
            apply_through(&mut node, 10).await;
            node.delivery.ack(4);
            node.delivery.persist(&node.store).expect("cursor");
            // Entries 11-15 reach the log, and the node dies before applying them.
            let entries: Vec<Entry> = (11..=15).map(command).collect();
            node.log
                .append(entries, IOFlushed::noop())
                .await
                .expect("append");
        }
        let (events, mut rx) = EventSink::new();
        let mut node = open_with(
            dir.path(),
            events.clone(),
            Arc::new(AppSnapshots::new(std::time::Duration::from_secs(1))),
        );
        node.delivery.begin_start();
        let replayed = node
            .store
            .replay_undelivered(ResumeFrom::Cursor, &node.delivery, &events)
            .expect("replay");
        assert_eq!(replayed.catch_up_from, 5);
        // JavaScript holds a full backlog of what came during the start (its listener comes
        // after it): the start must not wait for room.
        let held = Event::CommandApplied {
            index: 0,
            term: 0,
            command: format!("\"{}\"", "x".repeat(16 << 20)),
            op_id: None,
            redelivered: true,
        };
        let held_cost = held.cost();
        events.emit(held);
        assert!(rx.try_recv().is_ok());
        // openraft re-applies 11-15 as the node starts: nothing goes out yet.
        let entries: Vec<Entry> = (11..=15).map(command).collect();
        node.sm
            .apply(stream::iter(entries.into_iter().map(|e| Ok((e, None)))))
            .await
            .expect("apply while starting");
        assert!(
            rx.try_recv().is_err(),
            "nothing is handed over during the start"
        );
        // The listener comes and takes what was held.
        events.backlog().taken(held_cost);
        node.delivery.started();
        let (store, delivery) = (node.store.clone(), node.delivery.clone());
        // Raft runs and commits 16 before the catch-up: its apply waits for it.
        let later = tokio::spawn(async move {
            apply_range(&mut node, 16, 16).await;
            node
        });
        let (_stop, stop_rx) = tokio::sync::watch::channel(false);
        super::super::catch_up(store, delivery, events, replayed, stop_rx).await;
        let node = later.await.expect("later apply");
        let seen = applied_events(&mut rx);
        let mut expected: Vec<(u64, bool)> = (5..=10).map(|i| (i, true)).collect();
        expected.extend((11..=16).map(|i| (i, false)));
        assert_eq!(seen, expected);
        assert_eq!(node.delivery.applied(), Some(16));
    }

    /// An applied batch that commits alone is not flushed (see the storage module), so a power
    /// loss can undo it after its events went out. An application that holds every entry through
    /// its own `appliedIndex` must then not receive those entries again when the node re-applies
    /// them from the log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_a_power_loss_unapplied_reach_an_exactly_once_daemon_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The daemon stored entry 10 with its effect.
        power_loss_undoing_8_to_10(dir.path(), "this-boot", None).await;

        let (events, mut rx) = EventSink::new();
        let mut node = open_with(
            dir.path(),
            events.clone(),
            Arc::new(AppSnapshots::new(std::time::Duration::from_secs(1))),
        );
        let replayed = start(&node, ResumeFrom::AppliedIndex(10), &events).await;
        assert_eq!(
            replayed.redeliver_through,
            Some(7),
            "the state machine lost 8-10"
        );
        // Raft runs, learns again that 8-10 are committed, and applies them with 11.
        apply_again(&mut node, 8, 10).await;
        apply_range(&mut node, 11, 11).await;
        assert_eq!(node.delivery.applied(), Some(11));
        assert_eq!(applied_events(&mut rx), vec![(11, false)]);
    }

    /// The same loss for a daemon on the node's cursor: it may have received 8-10 before the
    /// machine went down, so when the node applies them again they come marked `redelivered`. A
    /// node closed cleanly flushed everything: the next boot marks nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_a_power_loss_unapplied_come_back_marked_redelivered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = || Arc::new(AppSnapshots::new(std::time::Duration::from_secs(1)));
        power_loss_undoing_8_to_10(dir.path(), "boot-1", Some(4)).await;

        let (events, mut rx) = EventSink::new();
        let mut node = open_in_boot(dir.path(), events.clone(), app(), "boot-2");
        let replayed = start(&node, ResumeFrom::Cursor, &events).await;
        assert_eq!(replayed.resumed_after, Some(4));
        assert_eq!(replayed.redeliver_through, Some(10), "the log's end");
        apply_again(&mut node, 8, 10).await;
        apply_range(&mut node, 11, 11).await;
        let mut expected: Vec<(u64, bool)> = (5..=10).map(|i| (i, true)).collect();
        expected.push((11, false));
        assert_eq!(applied_events(&mut rx), expected);

        // Entry 12 reaches the log, not the state machine, and the node closes cleanly.
        node.log
            .append(vec![command(12)], IOFlushed::noop())
            .await
            .expect("append 12");
        node.delivery.ack(11);
        node.delivery.persist(&node.store).expect("cursor");
        drop(node);
        let (events, mut rx) = EventSink::new();
        let mut node = open_in_boot(dir.path(), events.clone(), app(), "boot-3");
        let replayed = start(&node, ResumeFrom::Cursor, &events).await;
        assert_eq!(
            replayed.redeliver_through,
            Some(11),
            "nothing past the applied"
        );
        apply_again(&mut node, 12, 12).await;
        assert_eq!(applied_events(&mut rx), vec![(12, false)]);
    }

    /// A daemon that holds entries through 10 (its data directory wiped, its own state kept) on a
    /// node that is sent a snapshot through 5: with the application's state in it, the daemon
    /// restores that state, and 6-10 reach it again; without, it keeps what it held, and they do not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_the_application_restores_replaces_what_it_held() {
        for with_state in [true, false] {
            let leader_dir = tempfile::tempdir().expect("tempdir");
            let (leader_events, mut leader_rx) = EventSink::new();
            let leader_app = Arc::new(AppSnapshots::new(std::time::Duration::from_secs(5)));
            leader_app.enable(with_state);
            let mut leader = open_with(leader_dir.path(), leader_events, leader_app.clone());
            apply_through(&mut leader, 5).await;
            let mut builder = leader.sm.get_snapshot_builder().await;
            let building = tokio::spawn(async move { builder.build_snapshot().await });
            if with_state {
                let (id, _) = next_snapshot_request(&mut leader_rx).await;
                assert!(leader_app.provide(id, Some(r#"{"n":5}"#.into())));
            }
            let snapshot = building.await.expect("task").expect("build");

            let dir = tempfile::tempdir().expect("tempdir");
            let (events, mut rx) = EventSink::new();
            let mut node = open_with(
                dir.path(),
                events.clone(),
                Arc::new(AppSnapshots::new(std::time::Duration::from_secs(1))),
            );
            start(&node, ResumeFrom::AppliedIndex(10), &events).await;
            node.sm
                .install_snapshot(&snapshot.meta, snapshot.snapshot)
                .await
                .expect("install");
            apply_range(&mut node, 6, 10).await;
            let expected: Vec<(u64, bool)> = if with_state {
                (6..=10).map(|i| (i, false)).collect()
            } else {
                Vec::new()
            };
            assert_eq!(
                applied_events(&mut rx),
                expected,
                "with state: {with_state}"
            );
        }
    }

    /// openraft's core waits for a purge, and the core also sends the heartbeats: a purge must
    /// not wait for the disk. Here a write lock held elsewhere stands in for an fsync the disk
    /// stalls: the purge returns, and openraft no longer sees what it covers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_purge_does_not_wait_for_the_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = open(dir.path());
        apply_through(&mut node, 10).await;
        node.delivery.ack(10);
        node.delivery.persist(&node.store).expect("cursor");
        let busy = node.store.env.write_txn().expect("the write lock");
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            node.log.purge(log_id::<TypeConfig>(1, "n".into(), 6)),
        )
        .await
        .expect("the purge returns while the disk is busy")
        .expect("purge");
        let state = node.log.get_log_state().await.expect("log state");
        assert_eq!(state.last_purged_log_id.map(|l| l.index()), Some(6));
        let visible = node.log.try_get_log_entries(0..=10).await.expect("read");
        assert_eq!(
            visible.iter().map(|e| e.log_id.index()).collect::<Vec<_>>(),
            vec![7, 8, 9, 10],
            "openraft sees nothing it purged"
        );
        drop(busy);
        // The writer writes what is queued before it stops.
        drop(node);
        let node = open(dir.path());
        assert_eq!(node.store.log_len().expect("len"), 4);
        let state = node.log.clone().get_log_state().await.expect("log state");
        assert_eq!(state.last_purged_log_id.map(|l| l.index()), Some(6));
    }

    /// openraft builds a snapshot in a task of its own and may install the leader's meanwhile.
    /// The older one, finished last, must not replace the newer one on disk: the log before the
    /// newer one may be gone, and a restart would find a gap between the snapshot and the log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_finished_after_a_newer_install_does_not_replace_it() {
        let leader_dir = tempfile::tempdir().expect("tempdir");
        let mut leader = open(leader_dir.path());
        apply_through(&mut leader, 10).await;
        let newer = leader
            .sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("leader's snapshot");

        let dir = tempfile::tempdir().expect("tempdir");
        let (events, mut rx) = EventSink::new();
        let app = Arc::new(AppSnapshots::new(std::time::Duration::from_secs(5)));
        app.enable(true);
        let mut node = open_with(dir.path(), events, app.clone());
        apply_through(&mut node, 5).await;
        let mut builder = node.sm.get_snapshot_builder().await;
        let building = tokio::spawn(async move { builder.build_snapshot().await });
        // The build now waits for the application's state as of index 5.
        let request = next_snapshot_request(&mut rx).await;
        assert_eq!(request.1, 5);
        node.sm
            .install_snapshot(&newer.meta, newer.snapshot)
            .await
            .expect("install");
        // As openraft does after an install: the log through the snapshot goes.
        node.log
            .purge(log_id::<TypeConfig>(1, "n".into(), 5))
            .await
            .expect("purge");
        assert!(app.provide(request.0, Some("{}".into())));
        let older = building.await.expect("task").expect("build");
        assert_eq!(older.meta.last_log_id.map(|l| l.index()), Some(5));

        let current = node
            .sm
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("a snapshot");
        assert_eq!(current.meta.last_log_id.map(|l| l.index()), Some(10));
        drop(node);
        let node = open(dir.path());
        let (replayed, _) = replay(&node, ResumeFrom::AppliedIndex(0)).await;
        assert_eq!(
            replayed.snapshot,
            Some(10),
            "a restart resumes from the newer snapshot"
        );
        assert_eq!(replayed.missing, None);
    }

    /// openraft stops a node whose snapshot build fails. An application that does not give its
    /// state (silent past the timeout, or declining because its provider threw) must cost that
    /// snapshot only: the build hands back what was stored, warns, and the next build, answered,
    /// takes the snapshot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_application_that_gives_no_state_costs_a_snapshot_not_the_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (events, mut rx) = EventSink::new();
        let app = Arc::new(AppSnapshots::new(std::time::Duration::from_secs(1)));
        app.enable(true);
        let mut node = open_with(dir.path(), events, app.clone());
        apply_through(&mut node, 5).await;
        // Silent: the build waits out the timeout and builds nothing.
        let silent = node
            .sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("a silent application must not fail the build");
        assert_eq!(silent.meta.last_log_id, None, "nothing was stored before");
        // The build emitted all it emits before it returned.
        let mut asked = false;
        let mut warnings = Vec::new();
        while let Ok(event) = rx.try_recv() {
            match event {
                Event::SnapshotRequest { .. } => asked = true,
                Event::Warning { code, message } => warnings.push((code, message)),
                _ => {}
            }
        }
        assert!(asked);
        assert!(
            warnings
                .iter()
                .any(|(code, m)| *code == "ERR_STORAGE" && m.contains("no snapshot was taken")),
            "{warnings:?}"
        );

        // Answered: the snapshot is taken.
        let mut builder = node.sm.get_snapshot_builder().await;
        let building = tokio::spawn(async move { builder.build_snapshot().await });
        let (id, _) = next_snapshot_request(&mut rx).await;
        assert!(app.provide(id, Some("{\"n\":5}".into())));
        let taken = building.await.expect("task").expect("build");
        assert_eq!(taken.meta.last_log_id.map(|l| l.index()), Some(5));

        // Declined (its provider threw): at once, and the stored snapshot stays.
        apply_range(&mut node, 6, 8).await;
        let mut builder = node.sm.get_snapshot_builder().await;
        let building = tokio::spawn(async move { builder.build_snapshot().await });
        let (id, _) = next_snapshot_request(&mut rx).await;
        assert!(app.decline(id));
        let declined = tokio::time::timeout(std::time::Duration::from_millis(500), building)
            .await
            .expect("a declined request ends the build before the timeout")
            .expect("task")
            .expect("a declined request must not fail the build");
        assert_eq!(declined.meta.last_log_id.map(|l| l.index()), Some(5));
        let current = node
            .sm
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("a snapshot");
        assert_eq!(current.meta.last_log_id.map(|l| l.index()), Some(5));
    }
}
