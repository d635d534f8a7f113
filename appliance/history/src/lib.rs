//! The searchable history (issue 7): every event of the signed log that the ingest
//! foundation verified is embedded by the signed ONNX embedder and added to the FAISS
//! event index, so that an analyst can ask which past events look like this one.
//!
//! - [`describe`]: a decision event in words, for the text index and answers.
//! - [`embed`]: the embedder, reading the same features from an event record or a flow.
//! - [`history`]: [`History`], the ingest, the embedder and the index kept in step (what is
//!   saved in which order, and when the index is rebuilt from the log).
//! - [`text`]: the text index: decisions in words, embedded by the sentence embedder,
//!   asked in words (`mldefender query ask`).
//! - [`query`]: the answers to the questions `mldefender query` asks (the questions
//!   themselves, the query language, are `mld-query`'s, re-exported here).
//!
//! Invariant: only records that passed every check of `mld-ingest` reach the index; a
//! quarantined line is never embedded.

pub mod describe;
pub mod embed;
pub mod history;
pub mod query;
pub mod text;

use std::path::PathBuf;

pub use describe::{describe, DESCRIPTION_VERSION};
pub use embed::{Embedded, Embedder};
pub use history::{History, IndexSettings, OpenFailure, Rebuild, StepStats, TextSettings, COVERED_FILE};
pub use query::{answer, answer_ask, Answer, AnswerHit, EventRef, Filter, Query, Reply, MAX_RESULTS};
pub use text::{time_words, AskAnswer, AskFilter, Refused, Summary, TextIndex, TextStats};

/// What can go wrong with the history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Ingest(#[from] mld_ingest::IngestError),
    #[error(transparent)]
    Index(#[from] mld_index::IndexError),
    #[error(transparent)]
    Model(#[from] mld_model::ModelError),
    #[error("detect.model-public-key is not a valid Ed25519 public key: {0}")]
    PublicKey(String),
    #[error("model metadata `{path}` is of kind `{kind}`, not an embedding")]
    NotAnEmbedder { path: PathBuf, kind: String },
    #[error("embedding failed: {0}")]
    Embedding(String),
    #[error("failed to {operation} `{path}`")]
    Io { operation: &'static str, path: PathBuf, source: std::io::Error },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid query: {0}")]
    Invalid(String),
}
