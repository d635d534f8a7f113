//! Packets as the flow table sees them.
//!
//! This crate owns [`PacketRecord`], the one compact record that both packet sources
//! produce: the pcap/pcapng reader here, and the XDP program's ring buffer (whose C
//! definition lives in `ebpf/include/mld_shared.h`). It also owns the link-layer
//! decoder that turns a captured frame into a record, so that replay and live capture
//! agree on what a packet is.
//!
//! It never keeps state across packets (that is the flow crate's job) and never
//! panics on input: a frame that cannot be decoded is classified and counted.

mod decode;
mod pcap;
mod record;

pub use decode::{decode_frame, DecodeOutcome, DecodeStats, LinkType, MalformedReason, NotIpReason};
pub use pcap::{PcapError, PcapFrame, PcapReader};
pub use record::{tcp_flags, Direction, PacketRecord, PACKET_RECORD_FLAG_TRUNCATED};
