//! Detection and response.
//!
//! - [`heuristics`]: the fast path (scans, floods, repeated sessions, slow flows).
//! - `model`: signed ONNX models (signature, metadata and feature contract checked
//!   before loading; batched inference); `signing`: Ed25519 keys and signatures.
//! - [`features`]: the feature vector of a flow, by the names a model's metadata lists.
//! - [`evidence`]: two-way evidence, what a spoofed source cannot cheaply show.
//! - [`engine`]: per-source state, the dual score and the block policy.
//! - [`response`]: protected sources, TTLs and escalation, the circuit breaker, dry run.

pub mod engine;
pub mod evidence;
pub mod features;
pub mod heuristics;
pub mod model;
pub mod response;
pub mod scorer;
pub mod signing;
