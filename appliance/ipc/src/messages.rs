//! The messages.

use std::path::PathBuf;

use mld_types::{DenyReason, IpPrefix};
use serde::{Deserialize, Serialize};

/// Task → supervisor, on the task's control channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum TaskMessage {
    /// The task is ready to do its work.
    Ready,
    /// Periodic counters of the task's part of the pipeline.
    Counters { counters: TaskCounters },
    /// The task is exiting on purpose (shutdown), so its exit is not a failure.
    Stopping { reason: String },
    /// The detect task's answer to [`SupervisorMessage::MarkBenign`] `id`: the exemption
    /// recorded (its description), or why not.
    MarkedBenign { id: u64, result: Result<String, String> },
    /// The detect task's answer to [`SupervisorMessage::Release`] `id`: what it did, or why
    /// not.
    Released { id: u64, result: Result<String, String> },
    /// The fleet task's view of the fleet (`mldefender fleet status`), sent when it changes
    /// and every few seconds.
    Fleet { view: FleetView },
    /// The log task's durable head: the last record fsynced, its sequence number and chain
    /// tag (at most once a second, when it moved). Passed on to the fleet task, which
    /// publishes it as this node's log anchor.
    LogHead { seq: u64, hmac: String },
    /// The fleet task took a configuration document (signature, generation, sections and
    /// the configuration check held there): its JSON as found under `/mld/config`. The
    /// supervisor judges it again itself before it applies it (`fleet_doc`).
    FleetDocument { document: String },
}

/// The fleet as this node's fleet task sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetView {
    /// This node (`log.node`).
    pub node: String,
    /// Whether the task has a working session with etcd, and with which member.
    pub connected: bool,
    pub endpoint: String,
    /// The etcd revision applied up to.
    pub revision: u64,
    /// When this view was made, Unix ms.
    pub at_unix_ms: u64,
    /// The members with a live lease, this node included, by name (at most
    /// [`FleetView::MEMBERS_MAX`]).
    pub members: Vec<FleetMember>,
}

impl FleetView {
    pub const MEMBERS_MAX: usize = 256;
}

/// One member as its own record under `/mld/nodes/NODE/member` says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FleetMember {
    pub node: String,
    /// Its software version.
    pub version: String,
    /// The SHA-256 of its configuration (with the fleet document in force), hex.
    pub config_sha256: String,
    /// The generation of the fleet configuration document in force there (0: none).
    #[serde(default)]
    pub config_generation: u64,
    /// When its fleet task started, and its last heartbeat, Unix ms.
    pub started_unix_ms: u64,
    pub heartbeat_unix_ms: u64,
}

/// Supervisor → task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum SupervisorMessage {
    /// The first message: the configuration the supervisor validated (the task cannot
    /// read the file: it runs as another user) and what the supervisor decided for this
    /// run (sockets, peers' users, keys): nothing travels in the environment.
    Configure { config_toml: String, settings: TaskSettings },
    /// Stop intake, drain, flush, exit 0.
    Shutdown,
    /// To the detect task: the operator released `prefix` and marked it benign for
    /// `for_secs` (a [`ControlRequest::MarkBenign`] passed on); answered by
    /// [`TaskMessage::MarkedBenign`] with the same `id`.
    MarkBenign { id: u64, prefix: IpPrefix, reason: String, for_secs: u64 },
    /// To the detect task: the operator removed the deny entry of `prefix` (`block del`, a
    /// [`ControlRequest::Release`] passed on): forget the blocks it covers, log it, and
    /// withdraw them from the fleet. Answered by [`TaskMessage::Released`].
    Release { id: u64, prefix: IpPrefix },
    /// To the fleet task: the log task's durable head ([`TaskMessage::LogHead`]).
    LogHead { seq: u64, hmac: String },
    /// To the fleet task: its etcd identity changed (renewed, or a new bundle): the client
    /// certificate and the trust bundle, PEM, and the key's PEM in base64 (no JSON escapes,
    /// so the decoder makes no copy of it on the way). The task reconnects with it once.
    /// Both sides wipe their copies of the key after use: the supervisor its read and the
    /// frame, the task the frame ([`crate::FrameDecoder`]) and the decoded text.
    FleetIdentity { cert_pem: String, key_pem_base64: String, ca_pem: String },
    /// A configuration applied while running (`mldefender config apply`, SIGHUP, a
    /// rollback): `config_toml` is the configuration in force now (with the fleet document
    /// laid over), `base_toml` the generation's own text (what the fleet task lays a new
    /// document over). The capture and detect tasks take what changes live; the detect
    /// task puts `note` on record; the fleet task keeps `base_toml`.
    Reconfigure { config_toml: String, base_toml: String, note: ConfigNote },
    /// To the fleet task: the supervisor refused the document generation `generation` the
    /// task took ([`TaskMessage::FleetDocument`]), with every reason (for the record and
    /// `/mld/nodes/NODE/config`).
    FleetDocumentRefused { generation: u64, errors: Vec<String> },
    /// To the detect task: something the supervisor saw that belongs in the signed log
    /// (the image slot booted, a fallback from a failed slot, a slot blessed): a record
    /// with this `action` and `text` as its provenance.
    Note { action: String, text: String },
}

/// Requests on the supervisor's control socket (root only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum ControlRequest {
    Status,
    /// `mldefender block del PREFIX --benign`: record a learned exemption (the detect
    /// task applies it, logs it and keeps it). Answered with a [`MarkBenignAnswer`].
    MarkBenign {
        prefix: IpPrefix,
        reason: String,
        for_secs: u64,
    },
    /// `mldefender block del PREFIX`: the operator removed the deny entry; the detect task
    /// forgets the blocks it covers and withdraws them from the fleet. Answered with a
    /// [`MarkBenignAnswer`].
    Release {
        prefix: IpPrefix,
    },
    /// `mldefender config plan --running`: answered with a [`RunningConfig`].
    RunningConfig,
    /// `mldefender update status`: the image's slots, answered with an [`UpdateAnswer`]
    /// whose text is the slots report as JSON.
    UpdateStatus,
    /// `mldefender update apply`: `bytes` bytes of a signed UKI follow this frame on the
    /// stream, raw. The supervisor verifies them (`sha256` when given, `signature` by the
    /// release key) before it writes anything, then writes the slot not running, on trial.
    /// Answered with an [`UpdateAnswer`]; with `reboot`, the appliance then reboots.
    UpdateApply {
        bytes: u64,
        sha256: Option<String>,
        signature: String,
        reboot: bool,
    },
    /// `mldefender stop [--reboot]`: the orderly stop (tasks in order, XDP left enforcing);
    /// as PID 1 of the image, then power off, or reboot. Answered with an [`UpdateAnswer`].
    Stop {
        reboot: bool,
    },
    /// `mldefender config apply | rollback`: apply `toml` (a whole configuration) with the
    /// least disruption its plan allows. Answered with an [`ApplyAnswer`].
    Apply {
        toml: String,
        source: String,
    },
}

/// The supervisor's answer to [`ControlRequest::UpdateStatus`],
/// [`ControlRequest::UpdateApply`] and [`ControlRequest::Stop`]: what it did (or the
/// report), or why not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateAnswer {
    pub result: Result<String, String>,
}

/// The configuration the supervisor runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningConfig {
    /// The generation in force (`mldefender config generations`).
    pub generation: u64,
    /// Its text.
    pub base_toml: String,
    /// The fleet configuration document's TOML laid over it, if one is in force.
    pub document_toml: Option<String>,
    /// What the tasks run: the two together.
    pub effective_toml: String,
}

/// The supervisor's answer to [`ControlRequest::Apply`]: the plan as text and what was
/// done (`generation`: the one recorded, `None` when nothing changed), or every error
/// (nothing changed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyAnswer {
    pub result: Result<Applied, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub generation: Option<u64>,
    pub plan: String,
    pub done: String,
}

/// A configuration generation as the signed log records it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConfigNote {
    pub generation: u64,
    /// SHA-256 of the configuration in force (with the fleet document), hex.
    pub sha256: String,
    /// Where the generation came from: file, apply, rollback, sighup.
    pub source: String,
    /// The classes of its change (`config plan`).
    pub classes: Vec<String>,
}

/// The supervisor's answer to [`ControlRequest::MarkBenign`] and [`ControlRequest::Release`]:
/// what the detect task did (the exemption recorded, the blocks forgotten and withdrawn),
/// or why not (the detect task is not running, did not answer, refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkBenignAnswer {
    pub result: Result<String, String>,
}

/// Capture → detect. Flow records are best-effort: the sender drops and
/// counts when the receiver cannot keep up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum FlowMessage {
    /// A flow record: ended, or an interim record of a flow still open (end reason
    /// `active`).
    Flow { flow: Box<mld_flow::FlowRecord> },
    /// A source that was active since the last report and passed the capture task's
    /// pre-filter, with its window aggregates and latest flow.
    Source { report: Box<mld_flow::SourceReport> },
    /// The outcome of a [`ResponseMessage::Block`]: the deny entry is in the map (or why
    /// not), with the time it was written (CLOCK_BOOTTIME, ns).
    BlockResult { id: u64, prefix: IpPrefix, error: Option<String>, applied_boot_ns: u64 },
    /// A block's TTL lapsed and the capture task removed the deny entry.
    BlockExpired { prefix: IpPrefix },
    /// A service went under attack by a random-source flood and is guarded, or its guard
    /// lapsed (the capture task's per-destination guard).
    Guard { report: Box<GuardReport> },
}

/// A change of a service's guard, with what was measured (capture → detect → log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardReport {
    /// true: under attack, guarded; false: the guard lapsed.
    pub on: bool,
    pub dst: std::net::IpAddr,
    pub port: u16,
    pub protocol: u8,
    /// Wall-clock time of the change, ns since the Unix epoch.
    pub at_ns: u64,
    /// On: distinct sources not known good that started flows in the second that
    /// decided, and how many of them completed a handshake.
    pub new_per_sec: u64,
    pub completed_per_sec: u64,
    /// Off: first packets of unknown sources offered per second in the last second and
    /// at the peak, how long the guard held, and the XDP program's counts for it.
    pub offered_per_sec: u64,
    pub peak_offered_per_sec: u64,
    pub guarded_secs: u64,
    pub passed: u64,
    pub dropped: u64,
    pub known_passed: u64,
    /// The bucket: first packets of unknown sources let through per second, and at once.
    pub rate_per_sec: u64,
    pub burst: u64,
}

/// Detect task → capture task, on the same connection as the flows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum ResponseMessage {
    /// Write a deny entry for `prefix` with a TTL for `reason` (the capture task checks
    /// both again: `mld_capture::check_block_command`); `decided_boot_ns` is when the
    /// decision was made (CLOCK_BOOTTIME), for the verdict-to-map latency.
    Block { id: u64, prefix: IpPrefix, ttl_secs: u64, reason: DenyReason, decided_boot_ns: u64 },
    /// Remove the deny entry of exactly `prefix`, unless the operator wrote it (reason
    /// `manual`): a shared block its deciding node withdrew. No answer.
    Unblock { prefix: IpPrefix },
}

/// Detect task ↔ fleet task, on the fleet socket (ADR 0008). Best-effort both ways: a
/// message the other side cannot take now is dropped and counted (a shared block is a
/// bonus; local enforcement never waits for the fleet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum FleetMessage {
    /// Detect → fleet: this node blocked `prefix` on its own evidence until
    /// `expires_unix_ms`; `event_id` is the decision's record in this node's log.
    Decided { prefix: IpPrefix, reason: DenyReason, expires_unix_ms: u64, decided_unix_ms: u64, event_id: String },
    /// Fleet → detect: another node's block, checked against its key and bounds
    /// (`mld_fleet::SharedBlock`), for the detect task to judge and apply.
    Shared { prefix: IpPrefix, reason: DenyReason, expires_unix_ms: u64, decided_unix_ms: u64, node: String, event_id: String },
    /// Detect → fleet: the operator removed this node's blocks covered by `prefix` before
    /// their expiry (`block del`): withdraw them from the fleet.
    Withdraw { prefix: IpPrefix },
    /// Fleet → detect: `node` withdrew its shared block of `prefix` before its expiry:
    /// remove it here if it is the one applied from that node.
    Withdrawn { prefix: IpPrefix, node: String },
    /// Fleet → detect: something to put on record (a member joined or was lost, the
    /// connection to etcd was lost or is back, a shared block was removed).
    Note { what: String, detail: String },
}

/// Detect → log task. Events must not be lost: each carries a sequence
/// number, stays in the sender's [`crate::AckWindow`] until acknowledged, and is sent again
/// after a reconnect; the log task drops sequence numbers it has already written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum EventMessage {
    /// The first message on every connection: the sender's run (a random id chosen at
    /// its start). Sequence numbers count within a stream; a new stream starts again at 1.
    Hello { stream: u64 },
    /// One event record (JSON object text, without integrity fields).
    Event { seq: u64, record: String },
}

/// Log task → event sender: everything up to `seq` is written and fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventAck {
    pub seq: u64,
}

/// What the supervisor tells every task at start, beside the configuration. The fds it
/// hands over are listed by `mld_supervisor::layout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSettings {
    /// The socket the capture task connects to, to send flows to the detect task.
    pub flows_socket: PathBuf,
    /// The socket the detect task connects to, to hand events to the log task.
    pub events_socket: PathBuf,
    /// The socket the detect task asks its nearest past events on (the ingest task's).
    pub query_socket: PathBuf,
    /// The socket the detect task connects to, to trade blocks with the fleet task;
    /// `None` when no fleet task runs.
    #[serde(default)]
    pub fleet_socket: Option<PathBuf>,
    /// For the fleet task: the node's own configuration file, before any fleet document
    /// (a new document is laid over this, not over the one in force), and the generation
    /// of the document in force (0: none).
    #[serde(default)]
    pub fleet_base_toml: Option<String>,
    #[serde(default)]
    pub fleet_generation: u64,
    /// The configuration generation in force (the detect task records it at its start).
    #[serde(default)]
    pub config_note: Option<ConfigNote>,
    /// The users the receiving tasks admit as peers (peer credentials).
    pub capture_uid: u32,
    pub detect_uid: u32,
    /// The checkpoint public key (base64), for the ingest task: it verifies the log
    /// without any secret (ADR 0007). `None` for the other tasks.
    pub log_public_key: Option<String>,
    /// Test builds only: hooks the lab tests use to misbehave on purpose.
    #[serde(default)]
    pub test: TestHooks,
}

/// Test hooks, set by the supervisor only in debug builds (as `cargo test` builds the
/// binary) from its own environment; release builds neither set nor honour them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestHooks {
    /// Flood the control channel instead of working (the supervisor's budget test).
    pub flood_control: bool,
    /// The detect task's event window and queue hold this many events.
    pub event_queue_max: Option<usize>,
}

/// One task's counters, as it reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskCounters {
    Capture(CaptureCounters),
    /// Boxed: the decisions and the latency histogram make it the largest by far.
    Detect(Box<DetectCounters>),
    Log(LogCounters),
    Ingest(IngestCounters),
    Fleet(FleetCounters),
}

/// The capture task's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CaptureCounters {
    /// Packet records read from the ring buffer.
    pub records_read: u64,
    /// Flows finished.
    pub flows_finished: u64,
    /// Flows sent on to the detect task.
    pub flows_sent: u64,
    /// Flows dropped because the detect task was absent or slow.
    pub flows_dropped: u64,
    /// Packets the XDP program passed, dropped, found malformed, lost to a full ring.
    pub xdp_passed: u64,
    pub xdp_dropped: u64,
    pub xdp_malformed: u64,
    pub xdp_ring_full: u64,
    /// First packets the XDP program dropped for a guarded destination (random-source floods).
    pub xdp_guard_dropped: u64,
    /// Services guarded now, and guards put on since the task started.
    pub guards_active: u64,
    pub guards_on: u64,
}

/// The detect task's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DetectCounters {
    /// Flows received.
    pub flows_received: u64,
    /// Flows scored by the model.
    pub flows_scored: u64,
    /// Flows dropped because detection fell behind (its bounded queue), and events lost
    /// to a full event queue.
    pub flows_dropped_detect: u64,
    /// Active-source reports received.
    pub reports_received: u64,
    /// Decisions: blocks applied or dry-run, alerts, refusals of protected sources,
    /// decisions the circuit breaker stopped.
    pub blocks: u64,
    pub alerts: u64,
    pub refused: u64,
    pub breaker_open: u64,
    /// Flows claiming an address with a proven path (interface, hop count) that arrived
    /// by another: suspected forged sources, not blocked on that evidence.
    pub stray_flows: u64,
    /// Blocks in force (the detect task's view).
    pub active_blocks: u64,
    /// Verdict → deny-map entry written, p99 over the last 1,024 blocks, µs.
    pub block_latency_p99_us: u64,
    /// Events handed to the log task and acknowledged.
    pub events_acked: u64,
    /// Other nodes' blocks applied here, and refused here (protections, breaker,
    /// categories not accepted, expired).
    pub shared_applied: u64,
    pub shared_refused: u64,
    /// Decisions by action and category (the metrics' `mldefender_decisions_total`).
    pub decisions: DecisionCounts,
    /// 1 while the circuit breaker holds new blocks back (this minute's share is spent or
    /// the blocks in force are at their bound).
    pub breaker_holding: u64,
    /// Verdict → deny-map latency of every block since the task started.
    pub block_latency: LatencyHistogram,
}

/// Decisions counted by action ([`DecisionCounts::ACTIONS`]) and category
/// ([`DecisionCounts::CATEGORIES`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DecisionCounts {
    pub counts: [[u64; 5]; 6],
}

impl DecisionCounts {
    /// The actions counted, as the signed log names them.
    pub const ACTIONS: [&'static str; 6] = ["block", "would-block", "alert", "refused", "breaker-open", "expire"];
    /// The detection categories, as the signed log names them.
    pub const CATEGORIES: [&'static str; 5] = ["flood", "scan", "brute-force", "slow", "other"];

    /// Counts one decision; an action or category not listed is not counted.
    pub fn add(&mut self, action: &str, category: &str) {
        let action = DecisionCounts::ACTIONS.iter().position(|name| *name == action);
        let category = DecisionCounts::CATEGORIES.iter().position(|name| *name == category);
        if let (Some(action), Some(category)) = (action, category) {
            self.counts[action][category] += 1;
        }
    }

    /// Every (action, category, count).
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        DecisionCounts::ACTIONS
            .iter()
            .enumerate()
            .flat_map(move |(a, action)| DecisionCounts::CATEGORIES.iter().enumerate().map(move |(c, category)| (*action, *category, self.counts[a][c])))
    }
}

/// A latency histogram with fixed bounds (Prometheus's `_bucket`, `_sum`, `_count`):
/// `buckets[i]` counts observations at most `BOUNDS_US[i]` and above the bound before;
/// `overflow` the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LatencyHistogram {
    pub buckets: [u64; 12],
    pub overflow: u64,
    pub sum_us: u64,
    pub count: u64,
}

impl LatencyHistogram {
    /// Upper bounds of the buckets, µs: 50 µs to 1 s.
    pub const BOUNDS_US: [u64; 12] = [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 250_000, 1_000_000];

    pub fn observe(&mut self, micros: u64) {
        match LatencyHistogram::BOUNDS_US.iter().position(|bound| micros <= *bound) {
            Some(index) => self.buckets[index] += 1,
            None => self.overflow += 1,
        }
        self.sum_us = self.sum_us.saturating_add(micros);
        self.count += 1;
    }

    /// The bound below which a fraction `q` of the observations fall (the upper bound of
    /// the bucket that holds the q-quantile; `None` when empty or beyond the last bound).
    pub fn quantile_bound_us(&self, q: f64) -> Option<u64> {
        let rank = (q * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(LatencyHistogram::BOUNDS_US[index]);
            }
        }
        None
    }
}

/// The log task's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogCounters {
    /// Events written to the signed log.
    pub events_logged: u64,
    /// Events the log task refused to seal (a field the log writes itself, such as `seq`,
    /// or not an event): each is put on record as a `rejected_event` record instead.
    pub events_refused: u64,
    /// Times the log could not be written (a full disk, an IO error) and the task went
    /// on retrying.
    pub log_write_failures: u64,
    /// Bytes of records written since the task started.
    pub log_bytes: u64,
    /// Bytes the log's files take in `log.dir` now (measured every few seconds).
    pub log_disk_bytes: u64,
}

/// The ingest task's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IngestCounters {
    /// Records of the signed log verified, and lines quarantined.
    pub events_verified: u64,
    pub events_quarantined: u64,
    /// Events added to the similarity index.
    pub events_indexed: u64,
    /// Decisions described in words and added to the text index (`mldefender query ask`).
    pub events_text_indexed: u64,
}

/// The fleet task's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FleetCounters {
    /// 1 while the task has a working connection to etcd (its last request succeeded).
    pub fleet_connected: u64,
    /// Connections made (the first and every reconnect).
    pub fleet_connects: u64,
    /// This node's blocks written to etcd, and those that could not be (etcd away).
    pub fleet_published: u64,
    pub fleet_publish_failed: u64,
    /// Other nodes' blocks received and handed to the detect task, and those dropped
    /// (the detect task away, or its socket full).
    pub fleet_received: u64,
    pub fleet_handoff_dropped: u64,
    /// Watch events or records refused by their checks (a key outside the schema, a bad
    /// record): a misbehaving writer, counted and logged.
    pub fleet_invalid: u64,
    /// Full resyncs (at start, and after a compaction).
    pub fleet_resyncs: u64,
    /// Members with a live lease, this node included.
    pub fleet_members: u64,
    /// The etcd revision the task has applied up to.
    pub fleet_revision: u64,
}

/// The whole pipeline's counters, each task's part as it last reported it (flat in JSON,
/// as `mldefender status --json` has always shown them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineCounters {
    #[serde(flatten)]
    pub capture: CaptureCounters,
    #[serde(flatten)]
    pub detect: DetectCounters,
    #[serde(flatten)]
    pub log: LogCounters,
    #[serde(flatten)]
    pub ingest: IngestCounters,
    #[serde(flatten)]
    pub fleet: FleetCounters,
}

/// The two lines `mldefender status` prints: the data path end to end, then detection.
impl std::fmt::Display for PipelineCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self;
        writeln!(
            f,
            "pipeline: xdp passed {} dropped {} (guard {}, services guarded {}) malformed {} ring-full {}; records {}; flows finished {} sent {} dropped {} received {}; events acked {} logged {} ({} bytes; {} bytes on disk) refused {} (write failures {}) verified {} quarantined {} indexed {} (in words {})",
            p.capture.xdp_passed,
            p.capture.xdp_dropped,
            p.capture.xdp_guard_dropped,
            p.capture.guards_active,
            p.capture.xdp_malformed,
            p.capture.xdp_ring_full,
            p.capture.records_read,
            p.capture.flows_finished,
            p.capture.flows_sent,
            p.capture.flows_dropped,
            p.detect.flows_received,
            p.detect.events_acked,
            p.log.events_logged,
            p.log.log_bytes,
            p.log.log_disk_bytes,
            p.log.events_refused,
            p.log.log_write_failures,
            p.ingest.events_verified,
            p.ingest.events_quarantined,
            p.ingest.events_indexed,
            p.ingest.events_text_indexed
        )?;
        write!(
            f,
            "detect: reports {}; flows scored {} dropped {}; blocks {} (in force {}, verdict-to-map p99 {} us) alerts {} refused {} breaker-open {} stray-path flows {}",
            p.detect.reports_received,
            p.detect.flows_scored,
            p.detect.flows_dropped_detect,
            p.detect.blocks,
            p.detect.active_blocks,
            p.detect.block_latency_p99_us,
            p.detect.alerts,
            p.detect.refused,
            p.detect.breaker_open,
            p.detect.stray_flows
        )?;
        if p.fleet != FleetCounters::default() {
            let q = &p.fleet;
            write!(
                f,
                "\nfleet: {}; connects {}; members {}; revision {}; published {} failed {}; received {} (applied {} refused {}) dropped {}; invalid {}; resyncs {}",
                if q.fleet_connected == 1 { "connected" } else { "disconnected" },
                q.fleet_connects,
                q.fleet_members,
                q.fleet_revision,
                q.fleet_published,
                q.fleet_publish_failed,
                q.fleet_received,
                p.detect.shared_applied,
                p.detect.shared_refused,
                q.fleet_handoff_dropped,
                q.fleet_invalid,
                q.fleet_resyncs
            )?;
        }
        Ok(())
    }
}

impl TaskCounters {
    /// The name of the task kind these counters belong to (`capture`, `detect`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            TaskCounters::Capture(_) => "capture",
            TaskCounters::Detect(_) => "detect",
            TaskCounters::Log(_) => "log",
            TaskCounters::Ingest(_) => "ingest",
            TaskCounters::Fleet(_) => "fleet",
        }
    }
}

impl PipelineCounters {
    /// Takes in one task's report.
    pub fn update(&mut self, counters: TaskCounters) {
        match counters {
            TaskCounters::Capture(capture) => self.capture = capture,
            TaskCounters::Detect(detect) => self.detect = *detect,
            TaskCounters::Log(log) => self.log = log,
            TaskCounters::Ingest(ingest) => self.ingest = ingest,
            TaskCounters::Fleet(fleet) => self.fleet = fleet,
        }
    }
}

/// A task's state as the supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    Starting,
    Ready,
    /// Exited; restarting after a back-off.
    Restarting,
    /// Too many restarts in the window: left down.
    Held,
    Stopping,
    Stopped,
    Disabled,
}

/// One task's line in `mldefender status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub name: String,
    pub state: TaskState,
    pub pid: Option<u32>,
    pub uptime_secs: f64,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub memory_bytes: u64,
    pub memory_budget_bytes: u64,
    /// "cgroup+rss" or "rss".
    pub memory_enforcement: String,
    pub user: String,
    /// Times the task was killed for flooding its control channel.
    #[serde(default)]
    pub control_floods: u64,
}

/// The answer to a status request on the supervisor's control socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub supervisor_pid: u32,
    pub uptime_secs: f64,
    pub ready: bool,
    pub supervisor_memory_bytes: u64,
    pub tasks: Vec<TaskStatus>,
    pub pipeline: PipelineCounters,
    /// The fleet task's last view (`None` without a fleet).
    #[serde(default)]
    pub fleet: Option<FleetView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pipeline_counters_read_flat_and_each_task_fills_only_its_part() {
        let mut pipeline = PipelineCounters::default();
        pipeline.update(TaskCounters::Log(LogCounters { events_logged: 7, ..LogCounters::default() }));
        pipeline.update(TaskCounters::Capture(CaptureCounters { records_read: 3, ..CaptureCounters::default() }));
        let json = serde_json::to_value(pipeline).expect("encode");
        assert_eq!((json["events_logged"].as_u64(), json["records_read"].as_u64(), json["events_indexed"].as_u64()), (Some(7), Some(3), Some(0)));
        let back: PipelineCounters = serde_json::from_value(json).expect("decode");
        assert_eq!(back, pipeline);
    }

    #[test]
    fn a_latency_lands_in_the_first_bucket_whose_bound_holds_it() {
        let mut histogram = LatencyHistogram::default();
        for micros in [10, 50, 51, 900, 2_000_000] {
            histogram.observe(micros);
        }
        assert_eq!((histogram.buckets[0], histogram.buckets[1], histogram.buckets[4], histogram.overflow), (2, 1, 1, 1));
        assert_eq!((histogram.count, histogram.sum_us), (5, 2_001_011));
        assert_eq!(histogram.quantile_bound_us(0.5), Some(100));
        assert_eq!(histogram.quantile_bound_us(0.99), None);
        let mut decisions = DecisionCounts::default();
        decisions.add("block", "scan");
        decisions.add("observe", "scan");
        assert_eq!(decisions.iter().filter(|(_, _, count)| *count > 0).collect::<Vec<_>>(), vec![("block", "scan", 1)]);
    }

    #[test]
    fn a_block_command_with_a_bad_prefix_or_reason_is_not_a_message() {
        let good = r#"{"type":"block","id":1,"prefix":"10.66.2.66/32","ttl_secs":60,"reason":"scan","decided_boot_ns":5}"#;
        assert!(matches!(serde_json::from_str::<ResponseMessage>(good), Ok(ResponseMessage::Block { reason: DenyReason::Scan, .. })));
        for bad in [good.replace("10.66.2.66/32", "10.66.2.66/24"), good.replace("scan", "everything")] {
            assert!(serde_json::from_str::<ResponseMessage>(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn counters_travel_tagged_by_task() {
        let message = TaskMessage::Counters { counters: TaskCounters::Ingest(IngestCounters { events_verified: 2, ..IngestCounters::default() }) };
        let text = serde_json::to_string(&message).expect("encode");
        assert_eq!(serde_json::from_str::<TaskMessage>(&text).expect("decode"), message);
    }
}
