//! `mldefender task NAME`: the task processes the supervisor starts (not for people).
//!
//! A task finds its fds at 3, 4, ... as `MLD_TASK_FDS` names them, reads its
//! configuration from the control channel (fd 3), says `Ready`, works until told to shut
//! down (or SIGTERM), drains, says `Stopping`, and exits 0.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mld_capture::{boot_time_ns, boot_to_realtime_offset_ns, PinnedMaps, RingReader};
use mld_config::{Config, TaskKind};
use mld_flow::{FlowRecord, FlowTable};
use mld_ipc::{FlowMessage, FrameDecoder, Outbox, PipelineCounters, ResponseMessage, SupervisorMessage, TaskMessage};
use tracing::{error, info, warn};

use mld_eventlog::{Delivery, LogKey, LogWriter, WriterError};

use crate::detection::Detection;
use crate::pipeline::{CaptureSide, Emitted};
use mld_ipc::{is_new, AckWindow, EventAck, EventMessage, GapQueue, Queued};

use crate::exit::Exit;

const COUNTERS_INTERVAL: Duration = Duration::from_millis(500);
const OUTBOX_CAPACITY: usize = 65_536;
const WRITE_BUFFER_BYTES: usize = 256 * 1024;
const RECONNECT_INTERVAL: Duration = Duration::from_millis(100);
const DRAIN_DEADLINE: Duration = Duration::from_millis(1500);
/// Events in flight between the sink and the log task.
const EVENT_WINDOW: usize = 4096;
/// Events waiting for room in the window (the log task away, behind, or its disk full),
/// at most this many and this many bytes (records are ~4 KiB): beyond, the newest are
/// dropped, counted by action into one gap record written once the log is back. Blocks
/// never wait for the log (docs/event-log.md, "Gaps").
const EVENT_QUEUE_MAX_EVENTS: usize = 65_536;
const EVENT_QUEUE_MAX_BYTES: usize = 64 << 20;

/// The environment variable that carries the checkpoint public key (base64) to the
/// ingest task: public, so no fd is needed; the supervisor derives it from the signing
/// key file it checked.
pub(crate) const LOG_PUBLIC_KEY_ENV: &str = "MLD_LOG_PUBLIC_KEY";

/// The fds the supervisor handed over, by name.
struct HandedFds {
    names: Vec<String>,
}

impl HandedFds {
    fn from_env() -> anyhow::Result<HandedFds> {
        let names = std::env::var("MLD_TASK_FDS").context("MLD_TASK_FDS is not set: tasks are started by `mldefender supervise`")?;
        Ok(HandedFds { names: names.split(',').map(str::to_string).collect() })
    }

    fn take(&self, name: &str) -> anyhow::Result<OwnedFd> {
        let index = self.names.iter().position(|known| known == name).with_context(|| format!("no fd named `{name}` was handed over"))?;
        let fd = mld_supervisor::spawn::FIRST_TASK_FD + index as RawFd;
        #[allow(unsafe_code)]
        // SAFETY: the supervisor placed this fd at this number for this process, and each
        // name is taken once, so nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// The control channel to the supervisor.
struct Control {
    stream: UnixStream,
    decoder: FrameDecoder,
    /// Test only: memory to allocate once ready, for the memory-budget tests.
    test_allocate_bytes: u64,
    ballast: Vec<u8>,
}

impl Control {
    /// Tells the supervisor the task is ready; then (test only) grows to the test size,
    /// touching every page so that it is resident.
    fn ready(&mut self) {
        self.send(&TaskMessage::Ready);
        if self.test_allocate_bytes > 0 {
            warn!(mib = self.test_allocate_bytes >> 20, "test-allocate-mib is set: allocating");
            self.ballast = vec![1u8; self.test_allocate_bytes as usize];
            std::hint::black_box(&self.ballast);
        }
    }

    fn send(&mut self, message: &TaskMessage) {
        let _ = self.stream.set_nonblocking(false);
        if let Err(error) = mld_ipc::write_frame(&mut self.stream, message) {
            warn!(error = %error, "failed to write to the supervisor");
        }
        let _ = self.stream.set_nonblocking(true);
    }

    /// True once the supervisor asked for a shutdown (or went away).
    fn shutdown_requested(&mut self) -> bool {
        let mut buffer = [0u8; 1024];
        loop {
            match self.stream.read(&mut buffer) {
                Ok(0) => return true,
                Ok(n) => self.decoder.push(&buffer[..n]),
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return true,
            }
        }
        matches!(self.decoder.next_message::<SupervisorMessage>(), Ok(Some(SupervisorMessage::Shutdown)))
    }
}

/// Test builds only (debug assertions on, as `cargo test` builds the binary): the task
/// named by this variable floods its control channel instead of working, for the lab test
/// of the supervisor's control-channel budget. Release builds neither pass it to tasks
/// nor honour it.
const TEST_FLOOD_CONTROL: &str = "MLD_TEST_FLOOD_CONTROL";
/// Test builds only: the detect task's event window and queue hold this many events
/// (instead of 4,096 and 65,536), so a lab test can overflow them in seconds.
const TEST_EVENT_QUEUE_MAX: &str = "MLD_TEST_EVENT_QUEUE_MAX";

/// The test hooks' variables the supervisor passes on to its tasks (none in release builds).
pub fn test_hook_env() -> Vec<(String, String)> {
    if cfg!(debug_assertions) {
        [TEST_FLOOD_CONTROL, TEST_EVENT_QUEUE_MAX].into_iter().filter_map(|name| std::env::var(name).ok().map(|value| (name.to_string(), value))).collect()
    } else {
        Vec::new()
    }
}

/// Test builds only: says ready, then writes counters frames as fast as the supervisor
/// takes them, until it is killed.
fn flood_control(name: &str, mut stream: UnixStream) -> ! {
    warn!(task = name, "MLD_TEST_FLOOD_CONTROL is set: flooding the control channel");
    let _ = mld_ipc::write_frame(&mut stream, &TaskMessage::Ready);
    let counters = TaskMessage::Counters(PipelineCounters::default());
    loop {
        if mld_ipc::write_frame(&mut stream, &counters).is_err() {
            std::process::exit(4);
        }
    }
}

pub fn run(name: &str) -> anyhow::Result<Exit> {
    crate::logging::init("mldefender-task");
    let kind = TaskKind::parse(name).with_context(|| format!("unknown task `{name}`"))?;
    let fds = HandedFds::from_env()?;
    let mut stream = UnixStream::from(fds.take("control")?);
    let config_toml = match mld_ipc::read_frame::<SupervisorMessage>(&mut stream).context("failed to read the configuration")? {
        Some(SupervisorMessage::Configure { config_toml }) => config_toml,
        other => anyhow::bail!("expected the configuration first, got {other:?}"),
    };
    let config = Config::from_toml(&config_toml, "the supervisor's configuration").map_err(|errors| anyhow::anyhow!("{errors}"))?;
    let task = config.tasks.iter().find(|task| task.kind == kind).context("task missing from the configuration")?.clone();
    if task.test_exit_at_start {
        warn!(task = name, "test-exit-at-start is set: exiting with status 3");
        std::process::exit(3);
    }
    if cfg!(debug_assertions) && std::env::var(TEST_FLOOD_CONTROL).is_ok_and(|task| task == name) {
        flood_control(name, stream);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("failed to install the signal handlers")?;
    }
    stream.set_nonblocking(true)?;
    let mut control = Control { stream, decoder: FrameDecoder::default(), test_allocate_bytes: task.test_allocate_bytes, ballast: Vec::new() };
    match kind {
        TaskKind::Capture => capture(&config, &fds, &mut control, &stop),
        TaskKind::Detect => detect(&config, &config_toml, &fds, &mut control, &stop),
        TaskKind::Log => log_task(&config, &fds, &mut control, &stop),
        TaskKind::Ingest => ingest_task(&config, &fds, &mut control, &stop),
    }
}

/// The connection to the detect task, non-blocking, with a bounded queue in front of it:
/// flows and reports go out, block commands come back.
struct FlowSender {
    path: String,
    stream: Option<UnixStream>,
    next_attempt: Instant,
    outbox: Outbox<FlowMessage>,
    /// Block results and expiries: never dropped for lack of room (they are few).
    urgent: std::collections::VecDeque<FlowMessage>,
    decoder: FrameDecoder,
    responses: Vec<ResponseMessage>,
    /// Encoded frames, and how many of their bytes are already written to the stream.
    buffer: Vec<u8>,
    written: usize,
    sent: u64,
    lost_on_disconnect: u64,
}

impl FlowSender {
    /// Reads the block commands the detect task sent (into `responses`); false when the
    /// connection ended.
    fn receive(&mut self) -> bool {
        let Some(stream) = self.stream.as_mut() else { return false };
        let mut chunk = [0u8; 4096];
        let (_, open) = read_available(stream, &mut self.decoder, &mut chunk);
        loop {
            match self.decoder.next_message::<ResponseMessage>() {
                Ok(Some(message)) => self.responses.push(message),
                Ok(None) => break,
                Err(error) => {
                    warn!(error = %error, "bad frame from the detect task");
                    break;
                }
            }
        }
        if !open {
            self.stream = None;
            self.next_attempt = Instant::now() + RECONNECT_INTERVAL;
        }
        open
    }

    fn pump(&mut self) {
        if self.stream.is_none() && Instant::now() >= self.next_attempt {
            match UnixStream::connect(&self.path) {
                Ok(stream) => {
                    let _ = stream.set_nonblocking(true);
                    self.decoder = FrameDecoder::default();
                    self.stream = Some(stream);
                }
                Err(_) => self.next_attempt = Instant::now() + RECONNECT_INTERVAL,
            }
        }
        if !self.receive() {
            return;
        }
        let Some(stream) = self.stream.as_mut() else { return };
        while self.buffer.len() < WRITE_BUFFER_BYTES {
            let message = match self.urgent.pop_front() {
                Some(message) => message,
                None => match self.outbox.pop() {
                    Some(message) => message,
                    None => break,
                },
            };
            let flow = matches!(message, FlowMessage::Flow { .. });
            if mld_ipc::write_frame(&mut self.buffer, &message).is_ok() && flow {
                self.sent += 1;
            }
        }
        while self.written < self.buffer.len() {
            match stream.write(&self.buffer[self.written..]) {
                Ok(0) => break,
                Ok(n) => self.written += n,
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    // The sink went away (it restarts). A frame cut in the middle is lost
                    // (counted); whole frames not yet written go to the next connection.
                    if self.written > 0 {
                        let head = frame_length(&self.buffer);
                        self.buffer.drain(..head);
                        self.lost_on_disconnect += 1;
                        self.written = 0;
                    }
                    self.stream = None;
                    self.next_attempt = Instant::now() + RECONNECT_INTERVAL;
                    break;
                }
            }
        }
        // Drop the frames written completely; keep a partly written one whole.
        let mut complete = 0;
        while complete < self.buffer.len() && complete + frame_length(&self.buffer[complete..]) <= self.written {
            complete += frame_length(&self.buffer[complete..]);
        }
        if complete > 0 {
            self.buffer.drain(..complete);
            self.written -= complete;
        }
    }

    fn idle(&self) -> bool {
        self.outbox.is_empty() && self.urgent.is_empty() && self.buffer.is_empty()
    }
}

/// The length of the frame at the start of `bytes` (its 4-byte big-endian length prefix
/// and body), as `mld_ipc::write_frame` writes it.
fn frame_length(bytes: &[u8]) -> usize {
    let prefix: [u8; 4] = bytes[..4].try_into().expect("a frame starts with its length");
    4 + u32::from_be_bytes(prefix) as usize
}

fn capture(config: &Config, fds: &HandedFds, control: &mut Control, stop: &AtomicBool) -> anyhow::Result<Exit> {
    let mut reader = RingReader::from_fd(fds.take("ring")?)?;
    let mut maps = PinnedMaps::from_fds(fds.take("allow")?, fds.take("deny")?, fds.take("counters")?)?;
    let offset_ns = boot_to_realtime_offset_ns();
    let mut table = FlowTable::new(config.flow_table());
    let mut side = CaptureSide::new(config, &mut table);
    let mut sender = FlowSender {
        path: std::env::var("MLD_FLOWS_SOCKET").context("MLD_FLOWS_SOCKET is not set")?,
        stream: None,
        next_attempt: Instant::now(),
        outbox: Outbox::new(OUTBOX_CAPACITY),
        urgent: std::collections::VecDeque::new(),
        decoder: FrameDecoder::default(),
        responses: Vec::new(),
        buffer: Vec::new(),
        written: 0,
        sent: 0,
        lost_on_disconnect: 0,
    };
    let mut finished: Vec<FlowRecord> = Vec::with_capacity(1024);
    let mut emitted: Vec<Emitted> = Vec::with_capacity(1024);
    let mut counters = PipelineCounters::default();
    let mut last_counters = Instant::now();
    let mut last_sweep = Instant::now();
    let mut last_tick = Instant::now();
    let mut protected = mld_hostnet::Protected::from_host(&config.response, &config.allowlist, &mld_hostnet::HostNet::read());
    let mut last_network_refresh = Instant::now();
    control.ready();
    info!("capture task ready");

    let queue = |emitted: &mut Vec<Emitted>, sender: &mut FlowSender, counters: &mut PipelineCounters| {
        for item in emitted.drain(..) {
            match item {
                Emitted::Flow(flow) => {
                    if flow.end_reason != mld_flow::EndReason::Active {
                        counters.flows_finished += 1;
                    }
                    sender.outbox.push(FlowMessage::Flow { flow: Box::new(flow) });
                }
                Emitted::Source(report) => {
                    sender.outbox.push(FlowMessage::Source { report: Box::new(report) });
                }
            }
        }
    };
    while !stop.load(Ordering::Relaxed) && !control.shutdown_requested() {
        // Block commands from the detect task wake the loop at once.
        let wake = sender.stream.as_ref().map(std::os::fd::AsFd::as_fd);
        counters.records_read += reader.read_or_wake(Duration::from_millis(20), 8192, wake, |mut record| {
            record.ts_ns += offset_ns;
            table.process(&record, &mut finished);
        })? as u64;
        // Blocks before anything else.
        sender.receive();
        apply_responses(&mut sender, &mut maps, &protected, config.response.ttl_max);
        if last_tick.elapsed() >= Duration::from_millis(100) {
            table.advance_to(boot_time_ns() + offset_ns, &mut finished);
            last_tick = Instant::now();
        }
        side.poll(&mut table, &mut finished, &mut emitted);
        queue(&mut emitted, &mut sender, &mut counters);
        sender.pump();
        // Commands that arrived while pumping: now, not after the next wait.
        apply_responses(&mut sender, &mut maps, &protected, config.response.ttl_max);
        if last_network_refresh.elapsed() >= config.capture.network_refresh {
            protected.refresh(&mld_hostnet::HostNet::read());
            last_network_refresh = Instant::now();
        }
        if last_sweep.elapsed() >= config.capture.sweep_interval {
            for prefix in maps.sweep_expired(boot_time_ns())? {
                info!(prefix = %prefix, "deny entry expired and was removed");
                sender.urgent.push_back(FlowMessage::BlockExpired { prefix: prefix.to_string() });
            }
            last_sweep = Instant::now();
        }
        if last_counters.elapsed() >= COUNTERS_INTERVAL {
            report(&mut counters, &maps, &sender, control);
            last_counters = Instant::now();
        }
    }
    // Shutdown: stop intake, drain the ring, end every flow, hand them on, then exit.
    control.send(&TaskMessage::Stopping { reason: "shutdown".to_string() });
    counters.records_read += reader.read(Duration::ZERO, usize::MAX, |mut record| {
        record.ts_ns += offset_ns;
        table.process(&record, &mut finished);
    })? as u64;
    table.flush(&mut finished);
    emitted.extend(finished.drain(..).map(Emitted::Flow));
    queue(&mut emitted, &mut sender, &mut counters);
    let deadline = Instant::now() + DRAIN_DEADLINE;
    while !sender.idle() && Instant::now() < deadline {
        sender.pump();
        std::thread::sleep(Duration::from_millis(5));
    }
    report(&mut counters, &maps, &sender, control);
    info!(flows = counters.flows_finished, sent = counters.flows_sent, dropped = counters.flows_dropped, "capture task stopped");
    Ok(Exit::Success)
}

/// Writes the deny entries the detect task asked for and answers each with its result.
fn apply_responses(sender: &mut FlowSender, maps: &mut PinnedMaps, protected: &mld_hostnet::Protected, ttl_max: Duration) {
    // Every map write first, then the logging: a burst of blocks is not slowed by it.
    let mut results = Vec::new();
    for response in std::mem::take(&mut sender.responses) {
        match response {
            ResponseMessage::Block { id, prefix, ttl_secs, reason, decided_boot_ns } => {
                // Re-checked here whoever sent it: bounded prefix, nothing protected,
                // TTL within bounds (the detect task is less trusted than the data plane).
                let result = mld_capture::check_block_command(&prefix, ttl_secs, &reason, protected, ttl_max)
                    .map_err(|why| format!("refused: {why}"))
                    .and_then(|checked| maps.deny_add(&checked.prefix, Some(checked.ttl), checked.reason).map_err(|error| format!("{error:#}")));
                results.push((id, prefix, ttl_secs, decided_boot_ns, result, boot_time_ns()));
            }
        }
    }
    for (id, prefix, ttl_secs, decided_boot_ns, result, applied_boot_ns) in results {
        match &result {
            Ok(()) => info!(prefix = %prefix, ttl_secs, latency_us = applied_boot_ns.saturating_sub(decided_boot_ns) / 1000, "blocked"),
            Err(error) => warn!(prefix = %prefix, error = %error, "failed to block"),
        }
        sender.urgent.push_back(FlowMessage::BlockResult { id, prefix, error: result.err(), applied_boot_ns });
    }
}

fn report(counters: &mut PipelineCounters, maps: &PinnedMaps, sender: &FlowSender, control: &mut Control) {
    counters.flows_sent = sender.sent;
    counters.flows_dropped = sender.outbox.dropped() + sender.lost_on_disconnect + sender.outbox.len() as u64;
    if let Ok(xdp) = maps.counters() {
        counters.xdp_passed = xdp.passed;
        counters.xdp_dropped = xdp.dropped;
        counters.xdp_malformed = xdp.malformed;
        counters.xdp_ring_full = xdp.ring_full;
    }
    control.send(&TaskMessage::Counters(*counters));
}

/// The sink's connection to the log task: events stay in the window until acknowledged
/// and are sent again after a reconnect.
struct EventSender {
    path: String,
    stream: Option<UnixStream>,
    decoder: FrameDecoder,
    next_attempt: Instant,
    window: AckWindow<String>,
    buffer: Vec<u8>,
    acked: u64,
    /// This run's id: the log task keeps sequence numbers per stream.
    stream_id: u64,
    /// Events waiting for room in the window; what it cannot hold becomes a gap record.
    queue: GapQueue<String>,
}

/// Test builds only: [`TEST_EVENT_QUEUE_MAX`].
fn test_event_queue_max() -> Option<usize> {
    cfg!(debug_assertions).then(|| std::env::var(TEST_EVENT_QUEUE_MAX).ok().and_then(|max| max.parse().ok())).flatten()
}

/// A random id for this process's event stream.
fn new_stream_id() -> u64 {
    let mut bytes = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut random| random.read_exact(&mut bytes)).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

impl EventSender {
    /// Queues an event record for the log task; never waits (a full queue counts it
    /// into the gap record).
    fn send(&mut self, record: serde_json::Map<String, serde_json::Value>) {
        let action = record.get("action").and_then(|action| action.as_str()).unwrap_or("unknown").to_string();
        let ts_us = record.get("ts_us").and_then(|ts| ts.as_u64()).unwrap_or(0);
        let text = serde_json::Value::Object(record).to_string();
        let bytes = text.len();
        self.queue.push(text, bytes, &action, ts_us);
    }

    /// Events lost to a full queue (each counted in a gap record).
    fn lost(&self) -> u64 {
        self.queue.lost()
    }

    /// Moves queued events (and gap records, built by `detection`) into the window while
    /// it has room.
    fn fill_window(&mut self, detection: &Detection) {
        while self.window.can_send() {
            let record = match self.queue.pop() {
                Some(Queued::Item(record)) => record,
                Some(Queued::Gap(gap)) => {
                    warn!(lost = gap.lost(), first_us = gap.first_us, last_us = gap.last_us, "events were lost while the log was away; writing a gap record");
                    serde_json::Value::Object(detection.gap_record(&gap, EVENT_QUEUE_MAX_EVENTS, EVENT_QUEUE_MAX_BYTES)).to_string()
                }
                None => break,
            };
            if let Some((seq, record)) = self.window.send(record) {
                let _ = mld_ipc::write_frame(&mut self.buffer, &EventMessage::Event { seq, record });
            }
        }
    }

    fn pump(&mut self, detection: &Detection) {
        self.fill_window(detection);
        if self.stream.is_none() && Instant::now() >= self.next_attempt {
            match UnixStream::connect(&self.path) {
                Ok(stream) => {
                    let _ = stream.set_nonblocking(true);
                    // A new connection: everything not yet acknowledged goes again.
                    self.buffer.clear();
                    let _ = mld_ipc::write_frame(&mut self.buffer, &EventMessage::Hello { stream: self.stream_id });
                    for (seq, record) in self.window.unacknowledged() {
                        let _ = mld_ipc::write_frame(&mut self.buffer, &EventMessage::Event { seq: *seq, record: record.clone() });
                    }
                    self.decoder = FrameDecoder::default();
                    self.stream = Some(stream);
                }
                Err(_) => self.next_attempt = Instant::now() + RECONNECT_INTERVAL,
            }
        }
        let Some(stream) = self.stream.as_mut() else { return };
        let mut broken = false;
        while !self.buffer.is_empty() {
            match stream.write(&self.buffer) {
                Ok(0) => break,
                Ok(n) => {
                    self.buffer.drain(..n);
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        let mut chunk = [0u8; 4096];
        let (_, open) = read_available(stream, &mut self.decoder, &mut chunk);
        broken |= !open;
        while let Ok(Some(EventAck { seq })) = self.decoder.next_message::<EventAck>() {
            let before = self.window.unacknowledged().count();
            self.window.ack(seq);
            self.acked += (before - self.window.unacknowledged().count()) as u64;
        }
        if broken {
            self.stream = None;
            self.next_attempt = Instant::now() + RECONNECT_INTERVAL;
        }
    }

    fn idle(&self) -> bool {
        self.window.unacknowledged().next().is_none() && self.queue.is_empty()
    }
}

/// The ingest task: follows the signed log and verifies every record by its signed
/// checkpoint (read-only access to the log directory through its group; the checkpoint
/// public key from the supervisor, never the HMAC key: ADR 0007); quarantines what
/// fails; embeds every verified event into the similarity index and answers queries on the
/// socket the supervisor handed over (`[ingest] index = false`: verify only).
fn ingest_task(config: &Config, fds: &HandedFds, control: &mut Control, stop: &AtomicBool) -> anyhow::Result<Exit> {
    let public_key = std::env::var(LOG_PUBLIC_KEY_ENV)
        .ok()
        .and_then(|text| mld_eventlog::CheckpointPublicKey::from_base64(&text).ok())
        .with_context(|| format!("{LOG_PUBLIC_KEY_ENV} is not set to a checkpoint public key: the supervisor hands it over"))?;
    let listener = UnixListener::from(fds.take("query")?);
    listener.set_nonblocking(true).context("failed to configure the query socket")?;
    // Root (the operator's `mldefender query`) and the detect task (nearest past events).
    let mut askers = vec![0u32];
    askers.extend(std::env::var("MLD_DETECT_UID").ok().and_then(|uid| uid.parse::<u32>().ok()));
    let mut ingest_config = mld_ingest::IngestConfig::new(config.log.dir.clone(), config.ingest.state_dir.clone(), config.log.node.clone(), vec![public_key]);
    ingest_config.max_age_us = config.ingest.max_age.as_micros() as u64;
    ingest_config.recent_seqs = config.ingest.recent_seqs;
    ingest_config.max_quarantine_bytes = config.ingest.max_quarantine_bytes;
    let mut counters = PipelineCounters::default();
    let mut last_counters = Instant::now();
    // The supervisor made the log directory (group-readable) before any task started;
    // files appear as the log task writes them.
    let mut source = match &config.ingest.index {
        Some(index) => match crate::query::load_embedder(config) {
            Ok(embedder) => match open_history(index, ingest_config, embedder) {
                Ok(history) => Verified::History(Box::new(history)),
                Err(failure) => match *failure {
                    mld_history::OpenFailure { error, ingest_config: Some(ingest_config) } => {
                        Verified::without_index(*ingest_config, format!("{:#}", anyhow::Error::from(error)))?
                    }
                    failure => return Err(anyhow::Error::from(failure).context("failed to open the ingest state")),
                },
            },
            // Without its embedder (missing, unsigned, no ONNX Runtime) the index cannot be
            // built.
            Err(error) => Verified::without_index(ingest_config, format!("{error:#}"))?,
        },
        None => Verified::Plain(Box::new(mld_ingest::Ingest::open(ingest_config).context("failed to open the ingest state")?), None),
    };
    control.ready();
    info!(dir = %config.log.dir.display(), state = %config.ingest.state_dir.display(), index = config.ingest.index.is_some(), "ingest task ready");
    let idle_wait = config.ingest.poll_interval.min(Duration::from_millis(100));
    while !stop.load(Ordering::Relaxed) && !control.shutdown_requested() {
        let busy = source.step(&mut counters)?;
        crate::query::serve(&listener, &askers, &mut |query| source.answer(query));
        if last_counters.elapsed() >= COUNTERS_INTERVAL {
            control.send(&TaskMessage::Counters(counters));
            last_counters = Instant::now();
        }
        if !busy {
            // Sleep until a query arrives or it is time to look at the log again.
            let mut fds = [nix::poll::PollFd::new(listener.as_fd(), nix::poll::PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::try_from(idle_wait).unwrap_or(nix::poll::PollTimeout::ZERO));
        }
    }
    // The log task stopped before this one: read what it wrote last (bounded: a rebuild
    // in progress goes on at the next start), then save.
    let drain_until = Instant::now() + DRAIN_DEADLINE;
    while Instant::now() < drain_until && source.step(&mut counters)? {}
    source.save();
    control.send(&TaskMessage::Stopping { reason: "shutdown".to_string() });
    control.send(&TaskMessage::Counters(counters));
    info!(verified = counters.events_verified, quarantined = counters.events_quarantined, indexed = counters.events_indexed, "ingest task stopped");
    Ok(Exit::Success)
}

/// The history (verify, embed, index), opened from the configuration.
fn open_history(
    index: &mld_config::IndexConfig,
    ingest_config: mld_ingest::IngestConfig,
    embedder: mld_history::Embedder,
) -> Result<mld_history::History, Box<mld_history::OpenFailure>> {
    let settings = mld_history::IndexSettings {
        dir: index.dir.clone(),
        factory: index.factory.clone(),
        search_parameters: index.search_parameters.clone(),
        save_interval: index.save_interval,
        max_events: index.max_events,
    };
    let history = mld_history::History::open(ingest_config, settings, embedder)?;
    if let Some(reason) = history.rebuilt() {
        warn!(index = %index.dir.display(), reason = %reason, "building the similarity index from the verified log");
    }
    Ok(history)
}

/// What the ingest task runs: the history (verify, embed, index), or verification alone
/// (with why the index is unavailable, when it was configured).
enum Verified {
    History(Box<mld_history::History>),
    Plain(Box<mld_ingest::Ingest>, Option<String>),
    /// Only for the instant of switching from `History` to `Plain` after an error.
    Switching,
}

impl Verified {
    /// Verification goes on without the index, which is unavailable for `reason`.
    /// Verification is the security job; the index is the analyst's tool: its absence is
    /// loud (here, and in every query's answer), never the end of verification.
    fn without_index(ingest_config: mld_ingest::IngestConfig, reason: String) -> anyhow::Result<Verified> {
        tracing::error!(error = %reason, "the similarity index is unavailable; verifying the log without it");
        let ingest = mld_ingest::Ingest::open(ingest_config).context("failed to open the ingest state")?;
        Ok(Verified::Plain(Box::new(ingest), Some(reason)))
    }

    /// One bounded read of the log; true when it read something.
    fn step(&mut self, counters: &mut PipelineCounters) -> anyhow::Result<bool> {
        let (lines, verified, quarantined, indexed) = match self {
            Verified::History(history) => match history.step() {
                Ok(stats) => {
                    if let Some(min_seq) = stats.rolled_over {
                        warn!(min_seq, "the similarity index was full (ingest.index-max-events): kept the newest half");
                    }
                    if stats.unreadable > 0 {
                        warn!(
                            events = stats.unreadable,
                            last = history.last_unreadable().unwrap_or_default(),
                            "verified events left out of the similarity index: their fields cannot be read"
                        );
                    }
                    (stats.lines, stats.verified, stats.quarantined, stats.indexed)
                }
                // Reading or verifying the log failed: the task's own job; fail as before
                // (the supervisor restarts it; the index is intact).
                Err(mld_history::HistoryError::Ingest(error)) => return Err(anyhow::Error::from(error).context("failed to read the signed log")),
                Err(error) => {
                    // The index failed (a full disk, FAISS): go on verifying without it. The
                    // records of this step were verified but not indexed; at the next start
                    // the index is found behind the checkpoint and filled in from the log.
                    let reason = format!("{:#}", anyhow::Error::from(error));
                    tracing::error!(error = %reason, "the similarity index failed; verifying the log without it");
                    if let Verified::History(history) = std::mem::replace(self, Verified::Switching) {
                        *self = Verified::Plain(Box::new(history.into_ingest()), Some(reason));
                    }
                    return Ok(true);
                }
            },
            Verified::Plain(ingest, _) => {
                let stats = ingest.poll(&mut |_record| {}).context("failed to read the signed log")?;
                (stats.lines, stats.delivered, stats.quarantined, 0)
            }
            Verified::Switching => (0, 0, 0, 0),
        };
        counters.events_verified += verified;
        counters.events_quarantined += quarantined;
        counters.events_indexed += indexed;
        if quarantined > 0 {
            let reasons = match self {
                Verified::History(history) => history.ingest().rejected_by_reason().clone(),
                Verified::Plain(ingest, _) => ingest.rejected_by_reason().clone(),
                Verified::Switching => Default::default(),
            };
            warn!(lines = quarantined, reasons = ?reasons, "log lines quarantined");
        }
        Ok(lines > 0)
    }

    /// Saves the index (then the checkpoint). A failure is logged: the next start finds
    /// the index behind the checkpoint, or the checkpoint where it was, and catches up.
    fn save(&mut self) {
        if let Verified::History(history) = self {
            if let Err(error) = history.save() {
                tracing::error!(error = %format!("{:#}", anyhow::Error::from(error)), "failed to save the similarity index at shutdown");
            }
        }
    }

    fn answer(&mut self, query: &mld_history::Query) -> mld_history::Reply {
        match self {
            Verified::History(history) => {
                let caught_up = history.caught_up();
                let (index, embedder) = history.parts();
                match mld_history::answer(index, Some(embedder), query) {
                    Ok(mut answer) => {
                        answer.caught_up = Some(caught_up);
                        mld_history::Reply::Answer(Box::new(answer))
                    }
                    Err(error) => mld_history::Reply::Error(format!("{:#}", anyhow::Error::from(error))),
                }
            }
            Verified::Plain(_, None) => mld_history::Reply::Error("the similarity index is off on this appliance (ingest.index = false)".to_string()),
            Verified::Plain(_, Some(reason)) => mld_history::Reply::Error(format!("the similarity index is unavailable: {reason}")),
            Verified::Switching => mld_history::Reply::Error("the similarity index is unavailable".to_string()),
        }
    }
}

/// The capture task's connection to the detect task.
struct CaptureConnection {
    stream: UnixStream,
    decoder: FrameDecoder,
}

/// Verdict → deny-map latencies of the last blocks, µs.
#[derive(Default)]
struct Latencies {
    recent: std::collections::VecDeque<u64>,
}

impl Latencies {
    const KEEP: usize = 1024;

    fn add(&mut self, micros: u64) {
        if self.recent.len() >= Self::KEEP {
            self.recent.pop_front();
        }
        self.recent.push_back(micros);
    }

    fn p99(&self) -> u64 {
        let mut sorted: Vec<u64> = self.recent.iter().copied().collect();
        sorted.sort_unstable();
        sorted.get((sorted.len() * 99).div_ceil(100).saturating_sub(1)).copied().unwrap_or(0)
    }
}

/// The detect task: scores flows and active-source reports from the capture task, decides,
/// sends blocks back to the capture task, and hands every event to the log task.
fn detect(config: &Config, config_toml: &str, fds: &HandedFds, control: &mut Control, stop: &AtomicBool) -> anyhow::Result<Exit> {
    let listener = UnixListener::from(fds.take("flows")?);
    listener.set_nonblocking(true)?;
    let capture_uid: u32 = std::env::var("MLD_CAPTURE_UID").ok().and_then(|uid| uid.parse().ok()).context("MLD_CAPTURE_UID is not set")?;
    let config_sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(config_toml.as_bytes()))
    };
    // Fail closed: without its models (when required) the task does not start.
    let net = mld_hostnet::HostNet::read();
    let mut detection = Detection::new(config, &config_sha256, mld_hostnet::Protected::from_host(&config.response, &config.allowlist, &net))?;
    detection.detector.set_anchored_interfaces(crate::detection::anchored_interfaces(config, &net));
    let mut last_network_refresh = Instant::now();
    info!(models = %detection.model_description, policy = config.detect.policy.as_str(), mode = ?config.response.mode, "detection loaded");
    let mut connections: Vec<CaptureConnection> = Vec::new();
    let mut counters = PipelineCounters::default();
    let mut last_counters = Instant::now();
    let mut last_tick = Instant::now();
    let mut events = EventSender {
        path: std::env::var("MLD_EVENTS_SOCKET").context("MLD_EVENTS_SOCKET is not set")?,
        stream: None,
        decoder: FrameDecoder::default(),
        next_attempt: Instant::now(),
        window: AckWindow::new(test_event_queue_max().unwrap_or(EVENT_WINDOW)),
        buffer: Vec::new(),
        acked: 0,
        stream_id: new_stream_id(),
        queue: GapQueue::new(test_event_queue_max().unwrap_or(EVENT_QUEUE_MAX_EVENTS), EVENT_QUEUE_MAX_BYTES),
    };
    let mut neighbours = match config.detect.nearest_past_events {
        0 => None,
        k => {
            let socket = config.capture.runtime_dir.join(crate::query::QUERY_SOCKET);
            Some(
                crate::neighbours::Neighbours::start(socket, k, config.detect.nearest_past_events_budget)
                    .context("failed to start the nearest-past-events thread")?,
            )
        }
    };
    let mut latencies = Latencies::default();
    // When each block in flight was decided (CLOCK_BOOTTIME ns), by command id; bounded.
    let mut decided: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    let mut next_block_id = 1u64;
    let offset_ns = boot_to_realtime_offset_ns();
    control.ready();
    info!("detect task ready");
    let mut buffer = vec![0u8; 65536];
    let mut running = true;
    let mut drain_deadline = None;
    loop {
        if running && (stop.load(Ordering::Relaxed) || control.shutdown_requested()) {
            running = false;
            drain_deadline = Some(Instant::now() + DRAIN_DEADLINE);
            control.send(&TaskMessage::Stopping { reason: "shutdown".to_string() });
        }
        let mut busy = false;
        while let Ok((stream, _)) = listener.accept() {
            // Only the capture task may send flows.
            match nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials) {
                Ok(credentials) if credentials.uid() == capture_uid => {
                    let _ = stream.set_nonblocking(true);
                    info!(pid = credentials.pid(), "flow connection from the capture task");
                    connections.push(CaptureConnection { stream, decoder: FrameDecoder::default() });
                }
                Ok(credentials) => warn!(uid = credentials.uid(), "refused a flow connection from a process that is not the capture task"),
                Err(error) => warn!(error = %error, "refused a flow connection without peer credentials"),
            }
        }
        // Always read and decide, whatever the log task's state: blocking never waits
        // for the log (events wait in a bounded queue; what it cannot hold is counted
        // into a gap record).
        let mut all_closed = !connections.is_empty();
        connections.retain_mut(|connection| {
            let (read, open) = read_available(&mut connection.stream, &mut connection.decoder, &mut buffer);
            busy |= read;
            loop {
                match connection.decoder.next_message::<FlowMessage>() {
                    Ok(Some(FlowMessage::Flow { flow })) => detection.detector.on_flow(*flow),
                    Ok(Some(FlowMessage::Source { report })) => detection.detector.on_report(*report),
                    Ok(Some(FlowMessage::BlockResult { id, prefix, error, applied_boot_ns })) => match error {
                        None => {
                            if let Some(at) = decided.remove(&id) {
                                latencies.add(applied_boot_ns.saturating_sub(at) / 1000);
                            }
                        }
                        Some(error) => warn!(prefix = %prefix, error = %error, "the capture task could not block"),
                    },
                    Ok(Some(FlowMessage::BlockExpired { prefix })) => {
                        if let Ok(prefix) = prefix.parse::<mld_config::IpPrefix>() {
                            if let Some(event) = detection.detector.on_expired(prefix.addr()) {
                                events.send(detection.record(&event, "standalone"));
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        warn!(error = %error, "bad flow frame; dropping the connection");
                        return false;
                    }
                }
            }
            if open {
                all_closed = false;
            }
            open
        });
        // At shutdown: once the capture task's streams ended (it stops first), or at the
        // drain deadline, decide on what arrived and stop.
        let drained = !running && (all_closed || connections.is_empty() || drain_deadline.is_some_and(|deadline| Instant::now() >= deadline));
        if last_network_refresh.elapsed() >= config.capture.network_refresh {
            // Resolvers, default gateways and own addresses follow the host.
            last_network_refresh = Instant::now();
            let net = mld_hostnet::HostNet::read();
            detection.detector.set_anchored_interfaces(crate::detection::anchored_interfaces(config, &net));
            if detection.detector.responder_mut().protected_mut().refresh(&net) {
                let protected = detection.detector.responder().protected();
                info!(resolvers = ?protected.resolvers(), default_gateways = ?protected.default_gateways(), "protected infrastructure changed");
            }
        }
        if last_tick.elapsed() >= config.detect.tick || drained {
            last_tick = Instant::now();
            detection.detector.advance_to(boot_time_ns() + offset_ns);
            let decisions = detection.detector.tick();
            // Blocks first, all in one write, before anything else is done with the
            // events: the verdict-to-map time is what the deny map waits for.
            let decided_boot_ns = boot_time_ns();
            let mut commands = Vec::new();
            for event in decisions.iter().filter(|event| event.action == mld_detect::engine::Action::Block) {
                let Some(ttl) = event.ttl else { continue };
                let id = next_block_id;
                next_block_id += 1;
                if decided.len() >= 4096 {
                    decided.clear();
                }
                decided.insert(id, decided_boot_ns);
                let command = ResponseMessage::Block {
                    id,
                    prefix: mld_config::IpPrefix::host(event.source).to_string(),
                    ttl_secs: ttl.as_secs(),
                    reason: event.category.as_str().to_string(),
                    decided_boot_ns,
                };
                let _ = mld_ipc::write_frame(&mut commands, &command);
            }
            if !commands.is_empty() {
                match connections.last_mut() {
                    Some(connection) => {
                        let _ = connection.stream.set_nonblocking(false);
                        if let Err(error) = std::io::Write::write_all(&mut connection.stream, &commands) {
                            warn!(error = %error, "failed to send blocks to the capture task");
                        }
                        let _ = connection.stream.set_nonblocking(true);
                    }
                    None => warn!("no capture task connected: blocks cannot be applied now"),
                }
            }
            for event in decisions {
                match event.action {
                    mld_detect::engine::Action::Block => {
                        info!(source = %event.source, category = event.category.as_str(), ttl_secs = event.ttl.map_or(0, |ttl| ttl.as_secs()), step = event.escalation_step, "block")
                    }
                    mld_detect::engine::Action::Observe => {}
                    action => info!(source = %event.source, action = action.as_str(), category = event.category.as_str(), "decision"),
                }
                let record = detection.record(&event, "standalone");
                let record = match neighbours.as_mut() {
                    Some(neighbours) if event.action != mld_detect::engine::Action::Observe => neighbours.submit(record),
                    _ => Some(record),
                };
                if let Some(record) = record {
                    events.send(record);
                }
            }
            if drained {
                break;
            }
        }
        if let Some(neighbours) = neighbours.as_mut() {
            for record in neighbours.ready() {
                events.send(record);
            }
        }
        events.pump(&detection);
        let d = detection.detector.counters;
        counters.flows_received = d.flows_received;
        counters.flows_scored = d.flows_scored;
        counters.flows_dropped_detect = d.flows_dropped + events.lost();
        counters.reports_received = d.reports_received;
        counters.blocks = d.blocks;
        counters.alerts = d.alerts;
        counters.refused = d.refused;
        counters.breaker_open = d.breaker_open;
        counters.active_blocks = detection.detector.responder().active_blocks() as u64;
        counters.events_acked = events.acked;
        if last_counters.elapsed() >= COUNTERS_INTERVAL {
            counters.block_latency_p99_us = latencies.p99();
            control.send(&TaskMessage::Counters(counters));
            last_counters = Instant::now();
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // Decisions still waiting for their neighbours (at most the budget), then hand every
    // event to the log task and wait for its acknowledgement (bounded).
    if let Some(neighbours) = neighbours.take() {
        for record in neighbours.finish() {
            events.send(record);
        }
    }
    let deadline = Instant::now() + DRAIN_DEADLINE;
    while !events.idle() && Instant::now() < deadline {
        events.pump(&detection);
        std::thread::sleep(Duration::from_millis(2));
    }
    counters.events_acked = events.acked;
    counters.block_latency_p99_us = latencies.p99();
    control.send(&TaskMessage::Counters(counters));
    info!(flows = counters.flows_received, blocks = counters.blocks, "detect task stopped");
    Ok(Exit::Success)
}

/// The log task: the only writer of the signed event log. It writes events from the
/// sink in order, fsyncs, then acknowledges; a sequence number seen before is dropped.
fn log_task(config: &Config, fds: &HandedFds, control: &mut Control, stop: &AtomicBool) -> anyhow::Result<Exit> {
    let listener = UnixListener::from(fds.take("events")?);
    listener.set_nonblocking(true)?;
    let key_file = std::fs::File::from(fds.take("key")?);
    let signing_key_file = std::fs::File::from(fds.take("signing-key")?);
    // Keys are read with read_at from dups of the handed fds, so the writer can be
    // opened again after the storage failed.
    let open_writer = || -> anyhow::Result<LogWriter> {
        let key = LogKey::from_file(key_file.try_clone().context("failed to dup the log key fd")?, &config.log.key_file)?;
        let signer = mld_eventlog::CheckpointSigningKey::from_file(
            signing_key_file.try_clone().context("failed to dup the signing key fd")?,
            &config.log.signing_key_file,
        )?;
        LogWriter::open_signed(crate::log::writer_config(config), key, signer).context("failed to open the event log")
    };
    let producer_uid: u32 = std::env::var("MLD_DETECT_UID").ok().and_then(|uid| uid.parse().ok()).context("MLD_DETECT_UID is not set")?;
    let mut writer = Some(open_writer()?);
    for warning in config.warnings().iter().filter(|warning| warning.path.starts_with("log.")) {
        warn!(key = %warning.path, warning = %warning.message, "configuration warning");
    }
    let mut connection: Option<EventConnection> = None;
    // Where the log ends in the producer's stream, read back from the log itself, so a
    // restart of this task neither duplicates nor loses what the sink sends again.
    let mut delivered = writer.as_ref().and_then(LogWriter::last_delivery).unwrap_or(Delivery { stream: 0, seq: 0 });
    let mut counters = PipelineCounters::default();
    let mut last_counters = Instant::now();
    control.ready();
    info!(dir = %config.log.dir.display(), "log task ready");
    let mut buffer = [0u8; 65536];
    // When the log cannot be written (a full disk, an IO error), the task does not exit
    // (the supervisor would hold it after a few restarts, and the log would never come
    // back): it drops the connection, so that the detect task keeps what was not
    // acknowledged (and records what overflows as a gap), and opens the log again every
    // STORAGE_RETRY until it can write; the writer's recovery puts a cut line on record.
    const STORAGE_RETRY: Duration = Duration::from_secs(1);
    let mut last_attempt = Instant::now();
    while !stop.load(Ordering::Relaxed) && !control.shutdown_requested() {
        let Some(current) = writer.as_mut() else {
            if last_attempt.elapsed() >= STORAGE_RETRY {
                last_attempt = Instant::now();
                match open_writer() {
                    Ok(reopened) => {
                        info!(dir = %config.log.dir.display(), "the event log can be written again");
                        delivered = reopened.last_delivery().unwrap_or(delivered);
                        writer = Some(reopened);
                        continue;
                    }
                    Err(error) => warn!(error = %format!("{error:#}"), "the event log still cannot be written"),
                }
            }
            if last_counters.elapsed() >= COUNTERS_INTERVAL {
                control.send(&TaskMessage::Counters(counters));
                last_counters = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        // Records wait at most log.checkpoint-interval-ms for their signed checkpoint,
        // which is what the ingest task waits for.
        let pass = serve_events(&listener, producer_uid, &mut connection, current, &mut delivered, &mut counters, &mut buffer)
            .and_then(|busy| Ok(busy | current.tick().context("failed to write a checkpoint")?));
        let mut busy = match pass {
            Ok(busy) => busy,
            Err(error) => {
                error!(error = %format!("{error:#}"), "the event log cannot be written; blocking goes on, events wait in the detect task; retrying every second");
                counters.log_write_failures += 1;
                connection = None;
                if let Some(failed) = writer.take() {
                    failed.abandon();
                }
                last_attempt = Instant::now();
                true
            }
        };
        if last_counters.elapsed() >= COUNTERS_INTERVAL {
            control.send(&TaskMessage::Counters(counters));
            last_counters = Instant::now();
            busy = true;
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // Shutdown order is capture, sink, log: the sink has handed over everything it had.
    // Take what is still in the socket.
    let deadline = Instant::now() + DRAIN_DEADLINE;
    if let Some(writer) = writer.as_mut() {
        while Instant::now() < deadline && serve_events(&listener, producer_uid, &mut connection, writer, &mut delivered, &mut counters, &mut buffer)? {}
        // Nothing is left without a checkpoint at shutdown.
        writer.checkpoint().and_then(|()| writer.sync()).context("failed to fsync the event log")?;
    }
    control.send(&TaskMessage::Stopping { reason: "shutdown".to_string() });
    control.send(&TaskMessage::Counters(counters));
    info!(events = counters.events_logged, last_seq = writer.as_ref().map(LogWriter::last_seq), "log task stopped");
    Ok(Exit::Success)
}

/// The sink's connection: its stream id once it said hello.
struct EventConnection {
    stream: UnixStream,
    decoder: FrameDecoder,
    producer: Option<u64>,
}

/// One pass: accept the sink, read its events, write and fsync them, acknowledge.
/// Returns whether anything happened.
fn serve_events(
    listener: &UnixListener,
    producer_uid: u32,
    connection: &mut Option<EventConnection>,
    writer: &mut LogWriter,
    delivered: &mut Delivery,
    counters: &mut PipelineCounters,
    buffer: &mut [u8],
) -> anyhow::Result<bool> {
    let mut busy = false;
    while let Ok((stream, _)) = listener.accept() {
        match nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials) {
            Ok(credentials) if credentials.uid() == producer_uid => {
                let _ = stream.set_nonblocking(true);
                // The newest connection replaces an older one (the sink reconnected).
                *connection = Some(EventConnection { stream, decoder: FrameDecoder::default(), producer: None });
                busy = true;
            }
            Ok(credentials) => warn!(uid = credentials.uid(), "refused an event connection from a process that is not the sink"),
            Err(error) => warn!(error = %error, "refused an event connection without peer credentials"),
        }
    }
    let Some(EventConnection { stream, decoder, producer }) = connection.as_mut() else { return Ok(busy) };
    let (read, mut open) = read_available(stream, decoder, buffer);
    busy |= read;
    let mut newest = None;
    loop {
        match decoder.next_message::<EventMessage>() {
            Ok(Some(EventMessage::Hello { stream: id })) => {
                if id != delivered.stream {
                    // A new run of the sink: its sequence numbers start again.
                    info!(stream = format_args!("{id:016x}"), "a new event stream");
                    *delivered = Delivery { stream: id, seq: 0 };
                }
                *producer = Some(id);
            }
            Ok(Some(EventMessage::Event { seq, record })) => {
                if *producer != Some(delivered.stream) {
                    warn!("an event before the stream's hello; dropping the connection");
                    open = false;
                    break;
                }
                newest = Some(seq);
                if !is_new(&mut delivered.seq, seq) {
                    continue;
                }
                let delivery = Some(Delivery { stream: delivered.stream, seq });
                match writer.append_json(&record, delivery) {
                    Ok(_) => counters.events_logged += 1,
                    Err(WriterError::Body(error)) => {
                        // Never sealed as it is (a `seq` in a body would make the rest of
                        // the file unreadable): counted, and put on record without its body.
                        counters.events_refused += 1;
                        warn!(seq, key = %error.key().unwrap_or("-"), error = %error, "refused an event body; writing a rejected_event record instead");
                        writer.append_rejected(&record, &error, delivery).context("failed to write the event log")?;
                    }
                    Err(error) => return Err(error).context("failed to write the event log"),
                }
            }
            Ok(None) => break,
            Err(error) => {
                warn!(error = %error, "bad event frame; dropping the connection");
                open = false;
                break;
            }
        }
    }
    if let Some(seq) = newest {
        // Durable first, then acknowledged.
        writer.sync().context("failed to fsync the event log")?;
        if open {
            let _ = stream.set_nonblocking(false);
            let _ = mld_ipc::write_frame(stream, &EventAck { seq });
            let _ = stream.set_nonblocking(true);
        }
    }
    if !open {
        *connection = None;
    }
    Ok(busy)
}

/// Reads everything a non-blocking stream has into `decoder`; returns whether anything
/// was read and whether the stream is still open (false at its end or on an error).
fn read_available(stream: &mut UnixStream, decoder: &mut FrameDecoder, buffer: &mut [u8]) -> (bool, bool) {
    let mut read = false;
    loop {
        match stream.read(buffer) {
            Ok(0) => return (read, false),
            Ok(n) => {
                read = true;
                decoder.push(&buffer[..n]);
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => return (read, true),
            Err(_) => return (read, false),
        }
    }
}
