//! Frames on the wire: one binary WebSocket message each, bincode-encoded.
//!
//! A connection starts with `Hello` from the dialing node and `Welcome` (or `Refused`) from the
//! listening node; after that the dialer sends `Request`s and the listener answers each with a
//! `Response` carrying the same id, in any order, so many requests are in flight at once.
//!
//! A request is either one of Raft's (append, vote, snapshot, transfer), a piece of a snapshot
//! sent in chunks (protocol 5), or the application's: bytes in the application's own encoding
//! that the transport carries without reading them.
//! Protocol 3 declared both in one enum, so on the wire the application's tags continue the
//! Raft ones (`FIRST_APP_RPC_TAG`, `FIRST_APP_REPLY_TAG`): the transport shifts an application
//! payload's leading tag on the way out and back, and the bytes stay those of protocol 3.

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::types::{LogId, StoredMembership, TypeConfig, Vote};

/// The newest protocol version this build speaks; bumped on any incompatible change to the
/// frames below. 3: `Applied` carries `condition_failed`; registry writes may carry a value, a
/// condition and a batch. 4: the handshake negotiates a version range (see `handshake`); the
/// frames are those of 3. 5: a snapshot may come as `SnapshotChunk`s, so that no snapshot is
/// bounded by one frame. 6: a listener hands a connection's appends to Raft in the order they
/// came, so a dialer may send appends without waiting for the answers (see `append_pipeline`);
/// the frames are those of 5.
pub const PROTOCOL_VERSION: u32 = 6;

/// The first protocol version whose listener assembles a snapshot from `SnapshotChunk`s.
pub const CHUNKED_SNAPSHOT_PROTOCOL: u32 = 5;

/// The first protocol version whose listener takes a connection's appends in order, so that a
/// dialer may pipeline them.
pub const PIPELINED_APPEND_PROTOCOL: u32 = 6;

/// The oldest protocol version this build still speaks, for rolling upgrades from the release
/// that spoke only 3.
pub const OLDEST_PROTOCOL_VERSION: u32 = 3;

/// The tags of the frames `encode` and `decode` write by hand (they follow the handshake's).
const REQUEST_TAG: u32 = 5;
const RESPONSE_TAG: u32 = 6;
/// The first tag of an application request: Raft's requests take the ones before it.
const FIRST_APP_RPC_TAG: u32 = 5;
/// The first tag of an application reply: Raft's replies take the ones before it.
const FIRST_APP_REPLY_TAG: u32 = 4;
/// The tag of `Reply::Failed`, which sits among the application's replies (after `Done`).
const FAILED_REPLY_TAG: u32 = 7;
/// The body tag of a `SnapshotChunk` request: far above the application's tags, so neither can
/// ever take the other's. A listener of protocol 4 or older would read it as an unknown
/// application request and fail that request; it is only sent on connections of protocol 5.
const SNAPSHOT_CHUNK_TAG: u32 = 1 << 24;
/// The body tag of a `StreamAppend` request, beside `SNAPSHOT_CHUNK_TAG` for the same reason; it
/// is only sent on connections of protocol 6.
const STREAM_APPEND_TAG: u32 = SNAPSHOT_CHUNK_TAG + 1;

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
    /// Written and read by `encode` and `decode` (tag `REQUEST_TAG`).
    #[serde(skip)]
    Request {
        id: u64,
        rpc: Rpc,
    },
    /// Written and read by `encode` and `decode` (tag `RESPONSE_TAG`).
    #[serde(skip)]
    Response {
        id: u64,
        reply: Reply,
    },
}

#[derive(Debug)]
pub enum Rpc {
    Raft(RaftRpc),
    /// A piece of a snapshot; the listener installs it once the last piece is in.
    SnapshotChunk(SnapshotChunk),
    /// An append of one of the dialer's pipelined streams (protocol 6): the listener hands the
    /// appends of each stream to Raft in the order they came (see `append_pipeline`).
    StreamAppend(StreamAppend),
    /// An application request in the application's own encoding (see `encode_payload`).
    App(Vec<u8>),
}

#[derive(Debug)]
pub enum Reply {
    Raft(RaftReply),
    /// The remote could not handle the request (shutting down, or a fatal error).
    Failed(String),
    /// An application reply in the application's own encoding (see `encode_payload`).
    App(Vec<u8>),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpc {
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
}

/// An append of the dialer's stream `stream`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StreamAppend {
    pub stream: u64,
    pub append: AppendEntriesRequest<TypeConfig>,
}

/// One piece of a snapshot: the bytes at `offset` of `total_bytes`, with the snapshot's identity
/// in every piece so that the listener can tell a piece of the transfer it is assembling from
/// one of a newer transfer (which starts at offset 0 and replaces it).
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub vote: Vote,
    pub last_log_id: Option<LogId>,
    pub last_membership: StoredMembership,
    pub total_bytes: u64,
    pub offset: u64,
    pub data: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    Snapshot(SnapshotResponse<TypeConfig>),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
}

fn options() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
}

pub fn encode(frame: &Frame) -> Result<Vec<u8>, String> {
    let fail = |e: bincode::Error| format!("encode frame: {e}");
    let mut out = Vec::new();
    match frame {
        Frame::Request { id, rpc } => {
            head(&mut out, REQUEST_TAG, *id);
            match rpc {
                Rpc::Raft(raft) => bincode::serialize_into(&mut out, raft).map_err(fail)?,
                Rpc::SnapshotChunk(chunk) => {
                    out.extend_from_slice(&SNAPSHOT_CHUNK_TAG.to_le_bytes());
                    bincode::serialize_into(&mut out, chunk).map_err(fail)?;
                }
                Rpc::StreamAppend(append) => {
                    out.extend_from_slice(&STREAM_APPEND_TAG.to_le_bytes());
                    bincode::serialize_into(&mut out, append).map_err(fail)?;
                }
                Rpc::App(payload) => shift_tag(&mut out, payload, FIRST_APP_RPC_TAG, true)?,
            }
        }
        Frame::Response { id, reply } => {
            head(&mut out, RESPONSE_TAG, *id);
            match reply {
                Reply::Raft(raft) => bincode::serialize_into(&mut out, raft).map_err(fail)?,
                Reply::Failed(why) => {
                    out.extend_from_slice(&FAILED_REPLY_TAG.to_le_bytes());
                    bincode::serialize_into(&mut out, why).map_err(fail)?;
                }
                Reply::App(payload) => shift_tag(&mut out, payload, FIRST_APP_REPLY_TAG, true)?,
            }
        }
        handshake => bincode::serialize_into(&mut out, handshake).map_err(fail)?,
    }
    Ok(out)
}

/// Decodes a frame, refusing to allocate more than `limit` bytes for it, so a hostile length
/// prefix inside a small message cannot make us allocate gigabytes.
pub fn decode(bytes: &[u8], limit: u64) -> Result<Frame, String> {
    use bincode::Options;
    let fail = |e: bincode::Error| format!("decode frame: {e}");
    let options = options().with_limit(limit);
    let (tag, id, body) = match split_head(bytes) {
        Some(head) => head,
        None => return options.deserialize(bytes).map_err(fail),
    };
    let body_tag = tag_of(body).ok_or("decode frame: no body")?;
    let mut app = Vec::new();
    if tag == REQUEST_TAG {
        let rpc = if body_tag < FIRST_APP_RPC_TAG {
            Rpc::Raft(options.deserialize(body).map_err(fail)?)
        } else if body_tag == SNAPSHOT_CHUNK_TAG {
            Rpc::SnapshotChunk(options.deserialize(&body[4..]).map_err(fail)?)
        } else if body_tag == STREAM_APPEND_TAG {
            Rpc::StreamAppend(options.deserialize(&body[4..]).map_err(fail)?)
        } else {
            shift_tag(&mut app, body, FIRST_APP_RPC_TAG, false)?;
            Rpc::App(app)
        };
        return Ok(Frame::Request { id, rpc });
    }
    let reply = if body_tag == FAILED_REPLY_TAG {
        Reply::Failed(options.deserialize(&body[4..]).map_err(fail)?)
    } else if body_tag < FIRST_APP_REPLY_TAG {
        Reply::Raft(options.deserialize(body).map_err(fail)?)
    } else {
        shift_tag(&mut app, body, FIRST_APP_REPLY_TAG, false)?;
        Reply::App(app)
    };
    Ok(Frame::Response { id, reply })
}

/// An application message in the encoding `Rpc::App` and `Reply::App` carry.
pub fn encode_payload<T: Serialize>(message: &T) -> Result<Vec<u8>, String> {
    bincode::serialize(message).map_err(|e| format!("encode message: {e}"))
}

/// Reads an application message; as for frames, no length inside it may claim more bytes than
/// the message has.
pub fn decode_payload<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    use bincode::Options;
    options()
        .with_limit(bytes.len() as u64)
        .deserialize(bytes)
        .map_err(|e| format!("decode message: {e}"))
}

fn head(out: &mut Vec<u8>, tag: u32, id: u64) {
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
}

/// A request's or a response's tag, id and body; `None` for the handshake's frames.
fn split_head(bytes: &[u8]) -> Option<(u32, u64, &[u8])> {
    let tag = tag_of(bytes)?;
    if tag != REQUEST_TAG && tag != RESPONSE_TAG {
        return None;
    }
    let id = u64::from_le_bytes(bytes.get(4..12)?.try_into().ok()?);
    Some((tag, id, &bytes[12..]))
}

fn tag_of(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// Appends `payload` with its leading tag moved up by `offset` (`up`) or down.
fn shift_tag(out: &mut Vec<u8>, payload: &[u8], offset: u32, up: bool) -> Result<(), String> {
    let tag = tag_of(payload).ok_or("application message without a tag")?;
    let shifted = if up {
        tag.checked_add(offset)
    } else {
        tag.checked_sub(offset)
    };
    let shifted = shifted.ok_or("application message tag out of range")?;
    out.extend_from_slice(&shifted.to_le_bytes());
    out.extend_from_slice(&payload[4..]);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::types::{Command, Entry};
    use openraft::vote::leader_id_std::CommittedLeaderId;
    use openraft::{EntryPayload, LogId as RaftLogId};

    fn vote() -> Vote {
        openraft::impls::Vote::new(3, "node-1".into())
    }

    /// One frame of every kind the transport itself carries, named: the round-trip test's cases
    /// and seeds of the fuzz corpus. The engine adds its application requests'.
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
                    rpc: Rpc::Raft(RaftRpc::Append(AppendEntriesRequest {
                        vote: vote(),
                        prev_log_id: Some(RaftLogId::new(CommittedLeaderId::new(3), 6)),
                        entries: vec![entry],
                        leader_commit: None,
                    })),
                },
            ),
            (
                "request-vote",
                Frame::Request {
                    id: 10,
                    rpc: Rpc::Raft(RaftRpc::Vote(VoteRequest::new(
                        vote(),
                        Some(RaftLogId::new(CommittedLeaderId::new(2), 4)),
                    ))),
                },
            ),
            (
                "request-prevote",
                Frame::Request {
                    id: 11,
                    rpc: Rpc::Raft(RaftRpc::PreVote(VoteRequest::new(vote(), None))),
                },
            ),
            (
                "request-snapshot",
                Frame::Request {
                    id: 12,
                    rpc: Rpc::Raft(RaftRpc::Snapshot {
                        vote: vote(),
                        last_log_id: None,
                        last_membership: StoredMembership::default(),
                        data: vec![1, 2, 3],
                    }),
                },
            ),
            (
                "request-snapshot-chunk",
                Frame::Request {
                    id: 13,
                    rpc: Rpc::SnapshotChunk(SnapshotChunk {
                        vote: vote(),
                        last_log_id: Some(RaftLogId::new(CommittedLeaderId::new(3), 40)),
                        last_membership: StoredMembership::default(),
                        total_bytes: 10,
                        offset: 4,
                        data: vec![4, 5, 6],
                    }),
                },
            ),
            (
                "request-stream-append",
                Frame::Request {
                    id: 14,
                    rpc: Rpc::StreamAppend(StreamAppend {
                        stream: 7,
                        append: AppendEntriesRequest {
                            vote: vote(),
                            prev_log_id: Some(RaftLogId::new(CommittedLeaderId::new(3), 6)),
                            entries: Vec::new(),
                            leader_commit: Some(RaftLogId::new(CommittedLeaderId::new(3), 5)),
                        },
                    }),
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
        round_trip(seed_frames());
    }

    /// Each frame decodes to what was encoded.
    pub(crate) fn round_trip(frames: Vec<(&'static str, Frame)>) {
        for (name, frame) in frames {
            let bytes = encode(&frame).expect("encode");
            let back = decode(&bytes, 1 << 20).expect("decode");
            assert_eq!(format!("{frame:?}"), format!("{back:?}"), "{name}");
        }
    }

    /// The corpus holds each seed frame as the codec encodes it today; a codec change that
    /// leaves it stale (or changes the bytes of protocol 3) fails here. FUZZ_WRITE_CORPUS=1
    /// rewrites the seeds.
    pub(crate) fn check_corpus(frames: Vec<(&'static str, Frame)>) {
        let rewrite = std::env::var_os("FUZZ_WRITE_CORPUS").is_some();
        for (name, frame) in frames {
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
    }

    const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/frames");

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
        use super::CORPUS;
        use crate::transport::handshake::{self, Role};

        fn fuzz_cases() -> u32 {
            std::env::var("FUZZ_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(4000)
        }

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

        /// The transport's own frames match the corpus, and nothing in the corpus panics the
        /// decoder.
        #[test]
        fn corpus_holds_every_seed_frame() {
            super::check_corpus(super::seed_frames());
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
