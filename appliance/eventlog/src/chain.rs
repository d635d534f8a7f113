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
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.bytes()).expect("HMAC takes keys of any length");
    mac.update(node.as_bytes());
    mac.update(&[0]);
    mac.update(prefix);
    hex::encode(mac.finalize().into_bytes())
}

/// Seals records for one node: sequence numbers and the chained tag.
#[derive(Debug)]
pub struct Sealer {
    node: String,
    key: LogKey,
    last_seq: u64,
    last_tag: String,
}

impl Sealer {
    /// A sealer that continues after `last_seq` / `last_tag` (0 / [`GENESIS_TAG`] for a new log).
    pub fn new(node: &str, key: LogKey, last_seq: u64, last_tag: &str) -> Sealer {
        Sealer { node: node.to_string(), key, last_seq, last_tag: last_tag.to_string() }
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
        &self.last_tag
    }

    /// Appends the sealed line for `body` (a JSON object) to `out`, with its newline;
    /// returns the record's sequence number.
    pub fn seal(&mut self, body: &serde_json::Map<String, serde_json::Value>, out: &mut String) -> u64 {
        let start = out.len();
        let text = serde_json::to_string(body).expect("a JSON map always serializes");
        out.push_str(&text[..text.len() - 1]);
        if !body.is_empty() {
            out.push(',');
        }
        let seq = self.last_seq + 1;
        out.push_str(&format!("\"seq\":{seq},\"prev_tag\":\"{}\",\"key_id\":\"{}\"", self.last_tag, self.key.id()));
        let tag = tag(&self.key, &self.node, &out.as_bytes()[start..]);
        out.push_str(HMAC_FIELD);
        out.push_str(&tag);
        out.push_str("\"}\n");
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
        let mut lines = String::new();
        first.seal(&body, &mut lines);
        first.seal(&body, &mut lines);
        let records: Vec<serde_json::Value> = lines.lines().map(|line| serde_json::from_str(line).expect("JSON")).collect();
        assert_eq!(records[0]["seq"], 1);
        assert_eq!(records[0]["prev_tag"], GENESIS_TAG);
        assert_eq!(records[1]["prev_tag"], records[0]["hmac"]);
        assert!(lines.lines().all(|line| line.starts_with("{\"type\":\"event\",\"n\":1,\"seq\":")));

        let mut again = Sealer::new("node-a", LogKey::from_bytes([7; 32]), 0, GENESIS_TAG);
        let mut same = String::new();
        again.seal(&body, &mut same);
        again.seal(&body, &mut same);
        assert_eq!(lines, same, "same key, node and records: byte-identical lines");

        let mut other_node = Sealer::new("node-b", LogKey::from_bytes([7; 32]), 0, GENESIS_TAG);
        let mut other = String::new();
        other_node.seal(&body, &mut other);
        assert_ne!(other.lines().next(), lines.lines().next(), "the node is part of the tag");
    }
}
