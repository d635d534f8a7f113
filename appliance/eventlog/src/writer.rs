//! Writing: one file at a time, a header first, rotation by size, group-commit fsync,
//! and recovery of a partial last line after a crash.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::chain::{Sealer, GENESIS_TAG, SCHEMA};
use crate::key::LogKey;

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("failed to {operation} `{path}`")]
    Io { operation: &'static str, path: PathBuf, source: std::io::Error },
    #[error("`{path}` line {line} is not a log record: {detail}")]
    Corrupt { path: PathBuf, line: usize, detail: String },
}

/// Where and how the log is written.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub dir: PathBuf,
    /// The node id: in every header and every tag.
    pub node: String,
    /// A file reaching this size is closed and the next one started.
    pub max_file_bytes: u64,
    /// fsync after this many records (group commit); 1 = every record.
    pub sync_every_records: u32,
}

/// The only writer of a node's log.
#[derive(Debug)]
pub struct LogWriter {
    config: WriterConfig,
    sealer: Sealer,
    /// Lines are buffered and reach the file at every sync (and when the buffer fills).
    file: Option<(BufWriter<File>, PathBuf)>,
    file_index: u64,
    file_bytes: u64,
    unsynced: u32,
    line: String,
}

/// File name of a node's file `index`.
pub fn file_name(node: &str, index: u64) -> String {
    format!("events-{node}-{index:06}.jsonl")
}

impl LogWriter {
    /// Opens the node's log in `config.dir`: continues the chain of the newest file
    /// (after moving a partial last line, left by a crash, to `quarantine-<node>.jsonl`)
    /// and starts a new file with a header.
    pub fn open(config: WriterConfig, key: LogKey) -> Result<LogWriter, WriterError> {
        std::fs::create_dir_all(&config.dir).map_err(|source| WriterError::Io { operation: "create directory", path: config.dir.clone(), source })?;
        let (next_index, last_seq, last_tag, recovered) = match newest_file(&config.dir, &config.node)? {
            None => (0, 0, GENESIS_TAG.to_string(), None),
            Some((index, path)) => {
                let recovered = quarantine_partial_line(&path, &config.dir.join(format!("quarantine-{}.jsonl", config.node)))?;
                let (seq, tag) = last_record(&path)?;
                (index + 1, seq, tag, recovered)
            }
        };
        let sealer = Sealer::new(&config.node, key, last_seq, &last_tag);
        let mut writer = LogWriter { config, sealer, file: None, file_index: next_index, file_bytes: 0, unsynced: 0, line: String::with_capacity(8192) };
        writer.start_file()?;
        if let Some(bytes) = recovered {
            let mut record = serde_json::Map::new();
            record.insert("type".to_string(), "recovery".into());
            record.insert("reason".to_string(), "partial last line after a crash moved to quarantine".into());
            record.insert("quarantined_bytes".to_string(), bytes.into());
            writer.append(&record)?;
            writer.sync()?;
        }
        Ok(writer)
    }

    pub fn last_seq(&self) -> u64 {
        self.sealer.last_seq()
    }

    /// Appends one record; returns its sequence number. Durable after the next
    /// [`LogWriter::sync`] (called automatically every `sync_every_records`).
    pub fn append(&mut self, record: &serde_json::Map<String, serde_json::Value>) -> Result<u64, WriterError> {
        if self.file_bytes >= self.config.max_file_bytes {
            self.sync()?;
            self.file = None;
            self.file_index += 1;
            self.start_file()?;
        }
        self.line.clear();
        let seq = self.sealer.seal(record, &mut self.line);
        self.write_line()?;
        self.unsynced += 1;
        if self.unsynced >= self.config.sync_every_records {
            self.sync()?;
        }
        Ok(seq)
    }

    /// Writes out and fsyncs what was appended.
    pub fn sync(&mut self) -> Result<(), WriterError> {
        if let Some((file, path)) = &mut self.file {
            file.flush().map_err(|source| WriterError::Io { operation: "write", path: path.clone(), source })?;
            file.get_ref().sync_data().map_err(|source| WriterError::Io { operation: "fsync", path: path.clone(), source })?;
        }
        self.unsynced = 0;
        Ok(())
    }

    fn start_file(&mut self) -> Result<(), WriterError> {
        let path = self.config.dir.join(file_name(&self.config.node, self.file_index));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|source| WriterError::Io { operation: "create log file", path: path.clone(), source })?;
        self.file = Some((BufWriter::with_capacity(256 * 1024, file), path));
        self.file_bytes = 0;
        let mut header = serde_json::Map::new();
        header.insert("type".to_string(), "header".into());
        header.insert("schema".to_string(), SCHEMA.into());
        header.insert("node".to_string(), self.config.node.clone().into());
        header.insert("file_index".to_string(), self.file_index.into());
        header.insert("prev_file_last_seq".to_string(), self.sealer.last_seq().into());
        header.insert("prev_file_last_tag".to_string(), self.sealer.last_tag().into());
        self.line.clear();
        self.sealer.seal(&header, &mut self.line);
        self.write_line()?;
        self.sync()
    }

    fn write_line(&mut self) -> Result<(), WriterError> {
        let (file, path) = self.file.as_mut().expect("a file is open");
        file.write_all(self.line.as_bytes()).map_err(|source| WriterError::Io { operation: "write", path: path.clone(), source })?;
        self.file_bytes += self.line.len() as u64;
        Ok(())
    }
}

fn newest_file(dir: &Path, node: &str) -> Result<Option<(u64, PathBuf)>, WriterError> {
    let prefix = format!("events-{node}-");
    let entries = std::fs::read_dir(dir).map_err(|source| WriterError::Io { operation: "list", path: dir.to_path_buf(), source })?;
    let mut newest: Option<(u64, PathBuf)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(index) = name.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix(".jsonl")).and_then(|index| index.parse::<u64>().ok()) else {
            continue;
        };
        if newest.as_ref().is_none_or(|(best, _)| index > *best) {
            newest = Some((index, entry.path()));
        }
    }
    Ok(newest)
}

/// Moves bytes after the last newline (a line cut by a crash) to the quarantine file,
/// with the reason; returns how many bytes were moved.
fn quarantine_partial_line(path: &Path, quarantine: &Path) -> Result<Option<u64>, WriterError> {
    let io = |operation, source| WriterError::Io { operation, path: path.to_path_buf(), source };
    let bytes = std::fs::read(path).map_err(|error| io("read", error))?;
    let complete = bytes.iter().rposition(|byte| *byte == b'\n').map_or(0, |at| at + 1);
    if complete == bytes.len() {
        return Ok(None);
    }
    let partial = &bytes[complete..];
    let mut record = serde_json::Map::new();
    record.insert("reason".to_string(), "partial line after a crash".into());
    record.insert("file".to_string(), path.display().to_string().into());
    record.insert("offset".to_string(), complete.into());
    record.insert("bytes".to_string(), String::from_utf8_lossy(partial).into_owned().into());
    let mut out = OpenOptions::new().create(true).append(true).open(quarantine).map_err(|error| io("open quarantine for", error))?;
    writeln!(out, "{}", serde_json::Value::Object(record)).and_then(|()| out.sync_all()).map_err(|error| io("write quarantine for", error))?;
    let file = OpenOptions::new().write(true).open(path).map_err(|error| io("open", error))?;
    file.set_len(complete as u64).and_then(|()| file.sync_all()).map_err(|error| io("truncate", error))?;
    Ok(Some(partial.len() as u64))
}

/// The seq and tag of a file's last record.
fn last_record(path: &Path) -> Result<(u64, String), WriterError> {
    let io = |operation, source| WriterError::Io { operation, path: path.to_path_buf(), source };
    let mut file = File::open(path).map_err(|error| io("open", error))?;
    let length = file.seek(SeekFrom::End(0)).map_err(|error| io("seek", error))?;
    // Records are far smaller than this; read the tail only.
    let tail = length.saturating_sub(1 << 20);
    file.seek(SeekFrom::Start(tail)).map_err(|error| io("seek", error))?;
    let mut last = None;
    for (number, line) in BufReader::new(file).lines().enumerate() {
        last = Some((number, line.map_err(|error| io("read", error))?));
    }
    let Some((number, line)) = last else {
        return Err(WriterError::Corrupt { path: path.to_path_buf(), line: 0, detail: "empty file".to_string() });
    };
    let corrupt = |detail: &str| WriterError::Corrupt { path: path.to_path_buf(), line: number + 1, detail: detail.to_string() };
    let value: serde_json::Value = serde_json::from_str(&line).map_err(|_| corrupt("not JSON"))?;
    let seq = value["seq"].as_u64().ok_or_else(|| corrupt("no seq"))?;
    let tag = value["hmac"].as_str().ok_or_else(|| corrupt("no hmac"))?.to_string();
    Ok((seq, tag))
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Best effort: an orderly owner calls `sync` and sees its errors.
        let _ = self.sync();
    }
}
