//! Pipelined appends: a leader sends a follower its next append before the answer to the last
//! one came back, and the follower hands a connection's appends to Raft in the order they came.
//!
//! Why: a follower answers an append once it is on its disk. Sent one at a time, each append
//! waits for the round trip of the one before, and the follower's disk idles for that round trip
//! between two fsyncs. With several in flight, the appends that arrive while the follower writes
//! are taken into its next write.
//!
//! Only worth it where the network's round trip is not small beside a follower's fsync: appends
//! sent before the last one's answer carry fewer entries each, which costs throughput on a fast
//! link (`PIPELINE_MIN_RTT`).
//!
//! Raft stays safe whatever the network does: an append whose predecessor was lost is refused
//! by the follower (its `prev_log_id` does not match), which ends the stream, and openraft starts
//! a new one from what the follower answered last.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use openraft::base::BoxStream;
use openraft::errors::RPCError;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, StreamAppendResult};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::client::{PeerConn, Sent};
use super::codec::{RaftReply, RaftRpc, Reply, Rpc, StreamAppend};
use super::server::answer;
use super::{rpc_error, unexpected};
use crate::now_ms;
use crate::types::{LogId, Raft, TypeConfig};

/// Appends a leader may have sent a follower of protocol `PIPELINED_APPEND_PROTOCOL` or newer
/// without an answer yet. Each append carries every entry made since the last one went, so a
/// few in flight keep a follower's disk busy across a round trip while appends stay large.
pub const PIPELINE_DEPTH: usize = 4;

/// Appends are pipelined only to a peer whose network round trip is at least this long. Below
/// it the round trip is small beside a follower's fsync and there is little to hide, while
/// appends sent before the last one's answer are smaller: on loopback (0.1 ms), 4 pipelined
/// appends cost 15% of the throughput at 100 writes in flight over 4 interleaved pairs of full
/// benchmark runs, and gained nothing.
pub const PIPELINE_MIN_RTT: Duration = Duration::from_micros(200);

type Append = AppendEntriesRequest<TypeConfig>;
/// One append's result as openraft's streams take it.
pub(super) type AppendResult = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

/// The log ids an append covers: its `prev_log_id`, and its last entry's (or `prev_log_id` for
/// a heartbeat).
pub(super) fn range_of(append: &Append) -> (Option<LogId>, Option<LogId>) {
    let last = append
        .entries
        .last()
        .map(|e| e.log_id)
        .or(append.prev_log_id);
    (append.prev_log_id, last)
}

/// Splits `append` into appends whose entries each take at most `budget` bytes, chained by
/// `prev_log_id`, so that no frame exceeds the limit a peer accepts. An entry over the budget
/// goes alone (commands are bounded to half a frame).
///
/// Why: openraft batches up to hundreds of entries into one append without regard to their size,
/// and a frame over the limit is refused by the peer, which hangs up; sent again and again, the
/// same append would keep that follower (and, with two such, the quorum) from ever getting it.
pub(super) fn split_to_fit(append: Append, budget: u64) -> Vec<Append> {
    let AppendEntriesRequest {
        vote,
        prev_log_id,
        leader_commit,
        entries,
    } = append;
    let mut pieces: Vec<Append> = Vec::new();
    let mut used = 0u64;
    let mut prev = prev_log_id;
    for entry in entries {
        let size = bincode::serialized_size(&entry).unwrap_or(u64::MAX);
        let full = pieces
            .last()
            .is_none_or(|p| !p.entries.is_empty() && used.saturating_add(size) > budget);
        if full {
            if let Some(last) = pieces.last().and_then(|p| p.entries.last()) {
                prev = Some(last.log_id);
            }
            pieces.push(AppendEntriesRequest {
                vote: vote.clone(),
                prev_log_id: prev,
                leader_commit,
                entries: Vec::new(),
            });
            used = 0;
        }
        used = used.saturating_add(size);
        if let Some(piece) = pieces.last_mut() {
            piece.entries.push(entry);
        }
    }
    if pieces.is_empty() {
        pieces.push(AppendEntriesRequest {
            vote,
            prev_log_id: prev,
            leader_commit,
            entries: Vec::new(),
        });
    }
    pieces
}

/// One append of the input as it went out: its pieces in order, the last log id the whole
/// append covers, and its place in the pipeline.
struct InFlight {
    pieces: Vec<(Sent, Option<LogId>, Option<LogId>)>,
    covers: Option<LogId>,
    _slots: OwnedSemaphorePermit,
}

/// Sends the appends of `input` to the peer of `conn`, up to `depth` of them before the first
/// answer, and yields their results in input order. A failed append ends the output, as
/// openraft expects: it starts a new stream from what the peer confirmed.
///
/// The first append goes alone, as a plain `Append` that the listener answers on its own, and
/// only the first frame of it if it needs more: one append is all a heartbeat's stream holds,
/// and this way the listener keeps an ordered pipeline only for the streams that need one. The
/// rest go as `StreamAppend`s of this stream, once the first was answered, so that none can
/// overtake it. With `depth` 1 every append goes plain, one at a time, as older peers want.
pub(super) fn send_appends<S>(
    conn: Arc<PeerConn>,
    input: S,
    depth: usize,
    timeout: Duration,
    budget: u64,
) -> BoxStream<'static, AppendResult>
where
    S: Stream<Item = Append> + Send + Unpin + 'static,
{
    let depth = depth.max(1);
    let (sent_tx, sent_rx) = mpsc::unbounded_channel::<Result<InFlight, RPCError<TypeConfig>>>();
    let slots = Arc::new(Semaphore::new(depth));
    let sender_conn = conn.clone();
    let sender = tokio::spawn(async move {
        let mut input = input;
        let stream = sender_conn.new_stream_id();
        let mut first = true;
        loop {
            // Slots first: an append goes out only when the reader will wait for its answer.
            // The first takes them all, so that nothing goes before its answer came.
            let wanted = if first || depth == 1 { depth } else { 1 };
            let wanted = u32::try_from(wanted).unwrap_or(u32::MAX);
            let slots = tokio::select! {
                biased;
                _ = sent_tx.closed() => return,
                slots = slots.clone().acquire_many_owned(wanted) => match slots {
                    Ok(slots) => slots,
                    Err(_) => return,
                },
            };
            let append = tokio::select! {
                biased;
                _ = sent_tx.closed() => return,
                append = input.next() => match append {
                    Some(append) => append,
                    None => return,
                },
            };
            let (_, covers) = range_of(&append);
            let mut pieces = split_to_fit(append, budget);
            let plain = first || depth == 1;
            if plain {
                // A plain append is answered on its own, so it goes one frame at a time: the
                // answer covers its first frame, and openraft goes on from there.
                pieces.truncate(1);
            }
            first = false;
            let deadline = Instant::now() + timeout;
            let sent = pieces
                .into_iter()
                .map(|piece| {
                    let (prev, last) = range_of(&piece);
                    let rpc = if plain {
                        Rpc::Raft(RaftRpc::Append(piece))
                    } else {
                        Rpc::StreamAppend(StreamAppend {
                            stream,
                            append: piece,
                        })
                    };
                    sender_conn
                        .send(rpc, deadline)
                        .map(|sent| (sent, prev, last))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|pieces| InFlight {
                    pieces,
                    covers,
                    _slots: slots,
                })
                .map_err(rpc_error);
            let failed = sent.is_err();
            if sent_tx.send(sent).is_err() || failed {
                return;
            }
        }
    });
    futures_util::stream::unfold(Some((conn, sent_rx, sender)), |state| async move {
        let (conn, mut sent_rx, sender) = state?;
        let (result, covers) = match sent_rx.recv().await? {
            Ok(in_flight) => {
                let covers = in_flight.covers;
                (answer_of(&conn, in_flight).await, covers)
            }
            Err(e) => (Err(e), None),
        };
        // Go on after an append confirmed whole; after a refusal, or a part of an append,
        // nothing already sent can follow on.
        let whole = matches!(&result, Ok(Ok(confirmed)) if *confirmed == covers);
        if whole {
            return Some((result, Some((conn, sent_rx, sender))));
        }
        // The sender must be gone before openraft hears that this stream ended. openraft's
        // next stream takes its appends from the same state as `input` does: a sender still
        // waiting on `input` could take the next stream's first append, send it with no one
        // to read the answer, and leave the next stream waiting for an append that already
        // went, until the leader's log grew again.
        drop(sent_rx);
        let _ = sender.await;
        Some((result, None))
    })
    .boxed()
}

/// The peer's answer to every piece of one append, as one result: the first piece that failed,
/// or success up to the last piece confirmed.
async fn answer_of(conn: &PeerConn, in_flight: InFlight) -> AppendResult {
    let mut confirmed = None;
    for (sent, prev, last) in in_flight.pieces {
        let response = match conn.reply(sent).await.map_err(rpc_error)? {
            Reply::Raft(RaftReply::Append(response)) => response,
            other => return Err(unexpected(other)),
        };
        let partial = matches!(response, AppendEntriesResponse::PartialSuccess(_));
        match response.into_stream_result(prev, last) {
            Ok(up_to) if !partial => confirmed = up_to,
            other => return Ok(other),
        }
    }
    Ok(Ok(confirmed))
}

/// A leader heard from: any answer but a higher vote means this node follows it.
pub(super) fn note_leader_contact(
    contact: &AtomicU64,
    response: &AppendEntriesResponse<TypeConfig>,
) {
    if !matches!(response, AppendEntriesResponse::HigherVote(_)) {
        contact.store(now_ms(), Ordering::Relaxed);
    }
}

/// A pipeline with nothing to answer ends after this long without a new append: the dialer's
/// stream ended without a refusal (it timed out, or its node stopped leading).
const IDLE_PIPELINE: Duration = Duration::from_secs(30);

/// The listener's side of one pipelined stream: hands its appends to Raft in the order they
/// arrived and answers each, in that order, once Raft has it on disk. Ends at the first refusal
/// (the dialer's stream ends there too), when `incoming` closes, or when idle.
pub(super) async fn serve_appends(
    raft: Raft,
    contact: Arc<AtomicU64>,
    mut incoming: mpsc::UnboundedReceiver<(u64, Append)>,
    replies: mpsc::UnboundedSender<Vec<u8>>,
) {
    let (to_raft, from_conn) = mpsc::unbounded_channel::<Append>();
    let requests = futures_util::stream::unfold(from_conn, |mut rx| async move {
        rx.recv().await.map(|append| (append, rx))
    });
    let mut results = Box::pin(raft.stream_append(requests));
    let mut waiting: VecDeque<u64> = VecDeque::new();
    let ended = loop {
        let idle = tokio::time::sleep(IDLE_PIPELINE);
        tokio::select! {
            next = incoming.recv() => match next {
                Some((id, append)) => {
                    waiting.push_back(id);
                    // The receiver lives as long as `results`.
                    let _ = to_raft.send(append);
                }
                None => return,
            },
            result = results.next(), if !waiting.is_empty() => {
                let Some(id) = waiting.pop_front() else { continue };
                match result {
                    Some(Ok(result)) => {
                        let refused = result.is_err();
                        let response = AppendEntriesResponse::from(result);
                        note_leader_contact(&contact, &response);
                        answer(&replies, id, Reply::Raft(RaftReply::Append(response)));
                        if refused {
                            break "an earlier append of its stream was refused";
                        }
                    }
                    Some(Err(fatal)) => {
                        answer(&replies, id, Reply::Failed(fatal.to_string()));
                        break "Raft stopped";
                    }
                    None => {
                        answer(&replies, id, Reply::Failed("Raft ended the append stream".into()));
                        break "Raft ended the append stream";
                    }
                }
            }
            _ = idle, if waiting.is_empty() => return,
        }
    };
    // The dialer's stream ended at the refusal; what it sent after gets no answer from Raft.
    for id in waiting.drain(..) {
        answer(&replies, id, Reply::Failed(ended.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::{self, Frame};
    use super::*;
    use crate::types::{Command, Entry};
    use openraft::vote::leader_id_std::CommittedLeaderId;
    use openraft::EntryPayload;

    fn append_of(sizes: &[usize]) -> Append {
        let entries = sizes
            .iter()
            .enumerate()
            .map(|(i, size)| Entry {
                log_id: LogId::new(CommittedLeaderId::new(1), 10 + i as u64),
                payload: EntryPayload::Normal(Command {
                    json: "x".repeat(*size),
                    op_id: None,
                    proposed_at_ms: 0,
                    registry: None,
                }),
            })
            .collect();
        AppendEntriesRequest {
            vote: openraft::impls::Vote::new(1, "node-1".into()),
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(1), 9)),
            entries,
            leader_commit: Some(LogId::new(CommittedLeaderId::new(1), 8)),
        }
    }

    /// Each piece as (prev index, entry indexes).
    fn shape(pieces: &[Append]) -> Vec<(Option<u64>, Vec<u64>)> {
        pieces
            .iter()
            .map(|p| {
                (
                    p.prev_log_id.map(|l| l.index),
                    p.entries.iter().map(|e| e.log_id.index).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn an_append_that_fits_goes_whole() {
        let pieces = split_to_fit(append_of(&[100, 100, 100]), 10_000);
        assert_eq!(shape(&pieces), vec![(Some(9), vec![10, 11, 12])]);
        let heartbeat = split_to_fit(append_of(&[]), 10);
        assert_eq!(shape(&heartbeat), vec![(Some(9), vec![])]);
        assert_eq!(heartbeat[0].leader_commit.map(|l| l.index), Some(8));
    }

    #[test]
    fn an_append_over_the_frame_goes_in_chained_pieces_that_each_fit() {
        let pieces = split_to_fit(append_of(&[4000, 4000, 4000, 4000, 4000]), 10_000);
        assert_eq!(
            shape(&pieces),
            vec![
                (Some(9), vec![10, 11]),
                (Some(11), vec![12, 13]),
                (Some(13), vec![14])
            ]
        );
        for piece in pieces {
            assert_eq!(piece.leader_commit.map(|l| l.index), Some(8));
            let frame = codec::encode(&Frame::Request {
                id: 1,
                rpc: Rpc::Raft(RaftRpc::Append(piece)),
            })
            .expect("encode");
            assert!(frame.len() as u64 <= 10_000 + super::super::APPEND_OVERHEAD_BYTES);
        }
    }

    /// openraft's streams of appends for one follower share one state: when a stream ends,
    /// the next takes its appends from where the last left off. A result stream that has
    /// ended must therefore never take another append from its input.
    #[tokio::test(flavor = "current_thread")]
    async fn once_its_results_end_a_stream_takes_nothing_more_from_its_input() {
        use super::super::client::PlayedPeer;
        use std::sync::atomic::AtomicUsize;
        for round in 0..200 {
            let (conn, mut peer) = PlayedPeer::connect("node-2");
            let (publish, published) = mpsc::unbounded_channel::<Append>();
            let taken = Arc::new(AtomicUsize::new(0));
            let counter = taken.clone();
            let input = futures_util::stream::unfold(published, |mut rx| async move {
                rx.recv().await.map(|append| (append, rx))
            })
            .inspect(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            })
            .boxed();
            publish.send(append_of(&[10])).expect("publish");
            let mut results =
                send_appends(conn, input, PIPELINE_DEPTH, Duration::from_secs(5), 1 << 20);
            let conflict = Reply::Raft(RaftReply::Append(AppendEntriesResponse::Conflict));
            assert!(peer.answer_next(conflict).await);
            assert!(matches!(results.next().await, Some(Ok(Err(_)))));
            assert!(results.next().await.is_none());
            // What openraft's next stream would send: it must stay there for that stream. (The
            // send fails once the ended stream has dropped its input, as it should.)
            let _ = publish.send(append_of(&[10]));
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            assert_eq!(
                taken.load(Ordering::SeqCst),
                1,
                "round {round}: the ended stream took the next stream's append"
            );
        }
    }

    #[test]
    fn an_entry_over_the_budget_goes_alone() {
        let pieces = split_to_fit(append_of(&[50_000, 10, 50_000]), 10_000);
        assert_eq!(
            shape(&pieces),
            vec![
                (Some(9), vec![10]),
                (Some(10), vec![11]),
                (Some(11), vec![12])
            ]
        );
    }
}
