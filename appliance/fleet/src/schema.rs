//! Node names and keys. A node writes only under its own prefixes (etcd RBAC, as
//! tests/fleet/etcd.sh sets it up); every key is parsed back strictly, so a key that does
//! not follow the schema is refused, never guessed at.

use std::fmt;
use std::str::FromStr;

use mld_types::IpPrefix;

/// The root of everything the fleet writes.
pub const ROOT: &str = "/mld/";
/// Where shared blocks live: `/mld/blocks/NODE/PREFIX`.
pub const BLOCKS: &str = "/mld/blocks/";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("node name `{0}` must be 1 to 63 lowercase letters, digits or hyphens, not starting or ending with a hyphen")]
    NodeName(String),
    #[error("key `{key}` is not a shared block key (/mld/blocks/NODE/ADDR_LEN): {why}")]
    BlockKey { key: String, why: String },
}

/// A node's name: its `log.node`, its certificate's CN and its etcd user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

impl NodeName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NodeName {
    type Err = SchemaError;
    fn from_str(name: &str) -> Result<NodeName, SchemaError> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && !name.starts_with('-')
            && !name.ends_with('-')
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if valid {
            Ok(NodeName(name.to_string()))
        } else {
            Err(SchemaError::NodeName(name.to_string()))
        }
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for NodeName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for NodeName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<NodeName, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The key of a shared block: `/mld/blocks/NODE/ADDR_LEN` (the prefix's `/` written as
/// `_`, so that the key has a fixed number of segments).
pub fn block_key(node: &NodeName, prefix: &IpPrefix) -> String {
    format!("{BLOCKS}{node}/{}_{}", prefix.addr(), prefix.len())
}

/// The prefix a node writes its blocks under (what it may write, and what it deletes).
pub fn node_blocks(node: &NodeName) -> String {
    format!("{BLOCKS}{node}/")
}

/// The member key of a node, kept under a lease while it is up.
pub fn member_key(node: &NodeName) -> String {
    format!("{ROOT}nodes/{node}/member")
}

/// Where a node publishes its log's head: under its own prefix, which its etcd role lets
/// it write (and no other node).
pub fn anchor_key(node: &NodeName) -> String {
    format!("{ROOT}nodes/{node}/anchor")
}

/// The node and prefix of a shared block key.
pub fn parse_block_key(key: &str) -> Result<(NodeName, IpPrefix), SchemaError> {
    let error = |why: &str| SchemaError::BlockKey { key: key.chars().take(200).collect(), why: why.to_string() };
    let rest = key.strip_prefix(BLOCKS).ok_or_else(|| error("outside /mld/blocks/"))?;
    let (node, prefix) = rest.split_once('/').ok_or_else(|| error("no prefix segment"))?;
    let node: NodeName = node.parse().map_err(|_| error("not a node name"))?;
    let (addr, len) = prefix.rsplit_once('_').ok_or_else(|| error("the prefix is not ADDR_LEN"))?;
    let addr = addr.parse().map_err(|_| error("not an address"))?;
    let len = len.parse().map_err(|_| error("not a prefix length"))?;
    let prefix = IpPrefix::new(addr, len).map_err(|why| error(&why))?;
    Ok((node, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_what_etcd_users_and_certificates_can_carry() {
        for good in ["gw-1", "berlin", "a", "edge-42-fra"] {
            assert!(good.parse::<NodeName>().is_ok(), "{good}");
        }
        for bad in ["", "-gw", "gw-", "GW1", "gw_1", "gw/1", "gw 1", &"x".repeat(64)] {
            assert!(bad.parse::<NodeName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn block_keys_round_trip_and_anything_else_is_refused_naming_why() {
        let node: NodeName = "gw-1".parse().expect("node");
        for prefix in ["10.66.2.2/32", "10.66.0.0/16", "fd66:2::2/128", "2001:db8::/32"] {
            let prefix: IpPrefix = prefix.parse().expect("prefix");
            let key = block_key(&node, &prefix);
            assert_eq!(parse_block_key(&key), Ok((node.clone(), prefix)), "{key}");
            assert!(key.starts_with(&node_blocks(&node)));
        }
        for (key, why) in [
            ("/mld/nodes/gw-1/member", "outside /mld/blocks/"),
            ("/mld/blocks/gw-1", "no prefix segment"),
            ("/mld/blocks/GW/10.0.0.1_32", "not a node name"),
            ("/mld/blocks/gw-1/10.0.0.1", "the prefix is not ADDR_LEN"),
            ("/mld/blocks/gw-1/10.0.0.1_33", "longer than 32"),
            ("/mld/blocks/gw-1/10.0.0.1_24", "host bits are set"),
            ("/mld/blocks/gw-1/10.0.0.1_32/extra", "not a prefix length"),
        ] {
            let error = parse_block_key(key).expect_err(key).to_string();
            assert!(error.contains(why), "{key}: {error}");
        }
    }
}
