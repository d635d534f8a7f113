//! A shared block as a node publishes it under `/mld/blocks/NODE/PREFIX`: JSON, unknown
//! fields refused, every field bounded, and checked against the key it came under (a
//! record cannot claim another node or another prefix than its key's).

use mld_types::{DenyReason, IpPrefix};
use serde::{Deserialize, Serialize};

use crate::schema::{parse_block_key, NodeName};

/// The longest a shared block may last (a receiver never holds a remote verdict longer):
/// 30 days.
pub const MAX_TTL_MS: u64 = 30 * 86_400_000;
/// The longest value accepted from etcd (a record is about 200 bytes).
pub const MAX_VALUE_BYTES: usize = 4096;
/// The longest event id accepted.
pub const MAX_EVENT_ID: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SharedBlock {
    pub prefix: IpPrefix,
    pub category: DenyReason,
    /// When the block ends everywhere, Unix ms (absolute: a receiver applies what is left).
    pub expires_at_ms: u64,
    /// When the deciding node decided, Unix ms.
    pub decided_at_ms: u64,
    /// The deciding node (the key's node).
    pub node: NodeName,
    /// The decision's event id in the deciding node's signed log.
    pub event_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error(transparent)]
    Key(#[from] crate::schema::SchemaError),
    #[error("shared block under `{key}`: {why}")]
    Invalid { key: String, why: String },
}

impl SharedBlock {
    /// The value to put under [`crate::schema::block_key`].
    pub fn to_value(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a shared block serializes")
    }

    /// Parses a value read under `key`, and checks it: the key's node and prefix, an
    /// expiry after the decision and at most [`MAX_TTL_MS`] after it, a bounded event id.
    pub fn from_entry(key: &str, value: &[u8]) -> Result<SharedBlock, BlockError> {
        let (node, prefix) = parse_block_key(key)?;
        let invalid = |why: String| BlockError::Invalid { key: key.to_string(), why };
        if value.len() > MAX_VALUE_BYTES {
            return Err(invalid(format!("the value is {} bytes, more than {MAX_VALUE_BYTES}", value.len())));
        }
        let block: SharedBlock = serde_json::from_slice(value).map_err(|error| invalid(format!("not a shared block record: {error}")))?;
        if block.node != node {
            return Err(invalid(format!("the record names node `{}`, the key `{node}`", block.node)));
        }
        if block.prefix != prefix {
            return Err(invalid(format!("the record's prefix {} is not the key's {prefix}", block.prefix)));
        }
        if block.expires_at_ms <= block.decided_at_ms {
            return Err(invalid("it expires before it was decided".to_string()));
        }
        if block.expires_at_ms - block.decided_at_ms > MAX_TTL_MS {
            return Err(invalid(format!("it lasts {} s, more than {} s", (block.expires_at_ms - block.decided_at_ms) / 1000, MAX_TTL_MS / 1000)));
        }
        if block.event_id.is_empty() || block.event_id.len() > MAX_EVENT_ID || !block.event_id.chars().all(|c| c.is_ascii_graphic()) {
            return Err(invalid(format!("the event id must be 1 to {MAX_EVENT_ID} printable characters")));
        }
        Ok(block)
    }

    /// What is left of the block at `now_ms`, in whole seconds rounded up; `None` once
    /// it has expired.
    pub fn remaining_secs(&self, now_ms: u64) -> Option<u64> {
        (self.expires_at_ms > now_ms).then(|| (self.expires_at_ms - now_ms).div_ceil(1000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::block_key;

    pub(crate) fn block(node: &str, prefix: &str, decided: u64, ttl_ms: u64) -> SharedBlock {
        SharedBlock {
            prefix: prefix.parse().expect("prefix"),
            category: DenyReason::Scan,
            expires_at_ms: decided + ttl_ms,
            decided_at_ms: decided,
            node: node.parse().expect("node"),
            event_id: "evt-00000001".to_string(),
        }
    }

    #[test]
    fn a_record_round_trips_and_what_it_has_left_is_rounded_up() {
        let shared = block("gw-1", "10.66.2.2/32", 1_000_000, 3_600_000);
        let key = block_key(&shared.node, &shared.prefix);
        let parsed = SharedBlock::from_entry(&key, &shared.to_value()).expect("parse");
        assert_eq!(parsed, shared);
        assert_eq!(parsed.remaining_secs(1_000_000), Some(3600));
        assert_eq!(parsed.remaining_secs(4_599_001), Some(1), "a part of a second is a second");
        assert_eq!(parsed.remaining_secs(4_600_000), None, "expired");
    }

    #[test]
    fn a_record_that_disagrees_with_its_key_or_its_bounds_is_refused_naming_why() {
        let shared = block("gw-1", "10.66.2.2/32", 1_000_000, 3_600_000);
        let key = block_key(&shared.node, &shared.prefix);
        let other_node = block("gw-2", "10.66.2.2/32", 1_000_000, 3_600_000);
        let other_prefix = block("gw-1", "10.66.2.3/32", 1_000_000, 3_600_000);
        let backwards = SharedBlock { expires_at_ms: 999_999, ..shared.clone() };
        let forever = block("gw-1", "10.66.2.2/32", 1_000_000, MAX_TTL_MS + 1);
        let no_id = SharedBlock { event_id: String::new(), ..shared.clone() };
        let mut unknown = serde_json::to_value(&shared).expect("json");
        unknown["ttl"] = serde_json::json!(5);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (other_node.to_value(), "names node `gw-2`"),
            (other_prefix.to_value(), "is not the key's"),
            (backwards.to_value(), "expires before"),
            (forever.to_value(), "more than 2592000 s"),
            (no_id.to_value(), "event id"),
            (serde_json::to_vec(&unknown).expect("json"), "unknown field"),
            (b"{".to_vec(), "not a shared block record"),
            (vec![b' '; MAX_VALUE_BYTES + 1], "more than 4096"),
        ];
        for (value, why) in cases {
            let error = SharedBlock::from_entry(&key, &value).expect_err(why).to_string();
            assert!(error.contains(why) && error.contains(&key), "{why}: {error}");
        }
    }
}
