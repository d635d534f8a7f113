//! What a "block" decision turns into: protected sources refused, a TTL per category that
//! doubles for repeat offenders, a circuit breaker on new blocks, dry-run. Pure state:
//! the detect task sends the resulting commands to the capture task and logs each
//! outcome.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use mld_config::{ResponseConfig, ResponseMode};

use crate::exempt::{ExemptError, Exemption, Exemptions};
use crate::heuristics::Category;

pub use mld_hostnet::{Protected, Protection};

/// The outcome of a block decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Block for `ttl`; `step` 0 is a first block, n the n-th repeat.
    Block { ttl: Duration, step: u32 },
    /// Dry run: what would have been done.
    WouldBlock { ttl: Duration, step: u32 },
    /// Never blocked: logged as refused.
    Refused(Protection),
    /// The circuit breaker is open: too many new blocks this minute, or too many in force.
    BreakerOpen(String),
    /// Already blocked: nothing new.
    AlreadyBlocked,
}

pub use mld_hostnet::is_unicast;

/// Link-local (fe80::/10, 169.254.0.0/16).
pub fn is_link_local(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[derive(Debug, Clone, Copy)]
struct History {
    last_block_ns: u64,
    step: u32,
}

/// New blocks in the current minute of the circuit breaker.
#[derive(Debug, Clone, Copy, Default)]
struct Minute {
    start_ns: u64,
    /// All new blocks.
    blocks: u32,
    /// New blocks of sources without two-way evidence (at most max - reserved).
    one_way_blocks: u32,
}

/// Sources remembered for escalation at most (oldest forgotten first).
const HISTORY_MAX: usize = 65_536;

#[derive(Debug)]
pub struct Responder {
    config: ResponseConfig,
    protected: Protected,
    /// Blocks in force: source → until (ns, the detect clock).
    active: HashMap<IpAddr, u64>,
    history: HashMap<IpAddr, History>,
    /// New blocks in the current minute.
    minute: Minute,
    pub refused: u64,
    pub breaker_trips: u64,
    /// Sources the operator released and marked benign: refused like protected ones.
    exemptions: Exemptions,
    /// Victims of random-source floods: (address, service) → (what, until ns; `u64::MAX`
    /// while guarded). An address is refused like a protected one while any of its
    /// services is: under such a flood the victim's answers to forged sources whose SYNs
    /// the capture missed look like its own scan.
    flood_victims: HashMap<(IpAddr, String), (String, u64)>,
}

/// Victims remembered at most (the capture task guards at most 1,024 services).
const FLOOD_VICTIMS_MAX: usize = 4096;

impl Responder {
    pub fn new(config: ResponseConfig, protected: Protected) -> Responder {
        Responder {
            config,
            protected,
            active: HashMap::new(),
            history: HashMap::new(),
            minute: Minute::default(),
            refused: 0,
            breaker_trips: 0,
            exemptions: Exemptions::default(),
            flood_victims: HashMap::new(),
        }
    }

    /// `service` of `address` went under a random-source flood (`until_ns` `u64::MAX`
    /// while guarded) or its guard lapsed (then the hold after it): no block of `address`
    /// while any of its services is held, refused as a flood's victim.
    pub fn flood_victim(&mut self, address: IpAddr, service: &str, what: String, until_ns: u64, now_ns: u64) {
        self.flood_victims.retain(|_, (_, until)| *until > now_ns);
        let key = (address, service.to_string());
        if self.flood_victims.len() < FLOOD_VICTIMS_MAX || self.flood_victims.contains_key(&key) {
            self.flood_victims.insert(key, (what, until_ns));
        }
    }

    /// The guards' source went away (a new capture connection: a restarted capture task
    /// starts without guards and will not say they lapsed): every open-ended hold ends at
    /// `until_ns`.
    pub fn flood_victims_lapse(&mut self, until_ns: u64) {
        for (_, until) in self.flood_victims.values_mut() {
            *until = (*until).min(until_ns);
        }
    }

    fn flood_victim_of(&self, source: IpAddr, now_ns: u64) -> Option<String> {
        self.flood_victims.iter().find(|((address, _), (_, until))| *address == source && *until > now_ns).map(|(_, (what, _))| what.clone())
    }

    pub fn protected(&self) -> &Protected {
        &self.protected
    }

    /// The protected sources, to refresh with the host's facts.
    pub fn protected_mut(&mut self) -> &mut Protected {
        &mut self.protected
    }

    pub fn config(&self) -> &ResponseConfig {
        &self.config
    }

    pub fn protection(&self, source: IpAddr) -> Option<Protection> {
        self.protected.of_address(source)
    }

    /// The operator's exemptions (`mldefender block del --benign`).
    pub fn exemptions(&self) -> &Exemptions {
        &self.exemptions
    }

    /// Replaces the exemptions (read back from their file at start).
    pub fn set_exemptions(&mut self, exemptions: Exemptions) {
        self.exemptions = exemptions;
    }

    /// The operator released `prefix` and marked it benign: no block of a source it covers
    /// from now until the exemption expires, and the blocks in force it covers are
    /// forgotten (the operator removed their deny entries).
    pub fn mark_benign(&mut self, prefix: mld_types::IpPrefix, reason: &str, duration: Duration, now_ns: u64) -> Result<Exemption, ExemptError> {
        let exemption = self.exemptions.add(prefix, reason, duration, now_ns)?;
        self.release(prefix);
        Ok(exemption)
    }

    /// The operator removed the deny entries `prefix` covers (`block del`): the blocks in
    /// force it covers are forgotten, so new evidence blocks their sources again at once.
    /// Returns how many.
    pub fn release(&mut self, prefix: mld_types::IpPrefix) -> usize {
        let before = self.active.len();
        self.active.retain(|source, _| !prefix.covers(&mld_types::IpPrefix::host(*source)));
        before - self.active.len()
    }

    /// A configuration applied while running: TTLs, the circuit breaker, dry run and the
    /// protections from now on. The blocks in force, the escalation history, the
    /// operator's exemptions and the flood victims are kept.
    pub fn set_config(&mut self, config: ResponseConfig, protected: Protected) {
        self.config = config;
        self.protected = protected;
    }

    pub fn is_blocked(&self, source: IpAddr, now_ns: u64) -> bool {
        self.active.get(&source).is_some_and(|until| *until > now_ns)
    }

    /// Whether the circuit breaker holds every new block back now: this minute's new
    /// blocks are at `max-new-blocks-per-minute`, or the blocks in force at
    /// `max-active-blocks` (never in dry run).
    pub fn breaker_holding(&self, now_ns: u64) -> bool {
        const MINUTE_NS: u64 = 60_000_000_000;
        let minute_full = now_ns.saturating_sub(self.minute.start_ns) < MINUTE_NS && self.minute.blocks >= self.config.max_new_blocks_per_minute;
        let in_force = self.active.values().filter(|until| **until > now_ns).count();
        self.config.mode != ResponseMode::DryRun && (minute_full || in_force >= self.config.max_active_blocks as usize)
    }

    pub fn active_blocks(&self) -> usize {
        self.active.len()
    }

    fn base_ttl(&self, category: Category) -> Duration {
        match category {
            Category::Flood => self.config.ttl_flood,
            Category::Scan => self.config.ttl_scan,
            Category::BruteForce => self.config.ttl_bruteforce,
            Category::Slow => self.config.ttl_slow,
            Category::Other => self.config.ttl_other,
        }
    }

    /// The TTL of a block for `category` at escalation `step` (0: a first block). An
    /// unsure category's first block is short (`response.first-block-unsure-secs`); its
    /// repeats start from the category's TTL. Every other block doubles the category's
    /// TTL per repeat. Never beyond `ttl-max`.
    fn ttl(&self, category: Category, step: u32) -> Duration {
        let base = self.base_ttl(category);
        let doubled = |times: u32| base.saturating_mul(1u32 << times.min(20));
        let ttl = match (category, self.config.first_block_unsure) {
            (Category::BruteForce | Category::Slow, Some(first)) if step == 0 => first.min(base),
            (Category::BruteForce | Category::Slow, Some(_)) => doubled(step - 1),
            _ => doubled(step),
        };
        ttl.min(self.config.ttl_max)
    }

    /// Decides what blocking `source` for `category` means now. `two_way`: the source
    /// showed two-way evidence (`engine::two_way_evidence`), so it may use the share of
    /// the breaker reserved for such sources; a source without it may use at most
    /// `max - reserved` new blocks a minute. The caller offers candidates strongest
    /// first (the breaker takes them in the order offered).
    pub fn decide(&mut self, source: IpAddr, category: Category, now_ns: u64, two_way: bool) -> Outcome {
        if let Some(outcome) = self.refuse_or_hold(source, now_ns, two_way) {
            return outcome;
        }
        let repeat = self.history.get(&source).filter(|history| now_ns.saturating_sub(history.last_block_ns) <= self.config.repeat_window.as_nanos() as u64);
        let step = repeat.map_or(0, |history| history.step + 1);
        let ttl = self.ttl(category, step);
        if self.config.mode == ResponseMode::DryRun {
            return Outcome::WouldBlock { ttl, step };
        }
        if self.history.len() >= HISTORY_MAX && !self.history.contains_key(&source) {
            if let Some(oldest) = self.history.iter().min_by_key(|(_, history)| history.last_block_ns).map(|(source, _)| *source) {
                self.history.remove(&oldest);
            }
        }
        self.history.insert(source, History { last_block_ns: now_ns, step });
        self.record_block(source, ttl, now_ns, two_way);
        Outcome::Block { ttl, step }
    }

    /// A block another node of the fleet decided (ADR 0008), with `remaining` of it left:
    /// judged like this node's own verdicts (protections, exemptions, flood victims, the
    /// circuit breaker and its bounds), counted as a source without two-way evidence here
    /// (so a flood of remote verdicts cannot use the share kept for this node's own
    /// proven attackers), for what is left and never beyond `ttl-max`. No escalation
    /// step: repeats are the deciding node's to count.
    pub fn decide_shared(&mut self, source: IpAddr, remaining: Duration, now_ns: u64) -> Outcome {
        if let Some(outcome) = self.refuse_or_hold(source, now_ns, false) {
            return outcome;
        }
        let ttl = remaining.min(self.config.ttl_max);
        if self.config.mode == ResponseMode::DryRun {
            return Outcome::WouldBlock { ttl, step: 0 };
        }
        self.record_block(source, ttl, now_ns, false);
        Outcome::Block { ttl, step: 0 }
    }

    /// What stops a block of `source` before its TTL is chosen: a protection, an
    /// exemption, a flood's victim (refused), a block already in force, or the circuit
    /// breaker (not in dry run).
    fn refuse_or_hold(&mut self, source: IpAddr, now_ns: u64, two_way: bool) -> Option<Outcome> {
        if let Some(protection) = self.protection(source) {
            self.refused += 1;
            return Some(Outcome::Refused(protection));
        }
        if let Some(exemption) = self.exemptions.covering(source, now_ns) {
            self.refused += 1;
            return Some(Outcome::Refused(Protection::MarkedBenign(exemption.describe())));
        }
        if let Some(what) = self.flood_victim_of(source, now_ns) {
            self.refused += 1;
            return Some(Outcome::Refused(Protection::FloodVictim(what)));
        }
        self.active.retain(|_, until| *until > now_ns);
        if self.is_blocked(source, now_ns) {
            return Some(Outcome::AlreadyBlocked);
        }
        if self.config.mode == ResponseMode::DryRun {
            return None;
        }
        const MINUTE_NS: u64 = 60_000_000_000;
        if now_ns.saturating_sub(self.minute.start_ns) >= MINUTE_NS {
            self.minute = Minute { start_ns: now_ns, ..Minute::default() };
        }
        let max = self.config.max_new_blocks_per_minute;
        if self.minute.blocks >= max {
            self.breaker_trips += 1;
            return Some(Outcome::BreakerOpen(format!(
                "lower evidence than the {} sources blocked this minute (response.max-new-blocks-per-minute {max}; within a tick the strongest evidence is served first)",
                self.minute.blocks
            )));
        }
        let unreserved = max.saturating_sub(self.config.breaker_reserved_per_minute);
        if !two_way && self.minute.one_way_blocks >= unreserved {
            self.breaker_trips += 1;
            return Some(Outcome::BreakerOpen(format!(
                "no two-way evidence and the unreserved share is spent ({} of {unreserved} new blocks this minute; {} kept for sources with two-way evidence, response.breaker-reserved-percent)",
                self.minute.one_way_blocks, self.config.breaker_reserved_per_minute
            )));
        }
        if self.active.len() >= self.config.max_active_blocks as usize {
            self.breaker_trips += 1;
            return Some(Outcome::BreakerOpen(format!("{} blocks in force (response.max-active-blocks)", self.active.len())));
        }
        None
    }

    fn record_block(&mut self, source: IpAddr, ttl: Duration, now_ns: u64, two_way: bool) {
        self.active.insert(source, now_ns.saturating_add(ttl.as_nanos() as u64));
        self.minute.blocks += 1;
        if !two_way {
            self.minute.one_way_blocks += 1;
        }
    }

    /// The capture task removed an expired block.
    pub fn expired(&mut self, source: IpAddr) {
        self.active.remove(&source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn responder(mode: ResponseMode) -> Responder {
        let mut config = mld_config::Config::default().response;
        config.mode = mode;
        config.max_new_blocks_per_minute = 3;
        config.management_prefixes = vec!["192.0.2.0/24".parse().expect("prefix")];
        let mut protected = Protected::new(&config, &["10.66.1.0/24".parse().expect("prefix")]);
        protected.set_host_part(vec!["10.66.9.1".parse().expect("addr")], Vec::new(), Vec::new());
        Responder::new(config, protected)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn protected_sources_are_refused_with_the_reason() {
        let mut responder = responder(ResponseMode::Block);
        assert!(matches!(responder.decide(ip("10.66.1.2"), Category::Scan, 0, true), Outcome::Refused(Protection::Allowlisted(_))));
        assert!(matches!(responder.decide(ip("192.0.2.9"), Category::Scan, 0, true), Outcome::Refused(Protection::Management(_))));
        assert_eq!(responder.decide(ip("10.66.9.1"), Category::Scan, 0, true), Outcome::Refused(Protection::GatewayAddress));
        for source in ["::", "0.0.0.0", "ff02::1", "224.0.0.251", "255.255.255.255"] {
            assert_eq!(responder.decide(ip(source), Category::Flood, 0, true), Outcome::Refused(Protection::NotUnicast), "{source}");
        }
        assert_eq!(responder.refused, 8);
        assert_eq!(responder.active_blocks(), 0);
    }

    #[test]
    fn repeat_offenders_get_doubled_ttls_up_to_the_maximum() {
        let mut responder = responder(ResponseMode::Block);
        let attacker = ip("10.66.2.2");
        assert_eq!(responder.decide(attacker, Category::Flood, 0, true), Outcome::Block { ttl: Duration::from_secs(600), step: 0 });
        assert_eq!(responder.decide(attacker, Category::Flood, SECOND, true), Outcome::AlreadyBlocked);
        responder.expired(attacker);
        let later = 700 * SECOND;
        assert_eq!(responder.decide(attacker, Category::Flood, later, true), Outcome::Block { ttl: Duration::from_secs(1200), step: 1 });
        responder.expired(attacker);
        let mut now = later;
        for _ in 0..10 {
            now += 120 * SECOND;
            responder.minute = Minute { start_ns: now, ..Minute::default() };
            responder.decide(attacker, Category::Flood, now, true);
            responder.expired(attacker);
        }
        now += 120 * SECOND;
        responder.minute = Minute { start_ns: now, ..Minute::default() };
        match responder.decide(attacker, Category::Flood, now, true) {
            Outcome::Block { ttl, step } => assert_eq!((ttl, step), (Duration::from_secs(86_400), 12)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unsure_first_block_is_short_and_a_repeat_after_it_gets_the_full_ttl() {
        let mut responder = responder(ResponseMode::Block);
        let guesser = ip("10.66.2.3");
        // Brute force: 60 s first (the default), then the category's 3600 s, then doubled.
        assert_eq!(responder.decide(guesser, Category::BruteForce, 0, true), Outcome::Block { ttl: Duration::from_secs(60), step: 0 });
        responder.expired(guesser);
        assert_eq!(responder.decide(guesser, Category::BruteForce, 90 * SECOND, true), Outcome::Block { ttl: Duration::from_secs(3600), step: 1 });
        responder.expired(guesser);
        responder.minute = Minute { start_ns: 4000 * SECOND, ..Minute::default() };
        assert_eq!(responder.decide(guesser, Category::BruteForce, 4000 * SECOND, true), Outcome::Block { ttl: Duration::from_secs(7200), step: 2 });
        // Slow is unsure too; a scan is not: its first block is the full TTL.
        assert_eq!(responder.decide(ip("10.66.2.4"), Category::Slow, 4000 * SECOND, true), Outcome::Block { ttl: Duration::from_secs(60), step: 0 });
        assert_eq!(responder.decide(ip("10.66.2.5"), Category::Scan, 4000 * SECOND, true), Outcome::Block { ttl: Duration::from_secs(3600), step: 0 });
    }

    #[test]
    fn without_a_short_first_block_an_unsure_category_blocks_for_its_ttl_at_once() {
        let mut responder = responder(ResponseMode::Block);
        responder.config.first_block_unsure = None;
        assert_eq!(responder.decide(ip("10.66.2.3"), Category::BruteForce, 0, true), Outcome::Block { ttl: Duration::from_secs(3600), step: 0 });
    }

    #[test]
    fn the_circuit_breaker_caps_new_blocks_per_minute() {
        let mut responder = responder(ResponseMode::Block);
        let outcomes: Vec<Outcome> = (0..10).map(|i| responder.decide(ip(&format!("203.0.113.{i}")), Category::Flood, i * SECOND, true)).collect();
        assert_eq!(outcomes.iter().filter(|outcome| matches!(outcome, Outcome::Block { .. })).count(), 3);
        assert!(matches!(outcomes[3], Outcome::BreakerOpen(_)));
        assert_eq!(responder.active_blocks(), 3);
        assert!(matches!(responder.decide(ip("203.0.113.77"), Category::Flood, 61 * SECOND, true), Outcome::Block { .. }), "a new minute closes the breaker");
    }

    #[test]
    fn sources_without_two_way_evidence_cannot_use_the_reserved_share() {
        let mut config = mld_config::Config::default().response;
        config.max_new_blocks_per_minute = 10;
        config.breaker_reserved_per_minute = 4;
        let mut responder = Responder::new(config.clone(), Protected::new(&config, &[]));
        let one_way: Vec<Outcome> = (0..8).map(|i| responder.decide(ip(&format!("203.0.113.{i}")), Category::Scan, SECOND, false)).collect();
        assert_eq!(one_way.iter().filter(|outcome| matches!(outcome, Outcome::Block { .. })).count(), 6, "at most max - reserved");
        match &one_way[6] {
            Outcome::BreakerOpen(reason) => assert!(reason.starts_with("no two-way evidence and the unreserved share is spent"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let two_way: Vec<Outcome> = (0..6).map(|i| responder.decide(ip(&format!("198.51.100.{i}")), Category::Scan, SECOND, true)).collect();
        assert_eq!(two_way.iter().filter(|outcome| matches!(outcome, Outcome::Block { .. })).count(), 4, "the reserved share, up to the whole budget");
        match &two_way[4] {
            Outcome::BreakerOpen(reason) => assert!(reason.starts_with("lower evidence than the 10 sources blocked this minute"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_block_the_operator_removed_is_forgotten_so_the_source_is_blocked_again_on_new_evidence() {
        let mut responder = responder(ResponseMode::Block);
        let (inside, outside) = (ip("10.66.2.2"), ip("10.66.3.2"));
        for source in [inside, outside] {
            assert!(matches!(responder.decide(source, Category::Scan, 0, true), Outcome::Block { .. }));
        }
        assert!(matches!(responder.decide(inside, Category::Scan, SECOND, true), Outcome::AlreadyBlocked));
        assert_eq!(responder.release("10.66.2.0/24".parse().expect("prefix")), 1, "only what the prefix covers");
        assert!(responder.is_blocked(outside, SECOND));
        assert!(matches!(responder.decide(inside, Category::Scan, 2 * SECOND, true), Outcome::Block { step: 1, .. }), "blocked again, as a repeat");
    }

    #[test]
    fn a_source_marked_benign_is_refused_naming_the_exemption_until_it_expires() {
        let mut responder = responder(ResponseMode::Block);
        let source = ip("10.66.2.2");
        assert!(matches!(responder.decide(source, Category::Scan, 0, true), Outcome::Block { .. }));
        responder.mark_benign("10.66.2.2/32".parse().expect("prefix"), "lab test", Duration::from_secs(60), SECOND).expect("marked");
        assert!(!responder.is_blocked(source, 2 * SECOND), "the released block is forgotten");
        match responder.decide(source, Category::Scan, 2 * SECOND, true) {
            Outcome::Refused(Protection::MarkedBenign(description)) => {
                assert!(description.starts_with("marked benign by the operator at 1970-01-01T00:00:01") && description.contains("(lab test)"), "{description}")
            }
            other => panic!("{other:?}"),
        }
        responder.minute = Minute { start_ns: 62 * SECOND, ..Minute::default() };
        assert!(matches!(responder.decide(source, Category::Scan, 62 * SECOND, true), Outcome::Block { step: 1, .. }), "blocked again once it expired");
    }

    #[test]
    fn a_random_source_floods_victim_is_refused_while_guarded_and_for_the_hold_after() {
        let mut responder = responder(ResponseMode::Block);
        let server = ip("10.66.9.2");
        responder.flood_victim(server, "8080/6", "the victim of a random-source flood: its service 10.66.9.2:8080/6 is guarded".to_string(), u64::MAX, SECOND);
        responder.flood_victim(server, "443/6", "its service 10.66.9.2:443/6 is guarded".to_string(), u64::MAX, SECOND);
        match responder.decide(server, Category::Scan, 2 * SECOND, true) {
            Outcome::Refused(protection) => assert!(protection.describe().contains("is guarded"), "{protection:?}"),
            other => panic!("{other:?}"),
        }
        // :443's guard lapsed at 10 s (held 120 s more); :8080 is still guarded.
        responder.flood_victim(server, "443/6", "was guarded until lately".to_string(), 130 * SECOND, 10 * SECOND);
        assert!(matches!(responder.decide(server, Category::Scan, 131 * SECOND, true), Outcome::Refused(Protection::FloodVictim(_))), "8080 still guarded");
        // The capture task restarted (its guards are gone, unsaid): the open-ended hold
        // ends too, then a block is possible again.
        responder.flood_victims_lapse(140 * SECOND);
        assert!(matches!(responder.decide(server, Category::Scan, 139 * SECOND, true), Outcome::Refused(Protection::FloodVictim(_))));
        let after = responder.decide(server, Category::Scan, 141 * SECOND, true);
        assert!(matches!(after, Outcome::Block { .. }), "{after:?}");
    }

    #[test]
    fn a_shared_block_is_judged_like_our_own_verdicts_for_what_is_left_of_it() {
        let mut responder = responder(ResponseMode::Block);
        responder.config.max_new_blocks_per_minute = 10;
        responder.config.breaker_reserved_per_minute = 4;
        let hour = Duration::from_secs(3600);
        // A protected address (the allowlist, our own) is refused whoever decided.
        assert!(matches!(responder.decide_shared(ip("10.66.1.5"), hour, 0), Outcome::Refused(_)));
        assert!(matches!(responder.decide_shared(ip("10.66.9.1"), hour, 0), Outcome::Refused(_)));
        // What is left of the block, never beyond ttl-max; no escalation step.
        assert_eq!(responder.decide_shared(ip("203.0.113.9"), Duration::from_secs(42), 0), Outcome::Block { ttl: Duration::from_secs(42), step: 0 });
        assert_eq!(responder.decide_shared(ip("203.0.113.9"), hour, 1), Outcome::AlreadyBlocked);
        let max = responder.config().ttl_max;
        assert_eq!(responder.decide_shared(ip("203.0.113.10"), max * 4, 2), Outcome::Block { ttl: max, step: 0 });
        // A flood of remote verdicts spends only the unreserved share of the breaker.
        let unreserved = responder.config().max_new_blocks_per_minute - responder.config().breaker_reserved_per_minute;
        let mut blocked = 2;
        for n in 0..1000u32 {
            let source = IpAddr::from(std::net::Ipv4Addr::from(0xc633_6400 + n));
            if matches!(responder.decide_shared(source, hour, 3), Outcome::Block { .. }) {
                blocked += 1;
            }
        }
        assert_eq!(blocked, unreserved, "remote verdicts stop at the unreserved share");
        assert!(
            matches!(responder.decide(ip("198.18.0.1"), Category::Scan, 4, true), Outcome::Block { .. }),
            "a proven local attacker still gets the reserved share"
        );
    }

    #[test]
    fn dry_run_blocks_nothing() {
        let mut responder = responder(ResponseMode::DryRun);
        assert_eq!(responder.decide(ip("10.66.2.2"), Category::Scan, 0, true), Outcome::WouldBlock { ttl: Duration::from_secs(3600), step: 0 });
        assert_eq!(responder.active_blocks(), 0);
        assert!(!responder.is_blocked(ip("10.66.2.2"), 1));
    }
}
