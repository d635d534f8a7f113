//! Verification: headers, chain, sequence and HMACs across a node's rotated files.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::chain::{tag, GENESIS_TAG, HMAC_FIELD, SCHEMA};
use crate::key::LogKey;

/// What a verified log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySummary {
    pub node: String,
    pub files: usize,
    pub records: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// False when the first file given is not the node's first (older files not given):
    /// the chain is verified from there on.
    pub from_genesis: bool,
}

/// Why verification failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureReason {
    NoFiles,
    Unreadable(String),
    NotARecord(String),
    TruncatedLine,
    MissingHeader,
    UnexpectedHeader,
    NodeMismatch { expected: String, found: String },
    FileMissing { index: u64 },
    DuplicateFile { index: u64 },
    HeaderMismatch(String),
    UnknownKey(String),
    BadHmac,
    SequenceGap { expected: u64, found: u64 },
    SequenceBack { expected: u64, found: u64 },
    ChainBroken,
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureReason::NoFiles => write!(f, "no log files found"),
            FailureReason::Unreadable(error) => write!(f, "cannot read the file: {error}"),
            FailureReason::NotARecord(detail) => write!(f, "not a log record: {detail}"),
            FailureReason::TruncatedLine => write!(f, "truncated: the last line is incomplete"),
            FailureReason::MissingHeader => write!(f, "the file does not start with a header record"),
            FailureReason::UnexpectedHeader => write!(f, "a header record in the middle of a file"),
            FailureReason::NodeMismatch { expected, found } => {
                write!(f, "record of node `{found}` among node `{expected}`'s files (files of two nodes spliced)")
            }
            FailureReason::FileMissing { index } => write!(f, "file index {index} is missing (a rotated file was dropped)"),
            FailureReason::DuplicateFile { index } => write!(f, "file index {index} appears twice"),
            FailureReason::HeaderMismatch(detail) => write!(f, "header does not continue the previous file: {detail}"),
            FailureReason::UnknownKey(id) => write!(f, "signed with unknown key id {id} (re-signed with another key?)"),
            FailureReason::BadHmac => write!(f, "HMAC mismatch: the line was altered or forged"),
            FailureReason::SequenceGap { expected, found } => {
                write!(f, "sequence gap: expected {expected}, found {found} ({} records deleted)", found - expected)
            }
            FailureReason::SequenceBack { expected, found } => {
                write!(f, "sequence goes back: expected {expected}, found {found} (reordered, duplicated or replayed)")
            }
            FailureReason::ChainBroken => write!(f, "chain broken: prev_tag is not the previous record's tag"),
        }
    }
}

/// Where verification failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub path: PathBuf,
    /// 1-based; 0 for problems of the file as a whole.
    pub line: usize,
    pub reason: FailureReason,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.reason)
        } else {
            write!(f, "{}:{}: {}", self.path.display(), self.line, self.reason)
        }
    }
}

struct LogFile {
    path: PathBuf,
    node: String,
    index: u64,
}

/// Verifies one node's log: files and directories (their `events-*.jsonl`), checked in
/// file-index order against `keys`.
pub fn verify_paths(paths: &[PathBuf], keys: &[LogKey]) -> Result<VerifySummary, Failure> {
    let fail = |path: &Path, line: usize, reason: FailureReason| Failure { path: path.to_path_buf(), line, reason };
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|error| fail(path, 0, FailureReason::Unreadable(error.to_string())))?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("events-") && name.ends_with(".jsonl") {
                    files.push(entry.path());
                }
            }
        } else {
            files.push(path.clone());
        }
    }
    if files.is_empty() {
        return Err(fail(paths.first().map_or(Path::new("."), |path| path.as_path()), 0, FailureReason::NoFiles));
    }
    let mut logs = Vec::new();
    for path in files {
        let (node, index) = read_header_identity(&path)?;
        logs.push(LogFile { path, node, index });
    }
    logs.sort_by_key(|log| log.index);
    let node = logs[0].node.clone();
    for pair in logs.windows(2) {
        if pair[1].node != node {
            return Err(fail(&pair[1].path, 1, FailureReason::NodeMismatch { expected: node.clone(), found: pair[1].node.clone() }));
        }
        if pair[1].index == pair[0].index {
            return Err(fail(&pair[1].path, 0, FailureReason::DuplicateFile { index: pair[1].index }));
        }
        if pair[1].index != pair[0].index + 1 {
            return Err(fail(&pair[1].path, 0, FailureReason::FileMissing { index: pair[0].index + 1 }));
        }
    }
    let mut state = ChainState { last: None, records: 0, first_seq: 0 };
    for (position, log) in logs.iter().enumerate() {
        verify_file(log, position == 0, &node, keys, &mut state)?;
    }
    Ok(VerifySummary {
        node,
        files: logs.len(),
        records: state.records,
        first_seq: state.first_seq,
        last_seq: state.last.map_or(0, |(seq, _)| seq),
        from_genesis: logs[0].index == 0,
    })
}

struct ChainState {
    last: Option<(u64, String)>,
    records: u64,
    first_seq: u64,
}

fn read_header_identity(path: &Path) -> Result<(String, u64), Failure> {
    let fail = |line, reason| Failure { path: path.to_path_buf(), line, reason };
    let file = std::fs::File::open(path).map_err(|error| fail(0, FailureReason::Unreadable(error.to_string())))?;
    let mut first = String::new();
    BufReader::new(file).read_line(&mut first).map_err(|error| fail(1, FailureReason::Unreadable(error.to_string())))?;
    let value: serde_json::Value = serde_json::from_str(first.trim_end()).map_err(|_| fail(1, FailureReason::MissingHeader))?;
    if value["type"] != "header" || value["schema"] != SCHEMA {
        return Err(fail(1, FailureReason::MissingHeader));
    }
    let node = value["node"].as_str().ok_or(fail(1, FailureReason::MissingHeader))?.to_string();
    let index = value["file_index"].as_u64().ok_or(fail(1, FailureReason::MissingHeader))?;
    Ok((node, index))
}

fn verify_file(log: &LogFile, first_file: bool, node: &str, keys: &[LogKey], state: &mut ChainState) -> Result<(), Failure> {
    let fail = |line, reason| Failure { path: log.path.clone(), line, reason };
    let mut bytes = Vec::new();
    std::fs::File::open(&log.path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(|error| fail(0, FailureReason::Unreadable(error.to_string())))?;
    let text = String::from_utf8(bytes).map_err(|_| fail(0, FailureReason::NotARecord("not UTF-8".to_string())))?;
    let mut rest = text.as_str();
    let mut number = 0;
    while !rest.is_empty() {
        number += 1;
        let Some(end) = rest.find('\n') else {
            return Err(fail(number, FailureReason::TruncatedLine));
        };
        let line = &rest[..end];
        rest = &rest[end + 1..];
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|error| fail(number, FailureReason::NotARecord(error.to_string())))?;
        let Some(at) = line.rfind(HMAC_FIELD) else {
            return Err(fail(number, FailureReason::NotARecord("no hmac field".to_string())));
        };
        let written_tag = &line[at + HMAC_FIELD.len()..];
        if written_tag.len() != 66 || !written_tag.ends_with("\"}") {
            return Err(fail(number, FailureReason::NotARecord("hmac is not the last field".to_string())));
        }
        let written_tag = &written_tag[..64];
        let key_id = value["key_id"].as_str().unwrap_or_default();
        let key = keys.iter().find(|key| key.id() == key_id).ok_or_else(|| fail(number, FailureReason::UnknownKey(key_id.to_string())))?;
        if tag(key, node, &line.as_bytes()[..at]) != written_tag {
            return Err(fail(number, FailureReason::BadHmac));
        }
        let is_header = value["type"] == "header";
        if number == 1 && !is_header {
            return Err(fail(number, FailureReason::MissingHeader));
        }
        if number > 1 && is_header {
            return Err(fail(number, FailureReason::UnexpectedHeader));
        }
        let seq = value["seq"].as_u64().ok_or_else(|| fail(number, FailureReason::NotARecord("no seq".to_string())))?;
        let prev_tag = value["prev_tag"].as_str().unwrap_or_default();
        match &state.last {
            None => {
                if first_file && log.index == 0 && (seq != 1 || prev_tag != GENESIS_TAG) {
                    return Err(fail(number, FailureReason::HeaderMismatch("the node's first record must have seq 1 and the genesis tag".to_string())));
                }
                state.first_seq = seq;
            }
            Some((last_seq, last_tag)) => {
                if seq <= *last_seq {
                    return Err(fail(number, FailureReason::SequenceBack { expected: last_seq + 1, found: seq }));
                }
                if seq > last_seq + 1 {
                    return Err(fail(number, FailureReason::SequenceGap { expected: last_seq + 1, found: seq }));
                }
                if prev_tag != last_tag {
                    return Err(fail(number, FailureReason::ChainBroken));
                }
                if is_header && (value["prev_file_last_seq"].as_u64() != Some(*last_seq) || value["prev_file_last_tag"] != last_tag.as_str()) {
                    return Err(fail(number, FailureReason::HeaderMismatch("the previous file does not end where this header says".to_string())));
                }
            }
        }
        state.last = Some((seq, written_tag.to_string()));
        state.records += 1;
    }
    Ok(())
}
