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

pub(super) use crate::detection::Detection;
pub(super) use crate::pipeline::{CaptureSide, Emitted};
use mld_ipc::{is_new, AckWindow, EventAck, EventMessage, GapQueue, Queued};

use crate::exit::Exit;

mod capture;
mod detect;
mod ingest;
mod log;

use capture::capture;
use detect::detect;
use ingest::ingest_task;
use log::log_task;

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
pub(super) struct HandedFds {
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
pub(super) struct Control {
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

/// Reads everything a non-blocking stream has into `decoder`; returns whether anything
/// was read and whether the stream is still open (false at its end or on an error).
pub(super) fn read_available(stream: &mut UnixStream, decoder: &mut FrameDecoder, buffer: &mut [u8]) -> (bool, bool) {
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
