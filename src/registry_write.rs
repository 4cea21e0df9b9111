//! Writes to the replicated registry carried by a command, and their serde form.
//!
//! The serde form is what crosses the wire (bincode 1, see `transport::codec`) and what storage
//! format 1 held; storage now keeps its own form (`storage::records`). The first release encoded
//! a command's registry write as bincode's `Option<(key, delete)>`: a tag byte 0 or 1, then the
//! pair. Nodes of that release, and format 1 directories being migrated, must still be understood,
//! and bincode cannot tell a missing trailing field from a truncated entry, so the richer write
//! (explicit value, condition, batch) takes tag 2 instead of growing the old shape. A write that
//! uses none of the new parts is still encoded with tag 1, byte for byte as before.

use serde::{Deserialize, Serialize};

/// A write to the replicated registry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RegistryWrite {
    pub key: String,
    pub delete: bool,
    /// JSON stored under `key`; `None` stores the command's own JSON (the first release's form).
    pub value: Option<String>,
    /// The write (and everything in `also`) takes effect only if `key` holds this now.
    pub condition: Option<Condition>,
    /// Further writes applied in the same entry, atomically with this one.
    pub also: Vec<RegistryWrite>,
}

/// What a conditional write expects to find under its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// The key is not set.
    Absent,
    /// The key holds JSON equal to this (as JSON values: object member order does not matter).
    Equals(String),
}

/// LMDB's limit on key size, in bytes.
pub const MAX_KEY_BYTES: usize = 511;

/// A key LMDB can store: checked before a write is proposed, and again when it is applied, where
/// a bad key must not fail the state machine (every replica would fail on the same entry).
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_BYTES
}

impl RegistryWrite {
    /// Every key of the write and of its batch, or the first one LMDB could not store.
    pub fn check_keys(&self) -> Result<(), String> {
        for w in std::iter::once(self).chain(self.also.iter()) {
            if !valid_key(&w.key) {
                return Err(format!(
                    "registry key must be 1 to {MAX_KEY_BYTES} bytes of UTF-8, got {} bytes",
                    w.key.len()
                ));
            }
            if !w.also.is_empty() && !std::ptr::eq(w, self) {
                return Err("only the first write of a batch carries `also`".into());
            }
        }
        Ok(())
    }

    /// A write as the first release knew it: the command's JSON under `key`, or a deletion.
    pub fn plain(key: String, delete: bool) -> Self {
        RegistryWrite {
            key,
            delete,
            ..Default::default()
        }
    }

    fn is_plain(&self) -> bool {
        self.value.is_none() && self.condition.is_none() && self.also.is_empty()
    }
}

/// A registry write as JavaScript describes it (JSON): values are JSON text.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    key: String,
    #[serde(default)]
    delete: bool,
    value: Option<String>,
    if_equals: Option<String>,
    #[serde(default)]
    if_absent: bool,
    #[serde(default)]
    also: Vec<Spec>,
}

impl Spec {
    fn into_write(self) -> Result<RegistryWrite, String> {
        if self.key.is_empty() {
            return Err("registry key must not be empty".into());
        }
        for json in [&self.value, &self.if_equals].into_iter().flatten() {
            serde_json::from_str::<serde::de::IgnoredAny>(json)
                .map_err(|e| format!("registry value for {} is not JSON: {e}", self.key))?;
        }
        let condition = match (self.if_absent, self.if_equals) {
            (true, Some(_)) => return Err("ifAbsent and ifEquals exclude each other".into()),
            (true, None) => Some(Condition::Absent),
            (false, Some(json)) => Some(Condition::Equals(json)),
            (false, None) => None,
        };
        Ok(RegistryWrite {
            key: self.key,
            delete: self.delete,
            value: self.value,
            condition,
            also: self
                .also
                .into_iter()
                .map(Spec::into_write)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl RegistryWrite {
    /// Parses the JSON form `{key, delete?, value?, ifEquals?, ifAbsent?, also?: [...]}`.
    pub fn from_spec_json(spec: &str) -> Result<RegistryWrite, String> {
        let spec: Spec =
            serde_json::from_str(spec).map_err(|e| format!("malformed registry write: {e}"))?;
        let write = spec.into_write()?;
        write.check_keys()?;
        Ok(write)
    }
}

impl Condition {
    /// Whether `current` (the key's JSON, `None` when unset) satisfies the condition. Decided
    /// from replicated data only, so every replica reaches the same verdict.
    pub fn holds(&self, current: Option<&str>) -> bool {
        match (self, current) {
            (Condition::Absent, None) => true,
            (Condition::Absent, Some(_)) | (Condition::Equals(_), None) => false,
            (Condition::Equals(expected), Some(current)) => {
                if expected == current {
                    return true;
                }
                match (
                    serde_json::from_str::<serde_json::Value>(expected),
                    serde_json::from_str::<serde_json::Value>(current),
                ) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => false,
                }
            }
        }
    }
}

/// `#[serde(with)]` codec for `Option<RegistryWrite>` in commands (see the module comment).
pub mod compat {
    use std::fmt;

    use serde::de::{self, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserializer, Serializer};

    use super::RegistryWrite;

    const NONE: u8 = 0;
    const PLAIN: u8 = 1;
    const FULL: u8 = 2;

    pub fn serialize<S: Serializer>(
        value: &Option<RegistryWrite>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            None => {
                let mut t = serializer.serialize_tuple(1)?;
                t.serialize_element(&NONE)?;
                t.end()
            }
            Some(w) if w.is_plain() => {
                let mut t = serializer.serialize_tuple(3)?;
                t.serialize_element(&PLAIN)?;
                t.serialize_element(&w.key)?;
                t.serialize_element(&w.delete)?;
                t.end()
            }
            Some(w) => {
                let mut t = serializer.serialize_tuple(2)?;
                t.serialize_element(&FULL)?;
                t.serialize_element(w)?;
                t.end()
            }
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<RegistryWrite>, D::Error> {
        struct Tagged;
        impl<'de> Visitor<'de> for Tagged {
            type Value = Option<RegistryWrite>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a tagged registry write")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let missing = || de::Error::custom("truncated registry write");
                let tag: u8 = seq.next_element()?.ok_or_else(missing)?;
                match tag {
                    NONE => Ok(None),
                    PLAIN => {
                        let key: String = seq.next_element()?.ok_or_else(missing)?;
                        let delete: bool = seq.next_element()?.ok_or_else(missing)?;
                        Ok(Some(RegistryWrite::plain(key, delete)))
                    }
                    FULL => Ok(Some(seq.next_element()?.ok_or_else(missing)?)),
                    other => Err(de::Error::custom(format!(
                        "unknown registry write tag {other}"
                    ))),
                }
            }
        }
        // The longest form has three elements; bincode reads only those the visitor asks for.
        deserializer.deserialize_tuple(3, Tagged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Command;

    /// The first release's command, field for field.
    #[derive(Serialize)]
    struct OldCommand {
        json: String,
        op_id: Option<String>,
        proposed_at_ms: u64,
        registry: Option<OldWrite>,
    }
    #[derive(Serialize)]
    struct OldWrite {
        key: String,
        delete: bool,
    }

    fn old(registry: Option<OldWrite>) -> OldCommand {
        OldCommand {
            json: r#"{"type":"x"}"#.into(),
            op_id: Some("op-1".into()),
            proposed_at_ms: 7,
            registry,
        }
    }

    #[test]
    fn old_commands_decode_and_plain_writes_encode_as_before() {
        for registry in [
            None,
            Some(OldWrite {
                key: "cluster/n1".into(),
                delete: false,
            }),
            Some(OldWrite {
                key: "cluster/n2".into(),
                delete: true,
            }),
        ] {
            let old = old(registry);
            let bytes = bincode::serialize(&old).expect("encode old");
            let cmd: Command = bincode::deserialize(&bytes).expect("decode old");
            assert_eq!(cmd.json, old.json);
            assert_eq!(cmd.op_id, old.op_id);
            assert_eq!(
                cmd.registry.as_ref().map(|w| (w.key.clone(), w.delete)),
                old.registry.as_ref().map(|w| (w.key.clone(), w.delete))
            );
            assert_eq!(bincode::serialize(&cmd).expect("encode new"), bytes);
        }
    }

    #[test]
    fn full_writes_round_trip_inside_a_sequence() {
        let cmd = Command {
            json: "{}".into(),
            op_id: None,
            proposed_at_ms: 1,
            registry: Some(RegistryWrite {
                key: "state/a".into(),
                delete: false,
                value: Some("1".into()),
                condition: Some(Condition::Equals("0".into())),
                also: vec![RegistryWrite::plain("state/b".into(), true)],
            }),
        };
        // In a sequence the decoder must stop exactly where the write ends.
        let list = vec![cmd.clone(), cmd.clone()];
        let bytes = bincode::serialize(&list).expect("encode");
        let back: Vec<Command> = bincode::deserialize(&bytes).expect("decode");
        assert_eq!(back, list);
    }

    #[test]
    fn keys_lmdb_cannot_store_are_refused() {
        assert!(valid_key("state/a"));
        assert!(!valid_key(""));
        assert!(!valid_key(&"\u{20ac}".repeat(200)));
        let spec = format!(
            r#"{{"key":"a","value":"1","also":[{{"key":"{}","value":"2"}}]}}"#,
            "x".repeat(600)
        );
        assert!(RegistryWrite::from_spec_json(&spec).is_err());
        assert!(RegistryWrite::from_spec_json(r#"{"key":"a","value":"not json"}"#).is_err());
        assert!(
            RegistryWrite::from_spec_json(r#"{"key":"a","ifAbsent":true,"ifEquals":"1"}"#).is_err()
        );
        assert!(RegistryWrite::from_spec_json(r#"{"key":"a","bogus":1}"#).is_err());
    }

    #[test]
    fn conditions_compare_json_values() {
        let eq = Condition::Equals(r#"{"a":1,"b":[1,2]}"#.into());
        assert!(eq.holds(Some(r#"{"b":[1,2],"a":1}"#)));
        assert!(!eq.holds(Some(r#"{"a":2,"b":[1,2]}"#)));
        assert!(!eq.holds(None));
        assert!(Condition::Absent.holds(None));
        assert!(!Condition::Absent.holds(Some("null")));
    }
}
