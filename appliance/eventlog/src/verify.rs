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
    /// The highest file index a verified `retention` record says was removed: the files
    /// before the first one verified are accounted for up to there.
    pub removed_through_index: Option<u64>,
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
    NodeMismatch {
        expected: String,
        found: String,
    },
    FileMissing {
        index: u64,
    },
    DuplicateFile {
        index: u64,
    },
    HeaderMismatch(String),
    UnknownKey(String),
    BadHmac,
    SequenceGap {
        expected: u64,
        found: u64,
    },
    SequenceBack {
        expected: u64,
        found: u64,
    },
    ChainBroken,
    /// Verification by checkpoints (public key): the line or its checkpoint was refused.
    Checkpoint(crate::checkpoint::WindowReason),
    /// Verification by checkpoints: records `from..=to` are covered by no valid checkpoint.
    Uncovered {
        from: u64,
        to: u64,
    },
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
            FailureReason::Checkpoint(reason) => write!(f, "{reason}"),
            FailureReason::Uncovered { from, to } => write!(f, "records {from}..={to} are covered by no valid checkpoint (deleted or never signed)"),
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
///
/// Given a directory, the whole log is expected: when its first file is not file 0, the
/// files before it must have been removed by retention, which a verified `retention`
/// record says (`removed_through_index`); otherwise the first missing index is reported
/// as [`FailureReason::FileMissing`]. Given files, verification starts at the first.
pub fn verify_paths(paths: &[PathBuf], keys: &[LogKey]) -> Result<VerifySummary, Failure> {
    let fail = |path: &Path, line: usize, reason: FailureReason| Failure { path: path.to_path_buf(), line, reason };
    // A directory is the whole log: files missing before its first need a retention record.
    let whole_log = paths.iter().any(|path| path.is_dir());
    let logs = collect_files(paths)?;
    let node = logs[0].node.clone();
    let mut chain = Chain { node: Some(node.clone()), last: None };
    let mut counts = Counts { records: 0, first_seq: 0, removed_through_index: None };
    for log in &logs {
        verify_file(log, keys, &mut chain, &mut counts)?;
    }
    let first_index = logs[0].index;
    if whole_log && first_index > 0 && counts.removed_through_index.is_none_or(|through| through < first_index - 1) {
        // Older files are gone and no retention record says why.
        return Err(fail(&logs[0].path, 0, FailureReason::FileMissing { index: first_index - 1 }));
    }
    Ok(VerifySummary {
        node,
        files: logs.len(),
        records: counts.records,
        first_seq: counts.first_seq,
        last_seq: chain.last.map_or(0, |last| last.seq),
        from_genesis: first_index == 0,
        removed_through_index: counts.removed_through_index,
    })
}

/// What a log verified by its checkpoints holds ([`verify_paths_signed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedSummary {
    pub node: String,
    pub files: usize,
    /// Records covered by valid checkpoints (checkpoints not counted).
    pub records: u64,
    pub checkpoints: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// Verifies one node's log with checkpoint public keys only (no HMAC key): every line
/// must be covered by a checkpoint whose Ed25519 signature verifies (its seq, tag and
/// exact bytes), the checkpoints must follow one another without a gap, and nothing may
/// follow the last checkpoint. Files are taken as [`verify_paths`] takes them (in
/// file-index order, one node); the first failure is reported, at its file and line.
pub fn verify_paths_signed(paths: &[PathBuf], keys: &[crate::checkpoint::CheckpointPublicKey]) -> Result<SignedSummary, Failure> {
    use crate::checkpoint::WindowVerifier;
    let logs = collect_files(paths)?;
    let node = logs[0].node.clone();
    let mut verifier: WindowVerifier<(usize, usize)> = WindowVerifier::new(keys.to_vec(), node.clone(), None, usize::MAX, usize::MAX);
    let mut summary = SignedSummary { node: node.clone(), files: logs.len(), records: 0, checkpoints: 0, first_seq: 0, last_seq: 0 };
    let fail_at = |logs: &[LogFile], (file, line): (usize, usize), reason| Failure { path: logs[file].path.clone(), line, reason };
    for (file, log) in logs.iter().enumerate() {
        let mut bytes = Vec::new();
        std::fs::File::open(&log.path)
            .and_then(|mut opened| opened.read_to_end(&mut bytes))
            .map_err(|error| fail_at(&logs, (file, 0), FailureReason::Unreadable(error.to_string())))?;
        let text = String::from_utf8(bytes).map_err(|_| fail_at(&logs, (file, 0), FailureReason::NotARecord("not UTF-8".to_string())))?;
        let mut rest = text.as_str();
        let mut number = 0;
        while !rest.is_empty() {
            number += 1;
            let Some(end) = rest.find('\n') else {
                return Err(fail_at(&logs, (file, number), FailureReason::TruncatedLine));
            };
            let pushed = verifier.push(log.index, (file, number), &rest[..end]);
            rest = &rest[end + 1..];
            if let Some(gap) = pushed.gap {
                let at = pushed.decided.last().map_or((file, number), |decided| decided.token);
                return Err(fail_at(&logs, at, FailureReason::Uncovered { from: gap.from, to: gap.to }));
            }
            // A refused checkpoint is named at its own line (which of the lines it covers
            // changed, the digest cannot say).
            if let Some(refused) = pushed.decided.iter().find(|decided| decided.token == (file, number) && decided.verdict.is_err()) {
                let reason = refused.verdict.clone().expect_err("refused");
                return Err(fail_at(&logs, refused.token, FailureReason::Checkpoint(reason)));
            }
            for decided in pushed.decided {
                match decided.verdict {
                    Err(reason) => return Err(fail_at(&logs, decided.token, FailureReason::Checkpoint(reason))),
                    Ok(covered) if covered.is_checkpoint => summary.checkpoints += 1,
                    Ok(covered) => {
                        if summary.records == 0 {
                            summary.first_seq = covered.seq;
                        }
                        summary.records += 1;
                        summary.last_seq = covered.seq;
                    }
                }
            }
        }
    }
    if let Some(decided) = verifier.take_pending().into_iter().next() {
        return Err(fail_at(&logs, decided.token, FailureReason::Checkpoint(crate::checkpoint::WindowReason::Unsigned)));
    }
    if summary.checkpoints == 0 {
        return Err(fail_at(&logs, (0, 0), FailureReason::Checkpoint(crate::checkpoint::WindowReason::Unsigned)));
    }
    Ok(summary)
}

/// The log files given (directories: their `events-*.jsonl`), by index, of one node,
/// with no index missing or twice.
fn collect_files(paths: &[PathBuf]) -> Result<Vec<LogFile>, Failure> {
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
    Ok(logs)
}

/// The last verified record of a node's chain: where a [`ChainVerifier`] resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainPosition {
    /// Index of the file that holds the record (its header has been verified).
    pub file_index: u64,
    pub seq: u64,
    /// The record's `hmac`: the next record's `prev_tag`.
    pub tag: String,
}

/// A record whose HMAC verified under a known key for the node. After
/// [`ChainVerifier::check_line`] (or a successful [`ChainVerifier::continue_chain`]) it
/// also continues the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedRecord {
    pub node: String,
    pub seq: u64,
    pub prev_tag: String,
    /// The record's own `hmac`.
    pub tag: String,
    pub is_header: bool,
    /// The fields the checks read (the rest of the line is parsed for validity only; a
    /// consumer that wants every field parses the line itself, once, as it needs).
    pub head: RecordHead,
}

/// The fields of a record that verification reads. Deserialized without building the
/// whole record: the other fields (a hundred and more in an event) are skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct RecordHead {
    /// `type`: `event`, `header`, `recovery`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default)]
    pub prev_tag: Option<String>,
    #[serde(default)]
    pub key_id: Option<String>,
    #[serde(default)]
    pub ts_us: Option<u64>,
    /// Headers only.
    #[serde(default)]
    pub file_index: Option<u64>,
    #[serde(default)]
    pub prev_file_last_seq: Option<u64>,
    #[serde(default)]
    pub prev_file_last_tag: Option<String>,
}

/// Verifies one node's records one line at a time, as a tailer reads them: the same
/// checks as [`verify_paths`] (which is built on it), in the same order.
///
/// Invariant: the chain position moves only when a record is accepted (it is authentic,
/// its `seq` is the previous record's + 1, its `prev_tag` is the previous record's tag,
/// and a header is the first line of a later file and says where the previous file
/// ended). A rejected line leaves the verifier exactly as it was, so a line inserted into
/// the log (forged, replayed, another node's) does not stop the genuine lines after it.
#[derive(Debug)]
pub struct ChainVerifier {
    keys: Vec<LogKey>,
    chain: Chain,
}

impl ChainVerifier {
    /// A verifier at the start of a log: the first line must be a header; file index 0
    /// must start at seq 1 with the genesis tag, a later file (older files removed) is
    /// taken as the start. With `node` `None`, the first header names the node.
    pub fn new(keys: Vec<LogKey>, node: Option<String>) -> ChainVerifier {
        ChainVerifier { keys, chain: Chain { node, last: None } }
    }

    /// A verifier that continues after `position` (a checkpoint): the next line is
    /// either the next record of file `position.file_index` or the header of a later file.
    pub fn resume(keys: Vec<LogKey>, node: String, position: ChainPosition) -> ChainVerifier {
        ChainVerifier { keys, chain: Chain { node: Some(node), last: Some(position) } }
    }

    /// The last accepted record, if any.
    pub fn position(&self) -> Option<&ChainPosition> {
        self.chain.last.as_ref()
    }

    /// The node, once known.
    pub fn node(&self) -> Option<&str> {
        self.chain.node.as_deref()
    }

    /// Checks `line` (without its newline), read from file `file_index`, and accepts it.
    pub fn check_line(&mut self, file_index: u64, line: &str) -> Result<CheckedRecord, FailureReason> {
        let record = self.authenticate(line)?;
        self.continue_chain(file_index, &record)?;
        Ok(record)
    }

    /// The first half of [`ChainVerifier::check_line`]: parses the line and checks its
    /// HMAC (node in the tag, key by `key_id`). Changes nothing.
    pub fn authenticate(&self, line: &str) -> Result<CheckedRecord, FailureReason> {
        self.chain.authenticate(&self.keys, line)
    }

    /// The second half: checks that an authentic record continues the chain (sequence,
    /// `prev_tag`, header placement and contents) and, if so, accepts it.
    pub fn continue_chain(&mut self, file_index: u64, record: &CheckedRecord) -> Result<(), FailureReason> {
        self.chain.continue_chain(file_index, record)
    }

    /// Accepts an authentic header that does not continue the chain as a new starting
    /// point: only the header of a later file than the last accepted record's, with a
    /// higher `seq`. What lies between is unverified (the caller reports the gap).
    pub fn reanchor(&mut self, file_index: u64, record: &CheckedRecord) -> Result<(), FailureReason> {
        if !record.is_header {
            return Err(FailureReason::MissingHeader);
        }
        if record.head.file_index != Some(file_index) {
            return Err(FailureReason::HeaderMismatch(format!("the header is not the one of file index {file_index}")));
        }
        if let Some(last) = &self.chain.last {
            if file_index <= last.file_index || record.seq <= last.seq {
                return Err(FailureReason::SequenceBack { expected: last.seq.saturating_add(1), found: record.seq });
            }
        }
        self.chain.node.get_or_insert_with(|| record.node.clone());
        self.chain.last = Some(ChainPosition { file_index, seq: record.seq, tag: record.tag.clone() });
        Ok(())
    }
}

/// The chain state shared by [`verify_paths`] and [`ChainVerifier`].
#[derive(Debug)]
struct Chain {
    node: Option<String>,
    last: Option<ChainPosition>,
}

impl Chain {
    fn authenticate(&self, keys: &[LogKey], line: &str) -> Result<CheckedRecord, FailureReason> {
        if !line.trim_start().starts_with('{') {
            return Err(FailureReason::NotARecord("not a JSON object".to_string()));
        }
        let head: RecordHead = serde_json::from_str(line).map_err(|error| FailureReason::NotARecord(error.to_string()))?;
        let Some(at) = line.rfind(HMAC_FIELD) else {
            return Err(FailureReason::NotARecord("no hmac field".to_string()));
        };
        let written_tag = &line[at + HMAC_FIELD.len()..];
        if written_tag.len() != 66 || !written_tag.ends_with("\"}") {
            return Err(FailureReason::NotARecord("hmac is not the last field".to_string()));
        }
        let written_tag = &written_tag[..64];
        let key_id = head.key_id.as_deref().unwrap_or_default();
        let key = keys.iter().find(|key| key.id() == key_id).ok_or_else(|| FailureReason::UnknownKey(key_id.to_string()))?;
        let is_header = head.kind.as_deref() == Some("header");
        // Before the first header the node is not known: the header names it, and the
        // HMAC (which covers the node) confirms it.
        let node = match (&self.node, is_header) {
            (Some(node), _) => node.clone(),
            (None, true) => head.node.clone().unwrap_or_default(),
            (None, false) => return Err(FailureReason::MissingHeader),
        };
        if tag(key, &node, &line.as_bytes()[..at]) != written_tag {
            return Err(FailureReason::BadHmac);
        }
        let seq = head.seq.ok_or_else(|| FailureReason::NotARecord("no seq".to_string()))?;
        let prev_tag = head.prev_tag.clone().unwrap_or_default();
        Ok(CheckedRecord { node, seq, prev_tag, tag: written_tag.to_string(), is_header, head })
    }

    fn continue_chain(&mut self, file_index: u64, record: &CheckedRecord) -> Result<(), FailureReason> {
        // A line of a file other than the last accepted record's is that file's first line.
        let first_line = self.last.as_ref().is_none_or(|last| last.file_index != file_index);
        if first_line && !record.is_header {
            return Err(FailureReason::MissingHeader);
        }
        if !first_line && record.is_header {
            return Err(FailureReason::UnexpectedHeader);
        }
        if record.is_header {
            let named = record.head.node.as_deref().unwrap_or_default();
            if let Some(node) = &self.node {
                if named != node {
                    return Err(FailureReason::NodeMismatch { expected: node.clone(), found: named.to_string() });
                }
            }
            if record.head.file_index != Some(file_index) {
                return Err(FailureReason::HeaderMismatch(format!("the header is not the one of file index {file_index}")));
            }
        }
        match &self.last {
            None => {
                if file_index == 0 && (record.seq != 1 || record.prev_tag != GENESIS_TAG) {
                    return Err(FailureReason::HeaderMismatch("the node's first record must have seq 1 and the genesis tag".to_string()));
                }
            }
            Some(last) => {
                // Saturating: after an authentic record with seq u64::MAX (only a key holder
                // can write one) nothing continues the chain (an overflow, found with fuzz/).
                let expected = last.seq.saturating_add(1);
                if record.seq <= last.seq {
                    return Err(FailureReason::SequenceBack { expected, found: record.seq });
                }
                if record.seq > expected {
                    return Err(FailureReason::SequenceGap { expected, found: record.seq });
                }
                if record.prev_tag != last.tag {
                    return Err(FailureReason::ChainBroken);
                }
                if record.is_header {
                    if file_index < last.file_index {
                        return Err(FailureReason::HeaderMismatch(format!("file index {file_index} comes after file index {}", last.file_index)));
                    }
                    let prev_seq = record.head.prev_file_last_seq;
                    let prev_tag = record.head.prev_file_last_tag.as_deref();
                    if prev_seq != Some(last.seq) || prev_tag != Some(last.tag.as_str()) {
                        return Err(FailureReason::HeaderMismatch("the previous file does not end where this header says".to_string()));
                    }
                }
            }
        }
        self.node.get_or_insert_with(|| record.node.clone());
        self.last = Some(ChainPosition { file_index, seq: record.seq, tag: record.tag.clone() });
        Ok(())
    }
}

struct Counts {
    records: u64,
    first_seq: u64,
    /// The highest `removed_through_index` of a verified `retention` record.
    removed_through_index: Option<u64>,
}

/// What the writer found in a node's newest file before continuing its chain
/// ([`check_newest_file`]).
#[derive(Debug, Default)]
pub(crate) struct NewestFile {
    /// The last record that continued the chain from the file's header, if any.
    pub last_verified: Option<(u64, String)>,
    /// The authentic record (HMAC under the writer's key, with its node) with the highest
    /// seq, if any: no record the writer ever wrote has a higher one.
    pub highest_authentic: Option<(u64, String)>,
    /// The highest `seq` on any complete line, authentic or not.
    pub highest_written_seq: Option<u64>,
    /// The first line that did not verify, and why (`None`: the whole file verified).
    pub failure: Option<Failure>,
}

/// Verifies a node's newest file (index `file_index`) line by line under `key`, from its
/// header to its last complete line, as `log verify` would (the first failure is kept),
/// and notes the last record on the chain and the highest seq written: the writer
/// continues the chain from the last line only when the whole file verified.
pub(crate) fn check_newest_file(path: &Path, file_index: u64, node: &str, key: &LogKey) -> std::io::Result<NewestFile> {
    let keys = std::slice::from_ref(key);
    let mut chain = Chain { node: Some(node.to_string()), last: None };
    let mut found = NewestFile::default();
    let mut reader = BufReader::new(std::fs::File::open(path)?);
    let mut bytes = Vec::new();
    let mut number = 0;
    loop {
        bytes.clear();
        if reader.read_until(b'\n', &mut bytes)? == 0 {
            break;
        }
        number += 1;
        let line = match bytes.strip_suffix(b"\n").map(std::str::from_utf8) {
            Some(Ok(line)) => line,
            Some(Err(_)) => {
                found.fail(path, number, FailureReason::NotARecord("not UTF-8".to_string()));
                continue;
            }
            None => {
                found.fail(path, number, FailureReason::TruncatedLine);
                break;
            }
        };
        if let Ok(head) = serde_json::from_str::<RecordHead>(line) {
            found.highest_written_seq = found.highest_written_seq.max(head.seq);
        }
        let record = match chain.authenticate(keys, line) {
            Ok(record) => record,
            Err(reason) => {
                found.fail(path, number, reason);
                continue;
            }
        };
        if found.highest_authentic.as_ref().is_none_or(|(seq, _)| record.seq > *seq) {
            found.highest_authentic = Some((record.seq, record.tag.clone()));
        }
        // As in the ingest task, a rejected line leaves the chain where it was: genuine
        // lines after an inserted one still verify.
        match chain.continue_chain(file_index, &record) {
            Ok(()) => found.last_verified = Some((record.seq, record.tag.clone())),
            Err(reason) => found.fail(path, number, reason),
        }
    }
    if number == 0 {
        found.fail(path, 0, FailureReason::MissingHeader);
    }
    Ok(found)
}

impl NewestFile {
    /// Keeps the first failure only.
    fn fail(&mut self, path: &Path, line: usize, reason: FailureReason) {
        if self.failure.is_none() {
            self.failure = Some(Failure { path: path.to_path_buf(), line, reason });
        }
    }
}

/// True when `line` is an authentic record of `node` under `key` (HMAC only).
pub(crate) fn is_authentic(line: &str, node: &str, key: &LogKey) -> bool {
    let chain = Chain { node: Some(node.to_string()), last: None };
    chain.authenticate(std::slice::from_ref(key), line).is_ok()
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

fn verify_file(log: &LogFile, keys: &[LogKey], chain: &mut Chain, counts: &mut Counts) -> Result<(), Failure> {
    let fail = |line, reason| Failure { path: log.path.clone(), line, reason };
    let mut bytes = Vec::new();
    std::fs::File::open(&log.path).and_then(|mut file| file.read_to_end(&mut bytes)).map_err(|error| fail(0, FailureReason::Unreadable(error.to_string())))?;
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
        let record = chain.authenticate(keys, line).map_err(|reason| fail(number, reason))?;
        chain.continue_chain(log.index, &record).map_err(|reason| fail(number, reason))?;
        if counts.records == 0 {
            counts.first_seq = record.seq;
        }
        counts.records += 1;
        if record.head.kind.as_deref() == Some("retention") {
            let removed = serde_json::from_str::<serde_json::Value>(line).ok().and_then(|value| value["removed_through_index"].as_u64());
            counts.removed_through_index = counts.removed_through_index.max(removed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Sealer;

    /// Sealed lines of node `n` under key 7: a header for file `index`, then `events` events.
    fn file_lines(sealer: &mut Sealer, index: u64, events: usize) -> Vec<String> {
        let mut header = serde_json::Map::new();
        header.insert("type".to_string(), "header".into());
        header.insert("schema".to_string(), SCHEMA.into());
        header.insert("node".to_string(), "n".into());
        header.insert("file_index".to_string(), index.into());
        header.insert("prev_file_last_seq".to_string(), sealer.last_seq().into());
        header.insert("prev_file_last_tag".to_string(), sealer.last_tag().into());
        let mut out = Vec::new();
        sealer.seal_record(&header, &mut out).expect("seal");
        let mut event = serde_json::Map::new();
        event.insert("type".to_string(), "event".into());
        for _ in 0..events {
            sealer.seal(&event, &mut out).expect("seal");
        }
        String::from_utf8(out).expect("UTF-8").lines().map(str::to_string).collect()
    }

    fn keys() -> Vec<LogKey> {
        vec![LogKey::from_bytes([7; 32])]
    }

    #[test]
    fn lines_are_checked_one_at_a_time_and_a_rejected_line_moves_nothing() {
        let mut sealer = Sealer::new("n", LogKey::from_bytes([7; 32]), 0, GENESIS_TAG);
        let first = file_lines(&mut sealer, 0, 3);
        let second = file_lines(&mut sealer, 1, 2);
        let mut verifier = ChainVerifier::new(keys(), None);
        assert_eq!(verifier.check_line(0, &first[0]).expect("header").seq, 1);
        assert_eq!(verifier.node(), Some("n"), "the first header names the node");
        verifier.check_line(0, &first[1]).expect("event");
        let before = verifier.position().cloned();
        assert_eq!(verifier.check_line(0, &first[3]), Err(FailureReason::SequenceGap { expected: 3, found: 4 }));
        assert_eq!(verifier.check_line(0, &first[1]), Err(FailureReason::SequenceBack { expected: 3, found: 2 }));
        assert_eq!(verifier.check_line(0, &first[2].replace("event", "evenT")), Err(FailureReason::BadHmac));
        assert_eq!(verifier.position().cloned(), before, "rejections leave the chain where it was");
        verifier.check_line(0, &first[2]).expect("the genuine next line");
        verifier.check_line(0, &first[3]).expect("event");
        assert_eq!(verifier.check_line(0, &second[1]), Err(FailureReason::SequenceGap { expected: 5, found: 6 }), "the next file's header was skipped");
        verifier.check_line(1, &second[0]).expect("the next file's header");

        // Resuming from a checkpoint continues exactly there.
        let position = verifier.position().cloned().expect("position");
        let mut resumed = ChainVerifier::resume(keys(), "n".to_string(), position);
        resumed.check_line(1, &second[1]).expect("resumed");
        assert_eq!(resumed.check_line(1, &second[0]), Err(FailureReason::UnexpectedHeader));
    }

    #[test]
    fn after_a_break_only_a_later_authentic_header_reanchors() {
        let mut sealer = Sealer::new("n", LogKey::from_bytes([7; 32]), 0, GENESIS_TAG);
        let first = file_lines(&mut sealer, 0, 3);
        let second = file_lines(&mut sealer, 1, 1);
        let mut verifier = ChainVerifier::new(keys(), Some("n".to_string()));
        verifier.check_line(0, &first[0]).expect("header");
        verifier.check_line(0, &first[1]).expect("event");
        // Line 2 is lost: the rest of the file does not chain.
        assert!(verifier.check_line(0, &first[3]).is_err());
        let header = verifier.authenticate(&second[0]).expect("authentic");
        assert!(matches!(verifier.continue_chain(1, &header), Err(FailureReason::SequenceGap { .. })));
        let event = verifier.authenticate(&first[3]).expect("authentic");
        assert_eq!(verifier.reanchor(0, &event), Err(FailureReason::MissingHeader), "only headers");
        assert!(verifier.reanchor(0, &header).is_err(), "the header's own file index only");
        verifier.reanchor(1, &header).expect("re-anchored");
        verifier.check_line(1, &second[1]).expect("the file after the break verifies");
        let old_header = verifier.authenticate(&first[0]).expect("authentic");
        assert!(verifier.reanchor(2, &old_header).is_err(), "an old header does not re-anchor");
    }
}
