//! Three engine nodes in one process, over real WebSocket connections on 127.0.0.1 and real LMDB
//! environments: how a cluster forms, where writes go, how membership changes, and how a node
//! that missed compacted history catches up.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{eventually, op_id, set_command, Cluster};
use unrdf_consensus::engine::{Bootstrap, ErrorCode, NodeError, Write, Written};
use unrdf_consensus::types::PeerAddr;

const IDS: [&str; 3] = ["n1", "n2", "n3"];

fn voters_of(cluster: &Cluster, id: &str) -> BTreeSet<String> {
    cluster.node(id).state().voters.into_iter().collect()
}

fn set_of(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|id| id.to_string()).collect()
}

/// Waits until every node in `ids` runs with exactly the voters `expected`.
async fn voters_everywhere(cluster: &Cluster, ids: &[&str], expected: &[&str]) {
    let expected = set_of(expected);
    eventually(format!("{ids:?} see voters {expected:?}"), || {
        let seen: Vec<(&str, BTreeSet<String>)> =
            ids.iter().map(|id| (*id, voters_of(cluster, id))).collect();
        if seen.iter().all(|(_, voters)| *voters == expected) {
            Ok(())
        } else {
            Err(seen)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_members_started_together_elect_one_leader_all_agree_on() {
    let cluster = Cluster::with_initial_members(&IDS).await;
    let leader = cluster.agreed_leader(&IDS).await;
    voters_everywhere(&cluster, &IDS, &IDS).await;

    let written = cluster
        .node(&leader)
        .set("formed", 1, false)
        .await
        .expect("the leader commits a write");
    assert!(written.here, "the leader applied its own write");
    cluster
        .applied_everywhere(&IDS, written.applied.index)
        .await;
    for id in IDS {
        assert_eq!(
            cluster.node(id).app().commands.get(&written.applied.index),
            Some(&set_command("formed", 1)),
            "{id} applied the write at the index the leader gave"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_members_started_one_by_one_form_one_cluster() {
    let mut cluster = Cluster::new();
    let mut configs = cluster.initial_member_configs(&IDS);
    // The last listed starts first; each start returns before a leader exists.
    configs.reverse();
    for config in configs {
        cluster.start(config).await;
    }
    let leader = cluster.agreed_leader(&IDS).await;
    voters_everywhere(&cluster, &IDS, &IDS).await;
    let written = cluster
        .node(&leader)
        .set("formed", 1, false)
        .await
        .expect("the leader commits a write");
    cluster
        .applied_everywhere(&IDS, written.applied.index)
        .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_peer_on_a_fresh_node_founds_the_cluster_and_adds_the_others() {
    let mut cluster = Cluster::new();
    for id in IDS {
        cluster.start_fresh(id).await;
    }
    let founder = &cluster.node("n1").node;
    let peers: Vec<(String, PeerAddr)> = ["n2", "n3"]
        .iter()
        .map(|id| (id.to_string(), cluster.node(id).addr()))
        .collect();
    // As the JavaScript layer does for calls made together: every target is registered
    // before any call runs, so the founding node knows them all when it claims the cluster.
    for (id, addr) in &peers {
        founder.expect_peer(id, addr.clone());
    }
    let added = futures_util::future::join_all(
        peers
            .iter()
            .map(|(id, addr)| founder.add_peer(id.clone(), addr.clone(), true)),
    )
    .await;
    for ((id, _), result) in peers.iter().zip(added) {
        result.unwrap_or_else(|e| panic!("n1 adds {id}: {e}"));
    }
    let leader = cluster.agreed_leader(&IDS).await;
    voters_everywhere(&cluster, &IDS, &IDS).await;

    let written = cluster
        .node(&leader)
        .set("joined", 1, false)
        .await
        .expect("the leader commits a write");
    cluster
        .applied_everywhere(&IDS, written.applied.index)
        .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_writes_to_the_leader_only_when_asked_to() {
    let cluster = Cluster::with_initial_members(&IDS).await;
    let leader = cluster.agreed_leader(&IDS).await;
    let follower_id = cluster.others(&leader)[0].clone();
    let follower = cluster.node(&follower_id);

    let written = follower
        .set("forwarded", 7, true)
        .await
        .expect("a follower with forwarding gets its write committed by the leader");
    assert!(!written.here, "the leader, not the follower, applied it");
    assert!(!written.applied.duplicate);
    let index = written.applied.index;
    cluster.applied_everywhere(&IDS, index).await;
    for id in IDS {
        let node = cluster.node(id);
        assert_eq!(
            node.app().commands.get(&index),
            Some(&set_command("forwarded", 7)),
            "{id} applied the forwarded write at index {index}"
        );
        assert_eq!(
            node.node
                .operation(&op_id("forwarded", 7))
                .expect("readable"),
            Some((index, written.applied.term)),
            "{id} knows where the operation took effect"
        );
    }

    let refused = follower
        .set("refused", 8, false)
        .await
        .expect_err("a follower without forwarding refuses the write");
    assert_eq!(refused.code, ErrorCode::NotLeader);
    assert_eq!(refused.leader_id.as_deref(), Some(leader.as_str()));
    assert!(
        refused.message.contains(&leader),
        "the message names the leader: {}",
        refused.message
    );

    // A write committed after the refusal shows the log everywhere: the refused one is not in it.
    let later = cluster
        .node(&leader)
        .set("later", 9, false)
        .await
        .expect("the leader commits a write");
    cluster.applied_everywhere(&IDS, later.applied.index).await;
    for id in IDS {
        let app = cluster.node(id).app();
        assert!(
            !app.kv.contains_key("refused"),
            "{id} applied the refused write"
        );
        assert_eq!(
            cluster
                .node(id)
                .node
                .operation(&op_id("refused", 8))
                .expect("readable"),
            None
        );
    }
    cluster.shutdown().await;
}

/// Answers to a batch, by position, each checked to come once.
fn by_position(
    answers: std::sync::Mutex<Vec<(usize, Result<Written, NodeError>)>>,
    count: usize,
) -> Vec<Result<Written, NodeError>> {
    let mut answers = answers.into_inner().expect("answers");
    answers.sort_by_key(|(position, _)| *position);
    let positions: Vec<usize> = answers.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        positions,
        (0..count).collect::<Vec<_>>(),
        "each write answered once"
    );
    answers.into_iter().map(|(_, result)| result).collect()
}

fn batch_write(key: &str, value: u64, forward: bool) -> Write {
    Write {
        json: set_command(key, value),
        op_id: Some(op_id(key, value)),
        registry: None,
        timeout: Duration::from_secs(10),
        forward,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_writes_is_answered_write_by_write() {
    let cluster = Cluster::with_initial_members(&IDS).await;
    let leader_id = cluster.agreed_leader(&IDS).await;
    let leader = cluster.node(&leader_id);
    let earlier = leader.set("earlier", 1, false).await.expect("a write");

    // On the leader: one proposal for the batch; a retry of an applied id, and an id given twice
    // in the batch, are answered with the first result.
    let answers = std::sync::Mutex::new(Vec::new());
    let batch = vec![
        batch_write("a", 1, false),
        batch_write("earlier", 1, false),
        batch_write("b", 2, false),
        batch_write("a", 1, false),
    ];
    leader
        .node
        .replicate_many(batch, |position, result| {
            answers.lock().expect("answers").push((position, result))
        })
        .await;
    let answers = by_position(answers, 4);
    let [a, retried, b, a_again] = answers.as_slice() else {
        unreachable!("four answers checked above")
    };
    let a = a.as_ref().expect("a commits");
    let b = b.as_ref().expect("b commits");
    let retried = retried.as_ref().expect("a retry succeeds");
    let a_again = a_again.as_ref().expect("a repeated id succeeds");
    assert!(a.here && !a.applied.duplicate);
    assert!(retried.applied.duplicate);
    assert_eq!(retried.applied.index, earlier.applied.index);
    assert!(
        b.applied.index > a.applied.index,
        "log order is batch order"
    );
    assert!(a_again.applied.duplicate);
    assert_eq!(a_again.applied.index, a.applied.index);
    cluster.applied_everywhere(&IDS, b.applied.index).await;
    for id in IDS {
        let app = cluster.node(id).app();
        assert_eq!(
            app.commands.get(&a.applied.index),
            Some(&set_command("a", 1))
        );
        assert_eq!(
            app.commands.get(&b.applied.index),
            Some(&set_command("b", 2))
        );
    }

    // On a follower: each write is forwarded or refused as it asks, and a retry of an id the
    // follower applied already is answered there.
    let follower_id = cluster.others(&leader_id)[0].clone();
    let answers = std::sync::Mutex::new(Vec::new());
    cluster
        .node(&follower_id)
        .node
        .replicate_many(
            vec![
                batch_write("c", 3, true),
                batch_write("d", 4, false),
                batch_write("a", 1, false),
            ],
            |position, result| answers.lock().expect("answers").push((position, result)),
        )
        .await;
    let answers = by_position(answers, 3);
    let forwarded = answers[0].as_ref().expect("forwarded to the leader");
    assert!(!forwarded.here);
    let refused = answers[1].as_ref().expect_err("refused on a follower");
    assert_eq!(refused.code, ErrorCode::NotLeader);
    let retried_here = answers[2]
        .as_ref()
        .expect("a retry of an applied id succeeds");
    assert!(retried_here.here && retried_here.applied.duplicate);
    assert_eq!(retried_here.applied.index, a.applied.index);
    cluster.shutdown().await;
}

/// A write of a batch that cannot commit is answered at its own deadline, not at the batch's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_write_of_a_batch_times_out_on_its_own() {
    let mut cluster = Cluster::with_initial_members(&IDS).await;
    let leader_id = cluster.agreed_leader(&IDS).await;
    for other in cluster.others(&leader_id) {
        cluster.stop(&other).await;
    }
    let mut short = batch_write("short", 1, false);
    short.timeout = Duration::from_millis(200);
    let mut long = batch_write("long", 2, false);
    long.timeout = Duration::from_secs(5);
    let started = std::time::Instant::now();
    let answers = std::sync::Mutex::new(Vec::new());
    cluster
        .node(&leader_id)
        .node
        .replicate_many(vec![long, short], |position, result| {
            answers.lock().expect("answers").push((
                position,
                started.elapsed(),
                result.err().map(|e| e.code),
            ))
        })
        .await;
    let answers = answers.into_inner().expect("answers");
    assert_eq!(answers.len(), 2);
    let (first_position, first_at, first_code) = &answers[0];
    assert_eq!(
        *first_position, 1,
        "the write with the shorter timeout is answered first"
    );
    assert!(
        *first_at < Duration::from_secs(5),
        "answered at its own deadline, not the batch's: {first_at:?}"
    );
    assert!(matches!(
        first_code,
        Some(ErrorCode::Timeout | ErrorCode::NoQuorum)
    ));
    assert!(answers[1].2.is_some(), "nothing commits without a majority");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_gets_no_entries_and_catches_up_when_added_back() {
    let mut cluster = Cluster::with_initial_members(&IDS).await;
    let leader_id = cluster.agreed_leader(&IDS).await;
    let others = cluster.others(&leader_id);
    let (removed, stayed) = (others[0].clone(), others[1].clone());
    let pair = [leader_id.as_str(), stayed.as_str()];

    let before = cluster
        .node(&leader_id)
        .set("before", 1, false)
        .await
        .expect("the leader commits a write");
    cluster.applied_everywhere(&IDS, before.applied.index).await;

    cluster
        .node(&leader_id)
        .node
        .remove_peer(removed.clone(), false)
        .await
        .unwrap_or_else(|e| panic!("the leader removes {removed}: {e}"));
    voters_everywhere(&cluster, &pair, &pair).await;
    eventually(format!("{leader_id} reports {removed} removed"), || {
        let app = cluster.node(&leader_id).app();
        if app.removed_peers.contains(&removed) {
            Ok(())
        } else {
            Err(app.removed_peers)
        }
    })
    .await;

    let mut last = 0;
    for i in 0..5 {
        let key = format!("without-{i}");
        last = cluster
            .node(&leader_id)
            .set(&key, i, false)
            .await
            .expect("two voters of two commit")
            .applied
            .index;
    }
    cluster.applied_everywhere(&pair, last).await;
    // One more round trip through the remaining voters: anything still replicating to the
    // removed node has had as long as that to arrive.
    let fence = cluster
        .node(&leader_id)
        .set("fence", 0, false)
        .await
        .expect("the leader commits a write");
    cluster.applied_everywhere(&pair, fence.applied.index).await;
    let outside = cluster.node(&removed);
    assert!(
        outside.state().last_log_index < Some(last),
        "{removed} received entries after its removal: {:?}",
        outside.state()
    );
    assert!(
        !outside.app().kv.keys().any(|k| k.starts_with("without-")),
        "{removed} applied entries written after its removal"
    );

    // Back with an empty data directory, at a new address.
    cluster.stop(&removed).await;
    let mut config = common::config(&removed, 0, &cluster.fresh_dir(&removed));
    config.bootstrap = Bootstrap::Never;
    let back_addr = cluster.start(config).await.addr();
    cluster
        .node(&leader_id)
        .node
        .add_peer(removed.clone(), back_addr, false)
        .await
        .unwrap_or_else(|e| panic!("the leader adds {removed} back: {e}"));
    voters_everywhere(&cluster, &IDS, &IDS).await;
    cluster.applied_everywhere(&IDS, fence.applied.index).await;
    assert_eq!(
        cluster.node(&removed).app().commands,
        cluster.node(&leader_id).app().commands,
        "{removed} applied the same commands at the same indexes as the leader"
    );
    assert_eq!(cluster.agreed_leader(&IDS).await, leader_id);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_compacted_log_catches_up_by_snapshot() {
    let mut cluster = Cluster::with_initial_members(&IDS).await;
    let leader_id = cluster.agreed_leader(&IDS).await;
    let others = cluster.others(&leader_id);
    let (behind, stayed) = (others[0].clone(), others[1].clone());
    let pair = [leader_id.as_str(), stayed.as_str()];

    let mut last = 0;
    for i in 0..5 {
        last = cluster
            .node(&leader_id)
            .set(&format!("early-{i}"), i, false)
            .await
            .expect("the leader commits a write")
            .applied
            .index;
    }
    cluster.applied_everywhere(&IDS, last).await;
    let config = cluster.stop(&behind).await;

    for i in 0..40 {
        cluster
            .node(&leader_id)
            .set(&format!("missed-{i}"), i, false)
            .await
            .expect("two voters of three commit");
    }
    // A key written again: only the later value may survive the snapshot.
    last = cluster
        .node(&leader_id)
        .set("early-0", 100, false)
        .await
        .expect("the leader commits a write")
        .applied
        .index;
    cluster.applied_everywhere(&pair, last).await;

    // Both voters that remain compact: whichever of them leads when the stopped node returns
    // has no log left to send it from.
    for id in pair {
        let purged = cluster
            .node(id)
            .node
            .compact(0, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{id} compacts: {e}"));
        assert!(
            purged >= Some(last),
            "{id} purged its log through {last}, got {purged:?}"
        );
    }

    let back = cluster.start(config).await;
    let installed = eventually(format!("{behind} installs a snapshot"), || {
        let app = back.app();
        match app.snapshots.iter().find(|(_, redelivered)| !redelivered) {
            Some((index, _)) => Ok(*index),
            None => Err(app.snapshots),
        }
    })
    .await;
    assert!(
        installed >= last,
        "the snapshot {behind} installed covers the compacted log ({installed} < {last})"
    );
    cluster.applied_everywhere(&IDS, last).await;

    let expected = cluster.node(&leader_id).app().kv;
    assert_eq!(expected.len(), 45);
    assert_eq!(expected.get("early-0"), Some(&serde_json::json!(100)));
    let back = cluster.node(&behind);
    assert_eq!(
        back.app().kv,
        expected,
        "{behind}'s application holds every entry's effect"
    );
    let registry: BTreeMap<String, String> = back
        .node
        .registry("")
        .expect("readable")
        .into_iter()
        .collect();
    let expected_registry: BTreeMap<String, String> = expected
        .iter()
        .map(|(key, value)| (key.clone(), set_command(key, value.as_u64().unwrap_or(0))))
        .collect();
    assert_eq!(
        registry, expected_registry,
        "{behind}'s registry holds the last command written under every key"
    );
    for (key, value) in &expected {
        let op = op_id(key, value.as_u64().unwrap_or(0));
        assert!(
            back.node.operation(&op).expect("readable").is_some(),
            "{behind} knows operation {op} was applied"
        );
    }

    // From the snapshot on, it follows the log as any follower.
    let after = cluster
        .node(&leader_id)
        .set("after", 1, false)
        .await
        .expect("the leader commits a write");
    cluster.applied_everywhere(&IDS, after.applied.index).await;
    assert_eq!(
        cluster
            .node(&behind)
            .app()
            .commands
            .get(&after.applied.index),
        Some(&set_command("after", 1))
    );
    cluster.shutdown().await;
}
