//! The quarantine: every rejected line, with where it was and why, one JSON object per
//! line in the ingest state directory (never in the log directory).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::tail::truncate_text;
use crate::{IngestError, RejectReason};

/// The quarantine file's name in the ingest state directory.
pub const QUARANTINE_FILE: &str = "quarantine.jsonl";
/// The previous quarantine file, once the current one reached its bound.
pub const QUARANTINE_PREVIOUS_FILE: &str = "quarantine.jsonl.1";

/// One quarantined line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineEntry {
    /// The log file and the byte offset of the line in it.
    pub file: String,
    pub offset: u64,
    /// The line as text, cut to `quarantine_line_bytes`.
    pub line: String,
    /// The line's length before it was cut, bytes.
    pub line_bytes: u64,
    /// [`RejectReason::label`].
    pub reason: String,
    /// The reason in words.
    pub detail: String,
    /// When it was quarantined, µs since the Unix epoch.
    pub at: u64,
}

/// Appends to the quarantine file; [`Quarantine::sync`] makes the appended entries durable.
/// Bounded: when the file reaches `max_bytes` it becomes `quarantine.jsonl.1` (replacing
/// the one before) and a new file starts, so the two hold at most twice the bound, and
/// the newest entries are always kept.
#[derive(Debug)]
pub(crate) struct Quarantine {
    path: PathBuf,
    file: Option<File>,
    max_line_bytes: usize,
    max_bytes: u64,
    /// Bytes in the current file (read at first use).
    bytes: u64,
    unsynced: bool,
}

impl Quarantine {
    pub fn new(path: PathBuf, max_line_bytes: usize, max_bytes: u64) -> Quarantine {
        Quarantine { path, file: None, max_line_bytes, max_bytes, bytes: 0, unsynced: false }
    }

    /// Moves a full file aside (fsynced first) and starts a new one.
    fn rotate(&mut self) -> Result<(), IngestError> {
        self.sync()?;
        self.file = None;
        let previous = self.path.with_file_name(QUARANTINE_PREVIOUS_FILE);
        std::fs::rename(&self.path, &previous).map_err(|source| IngestError::Io { operation: "rotate quarantine to", path: previous, source })?;
        self.bytes = 0;
        Ok(())
    }

    pub fn append(&mut self, log_file: &Path, offset: u64, line: &str, reason: &RejectReason) -> Result<(), IngestError> {
        let at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |since| since.as_micros() as u64);
        let entry = QuarantineEntry {
            file: log_file.display().to_string(),
            offset,
            line: truncate_text(line, self.max_line_bytes).to_string(),
            line_bytes: line.len() as u64,
            reason: reason.label().to_string(),
            detail: reason.to_string(),
            at,
        };
        let mut text = serde_json::to_vec(&entry).map_err(|error| IngestError::State { path: self.path.clone(), detail: error.to_string() })?;
        text.push(b'\n');
        if self.file.is_some() && self.bytes > 0 && self.bytes + text.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let opened = OpenOptions::new().create(true).append(true).open(&self.path).map_err(|source| IngestError::Io {
                    operation: "open quarantine",
                    path: self.path.clone(),
                    source,
                })?;
                // The file may be new: its directory entry must be durable too.
                let dir = self.path.parent().unwrap_or(Path::new("."));
                File::open(dir).and_then(|dir| dir.sync_all()).map_err(|source| IngestError::Io {
                    operation: "fsync directory",
                    path: dir.to_path_buf(),
                    source,
                })?;
                self.bytes = opened.metadata().map_err(|source| IngestError::Io { operation: "stat quarantine", path: self.path.clone(), source })?.len();
                self.file.insert(opened)
            }
        };
        file.write_all(&text).map_err(|source| IngestError::Io { operation: "append to quarantine", path: self.path.clone(), source })?;
        self.bytes += text.len() as u64;
        self.unsynced = true;
        Ok(())
    }

    pub fn sync(&mut self) -> Result<(), IngestError> {
        if let (true, Some(file)) = (self.unsynced, &self.file) {
            file.sync_data().map_err(|source| IngestError::Io { operation: "fsync quarantine", path: self.path.clone(), source })?;
            self.unsynced = false;
        }
        Ok(())
    }
}
