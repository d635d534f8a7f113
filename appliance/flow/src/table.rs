//! The bidirectional flow table.

use std::collections::VecDeque;

use mld_packet::{tcp_flags, PacketRecord};

use crate::features::{FeatureParams, FlowAccumulator};
use crate::key::{FlowKey, Side};
use crate::lru::{Handle, LruMap};
use crate::record::{EndReason, FlowRecord, PathMarks};
use crate::window::{Seen, WindowAggregator, WindowConfig, WindowSnapshot, WindowStats};

/// Timeouts and bounds of the flow table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowTableConfig {
    /// A flow with no packet for this long ends (`idle-timeout`).
    pub idle_timeout_ns: u64,
    /// A flow older than this ends at its next packet, which starts a new flow (`active-timeout`).
    pub active_timeout_ns: u64,
    /// After FIN from both sides, or RST, the flow still takes packets for this long
    /// (the last ACK, retransmitted RSTs) before it is exported.
    pub tcp_close_linger_ns: u64,
    /// Flows held at once; when full, the least recently active flow is evicted.
    pub max_flows: usize,
    pub features: FeatureParams,
    pub windows: WindowConfig,
}

impl Default for FlowTableConfig {
    fn default() -> FlowTableConfig {
        FlowTableConfig {
            idle_timeout_ns: 120_000_000_000,
            active_timeout_ns: 1_800_000_000_000,
            tcp_close_linger_ns: 1_000_000_000,
            max_flows: 262_144,
            features: FeatureParams::default(),
            windows: WindowConfig::default(),
        }
    }
}

/// Counters of the table; all totals since creation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowTableStats {
    pub packets: u64,
    /// Packets whose timestamp was earlier than one already seen (treated as "now").
    pub out_of_order_packets: u64,
    pub flows_created: u64,
    pub flows_exported: u64,
    /// Flows exported early because the table was full.
    pub flows_evicted: u64,
    pub active_flows: u64,
    pub windows: WindowStats,
}

#[derive(Debug)]
struct FlowEntry {
    accumulator: FlowAccumulator,
    initiator: Side,
    ifindex: u32,
    /// Where the flow's packets come from: TTLs and the responder's interface.
    path: PathMarks,
    /// The responder's last packet other than a RST (0: none yet), ns.
    last_answer_ns: u64,
    fin_from_initiator: bool,
    fin_from_responder: bool,
    /// Set once FIN from both sides or RST was seen.
    closing: Option<EndReason>,
    /// When the last interim record of this flow was taken (0: never).
    last_interim_ns: u64,
}

/// How recently the responder must have spoken for the initiator's packets to count as
/// answered (not one-way volume).
const ANSWERED_LATELY_NS: u64 = 1_000_000_000;

/// Bidirectional flows keyed canonically; time is the packets' timestamps.
#[derive(Debug)]
pub struct FlowTable {
    config: FlowTableConfig,
    flows: LruMap<FlowKey, FlowEntry>,
    /// Closing flows in order of their export deadline (the linger is constant).
    closing: VecDeque<(u64, Handle)>,
    windows: WindowAggregator,
    now_ns: u64,
    /// Where the next [`FlowTable::interim`] scan starts.
    interim_cursor: usize,
    stats: FlowTableStats,
}

impl FlowTable {
    pub fn new(config: FlowTableConfig) -> FlowTable {
        let flows = LruMap::new(config.max_flows.max(1));
        let windows = WindowAggregator::new(config.windows.clone());
        FlowTable { config, flows, closing: VecDeque::new(), windows, now_ns: 0, interim_cursor: 0, stats: FlowTableStats::default() }
    }

    pub fn config(&self) -> &FlowTableConfig {
        &self.config
    }

    pub fn stats(&self) -> FlowTableStats {
        FlowTableStats { active_flows: self.flows.len() as u64, windows: self.windows.stats(), ..self.stats }
    }

    /// Flows created so far (cheap: no window statistics, unlike [`FlowTable::stats`]).
    pub fn flows_created(&self) -> u64 {
        self.stats.flows_created
    }

    /// The latest packet time seen, ns.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    pub fn windows(&self) -> &WindowAggregator {
        &self.windows
    }

    /// Adds one packet; flows that end because of it (or because time moved on) are
    /// appended to `finished`.
    pub fn process(&mut self, packet: &PacketRecord, finished: &mut Vec<FlowRecord>) {
        self.stats.packets += 1;
        if packet.ts_ns < self.now_ns {
            self.stats.out_of_order_packets += 1;
        }
        self.advance_to(packet.ts_ns, finished);
        let (key, side) = FlowKey::of(packet);
        let mut existing = self.flows.find(&key);
        if let Some(handle) = existing {
            let entry = self.flows.get(handle).expect("handle from find is live");
            let reason = if entry.closing.is_some() && is_connection_start(packet) {
                entry.closing
            } else if packet.ts_ns.saturating_sub(entry.accumulator.first_ts_ns()) >= self.config.active_timeout_ns {
                Some(EndReason::ActiveTimeout)
            } else {
                None
            };
            if let Some(reason) = reason {
                self.export(handle, reason, finished);
                existing = None;
            }
        }
        let (handle, seen) = match existing {
            Some(handle) => {
                self.flows.touch(handle);
                let params = self.config.features;
                let entry = self.flows.get_mut(handle).expect("handle from find is live");
                entry.accumulator.add(packet, side == entry.initiator, &params);
                // The responder's first packet: an answer, or (a TCP RST before any answer)
                // a refusal, as a closed port gives.
                let unanswered_reply = side != entry.initiator && entry.path.bwd_ttl == 0;
                let reset = packet.protocol == 6 && packet.tcp_flags & tcp_flags::RST != 0;
                if side != entry.initiator && !reset {
                    entry.last_answer_ns = packet.ts_ns;
                }
                let seen = match (unanswered_reply, reset) {
                    (true, false) => {
                        entry.path.bwd_ifindex = packet.ifindex;
                        entry.path.bwd_ttl = packet.ttl.max(1);
                        Seen::FirstAnswer
                    }
                    (true, true) => Seen::Refused,
                    _ => Seen::Packet,
                };
                (handle, seen)
            }
            None => {
                if self.flows.is_full() {
                    if let Some(oldest) = self.flows.oldest() {
                        self.stats.flows_evicted += 1;
                        self.export(oldest, EndReason::Evicted, finished);
                    }
                }
                self.stats.flows_created += 1;
                let entry = FlowEntry {
                    accumulator: FlowAccumulator::new(packet, &self.config.features),
                    initiator: side,
                    ifindex: packet.ifindex,
                    path: PathMarks { fwd_ttl: packet.ttl, ..PathMarks::default() },
                    last_answer_ns: 0,
                    fin_from_initiator: false,
                    fin_from_responder: false,
                    closing: None,
                    last_interim_ns: 0,
                };
                (self.flows.insert(key, entry), Seen::NewFlow)
            }
        };
        let entry = self.flows.get_mut(handle).expect("flow was just found or inserted");
        let initiator = entry.initiator;
        if packet.protocol == 6 && entry.closing.is_none() {
            if packet.tcp_flags & tcp_flags::FIN != 0 {
                if side == initiator {
                    entry.fin_from_initiator = true;
                } else {
                    entry.fin_from_responder = true;
                }
            }
            let closing = if packet.tcp_flags & tcp_flags::RST != 0 {
                Some(EndReason::TcpRst)
            } else if entry.fin_from_initiator && entry.fin_from_responder {
                Some(EndReason::TcpFin)
            } else {
                None
            };
            if closing.is_some() {
                entry.closing = closing;
                self.closing.push_back((self.now_ns + self.config.tcp_close_linger_ns, handle));
            }
        }
        let source = key.endpoint(initiator);
        let destination = key.endpoint(initiator.other());
        let hint = (u64::from(handle.index) << 32) | u64::from(handle.generation);
        // Answered lately: the responder spoke within the last second (a flood that got
        // one answer long ago is one-way again; a transfer's ACKs keep it answered).
        let answered = entry.last_answer_ns != 0 && packet.ts_ns.saturating_sub(entry.last_answer_ns) <= ANSWERED_LATELY_NS;
        self.windows.observe((source.addr, key.ip_version), (destination.addr, destination.port), packet, seen, answered, hint);
    }

    /// Moves time forward without a packet (live capture calls this on a timer), ending
    /// flows whose idle timeout or close linger has passed.
    pub fn advance_to(&mut self, now_ns: u64, finished: &mut Vec<FlowRecord>) {
        self.now_ns = self.now_ns.max(now_ns);
        while let Some(&(deadline_ns, handle)) = self.closing.front() {
            if deadline_ns > self.now_ns {
                break;
            }
            self.closing.pop_front();
            let reason = self.flows.get(handle).and_then(|entry| entry.closing);
            if let Some(reason) = reason {
                self.export(handle, reason, finished);
            }
        }
        while let Some(oldest) = self.flows.oldest() {
            let last_ns = self.flows.get(oldest).expect("oldest is live").accumulator.last_ts_ns();
            if self.now_ns.saturating_sub(last_ns) < self.config.idle_timeout_ns {
                break;
            }
            self.export(oldest, EndReason::IdleTimeout, finished);
        }
    }

    /// Ends every flow (end of input or shutdown), least recently active first.
    pub fn flush(&mut self, finished: &mut Vec<FlowRecord>) {
        while let Some(oldest) = self.flows.oldest() {
            let reason = self.flows.get(oldest).and_then(|entry| entry.closing).unwrap_or(EndReason::EndOfInput);
            self.export(oldest, reason, finished);
        }
        self.closing.clear();
    }

    fn export(&mut self, handle: Handle, reason: EndReason, finished: &mut Vec<FlowRecord>) {
        let Some((key, entry)) = self.flows.remove(handle) else { return };
        self.stats.flows_exported += 1;
        finished.push(self.record(&key, &entry, reason));
    }

    fn record(&self, key: &FlowKey, entry: &FlowEntry, reason: EndReason) -> FlowRecord {
        let initiator = entry.initiator;
        let responder = initiator.other();
        let accumulator = &entry.accumulator;
        let source = key.endpoint(initiator);
        FlowRecord {
            src_ip: key.ip(initiator),
            src_port: source.port,
            dst_ip: key.ip(responder),
            dst_port: key.endpoint(responder).port,
            protocol: key.protocol,
            ip_version: key.ip_version,
            first_seen_ns: accumulator.first_ts_ns(),
            last_seen_ns: accumulator.last_ts_ns(),
            end_reason: reason,
            fwd_ip_bytes: accumulator.direction_ip_bytes(true),
            bwd_ip_bytes: accumulator.direction_ip_bytes(false),
            ifindex: entry.ifindex,
            path: entry.path,
            features: accumulator.features(),
            source_windows: self.windows.snapshot((source.addr, key.ip_version), self.now_ns),
        }
    }

    /// Live capture: list the sources that have packets, for [`FlowTable::active_sources`].
    pub fn track_active_sources(&mut self) {
        self.windows.set_track_active(true);
    }

    /// The sources active since the last call whose aggregates pass `keep` (at most
    /// `limit`), each with an interim record of its latest flow when that flow is
    /// still in the table. Detection reads floods and scans this way within a tick,
    /// without waiting for flows to end.
    pub fn active_sources(&mut self, limit: usize, keep: impl Fn(&[WindowSnapshot]) -> bool) -> Vec<SourceReport> {
        let activity = self.windows.take_active(self.now_ns, limit, keep);
        activity
            .into_iter()
            .map(|active| {
                let handle = Handle { index: (active.latest_flow >> 32) as u32, generation: active.latest_flow as u32 };
                let latest_flow = self.flows.key(handle).and_then(|key| self.flows.get(handle).map(|entry| self.record(&key, entry, EndReason::Active)));
                let (addr, version) = active.source;
                SourceReport { src_ip: crate::key::ip_of(addr, version), at_ns: self.now_ns, windows: active.windows, latest_flow }
            })
            .collect()
    }

    /// Interim records of flows still open: each flow at least `min_age_ns` old gets one
    /// at most every `every_ns`; at most `limit` per call, resuming where the last call
    /// stopped, so long flows (slow attacks, long floods) are seen before they end.
    pub fn interim(&mut self, min_age_ns: u64, every_ns: u64, limit: usize, out: &mut Vec<FlowRecord>) {
        let slots = self.flows.slots();
        let now_ns = self.now_ns;
        let mut taken = 0;
        for _ in 0..slots {
            if taken >= limit {
                break;
            }
            if self.interim_cursor >= slots {
                self.interim_cursor = 0;
            }
            let index = self.interim_cursor;
            self.interim_cursor += 1;
            let Some(handle) = self.flows.at(index) else { continue };
            let Some(entry) = self.flows.get(handle) else { continue };
            let due = entry.closing.is_none()
                && now_ns.saturating_sub(entry.accumulator.first_ts_ns()) >= min_age_ns
                && now_ns.saturating_sub(entry.last_interim_ns) >= every_ns;
            if !due {
                continue;
            }
            let key = self.flows.key(handle).expect("a live handle has a key");
            out.push(self.record(&key, entry, EndReason::Active));
            taken += 1;
            if let Some(entry) = self.flows.get_mut(handle) {
                entry.last_interim_ns = now_ns;
            }
        }
    }
}

/// A source active in the last tick: its aggregates and its latest flow so far.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceReport {
    pub src_ip: std::net::IpAddr,
    /// Time of the report (the table's clock), ns.
    pub at_ns: u64,
    pub windows: Vec<WindowSnapshot>,
    /// An interim record (end reason `active`) of the source's latest flow.
    pub latest_flow: Option<FlowRecord>,
}

/// A TCP SYN without ACK: a new connection on a reused 5-tuple.
fn is_connection_start(packet: &PacketRecord) -> bool {
    packet.protocol == 6 && packet.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
}

#[cfg(test)]
mod tests;
