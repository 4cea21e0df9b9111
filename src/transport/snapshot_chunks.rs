//! Snapshots in pieces (protocol 5): the sender cuts a snapshot into `SnapshotChunk`s of at most
//! `chunk_bytes`, sent one after the other on the peer's connection; the listener assembles
//! them per connection and installs the snapshot when the last piece is in.
//!
//! Why: sent whole, a snapshot had to fit in one WebSocket message, so a state larger than
//! `maxFrameBytes` could never reach a new or lagging node; and one large message held up every
//! append and heartbeat queued behind it on the same connection. In pieces, the frame limit
//! bounds a piece, not the state, and Raft's traffic passes between the pieces.

use super::codec::SnapshotChunk;
use crate::types::{LogId, StoredMembership, Vote};

/// The largest piece sent: large enough that a snapshot of hundreds of MB takes a few hundred
/// round trips, small enough that an append waits at most about a millisecond behind one.
const LARGEST_CHUNK_BYTES: usize = 1 << 20;

/// The largest snapshot a listener assembles. A peer is authenticated before it can send one,
/// so this guards against a broken sender, not a hostile one.
pub const LARGEST_SNAPSHOT_BYTES: u64 = 1 << 34;

/// The size of the pieces sent under a frame limit of `max_frame_bytes`: half of it at most, the
/// other half left for the piece's header and the membership it carries.
pub fn chunk_bytes(max_frame_bytes: usize) -> usize {
    (max_frame_bytes / 2).clamp(1, LARGEST_CHUNK_BYTES)
}

/// The pieces of one snapshot, in order; at least one, so that an empty snapshot is sent too.
pub fn chunks<'a>(
    vote: &'a Vote,
    last_log_id: &'a Option<LogId>,
    last_membership: &'a StoredMembership,
    data: &'a [u8],
    chunk_bytes: usize,
) -> impl Iterator<Item = SnapshotChunk> + 'a {
    let pieces = data.len().div_ceil(chunk_bytes.max(1)).max(1);
    (0..pieces).map(move |i| {
        let from = (i * chunk_bytes).min(data.len());
        let to = (from + chunk_bytes).min(data.len());
        SnapshotChunk {
            vote: vote.clone(),
            last_log_id: *last_log_id,
            last_membership: last_membership.clone(),
            total_bytes: data.len() as u64,
            offset: from as u64,
            data: data[from..to].to_vec(),
        }
    })
}

/// A snapshot whose every piece arrived.
#[derive(Debug)]
pub struct Assembled {
    pub vote: Vote,
    pub last_log_id: Option<LogId>,
    pub last_membership: StoredMembership,
    pub data: Vec<u8>,
}

/// What a piece did to the transfer a connection is assembling.
#[derive(Debug)]
pub enum Progress {
    /// Taken; more pieces are due.
    Partial,
    /// The last piece: the snapshot is whole.
    Complete(Assembled),
    /// Not taken, and the transfer is dropped: the sender starts over with a fresh transfer.
    Refused(String),
}

/// The transfer one connection is assembling, if any. A connection carries one at a time: the
/// sender waits for each piece's answer before it sends the next.
#[derive(Default)]
pub struct Assembly {
    current: Option<Assembled>,
    total_bytes: u64,
}

impl Assembly {
    pub fn take(&mut self, chunk: SnapshotChunk) -> Progress {
        if chunk.offset == 0 {
            if chunk.total_bytes > LARGEST_SNAPSHOT_BYTES {
                self.current = None;
                return Progress::Refused(format!(
                    "a snapshot of {} bytes is over the limit of {LARGEST_SNAPSHOT_BYTES}",
                    chunk.total_bytes
                ));
            }
            // A piece at offset 0 starts a transfer, replacing one a sender gave up on.
            self.total_bytes = chunk.total_bytes;
            self.current = Some(Assembled {
                vote: chunk.vote.clone(),
                last_log_id: chunk.last_log_id,
                last_membership: chunk.last_membership.clone(),
                data: Vec::with_capacity(chunk.data.len()),
            });
        }
        let Some(current) = self.current.as_mut() else {
            return Progress::Refused(format!(
                "a snapshot piece at offset {} with no transfer started",
                chunk.offset
            ));
        };
        let same_transfer = current.vote == chunk.vote
            && current.last_log_id == chunk.last_log_id
            && self.total_bytes == chunk.total_bytes;
        let in_order = current.data.len() as u64 == chunk.offset;
        let fits = chunk.offset + chunk.data.len() as u64 <= self.total_bytes;
        if !(same_transfer && in_order && fits) {
            let why = format!(
                "a snapshot piece at offset {} of {} does not continue the transfer at {} of {}",
                chunk.offset,
                chunk.total_bytes,
                current.data.len(),
                self.total_bytes
            );
            self.current = None;
            return Progress::Refused(why);
        }
        current.data.extend_from_slice(&chunk.data);
        if current.data.len() as u64 == self.total_bytes {
            return match self.current.take() {
                Some(done) => Progress::Complete(done),
                None => Progress::Refused("the transfer vanished".into()),
            };
        }
        Progress::Partial
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::vote::leader_id_std::CommittedLeaderId;
    use openraft::LogId as RaftLogId;

    fn vote(term: u64) -> Vote {
        openraft::impls::Vote::new(term, "node-1".into())
    }

    fn pieces(v: &Vote, index: u64, data: &[u8], size: usize) -> Vec<SnapshotChunk> {
        let last = Some(RaftLogId::new(
            CommittedLeaderId::new(v.leader_id.term),
            index,
        ));
        let membership = StoredMembership::default();
        chunks(v, &last, &membership, data, size).collect()
    }

    fn complete(progress: Progress) -> Assembled {
        match progress {
            Progress::Complete(done) => done,
            other => panic!("expected the snapshot whole, got {other:?}"),
        }
    }

    #[test]
    fn pieces_reassemble_to_the_snapshot() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        for size in [1, 7, 4096, 9_999, 10_000, 1 << 20] {
            let mut assembly = Assembly::default();
            let all = pieces(&vote(2), 40, &data, size);
            assert_eq!(all.len(), data.len().div_ceil(size));
            let last = all.len() - 1;
            let mut done = None;
            for (i, piece) in all.into_iter().enumerate() {
                match assembly.take(piece) {
                    Progress::Partial => assert!(i < last, "piece {i} of size {size}"),
                    Progress::Complete(d) => {
                        assert_eq!(i, last);
                        done = Some(d);
                    }
                    Progress::Refused(why) => panic!("{why}"),
                }
            }
            let done = done.expect("the last piece completes the snapshot");
            assert_eq!(done.data, data, "pieces of {size} bytes");
            assert_eq!(done.vote, vote(2));
            assert_eq!(done.last_log_id.map(|l| l.index), Some(40));
        }
    }

    #[test]
    fn an_empty_snapshot_is_one_piece() {
        let all = pieces(&vote(1), 3, &[], 1024);
        assert_eq!(all.len(), 1);
        let mut assembly = Assembly::default();
        let done = complete(assembly.take(all.into_iter().next().expect("one piece")));
        assert!(done.data.is_empty());
    }

    #[test]
    fn a_gap_or_a_stranger_drops_the_transfer() {
        let data = vec![9u8; 100];
        let all = pieces(&vote(2), 40, &data, 10);

        let mut assembly = Assembly::default();
        assert!(matches!(
            assembly.take(pieces(&vote(2), 40, &data, 10).remove(0)),
            Progress::Partial
        ));
        // The piece after a missing one.
        assert!(matches!(
            assembly.take(pieces(&vote(2), 40, &data, 10).remove(2)),
            Progress::Refused(_)
        ));
        // Nothing continues a dropped transfer.
        assert!(matches!(
            assembly.take(pieces(&vote(2), 40, &data, 10).remove(1)),
            Progress::Refused(_)
        ));

        // A piece of another snapshot in the middle of a transfer.
        let mut assembly = Assembly::default();
        let mut it = all.into_iter();
        assert!(matches!(
            assembly.take(it.next().expect("first")),
            Progress::Partial
        ));
        assert!(matches!(
            assembly.take(pieces(&vote(2), 41, &data, 10).remove(1)),
            Progress::Refused(_)
        ));
    }

    #[test]
    fn a_new_transfer_replaces_one_given_up() {
        let old = vec![1u8; 100];
        let new = vec![2u8; 30];
        let mut assembly = Assembly::default();
        assert!(matches!(
            assembly.take(pieces(&vote(2), 40, &old, 10).remove(0)),
            Progress::Partial
        ));
        let mut last = None;
        for piece in pieces(&vote(3), 50, &new, 10) {
            last = Some(assembly.take(piece));
        }
        let done = complete(last.expect("pieces"));
        assert_eq!(done.data, new);
        assert_eq!(done.vote, vote(3));
    }

    #[test]
    fn a_piece_past_the_announced_size_is_refused() {
        let mut assembly = Assembly::default();
        let mut piece = pieces(&vote(2), 40, &[5u8; 10], 10).remove(0);
        piece.total_bytes = 4;
        assert!(matches!(assembly.take(piece), Progress::Refused(_)));
        let mut huge = pieces(&vote(2), 40, &[5u8; 10], 10).remove(0);
        huge.total_bytes = LARGEST_SNAPSHOT_BYTES + 1;
        assert!(matches!(assembly.take(huge), Progress::Refused(_)));
    }

    #[test]
    fn pieces_fit_the_frame_limit() {
        assert_eq!(chunk_bytes(64 << 20), LARGEST_CHUNK_BYTES);
        assert_eq!(chunk_bytes(256 << 10), 128 << 10);
        assert_eq!(chunk_bytes(1), 1);
    }
}
