//! The log task: the only writer of the signed event log. It writes the detect task's
//! events in order, fsyncs, then acknowledges; a sequence number seen before is dropped.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use mld_config::Config;
use mld_eventlog::{CheckpointSigningKey, Delivery, LogKey, LogWriter, WriterError};
use mld_ipc::{is_new, Connection, EventAck, EventMessage, LogCounters, TaskCounters};
use tracing::{error, info, warn};

use super::{Control, Start, DRAIN_DEADLINE};
use crate::exit::Exit;

/// Acknowledgements waiting for the detect task's socket, at most.
const ACK_OUT_BYTES: usize = 64 * 1024;
/// When the log cannot be written, how often it is opened again.
const STORAGE_RETRY: Duration = Duration::from_secs(1);

/// The detect task's connection and where its stream stands in the log.
#[derive(Debug)]
pub struct EventIntake {
    listener: UnixListener,
    producer_uid: u32,
    connection: Option<Connection>,
    /// The stream id the connection said hello with.
    producer: Option<u64>,
    /// Where the log ends in the producer's stream, read back from the log itself, so a
    /// restart of this task neither duplicates nor loses what the detect task sends again.
    pub delivered: Delivery,
    pub counters: LogCounters,
}

impl EventIntake {
    pub fn new(listener: UnixListener, producer_uid: u32, delivered: Delivery) -> EventIntake {
        EventIntake { listener, producer_uid, connection: None, producer: None, delivered, counters: LogCounters::default() }
    }

    /// Forgets the connection (the log failed: the detect task keeps what was not
    /// acknowledged and sends it again).
    pub fn disconnect(&mut self) {
        self.connection = None;
    }

    /// One pass: admit the detect task (the newest connection replaces an older one),
    /// read its events, write them, fsync, and only then acknowledge the newest.
    /// Returns whether anything happened.
    pub fn step(&mut self, writer: &mut LogWriter) -> anyhow::Result<bool> {
        let mut busy = false;
        while let Some(accepted) = mld_ipc::accept(&self.listener, &[self.producer_uid]) {
            match accepted.map_err(anyhow::Error::from).and_then(|peer| Ok(Connection::new(peer.stream, ACK_OUT_BYTES)?)) {
                Ok(connection) => {
                    self.connection = Some(connection);
                    self.producer = None;
                    busy = true;
                }
                Err(error) => warn!(error = %error, "refused an event connection"),
            }
        }
        let Some(connection) = self.connection.as_mut() else { return Ok(busy) };
        busy |= connection.receive().bytes > 0;
        let mut newest = None;
        loop {
            match connection.next_message::<EventMessage>() {
                Ok(Some(EventMessage::Hello { stream })) => {
                    if stream != self.delivered.stream {
                        // A new run of the detect task: its sequence numbers start again.
                        info!(stream = format_args!("{stream:016x}"), "a new event stream");
                        self.delivered = Delivery { stream, seq: 0 };
                    }
                    self.producer = Some(stream);
                }
                Ok(Some(EventMessage::Event { seq, record })) => {
                    if self.producer != Some(self.delivered.stream) {
                        warn!("an event before the stream's hello; dropping the connection");
                        self.connection = None;
                        break;
                    }
                    newest = Some(seq);
                    if !is_new(&mut self.delivered.seq, seq) {
                        continue;
                    }
                    let delivery = Some(Delivery { stream: self.delivered.stream, seq });
                    match writer.append_json(&record, delivery) {
                        Ok(_) => self.counters.events_logged += 1,
                        Err(WriterError::Body(error)) => {
                            // Never sealed as it is (a `seq` in a body would make the rest of
                            // the file unreadable): counted, and put on record without its body.
                            self.counters.events_refused += 1;
                            warn!(seq, key = %error.key().unwrap_or("-"), error = %error, "refused an event body; writing a rejected_event record instead");
                            writer.append_rejected(&record, &error, delivery).context("failed to write the event log")?;
                        }
                        Err(error) => return Err(error).context("failed to write the event log"),
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    warn!(error = %error, "bad event frame; dropping the connection");
                    break;
                }
            }
        }
        if let Some(seq) = newest {
            // Durable first, then acknowledged.
            writer.sync().context("failed to fsync the event log")?;
            if let Some(connection) = self.connection.as_mut() {
                let _ = connection.send(&EventAck { seq });
            }
        }
        if self.connection.as_ref().is_some_and(|connection| !connection.is_open()) {
            self.connection = None;
        }
        Ok(busy)
    }
}

/// The durable head the supervisor was last told of (for the fleet's log anchor).
#[derive(Debug, Default)]
struct Head {
    seq: u64,
    at: Option<Instant>,
}

impl Head {
    /// Tells the supervisor the log's head once it is on disk and has moved, at most once a
    /// second.
    fn offer(&mut self, writer: &LogWriter, control: &mut Control) {
        let seq = writer.last_seq();
        if seq == self.seq || writer.durable_seq() < seq || self.at.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
            return;
        }
        control.send(&mld_ipc::TaskMessage::LogHead { seq, hmac: writer.last_tag().to_string() });
        self.seq = seq;
        self.at = Some(Instant::now());
    }
}

/// What the log takes: bytes written (by every writer this task opened) and the space its
/// directory's files use, measured every [`Usage::DISK_EVERY`].
#[derive(Debug, Default)]
struct Usage {
    /// Bytes written by the writers abandoned after a storage failure.
    earlier_writers: u64,
    disk_measured: Option<Instant>,
}

impl Usage {
    const DISK_EVERY: Duration = Duration::from_secs(5);

    fn measure(&mut self, counters: &mut LogCounters, writer: Option<&LogWriter>, dir: &std::path::Path) {
        counters.log_bytes = self.earlier_writers + writer.map_or(0, LogWriter::bytes_written);
        if self.disk_measured.is_some_and(|at| at.elapsed() < Usage::DISK_EVERY) {
            return;
        }
        self.disk_measured = Some(Instant::now());
        // The directory holds the log's files only (and retention bounds them).
        if let Ok(entries) = std::fs::read_dir(dir) {
            counters.log_disk_bytes = entries.flatten().filter_map(|entry| entry.metadata().ok()).filter(|meta| meta.is_file()).map(|meta| meta.len()).sum();
        }
    }

    fn abandoned(&mut self, writer: &LogWriter) {
        self.earlier_writers += writer.bytes_written();
    }
}

/// Opens the log writer from the handed key files. Keys are read with read_at from dups
/// of the handed fds, so the writer can be opened again after the storage failed.
fn open_writer(config: &Config, key_file: &File, signing_key_file: &File) -> anyhow::Result<LogWriter> {
    let key = LogKey::from_file(key_file.try_clone().context("failed to dup the log key fd")?, &config.log.key_file)?;
    let signer = CheckpointSigningKey::from_file(signing_key_file.try_clone().context("failed to dup the signing key fd")?, &config.log.signing_key_file)?;
    LogWriter::open_signed(crate::keys::writer_config(config), key, signer).context("failed to open the event log")
}

/// Runs the log task until shutdown.
pub fn run(start: &Start, control: &mut Control, stop: &AtomicBool, events: OwnedFd, key: OwnedFd, signing_key: OwnedFd) -> anyhow::Result<Exit> {
    let config = &start.config;
    let listener = UnixListener::from(events);
    listener.set_nonblocking(true).context("failed to configure the event socket")?;
    let (key_file, signing_key_file) = (File::from(key), File::from(signing_key));
    let mut writer = Some(open_writer(config, &key_file, &signing_key_file)?);
    for warning in config.warnings().iter().filter(|warning| warning.path.starts_with("log.")) {
        warn!(key = %warning.path, warning = %warning.message, "configuration warning");
    }
    let delivered = writer.as_ref().and_then(LogWriter::last_delivery).unwrap_or(Delivery { stream: 0, seq: 0 });
    let mut intake = EventIntake::new(listener, start.settings.detect_uid, delivered);
    control.ready();
    info!(dir = %config.log.dir.display(), "log task ready");
    // When the log cannot be written (a full disk, an IO error), the task does not exit
    // (the supervisor would hold it after a few restarts, and the log would never come
    // back): it drops the connection, so that the detect task keeps what was not
    // acknowledged (and records what overflows as a gap), and opens the log again every
    // STORAGE_RETRY until it can write; the writer's recovery puts a cut line on record.
    let mut last_attempt = Instant::now();
    let mut head = Head::default();
    let mut usage = Usage::default();
    let mut config = config.clone();
    while !stop.load(Ordering::Relaxed) && !control.shutdown_requested() {
        usage.measure(&mut intake.counters, writer.as_ref(), &config.log.dir);
        for request in control.take_requests() {
            // A configuration applied while running: rotation, group commit, retention and
            // checkpoint cadence (the directory, node and keys restart this task).
            if let mld_ipc::SupervisorMessage::Reconfigure { config_toml, .. } = request {
                match Config::from_toml(&config_toml, "the supervisor's configuration") {
                    Ok(new) => {
                        config.log = new.log;
                        if let Some(current) = writer.as_mut() {
                            current.set_cadence(&crate::keys::writer_config(&config));
                        }
                        info!("configuration applied live");
                    }
                    Err(errors) => warn!(errors = %errors, "the supervisor's new configuration does not parse here; keeping the current one"),
                }
            }
        }
        let config = &config;
        let Some(current) = writer.as_mut() else {
            if last_attempt.elapsed() >= STORAGE_RETRY {
                last_attempt = Instant::now();
                match open_writer(config, &key_file, &signing_key_file) {
                    Ok(reopened) => {
                        info!(dir = %config.log.dir.display(), "the event log can be written again");
                        intake.delivered = reopened.last_delivery().unwrap_or(intake.delivered);
                        writer = Some(reopened);
                        continue;
                    }
                    Err(error) => warn!(error = %format!("{error:#}"), "the event log still cannot be written"),
                }
            }
            control.report_due(|| TaskCounters::Log(intake.counters));
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        // Records wait at most log.checkpoint-interval-ms for their signed checkpoint,
        // which is what the ingest task waits for.
        let pass = intake.step(current).and_then(|busy| Ok(busy | current.tick().context("failed to write a checkpoint")?));
        let mut busy = match pass {
            Ok(busy) => busy,
            Err(error) => {
                error!(error = %format!("{error:#}"), "the event log cannot be written; blocking goes on, events wait in the detect task; retrying every second");
                intake.counters.log_write_failures += 1;
                intake.disconnect();
                if let Some(failed) = writer.take() {
                    usage.abandoned(&failed);
                    failed.abandon();
                }
                last_attempt = Instant::now();
                true
            }
        };
        busy |= control.report_due(|| TaskCounters::Log(intake.counters));
        if let Some(current) = writer.as_ref() {
            head.offer(current, control);
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // Shutdown order is capture, detect, log: the detect task has handed over everything
    // it had. Take what is still in the socket.
    let deadline = Instant::now() + DRAIN_DEADLINE;
    if let Some(writer) = writer.as_mut() {
        while Instant::now() < deadline && intake.step(writer)? {}
        // Nothing is left without a checkpoint at shutdown.
        writer.checkpoint().and_then(|()| writer.sync()).context("failed to fsync the event log")?;
    }
    control.finish(TaskCounters::Log(intake.counters));
    info!(events = intake.counters.events_logged, last_seq = writer.as_ref().map(LogWriter::last_seq), "log task stopped");
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mld_eventlog::WriterConfig;
    use std::os::unix::net::UnixStream;

    struct Fixture {
        dir: tempfile::TempDir,
        intake: EventIntake,
        writer: LogWriter,
        detect: UnixStream,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = LogKey::create(&dir.path().join("log.key")).expect("key");
        let signer = CheckpointSigningKey::create(&dir.path().join("signing.key")).expect("signing key");
        let log_dir = dir.path().join("log");
        std::fs::create_dir(&log_dir).expect("log dir");
        let config = WriterConfig { rotate_daily: false, sync_every_records: u32::MAX, ..WriterConfig::new(log_dir, "n".to_string()) };
        let writer = LogWriter::open_signed(config, key, signer).expect("writer");
        let path = dir.path().join("events.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let me = nix::unistd::getuid().as_raw();
        let intake = EventIntake::new(listener, me, Delivery { stream: 0, seq: 0 });
        let detect = UnixStream::connect(&path).expect("connect");
        Fixture { dir, intake, writer, detect }
    }

    fn logged_events(fixture: &Fixture) -> Vec<u64> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(fixture.dir.path().join("log")).expect("log dir") {
            let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
            for line in text.lines() {
                let value: serde_json::Value = serde_json::from_str(line).expect("json");
                if let Some(n) = value.get("n").and_then(serde_json::Value::as_u64) {
                    found.push(n);
                }
            }
        }
        found
    }

    fn send(detect: &mut UnixStream, message: &EventMessage) {
        mld_ipc::write_frame(detect, message).expect("write");
    }

    fn event(seq: u64) -> EventMessage {
        EventMessage::Event { seq, record: format!(r#"{{"type":"event","action":"alert","n":{seq}}}"#) }
    }

    fn read_ack(detect: &mut UnixStream) -> u64 {
        detect.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        mld_ipc::read_frame::<EventAck>(detect).expect("ack").expect("an ack").seq
    }

    fn step_until(fixture: &mut Fixture, logged: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while fixture.intake.counters.events_logged < logged && Instant::now() < deadline {
            fixture.intake.step(&mut fixture.writer).expect("step");
        }
    }

    #[test]
    fn an_acknowledgement_comes_only_once_the_events_are_in_the_file() {
        let mut fixture = fixture();
        send(&mut fixture.detect, &EventMessage::Hello { stream: 9 });
        for seq in 1..=3 {
            send(&mut fixture.detect, &event(seq));
        }
        step_until(&mut fixture, 3);
        assert_eq!(read_ack(&mut fixture.detect), 3);
        // The writer batches fsyncs (sync-every-records is unbounded here): what the ack
        // promises is on disk because the task synced before acknowledging.
        assert_eq!(logged_events(&fixture), vec![1, 2, 3], "acknowledged events are in the log file");
    }

    #[test]
    fn events_sent_again_after_a_reconnect_are_written_once() {
        let mut fixture = fixture();
        send(&mut fixture.detect, &EventMessage::Hello { stream: 9 });
        send(&mut fixture.detect, &event(1));
        send(&mut fixture.detect, &event(2));
        step_until(&mut fixture, 2);
        assert_eq!(read_ack(&mut fixture.detect), 2);
        // The detect task reconnects and sends 2 again with 3 (its ack was lost).
        let path = fixture.dir.path().join("events.sock");
        fixture.detect = UnixStream::connect(&path).expect("connect");
        send(&mut fixture.detect, &EventMessage::Hello { stream: 9 });
        send(&mut fixture.detect, &event(2));
        send(&mut fixture.detect, &event(3));
        step_until(&mut fixture, 3);
        assert_eq!(read_ack(&mut fixture.detect), 3);
        assert_eq!(logged_events(&fixture), vec![1, 2, 3]);
    }

    #[test]
    fn an_event_before_the_hello_drops_the_connection_and_writes_nothing() {
        let mut fixture = fixture();
        send(&mut fixture.detect, &event(1));
        // The sender sees its connection closed: it was admitted, read, and dropped.
        fixture.detect.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(5);
        let closed = loop {
            fixture.intake.step(&mut fixture.writer).expect("step");
            match std::io::Read::read(&mut fixture.detect, &mut [0u8; 64]) {
                Ok(0) => break true,
                _ if Instant::now() >= deadline => break false,
                _ => {}
            }
        };
        assert!(closed, "the connection was not dropped");
        assert!(fixture.intake.connection.is_none());
        assert_eq!(fixture.intake.counters.events_logged, 0);
        assert!(logged_events(&fixture).is_empty());
    }
}
