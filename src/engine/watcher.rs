//! Turns openraft's metrics stream into the coordinator's events: leadership, term, role and
//! membership changes, and log purges.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use openraft::type_config::async_runtime::WatchReceiver;
use openraft::{ChangeMembers, RaftMetrics, ServerState};
use tokio::sync::watch;

use crate::events::{Event, EventSink};
use crate::transport::client::PeerPool;
use crate::types::{NodeName, PeerAddr, Raft, TypeConfig};

#[derive(Default, PartialEq)]
struct Seen {
    term: u64,
    leader: Option<String>,
    state: Option<ServerState>,
    members: BTreeMap<String, (PeerAddr, bool)>,
    purged: Option<u64>,
    /// The voters of the last config while a membership change is half done (joint config).
    unfinished_change: Option<BTreeSet<NodeName>>,
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
    loop {
        let now = observe(&rx.borrow_watched());
        if now.state == Some(ServerState::Leader)
            && (prev.state != now.state || prev.term != now.term)
        {
            *crate::lock(&leading_since) = Some((now.term, std::time::Instant::now()));
        }
        if now != prev {
            diff(&prev, &now, &me, &pool, &events);
            finish_membership_change(&raft, &prev, &now);
            prev = now;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
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

fn diff(prev: &Seen, now: &Seen, me: &NodeName, pool: &PeerPool, events: &EventSink) {
    if now.term != prev.term {
        events.emit(Event::TermUpdated { term: now.term });
    }
    if now.leader != prev.leader {
        if let Some(previous_leader_id) = &prev.leader {
            events.emit(Event::LeaderLost {
                previous_leader_id: previous_leader_id.clone(),
                term: prev.term,
            });
        }
        if let Some(leader_id) = &now.leader {
            events.emit(Event::LeaderElected {
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
        events.emit(Event::BecameFollower {
            term: now.term,
            leader_id: now.leader.clone(),
        });
    }
    for (id, (addr, voter)) in &now.members {
        if *id == me.0 || prev.members.get(id) == Some(&(addr.clone(), *voter)) {
            continue;
        }
        // Keep a connection to every member, not only the ones this node replicates to: when an
        // election comes, the votes travel over connections that are already up.
        pool.get(&NodeName(id.clone()), addr);
        events.emit(Event::PeerAdded {
            node_id: id.clone(),
            host: addr.host.clone(),
            port: addr.port,
            voter: *voter,
        });
    }
    for id in prev.members.keys() {
        if !now.members.contains_key(id) {
            if *id != me.0 {
                pool.forget(&NodeName(id.clone()));
            }
            events.emit(Event::PeerRemoved {
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
            events.emit(Event::LogPurged {
                up_to_index,
                removed,
            });
        }
    }
}
