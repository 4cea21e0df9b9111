//! Membership changes: adding a member (founding the cluster first when this node is fresh),
//! removing one, handing over leadership, and the claims fresh nodes exchange before founding.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use openraft::errors::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, RaftMetrics, ServerState};

use super::formation::{Answer, Formation, Verdict};
use super::rpc::{ask, AppReply, AppRequest, ClaimReply, FORWARD_REPLY_MARGIN};
use super::{known_leader, membership_applied, Bootstrap, ErrorCode, Node, NodeError};
use crate::transport::client::DialFailure;
use crate::transport::server::ERR_NOT_MEMBER;
use crate::types::{NodeName, PeerAddr, TypeConfig};

/// How long `addPeer` waits for the first dial to a new peer before it goes on: long enough for
/// any peer that answers to refuse the handshake, short enough that the caller hears why
/// within two seconds.
const HANDSHAKE_CHECK: Duration = Duration::from_millis(1500);

/// One claim's wait for a connection, and for its answer.
const CLAIM_WAIT: Duration = Duration::from_millis(1000);

/// Pause before claims that got no answer (the peer timed out or is still connecting) are sent
/// again.
const CLAIM_RETRY: Duration = Duration::from_millis(100);

/// The error code for a peer's handshake refusal, as the caller of `addPeer` sees it.
fn refusal_code(code: &str) -> ErrorCode {
    match code {
        "ERR_INVALID_CONFIG" | "ERR_PROTOCOL" => ErrorCode::InvalidConfig,
        _ => ErrorCode::Auth,
    }
}

/// Ends one `addPeer` target registration when the call ends, however it ends.
struct Registration<'a> {
    formation: &'a Formation,
    peer: NodeName,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.formation.release(&self.peer);
    }
}

impl Node {
    /// Registers the target of an `addPeer` call before the call runs. JavaScript does this
    /// synchronously for every call, so the calls made in one run are all known to the first
    /// claim round: see `formation`. The call itself then passes `registered: true`.
    pub fn expect_peer(&self, id: &str, addr: PeerAddr) {
        if id != self.id.0 {
            self.formation.expect(NodeName(id.to_string()), addr);
        }
    }

    /// Adds a member: as a learner first, then, once it holds the log, as a voter. On a
    /// follower it is forwarded to the leader; on a fresh node it founds the cluster, unless
    /// another fresh node does (see `formation`).
    pub async fn add_peer(
        &self,
        id: String,
        addr: PeerAddr,
        registered: bool,
    ) -> Result<(), NodeError> {
        let peer = NodeName(id.clone());
        if peer == self.id {
            return Err(NodeError::new(
                ErrorCode::InvalidConfig,
                format!("addPeer: '{id}' is this node itself"),
            ));
        }
        if !registered {
            self.formation.expect(peer.clone(), addr.clone());
        }
        let _registration = Registration {
            formation: &self.formation,
            peer: peer.clone(),
        };
        let deadline = Instant::now() + self.config.add_peer_timeout;
        let result = self.add_peer_until(&peer, &addr, deadline, true).await;
        if result.is_err() && self.membership_addr(&peer).is_none() {
            // Stop dialing a peer that did not make it in.
            self.pool.forget(&peer);
        }
        result
    }

    /// `addPeer` forwarded by a follower: this node must be the leader.
    pub async fn add_forwarded_peer(
        &self,
        id: String,
        addr: PeerAddr,
        timeout: Duration,
    ) -> Result<(), NodeError> {
        let peer = NodeName(id);
        self.add_peer_until(&peer, &addr, Instant::now() + timeout, false)
            .await
    }

    pub(super) fn membership_addr(&self, peer: &NodeName) -> Option<PeerAddr> {
        self.metrics()
            .membership_config
            .membership()
            .get_node(peer)
            .cloned()
    }

    pub(super) fn is_fresh(&self) -> Result<bool, NodeError> {
        Ok(self.membership_addr(&self.id).is_none() && !self.has_state()?)
    }

    pub(super) async fn add_peer_until(
        &self,
        peer: &NodeName,
        addr: &PeerAddr,
        deadline: Instant,
        forward: bool,
    ) -> Result<(), NodeError> {
        self.check_handshake(peer, addr, deadline).await?;
        let guard = self.membership_lock.lock().await;
        if forward && self.is_fresh()? {
            if self.config.bootstrap == Bootstrap::Never {
                return Err(NodeError::new(
                    ErrorCode::InvalidConfig,
                    "this node has bootstrap: false and belongs to no cluster yet; call addPeer on the cluster's leader",
                ));
            }
            // Either this node founded and leads, or it was added to another's cluster and the
            // call goes on to that cluster's leader below.
            self.settle_founding(deadline).await?;
        }

        let m = self.metrics();
        if m.current_leader.as_ref() != Some(&self.id) {
            drop(guard);
            if !forward {
                return Err(self.not_leader(&m));
            }
            return self.forward_add(peer, addr, deadline).await;
        }
        let id = &peer.0;
        let membership = m.membership_config.membership();
        let existing = membership.get_node(peer).cloned();
        let is_voter = membership.voter_ids().any(|v| v == *peer);
        if is_voter && existing.as_ref() == Some(addr) {
            return Ok(());
        }
        if existing.is_some() && existing.as_ref() != Some(addr) {
            return Err(NodeError::new(
                ErrorCode::InvalidConfig,
                format!(
                    "{id} is already a member at {}; remove it before adding it at {addr}",
                    existing.map(|a| a.to_string()).unwrap_or_default()
                ),
            ));
        }

        // A new leader may still be committing the membership it inherited; openraft allows one
        // membership change at a time.
        self.wait_for(deadline, membership_applied).await;
        if existing.is_none() {
            self.propose_when_leased(deadline, || {
                self.raft.add_learner(peer.clone(), addr.clone(), false)
            })
            .await
            .map_err(|e| self.write_error(e))?;
        }
        let target = self.metrics().last_log_index;
        let caught_up = self
            .wait_for(deadline, |m| {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(peer).cloned().flatten())
                    .map(|l| l.index());
                matched.is_some() && matched >= target
            })
            .await;
        if !caught_up {
            // Read before the withdrawal, which drops the connection and what it learnt.
            let why = match self.pool.get(peer, addr).last_failure() {
                Some(failure) => format!("the last attempt to reach it: {failure}"),
                None => "it was reachable but did not take the log".to_string(),
            };
            // The learner this call added goes again, so a wrong address leaves nothing behind
            // and a retry with the right one is not refused as "already a member".
            let withdrawn = existing.is_none()
                && self
                    .raft
                    .change_membership(
                        ChangeMembers::RemoveNodes(BTreeSet::from([peer.clone()])),
                        false,
                    )
                    .await
                    .is_ok();
            let next = if withdrawn {
                "it was not added; check that it runs and listens there (and the address given), then call addPeer again"
            } else {
                "it stays a learner; check that it runs and is reachable: it becomes a voter once addPeer is called again and it catches up"
            };
            return Err(NodeError::new(
                ErrorCode::Timeout,
                format!(
                    "{id} at {addr} did not catch up within {} ms ({why}); {next}",
                    self.config.add_peer_timeout.as_millis()
                ),
            ));
        }
        if !is_voter {
            self.change_membership_once_settled(
                ChangeMembers::AddVoterIds(BTreeSet::from([peer.clone()])),
                true,
            )
            .await?;
        }
        Ok(())
    }

    /// openraft returns from a change once its joint config commits, and proposes the uniform
    /// config after it on its own; a change proposed before that one commits is refused as "in
    /// progress". Such a change waits for the step under way (it is already proposed) and is
    /// proposed again, so back-to-back calls (remove one node, then another) do not fail.
    async fn change_membership_once_settled(
        &self,
        changes: ChangeMembers<NodeName, PeerAddr>,
        retain: bool,
    ) -> Result<(), NodeError> {
        let deadline = Instant::now() + self.config.add_peer_timeout;
        loop {
            // A refusal for the lease may come at either step of a joint change; proposing the
            // same change again from the joint config finishes it.
            let proposed = self.propose_when_leased(deadline, || {
                self.raft.change_membership(changes.clone(), retain)
            });
            match proposed.await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(under_way),
                ))) if Instant::now() < deadline => {
                    let step = under_way.membership_log_id.map(|l| l.index());
                    self.wait_for(deadline, |m| {
                        m.state != ServerState::Leader
                            || m.last_applied.as_ref().map(|l| l.index()) >= step
                    })
                    .await;
                }
                Err(e) => return Err(self.write_error(e)),
            }
        }
    }

    /// A peer that refuses our handshake (wrong or missing secret, another cluster, another node
    /// at that address, a certificate we or it do not trust) can never join: say why now,
    /// instead of founding a cluster or adding a learner that never catches up. A peer that is
    /// merely unreachable may come up later, so the call goes on.
    pub(super) async fn check_handshake(
        &self,
        peer: &NodeName,
        addr: &PeerAddr,
        deadline: Instant,
    ) -> Result<(), NodeError> {
        if self.membership_addr(peer).is_some() {
            // A member already: its connection stays as it is.
            return Ok(());
        }
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(HANDSHAKE_CHECK);
        let conn = self.pool.get(peer, addr);
        match conn.dial_outcome(wait).await {
            Some(Err(DialFailure::Refused { code, message })) if code != ERR_NOT_MEMBER => {
                Err(NodeError::new(
                    refusal_code(&code),
                    format!("{peer} at {addr} refused the handshake: {message}"),
                ))
            }
            _ => Ok(()),
        }
    }

    /// On a fresh node: claims the targets of the pending `addPeer` calls until this node may
    /// found the cluster (and does), or defers to another node and waits to be added.
    pub(super) async fn settle_founding(&self, deadline: Instant) -> Result<(), NodeError> {
        let mut changes = self.formation.subscribe();
        let me = self.id.clone();
        let added =
            |m: &RaftMetrics<TypeConfig>| m.membership_config.membership().get_node(&me).is_some();
        loop {
            changes.borrow_and_update();
            if !self.is_fresh()? {
                return Ok(());
            }
            let verdict = self.formation.evaluate();
            match verdict {
                Verdict::Found => {
                    return self.found(deadline).await;
                }
                Verdict::Deferred { to, member } => {
                    return self.wait_until_added(&to, member, deadline).await;
                }
                Verdict::Ask(targets) => {
                    let claims = targets.into_iter().map(|(target, addr)| async move {
                        let answer = self.claim(&target, &addr, deadline).await;
                        (target, answer)
                    });
                    let mut learnt = false;
                    for (target, answer) in futures_util::future::join_all(claims).await {
                        if let Some(answer) = answer {
                            self.formation.record(target, answer);
                            learnt = true;
                        }
                    }
                    if !learnt {
                        // Nobody answered (still connecting, or too slow): ask again shortly.
                        let pause = (Instant::now() + CLAIM_RETRY).min(deadline);
                        tokio::select! {
                            _ = changes.changed() => {}
                            _ = self.wait_for(pause, added) => {}
                        }
                    }
                }
                Verdict::Wait => {
                    tokio::select! {
                        _ = changes.changed() => {}
                        _ = self.wait_for(deadline, added) => {}
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(NodeError::new(
                    ErrorCode::Timeout,
                    format!(
                        "the fresh nodes this node adds did not settle who founds the cluster within {} ms; check that they run and are reachable, or start every node with the same initialMembers",
                        self.config.add_peer_timeout.as_millis()
                    ),
                ));
            }
        }
    }

    /// Asks `target` to let this node found the cluster. `None`: no answer (yet).
    pub(super) async fn claim(
        &self,
        target: &NodeName,
        addr: &PeerAddr,
        deadline: Instant,
    ) -> Option<Answer> {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(CLAIM_WAIT);
        let conn = self.pool.get(target, addr);
        match conn.dial_outcome(wait).await? {
            Ok(()) => {}
            Err(DialFailure::NoListener) => return Some(Answer::Absent),
            // Refused as a non-member: the peer belongs to a cluster already.
            Err(DialFailure::Refused { code, .. }) if code == ERR_NOT_MEMBER => {
                return Some(Answer::Member(None))
            }
            Err(_) => return None,
        }
        match ask(&conn, &AppRequest::Claim, wait).await {
            Ok(AppReply::Claim(reply)) => Some(Answer::from_reply(reply, target)),
            _ => None,
        }
    }

    /// Answers another fresh node's claim to found the cluster.
    pub fn answer_claim(&self, claimer: &str) -> ClaimReply {
        let m = self.metrics();
        let member = ClaimReply::Member {
            leader_id: m.current_leader.as_ref().map(|l| l.0.clone()),
        };
        // Unknown storage state: answering as a member is the answer that founds nothing.
        if !self.is_fresh().unwrap_or(false) {
            return member;
        }
        self.formation
            .on_claim(&NodeName(claimer.to_string()))
            .unwrap_or(member)
    }

    /// After deferring to `to`: waits until some leader adds this node.
    pub(super) async fn wait_until_added(
        &self,
        to: &NodeName,
        member: bool,
        deadline: Instant,
    ) -> Result<(), NodeError> {
        let me = self.id.clone();
        let added = self
            .wait_for(deadline, |m| {
                m.membership_config.membership().get_node(&me).is_some()
            })
            .await;
        if added {
            return Ok(());
        }
        let ms = self.config.add_peer_timeout.as_millis();
        Err(if member {
            let leader = self.formation.leader_hint(to);
            NodeError::new(
                ErrorCode::NotLeader,
                format!(
                    "{to} already belongs to a cluster (leader: {}) and it did not add {me} within {ms} ms; call addPeer for {me} on that cluster's leader instead of founding a new one",
                    leader.as_deref().unwrap_or("unknown")
                ),
            )
            .with_leader(leader)
        } else {
            NodeError::new(
                ErrorCode::Timeout,
                format!(
                    "{me} left founding the cluster to {to}, which did not add it within {ms} ms; call addPeer for {me} on {to} or on its cluster's leader"
                ),
            )
        })
    }

    /// Sends `addPeer` on to the leader this node knows.
    pub(super) async fn forward_add(
        &self,
        peer: &NodeName,
        addr: &PeerAddr,
        deadline: Instant,
    ) -> Result<(), NodeError> {
        // A node that was just added may not have heard from its leader yet, or heard from it
        // before the log carrying the membership (and so the leader's address) arrived.
        let settle = (Instant::now() + self.config.election_wait()).min(deadline);
        self.wait_for(settle, |m| {
            known_leader(m).is_some_and(|(leader, _)| leader != self.id)
        })
        .await;
        // Nor be connected to it yet: an earlier dial (a claim while it was not running) may
        // have left the link down until its next retry.
        if let Some((leader, leader_addr)) = known_leader(&self.metrics()) {
            let conn = self.pool.get(&leader, &leader_addr);
            if !conn.is_connected() {
                let left = deadline.saturating_duration_since(Instant::now());
                let _ = conn.dial_outcome(left.min(HANDSHAKE_CHECK)).await;
            }
        }
        let reply = self
            .call_leader(deadline, true, |left| AppRequest::AddMember {
                node_id: peer.0.clone(),
                host: addr.host.clone(),
                port: addr.port,
                timeout_ms: left.saturating_sub(FORWARD_REPLY_MARGIN).as_millis() as u64,
            })
            .await?;
        match reply {
            AppReply::Done(result) => result.map_err(NodeError::from),
            other => Err(NodeError::new(
                ErrorCode::Timeout,
                format!("the leader gave no answer to a forwarded addPeer: {other:?}"),
            )),
        }
    }

    /// Removes a member (voter or learner) from the cluster. With `forward`, a node that is not
    /// the leader asks the leader to do it (how a leader that handed over removes itself).
    pub async fn remove_peer(&self, id: String, forward: bool) -> Result<(), NodeError> {
        let peer = NodeName(id.clone());
        let _guard = self.membership_lock.lock().await;
        let m = self.metrics();
        if m.current_leader.as_ref() != Some(&self.id) {
            if !forward {
                return Err(self.not_leader(&m));
            }
            let deadline = Instant::now() + self.config.add_peer_timeout;
            return self
                .call_leader(deadline, true, |_| AppRequest::RemoveMember {
                    node_id: id.clone(),
                })
                .await
                .and_then(|reply| match reply {
                    AppReply::Done(result) => result.map_err(NodeError::from),
                    other => Err(NodeError::new(
                        ErrorCode::Timeout,
                        format!("the leader gave no answer to a forwarded removal: {other:?}"),
                    )),
                });
        }
        let membership = m.membership_config.membership();
        if membership.get_node(&peer).is_none() {
            return Err(NodeError::new(
                ErrorCode::NodeNotFound,
                format!("{id} is not a member of this cluster"),
            ));
        }
        let change = if membership.voter_ids().any(|v| v == peer) {
            ChangeMembers::RemoveVoters(BTreeSet::from([peer.clone()]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([peer.clone()]))
        };
        self.change_membership_once_settled(change, false).await?;
        if peer != self.id {
            self.pool.forget(&peer);
        }
        Ok(())
    }

    /// Hands leadership to `to` and waits until it leads.
    pub async fn transfer_leadership(
        &self,
        to: String,
        timeout: Duration,
    ) -> Result<(), NodeError> {
        let target = NodeName(to.clone());
        let m = self.metrics();
        if m.current_leader.as_ref() != Some(&self.id) {
            return Err(self.not_leader(&m));
        }
        if !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == target)
        {
            return Err(NodeError::new(
                ErrorCode::NodeNotFound,
                format!("{to} is not a voter of this cluster"),
            ));
        }
        self.raft
            .trigger()
            .transfer_leader(target.clone())
            .await
            .map_err(|e| NodeError::new(ErrorCode::Shutdown, e.to_string()))?;
        let deadline = Instant::now() + timeout;
        if self
            .wait_for(deadline, |m| m.current_leader.as_ref() == Some(&target))
            .await
        {
            Ok(())
        } else {
            Err(NodeError::new(
                ErrorCode::Timeout,
                format!("{to} did not take over leadership in time"),
            ))
        }
    }

    /// Round trip to a member, for health checks. Fails when it does not answer in time.
    pub async fn ping(&self, node_id: &str, timeout: Duration) -> Result<Duration, NodeError> {
        let peer = NodeName(node_id.to_string());
        if peer == self.id {
            return Ok(Duration::ZERO);
        }
        let m = self.metrics();
        let Some(addr) = m.membership_config.membership().get_node(&peer).cloned() else {
            return Err(NodeError::new(
                ErrorCode::NodeNotFound,
                format!("{node_id} is not a member of this cluster"),
            ));
        };
        let started = Instant::now();
        match ask(&self.pool.get(&peer, &addr), &AppRequest::Probe, timeout).await {
            Ok(AppReply::Probe(_)) => Ok(started.elapsed()),
            Ok(other) => Err(NodeError::new(
                ErrorCode::Timeout,
                format!("{node_id}: {other:?}"),
            )),
            Err(e) => Err(NodeError::new(
                ErrorCode::Timeout,
                format!("{node_id}: {e}"),
            )),
        }
    }
}
