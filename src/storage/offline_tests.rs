//! The operators' tools on real LMDB directories.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use openraft::entry::RaftEntry;
use openraft::vote::{RaftLeaderId, RaftVote};
use openraft::{EntryPayload, LogId, Membership};

use super::{open_existing, restore, Store};
use crate::storage::{decode, encode, OpRecord, KEY_VOTE};
use crate::types::{Command, Entry, NodeName, PeerAddr, TypeConfig, Vote};

const MAP: usize = 64 << 20;

fn addr(port: u16) -> PeerAddr {
    PeerAddr {
        host: "127.0.0.1".into(),
        port,
    }
}

/// A node `n1` of a three-voter cluster: a membership entry (term 1), four operations (term 2),
/// and a vote for `n2` in term 3.
fn member_of_three(dir: &Path) -> Arc<Store> {
    let store = Store::open(dir, MAP).expect("open");
    store.remember_node_id("n1").expect("node id");
    let ids = ["n1", "n2", "n3"].map(|s| NodeName(s.into()));
    let nodes: BTreeMap<_, _> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), addr(7001 + i as u16)))
        .collect();
    let membership = Membership::new(vec![ids.iter().cloned().collect::<BTreeSet<_>>()], nodes)
        .expect("membership");
    let mut wtxn = store.env.write_txn().expect("txn");
    let first = <Entry as RaftEntry>::new_membership(LogId::new_term_index(1, 1), membership);
    store
        .log
        .put(&mut wtxn, &1, &encode(&first).expect("encode"))
        .expect("put");
    let mut remembered = crate::ops::Registry::open(&store, &wtxn, crate::ops::IdWindow::default())
        .expect("registry");
    for i in 2..=5u64 {
        let cmd = Command {
            json: format!(r#"{{"type":"t","n":{i}}}"#),
            op_id: Some(format!("op-{i}")),
            proposed_at_ms: 1000 + i,
            registry: None,
        };
        let entry = <Entry as RaftEntry>::new_normal(LogId::new_term_index(2, i), cmd);
        store
            .log
            .put(&mut wtxn, &i, &encode(&entry).expect("encode"))
            .expect("put");
        let op = OpRecord {
            index: i,
            term: 2,
            proposed_at_ms: 1000 + i,
        };
        remembered
            .remember(&mut wtxn, &format!("op-{i}"), &op)
            .expect("remember");
    }
    remembered.finish(&mut wtxn, None).expect("finish");
    store
        .registry
        .put(&mut wtxn, "node/n1", r#"{"nodeId":"n1"}"#)
        .expect("put");
    let leader = <openraft::alias::LeaderIdOf<TypeConfig> as RaftLeaderId>::new(3, ids[1].clone());
    let vote = <Vote as RaftVote>::from_leader_id(leader, true);
    store
        .raft
        .put(&mut wtxn, KEY_VOTE, &encode(&vote).expect("encode"))
        .expect("put");
    wtxn.commit().expect("commit");
    store
}

#[test]
fn force_new_cluster_makes_the_node_the_only_voter_after_its_whole_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(member_of_three(dir.path()));
    let store = open_existing(dir.path(), MAP).expect("a node's directory");

    let refused = store
        .force_new_cluster(Some("n2"))
        .expect_err("not this node's id");
    assert_eq!(refused.code, "ERR_INVALID_OPERATION");

    let r = store.force_new_cluster(None).expect("recover");
    assert_eq!(r.node_id, "n1");
    assert_eq!(r.addr, addr(7001));
    assert_eq!(r.previous_voters, vec!["n1", "n2", "n3"]);
    assert_eq!(r.membership_index, 6);
    assert_eq!(r.term, 4);

    let rtxn = store.env.read_txn().expect("txn");
    let bytes = store.log.get(&rtxn, &6).expect("get").expect("entry 6");
    let entry: Entry = decode(bytes).expect("decode");
    // The entry keeps the log in term order; the new term is the vote's.
    assert_eq!(entry.log_id.committed_leader_id().term, 2);
    let EntryPayload::Membership(m) = entry.payload else {
        panic!("entry 6 is not a membership entry");
    };
    assert_eq!(
        m.voter_ids().collect::<Vec<_>>(),
        vec![NodeName("n1".into())]
    );
    assert_eq!(m.nodes().count(), 1);
    let vote: Vote =
        decode(store.raft.get(&rtxn, KEY_VOTE).expect("get").expect("vote")).expect("decode");
    assert_eq!(vote.leader_id().term, 4);
    assert_eq!(vote.leader_id().voted_for, NodeName("n1".into()));
    assert!(!vote.is_committed());
    // Nothing before it changed.
    assert_eq!(store.log.len(&rtxn).expect("len"), 6);
}

#[test]
fn offline_tools_refuse_a_directory_that_holds_no_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = open_existing(dir.path(), MAP).err().expect("refused");
    assert_eq!(err.code, "ERR_INVALID_OPERATION");
    assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 0);
    assert!(open_existing(&dir.path().join("missing"), MAP).is_err());
    std::fs::write(dir.path().join("data.mdb"), b"not an environment").expect("write");
    assert!(open_existing(dir.path(), MAP).is_err());
}

#[test]
fn a_running_node_keeps_its_directory_from_the_offline_tools() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = member_of_three(dir.path());
    let err = open_existing(dir.path(), MAP).err().expect("locked");
    assert_eq!(err.code, "ERR_STORAGE");
    drop(running);
}

#[test]
fn backup_restore_and_export_round_trip() {
    let src = tempfile::tempdir().expect("tempdir");
    let store = member_of_three(src.path());
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("backup.mdb");
    assert!(store.copy_to(&file).expect("copy") > 0);
    drop(store);

    let target = work.path().join("restored");
    restore(&file, &target, false, MAP).expect("restore");
    assert!(!target.join("node.lock").exists());
    assert_eq!(
        restore(&file, &target, false, MAP)
            .expect_err("not empty")
            .code,
        "ERR_INVALID_OPERATION"
    );
    restore(&file, &target, true, MAP).expect("forced");

    let bad = work.path().join("bad");
    std::fs::write(&bad, vec![7u8; 8192]).expect("write");
    assert!(restore(&bad, &work.path().join("nowhere"), false, MAP).is_err());
    assert!(!work.path().join("nowhere").exists());

    let restored = open_existing(&target, MAP).expect("restored directory");
    assert_eq!(
        restored.recorded_node_id().expect("read").as_deref(),
        Some("n1")
    );
    let mut out = Vec::new();
    let counts = restored.export_ndjson(&mut out).expect("export");
    assert_eq!(
        (counts.entries, counts.operations, counts.registry),
        (5, 4, 1)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 1 + 5 + 4 + 1);
    assert_eq!(lines[0]["type"], "header");
    assert_eq!(lines[1]["kind"], "membership");
    assert_eq!(lines[2]["command"]["n"], 2);
    assert_eq!(lines[2]["operationId"], "op-2");
    assert_eq!(lines[10]["value"]["nodeId"], "n1");
}

#[test]
fn backup_copies_left_by_a_dead_node_go_at_the_next_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = member_of_three(dir.path());
    let left = dir.path().join(".backup-123-abcdef.mdb");
    store.copy_to(&left).expect("copy");
    let kept = dir.path().join("daemon-state.json");
    std::fs::write(&kept, b"{}").expect("write");
    assert_eq!(store.remove_stale_copies().expect("clean"), 1);
    assert!(!left.exists());
    assert!(kept.exists());
}
