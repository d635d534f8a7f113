//! Ingest, first part: follows a node's signed event log, verifies every record and hands
//! on only verified ones, in order, once; everything else goes to a quarantine file.
//!
//! Verify-only (ADR 0007): this crate holds the log's checkpoint **public** keys, never
//! the HMAC key, so nothing it runs can write a record that verifies. Each line passes,
//! in this order: the line cap and UTF-8; it waits ([`WindowVerifier`]) until a signed
//! checkpoint covers it: the checkpoint's Ed25519 signature (known key by
//! `signing_key_id`, the node in the signed message), the covered seq range and tags,
//! the SHA-256 over the covered lines' exact bytes, each header first in its own file;
//! then the nonce store (the seq must be above the node's high-water mark: replays and
//! reorderings are refused, also across restarts) and the age window. The rules after a
//! rejection, and why, are in `docs/event-log.md` ("Ingest (verification and tailing)").
//!
//! Invariant: this crate never writes to the log directory (the ingest task may only
//! read it); its checkpoint, nonce store and quarantine live in its own state directory.
//! Invariant: a record is handed on only after a valid signed checkpoint covered it and
//! every check passed; a rejected line or checkpoint never moves the anchor.

mod quarantine;
mod state;
mod tail;

use std::collections::BTreeMap;
use std::path::PathBuf;

use mld_eventlog::{CheckpointPublicKey, FailureReason, WindowReason, WindowVerifier};

pub use quarantine::{QuarantineEntry, QUARANTINE_FILE, QUARANTINE_PREVIOUS_FILE};
pub use state::{Checkpoint, NonceRejection, NonceStore, STATE_FILE};

use crate::quarantine::Quarantine;
use crate::state::State;
use crate::tail::{Line, LineContent, Tail};

/// The checkpoint saved in `state_dir`, without opening the log (`None` when there is no
/// state file yet).
pub fn read_checkpoint(state_dir: &std::path::Path) -> Result<Option<Checkpoint>, IngestError> {
    Ok(State::load(&state_dir.join(STATE_FILE))?.and_then(|state| state.checkpoint))
}

/// Errors of the ingest task itself (rejected lines are not errors: they are quarantined).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("failed to {operation} `{path}`")]
    Io { operation: &'static str, path: PathBuf, source: std::io::Error },
    #[error("ingest state file `{path}` is unusable: {detail}")]
    State { path: PathBuf, detail: String },
    #[error("ingest state file `{path}` is for node `{found}`, not `{expected}`")]
    WrongNode { path: PathBuf, expected: String, found: String },
    #[error("ingest configuration: {0}")]
    Config(&'static str),
}

/// What the ingest foundation needs.
#[derive(Debug)]
pub struct IngestConfig {
    /// The log directory (read only).
    pub log_dir: PathBuf,
    /// The ingest task's own directory: state file and quarantine.
    pub state_dir: PathBuf,
    /// The node whose log is followed (in every signed checkpoint).
    pub node: String,
    /// The checkpoint public keys whose signatures are accepted (several during a key
    /// change), by `signing_key_id`. Never the HMAC key (ADR 0007).
    pub public_keys: Vec<CheckpointPublicKey>,
    /// At most this many lines (and bytes) wait for their checkpoint; beyond, the oldest
    /// is quarantined as `unsigned` (the writer signs every few hundred records).
    pub max_pending_lines: usize,
    pub max_pending_bytes: usize,
    /// Longest line accepted, bytes (records are a few KiB); longer lines are quarantined.
    pub max_line_bytes: usize,
    /// At most this many lines are read per [`Ingest::poll`]; the state is saved after each.
    pub max_batch_lines: usize,
    /// How many recently accepted seqs per node the nonce store keeps.
    pub recent_seqs: usize,
    /// Records whose `ts_us` is more than this many µs older than the newest `ts_us`
    /// accepted from the node are refused.
    pub max_age_us: u64,
    /// How many bytes of a rejected line the quarantine keeps.
    pub quarantine_line_bytes: usize,
    /// The quarantine file's bound: beyond it the file is rotated (one previous kept).
    pub max_quarantine_bytes: u64,
}

impl IngestConfig {
    /// Defaults for everything but the directories, node and keys.
    pub fn new(log_dir: PathBuf, state_dir: PathBuf, node: String, public_keys: Vec<CheckpointPublicKey>) -> IngestConfig {
        IngestConfig {
            log_dir,
            state_dir,
            node,
            public_keys,
            max_pending_lines: 65_536,
            max_pending_bytes: 64 << 20,
            max_line_bytes: 1 << 20,
            max_batch_lines: 4096,
            recent_seqs: 4096,
            max_age_us: 3600 * 1_000_000,
            quarantine_line_bytes: 4096,
            max_quarantine_bytes: 64 << 20,
        }
    }
}

/// A record that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedRecord {
    pub node: String,
    pub seq: u64,
    /// The log file and the byte offset of the line in it.
    pub file: PathBuf,
    pub offset: u64,
    /// The record's `type` (`event`, `recovery`).
    pub kind: String,
    pub ts_us: Option<u64>,
    /// The verified line (without its newline). [`VerifiedRecord::fields`] parses it.
    pub line: String,
}

impl VerifiedRecord {
    /// Every field of the record, integrity fields included.
    pub fn fields(&self) -> serde_json::Map<String, serde_json::Value> {
        // The line was parsed as a JSON object when it was verified.
        serde_json::from_str(&self.line).unwrap_or_default()
    }
}

/// What one [`Ingest::poll`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollStats {
    /// Lines read (every one is delivered, a header, or quarantined).
    pub lines: u64,
    pub delivered: u64,
    /// Verified headers (they start files and carry no event: not delivered).
    pub headers: u64,
    pub quarantined: u64,
    /// Signed checkpoints accepted (each hands on the records it covers).
    pub checkpoints: u64,
    /// Times an accepted checkpoint did not continue the previous one (records between
    /// were lost or never signed: put on record as `uncovered`).
    pub reanchored: u64,
}

/// Why a line was quarantined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// A check of the log format (a cut line).
    Log(FailureReason),
    /// No valid signed checkpoint covers the line, or the checkpoint was refused.
    Window(WindowReason),
    /// An accepted checkpoint does not continue the previous one: records `from..=to`
    /// were never verified (no line: a record of the gap).
    Uncovered {
        from: u64,
        to: u64,
    },
    /// Refused by the nonce store.
    Nonce(NonceRejection),
    /// Older than the age window: `ts_us` is more than `max_age_us` before `newest_ts_us`.
    TooOld {
        ts_us: u64,
        newest_ts_us: u64,
    },
    /// Longer than `max_line_bytes`.
    LineTooLong,
    NotUtf8,
    /// The file being read was removed or cut short below the checkpoint (what it held
    /// past it is lost); reading went on at the next file.
    FileGone(String),
}

impl RejectReason {
    /// A short stable name, for counters and the quarantine's `reason`.
    pub fn label(&self) -> &'static str {
        match self {
            RejectReason::Log(reason) => match reason {
                FailureReason::NoFiles => "no_files",
                FailureReason::Unreadable(_) => "unreadable",
                FailureReason::NotARecord(_) => "not_a_record",
                FailureReason::TruncatedLine => "truncated_line",
                FailureReason::MissingHeader => "missing_header",
                FailureReason::UnexpectedHeader => "unexpected_header",
                FailureReason::NodeMismatch { .. } => "node_mismatch",
                FailureReason::FileMissing { .. } => "file_missing",
                FailureReason::DuplicateFile { .. } => "duplicate_file",
                FailureReason::HeaderMismatch(_) => "header_mismatch",
                FailureReason::UnknownKey(_) => "unknown_key",
                FailureReason::BadHmac => "bad_hmac",
                FailureReason::SequenceGap { .. } => "sequence_gap",
                FailureReason::SequenceBack { .. } => "sequence_back",
                FailureReason::ChainBroken => "chain_broken",
                FailureReason::Checkpoint(reason) => reason.label(),
                FailureReason::Uncovered { .. } => "uncovered",
            },
            RejectReason::Window(reason) => reason.label(),
            RejectReason::Uncovered { .. } => "uncovered",
            RejectReason::Nonce(NonceRejection::Replay { .. }) => "replay",
            RejectReason::Nonce(NonceRejection::Stale { .. }) => "stale",
            RejectReason::TooOld { .. } => "too_old",
            RejectReason::LineTooLong => "line_too_long",
            RejectReason::NotUtf8 => "not_utf8",
            RejectReason::FileGone(_) => "file_gone",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectReason::Log(reason) => write!(f, "{reason}"),
            RejectReason::Window(reason) => write!(f, "{reason}"),
            RejectReason::Uncovered { from, to } => {
                write!(f, "records {from}..={to} are covered by no accepted checkpoint (lost, or the writer started a new anchor)")
            }
            RejectReason::Nonce(NonceRejection::Replay { seq }) => write!(f, "replay: seq {seq} was already accepted"),
            RejectReason::Nonce(NonceRejection::Stale { seq, high_water }) => {
                write!(f, "seq {seq} is not above the high-water mark {high_water} (replayed or reordered)")
            }
            RejectReason::TooOld { ts_us, newest_ts_us } => {
                write!(f, "too old: ts_us {ts_us} is {} µs before the newest accepted ({newest_ts_us})", newest_ts_us - ts_us)
            }
            RejectReason::LineTooLong => write!(f, "line longer than the cap"),
            RejectReason::NotUtf8 => write!(f, "line is not UTF-8"),
            RejectReason::FileGone(what) => write!(f, "{what}; went on at the next file"),
        }
    }
}

/// Where a line waiting for its checkpoint was read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LineRef {
    file_index: u64,
    path: PathBuf,
    offset: u64,
}

/// The ingest foundation for one node's log: tail, verify, checkpoint, quarantine.
///
/// Delivery: records reach the callback in seq order, each once while the process runs;
/// the state (checkpoint and nonce store) is saved after each poll, so after a restart
/// reading resumes exactly after the last saved poll. A crash between a callback and the
/// save that follows it delivers that poll's records again (at least once): a consumer
/// that must not see them twice keeps the last seq it stored and skips up to it.
#[derive(Debug)]
pub struct Ingest {
    config: IngestConfig,
    verifier: WindowVerifier<LineRef>,
    tail: Tail,
    state: State,
    state_path: PathBuf,
    quarantine: Quarantine,
    counters: BTreeMap<&'static str, u64>,
    /// Lines were read since the last commit.
    dirty: bool,
}

impl Ingest {
    /// Opens the state directory (created if missing) and resumes from its checkpoint,
    /// or starts at the node's lowest-numbered log file.
    pub fn open(mut config: IngestConfig) -> Result<Ingest, IngestError> {
        if config.public_keys.is_empty() {
            return Err(IngestError::Config("no checkpoint public keys"));
        }
        if config.max_line_bytes == 0 || config.max_batch_lines == 0 || config.recent_seqs == 0 {
            return Err(IngestError::Config("max_line_bytes, max_batch_lines and recent_seqs must be above 0"));
        }
        std::fs::create_dir_all(&config.state_dir).map_err(|source| IngestError::Io {
            operation: "create state directory",
            path: config.state_dir.clone(),
            source,
        })?;
        let state_path = config.state_dir.join(STATE_FILE);
        let mut state = State::load(&state_path)?.unwrap_or_else(|| State::new(config.recent_seqs));
        state.nonces.set_capacity(config.recent_seqs);
        let keys = std::mem::take(&mut config.public_keys);
        let (anchor, position) = match &state.checkpoint {
            Some(checkpoint) => {
                if checkpoint.node != config.node {
                    return Err(IngestError::WrongNode { path: state_path, expected: config.node.clone(), found: checkpoint.node.clone() });
                }
                (checkpoint.anchor.clone(), Some((checkpoint.read_file_index, checkpoint.offset)))
            }
            None => (None, None),
        };
        let verifier = WindowVerifier::new(keys, config.node.clone(), anchor, config.max_pending_lines, config.max_pending_bytes);
        let tail = Tail::new(config.log_dir.clone(), &config.node, position, config.max_line_bytes);
        let quarantine = Quarantine::new(config.state_dir.join(QUARANTINE_FILE), config.quarantine_line_bytes, config.max_quarantine_bytes);
        Ok(Ingest { config, verifier, tail, state, state_path, quarantine, counters: BTreeMap::new(), dirty: false })
    }

    /// Reads what is there (at most `max_batch_lines` lines), hands every verified record
    /// to `deliver` in order, quarantines the rest, then saves the state. Returns at once
    /// when there is nothing new; call it again on an interval.
    pub fn poll(&mut self, deliver: &mut impl FnMut(VerifiedRecord)) -> Result<PollStats, IngestError> {
        let stats = self.read(deliver)?;
        if stats.lines > 0 {
            self.commit()?;
        }
        Ok(stats)
    }

    /// [`Ingest::poll`] without saving: the position moves in memory only, until
    /// [`Ingest::commit`]. A consumer that keeps its own durable copy (the similarity
    /// index) commits after it saved that copy, so a crash between the two re-delivers
    /// records (which it skips by seq) and never loses one. Lines quarantined before a
    /// crash are quarantined again after it (the quarantine is at least once).
    pub fn read(&mut self, deliver: &mut impl FnMut(VerifiedRecord)) -> Result<PollStats, IngestError> {
        let mut lines = Vec::new();
        self.tail.read(self.config.max_batch_lines, &mut |line| lines.push(line))?;
        let mut stats = PollStats::default();
        for line in lines {
            stats.lines += 1;
            self.process(line, &mut stats, deliver)?;
        }
        if stats.lines > 0 {
            self.dirty = true;
        }
        Ok(stats)
    }

    /// Saves the position and the nonce store (atomically, one file) as of the last
    /// [`Ingest::read`]; the quarantine is made durable first. Nothing to do when nothing
    /// was read since the last commit.
    pub fn commit(&mut self) -> Result<(), IngestError> {
        if !self.dirty {
            return Ok(());
        }
        // The quarantine is durable before the checkpoint moves past its lines.
        self.quarantine.sync()?;
        // Lines still waiting for their checkpoint are read again after a restart.
        let position = match self.verifier.oldest_pending() {
            Some(oldest) => Some((oldest.file_index, oldest.offset)),
            None => self.tail.position(),
        };
        self.state.checkpoint = position.map(|(read_file_index, offset)| {
            let anchor = self.verifier.anchor().cloned();
            Checkpoint { node: self.config.node.clone(), read_file_index, offset, last_seq: anchor.as_ref().map(|anchor| anchor.seq), anchor }
        });
        self.state.save(&self.state_path)?;
        self.dirty = false;
        Ok(())
    }

    /// Forgets the saved position and nonce store in `state_dir`, so that the next
    /// [`Ingest::open`] verifies the log again from its first file (to rebuild what was
    /// made from it). The quarantine is kept.
    pub fn forget_state(state_dir: &std::path::Path) -> Result<(), IngestError> {
        let path = state_dir.join(STATE_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(IngestError::Io { operation: "remove", path, source }),
        }
    }

    /// Rejected lines by reason ([`RejectReason::label`]) since this `Ingest` was opened.
    pub fn rejected_by_reason(&self) -> &BTreeMap<&'static str, u64> {
        &self.counters
    }

    /// The checkpoint as last saved (or loaded).
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.state.checkpoint.as_ref()
    }

    /// The most lines one read takes: a read that took fewer reached the end of the log.
    pub fn max_batch_lines(&self) -> usize {
        self.config.max_batch_lines
    }

    /// The seq of the last checkpoint accepted (read, maybe not committed): every record
    /// up to it was delivered or quarantined.
    pub fn last_seq(&self) -> Option<u64> {
        self.verifier.anchor().map(|anchor| anchor.seq)
    }

    /// Lines read that wait for their signed checkpoint.
    pub fn pending_lines(&self) -> usize {
        self.verifier.pending_lines()
    }

    /// The nonce store.
    pub fn nonces(&self) -> &NonceStore {
        &self.state.nonces
    }

    fn process(&mut self, line: Line, stats: &mut PollStats, deliver: &mut impl FnMut(VerifiedRecord)) -> Result<(), IngestError> {
        let text = match &line.content {
            LineContent::Text(text) => text.as_str(),
            LineContent::NotUtf8(text) => return self.reject(&line, text, RejectReason::NotUtf8, stats),
            LineContent::TooLong(text) => return self.reject(&line, text, RejectReason::LineTooLong, stats),
            LineContent::Truncated(text) => return self.reject(&line, text, RejectReason::Log(FailureReason::TruncatedLine), stats),
            LineContent::Gone(what) => return self.reject(&line, "", RejectReason::FileGone(what.clone()), stats),
        };
        // Nothing is decided before a signed checkpoint covers it.
        let token = LineRef { file_index: line.file_index, path: line.path.clone(), offset: line.offset };
        let pushed = self.verifier.push(line.file_index, token, text);
        if let Some(gap) = pushed.gap {
            stats.reanchored += 1;
            self.reject(&line, "", RejectReason::Uncovered { from: gap.from, to: gap.to }, stats)?;
        }
        for decided in pushed.decided {
            let at = Line { file_index: decided.file_index, path: decided.token.path, offset: decided.token.offset, content: LineContent::Text(String::new()) };
            let covered = match decided.verdict {
                Ok(covered) => covered,
                Err(reason) => {
                    self.reject(&at, &decided.line, RejectReason::Window(reason), stats)?;
                    continue;
                }
            };
            // Authentic and in place; the nonce store and the age window still apply.
            if let Err(rejection) = self.state.nonces.check(&self.config.node, covered.seq) {
                self.reject(&at, &decided.line, RejectReason::Nonce(rejection), stats)?;
                continue;
            }
            let ts_us = covered.head.ts_us;
            let newest_ts_us = self.state.nonces.newest_ts_us(&self.config.node);
            self.state.nonces.accept(&self.config.node, covered.seq, ts_us);
            if covered.is_checkpoint {
                stats.checkpoints += 1;
                continue;
            }
            if covered.is_header {
                stats.headers += 1;
                continue;
            }
            if let (Some(ts_us), Some(newest_ts_us)) = (ts_us, newest_ts_us) {
                if ts_us.saturating_add(self.config.max_age_us) < newest_ts_us {
                    self.reject(&at, &decided.line, RejectReason::TooOld { ts_us, newest_ts_us }, stats)?;
                    continue;
                }
            }
            stats.delivered += 1;
            let kind = covered.head.kind.unwrap_or_default();
            deliver(VerifiedRecord { node: self.config.node.clone(), seq: covered.seq, file: at.path, offset: at.offset, kind, ts_us, line: decided.line });
        }
        Ok(())
    }

    fn reject(&mut self, line: &Line, text: &str, reason: RejectReason, stats: &mut PollStats) -> Result<(), IngestError> {
        stats.quarantined += 1;
        *self.counters.entry(reason.label()).or_default() += 1;
        self.quarantine.append(&line.path, line.offset, text, &reason)
    }
}
