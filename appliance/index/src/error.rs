//! The crate's one error type.

use std::path::PathBuf;

/// A result with [`IndexError`].
pub type Result<T> = std::result::Result<T, IndexError>;

/// What can go wrong with an index directory. Variants that concern a file name it, so
/// that an operator (or the ingest task, which rebuilds) knows what to remove or redo.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("failed to {op} `{path}`")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("index snapshot `{path}` is missing")]
    Missing { path: PathBuf },
    #[error("index snapshot `{path}` is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("index directory `{path}` already holds an index")]
    AlreadyExists { path: PathBuf },
    #[error("faiss failed to {op}")]
    Faiss {
        op: String,
        #[source]
        source: faiss::error::Error,
    },
    #[error("invalid input: {reason}")]
    InvalidInput { reason: String },
    #[error("fields of event {id} take {bytes} bytes as JSON (at most {max})")]
    FieldsTooLarge { id: u64, bytes: usize, max: usize },
}

impl IndexError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IndexError::Io { op, path: path.into(), source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        IndexError::Corrupt { path: path.into(), reason: reason.into() }
    }

    pub(crate) fn faiss(op: impl Into<String>, source: faiss::error::Error) -> Self {
        IndexError::Faiss { op: op.into(), source }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        IndexError::InvalidInput { reason: reason.into() }
    }
}
