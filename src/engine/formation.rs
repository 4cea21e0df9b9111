//! Who founds the cluster when fresh nodes call `addPeer` for each other at the same time.
//!
//! A fresh node (empty data directory, bootstrap `'auto'`) that is asked to add peers would found
//! a one-node cluster and add them. When several fresh nodes do that at once, each would found its
//! own cluster. So before founding, a fresh node *claims* every target of its pending `addPeer`
//! calls, and founds only when all of them stand behind it. The rules:
//!
//! * A node answers a claim with `Member` once it has Raft state (or decided to found).
//! * Otherwise with `Granted`, recording an irrevocable promise never to found (`promised_to` =
//!   the claimer), unless it already promised someone else (then `Refused` naming them), or the
//!   claimer already promised it (then `Refused` naming itself, so no two nodes promise each
//!   other), or it intends to found itself (it has pending calls and promised nobody) and has
//!   the smaller node id (then `Refused` naming itself).
//! * A claimer told `Member`, or refused by a node naming itself, promises that node and does not
//!   found: its calls wait until someone adds it, then go to the leader.
//! * A claimer founds only when, for every target of its pending calls, following the promises
//!   it learnt (`Granted` = promised to the claimer, `Refused{z}` = promised to z) ends at the
//!   claimer itself, and it promised nobody. Deciding to found and answering a claim happen
//!   under one lock, so a node never grants after deciding to found, or founds after granting.
//! * A target with nothing listening does not block (it cannot be founding; when it starts it
//!   claims us in turn). A target that does not answer in time blocks until the call's deadline.
//!
//! Why two founders are impossible for nodes that call `addPeer` for each other: let F1 and F2
//! both found, and say F1 decided first. Both were pending targets of each other when deciding
//! (the calls a node makes in one synchronous run register their targets before any claim is
//! sent). At least one claim between them reached a running node: if F2 was not listening when
//! F1 claimed it, F2 started later and its claim reached F1. Take that claim, from C to T:
//! * T answered `Member`: T had decided to found before; C promises T and cannot found.
//! * T answered `Granted`: T promised C and cannot found.
//! * T answered `Refused{T}`: C promises T and cannot found.
//! * T answered `Refused{z}`, z != T: T promised z and cannot found.
//!
//! Each case leaves one of F1, F2 unable to found, a contradiction. A founder never promises
//! (a node with state answers `Member`), and a promise is never taken back, so the answers a
//! node learnt stay true.
//!
//! When a node's calls are spread over several runs (awaited one after another), a founder's
//! pending targets may be only some of its peers. If every peer is already listening, two
//! founders would need two disjoint groups, each of a founder and a peer whose promise leads to
//! it (the promise chains of one node end at one place): impossible among three nodes, and
//! impossible when every node lists its peers in the same order (all claim the same first peer,
//! which promises at most once, and founds only if it promised nobody). A peer with nothing
//! listening does not hold founding back, so two nodes whose only pending target is the same
//! stopped peer may both found: with staggered starts and awaited calls, use `initialMembers`.
//!
//! Promises live in memory: a fresh node that restarts forgets them. That is harmless for the
//! nodes that call `addPeer` for each other (the restarted node claims the founder, which answers
//! `Member`).

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::watch;

use super::rpc::ClaimReply;
use crate::lock;
use crate::types::{NodeName, PeerAddr};

/// What a claimer learnt about a target (or a node a target promised).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// It promised us.
    Granted,
    /// It promised another node.
    PromisedTo(NodeName),
    /// It intends to found and wins the tie: we defer to it.
    Intends,
    /// It belongs to a cluster already.
    Member(Option<String>),
    /// Nothing listens at its address.
    Absent,
}

impl Answer {
    pub fn from_reply(reply: ClaimReply, target: &NodeName) -> Answer {
        match reply {
            ClaimReply::Granted => Answer::Granted,
            ClaimReply::Refused { promised_to } if promised_to == target.0 => Answer::Intends,
            ClaimReply::Refused { promised_to } => Answer::PromisedTo(NodeName(promised_to)),
            ClaimReply::Member { leader_id } => Answer::Member(leader_id),
        }
    }
}

/// What a pending `addPeer` on a fresh node should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// This node founds the cluster now (the decision is recorded).
    Found,
    /// This node deferred to `to` (it promised): wait until someone adds it.
    Deferred { to: NodeName, member: bool },
    /// These targets have not answered yet.
    Ask(Vec<(NodeName, PeerAddr)>),
    /// Every target answered, but some promise chain is not known to end here yet.
    Wait,
}

#[derive(Default)]
struct Inner {
    /// Targets of pending `addPeer` calls, with how many calls name each.
    targets: BTreeMap<NodeName, (PeerAddr, usize)>,
    answers: BTreeMap<NodeName, Answer>,
    promised_to: Option<NodeName>,
    /// `promised_to` belongs to a cluster (it answered `Member`).
    promised_member: bool,
    founded: bool,
}

pub struct Formation {
    me: NodeName,
    /// Bootstrap `'auto'`: this node may found when asked to add peers.
    may_found: bool,
    inner: std::sync::Mutex<Inner>,
    changed: watch::Sender<u64>,
}

impl Formation {
    pub fn new(me: NodeName, may_found: bool) -> Self {
        Formation {
            me,
            may_found,
            inner: std::sync::Mutex::new(Inner::default()),
            changed: watch::Sender::new(0),
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes to targets, answers or promises.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Registers the target of an `addPeer` call; [`Formation::release`] ends it.
    pub fn expect(&self, peer: NodeName, addr: PeerAddr) {
        {
            let mut inner = lock(&self.inner);
            let entry = inner.targets.entry(peer).or_insert((addr.clone(), 0));
            entry.0 = addr;
            entry.1 += 1;
        }
        self.bump();
    }

    /// Ends one registration of `peer` made by [`Formation::expect`].
    pub fn release(&self, peer: &NodeName) {
        {
            let mut inner = lock(&self.inner);
            if let Some(entry) = inner.targets.get_mut(peer) {
                entry.1 = entry.1.saturating_sub(1);
                if entry.1 == 0 {
                    inner.targets.remove(peer);
                }
            }
        }
        self.bump();
    }

    /// Records that this node founded (or is about to, at start): claims are answered `Member`.
    pub fn mark_founded(&self) {
        lock(&self.inner).founded = true;
        self.bump();
    }

    pub fn record(&self, target: NodeName, answer: Answer) {
        lock(&self.inner).answers.insert(target, answer);
        self.bump();
    }

    /// Answers a claim from `claimer`. `None`: this node founded; answer as a member.
    pub fn on_claim(&self, claimer: &NodeName) -> Option<ClaimReply> {
        let mut inner = lock(&self.inner);
        if inner.founded {
            return None;
        }
        let refuse = |name: &NodeName| {
            Some(ClaimReply::Refused {
                promised_to: name.0.clone(),
            })
        };
        match &inner.promised_to {
            Some(p) if p == claimer => return Some(ClaimReply::Granted),
            Some(p) => return refuse(p),
            None => {}
        }
        if inner.answers.get(claimer) == Some(&Answer::Granted) {
            return refuse(&self.me);
        }
        let intends = self.may_found && !inner.targets.is_empty();
        if intends && self.me < *claimer {
            return refuse(&self.me);
        }
        inner.promised_to = Some(claimer.clone());
        drop(inner);
        self.bump();
        Some(ClaimReply::Granted)
    }

    /// Decides what the pending calls do next, recording a decision to found or to defer.
    pub fn evaluate(&self) -> Verdict {
        let mut inner = lock(&self.inner);
        if inner.founded {
            return Verdict::Found;
        }
        if let Some(to) = &inner.promised_to {
            return Verdict::Deferred {
                to: to.clone(),
                member: inner.promised_member,
            };
        }
        // A cluster exists, or a node with a better claim intends to found: defer to it.
        let defer_to = inner
            .targets
            .keys()
            .find_map(|t| match inner.answers.get(t) {
                Some(Answer::Member(_)) => Some((t.clone(), true)),
                Some(Answer::Intends) => Some((t.clone(), false)),
                _ => None,
            });
        if let Some((to, member)) = defer_to {
            inner.promised_to = Some(to.clone());
            inner.promised_member = member;
            drop(inner);
            self.bump();
            return Verdict::Deferred { to, member };
        }
        let missing: Vec<(NodeName, PeerAddr)> = inner
            .targets
            .iter()
            .filter(|(t, _)| !inner.answers.contains_key(*t))
            .map(|(t, (addr, _))| (t.clone(), addr.clone()))
            .collect();
        if !missing.is_empty() {
            return Verdict::Ask(missing);
        }
        let all_behind_me = inner
            .targets
            .keys()
            .all(|t| self.stands_behind_me(&inner.answers, t));
        if all_behind_me {
            inner.founded = true;
            drop(inner);
            self.bump();
            return Verdict::Found;
        }
        Verdict::Wait
    }

    /// Whether the promises learnt so far lead from `target` to this node.
    fn stands_behind_me(&self, answers: &BTreeMap<NodeName, Answer>, target: &NodeName) -> bool {
        let mut seen = BTreeSet::new();
        let mut at = target.clone();
        loop {
            match answers.get(&at) {
                Some(Answer::Granted) | Some(Answer::Absent) => return true,
                Some(Answer::PromisedTo(next)) => {
                    if *next == self.me {
                        return true;
                    }
                    if !seen.insert(at.clone()) {
                        return false;
                    }
                    at = next.clone();
                }
                _ => return false,
            }
        }
    }

    /// The leader `target` named when it answered as a member, if it did.
    pub fn leader_hint(&self, target: &NodeName) -> Option<String> {
        match lock(&self.inner).answers.get(target) {
            Some(Answer::Member(leader)) => leader.clone(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> PeerAddr {
        PeerAddr {
            host: "127.0.0.1".into(),
            port,
        }
    }

    fn node(name: &str, peers: &[&str]) -> Formation {
        let f = Formation::new(NodeName(name.into()), true);
        for (i, p) in peers.iter().enumerate() {
            f.expect(NodeName((*p).into()), addr(7000 + i as u16));
        }
        f
    }

    fn name(s: &str) -> NodeName {
        NodeName(s.into())
    }

    /// Delivers a claim from `from` to `to` and records the answer at `from` at once.
    fn claim(nodes: &BTreeMap<&str, Formation>, from: &str, to: &str) {
        let reply = nodes[to]
            .on_claim(&name(from))
            .unwrap_or(ClaimReply::Member { leader_id: None });
        nodes[from].record(name(to), Answer::from_reply(reply, &name(to)));
    }

    /// Nodes that all add each other, each starting at a random moment (down: nothing listens;
    /// up: answers claims; then its calls register every other node at once), with claims
    /// answered and answers arriving in a pseudo-random order and evaluations in between,
    /// thousands of times for three to five nodes: never two founders, and once every message
    /// is through, exactly one.
    #[test]
    fn never_two_founders_whatever_the_order() {
        const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut random = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for size in 3..=5 {
            for _ in 0..3000 {
                let members: &'static [&'static str] = &NAMES[..size];
                let nodes: BTreeMap<&str, Formation> = members
                    .iter()
                    .map(|me| (*me, Formation::new(name(me), true)))
                    .collect();
                // 0: down, 1: up, 2: up with its addPeer calls registered.
                let mut phase: BTreeMap<&'static str, u8> =
                    members.iter().map(|m| (*m, 0)).collect();
                let mut asked: BTreeSet<(&'static str, &'static str)> = BTreeSet::new();
                let mut sent: Vec<(&'static str, &'static str)> = Vec::new();
                let mut replies: Vec<(&'static str, &'static str, Answer)> = Vec::new();
                let mut founders = BTreeSet::new();
                let find = |t: &NodeName| members.iter().copied().find(|m| **m == t.0);

                let deliver = |from: &str, to: &str, phase: &BTreeMap<&str, u8>| {
                    if phase[to] == 0 {
                        return Answer::Absent;
                    }
                    let reply = nodes[to]
                        .on_claim(&name(from))
                        .unwrap_or(ClaimReply::Member { leader_id: None });
                    Answer::from_reply(reply, &name(to))
                };
                let step = |who: &'static str,
                            action: usize,
                            phase: &mut BTreeMap<&'static str, u8>,
                            asked: &mut BTreeSet<(&'static str, &'static str)>,
                            sent: &mut Vec<(&'static str, &'static str)>,
                            founders: &mut BTreeSet<String>| {
                    if action == 0 && phase[who] < 2 {
                        let p = phase.get_mut(who).expect("a member");
                        *p += 1;
                        if *p == 2 {
                            for (i, peer) in members.iter().enumerate() {
                                if *peer != who {
                                    nodes[who].expect(name(peer), addr(7000 + i as u16));
                                }
                            }
                        }
                        return;
                    }
                    if phase[who] < 2 {
                        return;
                    }
                    match nodes[who].evaluate() {
                        Verdict::Found => {
                            founders.insert(who.to_string());
                        }
                        Verdict::Ask(missing) => {
                            for (t, _) in missing {
                                if let Some(t) = find(&t) {
                                    if asked.insert((who, t)) {
                                        sent.push((who, t));
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                };
                for _ in 0..3000 {
                    let who = members[random(size)];
                    match random(4) {
                        a @ (0 | 1) => {
                            step(who, a, &mut phase, &mut asked, &mut sent, &mut founders)
                        }
                        2 if !sent.is_empty() => {
                            let (from, to) = sent.swap_remove(random(sent.len()));
                            replies.push((from, to, deliver(from, to, &phase)));
                        }
                        3 if !replies.is_empty() => {
                            let (from, to, answer) = replies.swap_remove(random(replies.len()));
                            nodes[from].record(name(to), answer);
                        }
                        _ => {}
                    }
                }
                assert!(founders.len() <= 1, "two founders: {founders:?}");
                // Every node up with its calls made, then every message through until nothing
                // moves.
                for who in members {
                    while phase[who] < 2 {
                        step(who, 0, &mut phase, &mut asked, &mut sent, &mut founders);
                    }
                }
                loop {
                    let before = (founders.len(), asked.len());
                    for (from, to) in std::mem::take(&mut sent) {
                        replies.push((from, to, deliver(from, to, &phase)));
                    }
                    let moved = !replies.is_empty();
                    for (from, to, answer) in replies.drain(..) {
                        nodes[from].record(name(to), answer);
                    }
                    for who in members {
                        step(who, 1, &mut phase, &mut asked, &mut sent, &mut founders);
                    }
                    if !moved && before == (founders.len(), asked.len()) {
                        break;
                    }
                }
                assert_eq!(founders.len(), 1, "founders: {founders:?}");
            }
        }
    }

    #[test]
    fn the_smaller_intending_node_wins_and_the_other_defers() {
        let nodes: BTreeMap<&str, Formation> =
            [("a", node("a", &["b"])), ("b", node("b", &["a"]))].into();
        claim(&nodes, "b", "a");
        assert_eq!(
            nodes["b"].evaluate(),
            Verdict::Deferred {
                to: name("a"),
                member: false
            }
        );
        claim(&nodes, "a", "b");
        assert_eq!(nodes["a"].evaluate(), Verdict::Found);
    }

    #[test]
    fn a_founded_node_answers_as_a_member() {
        let a = node("a", &["b"]);
        a.record(name("b"), Answer::Absent);
        assert_eq!(a.evaluate(), Verdict::Found);
        assert_eq!(a.on_claim(&name("b")), None);
    }
}
