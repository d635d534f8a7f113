//! Packets → bidirectional flows → features.
//!
//! This crate owns the flow table ([`FlowTable`]), the CIC-IDS2017 flow features
//! ([`features`]) and the per-source window aggregates ([`window`]) that scan and
//! flood detection use. Pcap replay and live XDP capture both feed it the same
//! [`mld_packet::PacketRecord`]s, so both produce the same flows.
//!
//! Invariant: it is pure. No IO, no clock, no threads, no tokio: time is the packets'
//! timestamps, so replaying the same packets gives byte-identical flows. Every
//! structure has a size bound from [`FlowTableConfig`], and every flow that leaves
//! the table early (eviction) is counted.

pub mod features;
mod key;
mod lru;
mod record;
mod stats;
mod table;
pub mod time;
pub mod window;

#[cfg(test)]
mod testing;

pub use key::{FlowKey, Side};
pub use record::{EndReason, FlowRecord, PathMarks};
pub use stats::RunningStats;
pub use table::{FlowTable, FlowTableConfig, FlowTableStats, SourceReport};
