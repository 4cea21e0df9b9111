//! Turns openraft's metrics stream into the coordinator's events: leadership, term, role and
//! membership changes, and log purges.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use openraft::type_config::async_runtime::WatchReceiver;
use openraft::{ChangeMembers, RaftMetrics, ServerState};
use tokio::sync::watch;

use super::NodeError;
use crate::events::{Event, EventSink};
use crate::transport::client::PeerPool;
use crate::types::{NodeName, PeerAddr, Raft, TypeConfig};

#[derive(Debug, Clone, Default, PartialEq)]
struct Seen {
    term: u64,
    leader: Option<String>,
    state: Option<ServerState>,
    members: BTreeMap<String, (PeerAddr, bool)>,
    purged: Option<u64>,
    /// The voters of the last config while a membership change is half done (joint config).
    unfinished_change: Option<BTreeSet<NodeName>>,
    /// Why Raft's core stopped on its own (a storage failure), as callers are told.
    failure: Option<String>,
}

fn observe(m: &RaftMetrics<TypeConfig>) -> Seen {
    let membership = m.membership_config.membership();
    let voters: Vec<NodeName> = membership.voter_ids().collect();
    Seen {
        term: m.current_term,
        leader: m.current_leader.as_ref().map(|l| l.0.clone()),
        state: Some(m.state),
        members: membership
            .nodes()
            .map(|(id, addr)| (id.0.clone(), (addr.clone(), voters.contains(id))))
            .collect(),
        purged: m.purged.as_ref().map(|l| l.index()),
        unfinished_change: {
            let configs = membership.get_joint_config();
            (configs.len() > 1).then(|| configs.last().cloned().unwrap_or_default())
        },
        failure: NodeError::core_failed(m).map(|e| e.message),
    }
}

pub async fn watch_metrics(
    raft: Raft,
    me: NodeName,
    pool: Arc<PeerPool>,
    events: EventSink,
    leading_since: Arc<std::sync::Mutex<Option<(u64, std::time::Instant)>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut rx = raft.metrics();
    // What was purged before this node started is not news: start the purge baseline there.
    let mut prev = Seen {
        purged: observe(&rx.borrow_watched()).purged,
        ..Seen::default()
    };
    let mut core_gone = false;
    loop {
        let now = observe(&rx.borrow_watched());
        if now.state == Some(ServerState::Leader)
            && (prev.state != now.state || prev.term != now.term)
        {
            *crate::lock(&leading_since) = Some((now.term, std::time::Instant::now()));
        }
        if now != prev {
            for event in events_between(&prev, &now, &me) {
                events.emit(event);
            }
            keep_connections(&prev, &now, &me, &pool);
            finish_membership_change(&raft, &prev, &now);
            prev = now;
        }
        if core_gone {
            return;
        }
        tokio::select! {
            // The core's last metrics (why it stopped) are read once more before leaving.
            changed = rx.changed() => core_gone = changed.is_err(),
            _ = stop.changed() => return,
        }
    }
}

/// A node that becomes leader and finds the cluster in a joint config (a membership change whose
/// second step never ran because leadership moved in between) completes it: until then a quorum
/// needs majorities of both configs, and losing one more node can stall the cluster. A joint
/// config that appears while this node already leads is its own change under way, which openraft
/// completes itself; a second completion racing it would make that change report failure.
fn finish_membership_change(raft: &Raft, prev: &Seen, now: &Seen) {
    let Some(target) = &now.unfinished_change else {
        return;
    };
    // A new term counts too: the metrics stream may fold a brief step-down into one update.
    let became_leader = now.state == Some(ServerState::Leader)
        && (prev.state != Some(ServerState::Leader) || prev.term != now.term);
    if !became_leader {
        return;
    }
    let raft = raft.clone();
    let voters = target.clone();
    tokio::spawn(async move {
        let _ = raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), true)
            .await;
    });
}

/// The events that tell JavaScript how `now` differs from `prev`, in the order they happen.
fn events_between(prev: &Seen, now: &Seen, me: &NodeName) -> Vec<Event> {
    let mut events = Vec::new();
    // Said once, when it happens: an operator must not learn it from failing writes alone.
    if let (None, Some(message)) = (&prev.failure, &now.failure) {
        events.push(Event::Warning {
            code: "ERR_STORAGE",
            message: message.clone(),
        });
    }
    if now.term != prev.term {
        events.push(Event::TermUpdated { term: now.term });
    }
    if now.leader != prev.leader {
        if let Some(previous_leader_id) = &prev.leader {
            events.push(Event::LeaderLost {
                previous_leader_id: previous_leader_id.clone(),
                term: prev.term,
            });
        }
        if let Some(leader_id) = &now.leader {
            events.push(Event::LeaderElected {
                leader_id: leader_id.clone(),
                term: now.term,
            });
        }
    }
    let follower = matches!(
        now.state,
        Some(ServerState::Follower | ServerState::Learner)
    );
    if follower && (prev.state != now.state || prev.leader != now.leader) {
        events.push(Event::BecameFollower {
            term: now.term,
            leader_id: now.leader.clone(),
        });
    }
    for (id, (addr, voter)) in added_members(prev, now, me) {
        events.push(Event::PeerAdded {
            node_id: id.clone(),
            host: addr.host.clone(),
            port: addr.port,
            voter,
        });
    }
    for id in prev.members.keys() {
        if !now.members.contains_key(id) {
            events.push(Event::PeerRemoved {
                node_id: id.clone(),
            });
        }
    }
    if let Some(up_to_index) = now.purged {
        if now.purged != prev.purged {
            let removed = match prev.purged {
                Some(before) => up_to_index.saturating_sub(before),
                None => up_to_index + 1,
            };
            events.push(Event::LogPurged {
                up_to_index,
                removed,
            });
        }
    }
    events
}

/// The other members that are new in `now`, or whose address or vote changed.
fn added_members<'a>(
    prev: &'a Seen,
    now: &'a Seen,
    me: &'a NodeName,
) -> impl Iterator<Item = (&'a String, (&'a PeerAddr, bool))> {
    now.members
        .iter()
        .filter(move |(id, member)| **id != me.0 && prev.members.get(*id) != Some(*member))
        .map(|(id, (addr, voter))| (id, (addr, *voter)))
}

/// Keeps a connection to every member, not only the ones this node replicates to: when an
/// election comes, the votes travel over connections that are already up. Members that left
/// are let go.
fn keep_connections(prev: &Seen, now: &Seen, me: &NodeName, pool: &PeerPool) {
    for (id, (addr, _)) in added_members(prev, now, me) {
        pool.get(&NodeName(id.clone()), addr);
    }
    for id in prev.members.keys() {
        if !now.members.contains_key(id) && *id != me.0 {
            pool.forget(&NodeName(id.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> NodeName {
        NodeName("a".into())
    }

    fn addr(port: u16) -> PeerAddr {
        PeerAddr {
            host: "127.0.0.1".into(),
            port,
        }
    }

    fn seen(term: u64, leader: Option<&str>, state: ServerState) -> Seen {
        Seen {
            term,
            leader: leader.map(str::to_string),
            state: Some(state),
            ..Seen::default()
        }
    }

    #[test]
    fn nothing_changed_means_no_events() {
        let now = seen(3, Some("a"), ServerState::Leader);
        assert_eq!(events_between(&now, &now, &me()), vec![]);
    }

    #[test]
    fn a_node_elected_in_a_new_term_reports_the_term_then_itself() {
        let prev = seen(1, None, ServerState::Candidate);
        let now = seen(2, Some("a"), ServerState::Leader);
        assert_eq!(
            events_between(&prev, &now, &me()),
            vec![
                Event::TermUpdated { term: 2 },
                Event::LeaderElected {
                    leader_id: "a".into(),
                    term: 2
                },
            ]
        );
    }

    #[test]
    fn a_leader_that_loses_to_another_reports_the_loss_the_new_leader_and_following() {
        let prev = seen(2, Some("a"), ServerState::Leader);
        let now = seen(3, Some("b"), ServerState::Follower);
        assert_eq!(
            events_between(&prev, &now, &me()),
            vec![
                Event::TermUpdated { term: 3 },
                Event::LeaderLost {
                    previous_leader_id: "a".into(),
                    term: 2
                },
                Event::LeaderElected {
                    leader_id: "b".into(),
                    term: 3
                },
                Event::BecameFollower {
                    term: 3,
                    leader_id: Some("b".into())
                },
            ]
        );
    }

    #[test]
    fn a_follower_that_loses_its_leader_follows_no_one() {
        let prev = seen(3, Some("b"), ServerState::Follower);
        let now = seen(3, None, ServerState::Follower);
        assert_eq!(
            events_between(&prev, &now, &me()),
            vec![
                Event::LeaderLost {
                    previous_leader_id: "b".into(),
                    term: 3
                },
                Event::BecameFollower {
                    term: 3,
                    leader_id: None
                },
            ]
        );
    }

    #[test]
    fn members_added_promoted_and_removed_are_reported_but_never_this_node_joining() {
        let mut prev = seen(1, Some("a"), ServerState::Leader);
        prev.members = BTreeMap::from([
            ("a".to_string(), (addr(1), true)),
            ("c".to_string(), (addr(3), false)),
            ("d".to_string(), (addr(4), true)),
        ]);
        let mut now = prev.clone();
        now.members.insert("b".into(), (addr(2), false));
        now.members.insert("c".into(), (addr(3), true));
        now.members.remove("d");
        now.members.insert("a".into(), (addr(9), true));
        assert_eq!(
            events_between(&prev, &now, &me()),
            vec![
                Event::PeerAdded {
                    node_id: "b".into(),
                    host: "127.0.0.1".into(),
                    port: 2,
                    voter: false
                },
                Event::PeerAdded {
                    node_id: "c".into(),
                    host: "127.0.0.1".into(),
                    port: 3,
                    voter: true
                },
                Event::PeerRemoved {
                    node_id: "d".into()
                },
            ]
        );
    }

    #[test]
    fn purges_count_the_entries_removed_since_the_last_one() {
        let prev = seen(1, Some("a"), ServerState::Leader);
        let mut first = prev.clone();
        first.purged = Some(9);
        assert_eq!(
            events_between(&prev, &first, &me()),
            vec![Event::LogPurged {
                up_to_index: 9,
                removed: 10
            }]
        );
        let mut second = first.clone();
        second.purged = Some(15);
        assert_eq!(
            events_between(&first, &second, &me()),
            vec![Event::LogPurged {
                up_to_index: 15,
                removed: 6
            }]
        );
    }

    #[test]
    fn a_core_that_fails_is_reported_once() {
        let running = seen(2, Some("a"), ServerState::Leader);
        let failed = Seen {
            state: Some(ServerState::Shutdown),
            failure: Some("this node stopped: its data directory reached mapSizeMb".into()),
            ..running.clone()
        };
        assert_eq!(
            events_between(&running, &failed, &me()),
            vec![Event::Warning {
                code: "ERR_STORAGE",
                message: "this node stopped: its data directory reached mapSizeMb".into(),
            }]
        );
        assert_eq!(events_between(&failed, &failed, &me()), vec![]);
    }
}
