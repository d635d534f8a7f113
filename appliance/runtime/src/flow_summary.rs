//! A human-readable summary of a capture's flows (`mldefender flows --summary`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use mld_flow::features::Feature;
use mld_flow::{EndReason, FlowRecord};

const TOP: usize = 5;

/// Accumulates what the summary shows; bounded by the number of distinct sources.
#[derive(Debug, Default)]
pub struct Summary {
    flows: u64,
    packets: u64,
    payload_bytes: f64,
    first_ns: Option<u64>,
    last_ns: u64,
    by_protocol: HashMap<u8, (u64, u64)>,
    by_end_reason: HashMap<EndReason, u64>,
    by_source: HashMap<IpAddr, SourceTotals>,
}

#[derive(Debug, Default, Clone, Copy)]
struct SourceTotals {
    flows: u64,
    packets: u64,
    bytes: u64,
    max_distinct_ports: u32,
    max_distinct_addrs: u32,
}

impl Summary {
    pub fn add(&mut self, flow: &FlowRecord) {
        let packets = (flow.features.get(Feature::TotalFwdPackets) + flow.features.get(Feature::TotalBwdPackets)) as u64;
        self.flows += 1;
        self.packets += packets;
        self.payload_bytes += flow.features.get(Feature::TotalLengthFwdPackets) + flow.features.get(Feature::TotalLengthBwdPackets);
        self.first_ns = Some(self.first_ns.map_or(flow.first_seen_ns, |first| first.min(flow.first_seen_ns)));
        self.last_ns = self.last_ns.max(flow.last_seen_ns);
        let protocol = self.by_protocol.entry(flow.protocol).or_default();
        protocol.0 += 1;
        protocol.1 += packets;
        *self.by_end_reason.entry(flow.end_reason).or_default() += 1;
        let source = self.by_source.entry(flow.src_ip).or_default();
        source.flows += 1;
        source.packets += packets;
        source.bytes += flow.fwd_ip_bytes + flow.bwd_ip_bytes;
        if let Some(window) = flow.source_windows.first() {
            source.max_distinct_ports = source.max_distinct_ports.max(window.distinct_dst_ports);
            source.max_distinct_addrs = source.max_distinct_addrs.max(window.distinct_dst_addrs);
        }
    }

    pub fn render(&self, first_window_secs: Option<u64>) -> String {
        let mut text = String::new();
        let span_s = self.first_ns.map_or(0.0, |first| (self.last_ns - first) as f64 / 1e9);
        let _ = writeln!(text, "Flows: {}   packets: {}   payload: {:.0} bytes   span: {:.1} s", self.flows, self.packets, self.payload_bytes, span_s);
        let _ = writeln!(text, "\nBy protocol:");
        let mut protocols: Vec<_> = self.by_protocol.iter().collect();
        protocols.sort_by_key(|(protocol, (flows, _))| (std::cmp::Reverse(*flows), **protocol));
        for (protocol, (flows, packets)) in protocols {
            let _ = writeln!(text, "  {:<8} {flows:>8} flows {packets:>10} packets", protocol_name(*protocol));
        }
        let _ = writeln!(text, "\nHow flows ended:");
        for reason in EndReason::ALL {
            if let Some(count) = self.by_end_reason.get(&reason) {
                let _ = writeln!(text, "  {:<16} {count:>8}", reason.as_str());
            }
        }
        let mut sources: Vec<_> = self.by_source.iter().collect();
        sources.sort_by_key(|(address, totals)| (std::cmp::Reverse(totals.flows), **address));
        let _ = writeln!(text, "\nTop sources by flows started:");
        let window = first_window_secs.map_or_else(|| "-".to_string(), |secs| format!("{secs} s"));
        let _ = writeln!(text, "  {:<40} {:>8} {:>10} {:>12}  max distinct ports / hosts in {window}", "source", "flows", "packets", "bytes");
        for (address, totals) in sources.iter().take(TOP) {
            let _ = writeln!(
                text,
                "  {:<40} {:>8} {:>10} {:>12}  {} / {}",
                address.to_string(),
                totals.flows,
                totals.packets,
                totals.bytes,
                totals.max_distinct_ports,
                totals.max_distinct_addrs
            );
        }
        text
    }
}

fn protocol_name(protocol: u8) -> String {
    match protocol {
        1 => "ICMP".to_string(),
        6 => "TCP".to_string(),
        17 => "UDP".to_string(),
        58 => "ICMPv6".to_string(),
        other => format!("proto {other}"),
    }
}
