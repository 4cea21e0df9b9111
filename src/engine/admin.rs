//! What the admin endpoint asks of a running node beyond the Raft API: a backup and a
//! compaction.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{ErrorCode, Node, NodeError};
use crate::types::TypeConfig;

impl Node {
    /// Writes a compacted, consistent copy of this node's LMDB environment to `to` (a file that
    /// must not exist yet) while the node keeps running; resolves with its size in bytes. The
    /// copy reads one LMDB snapshot, so writes that commit meanwhile are either wholly in it or
    /// not at all.
    pub async fn backup(&self, to: PathBuf) -> Result<u64, NodeError> {
        let store = self.store.clone();
        let target = to.clone();
        let copied = tokio::task::spawn_blocking(move || store.copy_to(&target))
            .await
            .map_err(|e| {
                NodeError::new(ErrorCode::Storage, format!("backup task failed: {e}")).with_cause(e)
            })?;
        copied.map_err(|e| {
            let _ = std::fs::remove_file(&to);
            NodeError::new(
                ErrorCode::Storage,
                format!("backup to {} failed: {e}", to.display()),
            )
            .with_cause(e)
        })
    }

    /// Snapshots the state machine now and purges the log up to `keep` entries before the
    /// snapshot. Resolves with the purge point once both are done.
    pub async fn compact(&self, keep: u64, timeout: Duration) -> Result<Option<u64>, NodeError> {
        let Some(target) = self.metrics().last_applied.map(|l| l.index()) else {
            return Ok(None);
        };
        let stopped = |e: openraft::errors::Fatal<TypeConfig>| {
            NodeError::new(ErrorCode::Shutdown, e.to_string())
        };
        self.raft.trigger().snapshot().await.map_err(stopped)?;
        let deadline = Instant::now() + timeout;
        let snapshotted = self
            .wait_for(deadline, |m| m.snapshot.map(|l| l.index()) >= Some(target))
            .await;
        if !snapshotted {
            let why = if self.backlog.full() {
                "the snapshot did not finish in time: this node applies and snapshots nothing more until its command_applied listeners take what it applied (none is attached, or they are slower than the cluster)"
            } else {
                "the snapshot did not finish in time"
            };
            return Err(NodeError::new(ErrorCode::Timeout, why));
        }
        let snapshot = self.metrics().snapshot.map(|l| l.index()).unwrap_or(target);
        let Some(upto) = snapshot.checked_sub(keep) else {
            return Ok(None);
        };
        self.raft.trigger().purge_log(upto).await.map_err(stopped)?;
        self.wait_for(deadline, |m| m.purged.map(|l| l.index()) >= Some(upto))
            .await;
        Ok(Some(upto))
    }
}
