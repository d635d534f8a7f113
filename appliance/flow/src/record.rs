//! A finished flow, as the table hands it out.

use std::net::IpAddr;

use crate::features::FlowFeatures;
use crate::window::WindowSnapshot;

/// Why a flow left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    /// No packet for the idle timeout.
    IdleTimeout,
    /// The flow lasted longer than the active timeout; its next packets start a new flow.
    ActiveTimeout,
    /// Both sides sent FIN (exported after the close linger).
    TcpFin,
    /// A side sent RST (exported after the close linger).
    TcpRst,
    /// The table was full and this was the least recently active flow.
    Evicted,
    /// The input ended (end of the capture files, or shutdown).
    EndOfInput,
    /// Not ended: an interim record of a flow still open (live detection).
    Active,
}

impl EndReason {
    pub const ALL: [EndReason; 7] =
        [EndReason::IdleTimeout, EndReason::ActiveTimeout, EndReason::TcpFin, EndReason::TcpRst, EndReason::Evicted, EndReason::EndOfInput, EndReason::Active];

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::IdleTimeout => "idle-timeout",
            EndReason::ActiveTimeout => "active-timeout",
            EndReason::TcpFin => "tcp-fin",
            EndReason::TcpRst => "tcp-rst",
            EndReason::Evicted => "evicted",
            EndReason::EndOfInput => "end-of-input",
            EndReason::Active => "active",
        }
    }
}

/// One finished bidirectional flow. "Source" is the initiator: the sender of the
/// flow's first packet; "forward" is its direction.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FlowRecord {
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dst_ip: IpAddr,
    pub dst_port: u16,
    pub protocol: u8,
    pub ip_version: u8,
    /// First packet's timestamp, ns.
    pub first_seen_ns: u64,
    /// Last packet's timestamp, ns.
    pub last_seen_ns: u64,
    pub end_reason: EndReason,
    /// IP-level bytes (IP length fields summed) sent by the initiator.
    pub fwd_ip_bytes: u64,
    /// IP-level bytes sent by the responder.
    pub bwd_ip_bytes: u64,
    /// Interface index of the first packet (0 for pcap replay).
    pub ifindex: u32,
    /// Where the two directions' packets came from (spoofing evidence, not a model input).
    #[serde(default)]
    pub path: PathMarks,
    pub features: FlowFeatures,
    /// The initiator's window aggregates when the flow ended, one per configured window.
    pub source_windows: Vec<WindowSnapshot>,
}

/// The path marks of a flow: what a sender cannot choose freely without knowing where
/// the real host sits. A spoofer elsewhere on the network makes packets that arrive on
/// another interface, or with another remaining hop count (TTL), than the real host's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PathMarks {
    /// The initiator's first packet's TTL (IPv6: hop limit).
    pub fwd_ttl: u8,
    /// The interface the responder's first answer arrived on (0: no answer yet, or pcap).
    pub bwd_ifindex: u32,
    /// The responder's first answer's TTL; 0 while the flow is unanswered. A TCP RST is
    /// not an answer (a closed port's refusal).
    pub bwd_ttl: u8,
}

impl PathMarks {
    /// Whether the responder answered (a packet other than a TCP RST).
    pub fn answered(&self) -> bool {
        self.bwd_ttl != 0
    }
}

impl FlowRecord {
    /// A record that stands for no flow (events about something else: a gap in the log, a
    /// guarded service, an operator's release): from `src_ip` to `service` (address, port,
    /// protocol), over `span` (ns), with no packets, no features and no windows.
    pub fn flowless(src_ip: IpAddr, service: (IpAddr, u16, u8), span: (u64, u64), end_reason: EndReason) -> FlowRecord {
        FlowRecord {
            src_ip,
            src_port: 0,
            dst_ip: service.0,
            dst_port: service.1,
            protocol: service.2,
            ip_version: if src_ip.is_ipv4() { 4 } else { 6 },
            first_seen_ns: span.0,
            last_seen_ns: span.1,
            end_reason,
            fwd_ip_bytes: 0,
            bwd_ip_bytes: 0,
            ifindex: 0,
            path: PathMarks::default(),
            features: crate::features::FlowFeatures([0.0; crate::features::FEATURE_COUNT]),
            source_windows: Vec::new(),
        }
    }

    /// CICFlowMeter's flow id: `dst-src-dstport-srcport-proto` with the initiator as source.
    pub fn flow_id(&self) -> String {
        format!("{}-{}-{}-{}-{}", self.src_ip, self.dst_ip, self.src_port, self.dst_port, self.protocol)
    }
}
