//! Messages between processes of the appliance and how they travel.
//!
//! Every message is one frame: a 4-byte big-endian length, then that many bytes of JSON
//! (readable with `socat` when debugging; at flow rates the JSON is not the bottleneck).
//! Frames larger than [`MAX_FRAME_BYTES`] are refused on both sides.
//!
//! Queues between tasks are bounded and say what happens when full ([`Outbox`]:
//! the newest message is dropped and counted). Messages that must not be lost travel
//! with a sequence number and are re-sent until acknowledged ([`AckWindow`]); the
//! receiver drops duplicates by sequence number. What waits for such a window is held in
//! a [`GapQueue`]: bounded, and what it cannot hold becomes one [`Gap`] in its place.
//!
//! The transport is here too: a non-blocking [`Connection`] with bounded buffers that never
//! blocks its caller's loop, and an [`accept`] that admits only peers running as the
//! expected user (peer credentials), so no task hand-writes either.

mod connection;
mod frame;
mod messages;
mod queue;

pub use connection::{accept, Connection, Peer, Received, Refused, SendError, Unsent};
pub use frame::{encode_frame, read_frame, write_frame, FrameDecoder, FrameError, MAX_FRAME_BYTES};
pub use messages::{
    Applied, ApplyAnswer, CaptureCounters, ConfigNote, ControlRequest, DecisionCounts, DetectCounters, EventAck, EventMessage, FleetCounters, FleetMember,
    FleetMessage, FleetView, FlowMessage, GuardReport, IngestCounters, LatencyHistogram, LogCounters, MarkBenignAnswer, PipelineCounters, ResponseMessage,
    RunningConfig, StatusReport, SupervisorMessage, TaskCounters, TaskMessage, TaskSettings, TaskState, TaskStatus, TestHooks, UpdateAnswer,
};
pub use queue::{is_new, AckWindow, Gap, GapQueue, Outbox, Queued};
