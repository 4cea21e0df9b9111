//! Mutual authentication of peers with a shared secret.
//!
//! Dialer and listener each send a fresh random nonce; each proves knowledge of the secret with
//! an HMAC-SHA256 over its role, the cluster id, its own node id and both nonces. The secret
//! never crosses the wire, and a recorded proof is useless on a new connection because the other
//! side's nonce differs.

use std::sync::RwLock;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub const NONCE_LEN: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Dialer,
    Listener,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Dialer => b"unrdf-consensus dialer v1",
            Role::Listener => b"unrdf-consensus listener v1",
        }
    }
}

/// A fresh random nonce. `None` only if the OS random source fails.
pub fn nonce() -> Option<Vec<u8>> {
    let mut n = vec![0u8; NONCE_LEN];
    getrandom::fill(&mut n).ok()?;
    Some(n)
}

fn mac(
    secret: &[u8],
    role: Role,
    cluster_id: &str,
    node_id: &str,
    own: &[u8],
    other: &[u8],
) -> Option<HmacSha256> {
    // HMAC takes keys of any length; the error case exists only for fixed-key MACs.
    let mut m = HmacSha256::new_from_slice(secret).ok()?;
    // Length-prefixed fields: no two different inputs produce the same byte string.
    for field in [
        role.label(),
        cluster_id.as_bytes(),
        node_id.as_bytes(),
        own,
        other,
    ] {
        m.update(&(field.len() as u64).to_be_bytes());
        m.update(field);
    }
    Some(m)
}

/// The proof that `node_id`, acting as `role`, knows the secret on this connection. `own_nonce`
/// is the nonce the prover sent, `other_nonce` the one it received.
pub fn prove(
    secret: &[u8],
    role: Role,
    cluster_id: &str,
    node_id: &str,
    own_nonce: &[u8],
    other_nonce: &[u8],
) -> Vec<u8> {
    mac(secret, role, cluster_id, node_id, own_nonce, other_nonce)
        .map(|m| m.finalize().into_bytes().to_vec())
        .unwrap_or_default()
}

/// Checks a proof in constant time.
pub fn verify(
    secret: &[u8],
    role: Role,
    cluster_id: &str,
    node_id: &str,
    own_nonce: &[u8],
    other_nonce: &[u8],
    proof: &[u8],
) -> bool {
    own_nonce.len() == NONCE_LEN
        && other_nonce.len() == NONCE_LEN
        && mac(secret, role, cluster_id, node_id, own_nonce, other_nonce)
            .is_some_and(|m| m.verify_slice(proof).is_ok())
}

/// The cluster secrets a node holds, for rotation without a restart: the first proves this node,
/// any of them verifies a peer. A cluster moves from A to B by holding [A, B] everywhere, then
/// [B, A] everywhere, then [B]; no two nodes ever lack a secret in common.
pub struct Secrets {
    list: RwLock<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Secrets {
    /// `None` for an empty list: without a secret, peers are not asked to prove one.
    pub fn new(list: Vec<Vec<u8>>) -> Option<Secrets> {
        (!list.is_empty()).then(|| Secrets {
            list: RwLock::new(list),
        })
    }

    /// Replaces the list; refused (false) when it is empty.
    pub fn set(&self, list: Vec<Vec<u8>>) -> bool {
        if list.is_empty() {
            return false;
        }
        *crate::write_lock(&self.list) = list;
        true
    }

    /// This node's proof, with the first secret.
    pub fn prove(
        &self,
        role: Role,
        cluster_id: &str,
        node_id: &str,
        own_nonce: &[u8],
        other_nonce: &[u8],
    ) -> Vec<u8> {
        let list = crate::read_lock(&self.list);
        let first = list.first().map(Vec::as_slice).unwrap_or_default();
        prove(first, role, cluster_id, node_id, own_nonce, other_nonce)
    }

    /// Whether `proof` was made with any of the secrets. Every secret is tried, whichever
    /// matches, so the time taken does not tell which one did.
    pub fn verify(
        &self,
        role: Role,
        cluster_id: &str,
        node_id: &str,
        own_nonce: &[u8],
        other_nonce: &[u8],
        proof: &[u8],
    ) -> bool {
        crate::read_lock(&self.list)
            .iter()
            .map(|secret| {
                verify(
                    secret,
                    role,
                    cluster_id,
                    node_id,
                    own_nonce,
                    other_nonce,
                    proof,
                )
            })
            .fold(false, |any, this| any | this)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonces() -> (Vec<u8>, Vec<u8>) {
        (nonce().expect("random"), nonce().expect("random"))
    }

    #[test]
    fn the_right_secret_verifies_both_ways() {
        let (dialer_nonce, listener_nonce) = nonces();
        let p = prove(
            b"s3cret",
            Role::Dialer,
            "c",
            "node-2",
            &dialer_nonce,
            &listener_nonce,
        );
        assert!(verify(
            b"s3cret",
            Role::Dialer,
            "c",
            "node-2",
            &dialer_nonce,
            &listener_nonce,
            &p
        ));
        let q = prove(
            b"s3cret",
            Role::Listener,
            "c",
            "node-1",
            &listener_nonce,
            &dialer_nonce,
        );
        assert!(verify(
            b"s3cret",
            Role::Listener,
            "c",
            "node-1",
            &listener_nonce,
            &dialer_nonce,
            &q
        ));
    }

    #[test]
    fn a_wrong_secret_another_cluster_or_identity_or_role_fails() {
        let (a, b) = nonces();
        let p = prove(b"s3cret", Role::Dialer, "c", "node-2", &a, &b);
        assert!(!verify(b"other", Role::Dialer, "c", "node-2", &a, &b, &p));
        assert!(!verify(b"s3cret", Role::Dialer, "d", "node-2", &a, &b, &p));
        assert!(!verify(b"s3cret", Role::Dialer, "c", "node-3", &a, &b, &p));
        assert!(!verify(
            b"s3cret",
            Role::Listener,
            "c",
            "node-2",
            &a,
            &b,
            &p
        ));
        assert!(!verify(
            b"s3cret",
            Role::Dialer,
            "c",
            "node-2",
            &a,
            &b,
            &p[..31]
        ));
    }

    #[test]
    fn a_recorded_proof_fails_against_a_fresh_nonce() {
        let (dialer_nonce, first_listener_nonce) = nonces();
        let recorded = prove(
            b"s3cret",
            Role::Dialer,
            "c",
            "node-2",
            &dialer_nonce,
            &first_listener_nonce,
        );
        let (_, second_listener_nonce) = nonces();
        assert_ne!(first_listener_nonce, second_listener_nonce);
        assert!(!verify(
            b"s3cret",
            Role::Dialer,
            "c",
            "node-2",
            &dialer_nonce,
            &second_listener_nonce,
            &recorded
        ));
    }

    #[test]
    fn a_rotation_keeps_a_secret_in_common_at_every_step() {
        let a = b"secret A, sixteen+".to_vec();
        let b = b"secret B, sixteen+".to_vec();
        let (n1, n2) = nonces();
        let proves = |prover: &Secrets, verifier: &Secrets| {
            let p = prover.prove(Role::Dialer, "c", "x", &n1, &n2);
            verifier.verify(Role::Dialer, "c", "x", &n1, &n2, &p)
        };
        let old = Secrets::new(vec![a.clone()]).expect("a secret");
        let added = Secrets::new(vec![a.clone(), b.clone()]).expect("secrets");
        let switched = Secrets::new(vec![b.clone(), a.clone()]).expect("secrets");
        let dropped = Secrets::new(vec![b.clone()]).expect("a secret");
        // Neighbouring steps understand each other both ways.
        for (x, y) in [(&old, &added), (&added, &switched), (&switched, &dropped)] {
            assert!(proves(x, y) && proves(y, x));
        }
        // A node left on A alone is refused once the others dropped A.
        assert!(!proves(&old, &dropped) && !proves(&dropped, &old));
        assert!(Secrets::new(Vec::new()).is_none());
        assert!(!dropped.set(Vec::new()));
        assert_eq!(format!("{dropped:?}"), "[redacted]");
    }
}
