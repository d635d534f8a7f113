//! Writing: one file at a time, a header first, rotation by size and by local day,
//! group-commit fsync on a background thread, and recovery of a partial last line after
//! a crash.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::chain::{BodyError, Delivery, Sealer, DELIVERY_SEQ_FIELD, DELIVERY_STREAM_FIELD, GENESIS_TAG, SCHEMA};
use crate::key::LogKey;

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("failed to {operation} `{path}`")]
    Io { operation: &'static str, path: PathBuf, source: std::io::Error },
    #[error("`{path}` line {line} is not a log record: {detail}")]
    Corrupt { path: PathBuf, line: usize, detail: String },
    #[error(transparent)]
    Body(#[from] BodyError),
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
    /// The wall clock, for daily rotation (tests replace it).
    pub clock: fn() -> SystemTime,
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
            clock: SystemTime::now,
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
    /// Local day (yyyymmdd) the current file belongs to, and when to look at the clock again.
    file_day: u32,
    next_day_check: SystemTime,
    /// Records appended since the last commit, and when the first of them was.
    uncommitted: u32,
    uncommitted_since: Option<Instant>,
    last_delivery: Option<Delivery>,
    syncer: Syncer,
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
        let files = node_files(&config.dir, &config.node)?;
        let (next_index, last_seq, last_tag, recovered) = match files.last() {
            None => (0, 0, GENESIS_TAG.to_string(), None),
            Some((index, path)) => {
                let recovered = quarantine_partial_line(path, &config.dir.join(format!("quarantine-{}.jsonl", config.node)))?;
                let (seq, tag) = last_record(path)?;
                (index + 1, seq, tag, recovered)
            }
        };
        let last_delivery = last_delivery(&files)?;
        let sealer = Sealer::new(&config.node, key, last_seq, &last_tag);
        let now = (config.clock)();
        let mut writer = LogWriter {
            sealer,
            file: None,
            buffer: Vec::with_capacity(WRITE_BUFFER_BYTES + 16 * 1024),
            file_index: next_index,
            file_bytes: 0,
            file_day: local_day(now),
            next_day_check: now + DAY_CHECK_INTERVAL,
            uncommitted: 0,
            uncommitted_since: None,
            last_delivery,
            syncer: Syncer::start(last_seq),
            config,
        };
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

    /// The sequence number of the last record appended.
    pub fn last_seq(&self) -> u64 {
        self.sealer.last_seq()
    }

    /// Every record up to this sequence number is on disk (fsync returned).
    pub fn durable_seq(&self) -> u64 {
        self.syncer.durable()
    }

    /// Appends one record; returns its sequence number. Durable once
    /// [`LogWriter::durable_seq`] reaches it (see the type's documentation).
    pub fn append(&mut self, record: &serde_json::Map<String, serde_json::Value>) -> Result<u64, WriterError> {
        self.before_append()?;
        let seq = self.sealer.seal(record, &mut self.buffer);
        self.after_append(seq)
    }

    /// Appends one record given as JSON text (one object on one line), as the log task
    /// receives it from the pipeline, with where it came from.
    pub fn append_json(&mut self, record: &str, delivery: Option<Delivery>) -> Result<u64, WriterError> {
        self.before_append()?;
        let seq = self.sealer.seal_json(record, delivery, &mut self.buffer)?;
        if delivery.is_some() {
            self.last_delivery = delivery;
        }
        self.after_append(seq)
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
            self.sync()?;
            self.file = None;
            self.file_index += 1;
            self.start_file()?;
        }
        Ok(())
    }

    fn after_append(&mut self, seq: u64) -> Result<u64, WriterError> {
        self.uncommitted += 1;
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
        self.buffer.clear();
        Ok(())
    }

    fn start_file(&mut self) -> Result<(), WriterError> {
        let path = self.config.dir.join(file_name(&self.config.node, self.file_index));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|source| WriterError::Io { operation: "create log file", path: path.clone(), source })?;
        self.file = Some((Arc::new(file), path));
        self.file_bytes = 0;
        let mut header = serde_json::Map::new();
        header.insert("type".to_string(), "header".into());
        header.insert("schema".to_string(), SCHEMA.into());
        header.insert("node".to_string(), self.config.node.clone().into());
        header.insert("file_index".to_string(), self.file_index.into());
        header.insert("prev_file_last_seq".to_string(), self.sealer.last_seq().into());
        header.insert("prev_file_last_tag".to_string(), self.sealer.last_tag().into());
        self.sealer.seal(&header, &mut self.buffer);
        // The new file's directory entry must be durable too, or a crash could lose the
        // whole file while its records were acknowledged.
        if let Ok(dir) = File::open(&self.config.dir) {
            let _ = dir.sync_all();
        }
        self.sync()
    }
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

/// The newest record's delivery, searching files from the newest back (files after it
/// hold only headers and recovery records, written by restarts without events).
fn last_delivery(files: &[(u64, PathBuf)]) -> Result<Option<Delivery>, WriterError> {
    let marker = format!("\"{DELIVERY_STREAM_FIELD}\":\"");
    for (_, path) in files.iter().rev() {
        for line in tail_lines(path)?.iter().rev() {
            if !line.contains(&marker) {
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

/// The seq and tag of a file's last record.
fn last_record(path: &Path) -> Result<(u64, String), WriterError> {
    let lines = tail_lines(path)?;
    let Some(line) = lines.last() else {
        return Err(WriterError::Corrupt { path: path.to_path_buf(), line: 0, detail: "empty file".to_string() });
    };
    let corrupt = |detail: &str| WriterError::Corrupt { path: path.to_path_buf(), line: 0, detail: format!("last line: {detail}") };
    let value: serde_json::Value = serde_json::from_str(line).map_err(|_| corrupt("not JSON"))?;
    let seq = value["seq"].as_u64().ok_or_else(|| corrupt("no seq"))?;
    let tag = value["hmac"].as_str().ok_or_else(|| corrupt("no hmac"))?.to_string();
    Ok((seq, tag))
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Best effort: an orderly owner calls `sync` and sees its errors.
        if self.file.is_some() {
            let _ = self.sync();
        }
    }
}
