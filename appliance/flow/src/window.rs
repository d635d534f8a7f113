//! Per-source window aggregates: what one host did over the last few seconds, across
//! all the flows it started. Scan and flood detection read these.
//!
//! For each configured window W and each source (a flow's initiator address) we keep
//! ten buckets of W/10 each, so a window is W at a resolution of W/10:
//! - distinct destination addresses and ports of the flows the source started;
//! - the rate of flows it started, and of packets and IP bytes in them (both directions);
//! - among TCP packets of those flows (both directions): the share with SYN set and
//!   ACK clear, and the share with RST set.
//!
//! Every structure is bounded: at most `max_sources` sources (least recently active
//! evicted, counted) and at most `max_distinct` remembered destinations per source
//! and window (beyond that the count saturates and says so).

use mld_packet::{tcp_flags, PacketRecord};

use crate::lru::{Handle, LruMap};

const BUCKETS: usize = 10;
/// The shortest span a rate since a start is measured over: a burst of a few packets is
/// not a rate.
const RATE_MIN_SPAN_NS: u64 = 100_000_000;

/// Bounds and windows of the aggregator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowConfig {
    /// Window lengths, ns; at most 4.
    pub windows_ns: Vec<u64>,
    /// Sources tracked at once.
    pub max_sources: usize,
    /// Distinct destination addresses (and, separately, ports) remembered per source and window.
    pub max_distinct: usize,
}

impl Default for WindowConfig {
    fn default() -> WindowConfig {
        WindowConfig { windows_ns: vec![10_000_000_000, 60_000_000_000], max_sources: 16_384, max_distinct: 128 }
    }
}

/// One source's aggregates over one window.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WindowSnapshot {
    /// Window length, seconds.
    pub window_secs: f64,
    /// Distinct destination addresses of flows the source started in the window.
    pub distinct_dst_addrs: u32,
    /// Distinct destination ports of flows the source started in the window.
    pub distinct_dst_ports: u32,
    /// Flows the source started, per second of window.
    pub new_flows_per_sec: f64,
    /// TCP flows the source started, per second of window (sessions, as opposed to UDP
    /// request/response pairs such as DNS or NTP).
    #[serde(default)]
    pub new_tcp_flows_per_sec: f64,
    /// ICMP and ICMPv6 packets the source sent (not the answers it got), per second of
    /// window, whatever their size.
    #[serde(default)]
    pub icmp_packets_per_sec: f64,
    /// Distinct destination ports that refused the source's TCP flows (a RST before any
    /// answer: a closed port) in the window. A client rarely meets a closed port; a scan
    /// meets hundreds, a slow one a few a second.
    #[serde(default)]
    pub refused_dst_ports: u32,
    /// Flows the source started that got no answer (no packet from the responder other
    /// than a TCP RST) by the time of the snapshot, per second of window: what a scan or
    /// a flood makes, and what a busy client, whose requests are answered, does not.
    #[serde(default)]
    pub unanswered_flows_per_sec: f64,
    /// Flows of the source that got their first answer over the last tenth of the window
    /// (one bucket, sliding), per second: a rate that reaches a flood's within a second.
    #[serde(default)]
    pub recent_answered_flows_per_sec: f64,
    /// ICMP and ICMPv6 packets the source sent over the last tenth of the window (sliding),
    /// per second.
    #[serde(default)]
    pub recent_icmp_packets_per_sec: f64,
    /// IP bytes the source sent in flows that were unanswered when it sent them, over
    /// the last tenth of the window (sliding), per second: a one-way volume flood.
    #[serde(default)]
    pub recent_one_way_bytes_per_sec: f64,
    /// Packets of flows the source started (both directions), per second of window.
    pub packets_per_sec: f64,
    /// IP bytes of flows the source started (both directions), per second of window.
    pub bytes_per_sec: f64,
    /// Share of TCP packets with SYN set and ACK clear, in flows the source started.
    pub syn_without_ack_ratio: f64,
    /// Share of TCP packets with RST set, in flows the source started.
    pub rst_ratio: f64,
    /// True when a distinct count reached `max_distinct` (the true count is at least that).
    pub saturated: bool,
}

/// Counters of the aggregator itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowStats {
    pub sources: u64,
    pub evicted_sources: u64,
}

/// What a packet is to its flow, for [`WindowAggregator::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The flow's first packet.
    NewFlow,
    /// The responder's first answer (not a TCP RST).
    FirstAnswer,
    /// A TCP RST from the responder before any answer: the destination port refused.
    Refused,
    /// Any other packet.
    Packet,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    new_flows: u32,
    answered_flows: u32,
    one_way_bytes: u64,
    new_tcp_flows: u32,
    icmp_sent: u32,
    packets: u32,
    bytes: u64,
    tcp_packets: u32,
    syn_without_ack: u32,
    rst: u32,
}

/// A small set of keys with their last-seen times, exact up to its capacity.
#[derive(Debug, Clone, Default)]
struct DistinctSet<K> {
    entries: Vec<(K, u64)>,
    saturated_until_ns: u64,
}

impl<K: PartialEq + Copy> DistinctSet<K> {
    fn insert(&mut self, key: K, now_ns: u64, window_ns: u64, capacity: usize) {
        if let Some(entry) = self.entries.iter_mut().find(|(existing, _)| *existing == key) {
            entry.1 = now_ns;
            return;
        }
        if self.entries.len() < capacity {
            self.entries.push((key, now_ns));
            return;
        }
        match self.entries.iter_mut().find(|(_, seen)| now_ns.saturating_sub(*seen) >= window_ns) {
            Some(entry) => *entry = (key, now_ns),
            None => self.saturated_until_ns = now_ns.saturating_add(window_ns),
        }
    }

    fn count(&self, now_ns: u64, window_ns: u64) -> u32 {
        self.entries.iter().filter(|(_, seen)| now_ns.saturating_sub(*seen) < window_ns).count() as u32
    }

    fn saturated(&self, now_ns: u64) -> bool {
        now_ns < self.saturated_until_ns
    }
}

#[derive(Debug, Clone)]
struct SourceWindow {
    window_ns: u64,
    bucket_ns: u64,
    buckets: [Bucket; BUCKETS],
    /// Start time of `buckets[current]`.
    current_start_ns: u64,
    current: usize,
    dst_addrs: DistinctSet<[u8; 16]>,
    dst_ports: DistinctSet<u16>,
    refused_ports: DistinctSet<u16>,
    /// When one-way traffic last started after a bucket without any.
    one_way_since_ns: u64,
}

impl SourceWindow {
    fn new(window_ns: u64, now_ns: u64) -> SourceWindow {
        let bucket_ns = (window_ns / BUCKETS as u64).max(1);
        SourceWindow {
            window_ns,
            bucket_ns,
            buckets: [Bucket::default(); BUCKETS],
            current_start_ns: now_ns - now_ns % bucket_ns,
            current: 0,
            dst_addrs: DistinctSet::default(),
            dst_ports: DistinctSet::default(),
            refused_ports: DistinctSet::default(),
            one_way_since_ns: 0,
        }
    }

    /// Rotates buckets so that `now_ns` falls in the current one.
    fn advance(&mut self, now_ns: u64) {
        if now_ns < self.current_start_ns + self.bucket_ns {
            return;
        }
        let steps = (now_ns - self.current_start_ns) / self.bucket_ns;
        for _ in 0..steps.min(BUCKETS as u64) {
            self.current = (self.current + 1) % BUCKETS;
            self.buckets[self.current] = Bucket::default();
        }
        self.current_start_ns += steps * self.bucket_ns;
    }

    /// One-way traffic that started within the last bucket length, as a rate since it
    /// started (at least [`RATE_MIN_SPAN_NS`]): a flood's rate from its first tenth of a
    /// second, where the sliding bucket would take a whole bucket to fill. Earlier one-way
    /// traffic: 0 (the sliding bucket measures it).
    fn one_way_since_start(&self, now_ns: u64, current: Option<usize>, previous: Option<usize>) -> f64 {
        let since = now_ns.saturating_sub(self.one_way_since_ns);
        if self.one_way_since_ns == 0 || since >= self.bucket_ns {
            return 0.0;
        }
        // Every one-way byte in these two buckets was sent since it started (it started
        // when both were empty).
        let bytes: u64 = [current, previous].into_iter().flatten().map(|index| self.buckets[index].one_way_bytes).sum();
        bytes as f64 / (since.max(RATE_MIN_SPAN_NS) as f64 / 1e9)
    }

    fn snapshot(&self, now_ns: u64) -> WindowSnapshot {
        // Buckets that have fallen out of the window are zeroed by `advance`; a snapshot
        // taken later than the last packet must not count them either.
        let stale =
            if now_ns >= self.current_start_ns + self.bucket_ns { ((now_ns - self.current_start_ns) / self.bucket_ns).min(BUCKETS as u64) as usize } else { 0 };
        let mut total = Bucket::default();
        for age in 0..BUCKETS.saturating_sub(stale) {
            let bucket = &self.buckets[(self.current + BUCKETS - age) % BUCKETS];
            total.new_flows += bucket.new_flows;
            total.answered_flows += bucket.answered_flows;
            total.new_tcp_flows += bucket.new_tcp_flows;
            total.icmp_sent += bucket.icmp_sent;
            total.packets += bucket.packets;
            total.bytes += bucket.bytes;
            total.tcp_packets += bucket.tcp_packets;
            total.syn_without_ack += bucket.syn_without_ack;
            total.rst += bucket.rst;
        }
        let share = |count: u32| if total.tcp_packets == 0 { 0.0 } else { f64::from(count) / f64::from(total.tcp_packets) };
        let window_secs = self.window_ns as f64 / 1e9;
        // A sliding bucket: the current bucket and the share of the previous one that
        // still lies within one bucket length of now.
        let (current, previous, elapsed_ns) = match stale {
            0 => (Some(self.current), Some((self.current + BUCKETS - 1) % BUCKETS), now_ns.saturating_sub(self.current_start_ns)),
            1 => (None, Some(self.current), now_ns - self.current_start_ns - self.bucket_ns),
            _ => (None, None, 0),
        };
        let previous_share = 1.0 - (elapsed_ns as f64 / self.bucket_ns as f64).min(1.0);
        let recent = |value: fn(&Bucket) -> f64| {
            let now_part = current.map_or(0.0, |index| value(&self.buckets[index]));
            let before = previous.map_or(0.0, |index| value(&self.buckets[index]));
            (now_part + before * previous_share) / (self.bucket_ns as f64 / 1e9)
        };
        WindowSnapshot {
            window_secs,
            distinct_dst_addrs: self.dst_addrs.count(now_ns, self.window_ns),
            distinct_dst_ports: self.dst_ports.count(now_ns, self.window_ns),
            refused_dst_ports: self.refused_ports.count(now_ns, self.window_ns),
            new_flows_per_sec: f64::from(total.new_flows) / window_secs,
            new_tcp_flows_per_sec: f64::from(total.new_tcp_flows) / window_secs,
            unanswered_flows_per_sec: f64::from(total.new_flows.saturating_sub(total.answered_flows)) / window_secs,
            recent_answered_flows_per_sec: recent(|bucket| f64::from(bucket.answered_flows)),
            recent_one_way_bytes_per_sec: recent(|bucket| bucket.one_way_bytes as f64).max(self.one_way_since_start(now_ns, current, previous)),
            recent_icmp_packets_per_sec: recent(|bucket| f64::from(bucket.icmp_sent)),
            icmp_packets_per_sec: f64::from(total.icmp_sent) / window_secs,
            packets_per_sec: f64::from(total.packets) / window_secs,
            bytes_per_sec: total.bytes as f64 / window_secs,
            syn_without_ack_ratio: share(total.syn_without_ack),
            rst_ratio: share(total.rst),
            saturated: self.dst_addrs.saturated(now_ns) || self.dst_ports.saturated(now_ns) || self.refused_ports.saturated(now_ns),
        }
    }
}

/// Whether an address (bytes as in a packet record) is unicast: not IPv4 multicast or
/// limited broadcast, not IPv6 multicast. One-way traffic to a group is how multicast
/// works (a video stream, routing protocols), not a flood of anyone.
fn is_unicast(addr: &[u8; 16], version: u8) -> bool {
    match version {
        4 => !(224..=239).contains(&addr[0]) && addr[..4] != [255, 255, 255, 255],
        _ => addr[0] != 0xff,
    }
}

/// Source address key: address bytes plus IP version.
pub type SourceKey = ([u8; 16], u8);

#[derive(Debug)]
struct SourceEntry {
    windows: Vec<SourceWindow>,
    /// The caller's hint of the source's latest flow (the flow table's handle).
    latest_flow: u64,
    /// In the list of sources active since the last [`WindowAggregator::take_active`].
    listed: bool,
}

/// A source that was active since the last report, with its aggregates.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceActivity {
    pub source: SourceKey,
    pub windows: Vec<WindowSnapshot>,
    pub latest_flow: u64,
}

/// Per-source aggregates over the configured windows.
#[derive(Debug)]
pub struct WindowAggregator {
    config: WindowConfig,
    sources: LruMap<SourceKey, SourceEntry>,
    /// Sources with packets since the last report (each once), when tracked: live
    /// capture reads them with `take_active`; offline extraction does not track.
    active: Vec<Handle>,
    track_active: bool,
    stats: WindowStats,
}

impl WindowAggregator {
    pub fn new(config: WindowConfig) -> WindowAggregator {
        let sources = LruMap::new(config.max_sources.max(1));
        WindowAggregator { config, sources, active: Vec::new(), track_active: false, stats: WindowStats::default() }
    }

    pub fn stats(&self) -> WindowStats {
        WindowStats { sources: self.sources.len() as u64, ..self.stats }
    }

    pub fn is_enabled(&self) -> bool {
        !self.config.windows_ns.is_empty()
    }

    /// Records a packet of a flow that `source` started. `seen` says what the packet is
    /// to its flow (the first packet's destination is `destination`: address, port);
    /// `answered`, whether the flow has had an answer (this packet included).
    /// `flow` is the caller's handle of that flow, handed back by [`Self::take_active`].
    pub fn observe(&mut self, source: SourceKey, destination: ([u8; 16], u16), packet: &PacketRecord, seen: Seen, answered: bool, flow: u64) {
        let new_flow = seen == Seen::NewFlow;
        if !self.is_enabled() {
            return;
        }
        let now_ns = packet.ts_ns;
        let handle = match self.sources.find(&source) {
            Some(handle) => {
                self.sources.touch(handle);
                handle
            }
            None => {
                if self.sources.is_full() {
                    if let Some(oldest) = self.sources.oldest() {
                        self.sources.remove(oldest);
                        self.stats.evicted_sources += 1;
                    }
                }
                let windows = self.config.windows_ns.iter().map(|window| SourceWindow::new(*window, now_ns)).collect();
                self.sources.insert(source, SourceEntry { windows, latest_flow: flow, listed: false })
            }
        };
        let max_distinct = self.config.max_distinct;
        let Some(entry) = self.sources.get_mut(handle) else { return };
        if new_flow {
            entry.latest_flow = flow;
        }
        // Bounded: evicted sources can leave stale handles until the next report.
        if self.track_active && !entry.listed && self.active.len() < 2 * self.config.max_sources {
            entry.listed = true;
            self.active.push(handle);
        }
        for window in entry.windows.iter_mut() {
            window.advance(now_ns);
            let bucket = &mut window.buckets[window.current];
            if new_flow {
                bucket.new_flows += 1;
                if packet.protocol == 6 {
                    bucket.new_tcp_flows += 1;
                }
            }
            if seen == Seen::FirstAnswer {
                bucket.answered_flows += 1;
            }
            if !answered && packet.src_addr == source.0 && is_unicast(&destination.0, source.1) {
                let previous = (window.current + BUCKETS - 1) % BUCKETS;
                if window.buckets[window.current].one_way_bytes == 0 && window.buckets[previous].one_way_bytes == 0 {
                    window.one_way_since_ns = now_ns;
                }
                window.buckets[window.current].one_way_bytes += u64::from(packet.ip_len);
            }
            let bucket = &mut window.buckets[window.current];
            bucket.packets += 1;
            bucket.bytes += u64::from(packet.ip_len);
            if matches!(packet.protocol, 1 | 58) && packet.src_addr == source.0 {
                bucket.icmp_sent += 1;
            }
            if packet.protocol == 6 {
                bucket.tcp_packets += 1;
                if packet.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN {
                    bucket.syn_without_ack += 1;
                }
                if packet.tcp_flags & tcp_flags::RST != 0 {
                    bucket.rst += 1;
                }
            }
            if seen == Seen::Refused {
                window.refused_ports.insert(destination.1, now_ns, window.window_ns, max_distinct);
            }
            if new_flow {
                window.dst_addrs.insert(destination.0, now_ns, window.window_ns, max_distinct);
                window.dst_ports.insert(destination.1, now_ns, window.window_ns, max_distinct);
            }
        }
    }

    /// The source's aggregates at `now_ns`, one per configured window; empty when the
    /// source is unknown (never seen, or evicted).
    pub fn snapshot(&self, source: SourceKey, now_ns: u64) -> Vec<WindowSnapshot> {
        match self.sources.find(&source).and_then(|handle| self.sources.get(handle)) {
            Some(entry) => entry.windows.iter().map(|window| window.snapshot(now_ns)).collect(),
            None => Vec::new(),
        }
    }

    /// Starts (or stops) listing the sources that have packets, for [`Self::take_active`].
    pub fn set_track_active(&mut self, track: bool) {
        self.track_active = track;
        if !track {
            self.active.clear();
        }
    }

    /// The sources that had packets since the last call, with their aggregates at
    /// `now_ns`, for which `keep` holds; at most `limit` (the rest stay listed for the
    /// next call). Live detection reads sources this way, without waiting for their
    /// flows to end.
    pub fn take_active(&mut self, now_ns: u64, limit: usize, keep: impl Fn(&[WindowSnapshot]) -> bool) -> Vec<SourceActivity> {
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(handle) = self.active.pop() else { break };
            let Some(source) = self.sources.key(handle) else { continue };
            let Some(entry) = self.sources.get_mut(handle) else { continue };
            entry.listed = false;
            let windows: Vec<WindowSnapshot> = entry.windows.iter().map(|window| window.snapshot(now_ns)).collect();
            if keep(&windows) {
                out.push(SourceActivity { source, windows, latest_flow: entry.latest_flow });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn syn(ts_ns: u64) -> PacketRecord {
        let mut packet: PacketRecord = bytemuck::Zeroable::zeroed();
        packet.ts_ns = ts_ns;
        packet.protocol = 6;
        packet.ip_version = 4;
        packet.tcp_flags = tcp_flags::SYN;
        packet
    }

    fn addr(last: u8) -> [u8; 16] {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&[10, 0, 0, last]);
        bytes
    }

    fn aggregator(max_distinct: usize) -> WindowAggregator {
        WindowAggregator::new(WindowConfig { windows_ns: vec![10 * SECOND], max_sources: 4, max_distinct })
    }

    #[test]
    fn port_scan_counts_distinct_ports_and_syn_share() {
        let mut windows = aggregator(128);
        let scanner = (addr(66), 4);
        for port in 0..20u16 {
            let ts = 100 * SECOND + u64::from(port) * 10_000_000;
            windows.observe(scanner, (addr(1), 1000 + port), &syn(ts), Seen::NewFlow, false, 0);
            let mut reply = syn(ts + 1000);
            reply.tcp_flags = tcp_flags::RST | tcp_flags::ACK;
            windows.observe(scanner, (addr(1), 1000 + port), &reply, if port < 15 { Seen::Refused } else { Seen::Packet }, false, 0);
        }
        let snapshot = windows.snapshot(scanner, 100 * SECOND + 200_000_000)[0];
        assert_eq!(snapshot.distinct_dst_addrs, 1);
        assert_eq!(snapshot.distinct_dst_ports, 20);
        assert_eq!(snapshot.refused_dst_ports, 15, "the ports that refused");
        assert_eq!(snapshot.new_flows_per_sec, 2.0, "20 flows in a 10 s window");
        assert_eq!(snapshot.new_tcp_flows_per_sec, 2.0, "all of them TCP");
        assert_eq!(snapshot.syn_without_ack_ratio, 0.5);
        assert_eq!(snapshot.rst_ratio, 0.5);
        assert!(!snapshot.saturated);
    }

    #[test]
    fn answered_flows_are_told_from_unanswered_ones_and_recent_rates_slide() {
        let mut windows = aggregator(128);
        let client = (addr(7), 4);
        // 50 DNS queries in one second, each answered 1 ms later.
        for query in 0..50u64 {
            let at = 100 * SECOND + query * 20_000_000;
            let mut packet = syn(at);
            (packet.protocol, packet.tcp_flags, packet.ip_len, packet.src_addr) = (17, 0, 70, addr(7));
            windows.observe(client, (addr(53), 53), &packet, Seen::NewFlow, false, 0);
            let mut answer = packet;
            (answer.ts_ns, answer.src_addr, answer.ip_len) = (at + 1_000_000, addr(53), 200);
            windows.observe(client, (addr(53), 53), &answer, Seen::FirstAnswer, true, 0);
        }
        let snapshot = windows.snapshot(client, 101 * SECOND)[0];
        assert_eq!(snapshot.unanswered_flows_per_sec, 0.0, "every query was answered");
        assert!((snapshot.recent_answered_flows_per_sec - 50.0).abs() < 1e-9, "{snapshot:?}");
        assert!((snapshot.recent_one_way_bytes_per_sec - 50.0 * 70.0).abs() < 1e-6, "the queries were one-way when sent: {snapshot:?}");
        // Half a second later half of that second still counts; two seconds later none.
        let later = windows.snapshot(client, 101 * SECOND + SECOND / 2)[0];
        assert!((later.recent_answered_flows_per_sec - 25.0).abs() < 1e-9, "{later:?}");
        assert_eq!(windows.snapshot(client, 103 * SECOND)[0].recent_answered_flows_per_sec, 0.0);
        // A UDP flood: 1,000 large datagrams in a second, never answered.
        let flooder = (addr(66), 4);
        for n in 0..1000u64 {
            let mut packet = syn(200 * SECOND + n * 1_000_000);
            (packet.protocol, packet.tcp_flags, packet.ip_len, packet.src_addr) = (17, 0, 1428, addr(66));
            windows.observe(flooder, (addr(9), 9000 + (n % 50) as u16), &packet, Seen::NewFlow, false, 0);
        }
        let flood = windows.snapshot(flooder, 201 * SECOND)[0];
        assert_eq!(flood.unanswered_flows_per_sec, 100.0, "1,000 in a 10 s window");
        assert!((flood.recent_one_way_bytes_per_sec - 1_428_000.0).abs() < 1e-6, "{flood:?}");
        // Its rate is known from its first tenth of a second, not after a whole second.
        let mut early = aggregator(128);
        for n in 0..150u64 {
            let mut packet = syn(300 * SECOND + n * 1_000_000);
            (packet.protocol, packet.tcp_flags, packet.ip_len, packet.src_addr) = (17, 0, 1428, addr(66));
            early.observe(flooder, (addr(9), 9), &packet, if n == 0 { Seen::NewFlow } else { Seen::Packet }, false, 0);
        }
        let after_150_ms = early.snapshot(flooder, 300 * SECOND + 150_000_000)[0];
        assert!((after_150_ms.recent_one_way_bytes_per_sec - 1_428_000.0).abs() < 1e-6, "{after_150_ms:?}");
        // A single datagram after a quiet spell is not a rate of a datagram per 100 µs.
        let mut single = aggregator(128);
        let mut packet = syn(400 * SECOND);
        (packet.protocol, packet.tcp_flags, packet.ip_len, packet.src_addr) = (17, 0, 1428, addr(66));
        single.observe(flooder, (addr(9), 9), &packet, Seen::NewFlow, false, 0);
        assert_eq!(single.snapshot(flooder, 400 * SECOND + 100_000)[0].recent_one_way_bytes_per_sec, 14_280.0, "1,428 bytes over 100 ms at least");
    }

    #[test]
    fn udp_request_response_pairs_are_flows_but_not_tcp_sessions() {
        let mut windows = aggregator(128);
        let resolver_client = (addr(7), 4);
        for query in 0..50u16 {
            let mut packet = syn(100 * SECOND + u64::from(query) * 20_000_000);
            packet.protocol = 17;
            packet.tcp_flags = 0;
            windows.observe(resolver_client, (addr(53), 53), &packet, Seen::NewFlow, false, 0);
        }
        let snapshot = windows.snapshot(resolver_client, 101 * SECOND)[0];
        assert_eq!((snapshot.new_flows_per_sec, snapshot.new_tcp_flows_per_sec), (5.0, 0.0));
    }

    #[test]
    fn icmp_counts_what_the_source_sent_not_the_answers() {
        let mut windows = aggregator(128);
        let pinger = (addr(9), 4);
        for echo in 0..30u64 {
            let mut request = syn(100 * SECOND + echo * 100_000_000);
            (request.protocol, request.tcp_flags, request.ip_len) = (1, 0, 1428);
            request.src_addr = addr(9);
            windows.observe(pinger, (addr(1), 0), &request, if echo == 0 { Seen::NewFlow } else { Seen::Packet }, false, 0);
            let mut reply = request;
            (reply.src_addr, reply.dst_addr) = (addr(1), addr(9));
            windows.observe(pinger, (addr(1), 0), &reply, Seen::Packet, false, 0);
        }
        let snapshot = windows.snapshot(pinger, 103 * SECOND)[0];
        assert_eq!((snapshot.icmp_packets_per_sec, snapshot.packets_per_sec), (3.0, 6.0), "30 requests of 60 packets in 10 s");
    }

    #[test]
    fn old_activity_leaves_the_window() {
        let mut windows = aggregator(128);
        let source = (addr(7), 4);
        windows.observe(source, (addr(1), 80), &syn(0), Seen::NewFlow, false, 0);
        windows.observe(source, (addr(2), 80), &syn(5 * SECOND), Seen::NewFlow, false, 0);
        assert_eq!(windows.snapshot(source, 5 * SECOND)[0].distinct_dst_addrs, 2);
        let later = windows.snapshot(source, 12 * SECOND)[0];
        assert_eq!(later.distinct_dst_addrs, 1, "the flow at t=0 is older than 10 s");
        assert_eq!(later.new_flows_per_sec, 0.1);
        let much_later = windows.snapshot(source, 30 * SECOND)[0];
        assert_eq!((much_later.distinct_dst_addrs, much_later.new_flows_per_sec), (0, 0.0));
    }

    #[test]
    fn distinct_counts_saturate_at_the_bound() {
        let mut windows = aggregator(8);
        let source = (addr(9), 4);
        for host in 0..50u8 {
            windows.observe(source, (addr(host), 22), &syn(SECOND + u64::from(host)), Seen::NewFlow, false, 0);
        }
        let snapshot = windows.snapshot(source, 2 * SECOND)[0];
        assert_eq!(snapshot.distinct_dst_addrs, 8);
        assert!(snapshot.saturated);
    }

    #[test]
    fn sources_are_bounded_and_evictions_counted() {
        let mut windows = aggregator(8);
        for host in 0..6u8 {
            windows.observe((addr(host), 4), (addr(200), 80), &syn(u64::from(host)), Seen::NewFlow, false, 0);
        }
        assert_eq!(windows.stats(), WindowStats { sources: 4, evicted_sources: 2 });
        assert!(windows.snapshot((addr(0), 4), 10).is_empty(), "the oldest source was evicted");
        assert_eq!(windows.snapshot((addr(5), 4), 10).len(), 1);
    }
}
