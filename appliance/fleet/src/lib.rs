//! The fleet's shared state over etcd (docs/adr/0008-fleet-over-etcd.md), as pure logic:
//!
//! - [`schema`]: node names and the keys each node may write (`/mld/blocks/NODE/PREFIX`,
//!   `/mld/nodes/NODE/member`, `/mld/nodes/NODE/anchor`), built and parsed strictly;
//! - [`block`]: a shared block as published (prefix, category, absolute expiry, deciding
//!   node, event id), checked against the key it came under;
//! - [`receiver`]: what a receiving node does with the watch's events and with a full
//!   snapshot after a compaction or a partition: apply with the remaining TTL, remove,
//!   or ignore (its own, expired, malformed), bounded, with nothing expired resurrected
//!   and nothing applied twice.
//!
//! The etcd client (tokio, etcd-client with rustls) belongs to the fleet task, which
//! feeds these types; keeping the decisions here makes them testable without a cluster.

pub mod block;
pub mod receiver;
pub mod schema;
