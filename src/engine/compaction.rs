//! When a node snapshots its state and purges its log.
//!
//! openraft's own policy snapshots every `n` entries whatever a snapshot costs. A snapshot as
//! sent carries the operation-id window, several MB once it holds its 100,000 ids, and the
//! application's state. Here a snapshot waits for at least `snapshotThreshold` entries, and for
//! as many more as keep the snapshot's bytes per new entry within `SNAPSHOT_BYTES_PER_ENTRY`:
//! the log between snapshots stays in proportion to the state a lagging follower would otherwise
//! be sent, and a state that is large to build costs a bounded amount per write. (Building one
//! no longer copies the id window, which stays in the registry's table until a snapshot is sent.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::type_config::async_runtime::WatchReceiver;
use openraft::RaftMetrics;
use tokio::sync::watch;

use crate::stats::StorageStats;
use crate::types::{Raft, TypeConfig};

/// Snapshot bytes one new log entry may cost: a 6 MB snapshot waits for about 24,000 entries.
pub const SNAPSHOT_BYTES_PER_ENTRY: u64 = 256;

/// A snapshot asked for and not seen finished after this long is asked for again.
const SNAPSHOT_GIVE_UP: Duration = Duration::from_secs(30);

/// The entries after the last snapshot at which the next one is due.
pub fn entries_between_snapshots(threshold: u64, last_snapshot_bytes: u64) -> u64 {
    threshold.max(last_snapshot_bytes / SNAPSHOT_BYTES_PER_ENTRY)
}

fn entries_since_snapshot(m: &RaftMetrics<TypeConfig>) -> u64 {
    let applied = m.last_applied.as_ref().map(|l| l.index()).unwrap_or(0);
    let snapshot = m.snapshot.as_ref().map(|l| l.index()).unwrap_or(0);
    applied.saturating_sub(snapshot)
}

pub async fn snapshot_when_due(
    raft: Raft,
    stats: Arc<StorageStats>,
    threshold: u64,
    mut stop: watch::Receiver<bool>,
) {
    let mut rx = raft.metrics();
    // The snapshot index a snapshot was asked for past, and when: not asked again meanwhile.
    let mut asked: Option<(u64, Instant)> = None;
    loop {
        let (due, snapshot) = {
            let m = rx.borrow_watched();
            let bytes = stats
                .snapshot_bytes
                .load(std::sync::atomic::Ordering::Relaxed);
            (
                entries_since_snapshot(&m) >= entries_between_snapshots(threshold, bytes),
                m.snapshot.as_ref().map(|l| l.index()).unwrap_or(0),
            )
        };
        let waiting =
            asked.is_some_and(|(past, at)| snapshot <= past && at.elapsed() < SNAPSHOT_GIVE_UP);
        if due && !waiting {
            asked = Some((snapshot, Instant::now()));
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::entries_between_snapshots;

    #[test]
    fn a_large_state_waits_for_more_entries() {
        assert_eq!(entries_between_snapshots(1000, 0), 1000);
        assert_eq!(entries_between_snapshots(1000, 100_000), 1000);
        assert_eq!(entries_between_snapshots(1000, 6_000_000), 23_437);
        assert_eq!(entries_between_snapshots(50_000, 6_000_000), 50_000);
    }
}
