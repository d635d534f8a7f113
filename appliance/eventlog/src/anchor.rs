//! Log anchors: a node's durable head (sequence number and chain tag) published outside
//! the box (the fleet's etcd, `/mld/nodes/NODE/anchor`). A log verified against its anchors
//! shows whether it was cut back or rewritten after the head left the box: the chain alone
//! cannot, since whoever holds the HMAC key can re-seal a shorter or different chain.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::PathBuf;

use serde::Deserialize;

/// One published head.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Anchor {
    pub node: String,
    pub seq: u64,
    pub hmac: String,
    #[serde(default)]
    pub at_unix_ms: u64,
}

/// What the log says to an anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnchorCheck {
    /// The anchored record is in the log with the anchored tag.
    Holds,
    /// The log ends before the anchored record: it was cut back.
    CutBack { last_seq: u64 },
    /// The anchored record carries another tag: the log was rewritten.
    Rewritten { found: String },
    /// The anchored record is older than the log's first (removed by retention): nothing
    /// to compare.
    BeforeLog { first_seq: u64 },
    /// Another node's anchor.
    OtherNode,
}

impl AnchorCheck {
    /// True when the anchor shows tampering.
    pub fn is_failure(&self) -> bool {
        matches!(self, AnchorCheck::CutBack { .. } | AnchorCheck::Rewritten { .. })
    }
}

/// The anchors in `text`: every line that is a JSON anchor object (other lines, such as
/// the member records or keys `etcdctl get --prefix /mld/nodes/` also prints, are skipped).
pub fn parse_anchors(text: &str) -> Vec<Anchor> {
    text.lines().filter(|line| line.trim_start().starts_with('{')).filter_map(|line| serde_json::from_str::<Anchor>(line.trim()).ok()).collect()
}

/// Checks `anchors` against one node's verified log (`node`, its records `first_seq` ..=
/// `last_seq`), reading the anchored records' tags from `files` (the verified files).
pub fn check_anchors(anchors: &[Anchor], node: &str, first_seq: u64, last_seq: u64, files: &[PathBuf]) -> std::io::Result<Vec<(Anchor, AnchorCheck)>> {
    let wanted: BTreeSet<u64> =
        anchors.iter().filter(|anchor| anchor.node == node && (first_seq..=last_seq).contains(&anchor.seq)).map(|anchor| anchor.seq).collect();
    let tags = record_tags(files, &wanted)?;
    Ok(anchors
        .iter()
        .map(|anchor| {
            let check = if anchor.node != node {
                AnchorCheck::OtherNode
            } else if anchor.seq > last_seq {
                AnchorCheck::CutBack { last_seq }
            } else if anchor.seq < first_seq {
                AnchorCheck::BeforeLog { first_seq }
            } else {
                match tags.get(&anchor.seq) {
                    Some(tag) if *tag == anchor.hmac => AnchorCheck::Holds,
                    Some(tag) => AnchorCheck::Rewritten { found: tag.clone() },
                    None => AnchorCheck::Rewritten { found: "no record with this seq".to_string() },
                }
            };
            (anchor.clone(), check)
        })
        .collect())
}

/// The `hmac` of each record whose `seq` is in `wanted`.
fn record_tags(files: &[PathBuf], wanted: &BTreeSet<u64>) -> std::io::Result<BTreeMap<u64, String>> {
    #[derive(Deserialize)]
    struct Sealed {
        seq: u64,
        hmac: String,
    }
    let mut tags = BTreeMap::new();
    if wanted.is_empty() {
        return Ok(tags);
    }
    for file in files {
        for line in std::io::BufReader::new(std::fs::File::open(file)?).lines() {
            let line = line?;
            if let Ok(record) = serde_json::from_str::<Sealed>(&line) {
                if wanted.contains(&record.seq) {
                    tags.insert(record.seq, record.hmac);
                }
            }
        }
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anchor_finds_a_log_cut_back_or_rewritten_and_passes_an_intact_one() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("events-x.jsonl");
        std::fs::write(&file, "{\"seq\":1,\"hmac\":\"aa\"}\n{\"seq\":2,\"hmac\":\"bb\"}\n{\"seq\":3,\"hmac\":\"cc\"}\n").expect("write");
        let text = "/mld/nodes/gw-a/anchor\n{\"node\":\"gw-a\",\"seq\":2,\"hmac\":\"bb\",\"at_unix_ms\":5}\n{\"node\":\"gw-a\",\"version\":\"0.1.0\"}\n\
                    {\"node\":\"gw-a\",\"seq\":3,\"hmac\":\"zz\"}\n{\"node\":\"gw-a\",\"seq\":9,\"hmac\":\"yy\"}\n{\"node\":\"gw-b\",\"seq\":2,\"hmac\":\"bb\"}\n";
        let anchors = parse_anchors(text);
        assert_eq!(anchors.len(), 4, "the key line and the member record are skipped");
        let checks: Vec<AnchorCheck> = check_anchors(&anchors, "gw-a", 1, 3, &[file]).expect("read").into_iter().map(|(_, check)| check).collect();
        assert_eq!(
            checks,
            vec![AnchorCheck::Holds, AnchorCheck::Rewritten { found: "cc".to_string() }, AnchorCheck::CutBack { last_seq: 3 }, AnchorCheck::OtherNode]
        );
        assert_eq!(checks.iter().filter(|check| check.is_failure()).count(), 2);
    }
}
