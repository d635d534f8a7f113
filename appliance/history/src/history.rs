//! `History`: the ingest foundation, the embedder and the event index, kept in step.
//!
//! Order of durability (the invariant that makes a crash at any point harmless): the index
//! is saved first, then `covered.json` records the last log seq the saved index covers,
//! then the ingest checkpoint moves. After a crash the checkpoint is never ahead of the
//! index: records after it are read, verified and offered again, and the index skips the
//! seqs it already holds. If the checkpoint is found ahead anyway (an index directory
//! restored from an older copy, or deleted), the index is rebuilt from the verified log.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mld_index::{EventIndex, IndexError};
use mld_ingest::{Ingest, IngestConfig, VerifiedRecord};
use serde::{Deserialize, Serialize};

use crate::embed::Embedder;
use crate::HistoryError;

/// The file beside the index that says which log seq its last snapshot covers.
pub const COVERED_FILE: &str = "covered.json";

/// Most records embedded in one model call.
const EMBED_BATCH: usize = 1024;

/// What the history needs besides the ingest settings.
#[derive(Debug, Clone)]
pub struct IndexSettings {
    /// The index directory (the ingest task's own).
    pub dir: PathBuf,
    /// FAISS index-factory string (`Flat`, `IVF1024,Flat`, `HNSW32`, ...).
    pub factory: String,
    /// FAISS search parameters (`nprobe`, `efSearch`), set at open.
    pub search_parameters: Vec<(String, f64)>,
    /// Save the index (and then move the checkpoint) at least this often while records arrive.
    pub save_interval: Duration,
    /// The most events the index holds: when it is full it is rebuilt with the newest half
    /// (see [`History::step`]).
    pub max_events: usize,
}

/// What one [`History::step`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepStats {
    /// Lines read from the log.
    pub lines: u64,
    /// Records verified and handed on (events and other record types).
    pub verified: u64,
    /// Lines quarantined.
    pub quarantined: u64,
    /// Events added to the index (already indexed ones are skipped).
    pub indexed: u64,
    /// Verified events whose fields could not be read for the index (left out; see
    /// [`History::last_unreadable`]).
    pub unreadable: u64,
    /// Whether the index was saved.
    pub saved: bool,
    /// The index was full and kept its newest half: events from this seq on.
    pub rolled_over: Option<u64>,
}

/// Why the index was rebuilt when the history opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebuild {
    /// No snapshot in the directory (first start, or deleted).
    Missing,
    /// The snapshot could not be used; the error text names the file and the reason.
    Damaged(String),
    /// Made by another embedder or factory: its vectors are not comparable.
    Mismatch(String),
    /// The ingest checkpoint is past what the snapshot covers.
    Behind { covered: Option<u64>, checkpoint: u64 },
}

impl std::fmt::Display for Rebuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rebuild::Missing => write!(f, "no index snapshot"),
            Rebuild::Damaged(reason) => write!(f, "index unusable: {reason}"),
            Rebuild::Mismatch(reason) => write!(f, "index made differently: {reason}"),
            Rebuild::Behind { covered: Some(covered), checkpoint } => {
                write!(f, "the index covers the log up to seq {covered}, the ingest checkpoint is at {checkpoint}")
            }
            Rebuild::Behind { covered: None, checkpoint } => {
                write!(f, "nothing says what the index covers, the ingest checkpoint is at {checkpoint}")
            }
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Covered {
    /// The index snapshot's generation this record belongs to.
    index_last_id: Option<u64>,
    /// Every log record up to this seq is in the snapshot or is not an event.
    covered_seq: Option<u64>,
    /// Events below this seq are left out (the index was full and kept the newest half).
    #[serde(default)]
    min_seq: Option<u64>,
}

/// Why [`History::open`] failed, with the ingest configuration back when it was not used
/// yet (so the caller can go on verifying without the index).
#[derive(Debug)]
pub struct OpenFailure {
    pub error: HistoryError,
    pub ingest_config: Option<Box<IngestConfig>>,
}

impl std::fmt::Display for OpenFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", mld_types::error_chain(&self.error))
    }
}

impl std::error::Error for OpenFailure {}

/// The searchable history of one node's signed log.
#[derive(Debug)]
pub struct History {
    ingest: Ingest,
    index: EventIndex,
    embedder: Embedder,
    settings: IndexSettings,
    state_dir: PathBuf,
    last_save: Instant,
    /// Records read since the last save (the save is due when the interval passed).
    unsaved: u64,
    rebuilt: Option<Rebuild>,
    last_unreadable: Option<String>,
    /// Events below this seq are not indexed (after the index was full).
    min_seq: Option<u64>,
    /// The last step read the log to its end (its read was not cut by the batch bound).
    caught_up: bool,
}

impl History {
    /// Opens the index and the ingest state, rebuilding the index from the verified log
    /// (from the first file) when it is missing, damaged, made by another embedder or
    /// behind the checkpoint. [`History::rebuilt`] says whether and why.
    /// A configuration applied while running: how often the index is saved.
    pub fn set_save_interval(&mut self, interval: Duration) {
        self.settings.save_interval = interval;
    }

    pub fn open(ingest_config: IngestConfig, settings: IndexSettings, embedder: Embedder) -> Result<History, Box<OpenFailure>> {
        let (index, rebuilt, min_seq) = match History::open_index(&ingest_config, &settings, &embedder) {
            Ok(opened) => opened,
            // Nothing of the ingest state was used: the caller can verify without an index.
            Err(error) => return Err(Box::new(OpenFailure { error, ingest_config: Some(Box::new(ingest_config)) })),
        };
        let state_dir = ingest_config.state_dir.clone();
        let ingest = Ingest::open(ingest_config).map_err(|error| Box::new(OpenFailure { error: error.into(), ingest_config: None }))?;
        Ok(History {
            ingest,
            index,
            embedder,
            settings,
            state_dir,
            last_save: Instant::now(),
            unsaved: 0,
            rebuilt,
            last_unreadable: None,
            min_seq,
            caught_up: false,
        })
    }

    /// Opens (or rebuilds: forgetting the ingest state) the index for `open`.
    fn open_index(
        ingest_config: &IngestConfig,
        settings: &IndexSettings,
        embedder: &Embedder,
    ) -> Result<(EventIndex, Option<Rebuild>, Option<u64>), HistoryError> {
        let state_dir = ingest_config.state_dir.clone();
        let source = embedder.source();
        let dims = embedder.dims() as u32;
        let mut min_seq = None;
        recover_swap(&settings.dir)?;
        let (index, rebuilt) = match EventIndex::open(&settings.dir) {
            Ok(index) if index.source() != source || index.dims() != dims || index.factory() != settings.factory => {
                let reason = format!(
                    "made by `{}` ({} dimensions, factory {}), this configuration is `{source}` ({dims}, {})",
                    index.source(),
                    index.dims(),
                    index.factory(),
                    settings.factory
                );
                drop(index);
                (None, Some(Rebuild::Mismatch(reason)))
            }
            Ok(index) => {
                // The index only grows between rebuilds (which remove covered.json first), so
                // a covered.json of an earlier save (a crash between the snapshot and it)
                // still holds: it claims less than the snapshot has.
                let covered = read_covered(&settings.dir).filter(|covered| covered.index_last_id <= index.last_id());
                let checkpoint = read_checkpoint_seq(ingest_config)?;
                // Behind: events the checkpoint passed may be missing from the index. The
                // index itself is good: keep it, and verify the log again from its start
                // (what it holds is skipped, what it lacks is added).
                let behind = match (checkpoint, &covered) {
                    (Some(checkpoint), Some(Covered { covered_seq, .. })) if covered_seq.is_none_or(|seq| seq < checkpoint) => {
                        Some(Rebuild::Behind { covered: *covered_seq, checkpoint })
                    }
                    (Some(checkpoint), None) => Some(Rebuild::Behind { covered: None, checkpoint }),
                    _ => None,
                };
                min_seq = covered.and_then(|covered| covered.min_seq);
                (Some(index), behind)
            }
            Err(IndexError::Missing { .. }) => (None, Some(Rebuild::Missing)),
            Err(error @ (IndexError::Corrupt { .. } | IndexError::Faiss { .. })) => (None, Some(Rebuild::Damaged(mld_types::error_chain(&error)))),
            // Permissions, EIO, a full disk: not the index's fault; rebuilding would
            // throw away a good index. The caller reports it.
            Err(error) => return Err(error.into()),
        };
        // Everything that can fail on the index's side comes before the ingest state is
        // forgotten: a failure here leaves the checkpoint as it was.
        let mut index = match index {
            Some(index) => index,
            None => {
                let _ = fs::remove_file(settings.dir.join(COVERED_FILE));
                let _ = fs::remove_file(settings.dir.join(mld_index::MANIFEST_FILE));
                EventIndex::create_with_source(&settings.dir, dims, &settings.factory, &source)?
            }
        };
        for (name, value) in &settings.search_parameters {
            index.set_search_parameter(name, *value)?;
        }
        if rebuilt.is_some() {
            // Verify the log again from the start: the nonce store and the position go,
            // the quarantine stays.
            Ingest::forget_state(&state_dir)?;
        }
        Ok((index, rebuilt, min_seq))
    }

    /// The ingest foundation alone, to go on verifying without the index (after an error
    /// of the index). Its position may be past what the index saved: the next open then
    /// finds the index behind and rebuilds it.
    pub fn into_ingest(self) -> Ingest {
        self.ingest
    }

    /// The last verified event left out of the index because its fields could not be read.
    pub fn last_unreadable(&self) -> Option<&str> {
        self.last_unreadable.as_deref()
    }

    /// Whether the last step found the log read to its end (the index is not catching up).
    pub fn caught_up(&self) -> bool {
        self.caught_up
    }

    /// Whether (and why) the index was rebuilt at open.
    pub fn rebuilt(&self) -> Option<&Rebuild> {
        self.rebuilt.as_ref()
    }

    /// Reads what the log has (one bounded batch), verifies it, embeds and indexes the
    /// events; saves when the interval has passed. Returns at once when there is nothing new.
    pub fn step(&mut self) -> Result<StepStats, HistoryError> {
        let mut records: Vec<VerifiedRecord> = Vec::new();
        let poll = self.ingest.read(&mut |record| records.push(record))?;
        // A read cut by its bound left more to read: still catching up.
        self.caught_up = (poll.lines as usize) < self.ingest.max_batch_lines();
        let mut stats = StepStats { lines: poll.lines, verified: poll.delivered, quarantined: poll.quarantined, ..StepStats::default() };
        let min_seq = self.min_seq.unwrap_or(0);
        let events: Vec<(u64, &str)> = records
            .iter()
            .filter(|record| record.kind == "event" && record.seq >= min_seq && !self.index.contains(record.seq))
            .map(|record| (record.seq, record.line.as_str()))
            .collect();
        for chunk in events.chunks(EMBED_BATCH) {
            let embedded = self.embedder.embed_lines(chunk)?;
            stats.indexed += self.index.add(&embedded.ids, &embedded.vectors, &embedded.fields)? as u64;
            stats.unreadable += embedded.unreadable.len() as u64;
            if let Some((seq, why)) = embedded.unreadable.first() {
                self.last_unreadable = Some(format!("event seq {seq}: {why}"));
            }
        }
        // Full: keep the newest half. Only here, once every event read in this step is in
        // the index, because the roll-over saves (and so moves the checkpoint past them).
        // The index can pass its bound by at most one step's events (4,096 lines).
        if self.index.len() >= self.settings.max_events {
            stats.rolled_over = Some(self.roll_over()?);
            return Ok(stats);
        }
        self.unsaved += poll.lines;
        if self.unsaved > 0 && self.last_save.elapsed() >= self.save_interval() {
            self.save()?;
            stats.saved = true;
        }
        Ok(stats)
    }

    /// The index is full: keep its newest half. The events kept are copied (vector and
    /// fields, already verified and embedded) from the saved index into a new one beside
    /// it, which then replaces it; the log is not read again and the checkpoint does not
    /// move. Returns the new `min_seq`.
    ///
    /// Order, for crashes: save (index, covered.json, checkpoint); build `<dir>.new`
    /// completely (with its covered.json); rename `<dir>` to `<dir>.old` and `<dir>.new`
    /// to `<dir>`; remove `<dir>.old`. [`History::open`] finishes or undoes a swap cut in
    /// the middle (`recover_swap`); a crash before the swap keeps the full index, which
    /// rolls over again.
    fn roll_over(&mut self) -> Result<u64, HistoryError> {
        let keep = (self.settings.max_events / 2).max(1);
        let cutoff = self.index.nth_newest_id(keep).unwrap_or(0);
        self.save()?;
        let dir = self.settings.dir.clone();
        let (new_dir, old_dir) = (sibling(&dir, "new"), sibling(&dir, "old"));
        remove_dir_if_present(&new_dir)?;
        let locations = self.index.locations_from(cutoff);
        // The full index goes before the half one is built: memory holds one at a time.
        let mut index = EventIndex::create_with_source(&new_dir, self.embedder.dims() as u32, &self.settings.factory, &self.embedder.source())?;
        for (name, value) in &self.settings.search_parameters {
            index.set_search_parameter(name, *value)?;
        }
        self.index = index;
        let target = &mut self.index;
        mld_index::read_stored_events(&dir, &locations, EMBED_BATCH, &mut |ids, vectors, fields| target.add(ids, vectors, fields).map(|_| ()))?;
        self.index.save()?;
        self.min_seq = Some(cutoff);
        write_covered(&new_dir, &Covered { index_last_id: self.index.last_id(), covered_seq: self.ingest.last_seq(), min_seq: self.min_seq })?;
        remove_dir_if_present(&old_dir)?;
        fs::rename(&dir, &old_dir).map_err(io("rename aside", &dir))?;
        fs::rename(&new_dir, &dir).map_err(io("rename into place", &new_dir))?;
        self.index.moved_to(&dir);
        if let Some(parent) = dir.parent() {
            fs::File::open(parent).and_then(|directory| directory.sync_all()).map_err(io("fsync directory", parent))?;
        }
        remove_dir_if_present(&old_dir)?;
        self.unsaved = 0;
        self.last_save = Instant::now();
        Ok(cutoff)
    }

    /// Events below this seq are not indexed (set when the index was full).
    pub fn min_seq(&self) -> Option<u64> {
        self.min_seq
    }

    /// The configured interval, stretched so that rewriting the FAISS file (a save writes
    /// it whole) averages at most about 2 MB/s: a million events (72 MB, Flat) are saved
    /// every 36 s at the most often, not every 10 s.
    fn save_interval(&self) -> Duration {
        const SAVE_BYTES_PER_SEC: u64 = 2_000_000;
        let by_size = Duration::from_secs(self.index.index_file_bytes() / SAVE_BYTES_PER_SEC);
        self.settings.save_interval.max(by_size)
    }

    /// Saves the index, then what it covers, then the ingest checkpoint (in that order).
    pub fn save(&mut self) -> Result<(), HistoryError> {
        self.index.save()?;
        let covered = Covered { index_last_id: self.index.last_id(), covered_seq: self.ingest.last_seq(), min_seq: self.min_seq };
        write_covered(&self.settings.dir, &covered)?;
        self.ingest.commit()?;
        self.unsaved = 0;
        self.last_save = Instant::now();
        Ok(())
    }

    pub fn index(&self) -> &EventIndex {
        &self.index
    }

    pub fn embedder_mut(&mut self) -> &mut Embedder {
        &mut self.embedder
    }

    /// The index and the embedder together (a query that embeds needs both).
    pub fn parts(&mut self) -> (&EventIndex, &mut Embedder) {
        (&self.index, &mut self.embedder)
    }

    pub fn ingest(&self) -> &Ingest {
        &self.ingest
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
}

/// Names the operation and the path of a failed file operation.
fn io(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> HistoryError {
    let path = path.to_path_buf();
    move |source| HistoryError::Io { operation, path, source }
}

/// `<dir>.<suffix>`, beside `dir`.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().map(|name| name.to_os_string()).unwrap_or_default();
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}

fn remove_dir_if_present(dir: &Path) -> Result<(), HistoryError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io("remove", dir)(source)),
    }
}

/// Finishes or undoes a roll-over's swap that a crash cut: `<dir>.new` is complete once it
/// exists beside a missing `<dir>` (it is renamed only after it was saved); otherwise the
/// old one comes back. Leftovers are removed.
fn recover_swap(dir: &Path) -> Result<(), HistoryError> {
    let (new_dir, old_dir) = (sibling(dir, "new"), sibling(dir, "old"));
    if !dir.exists() {
        if old_dir.exists() && new_dir.exists() {
            fs::rename(&new_dir, dir).map_err(io("rename into place", &new_dir))?;
        } else if old_dir.exists() {
            fs::rename(&old_dir, dir).map_err(io("rename back", &old_dir))?;
        }
    }
    remove_dir_if_present(&new_dir)?;
    remove_dir_if_present(&old_dir)
}

fn read_checkpoint_seq(config: &IngestConfig) -> Result<Option<u64>, HistoryError> {
    Ok(mld_ingest::read_checkpoint(&config.state_dir)?.and_then(|checkpoint| checkpoint.last_seq))
}

fn read_covered(dir: &Path) -> Option<Covered> {
    let text = fs::read(dir.join(COVERED_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

fn write_covered(dir: &Path, covered: &Covered) -> Result<(), HistoryError> {
    let path = dir.join(COVERED_FILE);
    let temp = dir.join(format!("{COVERED_FILE}.tmp"));
    let text = serde_json::to_vec(covered).map_err(|error| HistoryError::Invalid(format!("cannot write {COVERED_FILE}: {error}")))?;
    {
        use std::io::Write;
        let mut file = fs::File::create(&temp).map_err(io("create", &temp))?;
        file.write_all(&text).map_err(io("write", &temp))?;
        file.sync_all().map_err(io("fsync", &temp))?;
    }
    fs::rename(&temp, &path).map_err(io("rename into", &path))?;
    fs::File::open(dir).and_then(|directory| directory.sync_all()).map_err(io("fsync directory", dir))
}
