//! The napi surface of the operators' tools: a backup of a running node, and the offline
//! commands of the `unrdf-consensus` CLI (restore, recover, export) over a stopped node's data
//! directory. `lib/admin-server.js` and `lib/cli/` wrap them.

use std::io::Write;
use std::path::{Path, PathBuf};

use napi::bindgen_prelude::*;
use napi_derive::napi;

use super::{js_error, NativeNode};
use crate::engine::{ErrorCode, NodeError};
use crate::storage::{open_existing, restore, OfflineError};

/// The offline tools map the environment no larger than this; LMDB grows reads to the file's
/// real size, so this only has to cover what a restore or recover adds.
const OFFLINE_MAP_BYTES: usize = 1 << 30;

fn offline_error(e: OfflineError) -> Error {
    let code = match e.code {
        "ERR_INVALID_OPERATION" => ErrorCode::InvalidOperation,
        _ => ErrorCode::Storage,
    };
    js_error(NodeError::new(code, e.message))
}

/// Map size for a directory: at least its data file, so a large environment opens.
fn map_size(dir: &Path) -> usize {
    let file = std::fs::metadata(dir.join("data.mdb"))
        .map(|m| m.len() as usize)
        .unwrap_or(0);
    OFFLINE_MAP_BYTES.max(file.saturating_mul(2))
}

#[napi(object)]
pub struct NativeRecovered {
    pub node_id: String,
    pub host: String,
    pub port: u32,
    pub previous_voters: Vec<String>,
    pub previous_learners: Vec<String>,
    pub membership_index: f64,
    pub last_applied: Option<f64>,
    pub term: f64,
}

#[napi(object)]
pub struct NativeExported {
    pub entries: f64,
    pub operations: f64,
    pub registry: f64,
}

#[napi]
impl NativeNode {
    /// Writes a consistent, compacted copy of the node's environment to `path` (must not
    /// exist); resolves with its size in bytes.
    #[napi]
    pub async fn backup(&self, path: String) -> Result<f64> {
        let node = self.node()?;
        let bytes = node
            .unless_stopped(node.backup(PathBuf::from(path)))
            .await
            .map_err(js_error)?;
        Ok(bytes as f64)
    }
}

/// Lays the backup `file` down as data directory `dir` (see `storage::restore`).
#[napi]
pub fn offline_restore(file: String, dir: String, force: bool) -> Result<()> {
    let file = PathBuf::from(file);
    let size = std::fs::metadata(&file)
        .map(|m| m.len() as usize)
        .unwrap_or(0);
    restore(
        &file,
        Path::new(&dir),
        force,
        OFFLINE_MAP_BYTES.max(size.saturating_mul(2)),
    )
    .map_err(offline_error)
}

/// Rewrites a stopped node's membership so that it restarts as a one-node cluster with its
/// whole log (see `Store::force_new_cluster`).
#[napi]
pub fn offline_force_new_cluster(dir: String, node_id: Option<String>) -> Result<NativeRecovered> {
    let dir = PathBuf::from(dir);
    let store = open_existing(&dir, map_size(&dir)).map_err(offline_error)?;
    let r = store
        .force_new_cluster(node_id.as_deref())
        .map_err(offline_error)?;
    Ok(NativeRecovered {
        node_id: r.node_id,
        host: r.addr.host,
        port: r.addr.port.into(),
        previous_voters: r.previous_voters,
        previous_learners: r.previous_learners,
        membership_index: r.membership_index as f64,
        last_applied: r.last_applied.map(|i| i as f64),
        term: r.term as f64,
    })
}

/// Writes a stopped node's log, operation registry and replicated registry as NDJSON to `out`
/// (a file path), or to standard output when absent.
#[napi]
pub fn offline_export(dir: String, out: Option<String>) -> Result<NativeExported> {
    let dir = PathBuf::from(dir);
    let store = open_existing(&dir, map_size(&dir)).map_err(offline_error)?;
    let io_err = |e: std::io::Error| {
        js_error(NodeError::new(
            ErrorCode::Storage,
            format!("export failed: {e}"),
        ))
    };
    let counts = match out {
        Some(path) => {
            let file = std::fs::File::create(&path).map_err(io_err)?;
            let mut w = std::io::BufWriter::new(file);
            let counts = store.export_ndjson(&mut w).map_err(io_err)?;
            w.into_inner()
                .map_err(|e| io_err(e.into_error()))?
                .sync_all()
                .map_err(io_err)?;
            counts
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            let counts = store.export_ndjson(&mut w).map_err(io_err)?;
            w.flush().map_err(io_err)?;
            counts
        }
    };
    Ok(NativeExported {
        entries: counts.entries as f64,
        operations: counts.operations as f64,
        registry: counts.registry as f64,
    })
}
