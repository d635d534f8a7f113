//! Detection and response.
//!
//! - `model`: signed ONNX models (signature, metadata and feature contract checked
//!   before loading; batched inference).
//! - `features`: the feature vector of a flow, by the names a model's metadata lists.

pub mod features;
pub mod model;
