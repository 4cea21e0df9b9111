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

/// The newest protocol version this build speaks; bumped on any incompatible change to the
/// frames below. 3: `Applied` carries `condition_failed`; registry writes may carry a value, a
/// condition and a batch. 4: the handshake negotiates a version range (see `handshake`); the
/// frames are those of 3.
pub const PROTOCOL_VERSION: u32 = 4;

/// The oldest protocol version this build still speaks, for rolling upgrades from the release
/// that spoke only 3.
pub const OLDEST_PROTOCOL_VERSION: u32 = 3;

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
    /// A fresh node asks before founding a cluster: may I found it, or are you (or someone you
    /// deferred to) doing so? The claimer is the connection's authenticated node id.
    Claim,
    /// Asks the leader to add a member (`addPeer` called on a follower).
    AddMember {
        node_id: String,
        host: String,
        port: u16,
        timeout_ms: u64,
    },
    /// Asks the leader for a read index: the log index a linearizable read must wait for, given
    /// once the leader has confirmed with a quorum that it still leads.
    ReadIndex {
        timeout_ms: u64,
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
    Claim(ClaimReply),
    ReadIndex(Result<u64, WireError>),
}

/// The answer to a fresh node's claim to found the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClaimReply {
    /// The answering node promised never to found a cluster itself: the claimer may.
    Granted,
    /// The answering node will not grant: it promised `promised_to` (another claimer), or it
    /// names itself because it is about to found and wins the tie on the smaller node id.
    Refused { promised_to: String },
    /// The answering node already belongs to a cluster.
    Member { leader_id: Option<String> },
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

    /// One frame of every kind the wire carries, named: the round-trip test's cases and the
    /// seeds of the fuzz corpus.
    fn seed_frames() -> Vec<(&'static str, Frame)> {
        let entry = Entry {
            log_id: RaftLogId::new(CommittedLeaderId::new(3), 7),
            payload: EntryPayload::Normal(Command {
                json: r#"{"type":"t"}"#.into(),
                op_id: Some("op".into()),
                proposed_at_ms: 5,
                registry: None,
            }),
        };
        let wire_error = WireError {
            code: "ERR_NOT_LEADER".into(),
            message: "not the leader".into(),
            leader_id: Some("node-2".into()),
        };
        vec![
            (
                "hello",
                Frame::Hello {
                    protocol: OLDEST_PROTOCOL_VERSION,
                    cluster_id: "c".into(),
                    node_id: "n".into(),
                    nonce: vec![7; 32],
                },
            ),
            (
                "challenge",
                Frame::Challenge {
                    node_id: "m".into(),
                    nonce: vec![8; 32],
                    proof: Some(vec![9; 32]),
                },
            ),
            (
                "proof",
                Frame::Proof {
                    proof: Some(vec![2; 32]),
                },
            ),
            (
                "welcome",
                Frame::Welcome {
                    node_id: "node-2".into(),
                },
            ),
            (
                "refused",
                Frame::Refused {
                    code: "ERR_AUTH".into(),
                    message: "no".into(),
                },
            ),
            (
                "request-append",
                Frame::Request {
                    id: 9,
                    rpc: Rpc::Append(AppendEntriesRequest {
                        vote: vote(),
                        prev_log_id: Some(RaftLogId::new(CommittedLeaderId::new(3), 6)),
                        entries: vec![entry],
                        leader_commit: None,
                    }),
                },
            ),
            (
                "request-vote",
                Frame::Request {
                    id: 10,
                    rpc: Rpc::Vote(VoteRequest::new(
                        vote(),
                        Some(RaftLogId::new(CommittedLeaderId::new(2), 4)),
                    )),
                },
            ),
            (
                "request-prevote",
                Frame::Request {
                    id: 11,
                    rpc: Rpc::PreVote(VoteRequest::new(vote(), None)),
                },
            ),
            (
                "request-snapshot",
                Frame::Request {
                    id: 12,
                    rpc: Rpc::Snapshot {
                        vote: vote(),
                        last_log_id: None,
                        last_membership: StoredMembership::default(),
                        data: vec![1, 2, 3],
                    },
                },
            ),
            (
                "request-probe",
                Frame::Request {
                    id: 13,
                    rpc: Rpc::Probe,
                },
            ),
            (
                "request-forward",
                Frame::Request {
                    id: 14,
                    rpc: Rpc::Forward {
                        json: r#"{"type":"t"}"#.into(),
                        op_id: Some("op-1".into()),
                        registry: None,
                        timeout_ms: 5000,
                    },
                },
            ),
            (
                "request-remove-member",
                Frame::Request {
                    id: 15,
                    rpc: Rpc::RemoveMember {
                        node_id: "node-3".into(),
                    },
                },
            ),
            (
                "request-claim",
                Frame::Request {
                    id: 20,
                    rpc: Rpc::Claim,
                },
            ),
            (
                "request-add-member",
                Frame::Request {
                    id: 21,
                    rpc: Rpc::AddMember {
                        node_id: "node-4".into(),
                        host: "10.0.1.104".into(),
                        port: 8083,
                        timeout_ms: 30000,
                    },
                },
            ),
            (
                "response-claim-granted",
                Frame::Response {
                    id: 22,
                    reply: Reply::Claim(ClaimReply::Granted),
                },
            ),
            (
                "response-claim-refused",
                Frame::Response {
                    id: 23,
                    reply: Reply::Claim(ClaimReply::Refused {
                        promised_to: "node-1".into(),
                    }),
                },
            ),
            (
                "response-claim-member",
                Frame::Response {
                    id: 24,
                    reply: Reply::Claim(ClaimReply::Member {
                        leader_id: Some("node-1".into()),
                    }),
                },
            ),
            (
                "response-probe",
                Frame::Response {
                    id: 16,
                    reply: Reply::Probe(ProbeReply {
                        initialized: true,
                        leader_id: Some("node-1".into()),
                        voters: vec!["node-1".into()],
                    }),
                },
            ),
            (
                "response-forwarded",
                Frame::Response {
                    id: 17,
                    reply: Reply::Forwarded(Err(wire_error.clone())),
                },
            ),
            (
                "response-done",
                Frame::Response {
                    id: 18,
                    reply: Reply::Done(Err(wire_error)),
                },
            ),
            (
                "request-read-index",
                Frame::Request {
                    id: 20,
                    rpc: Rpc::ReadIndex { timeout_ms: 5000 },
                },
            ),
            (
                "response-read-index",
                Frame::Response {
                    id: 21,
                    reply: Reply::ReadIndex(Ok(42)),
                },
            ),
            (
                "response-failed",
                Frame::Response {
                    id: 19,
                    reply: Reply::Failed("stopped".into()),
                },
            ),
        ]
    }

    #[test]
    fn every_rpc_round_trips() {
        for (name, frame) in seed_frames() {
            let bytes = encode(&frame).expect("encode");
            let back = decode(&bytes, 1 << 20).expect("decode");
            assert_eq!(format!("{frame:?}"), format!("{back:?}"), "{name}");
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

        const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/frames");

        /// The corpus kept in the repository: every seed frame, plus any input a fuzz run found
        /// worth keeping (add its bytes as a file; the mutation test starts from each).
        fn corpus() -> &'static [Vec<u8>] {
            static INPUTS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
            INPUTS.get_or_init(read_corpus)
        }

        fn read_corpus() -> Vec<Vec<u8>> {
            let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(CORPUS)
                .expect("fuzz/corpus/frames is in the repository")
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    std::fs::read(e.path()).ok().map(|bytes| (name, bytes))
                })
                .collect();
            inputs.sort();
            inputs.into_iter().map(|(_, bytes)| bytes).collect()
        }

        /// The corpus holds every seed frame as the codec encodes it today; a codec change
        /// that leaves it stale fails here. FUZZ_WRITE_CORPUS=1 rewrites the seeds.
        #[test]
        fn corpus_holds_every_seed_frame() {
            let rewrite = std::env::var_os("FUZZ_WRITE_CORPUS").is_some();
            for (name, frame) in super::seed_frames() {
                let bytes = encode(&frame).expect("encode");
                let path = format!("{CORPUS}/{name}.bin");
                if rewrite {
                    std::fs::create_dir_all(CORPUS).expect("create the corpus directory");
                    std::fs::write(&path, &bytes).expect("write a corpus file");
                }
                let kept = std::fs::read(&path).unwrap_or_default();
                assert_eq!(
                    kept, bytes,
                    "{path} is stale: rerun with FUZZ_WRITE_CORPUS=1"
                );
            }
            for input in read_corpus() {
                let _ = decode(&input, 1 << 20);
            }
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
                which in any::<usize>(),
                flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
                cut in any::<usize>(),
                tail in proptest::collection::vec(any::<u8>(), 0..64),
            ) {
                let inputs = corpus();
                prop_assume!(!inputs.is_empty());
                let mut bytes = inputs[which % inputs.len()].clone();
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
