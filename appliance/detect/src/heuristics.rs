//! The fast path: thresholds on a source's window aggregates (scans, floods) and on its
//! open flows (slow attacks). Each rule scores its measured value against its limit —
//! 0.5 at the limit, 1.0 at twice it — so a score says how far past the limit a source
//! went, and the reason says what was measured.

use std::collections::HashMap;
use std::net::IpAddr;

use mld_config::HeuristicsConfig;
use mld_flow::features::Feature;
use mld_flow::window::WindowSnapshot;
use mld_flow::FlowRecord;

/// What a detection is about; the deny map counts drops per category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    Flood,
    Scan,
    BruteForce,
    Slow,
    Other,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Flood => "flood",
            Category::Scan => "scan",
            Category::BruteForce => "brute-force",
            Category::Slow => "slow",
            Category::Other => "other",
        }
    }

    /// The category model's class names.
    pub fn from_class(name: &str) -> Category {
        match name {
            "flood" => Category::Flood,
            "scan" => Category::Scan,
            "bruteforce" | "brute-force" => Category::BruteForce,
            "slow" => Category::Slow,
            _ => Category::Other,
        }
    }
}

/// The fast path's view of a source.
#[derive(Debug, Clone, PartialEq)]
pub struct FastVerdict {
    /// 0..1: the strongest rule's score.
    pub score: f64,
    pub category: Category,
    /// What fired, with the measured value and the limit, strongest first.
    pub reasons: Vec<String>,
}

impl FastVerdict {
    pub fn none() -> FastVerdict {
        FastVerdict { score: 0.0, category: Category::Other, reasons: Vec::new() }
    }
}

/// Rules that can never block alone score at most this.
pub const NOT_DECISIVE_ALONE: f64 = 0.7;

fn rule_score(value: f64, limit: f64) -> f64 {
    if limit <= 0.0 {
        return 0.0;
    }
    (0.5 * value / limit).min(1.0)
}

/// Scores a source's aggregates over the configured window.
pub fn assess_window(window: &WindowSnapshot, config: &HeuristicsConfig) -> FastVerdict {
    let secs = window.window_secs;
    let new_flows = window.new_flows_per_sec * secs;
    let packets = window.packets_per_sec * secs;
    let mean_packet = if packets > 0.0 { window.bytes_per_sec * secs / packets } else { 0.0 };
    let mut fired: Vec<(f64, Category, String)> = Vec::new();
    let mut rule = |score: f64, category: Category, reason: String| {
        if score > 0.0 {
            fired.push((score, category, reason));
        }
    };
    let ports = f64::from(window.distinct_dst_ports);
    rule(rule_score(ports, f64::from(config.scan_ports)), Category::Scan, format!("distinct destination ports {ports} (limit {})", config.scan_ports));
    let addrs = f64::from(window.distinct_dst_addrs);
    rule(rule_score(addrs, f64::from(config.scan_addrs)), Category::Scan, format!("distinct destinations {addrs} (limit {})", config.scan_addrs));
    rule(rule_score(new_flows, f64::from(config.flood_new_flows)), Category::Flood, format!("new flows {new_flows:.0} (limit {})", config.flood_new_flows));
    let packets_per_flow = packets / new_flows.max(1.0);
    if mean_packet <= f64::from(config.flood_max_mean_packet_bytes) && packets_per_flow >= f64::from(config.flood_min_packets_per_flow) {
        rule(
            rule_score(packets, f64::from(config.flood_packets)),
            Category::Flood,
            format!(
                "packets {packets:.0} of mean {mean_packet:.0} bytes, {packets_per_flow:.0} per flow (limit {} packets of at most {} bytes, at least {} per flow)",
                config.flood_packets, config.flood_max_mean_packet_bytes, config.flood_min_packets_per_flow
            ),
        );
    }
    // ICMP has no bulk transfers to confuse with a flood: echo requests (or any ICMP) at
    // volume are one whatever their size, so a flood of large echo requests (which the
    // small-packet rule above lets pass, for the sake of bulk TCP and UDP) is caught here.
    let icmp = window.icmp_packets_per_sec * secs;
    rule(rule_score(icmp, f64::from(config.flood_packets)), Category::Flood, format!("ICMP packets sent {icmp:.0}, any size (limit {})", config.flood_packets));
    if packets >= f64::from(config.syn_min_packets) {
        rule(
            rule_score(window.syn_without_ack_ratio, config.syn_ratio),
            Category::Flood,
            format!("SYN-without-ACK share {:.2} of {packets:.0} packets (limit {})", window.syn_without_ack_ratio, config.syn_ratio),
        );
    }
    if packets >= f64::from(config.rst_min_packets) {
        rule(
            rule_score(window.rst_ratio, config.rst_ratio),
            Category::Scan,
            format!("RST share {:.2} of {packets:.0} packets (limit {})", window.rst_ratio, config.rst_ratio),
        );
    }
    // Password guessing is sessions: TCP connections opened, refused or failed, closed,
    // again. UDP request/response pairs (a burst of DNS queries, NTP, syslog) are flows
    // too, and a busy host makes many of them: they are not repeated sessions.
    let new_sessions = window.new_tcp_flows_per_sec * secs;
    if window.distinct_dst_ports <= 2 {
        rule(
            rule_score(new_sessions, f64::from(config.repeat_sessions)).min(NOT_DECISIVE_ALONE),
            Category::BruteForce,
            format!("repeated TCP sessions {new_sessions:.0} to {} port(s) (limit {}; not decisive alone)", window.distinct_dst_ports, config.repeat_sessions),
        );
    }
    // A SYN share only means something next to volume: keep the rule that says it, but
    // a share alone (score 0.5 at the limit) stays below the floods' volume rules.
    fired.sort_by(|a, b| b.0.total_cmp(&a.0));
    match fired.first() {
        Some((score, category, _)) if *score >= 0.25 => FastVerdict {
            score: *score,
            category: *category,
            reasons: fired.iter().filter(|(score, _, _)| *score >= 0.25).map(|(score, _, reason)| format!("{reason} → {score:.2}")).collect(),
        },
        _ => FastVerdict::none(),
    }
}

/// Slow attacks: many open flows from one source to one service, each old and nearly
/// silent. Fed with interim records of open flows; bounded per source.
#[derive(Debug, Default)]
pub struct SlowTracker {
    /// (destination, port) → (source port → last seen ns), for flows that look slow.
    services: HashMap<(IpAddr, u16), HashMap<u16, u64>>,
}

/// Open flows remembered per source and service at most.
const SLOW_FLOWS_MAX: usize = 4096;

impl SlowTracker {
    /// Looks at one flow record of the source; returns the slow rule's verdict when it
    /// fires.
    pub fn observe(&mut self, flow: &FlowRecord, now_ns: u64, config: &HeuristicsConfig, evidence_ns: u64) -> Option<FastVerdict> {
        let key = (flow.dst_ip, flow.dst_port);
        let age_ns = flow.last_seen_ns.saturating_sub(flow.first_seen_ns);
        let secs = age_ns as f64 / 1e9;
        let fwd_bytes = flow.features.get(Feature::TotalLengthFwdPackets);
        let open = flow.end_reason == mld_flow::EndReason::Active;
        let slow = open && flow.protocol == 6 && age_ns >= config.slow_min_age.as_nanos() as u64 && fwd_bytes / secs.max(1e-9) <= config.slow_max_bytes_per_sec;
        let flows = self.services.entry(key).or_default();
        if slow {
            if flows.len() < SLOW_FLOWS_MAX || flows.contains_key(&flow.src_port) {
                flows.insert(flow.src_port, now_ns);
            }
        } else {
            flows.remove(&flow.src_port);
        }
        flows.retain(|_, seen| now_ns.saturating_sub(*seen) <= evidence_ns);
        let count = flows.len();
        if count == 0 {
            self.services.remove(&key);
            return None;
        }
        let score = rule_score(count as f64, f64::from(config.slow_connections)).min(NOT_DECISIVE_ALONE);
        (score >= 0.25).then(|| FastVerdict {
            score,
            category: Category::Slow,
            reasons: vec![format!(
                "{count} open flows to {}:{} each older than {} s sending at most {} bytes/s (limit {}; not decisive alone) → {score:.2}",
                flow.dst_ip,
                flow.dst_port,
                config.slow_min_age.as_secs(),
                config.slow_max_bytes_per_sec,
                config.slow_connections
            )],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HeuristicsConfig {
        mld_config::Config::default().detect.heuristics
    }

    fn window(ports: u32, new_flows: f64, packets: f64, bytes: f64) -> WindowSnapshot {
        WindowSnapshot {
            window_secs: 10.0,
            distinct_dst_addrs: 1,
            distinct_dst_ports: ports,
            new_flows_per_sec: new_flows / 10.0,
            new_tcp_flows_per_sec: new_flows / 10.0,
            icmp_packets_per_sec: 0.0,
            packets_per_sec: packets / 10.0,
            bytes_per_sec: bytes / 10.0,
            syn_without_ack_ratio: 0.0,
            rst_ratio: 0.0,
            saturated: false,
        }
    }

    #[test]
    fn a_port_scan_scores_by_how_far_past_the_limit_it_went() {
        let limit = config().scan_ports;
        let at_limit = assess_window(&window(limit, f64::from(limit), f64::from(2 * limit), f64::from(80 * limit)), &config());
        assert_eq!((at_limit.score, at_limit.category), (0.5, Category::Scan));
        let far = assess_window(&window(300, 300.0, 600.0, 24_000.0), &config());
        assert_eq!((far.score, far.category), (1.0, Category::Scan));
        assert!(far.reasons[0].contains("distinct destination ports 300"), "{:?}", far.reasons);
    }

    #[test]
    fn bulk_transfers_are_not_floods_but_small_packet_floods_are() {
        let iperf = assess_window(&window(1, 1.0, 400_000.0, 400_000.0 * 1400.0), &config());
        assert!(iperf.score < 0.25, "{iperf:?}");
        let icmp_flood = assess_window(&window(1, 1.0, 60_000.0, 60_000.0 * 28.0), &config());
        assert_eq!((icmp_flood.score, icmp_flood.category), (1.0, Category::Flood));
    }

    #[test]
    fn many_short_exchanges_of_small_packets_are_not_a_packet_flood() {
        // A busy web client: 120 connections of 12 or even 40 small packets in 10 s.
        for per_flow in [12.0, 40.0] {
            let busy = assess_window(&window(1, 120.0, 120.0 * per_flow, 120.0 * per_flow * 110.0), &config());
            assert!(busy.category != Category::Flood || busy.score < 0.25, "{busy:?}");
        }
    }

    #[test]
    fn repeated_sessions_are_never_decisive_alone() {
        let verdict = assess_window(&window(1, 10_000.0, 40_000.0, 40_000.0 * 300.0), &config());
        assert_eq!(verdict.category, Category::Flood, "at flood volume it is a flood");
        let busy_client = assess_window(&window(1, 200.0, 1500.0, 1500.0 * 400.0), &config());
        assert_eq!(busy_client.category, Category::BruteForce);
        assert!(busy_client.score <= NOT_DECISIVE_ALONE && busy_client.score >= 0.5, "{busy_client:?}");
    }

    #[test]
    fn a_burst_of_dns_queries_is_not_repeated_sessions() {
        // 50 queries a second for 10 s to one resolver port: 500 UDP flows, no session.
        // (The new-flows volume rule still reads it as a flood: issue 14 goes on there.)
        let dns_burst = WindowSnapshot { new_tcp_flows_per_sec: 0.0, ..window(1, 500.0, 1000.0, 1000.0 * 90.0) };
        let verdict = assess_window(&dns_burst, &config());
        assert!(verdict.category != Category::BruteForce, "{verdict:?}");
        assert!(!verdict.reasons.iter().any(|reason| reason.contains("repeated")), "{verdict:?}");
        // The same count of TCP sessions to one port is what password guessing looks like.
        let guessing = assess_window(&window(1, 100.0, 1000.0, 1000.0 * 90.0), &config());
        assert_eq!(guessing.category, Category::BruteForce, "{guessing:?}");
        assert!(guessing.reasons[0].contains("repeated TCP sessions 100"), "{guessing:?}");
    }

    #[test]
    fn a_flood_of_large_echo_requests_is_a_flood_and_a_bulk_transfer_is_not() {
        // 1,428-byte echo requests at 68,000 a second (the answers counted too).
        let large_pings = WindowSnapshot { icmp_packets_per_sec: 68_000.0, ..window(1, 1.0, 1_360_000.0, 1_360_000.0 * 1428.0) };
        let verdict = assess_window(&large_pings, &config());
        assert_eq!((verdict.score, verdict.category), (1.0, Category::Flood), "{verdict:?}");
        assert!(verdict.reasons[0].contains("ICMP packets sent 680000"), "{verdict:?}");
        // The same bytes as one TCP transfer is not.
        let iperf = assess_window(&window(1, 1.0, 1_360_000.0, 1_360_000.0 * 1428.0), &config());
        assert!(iperf.score < 0.25, "{iperf:?}");
        // Ordinary pings (one a second, or a monitoring probe's five) are not either.
        let ping = assess_window(&WindowSnapshot { icmp_packets_per_sec: 5.0, ..window(1, 1.0, 100.0, 100.0 * 84.0) }, &config());
        assert!(ping.score < 0.25, "{ping:?}");
    }
}
