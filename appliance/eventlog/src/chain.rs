//! Sealing records into the chain.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::key::LogKey;

/// The log format, in every header.
pub const SCHEMA: &str = "mldefender-log/1";
/// `prev_tag` of a node's very first record.
pub const GENESIS_TAG: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The marker that starts the tag at the end of every line.
pub(crate) const HMAC_FIELD: &str = ",\"hmac\":\"";

/// The tag of a line: HMAC-SHA256(key, node ‖ 0x00 ‖ line up to `,"hmac":`).
pub(crate) fn tag(key: &LogKey, node: &str, prefix: &[u8]) -> String {
    let mut tag = [0u8; 64];
    tag_into(&keyed(key), node, prefix, &mut tag);
    String::from_utf8(tag.to_vec()).expect("hex is ASCII")
}

fn keyed(key: &LogKey) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key.bytes()).expect("HMAC takes keys of any length")
}

/// Writes the hex tag of `prefix` into `out`, starting from an already keyed MAC (the
/// key schedule is done once per sealer, not once per record).
fn tag_into(keyed: &Hmac<Sha256>, node: &str, prefix: &[u8], out: &mut [u8; 64]) {
    let mut mac = keyed.clone();
    mac.update(node.as_bytes());
    mac.update(&[0]);
    mac.update(prefix);
    hex::encode_to_slice(mac.finalize().into_bytes(), out).expect("64 hex digits for 32 bytes");
}

/// Where a record came from in the producer's stream: written into the record by the
/// log task so that, after a restart, it knows from the log itself (atomically with the
/// records) which of the producer's events it already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Random id of the producer's run (its sequence numbers start again with a new one).
    pub stream: u64,
    /// The producer's sequence number of this event.
    pub seq: u64,
}

/// The field names of [`Delivery`] in a record.
pub(crate) const DELIVERY_STREAM_FIELD: &str = "delivery_stream";
pub(crate) const DELIVERY_SEQ_FIELD: &str = "delivery_seq";

/// Fields the sealer and the writer write themselves: the integrity fields, the
/// delivery fields, the header's fields and the checkpoint's. A body that carries one is
/// refused: a `seq` in a body would give its line two sequence numbers (a duplicate JSON
/// key, which verification refuses), so one bad event would make the rest of its file
/// unreadable; a `signature` or `covered_sha256` would put the writer's names on
/// producer-chosen values.
pub const RESERVED_FIELDS: [&str; 17] = [
    "seq",
    "prev_tag",
    "key_id",
    "hmac",
    DELIVERY_STREAM_FIELD,
    DELIVERY_SEQ_FIELD,
    "schema",
    "file_index",
    "prev_file_last_seq",
    "prev_file_last_tag",
    crate::checkpoint::CHECKPOINT_FIELDS[0],
    crate::checkpoint::CHECKPOINT_FIELDS[1],
    crate::checkpoint::CHECKPOINT_FIELDS[2],
    crate::checkpoint::CHECKPOINT_FIELDS[3],
    crate::checkpoint::CHECKPOINT_FIELDS[4],
    crate::checkpoint::CHECKPOINT_FIELDS[5],
    crate::checkpoint::CHECKPOINT_FIELDS[6],
];

/// The one record type a body handed to the sealer may have. Headers, `recovery`,
/// `retention`, `rejected_event` and `checkpoint` records are the writer's own.
pub const EVENT_TYPE: &str = "event";

/// Why a record body was refused (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("an event body must be one JSON object on one line: {0}")]
    NotOneObject(&'static str),
    #[error("an event body may not carry `{0}`: the log writes that field itself")]
    ReservedKey(String),
    #[error("an event body carries `{0}` twice")]
    DuplicateKey(String),
    #[error("an event body must have \"type\": \"event\", not {0}")]
    NotAnEvent(String),
}

impl BodyError {
    /// The offending key, when the body was refused for one.
    pub fn key(&self) -> Option<&str> {
        match self {
            BodyError::ReservedKey(key) | BodyError::DuplicateKey(key) => Some(key),
            BodyError::NotAnEvent(_) => Some("type"),
            BodyError::NotOneObject(_) => None,
        }
    }
}

/// Why nothing was sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Body(#[from] BodyError),
    /// The previous record had seq `u64::MAX`: a next one would wrap to 0 and repeat the
    /// chain's numbers. Never reached by counting; only a damaged or forged log gets here.
    #[error("the sequence number is exhausted (the last record has seq {})", u64::MAX)]
    SequenceExhausted,
}

/// Checks the top-level keys of a body as the sealer's own fields are checked.
fn check_key(key: &str) -> Result<(), BodyError> {
    if RESERVED_FIELDS.contains(&key) {
        return Err(BodyError::ReservedKey(key.to_string()));
    }
    Ok(())
}

fn check_type(kind: Option<&serde_json::Value>) -> Result<(), BodyError> {
    match kind {
        Some(serde_json::Value::String(kind)) if kind == EVENT_TYPE => Ok(()),
        Some(other) => Err(BodyError::NotAnEvent(other.to_string().chars().take(64).collect())),
        None => Err(BodyError::NotAnEvent("no type".to_string())),
    }
}

/// A map body: `type` must be `event` and no reserved key may appear.
pub(crate) fn check_map_body(body: &serde_json::Map<String, serde_json::Value>) -> Result<(), BodyError> {
    for key in body.keys() {
        check_key(key)?;
    }
    check_type(body.get("type"))
}

/// A JSON text body: valid JSON, one object whose top-level keys are unique and not
/// reserved, with `type` `event`. One pass, without building the object (keys are
/// borrowed from the text unless they hold escapes, which are decoded before the check,
/// as every reader would decode them).
fn check_text_body(body: &str) -> Result<(), BodyError> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

    #[derive(serde::Deserialize)]
    struct Key<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);

    struct TopLevel;
    impl<'de> Visitor<'de> for TopLevel {
        type Value = Result<(), BodyError>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen = std::collections::HashSet::with_capacity(256);
            let mut verdict = Ok(());
            let mut kind = None;
            while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                if key == "type" {
                    kind = Some(map.next_value::<serde_json::Value>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
                if verdict.is_ok() {
                    verdict = check_key(&key);
                }
                if verdict.is_ok() && !seen.insert(key.clone()) {
                    verdict = Err(BodyError::DuplicateKey(key.into_owned()));
                }
            }
            Ok(verdict.and_then(|()| check_type(kind.as_ref())))
        }
    }

    let mut deserializer = serde_json::Deserializer::from_str(body);
    let verdict = deserializer.deserialize_map(TopLevel).map_err(|_| BodyError::NotOneObject("not valid JSON"))?;
    deserializer.end().map_err(|_| BodyError::NotOneObject("not valid JSON"))?;
    verdict
}

/// Seals records for one node: sequence numbers and the chained tag.
pub struct Sealer {
    node: String,
    key: LogKey,
    keyed: Hmac<Sha256>,
    last_seq: u64,
    last_tag: [u8; 64],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("node", &self.node).field("key", &self.key).field("last_seq", &self.last_seq).finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer that continues after `last_seq` / `last_tag` (0 / [`GENESIS_TAG`] for a new log).
    pub fn new(node: &str, key: LogKey, last_seq: u64, last_tag: &str) -> Sealer {
        let mut tag = [b'0'; 64];
        if last_tag.len() == 64 {
            tag.copy_from_slice(last_tag.as_bytes());
        }
        Sealer { node: node.to_string(), keyed: keyed(&key), key, last_seq, last_tag: tag }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn key_id(&self) -> &str {
        self.key.id()
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn last_tag(&self) -> &str {
        std::str::from_utf8(&self.last_tag).expect("hex is ASCII")
    }

    /// Appends the sealed line for an event `body` (a JSON object with `type` `event` and
    /// none of [`RESERVED_FIELDS`]) to `out`, with its newline; returns the record's
    /// sequence number. Serializes straight into `out`: a reused buffer means no
    /// allocation per record. On an error nothing is appended and the chain is unchanged.
    pub fn seal(&mut self, body: &serde_json::Map<String, serde_json::Value>, out: &mut Vec<u8>) -> Result<u64, SealError> {
        check_map_body(body)?;
        self.seal_record(body, out)
    }

    /// Seals one of the writer's own records (a header, `recovery`, `retention`,
    /// `rejected_event`): no check of the body, which this crate builds.
    pub(crate) fn seal_record(&mut self, body: &serde_json::Map<String, serde_json::Value>, out: &mut Vec<u8>) -> Result<u64, SealError> {
        let start = out.len();
        serde_json::to_writer(&mut *out, body).expect("a JSON map always serializes");
        self.finish(out, start, body.is_empty())
    }

    /// Like [`Sealer::seal`] for a body that is already JSON text (as the log task
    /// receives it): checked to be one JSON object without raw newlines, with unique
    /// top-level keys, none of them reserved, and `type` `event`; then sealed without
    /// being parsed into a map and written again.
    /// With `delivery`, its two fields are added (signed like the rest).
    pub fn seal_json(&mut self, body: &str, delivery: Option<Delivery>, out: &mut Vec<u8>) -> Result<u64, SealError> {
        let body = body.trim_ascii();
        if !body.starts_with('{') || !body.ends_with('}') {
            return Err(BodyError::NotOneObject("not an object").into());
        }
        if body.contains('\n') {
            return Err(BodyError::NotOneObject("contains a newline").into());
        }
        check_text_body(body)?;
        let empty = body[1..body.len() - 1].trim_ascii().is_empty();
        let start = out.len();
        out.extend_from_slice(body.as_bytes());
        let mut empty = empty;
        if let Some(Delivery { stream, seq }) = delivery {
            out.pop();
            if !empty {
                out.push(b',');
            }
            out.extend_from_slice(format!("\"{DELIVERY_STREAM_FIELD}\":\"{stream:016x}\",\"{DELIVERY_SEQ_FIELD}\":{seq}}}").as_bytes());
            empty = false;
        }
        self.finish(out, start, empty)
    }

    /// `out[start..]` holds a serialized object: replaces its closing brace by the
    /// integrity fields and the tag. When the sequence is exhausted, `out` is left as it
    /// was before the body was added.
    fn finish(&mut self, out: &mut Vec<u8>, start: usize, empty: bool) -> Result<u64, SealError> {
        debug_assert_eq!(out.last(), Some(&b'}'));
        let Some(seq) = self.last_seq.checked_add(1) else {
            out.truncate(start);
            return Err(SealError::SequenceExhausted);
        };
        out.pop();
        if !empty {
            out.push(b',');
        }
        out.extend_from_slice(b"\"seq\":");
        out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
        out.extend_from_slice(b",\"prev_tag\":\"");
        out.extend_from_slice(&self.last_tag);
        out.extend_from_slice(b"\",\"key_id\":\"");
        out.extend_from_slice(self.key.id().as_bytes());
        out.push(b'"');
        let mut tag = [0u8; 64];
        tag_into(&self.keyed, &self.node, &out[start..], &mut tag);
        out.extend_from_slice(HMAC_FIELD.as_bytes());
        out.extend_from_slice(&tag);
        out.extend_from_slice(b"\"}\n");
        self.last_seq = seq;
        self.last_tag = tag;
        Ok(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_lines_are_json_chained_and_deterministic() {
        let mut body = serde_json::Map::new();
        body.insert("type".to_string(), "event".into());
        body.insert("n".to_string(), 1.into());
        let mut first = Sealer::new("node-a", LogKey::from_bytes([7; 32]), 0, GENESIS_TAG);
        let mut lines = Vec::new();
        first.seal(&body, &mut lines).expect("seal");
        first.seal(&body, &mut lines).expect("seal");
        let lines = String::from_utf8(lines).expect("UTF-8");
        let records: Vec<serde_json::Value> = lines.lines().map(|line| serde_json::from_str(line).expect("JSON")).collect();
        assert_eq!(records[0]["seq"], 1);
        assert_eq!(records[0]["prev_tag"], GENESIS_TAG);
        assert_eq!(records[1]["prev_tag"], records[0]["hmac"]);
        assert!(lines.lines().all(|line| line.starts_with("{\"type\":\"event\",\"n\":1,\"seq\":")));

        let mut again = Sealer::new("node-a", LogKey::from_bytes([7; 32]), 0, GENESIS_TAG);
        let mut same = Vec::new();
        again.seal(&body, &mut same).expect("seal");
        again.seal(&body, &mut same).expect("seal");
        let same = String::from_utf8(same).expect("UTF-8");
        assert_eq!(lines, same, "same key, node and records: byte-identical lines");

        let mut other_node = Sealer::new("node-b", LogKey::from_bytes([7; 32]), 0, GENESIS_TAG);
        let mut other = Vec::new();
        other_node.seal(&body, &mut other).expect("seal");
        let other = String::from_utf8(other).expect("UTF-8");
        assert_ne!(other.lines().next(), lines.lines().next(), "the node is part of the tag");
    }

    #[test]
    fn bodies_with_reserved_or_duplicate_keys_or_another_type_are_refused_and_leave_nothing() {
        let mut sealer = Sealer::new("node-a", LogKey::from_bytes([7; 32]), 0, GENESIS_TAG);
        let mut out = b"kept".to_vec();
        let refused = [
            (r#"{"type":"event","seq":7}"#, BodyError::ReservedKey("seq".to_string())),
            (r#"{"type":"event","hmac":"00"}"#, BodyError::ReservedKey("hmac".to_string())),
            (r#"{"type":"event","prev_tag":"00"}"#, BodyError::ReservedKey("prev_tag".to_string())),
            (r#"{"type":"event","key_id":"00"}"#, BodyError::ReservedKey("key_id".to_string())),
            (r#"{"type":"event","delivery_seq":1}"#, BodyError::ReservedKey("delivery_seq".to_string())),
            (r#"{"type":"event","delivery_stream":"1"}"#, BodyError::ReservedKey("delivery_stream".to_string())),
            (r#"{"type":"event","file_index":1}"#, BodyError::ReservedKey("file_index".to_string())),
            (r#"{"type":"event","s\u0065q":7}"#, BodyError::ReservedKey("seq".to_string())),
            (r#"{"type":"event","signature":"00"}"#, BodyError::ReservedKey("signature".to_string())),
            (r#"{"type":"event","covered_sha256":"00"}"#, BodyError::ReservedKey("covered_sha256".to_string())),
            (r#"{"type":"checkpoint"}"#, BodyError::NotAnEvent("\"checkpoint\"".to_string())),
            (r#"{"type":"event","a":1,"a":2}"#, BodyError::DuplicateKey("a".to_string())),
            (r#"{"type":"event","type":"header"}"#, BodyError::DuplicateKey("type".to_string())),
            (r#"{"type":"header","schema_version":1}"#, BodyError::NotAnEvent("\"header\"".to_string())),
            (r#"{"type":"recovery"}"#, BodyError::NotAnEvent("\"recovery\"".to_string())),
            (r#"{"type":1}"#, BodyError::NotAnEvent("1".to_string())),
            (r#"{"event_id":"x"}"#, BodyError::NotAnEvent("no type".to_string())),
            (r#"{"type":"event"} {"b":1}"#, BodyError::NotOneObject("not valid JSON")),
        ];
        for (body, expected) in refused {
            assert_eq!(sealer.seal_json(body, None, &mut out), Err(SealError::Body(expected)), "{body}");
        }
        assert_eq!((out.as_slice(), sealer.last_seq()), (b"kept".as_slice(), 0), "a refused body leaves no bytes and no seq behind");

        // Nested objects may use any names: only the top level is the record's.
        let nested = r#"{"type":"event","provenance":{"seq":1,"hmac":"x"},"list":[{"type":"header"}]}"#;
        assert_eq!(sealer.seal_json(nested, None, &mut out), Ok(1));
        let mut map = serde_json::Map::new();
        map.insert("type".to_string(), "event".into());
        map.insert("seq".to_string(), 9.into());
        assert_eq!(sealer.seal(&map, &mut out), Err(SealError::Body(BodyError::ReservedKey("seq".to_string()))));
        map.remove("seq");
        map.insert("type".to_string(), "header".into());
        assert!(matches!(sealer.seal(&map, &mut out), Err(SealError::Body(BodyError::NotAnEvent(_)))));
        assert_eq!(sealer.last_seq(), 1);
    }

    #[test]
    fn the_sequence_never_wraps() {
        let mut sealer = Sealer::new("node-a", LogKey::from_bytes([7; 32]), u64::MAX - 1, GENESIS_TAG);
        let mut out = Vec::new();
        assert_eq!(sealer.seal_json(r#"{"type":"event"}"#, None, &mut out), Ok(u64::MAX));
        let written = out.len();
        assert_eq!(sealer.seal_json(r#"{"type":"event"}"#, None, &mut out), Err(SealError::SequenceExhausted));
        let mut map = serde_json::Map::new();
        map.insert("type".to_string(), "event".into());
        assert_eq!(sealer.seal(&map, &mut out), Err(SealError::SequenceExhausted));
        assert_eq!((out.len(), sealer.last_seq()), (written, u64::MAX), "nothing sealed after u64::MAX");
    }
}
