//! Writing: one file at a time, a header first, rotation by size and by local day,
//! group-commit fsync on a background thread, recovery of a partial last line after a
//! crash, verification of the newest file before its chain is continued, and retention
//! (a disk budget and an age limit, oldest files first, each removal on record).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::chain::{BodyError, Delivery, SealError, Sealer, DELIVERY_SEQ_FIELD, DELIVERY_STREAM_FIELD, GENESIS_TAG, SCHEMA};
use crate::checkpoint::{checkpoint_body, CheckpointClaim, CheckpointSigningKey, Window, CHECKPOINT_TYPE, GENESIS_DIGEST};
use crate::key::LogKey;
use crate::verify::{check_newest_file, is_authentic};

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("failed to {operation} `{path}`")]
    Io { operation: &'static str, path: PathBuf, source: std::io::Error },
    #[error("`{path}` line {line} is not a log record: {detail}")]
    Corrupt { path: PathBuf, line: usize, detail: String },
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("the log's sequence number is exhausted (the last record has seq {}): start a new log with another node id", u64::MAX)]
    SequenceExhausted,
}

impl From<SealError> for WriterError {
    fn from(error: SealError) -> WriterError {
        match error {
            SealError::Body(error) => WriterError::Body(error),
            SealError::SequenceExhausted => WriterError::SequenceExhausted,
        }
    }
}

/// Where and how the log is written.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub dir: PathBuf,
    /// The node id: in every header and every tag.
    pub node: String,
    /// A file reaching this size is closed and the next one started.
    pub max_file_bytes: u64,
    /// Close the file and start the next one when the local calendar day changes.
    pub rotate_daily: bool,
    /// Group commit: an fsync starts after this many records (1 = every record)...
    pub sync_every_records: u32,
    /// ...or once the oldest record not yet handed to an fsync is this old.
    pub sync_interval: Duration,
    /// Retention: at every new file, the oldest files are removed until the others and a
    /// full file being written (`max_file_bytes`) fit in this many bytes. `u64::MAX`: no
    /// budget.
    pub max_disk_bytes: u64,
    /// Retention: at every new file, files last written longer ago than this are removed
    /// (oldest first). `None`: no age limit.
    pub max_age: Option<Duration>,
    /// The wall clock, for daily rotation and the age limit (tests replace it).
    pub clock: fn() -> SystemTime,
    /// Signed checkpoints (with a signing key, [`LogWriter::open_signed`]): one after this
    /// many records since the last...
    pub checkpoint_every_records: u32,
    /// ...or once the oldest record not yet covered is this old (checked at every append
    /// and at [`LogWriter::tick`]); always before a file is closed and at shutdown.
    pub checkpoint_interval: Duration,
}

impl WriterConfig {
    /// Defaults as in the reference configuration.
    pub fn new(dir: PathBuf, node: String) -> WriterConfig {
        WriterConfig {
            dir,
            node,
            max_file_bytes: 64 << 20,
            rotate_daily: true,
            sync_every_records: 64,
            sync_interval: Duration::from_millis(200),
            max_disk_bytes: 1024 << 20,
            max_age: Some(Duration::from_secs(90 * 86_400)),
            clock: SystemTime::now,
            checkpoint_every_records: 256,
            checkpoint_interval: Duration::from_millis(1000),
        }
    }
}

/// Lines are gathered here and written to the file when this much is waiting.
const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// The only writer of a node's log.
///
/// Durability: [`LogWriter::append`] returns once the line is sealed and buffered. Lines
/// reach the kernel at every commit point (count, age, buffer size, rotation) and an fsync
/// then runs on the writer's sync thread while appending goes on; [`LogWriter::durable_seq`]
/// says how far the log is on disk, and [`LogWriter::sync`] waits until everything
/// appended is. A crash loses only records after `durable_seq`, never the chain's
/// integrity (a cut last line is quarantined at the next open).
#[derive(Debug)]
pub struct LogWriter {
    config: WriterConfig,
    sealer: Sealer,
    file: Option<(Arc<File>, PathBuf)>,
    /// Sealed lines not yet written to the file.
    buffer: Vec<u8>,
    file_index: u64,
    file_bytes: u64,
    /// Bytes written to files by this writer.
    bytes_written: u64,
    /// Local day (yyyymmdd) the current file belongs to, and when to look at the clock again.
    file_day: u32,
    next_day_check: SystemTime,
    /// Records appended since the last commit, and when the first of them was.
    uncommitted: u32,
    uncommitted_since: Option<Instant>,
    last_delivery: Option<Delivery>,
    syncer: Syncer,
    /// The checkpoint signing key (`None`: no checkpoints, as before ADR 0007).
    signer: Option<CheckpointSigningKey>,
    /// The records sealed since the last checkpoint (`None`: none yet).
    window: Option<Window>,
    /// The last checkpoint's digest (the genesis digest before the first, or after a new
    /// anchor).
    prev_digest: [u8; 32],
}

/// File name of a node's file `index`.
pub fn file_name(node: &str, index: u64) -> String {
    format!("events-{node}-{index:06}.jsonl")
}

impl LogWriter {
    /// Opens the node's log in `config.dir` and starts a new file with a header.
    ///
    /// The newest file is checked first: a partial last line (a crash mid-write) is moved
    /// to `quarantine-<node>.jsonl`; an empty file (a crash before its header) is removed;
    /// then the file is verified from its header to its last line (HMAC under this key
    /// and node, chain). Only a file that verifies is continued. Otherwise the file is
    /// left as it is (the damage stays visible to `log verify` and the ingest task) and:
    /// - if no line in it claims a seq beyond its last verified record (what failed is
    ///   garbage or an old line copied in), the chain continues from that record;
    /// - else (a genuine record altered, removed or moved, or a forged line claiming a
    ///   later seq) the chain is not continued: the new file's header starts a new anchor
    ///   (`prev_tag` and `prev_file_last_tag` the genesis tag) at a seq above every seq in
    ///   the damaged file, so no seq is written twice and readers (the ingest task's nonce
    ///   store) find the new records fresh.
    ///
    /// Either way a `recovery` record after the header says what was found.
    ///
    /// Without a signing key no checkpoints are written ([`LogWriter::open_signed`]).
    pub fn open(config: WriterConfig, key: LogKey) -> Result<LogWriter, WriterError> {
        LogWriter::open_with(config, key, None)
    }

    /// [`LogWriter::open`] with signed checkpoints (ADR 0007): every
    /// `checkpoint_every_records` records or `checkpoint_interval`, before a file is
    /// closed and at shutdown, a `checkpoint` record covers the records since the last one
    /// with an Ed25519 signature. At open, the records the last run wrote after its last
    /// checkpoint (a crash) are read back, so the first checkpoint of this run covers them
    /// too and the checkpoints stay one chain.
    pub fn open_signed(config: WriterConfig, key: LogKey, signer: CheckpointSigningKey) -> Result<LogWriter, WriterError> {
        LogWriter::open_with(config, key, Some(signer))
    }

    fn open_with(config: WriterConfig, key: LogKey, signer: Option<CheckpointSigningKey>) -> Result<LogWriter, WriterError> {
        std::fs::create_dir_all(&config.dir).map_err(|source| WriterError::Io { operation: "create directory", path: config.dir.clone(), source })?;
        let quarantine = config.dir.join(format!("quarantine-{}.jsonl", config.node));
        let mut files = node_files(&config.dir, &config.node)?;
        let mut recovered_bytes = None;
        let mut start = Start { next_index: 0, last_seq: 0, last_tag: GENESIS_TAG.to_string(), damage: None };
        while let Some((index, path)) = files.last().cloned() {
            if let Some(bytes) = quarantine_partial_line(&path, &quarantine)? {
                recovered_bytes = Some(recovered_bytes.unwrap_or(0) + bytes);
            }
            let io = |operation, source| WriterError::Io { operation, path: path.clone(), source };
            if std::fs::metadata(&path).map_err(|error| io("stat", error))?.len() == 0 {
                // Nothing was ever written to it (or its only line was partial): the file
                // before it is the newest. Its index is used again.
                std::fs::remove_file(&path).map_err(|error| io("remove empty log file", error))?;
                files.pop();
                continue;
            }
            let found = check_newest_file(&path, index, &config.node, &key).map_err(|error| io("read", error))?;
            start = Start::after(index, found);
            break;
        }
        let last_delivery = last_delivery(&files, &config.node, &key)?;
        // Where the checkpoints stand: after the last one, with the records since (a
        // crash) to be covered by this run's first. A new anchor starts a new chain.
        let (prev_digest, window) = match (&signer, start.damage.is_some() && start.last_tag == GENESIS_TAG) {
            (Some(_), false) if start.last_seq > 0 => uncovered_tail(&files, &config.node, &key, start.last_seq)?,
            _ => (GENESIS_DIGEST, None),
        };
        let sealer = Sealer::new(&config.node, key, start.last_seq, &start.last_tag);
        let now = (config.clock)();
        let mut writer = LogWriter {
            sealer,
            file: None,
            buffer: Vec::with_capacity(WRITE_BUFFER_BYTES + 16 * 1024),
            file_index: start.next_index,
            file_bytes: 0,
            bytes_written: 0,
            file_day: local_day(now),
            next_day_check: now + DAY_CHECK_INTERVAL,
            uncommitted: 0,
            uncommitted_since: None,
            last_delivery,
            syncer: Syncer::start(start.last_seq),
            config,
            signer,
            window,
            prev_digest,
        };
        writer.start_file()?;
        if let Some(bytes) = recovered_bytes {
            let mut record = serde_json::Map::new();
            record.insert("type".to_string(), "recovery".into());
            record.insert("reason".to_string(), "partial last line after a crash moved to quarantine".into());
            record.insert("quarantined_bytes".to_string(), bytes.into());
            writer.append_record(&record)?;
        }
        if let Some(damage) = start.damage {
            writer.append_record(&damage)?;
        }
        writer.enforce_retention()?;
        writer.sync()?;
        Ok(writer)
    }

    /// The sequence number of the last record appended.
    /// Bytes this writer has written to its files (records, headers, checkpoints).
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    pub fn last_seq(&self) -> u64 {
        self.sealer.last_seq()
    }

    /// The chain tag (`hmac`) of the last record appended.
    pub fn last_tag(&self) -> &str {
        self.sealer.last_tag()
    }

    /// Every record up to this sequence number is on disk (fsync returned).
    pub fn durable_seq(&self) -> u64 {
        self.syncer.durable()
    }

    /// Appends one record; returns its sequence number. Durable once
    /// [`LogWriter::durable_seq`] reaches it (see the type's documentation).
    /// Refused (nothing written, [`WriterError::Body`]) when the record is not an event
    /// or carries a field the log writes itself (see [`Sealer::seal`]).
    pub fn append(&mut self, record: &serde_json::Map<String, serde_json::Value>) -> Result<u64, WriterError> {
        self.before_append()?;
        let start = self.buffer.len();
        let seq = self.sealer.seal(record, &mut self.buffer)?;
        self.cover(start, seq);
        self.after_append(seq)
    }

    /// Appends one record given as JSON text (one object on one line), as the log task
    /// receives it from the pipeline, with where it came from. A body the sealer refuses
    /// ([`WriterError::Body`]) leaves no trace; the caller decides what to put on record
    /// ([`LogWriter::append_rejected`]).
    pub fn append_json(&mut self, record: &str, delivery: Option<Delivery>) -> Result<u64, WriterError> {
        self.before_append()?;
        let start = self.buffer.len();
        let seq = self.sealer.seal_json(record, delivery, &mut self.buffer)?;
        self.cover(start, seq);
        if delivery.is_some() {
            self.last_delivery = delivery;
        }
        self.after_append(seq)
    }

    /// Puts a refused event body on record without writing it: a `rejected_event` record
    /// with the reason, the offending key, the body's length and SHA-256 (so that the body,
    /// if kept elsewhere, can be matched), and the delivery, so that a restarted log task
    /// knows the event was handled. Nothing of the body itself goes into the log.
    pub fn append_rejected(&mut self, body: &str, error: &BodyError, delivery: Option<Delivery>) -> Result<u64, WriterError> {
        use sha2::Digest;
        let mut record = serde_json::Map::new();
        record.insert("type".to_string(), "rejected_event".into());
        record.insert("reason".to_string(), error.to_string().chars().take(256).collect::<String>().into());
        if let Some(key) = error.key() {
            record.insert("key".to_string(), key.chars().take(64).collect::<String>().into());
        }
        record.insert("body_bytes".to_string(), body.len().into());
        record.insert("body_sha256".to_string(), hex::encode(sha2::Sha256::digest(body.as_bytes())).into());
        if let Some(Delivery { stream, seq }) = delivery {
            record.insert(DELIVERY_STREAM_FIELD.to_string(), format!("{stream:016x}").into());
            record.insert(DELIVERY_SEQ_FIELD.to_string(), seq.into());
            self.last_delivery = delivery;
        }
        self.before_append()?;
        let start = self.buffer.len();
        let seq = self.sealer.seal_record(&record, &mut self.buffer)?;
        self.cover(start, seq);
        self.after_append(seq)
    }

    /// Appends one of the writer's own records (no rotation check: called right after a
    /// new file was started, or for a record that must follow the one before it).
    fn append_record(&mut self, record: &serde_json::Map<String, serde_json::Value>) -> Result<u64, WriterError> {
        let start = self.buffer.len();
        let seq = self.sealer.seal_record(record, &mut self.buffer)?;
        self.cover(start, seq);
        self.after_append(seq)
    }

    /// A record was sealed into the buffer from `start`: the next checkpoint covers it.
    fn cover(&mut self, start: usize, seq: u64) {
        if self.signer.is_none() {
            return;
        }
        let prev_digest = self.prev_digest;
        self.window.get_or_insert_with(|| Window::new(&prev_digest, seq)).add(&self.buffer[start..]);
    }

    /// Appends a checkpoint covering the records since the last one, if there are any.
    /// The checkpoint is sealed into the HMAC chain like every record but is not covered
    /// itself: the next checkpoint chains to its digest.
    fn append_checkpoint(&mut self) -> Result<bool, WriterError> {
        let (Some(signer), Some(window)) = (&self.signer, &self.window) else {
            return Ok(false);
        };
        let claim = CheckpointClaim {
            node: self.config.node.clone(),
            seq: self.sealer.last_seq().checked_add(1).ok_or(WriterError::SequenceExhausted)?,
            hmac_key_id: self.sealer.key_id().to_string(),
            first_seq: window.first_seq,
            last_seq: self.sealer.last_seq(),
            last_tag: self.sealer.last_tag().to_string(),
            prev_digest: self.prev_digest,
            digest: window.digest(),
            signing_key_id: signer.id().to_string(),
        };
        let body = checkpoint_body(&claim, signer);
        self.sealer.seal_record(&body, &mut self.buffer)?;
        self.window = None;
        self.prev_digest = claim.digest;
        self.uncommitted += 1;
        self.uncommitted_since.get_or_insert_with(Instant::now);
        Ok(true)
    }

    /// Writes a checkpoint if the oldest record not yet covered is `checkpoint_interval`
    /// old, and hands it to the file at once (the log task calls this when idle, so
    /// readers never wait longer than the interval). Returns whether it wrote one.
    /// A configuration applied while running: rotation, group commit, retention and
    /// checkpoint cadence from now on (the directory, the node and the keys stay).
    pub fn set_cadence(&mut self, config: &WriterConfig) {
        self.config.max_file_bytes = config.max_file_bytes;
        self.config.rotate_daily = config.rotate_daily;
        self.config.sync_every_records = config.sync_every_records;
        self.config.sync_interval = config.sync_interval;
        self.config.max_disk_bytes = config.max_disk_bytes;
        self.config.max_age = config.max_age;
        self.config.checkpoint_every_records = config.checkpoint_every_records;
        self.config.checkpoint_interval = config.checkpoint_interval;
    }

    pub fn tick(&mut self) -> Result<bool, WriterError> {
        let due = self.window.as_ref().is_some_and(|window| window.since.elapsed() >= self.config.checkpoint_interval);
        if !due {
            return Ok(false);
        }
        self.checkpoint()?;
        Ok(true)
    }

    /// Writes a checkpoint now if any record is not covered yet, and commits (call before
    /// stopping: [`LogWriter::sync`] does not checkpoint).
    pub fn checkpoint(&mut self) -> Result<(), WriterError> {
        self.syncer.check()?;
        if self.append_checkpoint()? {
            self.commit()?;
        }
        Ok(())
    }

    /// The delivery of the newest record that has one (read back from the log at open).
    pub fn last_delivery(&self) -> Option<Delivery> {
        self.last_delivery
    }

    fn before_append(&mut self) -> Result<(), WriterError> {
        self.syncer.check()?;
        let mut rotate = self.file_bytes + self.buffer.len() as u64 >= self.config.max_file_bytes;
        if self.config.rotate_daily {
            let now = (self.config.clock)();
            if now >= self.next_day_check {
                self.next_day_check = now + DAY_CHECK_INTERVAL;
                let day = local_day(now);
                if day != self.file_day {
                    self.file_day = day;
                    rotate = true;
                }
            }
        }
        if rotate {
            // A file is never closed with records no checkpoint covers.
            self.append_checkpoint()?;
            self.sync()?;
            self.file = None;
            self.file_index += 1;
            self.start_file()?;
            self.enforce_retention()?;
        }
        Ok(())
    }

    fn after_append(&mut self, seq: u64) -> Result<u64, WriterError> {
        self.uncommitted += 1;
        if self
            .window
            .as_ref()
            .is_some_and(|window| window.records >= self.config.checkpoint_every_records || window.since.elapsed() >= self.config.checkpoint_interval)
        {
            self.append_checkpoint()?;
        }
        let since = *self.uncommitted_since.get_or_insert_with(Instant::now);
        if self.uncommitted >= self.config.sync_every_records || since.elapsed() >= self.config.sync_interval {
            self.commit()?;
        } else if self.buffer.len() >= WRITE_BUFFER_BYTES {
            self.write_out()?;
        }
        Ok(seq)
    }

    /// Writes what is buffered to the file and starts an fsync of it on the sync thread
    /// (joining one already running); does not wait for it.
    pub fn commit(&mut self) -> Result<(), WriterError> {
        self.write_out()?;
        if let Some((file, path)) = &self.file {
            self.syncer.request(Arc::clone(file), path.clone(), self.sealer.last_seq());
        }
        self.uncommitted = 0;
        self.uncommitted_since = None;
        self.syncer.check()
    }

    /// Writes out and fsyncs everything appended; returns when it is on disk.
    pub fn sync(&mut self) -> Result<(), WriterError> {
        self.commit()?;
        self.syncer.wait_for(self.sealer.last_seq())
    }

    fn write_out(&mut self) -> Result<(), WriterError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let (file, path) = self.file.as_ref().expect("a file is open");
        (&**file).write_all(&self.buffer).map_err(|source| WriterError::Io { operation: "write", path: path.clone(), source })?;
        self.file_bytes += self.buffer.len() as u64;
        self.bytes_written += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    fn start_file(&mut self) -> Result<(), WriterError> {
        let path = self.config.dir.join(file_name(&self.config.node, self.file_index));
        let file = OpenOptions::new().create_new(true).append(true).open(&path).map_err(|source| WriterError::Io {
            operation: "create log file",
            path: path.clone(),
            source,
        })?;
        self.file = Some((Arc::new(file), path));
        self.file_bytes = 0;
        let mut header = serde_json::Map::new();
        header.insert("type".to_string(), "header".into());
        header.insert("schema".to_string(), SCHEMA.into());
        header.insert("node".to_string(), self.config.node.clone().into());
        header.insert("file_index".to_string(), self.file_index.into());
        header.insert("prev_file_last_seq".to_string(), self.sealer.last_seq().into());
        header.insert("prev_file_last_tag".to_string(), self.sealer.last_tag().into());
        let start = self.buffer.len();
        let seq = self.sealer.seal_record(&header, &mut self.buffer)?;
        self.cover(start, seq);
        // The new file's directory entry must be durable too, or a crash could lose the
        // whole file while its records were acknowledged.
        if let Ok(dir) = File::open(&self.config.dir) {
            let _ = dir.sync_all();
        }
        self.sync()
    }
}

impl LogWriter {
    /// Retention, run at every new file: removes the oldest closed files while the closed
    /// files and a full file being written do not fit in `max_disk_bytes`, or while the
    /// oldest was last written longer than `max_age` ago. Never the file being written;
    /// always oldest first, so what is left is a contiguous run of files.
    ///
    /// The removal is put on record *before* any file is removed: a `retention` record
    /// (the files, their bytes and seq ranges, `removed_through_index`) is appended and
    /// fsynced first, so no file is ever gone without a record, even after a crash in
    /// between. A file that cannot be removed is put on record by a second `retention`
    /// record (`failed`), and retention stops there until the next new file.
    fn enforce_retention(&mut self) -> Result<(), WriterError> {
        if self.config.max_disk_bytes == u64::MAX && self.config.max_age.is_none() {
            return Ok(());
        }
        let dir = self.config.dir.clone();
        let io = |operation, source| WriterError::Io { operation, path: dir.clone(), source };
        let mut closed = Vec::new();
        for (index, path) in node_files(&dir, &self.config.node)? {
            if index >= self.file_index {
                continue;
            }
            let metadata = std::fs::metadata(&path).map_err(|error| io("stat a log file in", error))?;
            closed.push((index, path, metadata.len(), metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
        }
        let now = (self.config.clock)();
        let mut kept_bytes: u64 = closed.iter().map(|(_, _, bytes, _)| *bytes).sum();
        let reserve = self.config.max_file_bytes;
        let mut removed = Vec::new();
        let mut reasons = Vec::new();
        for (position, (index, path, bytes, modified)) in closed.iter().enumerate() {
            let over_budget = kept_bytes.saturating_add(reserve) > self.config.max_disk_bytes;
            let too_old = self.config.max_age.is_some_and(|max_age| now.duration_since(*modified).is_ok_and(|age| age > max_age));
            if !over_budget && !too_old {
                break;
            }
            for (reason, applies) in [("max-disk-mib", over_budget), ("max-age-days", too_old)] {
                if applies && !reasons.contains(&reason) {
                    reasons.push(reason);
                }
            }
            kept_bytes -= bytes;
            // The file's seq range from its header and the next file's header (unverified:
            // informative only; `log verify` checks the files that are left).
            let next = closed.get(position + 1).map_or_else(|| self.current_path(), |(_, next, _, _)| next.clone());
            let first_seq = first_line_field(path, "seq");
            let last_seq = first_line_field(&next, "prev_file_last_seq");
            let mut entry = serde_json::Map::new();
            entry.insert("file".to_string(), file_name(&self.config.node, *index).into());
            entry.insert("file_index".to_string(), (*index).into());
            entry.insert("bytes".to_string(), (*bytes).into());
            entry.insert("first_seq".to_string(), first_seq.into());
            entry.insert("last_seq".to_string(), last_seq.into());
            removed.push((path.clone(), serde_json::Value::Object(entry)));
        }
        let Some(through) = removed.len().checked_sub(1).map(|last| closed[last].0) else {
            return Ok(());
        };
        let mut record = serde_json::Map::new();
        record.insert("type".to_string(), "retention".into());
        record.insert("reason".to_string(), reasons.join(", ").into());
        record.insert("max_disk_bytes".to_string(), self.config.max_disk_bytes.into());
        record.insert("max_age_days".to_string(), self.config.max_age.map(|age| age.as_secs() / 86_400).into());
        record.insert("removed".to_string(), removed.iter().map(|(_, entry)| entry.clone()).collect::<Vec<_>>().into());
        record.insert("removed_files".to_string(), removed.len().into());
        record.insert("removed_bytes".to_string(), closed.iter().take(removed.len()).map(|(_, _, bytes, _)| *bytes).sum::<u64>().into());
        record.insert("removed_through_index".to_string(), through.into());
        record.insert("written_at_us".to_string(), unix_us(now).into());
        self.append_record(&record)?;
        self.sync()?;
        for (path, entry) in &removed {
            if let Err(error) = std::fs::remove_file(path) {
                if error.kind() == std::io::ErrorKind::NotFound {
                    continue;
                }
                let mut failed = serde_json::Map::new();
                failed.insert("type".to_string(), "retention".into());
                failed.insert("reason".to_string(), "a file could not be removed; retention stopped until the next file".into());
                failed.insert("failed".to_string(), entry.clone());
                failed.insert("error".to_string(), error.to_string().into());
                self.append_record(&failed)?;
                break;
            }
        }
        if let Ok(dir) = File::open(&self.config.dir) {
            let _ = dir.sync_all();
        }
        self.sync()
    }

    fn current_path(&self) -> PathBuf {
        self.config.dir.join(file_name(&self.config.node, self.file_index))
    }
}

/// µs since the Unix epoch (0 before it).
fn unix_us(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
}

/// An integer field of a file's first line (its header), if readable.
fn first_line_field(path: &Path, field: &str) -> Option<u64> {
    let mut first = String::new();
    BufReader::new(File::open(path).ok()?.take(64 * 1024)).read_line(&mut first).ok()?;
    serde_json::from_str::<serde_json::Value>(&first).ok()?.get(field)?.as_u64()
}

/// How often the clock is read for daily rotation.
const DAY_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The local calendar day of `time` as yyyymmdd (the time zone of /etc/localtime or TZ;
/// UTC where there is none, as in the appliance's initramfs).
pub fn local_day(time: SystemTime) -> u32 {
    let secs = match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => since.as_secs() as libc::time_t,
        Err(_) => 0,
    };
    // SAFETY: `tm` is plain data that localtime_r fills; both pointers are valid for the
    // call, and localtime_r is the thread-safe variant.
    #[allow(unsafe_code)]
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return 0;
        }
        tm
    };
    ((tm.tm_year + 1900) * 10_000 + (tm.tm_mon + 1) * 100 + tm.tm_mday) as u32
}

/// The local time zone's offset from UTC at `secs` since the epoch, in seconds (the zone
/// [`local_day`] uses; 0 where there is none).
pub fn local_utc_offset_secs(secs: i64) -> i64 {
    let secs = secs as libc::time_t;
    // SAFETY: as in `local_day`.
    #[allow(unsafe_code)]
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return 0;
        }
        tm
    };
    tm.tm_gmtoff
}

/// The writer's fsync thread: group commit without stopping the writer.
#[derive(Debug)]
struct Syncer {
    shared: Arc<(Mutex<SyncState>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct SyncState {
    /// The newest fsync asked for: the file and the last seq written to it.
    pending: Option<(Arc<File>, PathBuf, u64)>,
    durable: u64,
    /// A failed fsync poisons the writer: what was written may not be on disk, and
    /// retrying an fsync after a failure does not make it so.
    failed: Option<(PathBuf, std::io::ErrorKind, String)>,
    stop: bool,
}

impl Syncer {
    fn start(durable: u64) -> Syncer {
        let shared = Arc::new((Mutex::new(SyncState { durable, ..SyncState::default() }), Condvar::new()));
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("log-fsync".to_string())
            .spawn(move || {
                let (lock, ready) = &*thread_shared;
                let mut state = lock.lock().expect("sync state lock");
                loop {
                    if let Some((file, path, seq)) = state.pending.take() {
                        drop(state);
                        let result = file.sync_data();
                        state = lock.lock().expect("sync state lock");
                        match result {
                            Ok(()) => state.durable = state.durable.max(seq),
                            Err(error) => {
                                if state.failed.is_none() {
                                    state.failed = Some((path, error.kind(), error.to_string()));
                                }
                            }
                        }
                        ready.notify_all();
                    } else if state.stop {
                        return;
                    } else {
                        state = ready.wait(state).expect("sync state lock");
                    }
                }
            })
            .expect("spawn the log fsync thread");
        Syncer { shared, thread: Some(thread) }
    }

    fn request(&self, file: Arc<File>, path: PathBuf, seq: u64) {
        let (lock, ready) = &*self.shared;
        let mut state = lock.lock().expect("sync state lock");
        if state.durable < seq {
            state.pending = Some((file, path, seq));
            ready.notify_all();
        }
    }

    fn durable(&self) -> u64 {
        self.shared.0.lock().expect("sync state lock").durable
    }

    fn check(&self) -> Result<(), WriterError> {
        let state = self.shared.0.lock().expect("sync state lock");
        match &state.failed {
            Some((path, kind, message)) => Err(WriterError::Io { operation: "fsync", path: path.clone(), source: std::io::Error::new(*kind, message.clone()) }),
            None => Ok(()),
        }
    }

    fn wait_for(&self, seq: u64) -> Result<(), WriterError> {
        let (lock, ready) = &*self.shared;
        let mut state = lock.lock().expect("sync state lock");
        while state.durable < seq && state.failed.is_none() {
            state = ready.wait(state).expect("sync state lock");
        }
        drop(state);
        self.check()
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.0.lock().expect("sync state lock").stop = true;
        self.shared.1.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The node's log files in `dir`, by index.
fn node_files(dir: &Path, node: &str) -> Result<Vec<(u64, PathBuf)>, WriterError> {
    let prefix = format!("events-{node}-");
    let entries = std::fs::read_dir(dir).map_err(|source| WriterError::Io { operation: "list", path: dir.to_path_buf(), source })?;
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(index) = name.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix(".jsonl")).and_then(|index| index.parse::<u64>().ok()) {
            files.push((index, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// The newest authentic record's delivery, searching files from the newest back (files
/// after it hold only headers and recovery records, written by restarts without events).
/// A line the key did not sign is never believed: a forged delivery position would make
/// the log task drop real events as already written.
fn last_delivery(files: &[(u64, PathBuf)], node: &str, key: &LogKey) -> Result<Option<Delivery>, WriterError> {
    let marker = format!("\"{DELIVERY_STREAM_FIELD}\":\"");
    for (_, path) in files.iter().rev() {
        for line in tail_lines(path)?.iter().rev() {
            if !line.contains(&marker) || !is_authentic(line, node, key) {
                continue;
            }
            let corrupt = || WriterError::Corrupt { path: path.clone(), line: 0, detail: "unreadable delivery fields".to_string() };
            let value: serde_json::Value = serde_json::from_str(line).map_err(|_| corrupt())?;
            let stream = value[DELIVERY_STREAM_FIELD].as_str().and_then(|hex| u64::from_str_radix(hex, 16).ok()).ok_or_else(corrupt)?;
            let seq = value[DELIVERY_SEQ_FIELD].as_u64().ok_or_else(corrupt)?;
            return Ok(Some(Delivery { stream, seq }));
        }
    }
    Ok(None)
}

/// How many of the newest files are searched for the last checkpoint at open. Every file
/// a writer closed ends with one, so only files cut by crashes lack one; a log written
/// before checkpoints existed has none, and its records stay verifiable by HMAC only.
const CHECKPOINT_SEARCH_FILES: usize = 3;

/// The last checkpoint's digest and the records after it (up to `last_seq`, the record
/// the chain continues from), as a window the next checkpoint covers. Only authentic
/// records (HMAC) that continue the chain from the checkpoint count; anything else is
/// left uncovered (readers quarantine it). When no checkpoint is found in the newest
/// files, or the records after it do not reach `last_seq`, checkpoints start a new chain
/// at this run's first record.
fn uncovered_tail(files: &[(u64, PathBuf)], node: &str, key: &LogKey, last_seq: u64) -> Result<([u8; 32], Option<Window>), WriterError> {
    let fresh = Ok((GENESIS_DIGEST, None));
    // Lines of the searched files, oldest file first, from the newest file back.
    let mut lines: Vec<String> = Vec::new();
    for (_, path) in files.iter().rev().take(CHECKPOINT_SEARCH_FILES) {
        let text = std::fs::read(path).map_err(|source| WriterError::Io { operation: "read", path: path.clone(), source })?;
        let mut file_lines: Vec<String> =
            text.split(|byte| *byte == b'\n').filter(|line| !line.is_empty()).filter_map(|line| String::from_utf8(line.to_vec()).ok()).collect();
        let checkpoint = file_lines.iter().rposition(|line| {
            line.contains(CHECKPOINT_TYPE)
                && serde_json::from_str::<crate::verify::RecordHead>(line)
                    .is_ok_and(|head| head.kind.as_deref() == Some(CHECKPOINT_TYPE) && head.seq <= Some(last_seq))
                && is_authentic(line, node, key)
        });
        file_lines.append(&mut lines);
        lines = file_lines;
        let Some(at) = checkpoint else { continue };
        let value: serde_json::Value = serde_json::from_str(&lines[at]).unwrap_or_default();
        let (Some(mut seq), Some(mut tag), Some(digest)) =
            (value["seq"].as_u64(), value["hmac"].as_str().map(str::to_string), value["covered_sha256"].as_str().and_then(|hex| hex::decode(hex).ok()))
        else {
            return fresh;
        };
        let Ok(digest) = <[u8; 32]>::try_from(digest.as_slice()) else { return fresh };
        let mut window: Option<Window> = None;
        for line in &lines[at + 1..] {
            if seq == last_seq {
                break;
            }
            let Ok(head) = serde_json::from_str::<crate::verify::RecordHead>(line) else { continue };
            if head.seq != Some(seq + 1) || head.prev_tag.as_deref() != Some(tag.as_str()) || !is_authentic(line, node, key) {
                continue;
            }
            seq += 1;
            tag = line[line.len() - 66..line.len() - 2].to_string();
            let window = window.get_or_insert_with(|| Window::new(&digest, seq));
            window.add(line.as_bytes());
            window.add_newline();
        }
        return if seq == last_seq { Ok((digest, window)) } else { fresh };
    }
    fresh
}

/// Where the new file's chain starts, from what [`check_newest_file`] found.
struct Start {
    next_index: u64,
    last_seq: u64,
    last_tag: String,
    /// The `recovery` record to write after the header when the newest file did not verify.
    damage: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Start {
    fn after(index: u64, found: crate::verify::NewestFile) -> Start {
        let next_index = index + 1;
        let Some(failure) = found.failure else {
            let (last_seq, last_tag) = found.last_verified.expect("a file that verified has a record");
            return Start { next_index, last_seq, last_tag, damage: None };
        };
        let verified_seq = found.last_verified.as_ref().map(|(seq, _)| *seq);
        let authentic_seq = found.highest_authentic.as_ref().map(|(seq, _)| *seq);
        let mut record = serde_json::Map::new();
        record.insert("type".to_string(), "recovery".into());
        let file_name = failure.path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        record.insert("damaged_file".to_string(), file_name.into());
        record.insert("damaged_line".to_string(), failure.line.into());
        record.insert("failure".to_string(), failure.reason.to_string().into());
        record.insert("last_verified_seq".to_string(), verified_seq.into());
        record.insert("highest_authentic_seq".to_string(), authentic_seq.into());
        let highest_seq = authentic_seq.max(found.highest_written_seq);
        let (last_seq, last_tag) = match found.last_verified {
            Some((seq, tag)) if highest_seq <= Some(seq) => {
                // What failed claims no seq beyond the verified chain (garbage, a replayed
                // old line): continuing gives no seq twice.
                record.insert(
                    "reason".to_string(),
                    "the newest file did not verify: lines that do not belong follow its chain; the chain continues from its last verified record".into(),
                );
                (seq, tag)
            }
            _ => {
                // A line the chain cannot account for claims a later seq (a genuine record
                // altered, removed or moved, or a forged one): nothing in the file is
                // continued. The new anchor's seq is above every seq written there (a
                // lower bound for readers' freshness checks, not a link: the tag is the
                // genesis tag), so no seq appears twice.
                record.insert("reason".to_string(), "the newest file did not verify; the chain is not continued from it and starts a new anchor here".into());
                (highest_seq.unwrap_or(0), GENESIS_TAG.to_string())
            }
        };
        Start { next_index, last_seq, last_tag, damage: Some(record) }
    }
}

/// The complete lines in the last MiB of a file (records are far smaller).
fn tail_lines(path: &Path) -> Result<Vec<String>, WriterError> {
    let io = |operation, source| WriterError::Io { operation, path: path.to_path_buf(), source };
    let mut file = File::open(path).map_err(|error| io("open", error))?;
    let length = file.seek(SeekFrom::End(0)).map_err(|error| io("seek", error))?;
    let tail = length.saturating_sub(1 << 20);
    file.seek(SeekFrom::Start(tail)).map_err(|error| io("seek", error))?;
    let mut lines = Vec::new();
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|error| io("read", error))?;
        // The first line of a tail that starts mid-file is a fragment.
        if number == 0 && tail > 0 {
            continue;
        }
        lines.push(line);
    }
    Ok(lines)
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

impl LogWriter {
    /// Lets go of the log without writing anything more (no checkpoint, no flush of what
    /// is buffered): for an owner whose writes failed, which opens the log again with a
    /// new writer (whose recovery puts a cut line on record). What was not synced is not
    /// acknowledged, so its producer sends it again.
    pub fn abandon(mut self) {
        self.file = None;
        self.buffer.clear();
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Best effort: an orderly owner calls `checkpoint` and `sync` and sees its errors.
        if self.file.is_some() {
            let _ = self.append_checkpoint();
            let _ = self.sync();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_number_at_its_maximum_is_an_error_not_a_wrap() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = || LogKey::from_bytes([3; 32]);
        // A newest file whose header has seq u64::MAX - 1 (older files removed).
        let mut sealer = Sealer::new("n", key(), u64::MAX - 2, GENESIS_TAG);
        let mut header = serde_json::Map::new();
        header.insert("type".to_string(), "header".into());
        header.insert("schema".to_string(), SCHEMA.into());
        header.insert("node".to_string(), "n".into());
        header.insert("file_index".to_string(), 3.into());
        header.insert("prev_file_last_seq".to_string(), (u64::MAX - 2).into());
        header.insert("prev_file_last_tag".to_string(), GENESIS_TAG.into());
        let mut line = Vec::new();
        sealer.seal_record(&header, &mut line).expect("seal");
        std::fs::write(dir.path().join(file_name("n", 3)), &line).expect("write");

        let config = WriterConfig { rotate_daily: false, ..WriterConfig::new(dir.path().to_path_buf(), "n".to_string()) };
        let mut writer = LogWriter::open(config, key()).expect("the next file's header takes the last seq");
        assert_eq!(writer.last_seq(), u64::MAX);
        let mut event = serde_json::Map::new();
        event.insert("type".to_string(), "event".into());
        assert!(matches!(writer.append(&event), Err(WriterError::SequenceExhausted)));
        assert!(matches!(writer.append_json(r#"{"type":"event"}"#, None), Err(WriterError::SequenceExhausted)));
        assert_eq!(writer.last_seq(), u64::MAX, "nothing wrapped");
        writer.sync().expect("sync");
        drop(writer);
        let written = std::fs::read_to_string(dir.path().join(file_name("n", 4))).expect("read");
        assert_eq!(written.lines().count(), 1, "only the header at u64::MAX");
        let config = WriterConfig { rotate_daily: false, ..WriterConfig::new(dir.path().to_path_buf(), "n".to_string()) };
        assert!(matches!(LogWriter::open(config, key()), Err(WriterError::SequenceExhausted)), "no header can follow u64::MAX");
    }
}
