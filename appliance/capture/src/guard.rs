//! The per-destination guard against random-source floods: which services are under
//! attack, which sources are known good, and when a guard lapses. Pure logic (no maps,
//! no clock): the capture task feeds it packet records and the XDP program's counts,
//! and applies what it returns to the maps (`GuardMaps`).
//!
//! - **Under attack**: in one second, a service (destination address, port, protocol)
//!   got new flows from at least `new-sources-per-sec` distinct sources not known good,
//!   and fewer than half of those completed a handshake. (One source's SYN flood is
//!   many flows from one source: per-source detection blocks it; the guard is for floods
//!   with no source to block.) The capture task then writes the
//!   service's guard into the XDP program's map.
//! - **Known good** (spoof-proof): the flow's destination sent TCP payload to the
//!   source after the source's SYN, and that payload arrived on another interface than
//!   the SYN. A TCP stack sends payload only on an established connection, which needs
//!   the ACK of the destination's random initial sequence number (two-way evidence,
//!   `mld-detect`'s evidence.rs); the interface condition keeps a blind spoofer on one
//!   link from forging the destination's answer too (its forged answer would arrive on
//!   its own link, like its SYN).
//! - **While guarded** the dropped packets never reach user space: the XDP program
//!   counts, per guard, the first packets it passed and dropped; their sum per second is
//!   what is offered. Below half the threshold for `quiet-secs` seconds in a row, the
//!   guard lapses (hysteresis: on at the threshold, off below half of it, and only
//!   after a quiet period).
//!
//! Every table is bounded: services tracked (`max-destinations`), known-good sources
//! ([`GOOD_ENTRIES`]), handshakes waiting for their answer ([`PENDING_MAX`]), guards at
//! once ([`GUARD_ENTRIES`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use mld_config::GuardConfig;
use mld_packet::{tcp_flags, PacketRecord};

use crate::maps::{GuardKey, GuardValue, GOOD_ENTRIES, GUARD_ENTRIES};

/// Handshakes (SYNs of sources not known good) waiting for the destination's payload, at most.
pub const PENDING_MAX: usize = 65_536;
/// Distinct sources remembered per service and second, at most; beyond, every new flow
/// counts as a new source (the service is far past any sane threshold by then).
pub const SOURCES_PER_SECOND_MAX: usize = 4096;
/// A handshake whose payload has not come within this long is forgotten.
const PENDING_NS: u64 = 5_000_000_000;
/// An unguarded service with no new flows for this long is forgotten.
const IDLE_NS: u64 = 30_000_000_000;
/// A guard's entry in the XDP map lapses by itself this long after it was last renewed
/// (a capture task that stops renewing, held after crashes, cannot leave a service
/// guarded for ever); renewed every half of it.
pub const GUARD_LEASE: Duration = Duration::from_secs(60);
/// A service's address stays a flood's victim this long after its guard lapsed: block
/// commands for it are refused (a flood's victim answers thousands of forged sources,
/// and when the ring buffer overflows in the flood's first second the flow table sees
/// those answers without their SYNs, as if the victim were scanning).
pub const VICTIM_HOLD_NS: u64 = 120_000_000_000;
/// A known-good source is written to the XDP map again at most this often.
const GOOD_REWRITE_NS: u64 = 10_000_000_000;
const TCP: u8 = 6;
const UDP: u8 = 17;

/// The validated `[guard]` settings in the tracker's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardSettings {
    pub enabled: bool,
    pub new_sources_per_sec: u64,
    pub rate_per_sec: u64,
    pub burst: u64,
    pub quiet_secs: u64,
    pub known_good_ns: u64,
    pub max_destinations: usize,
}

impl From<&GuardConfig> for GuardSettings {
    fn from(config: &GuardConfig) -> GuardSettings {
        GuardSettings {
            enabled: config.enabled,
            new_sources_per_sec: config.new_sources_per_sec,
            rate_per_sec: config.rate_per_sec,
            burst: config.burst,
            quiet_secs: config.quiet.as_secs(),
            known_good_ns: config.known_good.as_nanos() as u64,
            max_destinations: config.max_destinations,
        }
    }
}

impl GuardSettings {
    /// The XDP entry of a new guard: an empty bucket that starts full, expiring
    /// `GUARD_LEASE` after `now_boot_ns`.
    pub fn entry(&self, now_boot_ns: u64) -> GuardValue {
        let interval_ns = 1_000_000_000 / self.rate_per_sec.max(1);
        GuardValue {
            interval_ns,
            burst_ns: interval_ns.saturating_mul(self.burst.max(1)),
            tat_ns: 0,
            expires_ns: now_boot_ns + GUARD_LEASE.as_nanos() as u64,
            good_within_ns: self.known_good_ns,
            passed: 0,
            dropped: 0,
            known_passed: 0,
        }
    }
}

/// A change of a service's state, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardChange {
    /// The service went under attack: in the last second, `new_per_sec` new flows from
    /// unknown sources, `completed_per_sec` of them completed.
    On { key: GuardKey, new_per_sec: u64, completed_per_sec: u64 },
    /// The guard lapsed after `guarded_secs`: first packets offered per second in its
    /// last second and at its peak, and the XDP program's totals.
    Off { key: GuardKey, guarded_secs: u64, offered_per_sec: u64, peak_offered_per_sec: u64, passed: u64, dropped: u64, known_passed: u64 },
}

/// What the capture task must do to the XDP maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardAction {
    /// Write a new guard (a fresh entry from [`GuardSettings::entry`]).
    Guard(GuardKey),
    /// Renew a guard's lease, keeping its bucket and counts.
    Renew(GuardKey),
    /// Remove a guard.
    Unguard(GuardKey),
}

/// Counters of the tracker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardCounters {
    pub guards_on: u64,
    pub guards_off: u64,
    /// Services not tracked because the table was full of active ones.
    pub destinations_untracked: u64,
    /// Services under attack that could not be guarded: `GUARD_ENTRIES` already are.
    pub guards_refused: u64,
    /// Handshakes not followed because the pending table was full.
    pub pending_full: u64,
    pub good_sources: u64,
    pub good_forgotten: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Guarded {
    since_s: u64,
    quiet_secs: u64,
    last_total: u64,
    peak: u64,
    last_offered: u64,
    renewed_s: u64,
}

#[derive(Debug, Clone, Default)]
struct Destination {
    /// Distinct sources not known good with a new flow in the current second.
    new_unknown: u64,
    sources: std::collections::HashSet<IpAddr>,
    completed: u64,
    last_active_ns: u64,
    guarded: Option<Guarded>,
}

/// (initiator, its port, destination, its port) of a TCP handshake.
type HandshakeKey = (IpAddr, u16, IpAddr, u16);

/// The tracker (module doc).
#[derive(Debug)]
pub struct GuardTracker {
    settings: GuardSettings,
    destinations: HashMap<GuardKey, Destination>,
    /// Source → when it last showed two-way evidence, and when it was last handed on
    /// for the XDP map (packet time, ns).
    good: HashMap<IpAddr, (u64, u64)>,
    /// Sources to write into the XDP known-good map.
    good_to_write: Vec<IpAddr>,
    pending: HashMap<HandshakeKey, (u32, u64)>,
    /// Addresses of guarded services → when they were last guarded (at most
    /// `GUARD_ENTRIES` guarded at once, each kept `VICTIM_HOLD_NS`).
    victims: HashMap<IpAddr, u64>,
    /// The second (of packet time) being counted.
    second: u64,
    tried_eviction_in: u64,
    guarded_now: usize,
    pub counters: GuardCounters,
}

impl GuardTracker {
    pub fn new(settings: GuardSettings) -> GuardTracker {
        GuardTracker {
            settings,
            destinations: HashMap::new(),
            good: HashMap::new(),
            good_to_write: Vec::new(),
            pending: HashMap::new(),
            victims: HashMap::new(),
            second: 0,
            tried_eviction_in: u64::MAX,
            guarded_now: 0,
            counters: GuardCounters::default(),
        }
    }

    pub fn settings(&self) -> &GuardSettings {
        &self.settings
    }

    /// Services guarded now.
    pub fn guarded(&self) -> Vec<GuardKey> {
        let mut keys: Vec<GuardKey> = self.destinations.iter().filter(|(_, dest)| dest.guarded.is_some()).map(|(key, _)| *key).collect();
        keys.sort();
        keys
    }

    /// How many services are guarded now (no allocation: for every loop turn).
    pub fn guarded_count(&self) -> usize {
        self.guarded_now
    }

    /// Services tracked now.
    pub fn tracked(&self) -> usize {
        self.destinations.len()
    }

    /// Whether `source` completed a handshake within `known-good-secs` of `now_ns`.
    pub fn is_good(&self, source: IpAddr, now_ns: u64) -> bool {
        self.good.get(&source).is_some_and(|(at, _)| now_ns.saturating_sub(*at) <= self.settings.known_good_ns)
    }

    /// Whether `addr` is a guarded service's address, or was within `VICTIM_HOLD_NS`.
    pub fn is_victim(&self, addr: IpAddr, now_ns: u64) -> bool {
        self.victims.get(&addr).is_some_and(|at| now_ns.saturating_sub(*at) <= VICTIM_HOLD_NS)
    }

    /// Addresses that are victims now (see [`GuardTracker::is_victim`]).
    pub fn victims(&self, now_ns: u64) -> Vec<IpAddr> {
        let mut victims: Vec<IpAddr> = self.victims.iter().filter(|(_, at)| now_ns.saturating_sub(**at) <= VICTIM_HOLD_NS).map(|(addr, _)| *addr).collect();
        victims.sort();
        victims
    }

    /// Sources to write into the XDP known-good map (taken).
    pub fn take_good(&mut self) -> Vec<IpAddr> {
        std::mem::take(&mut self.good_to_write)
    }

    /// One packet record (time: `packet.ts_ns`); `new_flow`: it started a flow in the
    /// flow table.
    pub fn observe(&mut self, packet: &PacketRecord, new_flow: bool) {
        if !self.settings.enabled {
            return;
        }
        let now = packet.ts_ns;
        let (source, destination) = (packet.src_ip(), packet.dst_ip());
        let syn = packet.protocol == TCP && packet.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
        if packet.protocol == TCP && packet.payload_len > 0 {
            // The destination's payload to the initiator of a handshake we saw start.
            if let Some((ifindex, _)) = self.pending.get(&(destination, packet.dst_port, source, packet.src_port)).copied() {
                if ifindex != packet.ifindex {
                    self.pending.remove(&(destination, packet.dst_port, source, packet.src_port));
                    let key = GuardKey::new(source, packet.src_port, TCP);
                    if !self.is_good(destination, now) {
                        if let Some(dest) = self.destinations.get_mut(&key) {
                            dest.completed += 1;
                        }
                    }
                    self.saw_good(destination, now);
                }
            }
            return;
        }
        if !new_flow || !(syn || packet.protocol == UDP) {
            return;
        }
        let good = self.good.get(&source).copied().filter(|(at, _)| now.saturating_sub(*at) <= self.settings.known_good_ns);
        // A known-good source's handshakes are followed too, now and then, so that an
        // active one stays known good (its time renewed).
        let follow = good.is_none_or(|(at, _)| now.saturating_sub(at) >= GOOD_REWRITE_NS);
        if syn && follow && self.pending.len() < PENDING_MAX {
            self.pending.insert((source, packet.src_port, destination, packet.dst_port), (packet.ifindex, now));
        } else if syn && follow {
            self.counters.pending_full += 1;
        }
        if good.is_some() {
            return;
        }
        let key = GuardKey::new(destination, packet.dst_port, packet.protocol);
        if !self.destinations.contains_key(&key) && !self.make_room(now) {
            self.counters.destinations_untracked += 1;
            return;
        }
        let dest = self.destinations.entry(key).or_default();
        dest.last_active_ns = now;
        let full = dest.sources.len() >= SOURCES_PER_SECOND_MAX.min(self.settings.new_sources_per_sec as usize);
        if full || dest.sources.insert(source) {
            dest.new_unknown += 1;
        }
    }

    fn saw_good(&mut self, source: IpAddr, now: u64) {
        let written = match self.good.get(&source) {
            Some((_, written)) => *written,
            None => {
                if self.good.len() >= GOOD_ENTRIES as usize {
                    self.forget_good(now);
                }
                self.counters.good_sources += 1;
                0
            }
        };
        let write = written == 0 || now.saturating_sub(written) >= GOOD_REWRITE_NS;
        if write && self.good_to_write.len() < GOOD_ENTRIES as usize {
            self.good_to_write.push(source);
        }
        self.good.insert(source, (now, if write { now } else { written }));
    }

    /// The table of known-good sources is full: forget the expired, then the oldest quarter.
    fn forget_good(&mut self, now: u64) {
        let before = self.good.len();
        let keep_ns = self.settings.known_good_ns;
        self.good.retain(|_, (at, _)| now.saturating_sub(*at) <= keep_ns);
        if self.good.len() >= GOOD_ENTRIES as usize {
            let mut times: Vec<u64> = self.good.values().map(|(at, _)| *at).collect();
            times.sort_unstable();
            let cut = times[times.len() / 4];
            self.good.retain(|_, (at, _)| *at > cut);
        }
        self.counters.good_forgotten += (before - self.good.len()) as u64;
    }

    /// Room for one more service: forgets unguarded services without new flows in the
    /// current second (at most one attempt per second, so a flood of new destinations
    /// costs no scan per packet).
    fn make_room(&mut self, now: u64) -> bool {
        if self.destinations.len() < self.settings.max_destinations {
            return true;
        }
        let second = now / 1_000_000_000;
        if self.tried_eviction_in == second {
            return false;
        }
        self.tried_eviction_in = second;
        self.destinations.retain(|_, dest| dest.guarded.is_some() || dest.new_unknown > 0);
        self.destinations.len() < self.settings.max_destinations
    }

    /// Closes the second(s) ended by `now_ns`: decides which services go under attack
    /// and which guards lapse. `read` gives a guard's XDP entry (its counts). Returns
    /// the changes to log, and appends what to do to the maps to `actions`.
    pub fn tick(&mut self, now_ns: u64, mut read: impl FnMut(&GuardKey) -> Option<GuardValue>, actions: &mut Vec<GuardAction>) -> Vec<GuardChange> {
        let second = now_ns / 1_000_000_000;
        if self.second == 0 {
            self.second = second;
        }
        if second <= self.second {
            return Vec::new();
        }
        let elapsed = second - self.second;
        self.second = second;
        let mut changes = Vec::new();
        let threshold = self.settings.new_sources_per_sec;
        let mut guarded_now = self.destinations.values().filter(|dest| dest.guarded.is_some()).count();
        let mut keys: Vec<GuardKey> = self.destinations.keys().copied().collect();
        keys.sort();
        for key in keys {
            let dest = self.destinations.get_mut(&key).expect("listed");
            let (new_per_sec, completed_per_sec) = (dest.new_unknown / elapsed, dest.completed / elapsed);
            dest.new_unknown = 0;
            dest.completed = 0;
            dest.sources.clear();
            match dest.guarded.as_mut() {
                None => {
                    if self.settings.enabled && new_per_sec >= threshold && completed_per_sec * 2 < new_per_sec {
                        if guarded_now >= GUARD_ENTRIES as usize {
                            self.counters.guards_refused += 1;
                            continue;
                        }
                        guarded_now += 1;
                        self.victims.insert(key.addr(), now_ns);
                        dest.guarded = Some(Guarded { since_s: second, renewed_s: second, ..Guarded::default() });
                        self.counters.guards_on += 1;
                        actions.push(GuardAction::Guard(key));
                        changes.push(GuardChange::On { key, new_per_sec, completed_per_sec });
                    } else if now_ns.saturating_sub(dest.last_active_ns) >= IDLE_NS {
                        self.destinations.remove(&key);
                    }
                }
                Some(guard) => {
                    self.victims.insert(key.addr(), now_ns);
                    let value = read(&key).unwrap_or_default();
                    let total = value.passed + value.dropped;
                    let offered = total.saturating_sub(guard.last_total) / elapsed;
                    guard.last_total = total;
                    guard.last_offered = offered;
                    guard.peak = guard.peak.max(offered);
                    if offered * 2 < threshold {
                        guard.quiet_secs += elapsed;
                    } else {
                        guard.quiet_secs = 0;
                    }
                    if guard.quiet_secs >= self.settings.quiet_secs || !self.settings.enabled {
                        changes.push(GuardChange::Off {
                            key,
                            guarded_secs: second.saturating_sub(guard.since_s),
                            offered_per_sec: offered,
                            peak_offered_per_sec: guard.peak,
                            passed: value.passed,
                            dropped: value.dropped,
                            known_passed: value.known_passed,
                        });
                        self.counters.guards_off += 1;
                        actions.push(GuardAction::Unguard(key));
                        dest.guarded = None;
                        dest.last_active_ns = now_ns;
                    } else if second.saturating_sub(guard.renewed_s) >= GUARD_LEASE.as_secs() / 2 {
                        guard.renewed_s = second;
                        actions.push(GuardAction::Renew(key));
                    }
                }
            }
        }
        self.pending.retain(|_, (_, at)| now_ns.saturating_sub(*at) < PENDING_NS);
        self.victims.retain(|_, at| now_ns.saturating_sub(*at) <= VICTIM_HOLD_NS);
        self.guarded_now = self.destinations.values().filter(|dest| dest.guarded.is_some()).count();
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: [u8; 4] = [10, 66, 9, 2];
    const S: u64 = 1_000_000_000;

    fn settings() -> GuardSettings {
        GuardSettings { enabled: true, new_sources_per_sec: 200, rate_per_sec: 50, burst: 100, quiet_secs: 3, known_good_ns: 3600 * S, max_destinations: 16 }
    }

    /// A TCP packet `from` (address, port) `to` (address, port).
    fn packet(ts_ns: u64, (src, sport): ([u8; 4], u16), (dst, dport): ([u8; 4], u16), flags: u8, payload: u16, ifindex: u32) -> PacketRecord {
        let mut packet: PacketRecord = bytemuck::Zeroable::zeroed();
        packet.ts_ns = ts_ns;
        packet.src_addr[..4].copy_from_slice(&src);
        packet.dst_addr[..4].copy_from_slice(&dst);
        packet.src_port = sport;
        packet.dst_port = dport;
        packet.ip_version = 4;
        packet.protocol = TCP;
        packet.tcp_flags = flags;
        packet.payload_len = payload;
        packet.ifindex = ifindex;
        packet
    }

    fn syn(ts_ns: u64, src: [u8; 4], sport: u16) -> PacketRecord {
        packet(ts_ns, (src, sport), (SERVER, 8080), tcp_flags::SYN, 0, 2)
    }

    fn key() -> GuardKey {
        GuardKey::new(IpAddr::from(SERVER), 8080, TCP)
    }

    /// `count` spoofed SYNs spread over the second starting at `second`.
    fn flood(tracker: &mut GuardTracker, second: u64, count: u64) {
        for index in 0..count {
            let n = second * 100_000 + index;
            let src = [11, (n >> 16) as u8, (n >> 8) as u8, n as u8];
            tracker.observe(&syn(second * S + index * (S / count.max(1)), src, 1024 + index as u16), true);
        }
    }

    /// A client's request: SYN, then the server's payload on the other interface.
    fn request(tracker: &mut GuardTracker, ts_ns: u64, client: [u8; 4], sport: u16) {
        tracker.observe(&syn(ts_ns, client, sport), true);
        tracker.observe(&packet(ts_ns + 1_000_000, (SERVER, 8080), (client, sport), tcp_flags::ACK | tcp_flags::PSH, 500, 3), false);
    }

    #[test]
    fn a_random_source_flood_puts_the_service_under_attack_and_it_lapses_after_the_quiet_period() {
        let mut tracker = GuardTracker::new(settings());
        let mut actions = Vec::new();
        tracker.tick(S, |_| None, &mut actions);
        flood(&mut tracker, 1, 1000);
        let changes = tracker.tick(2 * S, |_| None, &mut actions);
        assert_eq!(changes, vec![GuardChange::On { key: key(), new_per_sec: 1000, completed_per_sec: 0 }]);
        assert_eq!(actions, vec![GuardAction::Guard(key())]);
        assert_eq!(tracker.guarded(), vec![key()]);
        assert_eq!(tracker.guarded_count(), 1);
        // The flood goes on: the XDP program counts what it is offered (passed + dropped).
        let mut value = GuardValue::default();
        for second in 3..8 {
            value.passed += 50;
            value.dropped += 950;
            assert!(tracker.tick(second * S, |_| Some(value), &mut actions).is_empty(), "second {second}");
        }
        // It ends: quiet for 3 s (just under half the threshold is quiet), then off.
        value.dropped += 99;
        assert!(tracker.tick(8 * S, |_| Some(value), &mut actions).is_empty());
        assert!(tracker.tick(9 * S, |_| Some(value), &mut actions).is_empty());
        let changes = tracker.tick(10 * S, |_| Some(value), &mut actions);
        assert_eq!(
            changes,
            vec![GuardChange::Off { key: key(), guarded_secs: 8, offered_per_sec: 0, peak_offered_per_sec: 1000, passed: 250, dropped: 4849, known_passed: 0 }]
        );
        assert_eq!(actions.last(), Some(&GuardAction::Unguard(key())));
        assert!(tracker.guarded().is_empty());
        // The victim stays one for a while after: block commands for it are refused.
        assert!(tracker.is_victim(IpAddr::from(SERVER), 10 * S + VICTIM_HOLD_NS));
        tracker.tick(11 * S + VICTIM_HOLD_NS, |_| None, &mut actions);
        assert!(!tracker.is_victim(IpAddr::from(SERVER), 11 * S + VICTIM_HOLD_NS));
    }

    #[test]
    fn hysteresis_a_flood_at_the_threshold_keeps_the_guard_and_a_lull_shorter_than_the_quiet_period_does_not_end_it() {
        let mut tracker = GuardTracker::new(settings());
        let mut actions = Vec::new();
        tracker.tick(S, |_| None, &mut actions);
        flood(&mut tracker, 1, 199);
        assert!(tracker.tick(2 * S, |_| None, &mut actions).is_empty(), "below the threshold: nothing");
        flood(&mut tracker, 2, 200);
        assert_eq!(tracker.tick(3 * S, |_| None, &mut actions).len(), 1, "at the threshold: on");
        let mut value = GuardValue::default();
        // Half the threshold (100/s) is not quiet: the guard holds.
        for second in 4..40 {
            value.dropped += if second % 3 == 0 { 0 } else { 100 };
            let changes = tracker.tick(second * S, |_| Some(value), &mut actions);
            assert!(changes.is_empty(), "second {second}: {changes:?}");
        }
        assert_eq!(tracker.guarded(), vec![key()]);
        assert!(actions.contains(&GuardAction::Renew(key())), "the lease is renewed while the flood goes on: {actions:?}");
    }

    #[test]
    fn a_busy_real_client_never_puts_the_service_under_attack() {
        let mut tracker = GuardTracker::new(settings());
        let mut actions = Vec::new();
        let client = [10, 66, 1, 2];
        // 1,000 requests a second for 10 s from one real client.
        for second in 1..11 {
            for index in 0..1000u64 {
                request(&mut tracker, second * S + index * 1_000_000, client, (10_000 + index) as u16);
            }
            assert!(tracker.tick((second + 1) * S, |_| None, &mut actions).is_empty());
        }
        assert!(tracker.is_good(IpAddr::from(client), 11 * S));
        assert!(actions.is_empty());
    }

    #[test]
    fn one_source_flooding_is_not_a_random_source_flood() {
        // hping3 -S from one real address: 5,000 SYNs a second, each a new flow. Per-source
        // detection blocks it; the guard stays off.
        let mut tracker = GuardTracker::new(settings());
        let mut actions = Vec::new();
        tracker.tick(S, |_| None, &mut actions);
        for index in 0..5000u64 {
            tracker.observe(&syn(S + index * 200_000, [10, 66, 2, 2], (1024 + index % 60_000) as u16), true);
        }
        assert!(tracker.tick(2 * S, |_| None, &mut actions).is_empty());
        assert!(actions.is_empty());
    }

    #[test]
    fn a_flash_crowd_of_new_clients_completing_handshakes_is_not_an_attack() {
        let mut tracker = GuardTracker::new(settings());
        let mut actions = Vec::new();
        tracker.tick(S, |_| None, &mut actions);
        for index in 0..500u64 {
            request(&mut tracker, S + index * 1_000_000, [10, 77, (index >> 8) as u8, index as u8], 40_000);
        }
        assert!(tracker.tick(2 * S, |_| None, &mut actions).is_empty());
        assert!(actions.is_empty());
    }

    #[test]
    fn a_forged_answer_on_the_spoofers_own_link_proves_nothing() {
        let mut tracker = GuardTracker::new(settings());
        let forged = [11, 0, 0, 1];
        tracker.observe(&syn(S, forged, 5000), true);
        // "From the server", with payload, but arriving on the spoofer's interface (2).
        tracker.observe(&packet(S + 1000, (SERVER, 8080), (forged, 5000), tcp_flags::ACK, 100, 2), false);
        assert!(!tracker.is_good(IpAddr::from(forged), S + 2000));
        // Payload to an address that never sent a SYN proves nothing either.
        tracker.observe(&packet(S + 3000, (SERVER, 8080), ([11, 0, 0, 2], 5000), tcp_flags::ACK, 100, 3), false);
        assert!(!tracker.is_good(IpAddr::from([11, 0, 0, 2]), S + 4000));
        assert!(tracker.take_good().is_empty());
        // The real answer, on the server's interface, does.
        request(&mut tracker, 2 * S, [10, 66, 1, 2], 6000);
        assert_eq!(tracker.take_good(), vec![IpAddr::from([10, 66, 1, 2])]);
    }

    #[test]
    fn known_good_sources_do_not_count_towards_an_attack() {
        let mut tracker = GuardTracker::new(settings());
        let mut actions = Vec::new();
        let client = [10, 66, 1, 2];
        request(&mut tracker, S / 2, client, 1);
        tracker.tick(S, |_| None, &mut actions);
        // 300 SYNs a second from the known client (each a new flow): not unknown sources.
        for index in 0..300u64 {
            tracker.observe(&syn(S + index * 1_000_000, client, 2000 + index as u16), true);
        }
        assert!(tracker.tick(2 * S, |_| None, &mut actions).is_empty());
    }

    #[test]
    fn an_active_known_good_source_stays_known_good_and_is_written_again() {
        let mut tracker = GuardTracker::new(GuardSettings { known_good_ns: 30 * S, ..settings() });
        let client = [10, 66, 1, 2];
        request(&mut tracker, S, client, 1);
        assert_eq!(tracker.take_good().len(), 1);
        // 24 s later (past the 10 s rewrite interval), another request renews it.
        request(&mut tracker, 25 * S, client, 2);
        assert_eq!(tracker.take_good(), vec![IpAddr::from(client)], "written into the XDP map again");
        assert!(tracker.is_good(IpAddr::from(client), 50 * S), "good until 25 + 30 s");
        assert!(!tracker.is_good(IpAddr::from(client), 56 * S));
    }

    #[test]
    fn every_table_is_bounded() {
        let mut tracker = GuardTracker::new(settings());
        let mut actions = Vec::new();
        tracker.tick(S, |_| None, &mut actions);
        // SYNs to 100 services in one second: 16 tracked, the rest counted.
        for port in 0..100u16 {
            tracker.observe(&packet(S + u64::from(port), ([11, 0, 0, 1], 1000 + port), (SERVER, port), tcp_flags::SYN, 0, 2), true);
        }
        assert_eq!(tracker.tracked(), 16);
        assert_eq!(tracker.counters.destinations_untracked, 84);
        // The next second, quiet services make room.
        tracker.tick(2 * S, |_| None, &mut actions);
        tracker.observe(&packet(2 * S + 5, ([11, 0, 0, 1], 999), (SERVER, 9999), tcp_flags::SYN, 0, 2), true);
        assert_eq!(tracker.tracked(), 1);
        // Pending handshakes: at most PENDING_MAX.
        let before = tracker.pending.len() as u64;
        for index in 0..(PENDING_MAX as u64 + 10) {
            let src = [12, (index >> 16) as u8, (index >> 8) as u8, index as u8];
            tracker.observe(&syn(3 * S, src, 1), true);
        }
        assert_eq!(tracker.pending.len(), PENDING_MAX);
        assert_eq!(tracker.counters.pending_full, before + 10);
        // Forgotten once they are older than PENDING_NS.
        tracker.tick(3 * S + PENDING_NS, |_| None, &mut actions);
        assert!(tracker.pending.is_empty());
    }

    #[test]
    fn disabled_it_never_guards() {
        let mut tracker = GuardTracker::new(GuardSettings { enabled: false, ..settings() });
        let mut actions = Vec::new();
        tracker.tick(S, |_| None, &mut actions);
        flood(&mut tracker, 1, 5000);
        assert!(tracker.tick(2 * S, |_| None, &mut actions).is_empty());
        assert!(actions.is_empty());
    }

    #[test]
    fn a_new_guard_starts_with_a_full_bucket_and_a_lease() {
        let entry = settings().entry(7 * S);
        assert_eq!(entry.interval_ns, 20_000_000);
        assert_eq!(entry.burst_ns, 2 * S);
        assert_eq!(entry.expires_ns, 7 * S + GUARD_LEASE.as_nanos() as u64);
        assert_eq!(entry.good_within_ns, 3600 * S);
    }
}
