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

/// A record body that is not a single-line JSON object.
#[derive(Debug, thiserror::Error)]
#[error("an event body must be one JSON object on one line: {0}")]
pub struct BodyError(&'static str);

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

    /// Appends the sealed line for `body` (a JSON object) to `out`, with its newline;
    /// returns the record's sequence number. Serializes straight into `out`: a reused
    /// buffer means no allocation per record.
    pub fn seal(&mut self, body: &serde_json::Map<String, serde_json::Value>, out: &mut Vec<u8>) -> u64 {
        let start = out.len();
        serde_json::to_writer(&mut *out, body).expect("a JSON map always serializes");
        self.finish(out, start, body.is_empty())
    }

    /// Like [`Sealer::seal`] for a body that is already JSON text (as the log task
    /// receives it): checked to be one JSON object without raw newlines, then sealed
    /// without being parsed into a map and written again.
    /// With `delivery`, its two fields are added (signed like the rest).
    pub fn seal_json(&mut self, body: &str, delivery: Option<Delivery>, out: &mut Vec<u8>) -> Result<u64, BodyError> {
        let body = body.trim_ascii();
        if !body.starts_with('{') || !body.ends_with('}') {
            return Err(BodyError("not an object"));
        }
        if body.contains('\n') {
            return Err(BodyError("contains a newline"));
        }
        if serde_json::from_str::<serde::de::IgnoredAny>(body).is_err() {
            return Err(BodyError("not valid JSON"));
        }
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
        Ok(self.finish(out, start, empty))
    }

    /// `out[start..]` holds a serialized object: replaces its closing brace by the
    /// integrity fields and the tag.
    fn finish(&mut self, out: &mut Vec<u8>, start: usize, empty: bool) -> u64 {
        debug_assert_eq!(out.last(), Some(&b'}'));
        out.pop();
        if !empty {
            out.push(b',');
        }
        let seq = self.last_seq + 1;
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
        seq
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
        first.seal(&body, &mut lines);
        first.seal(&body, &mut lines);
        let lines = String::from_utf8(lines).expect("UTF-8");
        let records: Vec<serde_json::Value> = lines.lines().map(|line| serde_json::from_str(line).expect("JSON")).collect();
        assert_eq!(records[0]["seq"], 1);
        assert_eq!(records[0]["prev_tag"], GENESIS_TAG);
        assert_eq!(records[1]["prev_tag"], records[0]["hmac"]);
        assert!(lines.lines().all(|line| line.starts_with("{\"type\":\"event\",\"n\":1,\"seq\":")));

        let mut again = Sealer::new("node-a", LogKey::from_bytes([7; 32]), 0, GENESIS_TAG);
        let mut same = Vec::new();
        again.seal(&body, &mut same);
        again.seal(&body, &mut same);
        let same = String::from_utf8(same).expect("UTF-8");
        assert_eq!(lines, same, "same key, node and records: byte-identical lines");

        let mut other_node = Sealer::new("node-b", LogKey::from_bytes([7; 32]), 0, GENESIS_TAG);
        let mut other = Vec::new();
        other_node.seal(&body, &mut other);
        let other = String::from_utf8(other).expect("UTF-8");
        assert_ne!(other.lines().next(), lines.lines().next(), "the node is part of the tag");
    }
}
