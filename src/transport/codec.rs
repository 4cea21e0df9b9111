//! Frames on the wire: one binary WebSocket message each, bincode-encoded.
//!
//! A connection starts with `Hello` from the dialing node and `Welcome` (or `Refused`) from the
//! listening node; after that the dialer sends `Request`s and the listener answers each with a
//! `Response` carrying the same id, in any order, so many requests are in flight at once.

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::types::{Applied, LogId, RegistryWrite, StoredMembership, TypeConfig, Vote};

/// Bumped on any incompatible change to the frames below.
pub const PROTOCOL_VERSION: u32 = 2;

#[derive(Debug, Serialize, Deserialize)]
pub enum Frame {
    /// Dialer: who it is, and a fresh nonce for the listener to prove itself against.
    Hello {
        protocol: u32,
        cluster_id: String,
        node_id: String,
        nonce: Vec<u8>,
    },
    /// Listener: who it is, its nonce, and (when it has a secret) its proof.
    Challenge {
        node_id: String,
        nonce: Vec<u8>,
        proof: Option<Vec<u8>>,
    },
    /// Dialer: its proof (when it has a secret).
    Proof {
        proof: Option<Vec<u8>>,
    },
    Welcome {
        node_id: String,
    },
    Refused {
        code: String,
        message: String,
    },
    Request {
        id: u64,
        rpc: Rpc,
    },
    Response {
        id: u64,
        reply: Reply,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Rpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    Snapshot {
        vote: Vote,
        last_log_id: Option<LogId>,
        last_membership: StoredMembership,
        data: Vec<u8>,
    },
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    /// Asks whether the node already belongs to a cluster (before founding one), and serves as
    /// the health check ping.
    Probe,
    /// A write sent on to the leader by a follower on behalf of its application.
    Forward {
        json: String,
        op_id: Option<String>,
        registry: Option<RegistryWrite>,
        timeout_ms: u64,
    },
    /// Asks the leader to remove a member (a leader that hands over and then leaves).
    RemoveMember {
        node_id: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    Snapshot(SnapshotResponse<TypeConfig>),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    Probe(ProbeReply),
    Forwarded(Result<Applied, WireError>),
    Done(Result<(), WireError>),
    /// The remote Raft could not handle the request (shutting down, or a fatal error).
    Failed(String),
}

/// An engine error as it crosses the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireError {
    pub code: String,
    pub message: String,
    pub leader_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeReply {
    /// The node has Raft state: it is, or was, a member of a cluster.
    pub initialized: bool,
    pub leader_id: Option<String>,
    pub voters: Vec<String>,
}

pub fn encode(frame: &Frame) -> Result<Vec<u8>, String> {
    bincode::serialize(frame).map_err(|e| format!("encode frame: {e}"))
}

/// Decodes a frame, refusing to allocate more than `limit` bytes for it, so a hostile length
/// prefix inside a small message cannot make us allocate gigabytes.
pub fn decode(bytes: &[u8], limit: u64) -> Result<Frame, String> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(limit)
        .deserialize(bytes)
        .map_err(|e| format!("decode frame: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Command, Entry};
    use openraft::vote::leader_id_std::CommittedLeaderId;
    use openraft::{EntryPayload, LogId as RaftLogId};

    fn vote() -> Vote {
        openraft::impls::Vote::new(3, "node-1".into())
    }

    #[test]
    fn every_rpc_round_trips() {
        let entry = Entry {
            log_id: RaftLogId::new(CommittedLeaderId::new(3), 7),
            payload: EntryPayload::Normal(Command {
                json: r#"{"type":"t"}"#.into(),
                op_id: Some("op".into()),
                proposed_at_ms: 5,
                registry: None,
            }),
        };
        let frames = vec![
            Frame::Hello {
                protocol: PROTOCOL_VERSION,
                cluster_id: "c".into(),
                node_id: "n".into(),
                nonce: vec![7; 32],
            },
            Frame::Challenge {
                node_id: "m".into(),
                nonce: vec![8; 32],
                proof: Some(vec![9; 32]),
            },
            Frame::Request {
                id: 9,
                rpc: Rpc::Append(AppendEntriesRequest {
                    vote: vote(),
                    prev_log_id: None,
                    entries: vec![entry],
                    leader_commit: None,
                }),
            },
            Frame::Request {
                id: 10,
                rpc: Rpc::Snapshot {
                    vote: vote(),
                    last_log_id: None,
                    last_membership: StoredMembership::default(),
                    data: vec![1, 2, 3],
                },
            },
            Frame::Response {
                id: 11,
                reply: Reply::Probe(ProbeReply {
                    initialized: true,
                    leader_id: Some("node-1".into()),
                    voters: vec!["node-1".into()],
                }),
            },
        ];
        for frame in frames {
            let bytes = encode(&frame).expect("encode");
            let back = decode(&bytes, 1 << 20).expect("decode");
            assert_eq!(format!("{frame:?}"), format!("{back:?}"));
        }
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let bytes = encode(&Frame::Welcome {
            node_id: "node-2".into(),
        })
        .expect("encode");
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], 1 << 20).is_err());
        }
        // A length prefix claiming a huge string must not allocate it.
        let mut hostile = vec![1u8, 0, 0, 0];
        hostile.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&hostile, 1 << 20).is_err());
    }

    mod fuzz {
        //! Property tests standing in for a fuzzer on the two inputs a stranger controls: the
        //! bytes of a frame and the fields of a handshake.
        use proptest::prelude::*;

        use super::super::*;
        use crate::transport::handshake::{self, Role};

        fn fuzz_cases() -> u32 {
            std::env::var("FUZZ_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(4000)
        }

        fn sample_frames() -> Vec<Vec<u8>> {
            let frames = [
                Frame::Hello {
                    protocol: PROTOCOL_VERSION,
                    cluster_id: "cluster".into(),
                    node_id: "node-1".into(),
                    nonce: vec![1; 32],
                },
                Frame::Proof {
                    proof: Some(vec![2; 32]),
                },
                Frame::Request {
                    id: 1,
                    rpc: Rpc::Probe,
                },
                Frame::Refused {
                    code: "ERR_AUTH".into(),
                    message: "no".into(),
                },
            ];
            frames.iter().filter_map(|f| encode(f).ok()).collect()
        }

        proptest! {
            // FUZZ_CASES=<n> for a long run; every test run does a short one.
            #![proptest_config(ProptestConfig::with_cases(fuzz_cases()))]

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
                let _ = decode(&bytes, 1 << 20);
            }

            #[test]
            fn mutated_frames_never_panic(
                which in 0usize..4,
                flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
                cut in any::<usize>(),
                tail in proptest::collection::vec(any::<u8>(), 0..64),
            ) {
                let frames = sample_frames();
                let mut bytes = frames[which % frames.len()].clone();
                for (at, value) in flips {
                    if !bytes.is_empty() {
                        let i = at % bytes.len();
                        bytes[i] ^= value;
                    }
                }
                let keep = cut % (bytes.len() + 1);
                bytes.truncate(keep);
                bytes.extend(tail);
                let _ = decode(&bytes, 1 << 20);
            }

            #[test]
            fn handshake_rejects_what_it_did_not_sign(
                secret in proptest::collection::vec(any::<u8>(), 0..64),
                cluster in "[a-z]{0,12}",
                node in "[a-z0-9-]{0,12}",
                own in proptest::collection::vec(any::<u8>(), 0..48),
                other in proptest::collection::vec(any::<u8>(), 0..48),
                proof in proptest::collection::vec(any::<u8>(), 0..48),
            ) {
                let genuine = handshake::prove(&secret, Role::Dialer, &cluster, &node, &own, &other);
                prop_assume!(proof != genuine);
                prop_assert!(!handshake::verify(&secret, Role::Dialer, &cluster, &node, &own, &other, &proof));
            }
        }
    }
}
