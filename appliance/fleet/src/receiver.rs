//! What a receiving node does with shared blocks: the watch's events one by one, and a
//! full snapshot after a compaction or a partition. Decisions only; the fleet task sends
//! [`Action::Apply`] to the detect task's responder (whose protections and circuit
//! breaker still decide) and [`Action::Remove`] likewise.
//!
//! Guarantees, each tested below:
//! - nothing is applied twice: an event below the last applied revision (a watch resumed
//!   from an older revision) and a put of what is already applied are ignored; the puts of
//!   one transaction share a revision and are each applied;
//! - nothing expired is applied, so a stale snapshot cannot resurrect a block;
//! - after a snapshot, what is applied is exactly the snapshot's unexpired blocks;
//! - the node's own blocks, categories it does not accept, and malformed records are
//!   ignored with the reason;
//! - at most `max_entries` shared blocks are held; beyond, new ones are ignored (counted by
//!   the caller), never an old one silently dropped.

use std::collections::{BTreeMap, HashSet};

use mld_types::{DenyReason, IpPrefix};

use crate::block::SharedBlock;
use crate::schema::{NodeName, BLOCKS};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// This node: its own blocks come back through the watch and are ignored.
    pub own: NodeName,
    /// Apply other nodes' blocks at all.
    pub enabled: bool,
    /// Categories accepted; empty: all.
    pub categories: Vec<DenyReason>,
    pub max_entries: usize,
}

/// A watch event on `/mld/blocks/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put { key: String, value: Vec<u8>, revision: i64 },
    Delete { key: String, revision: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Block `block.prefix` for what is left of it.
    Apply { block: SharedBlock, ttl_secs: u64 },
    /// The deciding node withdrew it (expiry, or `block del` when `expires_at_ms` is still
    /// ahead): remove the entry if it came from this shared block.
    Remove { prefix: IpPrefix, node: NodeName, expires_at_ms: u64 },
    /// Nothing to do, and why (logged when it is a refusal, not a duplicate).
    Ignored { key: String, why: String },
    /// A record that breaks the schema (a key outside it, a malformed or inconsistent
    /// value): a misbehaving writer, to count and log.
    Invalid { key: String, why: String },
}

#[derive(Debug)]
pub struct Receiver {
    config: ReceiverConfig,
    /// Applied shared blocks by key: (prefix, deciding node, expiry in Unix ms).
    applied: BTreeMap<String, (IpPrefix, NodeName, u64)>,
    revision: i64,
}

impl Receiver {
    pub fn new(config: ReceiverConfig) -> Receiver {
        Receiver { config, applied: BTreeMap::new(), revision: 0 }
    }

    /// The last revision applied: a watch resumes from the one after it.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    pub fn applied(&self) -> usize {
        self.applied.len()
    }

    pub fn on_event(&mut self, event: WatchEvent, now_ms: u64) -> Action {
        let (key, revision) = match &event {
            WatchEvent::Put { key, revision, .. } | WatchEvent::Delete { key, revision } => (key.clone(), *revision),
        };
        // Below, not at: the puts of one transaction share its revision (a publisher's
        // batch), and a re-delivered put at the last revision is caught as already applied.
        if revision < self.revision {
            return Action::Ignored { key, why: format!("revision {revision} was applied before (last {})", self.revision) };
        }
        self.revision = revision;
        match event {
            WatchEvent::Put { key, value, .. } => self.put(key, &value, now_ms),
            WatchEvent::Delete { key, .. } => match self.applied.remove(&key) {
                Some((prefix, node, expires_at_ms)) => Action::Remove { prefix, node, expires_at_ms },
                None => Action::Ignored { key, why: "not applied here".to_string() },
            },
        }
    }

    /// Replaces what is applied with a snapshot read at `revision` (after a compaction,
    /// or on start): applies what is missing, removes what is gone.
    pub fn resync(&mut self, snapshot: Vec<(String, Vec<u8>)>, revision: i64, now_ms: u64) -> Vec<Action> {
        let present: HashSet<&String> = snapshot.iter().map(|(key, _)| key).collect();
        let gone: Vec<String> = self.applied.keys().filter(|key| !present.contains(key)).cloned().collect();
        let mut actions: Vec<Action> = gone
            .into_iter()
            .filter_map(|key| self.applied.remove(&key).map(|(prefix, node, expires_at_ms)| Action::Remove { prefix, node, expires_at_ms }))
            .collect();
        for (key, value) in snapshot {
            actions.push(self.put(key, &value, now_ms));
        }
        self.revision = self.revision.max(revision);
        actions
    }

    /// Forgets shared blocks past their expiry (the deny map's TTL has removed them).
    pub fn expire(&mut self, now_ms: u64) {
        self.applied.retain(|_, (_, _, expires)| *expires > now_ms);
    }

    fn put(&mut self, key: String, value: &[u8], now_ms: u64) -> Action {
        let ignored = |key: String, why: String| Action::Ignored { key, why };
        if !key.starts_with(BLOCKS) {
            return Action::Invalid { key, why: "outside /mld/blocks/".to_string() };
        }
        let block = match SharedBlock::from_entry(&key, value) {
            Ok(block) => block,
            Err(error) => return Action::Invalid { key, why: error.to_string() },
        };
        if block.node == self.config.own {
            return ignored(key, "this node's own block".to_string());
        }
        if !self.config.enabled {
            return ignored(key, "receiving shared blocks is off".to_string());
        }
        if !self.config.categories.is_empty() && !self.config.categories.contains(&block.category) {
            return ignored(key, format!("category {} is not accepted here", block.category));
        }
        let Some(ttl_secs) = block.remaining_secs(now_ms) else {
            return ignored(key, "expired".to_string());
        };
        if self.applied.get(&key).is_some_and(|(_, _, expires)| *expires == block.expires_at_ms) {
            return ignored(key, "already applied".to_string());
        }
        if !self.applied.contains_key(&key) && self.applied.len() >= self.config.max_entries {
            return ignored(key, format!("{} shared blocks held, the most allowed", self.config.max_entries));
        }
        self.applied.insert(key, (block.prefix, block.node.clone(), block.expires_at_ms));
        Action::Apply { block, ttl_secs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::block_key;

    const NOW: u64 = 1_800_000_000_000;

    fn receiver(max_entries: usize) -> Receiver {
        Receiver::new(ReceiverConfig { own: "gw-b".parse().expect("node"), enabled: true, categories: Vec::new(), max_entries })
    }

    fn entry(node: &str, prefix: &str, ttl_ms: u64, category: DenyReason) -> (String, Vec<u8>) {
        let block = SharedBlock {
            prefix: prefix.parse().expect("prefix"),
            category,
            expires_at_ms: NOW + ttl_ms,
            decided_at_ms: NOW,
            node: node.parse().expect("node"),
            event_id: "evt-1".to_string(),
        };
        (block_key(&block.node, &block.prefix), block.to_value())
    }

    fn put(entry: (String, Vec<u8>), revision: i64) -> WatchEvent {
        WatchEvent::Put { key: entry.0, value: entry.1, revision }
    }

    fn why(action: &Action) -> &str {
        match action {
            Action::Ignored { why, .. } | Action::Invalid { why, .. } => why,
            other => panic!("expected an ignored event, got {other:?}"),
        }
    }

    #[test]
    fn a_block_is_applied_once_with_what_is_left_and_a_replayed_watch_changes_nothing() {
        let mut receiver = receiver(16);
        let scan = entry("gw-a", "10.66.2.2/32", 3_600_000, DenyReason::Scan);
        let action = receiver.on_event(put(scan.clone(), 10), NOW + 600_000);
        assert!(matches!(&action, Action::Apply { ttl_secs: 3000, .. }), "{action:?}");
        assert!(why(&receiver.on_event(put(scan.clone(), 10), NOW)).contains("already applied"), "the same event again");
        assert!(why(&receiver.on_event(put(scan.clone(), 11), NOW)).contains("already applied"), "a re-put");
        // Another block of the same transaction (the same revision) is applied.
        let other = entry("gw-a", "10.66.2.3/32", 3_600_000, DenyReason::Scan);
        assert!(matches!(receiver.on_event(put(other, 11), NOW), Action::Apply { .. }), "one transaction's puts share a revision");
        assert!(why(&receiver.on_event(put(scan.clone(), 9), NOW)).contains("was applied before"), "an older revision");
        let removed = receiver.on_event(WatchEvent::Delete { key: scan.0.clone(), revision: 12 }, NOW);
        assert_eq!(
            removed,
            Action::Remove { prefix: "10.66.2.2/32".parse().expect("prefix"), node: "gw-a".parse().expect("node"), expires_at_ms: NOW + 3_600_000 }
        );
        assert_eq!(receiver.revision(), 12);
        assert!(why(&receiver.on_event(WatchEvent::Delete { key: scan.0, revision: 13 }, NOW)).contains("not applied"));
    }

    #[test]
    fn its_own_blocks_refused_categories_expired_and_malformed_records_are_ignored_with_the_reason() {
        let mut receiver = Receiver::new(ReceiverConfig {
            own: "gw-b".parse().expect("node"),
            enabled: true,
            categories: vec![DenyReason::Scan, DenyReason::Flood],
            max_entries: 16,
        });
        let cases = [
            (entry("gw-b", "10.66.2.2/32", 60_000, DenyReason::Scan), "own block"),
            (entry("gw-a", "10.66.2.3/32", 60_000, DenyReason::BruteForce), "category brute-force is not accepted"),
            (entry("gw-a", "10.66.2.4/32", 60_000, DenyReason::Scan), "expired"),
            (("/mld/blocks/gw-a/10.66.2.5_32".to_string(), b"{}".to_vec()), "not a shared block record"),
        ];
        for (revision, (entry, expected)) in cases.into_iter().enumerate() {
            let now = if expected == "expired" { NOW + 60_000 } else { NOW };
            let action = receiver.on_event(put(entry, revision as i64 + 1), now);
            assert!(why(&action).contains(expected), "{expected}: {action:?}");
        }
        let mut off = Receiver::new(ReceiverConfig { own: "gw-b".parse().expect("node"), enabled: false, categories: Vec::new(), max_entries: 16 });
        assert!(why(&off.on_event(put(entry("gw-a", "10.66.2.2/32", 60_000, DenyReason::Scan), 1), NOW)).contains("off"));
        assert_eq!(receiver.applied() + off.applied(), 0);
    }

    #[test]
    fn a_snapshot_after_a_partition_applies_what_is_missing_removes_what_is_gone_and_resurrects_nothing() {
        let mut receiver = receiver(16);
        let kept = entry("gw-a", "10.66.2.2/32", 3_600_000, DenyReason::Scan);
        let withdrawn = entry("gw-a", "10.66.2.3/32", 3_600_000, DenyReason::Scan);
        receiver.on_event(put(kept.clone(), 5), NOW);
        receiver.on_event(put(withdrawn, 6), NOW);
        // While partitioned: gw-a withdrew one block, gw-c decided another, and an old
        // one of gw-c's has expired but its key is still there (its lease not yet reaped).
        let new = entry("gw-c", "10.66.2.9/32", 600_000, DenyReason::Flood);
        let stale = entry("gw-c", "10.66.2.10/32", 1_000, DenyReason::Flood);
        let actions = receiver.resync(vec![kept, new, stale], 40, NOW + 10_000);
        let removed: Vec<&Action> = actions.iter().filter(|action| matches!(action, Action::Remove { .. })).collect();
        let applied: Vec<&Action> = actions.iter().filter(|action| matches!(action, Action::Apply { .. })).collect();
        assert_eq!(removed.len(), 1, "{actions:?}");
        assert!(matches!(removed[0], Action::Remove { prefix, .. } if prefix.to_string() == "10.66.2.3/32"));
        assert_eq!(applied.len(), 1, "only the new one: the kept one is applied already, the stale one expired: {actions:?}");
        assert!(actions.iter().any(|action| matches!(action, Action::Ignored { why, .. } if why == "expired")));
        assert_eq!((receiver.applied(), receiver.revision()), (2, 40));
        // The watch resumes after the snapshot's revision: older events change nothing.
        assert!(why(&receiver.on_event(WatchEvent::Delete { key: "/mld/blocks/gw-a/10.66.2.2_32".to_string(), revision: 39 }, NOW)).contains("applied before"));
    }

    #[test]
    fn the_held_blocks_are_bounded_and_expiry_makes_room() {
        let mut receiver = receiver(2);
        for (index, revision) in [(1, 1), (2, 2)] {
            let action = receiver.on_event(put(entry("gw-a", &format!("10.66.3.{index}/32"), 1_000, DenyReason::Scan), revision), NOW);
            assert!(matches!(action, Action::Apply { .. }));
        }
        let full = receiver.on_event(put(entry("gw-a", "10.66.3.3/32", 60_000, DenyReason::Scan), 3), NOW);
        assert!(why(&full).contains("2 shared blocks held"), "{full:?}");
        receiver.expire(NOW + 1_000);
        assert_eq!(receiver.applied(), 0);
        let room = receiver.on_event(put(entry("gw-a", "10.66.3.3/32", 60_000, DenyReason::Scan), 4), NOW + 1_000);
        assert!(matches!(room, Action::Apply { .. }), "{room:?}");
    }
}
