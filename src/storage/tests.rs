//! openraft's own storage test suite against our LMDB store, plus crash-restart checks.

use std::sync::Arc;

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};

use super::{AppSnapshots, LogStore, StateMachine, Store};
use crate::events::EventSink;
use crate::types::TypeConfig;

struct LmdbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for LmdbBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let io_err = |e: std::io::Error| {
            StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Read, e)
        };
        let dir = tempfile::tempdir().map_err(io_err)?;
        let store = Store::open(dir.path(), 64 << 20)
            .map_err(|e| io_err(std::io::Error::other(e.to_string())))?;
        let (events, _rx) = EventSink::new();
        Ok((
            dir,
            LogStore::new(store.clone()),
            StateMachine::new(
                store,
                events,
                Arc::new(AppSnapshots::new(std::time::Duration::from_secs(1))),
                24 * 3600 * 1000,
            ),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(LmdbBuilder).await
}

#[test]
fn a_data_directory_opens_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Store::open(dir.path(), 1 << 20).expect("first open");
    assert!(matches!(
        Store::open(dir.path(), 1 << 20),
        Err(super::OpenError::Locked(_))
    ));
    drop(first);
    let again: Arc<Store> = Store::open(dir.path(), 1 << 20).expect("reopen after close");
    assert!(!again.has_raft_state().expect("read"));
}
