//! The fast path: thresholds on a source's window aggregates (scans, floods) and on its
//! open flows (slow attacks). Each rule scores its measured value against its limit —
//! 0.5 at the limit, 1.0 at twice it — so a score says how far past the limit a source
//! went, and the reason says what was measured.

use std::collections::{HashMap, VecDeque};
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
    let refused = f64::from(window.refused_dst_ports);
    rule(
        rule_score(refused, f64::from(config.scan_refused_ports)),
        Category::Scan,
        format!("distinct destination ports that refused connections {refused} (limit {})", config.scan_refused_ports),
    );
    let addrs = f64::from(window.distinct_dst_addrs);
    rule(rule_score(addrs, f64::from(config.scan_addrs)), Category::Scan, format!("distinct destinations {addrs} (limit {})", config.scan_addrs));
    // Flows cost a sender a round trip only when they are answered. Unanswered flows (a
    // scan's probes, a flood to a closed port or from a sender that does not wait) are
    // counted over the window; answered ones (a burst of DNS queries, a crawler, a busy
    // NAT) only as a rate over the last second, where a flood's hundreds per second
    // stand out within a second and a busy client's tens never add up.
    let unanswered = window.unanswered_flows_per_sec * secs;
    rule(
        rule_score(unanswered, f64::from(config.flood_new_flows)),
        Category::Flood,
        format!("unanswered new flows {unanswered:.0} of {new_flows:.0} (limit {})", config.flood_new_flows),
    );
    let answered_rate = window.recent_answered_flows_per_sec;
    rule(
        rule_score(answered_rate, f64::from(config.flood_answered_flows_per_sec)),
        Category::Flood,
        format!("answered new flows {answered_rate:.0}/s over the last second (limit {}/s)", config.flood_answered_flows_per_sec),
    );
    // Volume that nobody answers: a flood of large datagrams, which the small-packet rule
    // below lets pass for the sake of bulk transfers (those are answered: TCP's ACKs).
    let one_way_mbit = window.recent_one_way_bytes_per_sec * 8.0 / 1e6;
    rule(
        rule_score(window.recent_one_way_bytes_per_sec, config.flood_one_way_bytes_per_sec),
        Category::Flood,
        format!("unanswered traffic {one_way_mbit:.1} Mbit/s over the last second (limit {:.0} Mbit/s)", config.flood_one_way_bytes_per_sec * 8.0 / 1e6),
    );
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
    // ...and as a rate over the last second, which a flood reaches within its first second.
    let icmp_rate = window.recent_icmp_packets_per_sec;
    rule(
        rule_score(icmp_rate, f64::from(config.flood_icmp_packets_per_sec)),
        Category::Flood,
        format!("ICMP packets sent {icmp_rate:.0}/s over the last second, any size (limit {}/s)", config.flood_icmp_packets_per_sec),
    );
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
    /// (destination, port) → (source port → (last seen ns, unanswered trickle)), for flows
    /// that look slow.
    services: HashMap<(IpAddr, u16), HashMap<u16, (u64, bool)>>,
}

/// An unanswered trickle counts as a slow attack only on connections at most this old.
const TRICKLE_MAX_AGE_NS: u64 = 120_000_000_000;

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
        // What only a slow attack does: the source keeps sending (data more than once,
        // with pauses of a second or more) on a young connection where the service has not
        // sent a byte: a request that never ends (slowloris, slow POST), opened for the
        // attack. An idle keep-alive pool or a websocket has had answers; a long poll sent
        // its request at once and waits in silence; telemetry that no server answers
        // (syslog over TCP, Graphite) trickles on connections hours old.
        let trickle = slow
            && age_ns <= TRICKLE_MAX_AGE_NS
            && flow.features.get(Feature::TotalLengthBwdPackets) == 0.0
            && flow.features.get(Feature::ActDataPktFwd) >= 2.0
            && flow.features.get(Feature::FwdIatMax) >= 1e6;
        let flows = self.services.entry(key).or_default();
        if slow {
            if flows.len() < SLOW_FLOWS_MAX || flows.contains_key(&flow.src_port) {
                flows.insert(flow.src_port, (now_ns, trickle));
            }
        } else {
            flows.remove(&flow.src_port);
        }
        flows.retain(|_, (seen, _)| now_ns.saturating_sub(*seen) <= evidence_ns);
        let count = flows.len();
        let trickling = flows.values().filter(|(_, trickle)| *trickle).count();
        if count == 0 {
            self.services.remove(&key);
            return None;
        }
        let limit = f64::from(config.slow_connections);
        let open_score = rule_score(count as f64, limit).min(NOT_DECISIVE_ALONE);
        let trickle_score = rule_score(trickling as f64, limit);
        let score = open_score.max(trickle_score);
        let reason = if trickle_score > open_score {
            format!(
                "{trickling} open flows to {}:{} each older than {} s, sending a trickle (at most {} bytes/s, with pauses) that the service has not answered with a byte (limit {}) → {score:.2}",
                flow.dst_ip,
                flow.dst_port,
                config.slow_min_age.as_secs(),
                config.slow_max_bytes_per_sec,
                config.slow_connections
            )
        } else {
            format!(
                "{count} open flows to {}:{} each older than {} s sending at most {} bytes/s (limit {}; not decisive alone) → {score:.2}",
                flow.dst_ip,
                flow.dst_port,
                config.slow_min_age.as_secs(),
                config.slow_max_bytes_per_sec,
                config.slow_connections
            )
        };
        (score >= 0.25).then(|| FastVerdict { score, category: Category::Slow, reasons: vec![reason] })
    }
}

/// Password guessing at the rate a login service notices (fail2ban bans after 5 failed
/// logins within 10 minutes): completed, short sessions from one source to one
/// authentication service (`detect.heuristics.auth-ports`), counted over
/// `auth-window-secs`, much longer than the window. A session counts when:
///
/// - the service spoke on it (payload from the destination: two-way evidence, so the
///   source is the address it claims, and a spoofer cannot make sessions);
/// - it ended (FIN or RST) within `auth-max-session-secs` of its start;
/// - the source sent at most [`AUTH_SESSION_MAX_SENT_BYTES`] on it: a key exchange and
///   a few passwords, not a file copied with scp.
///
/// What it cannot see is whether a login failed: a script running `ssh host cmd` in a loop
/// makes the same sessions. Such hosts belong in `response.management-prefixes`; for the
/// others, the first block of a source for brute force is short
/// (`response.first-block-unsure-secs`).
#[derive(Debug, Default)]
pub struct AuthTracker {
    /// (destination, port) → end times of the source's short sessions, oldest first.
    services: HashMap<(IpAddr, u16), VecDeque<u64>>,
}

/// Bytes (IP level) the source may send on a session that counts as a login attempt.
pub const AUTH_SESSION_MAX_SENT_BYTES: u64 = 32 * 1024;
/// Sessions remembered per source and service at most, and services per source.
const AUTH_SESSIONS_MAX: usize = 256;
const AUTH_SERVICES_MAX: usize = 64;

impl AuthTracker {
    /// Looks at one ended flow of the source; returns the rule's verdict when it fires.
    pub fn observe(&mut self, flow: &FlowRecord, config: &HeuristicsConfig) -> Option<FastVerdict> {
        use mld_flow::EndReason;
        let ended = matches!(flow.end_reason, EndReason::TcpFin | EndReason::TcpRst);
        let duration_ns = flow.last_seen_ns.saturating_sub(flow.first_seen_ns);
        let session = flow.protocol == 6
            && ended
            && config.auth_ports.binary_search(&flow.dst_port).is_ok()
            && crate::evidence::two_way_evidence(flow)
            && duration_ns <= config.auth_max_session.as_nanos() as u64
            && flow.fwd_ip_bytes <= AUTH_SESSION_MAX_SENT_BYTES;
        if !session {
            return None;
        }
        let key = (flow.dst_ip, flow.dst_port);
        if !self.services.contains_key(&key) && self.services.len() >= AUTH_SERVICES_MAX {
            // Forget the service with the oldest latest session.
            let oldest = self.services.iter().min_by_key(|(_, ends)| ends.back().copied().unwrap_or(0)).map(|(key, _)| *key);
            if let Some(oldest) = oldest {
                self.services.remove(&oldest);
            }
        }
        let window_ns = config.auth_window.as_nanos() as u64;
        let now = flow.last_seen_ns;
        let ends = self.services.entry(key).or_default();
        if ends.len() >= AUTH_SESSIONS_MAX {
            ends.pop_front();
        }
        ends.push_back(now);
        while ends.front().is_some_and(|end| now.saturating_sub(*end) > window_ns) {
            ends.pop_front();
        }
        let count = ends.len();
        let score = rule_score(count as f64, f64::from(config.auth_sessions));
        (score >= 0.25).then(|| FastVerdict {
            score,
            category: Category::BruteForce,
            reasons: vec![format!(
                "{count} short sessions to the authentication service {}:{} within {} s, each answered by the service and closed within {} s (limit {}) → {score:.2}",
                flow.dst_ip,
                flow.dst_port,
                config.auth_window.as_secs(),
                config.auth_max_session.as_secs(),
                config.auth_sessions
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
            refused_dst_ports: 0,
            new_flows_per_sec: new_flows / 10.0,
            new_tcp_flows_per_sec: new_flows / 10.0,
            unanswered_flows_per_sec: new_flows / 10.0,
            recent_answered_flows_per_sec: 0.0,
            recent_one_way_bytes_per_sec: 0.0,
            recent_icmp_packets_per_sec: 0.0,
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
    fn a_slow_scan_meets_closed_ports_and_a_client_does_not() {
        // 3 probes a second for 4 s: 12 ports, 11 of them closed.
        let slow_scan = assess_window(&WindowSnapshot { refused_dst_ports: 11, ..window(12, 12.0, 24.0, 24.0 * 50.0) }, &config());
        assert_eq!(slow_scan.category, Category::Scan, "{slow_scan:?}");
        assert!(slow_scan.score > 0.5 && slow_scan.reasons[0].contains("refused connections 11"), "{slow_scan:?}");
        // A client retrying one closed port.
        let retries = assess_window(&WindowSnapshot { refused_dst_ports: 1, ..window(1, 6.0, 12.0, 12.0 * 50.0) }, &config());
        assert!(retries.score < 0.25, "{retries:?}");
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
        // 50 queries a second for 10 s to one resolver port: 500 UDP flows, each answered,
        // no session: nothing fires (the queries were one-way when sent: 50 x 70 bytes/s).
        let dns_burst = WindowSnapshot {
            new_tcp_flows_per_sec: 0.0,
            unanswered_flows_per_sec: 0.0,
            recent_answered_flows_per_sec: 50.0,
            recent_one_way_bytes_per_sec: 3500.0,
            ..window(1, 500.0, 1000.0, 1000.0 * 90.0)
        };
        let verdict = assess_window(&dns_burst, &config());
        assert_eq!(verdict, FastVerdict::none());
        // The same 500 queries unanswered (a dead resolver, or a flood) are a flood.
        let unanswered = WindowSnapshot { unanswered_flows_per_sec: 50.0, ..dns_burst };
        assert_eq!(assess_window(&unanswered, &config()).category, Category::Flood);
        // The same count of TCP sessions to one port is what password guessing looks like.
        let guessing = assess_window(&window(1, 100.0, 1000.0, 1000.0 * 90.0), &config());
        assert_eq!(guessing.category, Category::BruteForce, "{guessing:?}");
        assert!(guessing.reasons[0].contains("repeated TCP sessions 100"), "{guessing:?}");
    }

    fn ssh_session(src: &str, dst_port: u16, start_secs: f64, secs: f64, sent: u64, end: mld_flow::EndReason) -> FlowRecord {
        use mld_flow::features::{Feature, FlowFeatures, FEATURE_COUNT};
        let mut values = [0.0; FEATURE_COUNT];
        values[Feature::TotalLengthBwdPackets as usize] = 2100.0;
        values[Feature::TotalBwdPackets as usize] = 9.0;
        values[Feature::TotalFwdPackets as usize] = 11.0;
        let features = FlowFeatures(values);
        FlowRecord {
            src_ip: src.parse().expect("ip"),
            src_port: 40000,
            dst_ip: "10.66.9.2".parse().expect("ip"),
            dst_port,
            protocol: 6,
            ip_version: 4,
            first_seen_ns: (start_secs * 1e9) as u64,
            last_seen_ns: ((start_secs + secs) * 1e9) as u64,
            end_reason: end,
            fwd_ip_bytes: sent,
            bwd_ip_bytes: 2600,
            ifindex: 0,
            path: Default::default(),
            features,
            source_windows: Vec::new(),
        }
    }

    #[test]
    fn short_sessions_to_a_login_service_add_up_to_brute_force_at_a_realistic_rate() {
        use mld_flow::EndReason::{ActiveTimeout, TcpFin, TcpRst};
        let config = config();
        // Four clients, each session 3 passwords in ~4 s: about 1.6 sessions a second.
        // (fail2ban's default bans after 5 failed logins; a session holds up to 3.)
        let mut tracker = AuthTracker::default();
        let mut verdicts = Vec::new();
        for session in 0..20 {
            let flow = ssh_session("10.66.2.2", 22, f64::from(session) * 0.6, 4.0, 4200, if session % 2 == 0 { TcpFin } else { TcpRst });
            verdicts.push(tracker.observe(&flow, &config));
        }
        let first = verdicts.iter().position(Option::is_some).expect("fires");
        assert_eq!(first, 2, "from a quarter of the limit (5): 3 sessions: {:?}", verdicts[first]);
        let at_limit = verdicts[4].as_ref().expect("5 sessions");
        assert_eq!((at_limit.score, at_limit.category), (0.5, Category::BruteForce));
        assert!(at_limit.reasons[0].contains("5 short sessions to the authentication service 10.66.9.2:22 within 60 s"), "{at_limit:?}");
        assert!(verdicts[8].as_ref().expect("9 sessions").score >= 0.9, "decisive within ~6 s of guessing");

        // What does not count: a web server's port, a long session, a file copy, an
        // unanswered or timed-out flow, sessions spread over more than the window.
        let mut tracker = AuthTracker::default();
        for session in 0..30 {
            let start = f64::from(session);
            for flow in [
                ssh_session("10.66.1.2", 8080, start, 1.0, 900, TcpFin),
                ssh_session("10.66.1.2", 22, start, 45.0, 4200, TcpFin),
                ssh_session("10.66.1.2", 22, start, 2.0, 400_000, TcpFin),
                ssh_session("10.66.1.2", 22, start, 2.0, 4200, ActiveTimeout),
                FlowRecord {
                    features: mld_flow::features::FlowFeatures([0.0; mld_flow::features::FEATURE_COUNT]),
                    ..ssh_session("10.66.1.2", 22, start, 2.0, 4200, TcpRst)
                },
            ] {
                assert_eq!(tracker.observe(&flow, &config), None, "{flow:?}");
            }
        }
        let mut admin = AuthTracker::default();
        let spread: Vec<_> = (0..30).map(|n| admin.observe(&ssh_session("10.66.1.2", 22, f64::from(n) * 61.0, 2.0, 4200, TcpFin), &config)).collect();
        assert!(spread.iter().all(Option::is_none), "one login a minute is an admin, not a guesser: {spread:?}");
    }

    /// An open TCP flow from `src_port`, `age` s old, the source having sent `sent` bytes in
    /// `data_packets` packets with gaps of up to `gap` s, the service `answered` bytes.
    fn open_flow(src_port: u16, age: f64, sent: f64, data_packets: f64, gap: f64, answered: f64) -> FlowRecord {
        use mld_flow::features::{Feature, FlowFeatures, FEATURE_COUNT};
        let mut values = [0.0; FEATURE_COUNT];
        values[Feature::TotalLengthFwdPackets as usize] = sent;
        values[Feature::TotalLengthBwdPackets as usize] = answered;
        values[Feature::ActDataPktFwd as usize] = data_packets;
        values[Feature::FwdIatMax as usize] = gap * 1e6;
        FlowRecord {
            src_port,
            end_reason: mld_flow::EndReason::Active,
            first_seen_ns: 0,
            last_seen_ns: (age * 1e9) as u64,
            features: FlowFeatures(values),
            ..ssh_session("10.66.2.2", 8080, 0.0, age, sent as u64, mld_flow::EndReason::Active)
        }
    }

    #[test]
    fn a_trickle_the_service_never_answers_is_a_slow_attack_and_idle_or_waiting_connections_are_not() {
        let config = config();
        let verdict_of = |flows: Vec<FlowRecord>| {
            let mut tracker = SlowTracker::default();
            flows.iter().filter_map(|flow| tracker.observe(flow, flow.last_seen_ns, &config, 60_000_000_000)).last()
        };
        // slowloris: 40 connections, 9 s old, a header line every 4 s, no answer.
        let slowloris = verdict_of((0..40).map(|port| open_flow(40000 + port, 9.0, 300.0, 3.0, 4.0, 0.0)).collect()).expect("fires");
        assert_eq!((slowloris.score, slowloris.category), (1.0, Category::Slow), "{slowloris:?}");
        assert!(slowloris.reasons[0].contains("40 open flows") && slowloris.reasons[0].contains("not answered"), "{slowloris:?}");
        // An idle keep-alive pool (answered, then silent) and long polls (one request sent
        // at once, waiting): as many connections, never decisive alone.
        let pool = verdict_of((0..40).map(|port| open_flow(40000 + port, 9.0, 400.0, 1.0, 0.0, 900.0)).collect()).expect("fires");
        let polls = verdict_of((0..40).map(|port| open_flow(40000 + port, 9.0, 600.0, 2.0, 0.01, 0.0)).collect()).expect("fires");
        for verdict in [pool, polls] {
            assert!(verdict.score <= NOT_DECISIVE_ALONE && verdict.reasons[0].contains("not decisive alone"), "{verdict:?}");
        }
    }

    #[test]
    fn answered_flows_are_a_flood_only_at_a_floods_rate() {
        let answered = |per_sec: f64| WindowSnapshot {
            new_tcp_flows_per_sec: 0.0,
            unanswered_flows_per_sec: 0.0,
            recent_answered_flows_per_sec: per_sec,
            ..window(3, per_sec * 10.0, per_sec * 40.0, per_sec * 40.0 * 300.0)
        };
        // A crawler (15 pages a second), a busy NAT (60 connections a second).
        for busy in [15.0, 60.0] {
            let verdict = assess_window(&answered(busy), &config());
            assert!(verdict.score < 0.5, "{busy}/s: {verdict:?}");
        }
        // ab at 500 connections a second: a flood within its first second.
        let flood = assess_window(&answered(500.0), &config());
        assert_eq!((flood.score, flood.category), (1.0, Category::Flood), "{flood:?}");
        assert!(flood.reasons[0].contains("answered new flows 500/s"), "{flood:?}");
    }

    #[test]
    fn unanswered_volume_is_a_flood_and_answered_volume_is_not() {
        // 20,000 datagrams of 1,428 bytes a second into one flow, nothing back: 228 Mbit/s.
        let one_way = WindowSnapshot { recent_one_way_bytes_per_sec: 20_000.0 * 1428.0, ..window(1, 1.0, 200_000.0, 200_000.0 * 1428.0) };
        let verdict = assess_window(&one_way, &config());
        assert_eq!((verdict.score, verdict.category), (1.0, Category::Flood), "{verdict:?}");
        assert!(verdict.reasons[0].contains("unanswered traffic 228.5 Mbit/s"), "{verdict:?}");
        // The same volume as a TCP transfer, answered by ACKs: only its SYN was one-way.
        let transfer = WindowSnapshot { recent_one_way_bytes_per_sec: 60.0, ..one_way };
        assert!(assess_window(&transfer, &config()).score < 0.25);
        // A 25 Mbit/s media stream that nobody answers does not fire either.
        let stream = WindowSnapshot { recent_one_way_bytes_per_sec: 25e6 / 8.0, ..window(1, 1.0, 21_000.0, 21_000.0 * 1400.0) };
        assert!(assess_window(&stream, &config()).score < 0.5, "{:?}", assess_window(&stream, &config()));
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
        let ping =
            assess_window(&WindowSnapshot { icmp_packets_per_sec: 5.0, recent_icmp_packets_per_sec: 5.0, ..window(1, 1.0, 100.0, 100.0 * 84.0) }, &config());
        assert!(ping.score < 0.25, "{ping:?}");
        // In the flood's first half second: 500 sent, already at 1,000 a second.
        let early = WindowSnapshot { icmp_packets_per_sec: 50.0, recent_icmp_packets_per_sec: 1000.0, ..window(1, 1.0, 1000.0, 1000.0 * 1428.0) };
        let verdict = assess_window(&early, &config());
        assert_eq!((verdict.score, verdict.category), (1.0, Category::Flood), "{verdict:?}");
        assert!(verdict.reasons[0].contains("ICMP packets sent 1000/s over the last second"), "{verdict:?}");
    }
}
