//! The detector: per-source state fed by active-source reports and flow records, the
//! model scored in batches per tick, the dual score, the block policy, and the
//! response. Deterministic: time is the packets' time as the messages carry it, so a
//! replay of the same capture makes the same decisions.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use mld_config::{BlockPolicy, DetectConfig, ModelsMode};
use mld_flow::{EndReason, FlowRecord, SourceReport};

use crate::evidence::two_way_evidence;
use crate::heuristics::{assess_window, AuthTracker, Category, FastVerdict, SlowTracker};
use crate::path::{Marks, PathHistory, Stray};
use crate::response::{Outcome, Responder};

/// What the model side of the dual score needs: the attack probability of flows and,
/// for attack flows, a category. The ONNX implementation is [`crate::scorer::OnnxScorer`];
/// tests use simple closures.
pub trait Scorer {
    /// P(attack) per flow, in order.
    fn attack(&mut self, flows: &[&FlowRecord]) -> Result<Vec<f64>, String>;
    /// The most likely category and its probability, per flow.
    fn category(&mut self, flows: &[&FlowRecord]) -> Result<Vec<(Category, f64)>, String>;
    /// A short note of the flow's most important features, for the explanation.
    fn explain(&self, flow: &FlowRecord) -> String;
}

/// What happened, for the signed log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A flow, nothing fired.
    Observe,
    /// An engine fired; the policy does not block.
    Alert,
    Block,
    WouldBlock,
    /// A protected source: never blocked.
    Refused,
    BreakerOpen,
    /// A block lapsed.
    Expire,
    /// A service went under attack by a random-source flood: the per-destination guard
    /// rate-limits first packets of unknown sources to it.
    GuardOn,
    /// The flood ended: the guard lapsed.
    GuardOff,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Observe => "observe",
            Action::Alert => "alert",
            Action::Block => "block",
            Action::WouldBlock => "would-block",
            Action::Refused => "refused",
            Action::BreakerOpen => "breaker-open",
            Action::Expire => "expire",
            Action::GuardOn => "guard-on",
            Action::GuardOff => "guard-off",
        }
    }
}

/// One decision or observation, with its explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub action: Action,
    pub source: IpAddr,
    /// The flow the event is about (for a decision: the source's latest flow).
    pub flow: FlowRecord,
    pub category: Category,
    pub score_fast: f64,
    pub score_model: Option<f64>,
    pub score_final: f64,
    pub score_divergence: Option<f64>,
    /// "fast", "model", "both" or "none".
    pub authoritative: &'static str,
    pub provenance: String,
    pub ttl: Option<Duration>,
    pub escalation_step: u32,
    pub protected: bool,
}

impl Event {
    /// An event that is not a scored decision (an expiry, a gap, a guard's change, an
    /// operator's release): no scores, no engine, what happened in `provenance`.
    pub fn note(action: Action, source: IpAddr, flow: FlowRecord, category: Category, provenance: String) -> Event {
        Event {
            action,
            source,
            flow,
            category,
            score_fast: 0.0,
            score_model: None,
            score_final: 0.0,
            score_divergence: None,
            authoritative: "none",
            provenance,
            ttl: None,
            escalation_step: 0,
            protected: false,
        }
    }
}

/// Counters of the detector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetectCounters {
    pub flows_received: u64,
    pub flows_scored: u64,
    /// Flows dropped because the queue was full (the task fell behind).
    pub flows_dropped: u64,
    pub reports_received: u64,
    pub flow_events_suppressed: u64,
    /// Alert, refusal and breaker-open events over the per-second budget.
    pub alert_events_suppressed: u64,
    pub sources_forgotten: u64,
    /// Flows claiming an address with a proven path that arrived by another path.
    pub stray_flows: u64,
    pub model_errors: u64,
    pub blocks: u64,
    pub alerts: u64,
    pub refused: u64,
    pub breaker_open: u64,
}

/// A scored flow of a source: (time, P(attack), category when flagged, whether it can
/// count towards a block by the model alone, the flow's identity: [`flow_id`]).
type ModelEvidence = (u64, f64, Option<(Category, f64)>, bool, u64);

/// A flow's identity within the detector (its 5-tuple and start): interim and final
/// records of one flow share it, so one flow counts once towards "several flows".
fn flow_id(flow: &FlowRecord) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port, flow.protocol, flow.first_seen_ns).hash(&mut hasher);
    hasher.finish()
}

/// An open flow at least this old, the latest of a source the window rules are looking
/// at, is scored by the model at once (not at its first interim record, 5 s): a flood
/// in one flow (fixed ports) is judged by both engines within its first second.
const EARLY_SCORE_AGE_NS: u64 = 500_000_000;
/// Flows per source remembered as scored early (the newest).
const EARLY_SCORED_MAX: usize = 16;

#[derive(Debug, Default)]
struct SourceState {
    fast: Option<(FastVerdict, u64)>,
    slow: SlowTracker,
    slow_verdict: Option<(FastVerdict, u64)>,
    auth: AuthTracker,
    auth_verdict: Option<(FastVerdict, u64)>,
    /// Model scores of the source's flows: (time, P(attack), category).
    model: VecDeque<ModelEvidence>,
    /// Open flows of the source already scored early ([`EARLY_SCORE_AGE_NS`]).
    early_scored: VecDeque<u64>,
    latest_flow: Option<FlowRecord>,
    last_seen_ns: u64,
    last_alert_ns: Option<u64>,
    /// The last refusal or breaker-open event (once per evidence period, apart from alerts).
    last_refusal_ns: Option<u64>,
    /// The last time a flow of the source showed two-way evidence
    /// ([`crate::evidence::two_way_evidence`]).
    two_way_ns: Option<u64>,
    /// The last time a flow of the source arrived on an interface whose strict source
    /// check vouches for its address (see [`Detector::set_anchored_interfaces`]).
    anchored_ns: Option<u64>,
    /// The last flow claiming the source's address whose path disagreed with the
    /// address's home ([`crate::path`]): suspected of forging it.
    stray: Option<(Stray, u64)>,
    /// Flows claiming the source's address since `.0` (reset every evidence period) whose
    /// path disagreed (`.1`) and agreed (`.2`) with its home.
    path_counts: (u64, u32, u32),
    /// When the operator released the source (`block del`): evidence from before it does
    /// not count (see [`Detector::release`]).
    released_ns: Option<u64>,
    /// Whether the latest flow of the latest active-source report strayed: the report's
    /// window rules are about what the source started lately, which in a forged flood is
    /// the forger's flows, before any of them has ended and been counted.
    latest_stray: bool,
}

impl SourceState {
    /// Counts a flow of the source whose path disagreed (`stray`) or agreed with its home.
    fn count_path(&mut self, stray: bool, now: u64, evidence_ns: u64) {
        if now.saturating_sub(self.path_counts.0) > evidence_ns {
            self.path_counts = (now, 0, 0);
        }
        if stray {
            self.path_counts.1 = self.path_counts.1.saturating_add(1);
        } else {
            self.path_counts.2 = self.path_counts.2.saturating_add(1);
        }
    }
}

impl SourceState {
    fn two_way(&self, now: u64, evidence_ns: u64) -> bool {
        self.two_way_ns.is_some_and(|at| now.saturating_sub(at) <= evidence_ns)
    }

    fn anchored(&self, now: u64, evidence_ns: u64) -> bool {
        self.anchored_ns.is_some_and(|at| now.saturating_sub(at) <= evidence_ns)
    }

    fn saw(&mut self, flow: &FlowRecord, now: u64, anchored: bool) {
        if two_way_evidence(flow) {
            self.two_way_ns = Some(now);
        }
        if anchored {
            self.anchored_ns = Some(now);
        }
    }
}

enum Assessment {
    Alert(Event),
    Block(Candidate),
}

/// A block the policy wants, waiting for the breaker (see [`Detector::tick`]).
struct Candidate {
    event: Event,
    two_way: bool,
    both: bool,
}

/// How long an address's home (its proven path) is remembered after it was last proven.
const HOME_KEEP_NS: u64 = 3600 * 1_000_000_000;

/// Model scores kept per source at most.
const MODEL_EVIDENCE_MAX: usize = 64;

pub struct Detector {
    config: DetectConfig,
    /// Heuristics read this window (index into each flow's aggregates).
    window_index: Option<usize>,
    responder: Responder,
    scorer: Option<Box<dyn Scorer>>,
    sources: HashMap<IpAddr, SourceState>,
    /// Interfaces (ifindex) with a strict source check: a flow that arrived there comes
    /// from an address that is behind that interface, so a spoofer can only use the
    /// addresses of its own link (see [`Detector::set_anchored_interfaces`]).
    anchored_interfaces: Vec<u32>,
    /// Where proven addresses' packets come from ([`crate::path`]).
    paths: PathHistory,
    /// The sources by last activity, least recent first: (last_seen_ns, source). Kept
    /// in step with `sources`, so forgetting the least recently active is O(log n).
    by_last_seen: BTreeSet<(u64, IpAddr)>,
    touched: HashSet<IpAddr>,
    queue: VecDeque<FlowRecord>,
    now_ns: u64,
    last_cleanup_ns: u64,
    /// Flow events this second: (second, count).
    flow_events: (u64, u32),
    /// Alert-like events this second: (second, count).
    alert_events: (u64, u32),
    pub counters: DetectCounters,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("sources", &self.sources.len())
            .field("queued", &self.queue.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Detector {
    pub fn new(config: DetectConfig, responder: Responder, scorer: Option<Box<dyn Scorer>>) -> Detector {
        Detector {
            window_index: config.heuristics.window_index,
            paths: PathHistory::new(config.max_sources, HOME_KEEP_NS),
            config,
            responder,
            scorer,
            sources: HashMap::new(),
            anchored_interfaces: Vec::new(),
            by_last_seen: BTreeSet::new(),
            touched: HashSet::new(),
            queue: VecDeque::new(),
            now_ns: 0,
            last_cleanup_ns: 0,
            flow_events: (0, 0),
            alert_events: (0, 0),
            counters: DetectCounters::default(),
        }
    }

    pub fn responder(&self) -> &Responder {
        &self.responder
    }

    /// The interfaces (ifindex) whose strict source check vouches for the addresses that
    /// arrive there. A scan or flood from such a source may block on the fast path alone:
    /// a spoofer there can only use addresses of its own link.
    pub fn set_anchored_interfaces(&mut self, ifindexes: Vec<u32>) {
        self.anchored_interfaces = ifindexes;
    }

    /// The operator removed the deny entries `prefix` covers (`block del`): the responder
    /// forgets the blocks, and the evidence about the sources it covers is reset, so that
    /// only what they do from now on can block them again (new evidence, not the window
    /// and the flows that led to the released block). Returns how many blocks in force
    /// were forgotten.
    pub fn release(&mut self, prefix: mld_types::IpPrefix) -> usize {
        let now = self.now_ns;
        for (source, state) in self.sources.iter_mut() {
            if prefix.covers(&mld_types::IpPrefix::host(*source)) {
                state.fast = None;
                state.slow = SlowTracker::default();
                state.slow_verdict = None;
                state.auth = AuthTracker::default();
                state.auth_verdict = None;
                state.model.clear();
                state.early_scored.clear();
                state.released_ns = Some(now);
            }
        }
        self.responder.release(prefix)
    }

    /// A configuration applied while running: thresholds, the policy, the heuristics and
    /// the evidence period from now on (the state of every source kept). The window read
    /// and the bounds are the same (a change of them restarts the task).
    pub fn set_config(&mut self, config: DetectConfig) {
        self.window_index = config.heuristics.window_index;
        self.config = config;
    }

    pub fn responder_mut(&mut self) -> &mut Responder {
        &mut self.responder
    }

    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// The state of `source`, active at `now`: a new source when full forgets the least
    /// recently active one (counted in `sources_forgotten`), so a flood of new (spoofed)
    /// sources cannot keep a real attacker from being tracked.
    fn state(&mut self, source: IpAddr, now: u64) -> &mut SourceState {
        if !self.sources.contains_key(&source) && self.sources.len() >= self.config.max_sources.max(1) {
            if let Some((_, oldest)) = self.by_last_seen.pop_first() {
                self.sources.remove(&oldest);
                self.counters.sources_forgotten += 1;
            }
        }
        self.touched.insert(source);
        let state = self.sources.entry(source).or_default();
        let last_seen_ns = state.last_seen_ns.max(now);
        if !self.by_last_seen.contains(&(last_seen_ns, source)) {
            self.by_last_seen.remove(&(state.last_seen_ns, source));
            self.by_last_seen.insert((last_seen_ns, source));
            state.last_seen_ns = last_seen_ns;
        }
        state
    }

    /// An active-source report from the capture task.
    pub fn on_report(&mut self, report: SourceReport) {
        self.counters.reports_received += 1;
        self.now_ns = self.now_ns.max(report.at_ns);
        let now = self.now_ns;
        let fast = match self.window_index.and_then(|index| report.windows.get(index)) {
            Some(window) => assess_window(window, &self.config.heuristics),
            None => FastVerdict::none(),
        };
        let window_ns = self.config.heuristics.window.as_nanos() as u64;
        let state = self.state(report.src_ip, now);
        // A window that reaches back before the operator's release holds evidence from
        // before it: not counted.
        let since_release = state.released_ns.is_none_or(|released| now.saturating_sub(window_ns) >= released);
        if fast.score > 0.0 && since_release {
            state.fast = Some((fast, now));
        }
        if let Some(flow) = report.latest_flow {
            let anchored = flow.src_ip == report.src_ip && self.anchored_interfaces.contains(&flow.ifindex);
            let stray = flow.src_ip == report.src_ip && self.note_path(&flow, now);
            let state = self.state(report.src_ip, now);
            state.latest_stray = stray;
            if !stray {
                state.saw(&flow, now, anchored);
            }
            // The flow the window rules are about, open for a while: the model's view now.
            let id = flow_id(&flow);
            let early = !stray
                && flow.end_reason == EndReason::Active
                && flow.last_seen_ns.saturating_sub(flow.first_seen_ns) >= EARLY_SCORE_AGE_NS
                && !state.early_scored.contains(&id);
            if early {
                if state.early_scored.len() >= EARLY_SCORED_MAX {
                    state.early_scored.pop_front();
                }
                state.early_scored.push_back(id);
                if self.queue.len() < self.config.queue_max {
                    self.queue.push_back(flow.clone());
                }
            }
            let state = self.state(report.src_ip, now);
            state.latest_flow = Some(flow);
        }
    }

    /// A flow record (ended, or an interim record of an open flow) from the capture task.
    pub fn on_flow(&mut self, flow: FlowRecord) {
        self.counters.flows_received += 1;
        self.now_ns = self.now_ns.max(flow.last_seen_ns);
        if self.queue.len() >= self.config.queue_max {
            self.counters.flows_dropped += 1;
            return;
        }
        self.queue.push_back(flow);
    }

    /// The capture task removed an expired block.
    pub fn on_expired(&mut self, source: IpAddr) -> Option<Event> {
        self.responder.expired(source);
        let flow = self.sources.get(&source).and_then(|state| state.latest_flow.clone())?;
        Some(Event::note(Action::Expire, source, flow, Category::Other, "the block's TTL lapsed; the capture task removed the deny entry".to_string()))
    }

    /// Advances the clock without messages (live: the wall clock, in packet time).
    pub fn advance_to(&mut self, now_ns: u64) {
        self.now_ns = self.now_ns.max(now_ns);
    }

    /// Scores what is queued (in batches), updates each source and decides. Returns the
    /// events to log, decisions first in the order made.
    pub fn tick(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        let mut observed = Vec::new();
        while !self.queue.is_empty() {
            let take = self.queue.len().min(self.config.batch_max);
            let batch: Vec<FlowRecord> = self.queue.drain(..take).collect();
            self.score_batch(batch, &mut observed);
        }
        let touched: Vec<IpAddr> = {
            let mut touched: Vec<IpAddr> = self.touched.drain().collect();
            touched.sort();
            touched
        };
        // Assess every source first, then offer the blocks to the responder strongest
        // evidence first, so that when the circuit breaker must choose, a flood of weak
        // (e.g. spoofed) candidates cannot take the budget from a real attacker.
        let mut candidates = Vec::new();
        let mut alerts = Vec::new();
        for source in touched {
            match self.assess(source) {
                Some(Assessment::Alert(event)) => alerts.push(event),
                Some(Assessment::Block(candidate)) => candidates.push(candidate),
                None => {}
            }
        }
        candidates.sort_by(|a, b| {
            (b.two_way, b.both).cmp(&(a.two_way, a.both)).then(b.event.score_final.total_cmp(&a.event.score_final)).then(a.event.source.cmp(&b.event.source))
        });
        let mut decided: Vec<Event> = candidates.into_iter().filter_map(|candidate| self.respond(candidate)).collect();
        decided.extend(alerts);
        for event in decided {
            if matches!(event.action, Action::Alert | Action::Refused | Action::BreakerOpen) && !self.alert_budget() {
                self.counters.alert_events_suppressed += 1;
                continue;
            }
            events.push(event);
        }
        self.cleanup();
        let observations = self.observations(observed);
        events.extend(observations);
        events
    }

    fn score_batch(&mut self, batch: Vec<FlowRecord>, observed: &mut Vec<(FlowRecord, Option<f64>, FastVerdict)>) {
        let evidence_ns = self.config.evidence.as_nanos() as u64;
        // The models know unicast flows between ordinary addresses; link housekeeping
        // (neighbour discovery, MLD, DHCP, mDNS, broadcasts) is observed, not scored.
        let scoreable: Vec<bool> = batch.iter().map(model_applies).collect();
        let (attack, categories) = match self.scorer.as_mut() {
            Some(scorer) if scoreable.iter().any(|yes| *yes) => {
                let refs: Vec<&FlowRecord> = batch.iter().zip(&scoreable).filter(|(_, yes)| **yes).map(|(flow, _)| flow).collect();
                match scorer.attack(&refs) {
                    Ok(scores) => {
                        self.counters.flows_scored += refs.len() as u64;
                        let flagged: Vec<&FlowRecord> =
                            refs.iter().zip(&scores).filter(|(_, score)| **score >= self.config.model_threshold).map(|(flow, _)| *flow).collect();
                        let categories = if flagged.is_empty() { Ok(Vec::new()) } else { scorer.category(&flagged) };
                        let categories = categories.unwrap_or_else(|_| {
                            self.counters.model_errors += 1;
                            Vec::new()
                        });
                        (Some(scores), categories)
                    }
                    Err(_) => {
                        self.counters.model_errors += 1;
                        (None, Vec::new())
                    }
                }
            }
            _ => (None, Vec::new()),
        };
        let mut category_iter = categories.into_iter();
        let heuristics = self.config.heuristics.clone();
        let mut score_iter = attack.into_iter().flatten();
        for (flow, scoreable) in batch.into_iter().zip(scoreable) {
            let score = if scoreable { score_iter.next() } else { None };
            let category = match score {
                Some(score) if score >= self.config.model_threshold => category_iter.next(),
                _ => None,
            };
            let now = self.now_ns;
            let source = flow.src_ip;
            let anchored = self.anchored_interfaces.contains(&flow.ifindex);
            // A stray flow (another path than its address's proven one) is suspected to be
            // a forger's: it is logged and scored, but it is no evidence about the address
            // (not two-way evidence, not the trackers', not the model's: a forger's
            // colluding destination can answer it).
            let strayed = self.note_path(&flow, now);
            let state = self.state(source, now);
            // A flow that started before the operator released its source is no evidence
            // either (it is still logged).
            let before_release = state.released_ns.is_some_and(|released| flow.first_seen_ns < released);
            let strayed = strayed || before_release;
            if !strayed {
                state.saw(&flow, now, anchored);
                if let Some(verdict) = state.slow.observe(&flow, now, &heuristics, evidence_ns) {
                    state.slow_verdict = Some((verdict, now));
                }
                if let Some(verdict) = state.auth.observe(&flow, &heuristics) {
                    state.auth_verdict = Some((verdict, now));
                }
            }
            if let Some(score) = score.filter(|_| !strayed) {
                if state.model.len() >= MODEL_EVIDENCE_MAX {
                    state.model.pop_front();
                }
                // ICMP flows do not count towards a block by the model alone: a host's
                // ICMP errors answer someone else's probes (a scanned server sends "port
                // unreachable"), so they would make the victim look like the attacker.
                let decisive = !matches!(flow.protocol, 1 | 58);
                state.model.push_back((now, score, category, decisive, flow_id(&flow)));
            }
            let fast = current_fast(state, now, evidence_ns);
            let ended = flow.end_reason != EndReason::Active;
            state.latest_flow = Some(flow.clone());
            if ended {
                observed.push((flow, score, fast));
            }
        }
    }

    /// Learns the homes of a flow that proves both ends ([`crate::path`]), or marks its
    /// source as suspected of forging its address when the flow strays from its home.
    /// A home is never moved by a flow that disagrees with it while it is fresh, even one
    /// with two-way evidence (a forger with a colluding destination can fake that): such
    /// a flow is stray; a host that really moved is learnt again once its home lapses.
    /// Returns whether the flow strayed.
    fn note_path(&mut self, flow: &FlowRecord, now: u64) -> bool {
        let evidence_ns = self.config.evidence.as_nanos() as u64;
        let sent = Marks { ifindex: flow.ifindex, ttl: flow.path.fwd_ttl };
        let proven = two_way_evidence(flow);
        match self.paths.check(flow.src_ip, sent, now) {
            Some(stray) => {
                self.counters.stray_flows += 1;
                let state = self.state(flow.src_ip, now);
                state.stray = Some((stray, now));
                state.count_path(true, now, evidence_ns);
                true
            }
            None => {
                if proven {
                    self.paths.learn(flow.src_ip, sent, now);
                }
                if self.paths.home(flow.src_ip, now).is_some() {
                    self.state(flow.src_ip, now).count_path(false, now, evidence_ns);
                }
                if proven && flow.path.answered() {
                    let answer = Marks { ifindex: flow.path.bwd_ifindex, ttl: flow.path.bwd_ttl };
                    if self.paths.check(flow.dst_ip, answer, now).is_none() {
                        self.paths.learn(flow.dst_ip, answer, now);
                    }
                }
                false
            }
        }
    }

    /// One more alert-like event this second, if the budget allows.
    fn alert_budget(&mut self) -> bool {
        let second = self.now_ns / 1_000_000_000;
        if self.alert_events.0 != second {
            self.alert_events = (second, 0);
        }
        if self.alert_events.1 >= self.config.max_alert_events_per_sec {
            return false;
        }
        self.alert_events.1 += 1;
        true
    }

    /// Observation events for ended flows, at most `max_flow_events_per_sec` per second
    /// of packet time (the rest counted).
    fn observations(&mut self, observed: Vec<(FlowRecord, Option<f64>, FastVerdict)>) -> Vec<Event> {
        let mut events = Vec::new();
        for (flow, score, fast) in observed {
            let second = flow.last_seen_ns / 1_000_000_000;
            if self.flow_events.0 != second {
                self.flow_events = (second, 0);
            }
            if self.flow_events.1 >= self.config.max_flow_events_per_sec {
                self.counters.flow_events_suppressed += 1;
                continue;
            }
            self.flow_events.1 += 1;
            let provenance = match score {
                Some(score) => format!("flow: model {score:.3}; source fast {:.2}", fast.score),
                None => format!("flow: no model; source fast {:.2}", fast.score),
            };
            events.push(Event {
                action: Action::Observe,
                source: flow.src_ip,
                category: if fast.score >= self.config.fast_threshold { fast.category } else { Category::Other },
                score_fast: fast.score,
                score_model: score,
                score_final: score.map_or(fast.score, |score| score.max(fast.score)),
                score_divergence: score.map(|score| (score - fast.score).abs()),
                authoritative: "none",
                provenance,
                ttl: None,
                escalation_step: 0,
                protected: self.responder.protection(flow.src_ip).is_some(),
                flow,
            });
        }
        events
    }

    /// What the policy makes of a source now: nothing, an alert (once per evidence
    /// period), or a block candidate for [`Detector::respond`].
    fn assess(&mut self, source: IpAddr) -> Option<Assessment> {
        let now = self.now_ns;
        let evidence_ns = self.config.evidence.as_nanos() as u64;
        let models_on = self.config.models == ModelsMode::Required && self.scorer.is_some();
        let state = self.sources.get_mut(&source)?;
        let fast = current_fast(state, now, evidence_ns);
        let two_way = state.two_way(now, evidence_ns);
        let anchored = state.anchored(now, evidence_ns);
        // Most flows claiming the source's address arrived by another path than its
        // proven ones, or the latest one the window rules are about did: the address is
        // suspected forged. (A few stray flows beside many agreeing ones are the real
        // host's: an attacker cannot shield its own flood with a stray packet now and
        // then.)
        let stray = state
            .stray
            .filter(|(_, at)| now.saturating_sub(*at) <= evidence_ns && (state.latest_stray || state.path_counts.1 > state.path_counts.2))
            .map(|(stray, _)| stray);
        state.model.retain(|(at, ..)| now.saturating_sub(*at) <= evidence_ns);
        let model_max = state.model.iter().map(|(_, score, ..)| *score).fold(None, |best: Option<f64>, score| Some(best.map_or(score, |best| best.max(score))));
        // Distinct flows: a long flow's interim records are one flow.
        let strong = state
            .model
            .iter()
            .filter(|(_, score, _, decisive, _)| *decisive && *score >= self.config.model_alone_threshold)
            .map(|(.., id)| *id)
            .collect::<HashSet<u64>>()
            .len() as u32;
        let model_category = dominant_category(&state.model);
        let fires_fast = fast.score >= self.config.fast_threshold;
        let fires_model = models_on && model_max.is_some_and(|score| score >= self.config.model_threshold);
        let model_alone = models_on && strong >= self.config.model_alone_min_flows;
        let engines = Engines { fires_model, model_category, model_alone, two_way, anchored };
        let (block, why) = policy_decision(&self.config, &fast, &engines);
        // A suspected forged address: the window rules count every packet that claims it,
        // the forger's too, so they are no evidence against it. What remains: the
        // trackers whose sessions need the service's answers (password guessing, slow
        // attacks), and the model's view of the flows from the proven path (stray flows
        // never reach it).
        let (block, why) = match stray {
            Some(_) if block => {
                let trusted = current_trackers(state, now, evidence_ns);
                match policy_decision(&self.config, &trusted, &engines) {
                    (true, why) => (true, why),
                    (false, _) => (
                        false,
                        "not blocked: flows claiming this address arrive by another path than its proven ones, so the window rules' evidence may be a forger's, and without it the policy does not block",
                    ),
                }
            }
            _ => (block, why),
        };
        if !fires_fast && !fires_model {
            return None;
        }
        let authoritative = match (fires_fast, fires_model) {
            (true, true) => "both",
            (true, false) => "fast",
            (false, true) => "model",
            (false, false) => "none",
        };
        let category = if fires_fast { fast.category } else { model_category.unwrap_or(Category::Other) };
        let score_model = models_on.then_some(model_max).flatten();
        let score_final = match authoritative {
            "both" => (fast.score + score_model.unwrap_or(0.0)) / 2.0,
            "fast" => fast.score,
            _ => score_model.unwrap_or(0.0),
        };
        let flow = state.latest_flow.clone()?;
        let mut provenance = String::new();
        if fast.score > 0.0 {
            provenance.push_str(&format!("fast {:.2} [{}]", fast.score, fast.reasons.join("; ")));
        } else {
            provenance.push_str("fast 0.00");
        }
        match (models_on, model_max) {
            (false, _) => {
                provenance.push_str(if self.config.models == ModelsMode::Off { "; model off (detect.models = \"off\")" } else { "; model unavailable" })
            }
            (true, Some(score)) => provenance.push_str(&format!(
                "; model {score:.3} max of {} flows, {strong} at or above {} (category {})",
                state.model.iter().map(|(.., id)| *id).collect::<HashSet<u64>>().len(),
                self.config.model_alone_threshold,
                model_category.map_or("none", Category::as_str)
            )),
            (true, None) => provenance.push_str("; model: no flows scored yet"),
        }
        provenance.push_str(if two_way {
            "; two-way evidence: yes (the destination sent data on a TCP connection of the source: a completed handshake)"
        } else {
            "; two-way evidence: none"
        });
        if anchored {
            provenance.push_str("; source address vouched for by a strict source check on its interface");
        }
        if let Some(Stray { home, seen }) = stray {
            provenance.push_str(&format!(
                "; suspected forged source: a flow claiming it arrived on {}, its proven flows on {}",
                seen.describe(),
                home.describe()
            ));
        }
        if let Some(scorer) = self.scorer.as_ref() {
            provenance.push_str(&format!("; features: {}", scorer.explain(&flow)));
        }
        provenance.push_str(&format!(
            "; thresholds fast {} (alone {}), model {} (alone {} x{}); policy {}: {why}",
            self.config.fast_threshold,
            self.config.fast_alone_threshold,
            self.config.model_threshold,
            self.config.model_alone_threshold,
            self.config.model_alone_min_flows,
            self.config.policy.as_str()
        ));
        let divergence = score_model.map(|model| (fast.score - model).abs());
        let mut event = Event {
            action: Action::Alert,
            source,
            flow,
            category,
            score_fast: fast.score,
            score_model,
            score_final,
            score_divergence: divergence,
            authoritative,
            provenance,
            ttl: None,
            escalation_step: 0,
            protected: false,
        };
        if !block {
            // An alert once per source per evidence period.
            if state.last_alert_ns.is_some_and(|at| now.saturating_sub(at) < evidence_ns) {
                return None;
            }
            state.last_alert_ns = Some(now);
            self.counters.alerts += 1;
            return Some(Assessment::Alert(event));
        }
        event.action = Action::Block;
        Some(Assessment::Block(Candidate { event, two_way, both: authoritative == "both" }))
    }

    /// Offers a block candidate to the responder (protection, TTL, circuit breaker).
    fn respond(&mut self, candidate: Candidate) -> Option<Event> {
        let Candidate { mut event, two_way, .. } = candidate;
        let now = self.now_ns;
        let evidence_ns = self.config.evidence.as_nanos() as u64;
        let source = event.source;
        let category = event.category;
        let state = self.sources.get_mut(&source)?;
        match self.responder.decide(source, category, now, two_way) {
            Outcome::AlreadyBlocked => return None,
            Outcome::Block { ttl, step } => {
                self.counters.blocks += 1;
                event.action = Action::Block;
                event.ttl = Some(ttl);
                event.escalation_step = step;
            }
            Outcome::WouldBlock { ttl, step } => {
                event.action = Action::WouldBlock;
                event.ttl = Some(ttl);
                event.escalation_step = step;
            }
            Outcome::Refused(protection) => {
                if state.last_refusal_ns.is_some_and(|at| now.saturating_sub(at) < evidence_ns) {
                    return None;
                }
                state.last_refusal_ns = Some(now);
                self.counters.refused += 1;
                event.action = Action::Refused;
                event.protected = true;
                event.provenance.push_str(&format!("; not blocked: {}", protection.describe()));
            }
            Outcome::BreakerOpen(reason) => {
                if state.last_refusal_ns.is_some_and(|at| now.saturating_sub(at) < evidence_ns) {
                    return None;
                }
                state.last_refusal_ns = Some(now);
                self.counters.breaker_open += 1;
                event.action = Action::BreakerOpen;
                event.provenance.push_str(&format!("; not blocked: circuit breaker open: {reason}"));
            }
        }
        Some(event)
    }

    fn cleanup(&mut self) {
        const SECOND_NS: u64 = 1_000_000_000;
        if self.now_ns.saturating_sub(self.last_cleanup_ns) < SECOND_NS {
            return;
        }
        self.last_cleanup_ns = self.now_ns;
        let horizon = 2 * self.config.evidence.as_nanos() as u64;
        let now = self.now_ns;
        while let Some(&(last_seen_ns, source)) = self.by_last_seen.first() {
            if now.saturating_sub(last_seen_ns) <= horizon {
                break;
            }
            self.by_last_seen.pop_first();
            self.sources.remove(&source);
            self.counters.sources_forgotten += 1;
        }
    }
}

/// Whether the models apply to a flow: both ends unicast, neither link-local.
fn model_applies(flow: &FlowRecord) -> bool {
    use crate::response::{is_link_local, is_unicast};
    [flow.src_ip, flow.dst_ip].iter().all(|address| is_unicast(*address) && !is_link_local(*address))
}

/// The fast path's current verdict for a source: the strongest of the window rules, the
/// slow rule and the authentication rule, while fresh.
fn current_fast(state: &SourceState, now: u64, evidence_ns: u64) -> FastVerdict {
    strongest([&state.fast, &state.slow_verdict, &state.auth_verdict], now, evidence_ns)
}

/// The strongest fresh verdict of the trackers whose sessions need the service's answers
/// (slow attacks, password guessing): evidence a forger of the address cannot make.
fn current_trackers(state: &SourceState, now: u64, evidence_ns: u64) -> FastVerdict {
    strongest([&state.slow_verdict, &state.auth_verdict], now, evidence_ns)
}

/// The highest-scoring verdict among those fresh within the evidence period (the first
/// of equal scores), or none.
fn strongest<const N: usize>(verdicts: [&Option<(FastVerdict, u64)>; N], now: u64, evidence_ns: u64) -> FastVerdict {
    verdicts
        .into_iter()
        .flatten()
        .filter(|(_, at)| now.saturating_sub(*at) <= evidence_ns)
        .map(|(verdict, _)| verdict)
        .reduce(|best, verdict| if verdict.score > best.score { verdict } else { best })
        .cloned()
        .unwrap_or_else(FastVerdict::none)
}

/// What the model and the source's proofs say, for [`policy_decision`].
struct Engines {
    fires_model: bool,
    model_category: Option<Category>,
    model_alone: bool,
    two_way: bool,
    anchored: bool,
}

/// Whether `detect.policy` blocks on this fast verdict and model evidence, and why.
fn policy_decision(config: &DetectConfig, fast: &FastVerdict, engines: &Engines) -> (bool, &'static str) {
    let fires_fast = fast.score >= config.fast_threshold;
    let fires_model = engines.fires_model;
    // Both engines agree only when they agree on what is happening: a busy client's many
    // sessions (the fast path: brute force?) and the model's doubt about one of its other
    // flows (a long transfer: flood?) are two weak signals about different things, not
    // one strong one.
    let same_kind = engines.model_category.is_none_or(|category| category == fast.category);
    let fast_alone = fast.score >= config.fast_alone_threshold;
    // A scan or flood is what a spoofer fakes most cheaply (a few SYNs from a forged
    // address): the fast path alone blocks it only with two-way evidence, or when the
    // source arrived where a strict source check vouches for its address.
    let spoofable = matches!(fast.category, Category::Scan | Category::Flood) && !engines.anchored;
    match config.policy {
        BlockPolicy::Agree if fires_fast && fires_model && same_kind => (true, "both engines fired"),
        BlockPolicy::Agree => (false, "the policy needs both engines to fire on the same kind of attack"),
        BlockPolicy::Tiered if fires_fast && fires_model && same_kind => (true, "both engines fired"),
        BlockPolicy::Tiered if fast_alone && (engines.two_way || !spoofable) => (true, "the fast path alone is overwhelming"),
        BlockPolicy::Tiered if engines.model_alone => (true, "the model alone is overwhelming (several flows)"),
        BlockPolicy::Tiered if fast_alone => {
            (false, "the fast path alone is overwhelming, but a scan or flood blocks on it alone only with two-way evidence, and there is none: a spoofed source cannot be told from a real one")
        }
        BlockPolicy::Tiered => (false, "no engine alone is sure enough, and they do not both fire on the same kind of attack"),
        BlockPolicy::Either => (fires_fast || fires_model, "either engine fired"),
        BlockPolicy::Fast => (fires_fast, "the fast path decides"),
        BlockPolicy::Model => (fires_model, "the model decides"),
    }
}

/// The category most of a source's flagged flows have.
fn dominant_category(model: &VecDeque<ModelEvidence>) -> Option<Category> {
    let mut counts: HashMap<Category, u32> = HashMap::new();
    for (_, _, category, ..) in model {
        if let Some((category, _)) = category {
            *counts.entry(*category).or_default() += 1;
        }
    }
    counts.into_iter().max_by_key(|(category, count)| (*count, std::cmp::Reverse(*category))).map(|(category, _)| category)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mld_config::{Config, ResponseMode};
    use mld_flow::features::{Feature, FlowFeatures, FEATURE_COUNT};
    use mld_flow::window::WindowSnapshot;

    const SECOND: u64 = 1_000_000_000;

    /// A model that scores flows by their destination port. Its category follows the
    /// port too: 4444 reads as a scan, 9 as a flood, everything else as brute force.
    struct ByPort(HashMap<u16, f64>);

    impl Scorer for ByPort {
        fn attack(&mut self, flows: &[&FlowRecord]) -> Result<Vec<f64>, String> {
            Ok(flows.iter().map(|flow| self.0.get(&flow.dst_port).copied().unwrap_or(0.01)).collect())
        }
        fn category(&mut self, flows: &[&FlowRecord]) -> Result<Vec<(Category, f64)>, String> {
            Ok(flows
                .iter()
                .map(|flow| {
                    let category = match flow.dst_port {
                        4444 => Category::Scan,
                        9 => Category::Flood,
                        _ => Category::BruteForce,
                    };
                    (category, 0.9)
                })
                .collect())
        }
        fn explain(&self, _flow: &FlowRecord) -> String {
            "test".to_string()
        }
    }

    /// A TCP flow on which the destination answered with data (two-way evidence).
    fn flow(src: &str, dst_port: u16, at: u64) -> FlowRecord {
        let mut features = [0.0; FEATURE_COUNT];
        features[Feature::TotalLengthBwdPackets as usize] = 60.0;
        FlowRecord {
            src_ip: src.parse().expect("ip"),
            src_port: 40000,
            dst_ip: "10.66.9.2".parse().expect("ip"),
            dst_port,
            protocol: 6,
            ip_version: 4,
            first_seen_ns: at,
            last_seen_ns: at,
            end_reason: EndReason::TcpFin,
            fwd_ip_bytes: 100,
            bwd_ip_bytes: 100,
            ifindex: 0,
            path: Default::default(),
            features: FlowFeatures(features),
            source_windows: Vec::new(),
        }
    }

    /// A SYN the destination answered with a SYN-ACK, nothing after: what a spoofed
    /// source (or a SYN scanner) leaves.
    fn one_way(src: &str, dst_port: u16, at: u64) -> FlowRecord {
        let mut flow = flow(src, dst_port, at);
        flow.features = FlowFeatures([0.0; FEATURE_COUNT]);
        flow.end_reason = EndReason::Active;
        flow
    }

    fn report(src: &str, at: u64, ports: u32, new_flows: f64, packets: f64) -> SourceReport {
        let window = WindowSnapshot {
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
            bytes_per_sec: packets * 60.0 / 10.0,
            syn_without_ack_ratio: 0.5,
            rst_ratio: 0.0,
            saturated: false,
        };
        SourceReport { src_ip: src.parse().expect("ip"), at_ns: at, windows: vec![window, window], latest_flow: Some(flow(src, 8080, at)) }
    }

    fn detector(configure: impl FnOnce(&mut Config)) -> Detector {
        let mut config = Config::default();
        configure(&mut config);
        let responder = Responder::new(config.response.clone(), crate::response::Protected::new(&config.response, &["10.66.1.0/24".parse().expect("prefix")]));
        let scorer = ByPort(HashMap::from([(2222, 0.95), (4444, 0.99), (8080, 0.05), (9, 0.63)]));
        Detector::new(config.detect, responder, Some(Box::new(scorer)))
    }

    fn decisions(events: &[Event]) -> Vec<(Action, String)> {
        events.iter().filter(|event| event.action != Action::Observe).map(|event| (event.action, event.source.to_string())).collect()
    }

    #[test]
    fn a_flood_is_blocked_on_the_first_tick_by_the_fast_path_alone() {
        let mut detector = detector(|_| {});
        detector.on_report(report("10.66.2.2", SECOND, 1, 5000.0, 5000.0));
        let events = detector.tick();
        assert_eq!(decisions(&events), vec![(Action::Block, "10.66.2.2".to_string())]);
        let block = &events[0];
        assert_eq!((block.category, block.authoritative, block.ttl), (Category::Flood, "fast", Some(Duration::from_secs(600))));
        assert!(block.provenance.contains("unanswered new flows 5000 of 5000 (limit 150)"), "{}", block.provenance);
        detector.on_report(report("10.66.2.2", 2 * SECOND, 1, 6000.0, 6000.0));
        assert!(decisions(&detector.tick()).is_empty(), "no second block while the first holds");
    }

    #[test]
    fn a_source_the_operator_released_is_not_blocked_again_on_the_evidence_before_the_release_only_on_new_evidence() {
        let mut detector = detector(|_| {});
        let attacker = "10.66.2.2";
        detector.on_report(report(attacker, SECOND, 1, 5000.0, 5000.0));
        assert_eq!(decisions(&detector.tick()), vec![(Action::Block, attacker.to_string())]);
        assert_eq!(detector.release("10.66.2.2/32".parse().expect("prefix")), 1);
        // Reports whose 10 s window still reaches back before the release, and the model's
        // view of a flow that started before it: no block.
        for at in [2, 5, 10] {
            detector.on_report(report(attacker, at * SECOND, 1, 5000.0, 5000.0));
            detector.on_flow(flow(attacker, 4444, SECOND / 2));
            assert!(decisions(&detector.tick()).iter().all(|(action, _)| *action != Action::Block), "blocked again at {at} s on old evidence");
        }
        // A window wholly after the release with the flood still in it: blocked again, as
        // a repeat.
        detector.on_report(report(attacker, 12 * SECOND, 1, 5000.0, 5000.0));
        let events = detector.tick();
        assert_eq!(decisions(&events), vec![(Action::Block, attacker.to_string())]);
        assert_eq!(events.iter().find(|event| event.action == Action::Block).map(|event| event.escalation_step), Some(1));
    }

    #[test]
    fn a_flood_forged_with_a_proven_address_from_another_path_is_not_blocked_but_the_real_one_is() {
        use mld_flow::PathMarks;
        let client = "10.66.3.2";
        let home = PathMarks { fwd_ttl: 64, bwd_ifindex: 6, bwd_ttl: 63 };
        // The client browses the server: both ends proven (the client on interface 4, the
        // server's answers on interface 6).
        // Floods claiming the client and the server, from interface 5, each with the model
        // agreeing (port 4444 scores 0.99): both engines fire, which would block.
        for (claimed, ifindex, ttl) in [(client, 5, 64), ("10.66.9.2", 5, 63)] {
            let mut forged_to = detector(|_| {});
            forged_to.on_flow(FlowRecord { ifindex: 4, path: home, ..flow(client, 8080, SECOND) });
            forged_to.tick();
            let forged = |at| FlowRecord { ifindex, path: PathMarks { fwd_ttl: ttl, ..PathMarks::default() }, ..one_way(claimed, 4444, at) };
            let mut flood = report(claimed, 2 * SECOND, 1, 5000.0, 5000.0);
            flood.latest_flow = Some(forged(2 * SECOND));
            // The real client's own flows keep coming (two-way evidence for its address).
            forged_to.on_flow(FlowRecord { ifindex: 4, path: home, ..flow(client, 8080, 2 * SECOND) });
            for port in 0..5 {
                forged_to.on_flow(FlowRecord { src_port: 50000 + port, ..forged(2 * SECOND) });
            }
            forged_to.on_report(flood);
            let events = forged_to.tick();
            assert_eq!(decisions(&events), vec![(Action::Alert, claimed.to_string())], "{claimed} on {ifindex} ttl {ttl}");
            let provenance = &events.iter().find(|event| event.action == Action::Alert).expect("alert").provenance;
            assert!(provenance.contains(&format!("suspected forged source: a flow claiming it arrived on interface {ifindex} with TTL {ttl}")), "{provenance}");
            // The server never sent a flow of its own: it has no two-way evidence either.
            let why = if claimed == client { "may be a forger's" } else { "a spoofed source cannot be told from a real one" };
            assert!(provenance.contains(why), "{provenance}");
            assert!(forged_to.counters.stray_flows >= 1, "{:?}", forged_to.counters);
        }
        // The same flood from the client's own path is the client's: blocked.
        let mut real = detector(|_| {});
        real.on_flow(FlowRecord { ifindex: 4, path: home, ..flow(client, 8080, SECOND) });
        real.tick();
        // Its own raw probes carry other TTLs (nmap randomizes them): still its own path.
        let own = FlowRecord { ifindex: 4, path: PathMarks { fwd_ttl: 41, ..PathMarks::default() }, ..one_way(client, 4444, 2 * SECOND) };
        let mut flood = report(client, 2 * SECOND, 1, 5000.0, 5000.0);
        flood.latest_flow = Some(own.clone());
        real.on_flow(own.clone());
        real.on_report(flood);
        assert_eq!(decisions(&real.tick()), vec![(Action::Block, client.to_string())]);
        assert_eq!(real.counters.stray_flows, 0);
        // An attacker cannot shield its own flood with a stray packet now and then: a few
        // stray flows beside many from its proven path are its own.
        let mut shielded = detector(|_| {});
        shielded.on_flow(FlowRecord { ifindex: 4, path: home, ..flow(client, 8080, SECOND) });
        shielded.tick();
        shielded.on_flow(FlowRecord { ifindex: 5, path: PathMarks { fwd_ttl: 64, ..PathMarks::default() }, ..one_way(client, 4444, 2 * SECOND) });
        for port in 0..10 {
            shielded.on_flow(FlowRecord { src_port: 50000 + port, ..own.clone() });
        }
        let mut flood = report(client, 2 * SECOND, 1, 5000.0, 5000.0);
        flood.latest_flow = Some(own.clone());
        shielded.on_report(flood);
        assert_eq!(decisions(&shielded.tick()), vec![(Action::Block, client.to_string())]);
        assert_eq!(shielded.counters.stray_flows, 1);
        // A forged flood that has just begun: none of its flows has ended yet, so the
        // client's own ended flows are the majority counted, but the flow the report is
        // about (what the source started last) strayed: not blocked.
        let mut early = detector(|_| {});
        early.on_flow(FlowRecord { ifindex: 4, path: home, ..flow(client, 8080, SECOND) });
        early.tick();
        for port in 0..5 {
            early.on_flow(FlowRecord { ifindex: 4, path: home, src_port: 41000 + port, ..flow(client, 8080, 2 * SECOND) });
        }
        let mut flood = report(client, 2 * SECOND, 1, 5000.0, 5000.0);
        flood.latest_flow = Some(FlowRecord { ifindex: 5, path: PathMarks { fwd_ttl: 64, ..PathMarks::default() }, ..one_way(client, 4444, 2 * SECOND) });
        early.on_report(flood);
        assert_eq!(decisions(&early.tick()), vec![(Action::Alert, client.to_string())], "the latest flow strayed");
        // A flow with two-way evidence (a forger's colluding destination can answer its
        // forged SYNs) does not move a fresh home: it is stray.
        let mut colluded = detector(|_| {});
        colluded.on_flow(FlowRecord { ifindex: 4, path: home, ..flow(client, 8080, SECOND) });
        colluded.on_flow(FlowRecord { ifindex: 5, path: home, ..flow(client, 8080, 2 * SECOND) });
        colluded.tick();
        assert_eq!(colluded.paths.home(client.parse().expect("ip"), 3 * SECOND).map(|marks| marks.ifindex), Some(4));
        assert_eq!(colluded.counters.stray_flows, 1);
    }

    #[test]
    fn a_flood_in_one_open_flow_is_judged_by_the_model_on_the_first_report_that_shows_it() {
        // 51 Mbit/s of one-way datagrams in one flow (fixed ports): just over the one-way
        // limit (fast 0.51, not decisive alone); the model calls the open flow a flood.
        let flood_report = |at: u64, age: u64| {
            let mut flood = report("10.66.2.2", at, 1, 1.0, 10.0);
            for window in flood.windows.iter_mut() {
                window.recent_one_way_bytes_per_sec = 51e6 / 8.0;
            }
            let mut open = one_way("10.66.2.2", 9, at);
            open.protocol = 17;
            open.first_seen_ns = at - age;
            flood.latest_flow = Some(open);
            flood
        };
        let mut young = detector(|_| {});
        young.on_report(flood_report(2 * SECOND, 100_000_000));
        assert_eq!(decisions(&young.tick()), vec![(Action::Alert, "10.66.2.2".to_string())], "a flow 100 ms old waits for more");
        assert_eq!(young.counters.flows_scored, 0);
        let mut detector = detector(|_| {});
        detector.on_report(flood_report(2 * SECOND, 600_000_000));
        let events = detector.tick();
        assert_eq!(decisions(&events), vec![(Action::Block, "10.66.2.2".to_string())]);
        let block = events.iter().find(|event| event.action == Action::Block).expect("block");
        assert_eq!((block.category, block.authoritative), (Category::Flood, "both"), "{}", block.provenance);
        // The same open flow in the next report is not scored again.
        detector.on_report(flood_report(2 * SECOND + 100_000_000, 700_000_000));
        detector.tick();
        assert_eq!(detector.counters.flows_scored, 1);
    }

    #[test]
    fn one_long_flow_counts_once_towards_the_model_alone() {
        let mut detector = detector(|_| {});
        // Four interim records of one open flow, each scored 0.99: one flow, not four.
        for at in [5, 10, 15, 20] {
            let mut record = one_way("10.66.2.9", 4444, at * SECOND);
            record.first_seen_ns = SECOND;
            detector.on_flow(record);
        }
        assert_eq!(decisions(&detector.tick()), vec![(Action::Alert, "10.66.2.9".to_string())]);
        // Two more flows: three distinct flows at 0.99.
        for port in [41000, 41001] {
            detector.on_flow(FlowRecord { src_port: port, ..one_way("10.66.2.9", 4444, 21 * SECOND) });
        }
        let events = detector.tick();
        assert_eq!(decisions(&events), vec![(Action::Block, "10.66.2.9".to_string())]);
        assert!(events[0].provenance.contains("max of 3 flows, 3 at or above"), "{}", events[0].provenance);
    }

    #[test]
    fn stray_flows_are_no_evidence_against_the_address_they_claim_even_after_the_forgery_stops() {
        use mld_flow::PathMarks;
        let client = "10.66.3.2";
        let home = PathMarks { fwd_ttl: 64, bwd_ifindex: 6, bwd_ttl: 63 };
        let mut detector = detector(|_| {});
        detector.on_flow(FlowRecord { ifindex: 4, path: home, ..flow(client, 8080, SECOND) });
        detector.tick();
        // Forged SYNs in the client's name from interface 5, which the model is sure about
        // (port 4444 scores 0.99) and which a colluding destination answered; the window
        // rules count them as the client's repeated sessions.
        let forged = |at, port| FlowRecord { ifindex: 5, src_port: port, path: home, ..flow(client, 4444, at) };
        for port in 0..10 {
            detector.on_flow(forged(2 * SECOND, 50000 + port));
        }
        let mut sessions = report(client, 2 * SECOND, 1, 200.0, 2000.0);
        sessions.latest_flow = Some(forged(2 * SECOND, 50100));
        detector.on_report(sessions);
        assert_eq!(decisions(&detector.tick()), vec![(Action::Alert, client.to_string())]);
        // The forgery stops; the client goes on browsing from its own path, and the
        // forged flows' scores, still within the evidence period, do not block it.
        for port in 0..20 {
            detector.on_flow(FlowRecord { ifindex: 4, path: home, src_port: 41000 + port, ..flow(client, 8080, 3 * SECOND) });
        }
        let mut browsing = report(client, 3 * SECOND, 1, 200.0, 2000.0);
        browsing.latest_flow = Some(FlowRecord { ifindex: 4, path: home, ..flow(client, 8080, 3 * SECOND) });
        detector.on_report(browsing);
        let events = detector.tick();
        assert!(events.iter().all(|event| event.action != Action::Block), "{:?}", decisions(&events));
        assert_eq!(detector.responder().active_blocks(), 0);
        assert_eq!(detector.counters.stray_flows, 11);
    }

    #[test]
    fn a_busy_client_alerts_but_brute_force_where_the_model_agrees_is_blocked() {
        let mut detector = detector(|_| {});
        // Same fast evidence (repeated sessions, not decisive alone) for both sources.
        detector.on_report(report("10.66.3.77", SECOND, 1, 200.0, 2000.0));
        detector.on_report(report("10.66.2.2", SECOND, 1, 200.0, 2000.0));
        // The model is sure about one of this client's flows, but calls it a scan: two
        // signals about different things, not one strong one.
        detector.on_report(report("10.66.3.78", SECOND, 1, 200.0, 2000.0));
        detector.on_flow(flow("10.66.3.77", 8080, SECOND));
        detector.on_flow(flow("10.66.2.2", 2222, SECOND));
        detector.on_flow(flow("10.66.3.78", 4444, SECOND));
        let events = detector.tick();
        assert_eq!(
            decisions(&events),
            vec![(Action::Block, "10.66.2.2".to_string()), (Action::Alert, "10.66.3.77".to_string()), (Action::Alert, "10.66.3.78".to_string())]
        );
        let block = events.iter().find(|event| event.action == Action::Block).expect("block");
        assert_eq!((block.category, block.authoritative), (Category::BruteForce, "both"));
        let unlike = events.iter().find(|event| event.action == Action::Alert && event.source.to_string() == "10.66.3.78").expect("alert");
        assert!(unlike.provenance.contains("same kind of attack"), "{}", unlike.provenance);
        assert_eq!(events.iter().filter(|event| event.action == Action::Observe).count(), 3, "every flow observed");
    }

    #[test]
    fn agree_policy_does_not_block_on_the_fast_path_alone_and_dry_run_blocks_nothing() {
        let mut agree = detector(|config| config.detect.policy = BlockPolicy::Agree);
        agree.on_report(report("10.66.2.2", SECOND, 1, 5000.0, 5000.0));
        agree.on_flow(flow("10.66.2.2", 8080, SECOND));
        assert_eq!(decisions(&agree.tick()), vec![(Action::Alert, "10.66.2.2".to_string())]);
        let mut dry = detector(|config| config.response.mode = ResponseMode::DryRun);
        dry.on_report(report("10.66.2.2", SECOND, 1, 5000.0, 5000.0));
        assert_eq!(decisions(&dry.tick()), vec![(Action::WouldBlock, "10.66.2.2".to_string())]);
        assert_eq!(dry.responder().active_blocks(), 0);
    }

    #[test]
    fn an_allowlisted_attacker_is_refused_once_per_evidence_period() {
        let mut detector = detector(|_| {});
        detector.on_report(report("10.66.1.5", SECOND, 900, 900.0, 900.0));
        let events = detector.tick();
        assert_eq!(decisions(&events), vec![(Action::Refused, "10.66.1.5".to_string())]);
        assert!(events[0].protected && events[0].provenance.contains("allowlisted (10.66.1.0/24)"), "{}", events[0].provenance);
        detector.on_report(report("10.66.1.5", 2 * SECOND, 900, 900.0, 900.0));
        assert!(decisions(&detector.tick()).is_empty());
        assert_eq!(detector.responder().active_blocks(), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts_flows() {
        let mut detector = detector(|config| config.detect.queue_max = 10);
        for i in 0..25 {
            detector.on_flow(flow("10.66.1.9", 8080, SECOND + i));
        }
        assert_eq!((detector.counters.flows_received, detector.counters.flows_dropped), (25, 15));
        detector.tick();
        assert_eq!(detector.counters.flows_scored, 10);
    }

    #[test]
    fn the_same_input_makes_the_same_events() {
        let run = || {
            let mut detector = detector(|_| {});
            let mut all = Vec::new();
            for second in 1..5 {
                detector.on_report(report("10.66.2.2", second * SECOND, 30 * second as u32, 100.0, 300.0));
                detector.on_flow(flow("10.66.2.2", 2222, second * SECOND));
                detector.on_flow(flow("10.66.1.2", 8080, second * SECOND));
                all.extend(detector.tick());
            }
            all
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn link_housekeeping_is_observed_but_never_scored_nor_blocked() {
        let mut detector = detector(|_| {});
        for (index, (src, dst)) in [("::", "ff02::1:ff00:1"), ("fe80::1", "ff02::16"), ("fe80::1", "fe80::2")].into_iter().enumerate() {
            let mut flow = flow(src, 2222, SECOND);
            flow.dst_ip = dst.parse().expect("ip");
            flow.src_port = index as u16;
            detector.on_flow(flow);
        }
        let events = detector.tick();
        assert_eq!(detector.counters.flows_scored, 0, "port 2222 would score 0.95, but the model does not apply");
        assert!(decisions(&events).is_empty(), "{:?}", decisions(&events));
        assert_eq!(events.len(), 3, "each flow is still observed");
    }

    #[test]
    fn alerts_from_many_sources_are_bounded_per_second_and_counted() {
        let mut detector = detector(|config| config.detect.max_alert_events_per_sec = 10);
        for index in 0..50 {
            detector.on_flow(flow(&format!("203.0.113.{index}"), 2222, SECOND));
        }
        let events = detector.tick();
        let alerts = events.iter().filter(|event| event.action == Action::Alert).count();
        assert_eq!((alerts, detector.counters.alert_events_suppressed), (10, 40));
    }

    #[test]
    fn an_allowlisted_source_that_was_alerted_on_is_still_refused_when_the_block_comes() {
        let mut detector = detector(|_| {});
        // First at the alert level (fast 0.5-0.9), then overwhelming.
        detector.on_report(report("10.66.1.5", SECOND, 1, 200.0, 200.0));
        assert_eq!(decisions(&detector.tick()), vec![(Action::Alert, "10.66.1.5".to_string())]);
        detector.on_report(report("10.66.1.5", 2 * SECOND, 1, 5000.0, 5000.0));
        assert_eq!(decisions(&detector.tick()), vec![(Action::Refused, "10.66.1.5".to_string())]);
    }

    #[test]
    fn a_scanned_server_answering_with_icmp_errors_is_never_blocked_by_the_model_alone() {
        let mut detector = detector(|_| {});
        // The server's ICMP port-unreachable answers, each its own flow, all scored as
        // attack traffic by the model.
        for index in 0..10u16 {
            let mut answer = flow("10.66.9.2", 4444, SECOND);
            answer.protocol = 1;
            answer.dst_ip = "10.66.2.2".parse().expect("ip");
            answer.src_port = index;
            detector.on_flow(answer);
        }
        let events = detector.tick();
        assert_eq!(decisions(&events), vec![(Action::Alert, "10.66.9.2".to_string())], "an alert at most, never a block");
        // The same evidence over TCP is decisive.
        for index in 0..3u16 {
            let mut attack = flow("10.66.2.3", 4444, 2 * SECOND);
            attack.src_port = index;
            detector.on_flow(attack);
        }
        assert_eq!(decisions(&detector.tick()), vec![(Action::Block, "10.66.2.3".to_string())]);
    }

    fn report_one_way(src: &str, at: u64, ports: u32, new_flows: f64, packets: f64) -> SourceReport {
        SourceReport { latest_flow: Some(one_way(src, 8080, at)), ..report(src, at, ports, new_flows, packets) }
    }

    #[test]
    fn a_scan_or_flood_on_the_fast_path_alone_without_two_way_evidence_is_an_alert() {
        let mut detector = detector(|_| {});
        detector.on_report(report_one_way("203.0.113.9", SECOND, 900, 900.0, 900.0));
        detector.on_report(report_one_way("203.0.113.10", SECOND, 1, 5000.0, 5000.0));
        let events = detector.tick();
        assert_eq!(decisions(&events), vec![(Action::Alert, "203.0.113.9".to_string()), (Action::Alert, "203.0.113.10".to_string())]);
        for event in &events {
            assert!(
                event.provenance.contains("two-way evidence: none") && event.provenance.contains("a spoofed source cannot be told from a real one"),
                "{}",
                event.provenance
            );
        }
        assert_eq!(detector.responder().active_blocks(), 0);
        // The same scan from a source that completed a handshake is blocked.
        detector.on_report(report("203.0.113.11", 2 * SECOND, 900, 900.0, 900.0));
        let events = detector.tick();
        assert_eq!(decisions(&events), vec![(Action::Block, "203.0.113.11".to_string())]);
        assert!(events[0].provenance.contains("two-way evidence: yes"), "{}", events[0].provenance);
    }

    #[test]
    fn a_one_way_scan_or_flood_from_an_interface_with_a_strict_source_check_blocks_alone() {
        let mut detector = detector(|_| {});
        detector.set_anchored_interfaces(vec![7]);
        let mut scan = report_one_way("10.66.2.2", SECOND, 900, 900.0, 900.0);
        if let Some(flow) = scan.latest_flow.as_mut() {
            flow.ifindex = 7;
        }
        let mut elsewhere = report_one_way("10.66.2.3", SECOND, 900, 900.0, 900.0);
        if let Some(flow) = elsewhere.latest_flow.as_mut() {
            flow.ifindex = 8;
        }
        detector.on_report(scan);
        detector.on_report(elsewhere);
        let events = detector.tick();
        assert_eq!(decisions(&events), vec![(Action::Block, "10.66.2.2".to_string()), (Action::Alert, "10.66.2.3".to_string())]);
        assert!(events[0].provenance.contains("vouched for by a strict source check"), "{}", events[0].provenance);
    }

    #[test]
    fn spoofed_scanners_cannot_starve_the_breaker_of_a_real_scanner() {
        // Both engines fire on 150 spoofed one-way scanners (fast: 900 ports; the model
        // flags their flows), in the same tick as one real scanner that completed a
        // handshake, whose address sorts after all of them.
        let mut detector = detector(|_| {});
        let spoofed: Vec<String> = (0..150).map(|index| format!("10.200.{}.{}", index / 200, index % 200 + 1)).collect();
        for source in &spoofed {
            detector.on_report(report_one_way(source, SECOND, 900, 900.0, 900.0));
            detector.on_flow(one_way(source, 4444, SECOND));
        }
        detector.on_report(report("203.0.113.250", SECOND, 900, 900.0, 900.0));
        let events = detector.tick();
        let blocked: Vec<String> = events.iter().filter(|event| event.action == Action::Block).map(|event| event.source.to_string()).collect();
        assert_eq!(blocked.first().map(String::as_str), Some("203.0.113.250"), "two-way evidence first");
        assert_eq!(blocked.len(), 1 + 90, "one-way sources use at most max - reserved (120 - 30)");
        let passed_over: Vec<&Event> = events.iter().filter(|event| event.action == Action::BreakerOpen).collect();
        assert_eq!(passed_over.len(), 60, "every candidate passed over is recorded");
        assert!(
            passed_over.iter().all(|event| event.provenance.contains("no two-way evidence and the unreserved share is spent")),
            "{}",
            passed_over[0].provenance
        );
        // Later in the same minute, another real scanner still finds the reserved share.
        detector.on_report(report("203.0.113.251", 2 * SECOND, 900, 900.0, 900.0));
        detector.on_report(report_one_way("10.201.0.1", 2 * SECOND, 900, 900.0, 900.0));
        detector.on_flow(one_way("10.201.0.1", 4444, 2 * SECOND));
        let decided = decisions(&detector.tick());
        assert_eq!(decided, vec![(Action::Block, "203.0.113.251".to_string()), (Action::BreakerOpen, "10.201.0.1".to_string())]);
    }

    #[test]
    fn when_the_breaker_must_choose_the_strongest_evidence_wins() {
        let mut detector = detector(|config| {
            config.response.max_new_blocks_per_minute = 2;
            config.response.breaker_reserved_per_minute = 0;
        });
        // Three scanners with handshakes; the weakest (fast only, 0.95) sorts first by address.
        detector.on_report(report("10.0.0.1", SECOND, 38, 38.0, 38.0));
        for source in ["10.0.0.2", "10.0.0.3"] {
            detector.on_report(report(source, SECOND, 900, 900.0, 900.0));
        }
        detector.on_flow(flow("10.0.0.3", 4444, SECOND));
        let events = detector.tick();
        let decided = decisions(&events);
        assert_eq!(
            decided,
            vec![(Action::Block, "10.0.0.3".to_string()), (Action::Block, "10.0.0.2".to_string()), (Action::BreakerOpen, "10.0.0.1".to_string())],
            "both engines, then the higher score; address last"
        );
        let passed = events.iter().find(|event| event.action == Action::BreakerOpen).expect("passed over");
        assert!(passed.provenance.contains("lower evidence than the 2 sources blocked this minute"), "{}", passed.provenance);
    }

    #[test]
    fn a_full_detector_forgets_the_least_recently_active_source() {
        let mut detector = detector(|config| config.detect.max_sources = 16);
        for index in 0..16u64 {
            detector.on_report(report(&format!("10.9.0.{index}"), SECOND + index, 1, 1.0, 1.0));
        }
        // 10.9.0.0 is active again: 10.9.0.1 is now the least recently active.
        detector.on_report(report("10.9.0.0", 2 * SECOND, 1, 1.0, 1.0));
        detector.on_report(report("10.9.1.1", 2 * SECOND + 1, 1, 1.0, 1.0));
        assert_eq!(detector.sources.len(), 16);
        assert!(detector.sources.contains_key(&"10.9.1.1".parse().expect("ip")), "the new source is tracked");
        assert!(detector.sources.contains_key(&"10.9.0.0".parse().expect("ip")));
        assert!(!detector.sources.contains_key(&"10.9.0.1".parse().expect("ip")), "the least recently active is forgotten");
        assert_eq!(detector.counters.sources_forgotten, 1);
        assert_eq!(detector.by_last_seen.len(), detector.sources.len(), "the index follows the sources");
    }
}
