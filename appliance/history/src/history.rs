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
use crate::text::TextIndex;
use crate::HistoryError;
use mld_model::text::TextModel;

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

/// The text index's settings (issue 19): decisions in words, asked in words.
#[derive(Debug, Clone)]
pub struct TextSettings {
    /// Its directory (the ingest task's own), beside the flow index.
    pub dir: PathBuf,
    /// The most described events it holds: when full it keeps the newest half.
    pub max_events: usize,
    /// Describe and embed observations too (every flow; off by default: volume).
    pub observations: bool,
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
    /// Described events added to the text index.
    pub text_indexed: u64,
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
    /// The text index is new, or was made differently, or is behind: the log is verified
    /// again from its start to fill it (the flow index skips what it holds).
    Text(String),
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
            Rebuild::Text(reason) => write!(f, "text index: {reason}"),
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
    /// Whether a text index was saved with this snapshot.
    #[serde(default)]
    text: bool,
    /// The text index's newest seq when this was written.
    #[serde(default)]
    text_last_id: Option<u64>,
    /// Described events below this seq are left out of the text index (it was full).
    #[serde(default)]
    text_min_seq: Option<u64>,
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
    /// The text index, when configured.
    text: Option<(TextIndex, TextSettings)>,
    /// Described events below this seq are not in the text index (after it was full).
    text_min_seq: Option<u64>,
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
        History::open_with_text(ingest_config, settings, embedder, None)
    }

    /// [`History::open`] with the text index beside the flow index: opened, or created and
    /// filled by verifying the log again from its start when it is missing, made by another
    /// model or wording, damaged, or behind what the last save recorded.
    pub fn open_with_text(
        ingest_config: IngestConfig,
        settings: IndexSettings,
        embedder: Embedder,
        text: Option<(TextSettings, TextModel)>,
    ) -> Result<History, Box<OpenFailure>> {
        let Opened { index, rebuilt, min_seq, text, text_min_seq } = match History::open_index(&ingest_config, &settings, &embedder, text) {
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
            text,
            text_min_seq,
        })
    }

    /// Opens (or rebuilds: forgetting the ingest state) the index for `open`.
    fn open_index(
        ingest_config: &IngestConfig,
        settings: &IndexSettings,
        embedder: &Embedder,
        text: Option<(TextSettings, TextModel)>,
    ) -> Result<Opened, HistoryError> {
        let state_dir = ingest_config.state_dir.clone();
        let source = embedder.source();
        let dims = embedder.dims() as u32;
        let mut min_seq = None;
        recover_swap(&settings.dir)?;
        let mut covered_read = None;
        let (index, mut rebuilt) = match EventIndex::open(&settings.dir) {
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
                min_seq = covered.as_ref().and_then(|covered| covered.min_seq);
                covered_read = covered;
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
        let mut text_min_seq = None;
        let text = match text {
            None => None,
            Some((text_settings, model)) => {
                let checkpoint = read_checkpoint_seq(ingest_config)?;
                let (text, reason, min) = open_text(&text_settings, model, covered_read.as_ref(), checkpoint)?;
                text_min_seq = min;
                if let (Some(reason), None) = (reason, &rebuilt) {
                    rebuilt = Some(Rebuild::Text(reason));
                }
                Some((text, text_settings))
            }
        };
        if rebuilt.is_some() {
            // Verify the log again from the start: the nonce store and the position go,
            // the quarantine stays.
            Ingest::forget_state(&state_dir)?;
        }
        Ok(Opened { index, rebuilt, min_seq, text, text_min_seq })
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
        if let Some((text, text_settings)) = &mut self.text {
            let text_min_seq = self.text_min_seq.unwrap_or(0);
            // Our writer's canonical JSON: an observation says so verbatim (a quote inside
            // a string value would be escaped), so most lines are skipped unparsed.
            let lines: Vec<(u64, &str)> = records
                .iter()
                .filter(|record| record.kind == "event" && record.seq >= text_min_seq)
                .filter(|record| text_settings.observations || !record.line.contains(r#""action":"observe""#))
                .map(|record| (record.seq, record.line.as_str()))
                .collect();
            if !lines.is_empty() {
                stats.text_indexed += text.add_lines(&lines)?.indexed;
            }
        }
        if self.text.as_ref().is_some_and(|(text, settings)| text.index().len() >= settings.max_events) {
            self.roll_over_text()?;
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
        let new_dir = sibling(&dir, "new");
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
        write_covered(&new_dir, &self.covered())?;
        swap_in(&new_dir, &dir)?;
        self.index.moved_to(&dir);
        self.unsaved = 0;
        self.last_save = Instant::now();
        Ok(cutoff)
    }

    /// What the snapshots being saved cover.
    fn covered(&self) -> Covered {
        Covered {
            index_last_id: self.index.last_id(),
            covered_seq: self.ingest.last_seq(),
            min_seq: self.min_seq,
            text: self.text.is_some(),
            text_last_id: self.text.as_ref().and_then(|(text, _)| text.index().last_id()),
            text_min_seq: self.text_min_seq,
        }
    }

    /// The text index is full: keep its newest half, as [`History::roll_over`] does for the
    /// flow index (save; build `<dir>.new` from the saved vectors; swap; the log is not read
    /// again). Returns the new `text_min_seq`.
    fn roll_over_text(&mut self) -> Result<u64, HistoryError> {
        let Some((text, settings)) = &self.text else {
            return Ok(0);
        };
        let cutoff = text.index().nth_newest_id((settings.max_events / 2).max(1)).unwrap_or(0);
        let dir = settings.dir.clone();
        self.save()?;
        let Some((text, _)) = &mut self.text else {
            return Ok(0);
        };
        let new_dir = sibling(&dir, "new");
        remove_dir_if_present(&new_dir)?;
        let locations = text.index().locations_from(cutoff);
        let mut half = EventIndex::create_with_source(&new_dir, text.index().dims(), text.index().factory(), text.index().source())?;
        mld_index::read_stored_events(&dir, &locations, EMBED_BATCH, &mut |ids, vectors, fields| half.add(ids, vectors, fields).map(|_| ()))?;
        half.save()?;
        drop(text.replace_index(half));
        swap_in(&new_dir, &dir)?;
        text.index_mut().moved_to(&dir);
        self.text_min_seq = Some(cutoff);
        write_covered(&self.settings.dir, &self.covered())?;
        Ok(cutoff)
    }

    /// The text index, when configured.
    pub fn text_index(&self) -> Option<&TextIndex> {
        self.text.as_ref().map(|(text, _)| text)
    }

    pub fn text_index_mut(&mut self) -> Option<&mut TextIndex> {
        self.text.as_mut().map(|(text, _)| text)
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
        if let Some((text, _)) = &mut self.text {
            text.index_mut().save()?;
        }
        write_covered(&self.settings.dir, &self.covered())?;
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

/// What [`History::open_index`] opened.
struct Opened {
    index: EventIndex,
    rebuilt: Option<Rebuild>,
    min_seq: Option<u64>,
    text: Option<(TextIndex, TextSettings)>,
    text_min_seq: Option<u64>,
}

/// Opens the text index, or creates it; returns it, why the log must be verified again to
/// fill it (if it must), and the seq below which it leaves events out.
fn open_text(
    settings: &TextSettings,
    model: TextModel,
    covered: Option<&Covered>,
    checkpoint: Option<u64>,
) -> Result<(TextIndex, Option<String>, Option<u64>), HistoryError> {
    recover_swap(&settings.dir)?;
    let recreate = |model: TextModel, reason: String| -> Result<(TextIndex, Option<String>, Option<u64>), HistoryError> {
        remove_dir_if_present(&settings.dir)?;
        let text = TextIndex::create(&settings.dir, model, settings.observations)?;
        // A log not verified yet needs no second reading.
        Ok((text, checkpoint.map(|_| reason), None))
    };
    let index = match EventIndex::open(&settings.dir) {
        Ok(index) => index,
        Err(IndexError::Missing { .. }) => return recreate(model, "no text index snapshot".to_string()),
        Err(error @ (IndexError::Corrupt { .. } | IndexError::Faiss { .. })) => {
            return recreate(model, format!("unusable: {}", mld_types::error_chain(&error)))
        }
        // Permissions, EIO, a full disk: not the index's fault.
        Err(error) => return Err(error.into()),
    };
    match TextIndex::from_index(index, model, settings.observations)? {
        Ok(text) => {
            let behind = match covered {
                Some(covered) if covered.text && text.index().last_id() < covered.text_last_id => {
                    Some(format!("it holds events up to seq {:?}, its last save recorded {:?}", text.index().last_id(), covered.text_last_id))
                }
                Some(covered) if !covered.text && checkpoint.is_some() => Some("it was not saved with the flow index".to_string()),
                None if checkpoint.is_some() => Some("nothing says what it covers".to_string()),
                _ => None,
            };
            Ok((text, behind, covered.and_then(|covered| covered.text_min_seq)))
        }
        Err(refused) => {
            let (model, reason) = *refused;
            recreate(model, format!("made differently: {reason}"))
        }
    }
}

/// Puts the complete index in `new_dir` in place of `dir`: `dir` is renamed aside to
/// `<dir>.old`, `new_dir` into place, the parent directory is fsynced and the old one
/// removed. A crash in between leaves a state `recover_swap` finishes on the next open.
fn swap_in(new_dir: &Path, dir: &Path) -> Result<(), HistoryError> {
    let old_dir = sibling(dir, "old");
    remove_dir_if_present(&old_dir)?;
    fs::rename(dir, &old_dir).map_err(io("rename aside", dir))?;
    fs::rename(new_dir, dir).map_err(io("rename into place", new_dir))?;
    if let Some(parent) = dir.parent() {
        fs::File::open(parent).and_then(|directory| directory.sync_all()).map_err(io("fsync directory", parent))?;
    }
    remove_dir_if_present(&old_dir)
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
