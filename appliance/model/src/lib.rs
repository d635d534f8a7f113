//! Signed ONNX models: what a model is, how it is signed, checked and loaded, and the
//! feature vector it reads.
//!
//! - [`signing`]: Ed25519 model keys and signatures (`mldefender model keygen|sign`).
//! - [`LoadedModel`] (module `model`): a model's three files ([`ModelFiles`]), its metadata,
//!   the checks made before it is used and batched inference; [`init_runtime`] loads ONNX
//!   Runtime once per process (this crate is the only user of `ort`).
//! - [`text`]: the sentence embedder ([`text::TextModel`], kind `text-embedding`): a signed
//!   graph and tokenizer, text in, unit vectors out.
//! - [`features`]: the feature contract, the feature vector of a flow by the names a
//!   model's metadata lists.
//!
//! Users: `mld-detect` (the attack and category models), `mld-history` (the flow embedder and the text model) and
//! `mldefender model`.
//!
//! Invariant: a model is used only after its metadata is checked against its Ed25519
//! signature under the configured public key, the `.onnx` against the SHA-256 that the
//! signed metadata states, and the features and graph against the model contract.
//! Loading fails closed: any failed check is an error naming the check and the file,
//! never a model used anyway. The session is built from the bytes that were hashed.
//!
//! The model signing key is read by `mld_secret::open_secret_file`, the one reader of
//! secret files, which the event log's keys use too: a crate below both, so that this
//! crate does not depend on the event log, nor the event log on ONNX Runtime.

pub mod features;
mod model;
pub mod signing;
pub mod text;

pub use model::{init_runtime, LoadedModel, ModelError, ModelFiles, ModelKind, ModelMetadata, EMBEDDING_NAME, INPUT_NAME, PROBABILITIES_NAME};
