//! Detection and response.
//!
//! - [`heuristics`]: the fast path (scans, floods, repeated sessions, slow flows).
//! - [`scorer`]: the model side of the dual score, over the signed ONNX models that
//!   `mld-model` loads and checks (signature, metadata and feature contract) before use.
//! - [`evidence`]: two-way evidence, what a spoofed source cannot cheaply show.
//! - [`path`]: where an address's proven packets come from (interface, hop count), and
//!   which flows claiming it disagree.
//! - [`engine`]: per-source state, the dual score and the block policy.
//! - [`response`]: protected sources, TTLs and escalation, the circuit breaker, dry run.
//! - [`exempt`]: the operator's learned exemptions (sources released and marked benign).

pub mod engine;
pub mod evidence;
pub mod exempt;
pub mod heuristics;
pub mod path;
pub mod response;
pub mod scorer;
