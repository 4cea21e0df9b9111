//! What the admin endpoint asks of a running node beyond the Raft API: a backup.

use std::path::PathBuf;

use super::{Node, NodeError, ERR};

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
            .map_err(|e| NodeError::new(ERR::STORAGE, format!("backup task failed: {e}")))?;
        copied.map_err(|e| {
            let _ = std::fs::remove_file(&to);
            NodeError::new(
                ERR::STORAGE,
                format!("backup to {} failed: {e}", to.display()),
            )
        })
    }
}
