//! The messages.

use serde::{Deserialize, Serialize};

/// Task → supervisor, on the task's control channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum TaskMessage {
    /// The task is ready to do its work.
    Ready,
    /// Periodic counters of the task's part of the pipeline.
    Counters(PipelineCounters),
    /// The task is exiting on purpose (shutdown), so its exit is not a failure.
    Stopping { reason: String },
}

/// Supervisor → task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum SupervisorMessage {
    /// The first message: the configuration the supervisor validated (the task cannot
    /// read the file: it runs as another user).
    Configure { config_toml: String },
    /// Stop intake, drain, flush, exit 0.
    Shutdown,
}

/// Requests on the supervisor's control socket (root only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum ControlRequest {
    Status,
}

/// Capture → sink (later: detect). Flow records are best-effort: the sender drops and
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
    BlockResult { id: u64, prefix: String, error: Option<String>, applied_boot_ns: u64 },
    /// A block's TTL lapsed and the capture task removed the deny entry.
    BlockExpired { prefix: String },
}

/// Detect task → capture task, on the same connection as the flows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum ResponseMessage {
    /// Write a deny entry for `prefix` with a TTL; `reason` is the deny category
    /// (`scan`, `flood`, `brute-force`, `slow`, `other`); `decided_boot_ns` is when the
    /// decision was made (CLOCK_BOOTTIME), for the verdict-to-map latency.
    Block { id: u64, prefix: String, ttl_secs: u64, reason: String, decided_boot_ns: u64 },
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

/// Pipeline counters a task reports; each task fills what it knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineCounters {
    /// Packet records read from the ring buffer (capture).
    pub records_read: u64,
    /// Flows finished (capture).
    pub flows_finished: u64,
    /// Flows sent on (capture).
    pub flows_sent: u64,
    /// Flows dropped because the receiver was absent or slow (capture).
    pub flows_dropped: u64,
    /// Flows received (detect).
    pub flows_received: u64,
    /// Flows scored by the model (detect).
    pub flows_scored: u64,
    /// Flows dropped because detection fell behind (detect's bounded queue).
    pub flows_dropped_detect: u64,
    /// Active-source reports received (detect).
    pub reports_received: u64,
    /// Decisions (detect): blocks applied or dry-run, alerts, refusals of protected
    /// sources, decisions the circuit breaker stopped.
    pub blocks: u64,
    pub alerts: u64,
    pub refused: u64,
    pub breaker_open: u64,
    /// Blocks in force (detect's view).
    pub active_blocks: u64,
    /// Verdict → deny-map entry written, p99 over the last 1,024 blocks, µs (detect).
    pub block_latency_p99_us: u64,
    /// Events handed to the log task and acknowledged (detect).
    pub events_acked: u64,
    /// Events written to the signed log (log task).
    pub events_logged: u64,
    /// Events the log task refused to seal (a field the log writes itself, such as `seq`,
    /// or not an event): each is put on record as a `rejected_event` record instead.
    #[serde(default)]
    pub events_refused: u64,
    /// Times the log task could not write the log (a full disk, an IO error) and went on
    /// retrying (log task).
    #[serde(default)]
    pub log_write_failures: u64,
    /// Records of the signed log verified, and lines quarantined (ingest task).
    pub events_verified: u64,
    pub events_quarantined: u64,
    /// Events added to the similarity index (ingest task).
    pub events_indexed: u64,
    /// Packets the XDP program passed, dropped, found malformed, lost to a full ring.
    pub xdp_passed: u64,
    pub xdp_dropped: u64,
    pub xdp_malformed: u64,
    pub xdp_ring_full: u64,
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
}
