//! Capture errors: each names the object and the operation.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("missing privilege: {operation} needs {capability} (run as root or grant the capability)")]
    Privilege { operation: &'static str, capability: &'static str },
    #[error("interface `{name}` does not exist{hint}")]
    UnknownInterface { name: String, hint: String },
    #[error("failed to load the XDP program")]
    Load(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("failed to attach the XDP program to `{interface}` in {mode} mode")]
    Attach {
        interface: String,
        mode: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("failed to {operation} `{path}`")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another capture is running on bpffs directory `{bpffs_dir}` (lock `{lock}` is held)")]
    AlreadyRunning { bpffs_dir: PathBuf, lock: PathBuf },
    #[error("no capture is running with maps under `{dir}` (start `mldefender capture` first)")]
    NotRunning { dir: PathBuf },
    #[error("failed to {operation} map `{map}`")]
    Map {
        operation: &'static str,
        map: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("refused: {0}")]
    Refused(String),
}

impl CaptureError {
    pub(crate) fn map(operation: &'static str, map: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> CaptureError {
        CaptureError::Map { operation, map, source: Box::new(source) }
    }

    pub(crate) fn io(operation: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> CaptureError {
        CaptureError::Io { operation, path: path.into(), source }
    }
}
