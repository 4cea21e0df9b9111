//! The handshake that opens every peer connection: both halves (`dial`, `accept`), the protocol
//! version the two nodes agree on, and mutual authentication with a shared secret.
//!
//! Authentication: dialer and listener each send a fresh random nonce; each proves knowledge of
//! the secret with an HMAC-SHA256 over its role, the cluster id, its own node id and both nonces.
//! The secret never crosses the wire, and a recorded proof is useless on a new connection because
//! the other side's nonce differs.
//!
//! Versions: a node speaks a range of protocol versions, and two nodes use the highest one both
//! speak. The previous release (protocol 3) knows no range: its listener admits a `Hello` only if
//! `protocol` equals 3, and its decoder ignores bytes after a frame. So the range rides after the
//! frames, where it reads nothing: the dialer's `Hello` carries its oldest version in `protocol`
//! (what a listener of that release compares) and its range after the frame; a listener that read
//! a range names its choice after its `Challenge`. A listener that names none is of that release
//! and speaks exactly what the dialer put in `protocol`; a dialer that sent no range is of that
//! release, and gets the frames it knows, unextended. The frames themselves are encoded as in
//! protocol 3 (`codec`), so nodes of both releases form one cluster during a rolling upgrade.

use std::sync::RwLock;

use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::client::DialFailure;
use super::codec::{self, Frame, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION};

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

/// The protocol versions a node speaks, oldest and newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    pub oldest: u32,
    pub newest: u32,
}

/// What this build speaks.
pub const SUPPORTED: Versions = Versions {
    oldest: OLDEST_PROTOCOL_VERSION,
    newest: PROTOCOL_VERSION,
};

impl Versions {
    /// The highest version both speak.
    fn highest_common(self, other: Versions) -> Option<u32> {
        let newest = self.newest.min(other.newest);
        (newest >= self.oldest.max(other.oldest)).then_some(newest)
    }

    fn contains(self, version: u32) -> bool {
        (self.oldest..=self.newest).contains(&version)
    }
}

impl std::fmt::Display for Versions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.oldest == self.newest {
            write!(f, "protocol {}", self.oldest)
        } else {
            write!(f, "protocols {} to {}", self.oldest, self.newest)
        }
    }
}

/// After a dialer's `Hello`: the range it speaks.
const OFFER_TAG: &[u8; 4] = b"PVR\x01";
/// After a listener's `Challenge`: the version it chose.
const CHOICE_TAG: &[u8; 4] = b"PVC\x01";

fn offer_bytes(v: Versions) -> Vec<u8> {
    let mut b = OFFER_TAG.to_vec();
    b.extend_from_slice(&v.oldest.to_be_bytes());
    b.extend_from_slice(&v.newest.to_be_bytes());
    b
}

fn choice_bytes(version: u32) -> Vec<u8> {
    let mut b = CHOICE_TAG.to_vec();
    b.extend_from_slice(&version.to_be_bytes());
    b
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes(word.try_into().ok()?))
}

/// The range after a `Hello`, when the dialer sent one.
fn read_offer(trailer: &[u8]) -> Option<Versions> {
    if trailer.get(..4)? != OFFER_TAG {
        return None;
    }
    Some(Versions {
        oldest: u32_at(trailer, 4)?,
        newest: u32_at(trailer, 8)?,
    })
}

/// The choice after a `Challenge`, when the listener made one.
fn read_choice(trailer: &[u8]) -> Option<u32> {
    if trailer.get(..4)? != CHOICE_TAG {
        return None;
    }
    u32_at(trailer, 4)
}

/// Who this node is to the peer.
pub struct Local<'a> {
    pub cluster_id: &'a str,
    pub node_id: &'a str,
    pub secret: Option<&'a Secrets>,
    pub versions: Versions,
    /// Largest frame accepted.
    pub limit: u64,
}

/// A finished handshake: who the peer is, and the protocol version the connection speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    pub peer: String,
    pub protocol: u32,
}

/// The next binary message of a handshake, skipping keepalives.
async fn next_message<S>(ws: &mut WebSocketStream<S>) -> Result<Vec<u8>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(bytes))) => return Ok(bytes.to_vec()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => return Err(format!("unexpected handshake message {other:?}")),
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed during handshake".into()),
        }
    }
}

/// A frame and the bytes after it. The frame's encoding is deterministic, so its length is that
/// of encoding it again.
fn split_frame(bytes: &[u8], limit: u64) -> Result<(Frame, &[u8]), String> {
    let frame = codec::decode(bytes, limit)?;
    let used = codec::encode(&frame)?.len();
    Ok((frame, bytes.get(used..).unwrap_or_default()))
}

async fn send<S>(ws: &mut WebSocketStream<S>, frame: &Frame, trailer: &[u8]) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut bytes = codec::encode(frame)?;
    bytes.extend_from_slice(trailer);
    ws.send(Message::binary(bytes))
        .await
        .map_err(|e| e.to_string())
}

/// The dialer's half. `peer_label` names the peer's address in messages.
pub async fn dial<S>(
    ws: &mut WebSocketStream<S>,
    local: &Local<'_>,
    peer_label: &str,
) -> Result<Agreed, DialFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use DialFailure::Network;
    let my_nonce = nonce().ok_or_else(|| Network("the OS random source failed".into()))?;
    let hello = Frame::Hello {
        protocol: local.versions.oldest,
        cluster_id: local.cluster_id.to_string(),
        node_id: local.node_id.to_string(),
        nonce: my_nonce.clone(),
    };
    send(ws, &hello, &offer_bytes(local.versions))
        .await
        .map_err(Network)?;
    let reply = next_message(ws).await.map_err(Network)?;
    let (frame, trailer) = split_frame(&reply, local.limit).map_err(Network)?;
    let (peer_id, peer_nonce, peer_proof) = match frame {
        Frame::Challenge {
            node_id,
            nonce,
            proof,
        } => (node_id, nonce, proof),
        Frame::Refused { code, message } => return Err(DialFailure::Refused { code, message }),
        other => return Err(Network(format!("unexpected handshake reply {other:?}"))),
    };
    // A listener that names no version is of the release before ranges: it admitted us on the
    // version we put in `protocol`.
    let protocol = read_choice(trailer).unwrap_or(local.versions.oldest);
    if !local.versions.contains(protocol) {
        let message = format!(
            "{peer_id} at {peer_label} chose protocol {protocol}; {} speaks {}",
            local.node_id, local.versions
        );
        let refused = Frame::Refused {
            code: "ERR_PROTOCOL".into(),
            message: message.clone(),
        };
        let _ = send(ws, &refused, &[]).await;
        return Err(DialFailure::refused("ERR_PROTOCOL", message));
    }
    let my_proof = match local.secret {
        Some(secret) => {
            // The listener proves itself first: we reveal nothing to an impostor.
            let genuine = peer_proof.is_some_and(|p| {
                secret.verify(
                    Role::Listener,
                    local.cluster_id,
                    &peer_id,
                    &peer_nonce,
                    &my_nonce,
                    &p,
                )
            });
            if !genuine {
                // Say why before hanging up, so the other side reports it too.
                let refused = Frame::Refused {
                    code: "ERR_AUTH".into(),
                    message: format!(
                        "{} could not verify that {peer_id} knows the cluster secret",
                        local.node_id
                    ),
                };
                let _ = send(ws, &refused, &[]).await;
                return Err(DialFailure::refused(
                    "ERR_AUTH",
                    format!("{peer_id} at {peer_label} did not prove it knows the cluster secret"),
                ));
            }
            Some(secret.prove(
                Role::Dialer,
                local.cluster_id,
                local.node_id,
                &my_nonce,
                &peer_nonce,
            ))
        }
        None => None,
    };
    send(ws, &Frame::Proof { proof: my_proof }, &[])
        .await
        .map_err(Network)?;
    let reply = next_message(ws).await.map_err(Network)?;
    match codec::decode(&reply, local.limit).map_err(Network)? {
        Frame::Welcome { node_id } => Ok(Agreed {
            peer: node_id,
            protocol,
        }),
        Frame::Refused { code, message } => Err(DialFailure::Refused { code, message }),
        other => Err(Network(format!("unexpected handshake reply {other:?}"))),
    }
}

/// Whether the listener lets a dialer in, once it knows who the dialer says it is.
pub enum Admission {
    Admit,
    /// Tell the dialer why, and hang up.
    Refuse(&'static str, String),
    /// Hang up without a word (a link cut for a test).
    Drop,
}

/// Why `accept` let no one in.
#[derive(Debug, PartialEq, Eq)]
pub enum NotAccepted {
    /// This node refused the dialer, and told it so.
    Refused { code: String, message: String },
    /// The dialer refused this node (it could not verify our proof).
    RefusedBy {
        peer: String,
        code: String,
        message: String,
    },
    /// Not a handshake, a broken connection, or `Admission::Drop`.
    Dropped,
}

/// The listener's half. `admit(cluster_id, node_id)` decides on the dialer's claims, before any
/// proof is exchanged.
pub async fn accept<S>(
    ws: &mut WebSocketStream<S>,
    local: &Local<'_>,
    admit: impl FnOnce(&str, &str) -> Admission,
) -> Result<Agreed, NotAccepted>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let dropped = |_| NotAccepted::Dropped;
    let hello = next_message(ws).await.map_err(dropped)?;
    let (frame, trailer) = split_frame(&hello, local.limit).map_err(dropped)?;
    let Frame::Hello {
        protocol,
        cluster_id,
        node_id,
        nonce: peer_nonce,
    } = frame
    else {
        return Err(NotAccepted::Dropped);
    };
    let offer = read_offer(trailer);
    let theirs = offer.unwrap_or(Versions {
        oldest: protocol,
        newest: protocol,
    });
    let Some(chosen) = local.versions.highest_common(theirs) else {
        let message = format!(
            "{node_id} speaks {theirs}, this node ({}) {}; upgrade the older node",
            local.node_id, local.versions
        );
        return Err(refuse(ws, "ERR_PROTOCOL", message).await);
    };
    match admit(&cluster_id, &node_id) {
        Admission::Admit => {}
        Admission::Refuse(code, message) => return Err(refuse(ws, code, message).await),
        Admission::Drop => return Err(NotAccepted::Dropped),
    }
    let my_nonce = nonce().ok_or(NotAccepted::Dropped)?;
    let my_proof = local.secret.map(|secret| {
        secret.prove(
            Role::Listener,
            local.cluster_id,
            local.node_id,
            &my_nonce,
            &peer_nonce,
        )
    });
    let challenge = Frame::Challenge {
        node_id: local.node_id.to_string(),
        nonce: my_nonce.clone(),
        proof: my_proof,
    };
    // A dialer of the release before ranges gets the challenge it knows.
    let choice = if offer.is_some() {
        choice_bytes(chosen)
    } else {
        Vec::new()
    };
    send(ws, &challenge, &choice).await.map_err(dropped)?;
    let reply = next_message(ws).await.map_err(dropped)?;
    let proof = match codec::decode(&reply, local.limit).map_err(dropped)? {
        Frame::Proof { proof } => proof,
        Frame::Refused { code, message } => {
            return Err(NotAccepted::RefusedBy {
                peer: node_id,
                code,
                message,
            })
        }
        _ => return Err(NotAccepted::Dropped),
    };
    if let Some(secret) = local.secret {
        let genuine = proof.is_some_and(|p| {
            secret.verify(
                Role::Dialer,
                local.cluster_id,
                &node_id,
                &peer_nonce,
                &my_nonce,
                &p,
            )
        });
        if !genuine {
            let message = format!("{node_id} did not prove it knows the cluster secret");
            return Err(refuse(ws, "ERR_AUTH", message).await);
        }
    }
    let welcome = Frame::Welcome {
        node_id: local.node_id.to_string(),
    };
    send(ws, &welcome, &[]).await.map_err(dropped)?;
    Ok(Agreed {
        peer: node_id,
        protocol: chosen,
    })
}

/// Tells the dialer why it is refused, and hangs up.
async fn refuse<S>(ws: &mut WebSocketStream<S>, code: &str, message: String) -> NotAccepted
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let refused = Frame::Refused {
        code: code.to_string(),
        message: message.clone(),
    };
    let _ = send(ws, &refused, &[]).await;
    let _ = ws.close(None).await;
    NotAccepted::Refused {
        code: code.to_string(),
        message,
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

    /// Both halves over a real WebSocket on an in-memory stream.
    mod exchange {
        use super::*;
        use tokio::io::DuplexStream;
        use tokio_tungstenite::{accept_async, client_async};

        type Ws = WebSocketStream<DuplexStream>;

        async fn connected() -> (Ws, Ws) {
            let (a, b) = tokio::io::duplex(1 << 16);
            let (dialer, listener) =
                tokio::join!(client_async("ws://peer/raft", a), accept_async(b));
            (
                dialer.expect("client side").0,
                listener.expect("server side"),
            )
        }

        fn node<'a>(
            node_id: &'a str,
            secret: Option<&'a Secrets>,
            versions: Versions,
        ) -> Local<'a> {
            Local {
                cluster_id: "c",
                node_id,
                secret,
                versions,
                limit: 1 << 20,
            }
        }

        fn range(oldest: u32, newest: u32) -> Versions {
            Versions { oldest, newest }
        }

        fn secret(s: &[u8]) -> Secrets {
            Secrets::new(vec![s.to_vec()]).expect("a secret")
        }

        async fn both(
            dialer: &Local<'_>,
            listener: &Local<'_>,
        ) -> (Result<Agreed, DialFailure>, Result<Agreed, NotAccepted>) {
            let (mut d, mut l) = connected().await;
            tokio::join!(
                dial(&mut d, dialer, "peer:1"),
                accept(&mut l, listener, |_, _| Admission::Admit)
            )
        }

        #[tokio::test]
        async fn new_nodes_agree_on_the_highest_version_both_speak() {
            let s = secret(b"s3cret");
            for (d, l, agreed) in [(range(3, 5), range(3, 4), 4), (range(3, 4), range(4, 6), 4)] {
                let (dialed, accepted) =
                    both(&node("n2", Some(&s), d), &node("n1", Some(&s), l)).await;
                assert_eq!(
                    dialed.expect("dialer"),
                    Agreed {
                        peer: "n1".into(),
                        protocol: agreed
                    }
                );
                assert_eq!(
                    accepted.expect("listener"),
                    Agreed {
                        peer: "n2".into(),
                        protocol: agreed
                    }
                );
            }
        }

        /// The previous release's dialer: `Hello` with protocol 3 and nothing after it, and it
        /// decodes what it gets back as its codec does (bytes after a frame are ignored).
        async fn protocol_3_dialer(ws: &mut Ws, secret: &Secrets) -> Result<String, String> {
            let my_nonce = nonce().expect("random");
            let hello = Frame::Hello {
                protocol: 3,
                cluster_id: "c".into(),
                node_id: "old".into(),
                nonce: my_nonce.clone(),
            };
            send(ws, &hello, &[]).await?;
            let reply = next_message(ws).await?;
            // What it gets must be exactly the frame it knows.
            let frame = codec::decode(&reply, 1 << 20)?;
            assert_eq!(
                codec::encode(&frame)?,
                reply,
                "no bytes after the challenge"
            );
            let Frame::Challenge {
                node_id,
                nonce: peer_nonce,
                proof,
            } = frame
            else {
                return Err(format!("expected a challenge, got {frame:?}"));
            };
            let proof = proof.ok_or("no proof")?;
            assert!(secret.verify(
                Role::Listener,
                "c",
                &node_id,
                &peer_nonce,
                &my_nonce,
                &proof
            ));
            let mine = secret.prove(Role::Dialer, "c", "old", &my_nonce, &peer_nonce);
            send(ws, &Frame::Proof { proof: Some(mine) }, &[]).await?;
            match codec::decode(&next_message(ws).await?, 1 << 20)? {
                Frame::Welcome { node_id } => Ok(node_id),
                other => Err(format!("{other:?}")),
            }
        }

        /// The previous release's listener: admits a `Hello` only when `protocol` is 3.
        async fn protocol_3_listener(ws: &mut Ws, secret: &Secrets) -> Result<String, String> {
            let Frame::Hello {
                protocol,
                node_id,
                nonce: peer_nonce,
                ..
            } = codec::decode(&next_message(ws).await?, 1 << 20)?
            else {
                return Err("expected a hello".into());
            };
            if protocol != 3 {
                let refused = Frame::Refused {
                    code: "ERR_PROTOCOL".into(),
                    message: format!("protocol {protocol} not supported, this node speaks 3"),
                };
                send(ws, &refused, &[]).await?;
                return Err("refused".into());
            }
            let my_nonce = nonce().expect("random");
            let proof = secret.prove(Role::Listener, "c", "old", &my_nonce, &peer_nonce);
            let challenge = Frame::Challenge {
                node_id: "old".into(),
                nonce: my_nonce.clone(),
                proof: Some(proof),
            };
            send(ws, &challenge, &[]).await?;
            let Frame::Proof { proof: Some(p) } = codec::decode(&next_message(ws).await?, 1 << 20)?
            else {
                return Err("expected a proof".into());
            };
            assert!(secret.verify(Role::Dialer, "c", &node_id, &peer_nonce, &my_nonce, &p));
            let welcome = Frame::Welcome {
                node_id: "old".into(),
            };
            send(ws, &welcome, &[]).await?;
            Ok(node_id)
        }

        #[tokio::test]
        async fn a_new_listener_admits_a_protocol_3_dialer_in_the_form_it_knows() {
            let s = secret(b"s3cret");
            let (mut d, mut l) = connected().await;
            let me = node("new", Some(&s), SUPPORTED);
            let (old, new) = tokio::join!(
                protocol_3_dialer(&mut d, &s),
                accept(&mut l, &me, |_, _| Admission::Admit)
            );
            assert_eq!(old.expect("the old dialer is welcomed"), "new");
            assert_eq!(
                new.expect("admitted"),
                Agreed {
                    peer: "old".into(),
                    protocol: 3
                }
            );
        }

        #[tokio::test]
        async fn a_new_dialer_is_admitted_by_a_protocol_3_listener() {
            let s = secret(b"s3cret");
            let (mut d, mut l) = connected().await;
            let me = node("new", Some(&s), SUPPORTED);
            let (new, old) =
                tokio::join!(dial(&mut d, &me, "old:1"), protocol_3_listener(&mut l, &s));
            assert_eq!(old.expect("the old listener admits it"), "new");
            assert_eq!(
                new.expect("connected"),
                Agreed {
                    peer: "old".into(),
                    protocol: 3
                }
            );
        }

        #[tokio::test]
        async fn without_a_common_version_both_sides_say_which_they_speak() {
            let (dialed, accepted) = both(
                &node("n2", None, range(5, 6)),
                &node("n1", None, range(3, 4)),
            )
            .await;
            let Err(DialFailure::Refused { code, message }) = dialed else {
                panic!("the dialer must be refused: {dialed:?}");
            };
            assert_eq!(code, "ERR_PROTOCOL");
            assert!(message.contains("protocols 5 to 6"), "{message}");
            assert!(message.contains("protocols 3 to 4"), "{message}");
            assert!(
                matches!(accepted, Err(NotAccepted::Refused { code, .. }) if code == "ERR_PROTOCOL")
            );

            // A node that dropped protocol 3 is refused by the previous release's listener.
            let s = secret(b"s3cret");
            let (mut d, mut l) = connected().await;
            let me = node("newer", Some(&s), range(4, 4));
            let (new, old) =
                tokio::join!(dial(&mut d, &me, "old:1"), protocol_3_listener(&mut l, &s));
            assert!(old.is_err());
            assert!(
                matches!(new, Err(DialFailure::Refused { ref code, .. }) if code == "ERR_PROTOCOL"),
                "{new:?}"
            );
        }

        #[tokio::test]
        async fn a_wrong_secret_is_refused_on_both_sides() {
            let (a, b) = (secret(b"secret A"), secret(b"secret B"));
            let (dialed, accepted) = both(
                &node("n2", Some(&a), SUPPORTED),
                &node("n1", Some(&b), SUPPORTED),
            )
            .await;
            let Err(DialFailure::Refused { code, .. }) = dialed else {
                panic!("the dialer must refuse a listener without the secret: {dialed:?}");
            };
            assert_eq!(code, "ERR_AUTH");
            assert!(
                matches!(accepted, Err(NotAccepted::RefusedBy { ref code, .. }) if code == "ERR_AUTH"),
                "{accepted:?}"
            );

            // A dialer with no secret at all gets no welcome from a listener that has one.
            let (dialed, accepted) = both(
                &node("n2", None, SUPPORTED),
                &node("n1", Some(&b), SUPPORTED),
            )
            .await;
            assert!(
                matches!(dialed, Err(DialFailure::Refused { ref code, .. }) if code == "ERR_AUTH")
            );
            assert!(
                matches!(accepted, Err(NotAccepted::Refused { ref code, .. }) if code == "ERR_AUTH")
            );
        }
    }
}
