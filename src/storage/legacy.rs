//! bincode 1 in storage, in one place. Two uses remain:
//!
//! - reading records of format 1 (bincode 1 of openraft's own serde forms) to migrate them;
//! - the snapshot payload. A snapshot's bytes go to followers verbatim (`InstallSnapshot`), and
//!   a follower running the previous release (protocol 3) decodes them with bincode 1, so while a
//!   cluster may mix releases the payload keeps that encoding, on disk as on the wire. It moves
//!   to the records' encoding only together with a protocol version that every node speaks.

use std::io;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::types::{LogId, StoredMembership};

fn invalid(e: bincode::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// A record as format 1 stored it.
pub(super) fn read_v1<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    bincode::deserialize(bytes).map_err(invalid)
}

/// Snapshot meta as format 1 stored it.
#[derive(Deserialize)]
pub(super) struct SnapshotMetaV1 {
    pub last_log_id: Option<LogId>,
    pub last_membership: StoredMembership,
}

/// A registry change as format 1 stored it.
#[derive(Deserialize)]
pub(super) struct ChangeV1 {
    pub key: String,
    pub value: Option<String>,
}

/// Encodes the snapshot payload (see the module comment for why in bincode 1).
pub(super) fn encode_snapshot_payload<T: Serialize>(payload: &T) -> io::Result<Vec<u8>> {
    bincode::serialize(payload).map_err(invalid)
}

pub(super) fn decode_snapshot_payload<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    bincode::deserialize(bytes).map_err(invalid)
}

/// A record as format 1 wrote it, to make format 1 directories in tests.
#[cfg(test)]
pub(super) fn write_v1<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serialize(value).expect("bincode 1 encodes every record type")
}
