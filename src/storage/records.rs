//! The on-disk form of every durable record, and its conversions to and from openraft's types.
//!
//! Records are this crate's own structs, encoded with postcard: its wire format is specified
//! and frozen for the 1.x series, so what is written today reads back under any later 1.x, and
//! a change of openraft's serde derives (an alpha series, free to change) cannot change what is
//! on disk. A record changes shape only with a new `FORMAT_VERSION` and a migration in
//! `format`.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use openraft::entry::RaftEntry;
use openraft::vote::{RaftLeaderId, RaftVote};
use openraft::{EntryPayload, Membership};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::types::{
    Command, Condition, Entry, LogId, NodeName, PeerAddr, RegistryWrite, SnapshotMeta,
    StoredMembership, TypeConfig, Vote,
};

/// A value stored in LMDB.
pub(crate) trait Record: Sized {
    fn to_bytes(&self) -> io::Result<Vec<u8>>;
    fn from_bytes(bytes: &[u8]) -> io::Result<Self>;
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("stored record: {e}"))
}

fn write<T: Serialize>(form: &T) -> io::Result<Vec<u8>> {
    postcard::to_stdvec(form).map_err(invalid)
}

/// Reads one record, refusing trailing bytes: a record that does not end where its bytes do was
/// written in another format.
fn read<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    let (form, rest) = postcard::take_from_bytes(bytes).map_err(invalid)?;
    if !rest.is_empty() {
        return Err(invalid(format!("{} bytes after the record", rest.len())));
    }
    Ok(form)
}

/// A type stored as its own serde form.
macro_rules! plain_record {
    ($($t:ty),*) => {$(
        impl Record for $t {
            fn to_bytes(&self) -> io::Result<Vec<u8>> {
                write(self)
            }
            fn from_bytes(bytes: &[u8]) -> io::Result<Self> {
                read(bytes)
            }
        }
    )*};
}

/// The way back from a stored form to the value (the forms check what openraft would refuse).
pub(crate) trait FromForm<F>: Sized {
    fn from_form(form: F) -> io::Result<Self>;
}

/// A type stored through a form of ours: `$form` with `From<&$t>` and `FromForm<$form>`.
macro_rules! converted_record {
    ($($t:ty => $form:ty),*) => {$(
        impl Record for $t {
            fn to_bytes(&self) -> io::Result<Vec<u8>> {
                write(&<$form>::from(self))
            }
            fn from_bytes(bytes: &[u8]) -> io::Result<Self> {
                <$t>::from_form(read::<$form>(bytes)?)
            }
        }
    )*};
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogIdForm {
    term: u64,
    index: u64,
}

impl From<&LogId> for LogIdForm {
    fn from(id: &LogId) -> Self {
        LogIdForm {
            term: id.committed_leader_id().term,
            index: id.index(),
        }
    }
}

impl From<LogIdForm> for LogId {
    fn from(f: LogIdForm) -> Self {
        LogId::new_term_index(f.term, f.index)
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct OptionalLogIdForm(Option<LogIdForm>);

impl From<&Option<LogId>> for OptionalLogIdForm {
    fn from(id: &Option<LogId>) -> Self {
        OptionalLogIdForm(id.as_ref().map(LogIdForm::from))
    }
}

impl FromForm<OptionalLogIdForm> for Option<LogId> {
    fn from_form(f: OptionalLogIdForm) -> io::Result<Self> {
        Ok(f.0.map(LogId::from))
    }
}

impl FromForm<LogIdForm> for LogId {
    fn from_form(f: LogIdForm) -> io::Result<Self> {
        Ok(LogId::from(f))
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct VoteForm {
    term: u64,
    voted_for: String,
    committed: bool,
}

impl From<&Vote> for VoteForm {
    fn from(v: &Vote) -> Self {
        VoteForm {
            term: v.leader_id().term,
            voted_for: v.leader_id().voted_for.0.clone(),
            committed: v.is_committed(),
        }
    }
}

impl FromForm<VoteForm> for Vote {
    fn from_form(f: VoteForm) -> io::Result<Self> {
        let leader = <openraft::alias::LeaderIdOf<TypeConfig> as RaftLeaderId>::new(
            f.term,
            NodeName(f.voted_for),
        );
        Ok(<Vote as RaftVote>::from_leader_id(leader, f.committed))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MemberForm {
    node_id: String,
    host: String,
    port: u16,
}

/// A membership: its voter sets (two while a change is joint) and every member's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MembershipForm {
    voter_sets: Vec<Vec<String>>,
    members: Vec<MemberForm>,
}

impl From<&Membership<NodeName, PeerAddr>> for MembershipForm {
    fn from(m: &Membership<NodeName, PeerAddr>) -> Self {
        MembershipForm {
            voter_sets: m
                .get_joint_config()
                .iter()
                .map(|set| set.iter().map(|n| n.0.clone()).collect())
                .collect(),
            members: m
                .nodes()
                .map(|(id, addr)| MemberForm {
                    node_id: id.0.clone(),
                    host: addr.host.clone(),
                    port: addr.port,
                })
                .collect(),
        }
    }
}

impl FromForm<MembershipForm> for Membership<NodeName, PeerAddr> {
    fn from_form(f: MembershipForm) -> io::Result<Self> {
        let sets: Vec<BTreeSet<NodeName>> = f
            .voter_sets
            .into_iter()
            .map(|set| set.into_iter().map(NodeName).collect())
            .collect();
        let members: BTreeMap<NodeName, PeerAddr> = f
            .members
            .into_iter()
            .map(|m| {
                (
                    NodeName(m.node_id),
                    PeerAddr {
                        host: m.host,
                        port: m.port,
                    },
                )
            })
            .collect();
        Membership::new(sets, members).map_err(invalid)
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct StoredMembershipForm {
    log_id: Option<LogIdForm>,
    membership: MembershipForm,
}

impl From<&StoredMembership> for StoredMembershipForm {
    fn from(m: &StoredMembership) -> Self {
        StoredMembershipForm {
            log_id: m.log_id().as_ref().map(LogIdForm::from),
            membership: m.membership().into(),
        }
    }
}

impl FromForm<StoredMembershipForm> for StoredMembership {
    fn from_form(f: StoredMembershipForm) -> io::Result<Self> {
        Ok(StoredMembership::new(
            f.log_id.map(LogId::from),
            Membership::from_form(f.membership)?,
        ))
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) enum ConditionForm {
    Absent,
    Equals(String),
}

#[derive(Serialize, Deserialize)]
pub(crate) struct RegistryWriteForm {
    key: String,
    delete: bool,
    value: Option<String>,
    condition: Option<ConditionForm>,
    also: Vec<RegistryWriteForm>,
}

impl From<&RegistryWrite> for RegistryWriteForm {
    fn from(w: &RegistryWrite) -> Self {
        RegistryWriteForm {
            key: w.key.clone(),
            delete: w.delete,
            value: w.value.clone(),
            condition: w.condition.as_ref().map(|c| match c {
                Condition::Absent => ConditionForm::Absent,
                Condition::Equals(json) => ConditionForm::Equals(json.clone()),
            }),
            also: w.also.iter().map(RegistryWriteForm::from).collect(),
        }
    }
}

impl From<RegistryWriteForm> for RegistryWrite {
    fn from(f: RegistryWriteForm) -> Self {
        RegistryWrite {
            key: f.key,
            delete: f.delete,
            value: f.value,
            condition: f.condition.map(|c| match c {
                ConditionForm::Absent => Condition::Absent,
                ConditionForm::Equals(json) => Condition::Equals(json),
            }),
            also: f.also.into_iter().map(RegistryWrite::from).collect(),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct CommandForm {
    json: String,
    op_id: Option<String>,
    proposed_at_ms: u64,
    registry: Option<RegistryWriteForm>,
}

impl From<&Command> for CommandForm {
    fn from(c: &Command) -> Self {
        CommandForm {
            json: c.json.clone(),
            op_id: c.op_id.clone(),
            proposed_at_ms: c.proposed_at_ms,
            registry: c.registry.as_ref().map(RegistryWriteForm::from),
        }
    }
}

impl From<CommandForm> for Command {
    fn from(f: CommandForm) -> Self {
        Command {
            json: f.json,
            op_id: f.op_id,
            proposed_at_ms: f.proposed_at_ms,
            registry: f.registry.map(RegistryWrite::from),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) enum PayloadForm {
    Blank,
    Command(CommandForm),
    Membership(MembershipForm),
}

#[derive(Serialize, Deserialize)]
pub(crate) struct EntryForm {
    log_id: LogIdForm,
    payload: PayloadForm,
}

impl From<&Entry> for EntryForm {
    fn from(e: &Entry) -> Self {
        EntryForm {
            log_id: (&e.log_id).into(),
            payload: match &e.payload {
                EntryPayload::Blank => PayloadForm::Blank,
                EntryPayload::Normal(cmd) => PayloadForm::Command(cmd.into()),
                EntryPayload::Membership(m) => PayloadForm::Membership(m.into()),
            },
        }
    }
}

impl FromForm<EntryForm> for Entry {
    fn from_form(f: EntryForm) -> io::Result<Self> {
        let log_id = LogId::from(f.log_id);
        Ok(match f.payload {
            PayloadForm::Blank => <Entry as RaftEntry>::new_blank(log_id),
            PayloadForm::Command(cmd) => <Entry as RaftEntry>::new_normal(log_id, cmd.into()),
            PayloadForm::Membership(m) => {
                <Entry as RaftEntry>::new_membership(log_id, Membership::from_form(m)?)
            }
        })
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotMetaForm {
    last_log_id: Option<LogIdForm>,
    last_membership: StoredMembershipForm,
}

impl From<&SnapshotMeta> for SnapshotMetaForm {
    fn from(m: &SnapshotMeta) -> Self {
        SnapshotMetaForm {
            last_log_id: m.last_log_id.as_ref().map(LogIdForm::from),
            last_membership: (&m.last_membership).into(),
        }
    }
}

impl FromForm<SnapshotMetaForm> for SnapshotMeta {
    fn from_form(f: SnapshotMetaForm) -> io::Result<Self> {
        Ok(SnapshotMeta {
            last_log_id: f.last_log_id.map(LogId::from),
            last_membership: StoredMembership::from_form(f.last_membership)?,
        })
    }
}

converted_record!(
    LogId => LogIdForm,
    Option<LogId> => OptionalLogIdForm,
    Vote => VoteForm,
    StoredMembership => StoredMembershipForm,
    Entry => EntryForm,
    SnapshotMeta => SnapshotMetaForm
);

plain_record!(
    super::OpRecord,
    super::history::StoredChange,
    crate::ops::LoggedOp,
    crate::ops::WindowState
);

#[cfg(test)]
mod tests {
    use super::*;

    fn membership() -> Membership<NodeName, PeerAddr> {
        let addr = |port| PeerAddr {
            host: "127.0.0.1".into(),
            port,
        };
        Membership::new(
            vec![
                BTreeSet::from([NodeName::from("a"), NodeName::from("b")]),
                BTreeSet::from([NodeName::from("b"), NodeName::from("c")]),
            ],
            BTreeMap::from([
                (NodeName::from("a"), addr(1)),
                (NodeName::from("b"), addr(2)),
                (NodeName::from("c"), addr(3)),
                (NodeName::from("learner"), addr(4)),
            ]),
        )
        .expect("membership")
    }

    fn round_trip<T: Record>(value: &T) -> T {
        T::from_bytes(&value.to_bytes().expect("encode")).expect("decode")
    }

    #[test]
    fn every_record_reads_back_as_written() {
        let id = LogId::new_term_index(7, 42);
        assert_eq!(round_trip(&id), id);
        assert_eq!(round_trip(&Some(id)), Some(id));
        assert_eq!(round_trip(&None::<LogId>), None);
        let vote = Vote::new_committed(9, NodeName::from("node-2"));
        assert_eq!(round_trip(&vote), vote);
        let stored = StoredMembership::new(Some(id), membership());
        assert_eq!(round_trip(&stored), stored);
        let cmd = Command {
            json: r#"{"a":1}"#.into(),
            op_id: Some("op".into()),
            proposed_at_ms: 5,
            registry: Some(RegistryWrite {
                key: "k".into(),
                delete: false,
                value: Some("1".into()),
                condition: Some(Condition::Equals("0".into())),
                also: vec![RegistryWrite::plain("j".into(), true)],
            }),
        };
        for entry in [
            <Entry as RaftEntry>::new_blank(id),
            <Entry as RaftEntry>::new_normal(id, cmd),
            <Entry as RaftEntry>::new_membership(id, membership()),
        ] {
            assert_eq!(round_trip(&entry), entry);
        }
        let meta = SnapshotMeta {
            last_log_id: Some(id),
            last_membership: stored,
        };
        assert_eq!(round_trip(&meta), meta);
    }

    #[test]
    fn a_record_with_bytes_left_over_or_cut_short_is_refused() {
        let mut bytes = LogId::new_term_index(1, 2).to_bytes().expect("encode");
        assert!(LogId::from_bytes(&bytes[..1]).is_err());
        bytes.push(0);
        assert!(LogId::from_bytes(&bytes).is_err());
    }
}
