//! `mldefender task NAME`: the task processes the supervisor starts (not for people).
//!
//! A task takes the fds its kind is handed (`mld_supervisor::layout::TaskFds`), reads its
//! configuration and settings from the control channel (the first fd), says `Ready`,
//! works until told to shut down (or SIGTERM), drains, says `Stopping`, and exits 0.
//!
//! One module per task, in pipeline order. Each keeps its loop short: the parts that
//! decide (what to send, when to acknowledge, how much to read in a step) are structs
//! with small step methods that the unit tests drive over in-memory sockets.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mld_config::{Config, TaskConfig, TaskKind};
use mld_ipc::{Connection, SupervisorMessage, TaskCounters, TaskMessage, TaskSettings};
use mld_supervisor::layout::TaskFds;
use tracing::warn;

use crate::exit::Exit;

pub mod capture;
pub mod detect;
pub mod fleet;
pub mod guard;
pub mod ingest;
pub mod log;
pub mod shared;

/// How often a task reports its counters to the supervisor.
pub const COUNTERS_INTERVAL: Duration = Duration::from_millis(500);
/// How long a task spends draining at shutdown, at most.
pub const DRAIN_DEADLINE: Duration = Duration::from_millis(1500);
/// How soon a lost connection to the next task is tried again.
pub const RECONNECT_INTERVAL: Duration = Duration::from_millis(100);
/// The control channel's output buffer: a few counters frames.
const CONTROL_OUT_BYTES: usize = 64 * 1024;

/// What a task learns from the supervisor at start.
#[derive(Debug)]
pub struct Start {
    pub config: Config,
    /// The configuration's text (its hash goes into every event record).
    pub config_toml: String,
    pub settings: TaskSettings,
    /// This task's own section.
    pub task: TaskConfig,
}

/// The control channel to the supervisor, non-blocking.
#[derive(Debug)]
pub struct Control {
    connection: Connection,
    /// Test only: memory to allocate once ready, for the memory-budget tests.
    test_allocate_bytes: u64,
    ballast: Vec<u8>,
    last_counters: Instant,
    /// Operator requests passed on by the supervisor (`MarkBenign`), until taken.
    requests: Vec<SupervisorMessage>,
}

impl Control {
    /// Reads the configuration (the supervisor's first message, waited for) from the
    /// control channel.
    pub fn start(fd: OwnedFd, kind: TaskKind) -> anyhow::Result<(Control, Start)> {
        let mut stream = UnixStream::from(fd);
        let (config_toml, settings) = match mld_ipc::read_frame::<SupervisorMessage>(&mut stream).context("failed to read the configuration")? {
            Some(SupervisorMessage::Configure { config_toml, settings }) => (config_toml, settings),
            other => anyhow::bail!("expected the configuration first, got {other:?}"),
        };
        let config = Config::from_toml(&config_toml, "the supervisor's configuration").map_err(|errors| anyhow::anyhow!("{errors}"))?;
        let task = config.tasks.iter().find(|task| task.kind == kind).context("task missing from the configuration")?.clone();
        let connection = Connection::new(stream, CONTROL_OUT_BYTES).context("failed to configure the control channel")?;
        let control =
            Control { connection, test_allocate_bytes: task.test_allocate_bytes, ballast: Vec::new(), last_counters: Instant::now(), requests: Vec::new() };
        Ok((control, Start { config, config_toml, settings, task }))
    }

    /// Tells the supervisor the task is ready; then (test only) grows to the test size,
    /// touching every page so that it is resident.
    pub fn ready(&mut self) {
        self.send(&TaskMessage::Ready);
        if self.test_allocate_bytes > 0 {
            warn!(mib = self.test_allocate_bytes >> 20, "test-allocate-mib is set: allocating");
            self.ballast = vec![1u8; self.test_allocate_bytes as usize];
            std::hint::black_box(&self.ballast);
        }
    }

    /// Sends a message if the channel has room (it holds many counters frames; a
    /// supervisor that reads nothing loses the newest, never the task's loop).
    pub fn send(&mut self, message: &TaskMessage) {
        if let Err(error) = self.connection.send(message) {
            warn!(error = %error, "failed to write to the supervisor");
        }
    }

    /// Sends `counters` when [`COUNTERS_INTERVAL`] has passed since the last report.
    pub fn report_due(&mut self, counters: impl FnOnce() -> TaskCounters) -> bool {
        if self.last_counters.elapsed() < COUNTERS_INTERVAL {
            self.connection.flush();
            return false;
        }
        self.send(&TaskMessage::Counters { counters: counters() });
        self.last_counters = Instant::now();
        true
    }

    /// True once the supervisor asked for a shutdown (or went away).
    pub fn shutdown_requested(&mut self) -> bool {
        if !self.connection.receive().open {
            return true;
        }
        loop {
            match self.connection.next_message::<SupervisorMessage>() {
                Ok(Some(SupervisorMessage::Shutdown)) => return true,
                // Bounded by the supervisor (a few waiting at most); taken every turn.
                Ok(Some(
                    request @ (SupervisorMessage::MarkBenign { .. }
                    | SupervisorMessage::Release { .. }
                    | SupervisorMessage::Reconfigure { .. }
                    | SupervisorMessage::LogHead { .. }
                    | SupervisorMessage::FleetIdentity { .. }
                    | SupervisorMessage::FleetDocumentRefused { .. }
                    | SupervisorMessage::Note { .. }),
                )) if self.requests.len() < 64 => self.requests.push(request),
                Ok(Some(other)) => warn!(message = ?other, "unexpected message from the supervisor"),
                Ok(None) => return false,
                Err(_) => return true,
            }
        }
    }

    /// The operator's requests received since the last call (read by
    /// [`Control::shutdown_requested`]).
    pub fn take_requests(&mut self) -> Vec<SupervisorMessage> {
        std::mem::take(&mut self.requests)
    }

    /// The last words: `Stopping` and the final counters, written within a short bound.
    pub fn finish(&mut self, counters: TaskCounters) {
        self.send(&TaskMessage::Stopping { reason: "shutdown".to_string() });
        self.send(&TaskMessage::Counters { counters });
        let deadline = Instant::now() + Duration::from_millis(200);
        while !self.connection.is_flushed() && self.connection.is_open() && Instant::now() < deadline {
            let mut fds = [nix::poll::PollFd::new(std::os::fd::AsFd::as_fd(&self.connection), nix::poll::PollFlags::POLLOUT)];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(20u8));
            self.connection.flush();
        }
    }
}

/// Test builds only (debug assertions on, as `cargo test` builds the binary): the
/// supervisor names the task whose control channel floods in this variable, for the lab
/// test of its control-channel budget.
const TEST_FLOOD_CONTROL: &str = "MLD_TEST_FLOOD_CONTROL";
/// Test builds only: the detect task's event window and queue hold this many events
/// (instead of 4,096 and 65,536), so a lab test can overflow them in seconds.
const TEST_EVENT_QUEUE_MAX: &str = "MLD_TEST_EVENT_QUEUE_MAX";

/// The test hooks for a task of `kind`, from the supervisor's environment (always off in
/// release builds).
pub fn test_hooks(kind: TaskKind) -> mld_ipc::TestHooks {
    if !cfg!(debug_assertions) {
        return mld_ipc::TestHooks::default();
    }
    mld_ipc::TestHooks {
        flood_control: std::env::var(TEST_FLOOD_CONTROL).is_ok_and(|task| task == kind.name()),
        event_queue_max: std::env::var(TEST_EVENT_QUEUE_MAX).ok().and_then(|max| max.parse().ok()),
    }
}

/// Test builds only: says ready, then writes counters frames as fast as the supervisor
/// takes them, until it is killed.
fn flood_control(kind: TaskKind, control: Control) -> ! {
    warn!(task = kind.name(), "the flood-control test hook is set: flooding the control channel");
    let mut stream = control.connection.into_stream();
    let _ = stream.set_nonblocking(false);
    let _ = mld_ipc::write_frame(&mut stream, &TaskMessage::Ready);
    let counters = TaskMessage::Counters { counters: TaskCounters::Capture(mld_ipc::CaptureCounters::default()) };
    loop {
        if mld_ipc::write_frame(&mut stream, &counters).is_err() {
            std::process::exit(4);
        }
    }
}

/// Entry point of `mldefender task NAME`.
pub fn run(name: &str) -> anyhow::Result<Exit> {
    crate::logging::init("mldefender-task");
    let kind = TaskKind::parse(name).with_context(|| format!("unknown task `{name}`"))?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("failed to install the signal handlers")?;
    }
    match TaskFds::take_handed(kind)? {
        TaskFds::Capture(mld_supervisor::layout::CaptureFds { control, ring, allow, allow_next, allow_selector, deny, counters, guard, good, guard_on }) => {
            let (mut control, start) = begin(control, kind)?;
            let maps = capture::Maps { ring, allow: [allow, allow_next, allow_selector], deny, counters, guard: [guard, good, guard_on] };
            capture::run(&start, &mut control, &stop, maps)
        }
        TaskFds::Detect(fds) => {
            let (mut control, start) = begin(fds.control, kind)?;
            detect::run(&start, &mut control, &stop, fds.flows)
        }
        TaskFds::Log(fds) => {
            let (mut control, start) = begin(fds.control, kind)?;
            log::run(&start, &mut control, &stop, fds.events, fds.key, fds.signing_key)
        }
        TaskFds::Ingest(fds) => {
            let (mut control, start) = begin(fds.control, kind)?;
            ingest::run(&start, &mut control, &stop, fds.query)
        }
        TaskFds::Fleet(mld_supervisor::layout::FleetFds { control, link, cert, key, ca }) => {
            let (mut control, start) = begin(control, kind)?;
            fleet::run(&start, &mut control, &stop, fleet::Fds { link, cert, key, ca })
        }
    }
}

/// Reads the start message, and honours the test hooks that act before any work.
fn begin(control: OwnedFd, kind: TaskKind) -> anyhow::Result<(Control, Start)> {
    let (control, start) = Control::start(control, kind)?;
    if start.task.test_exit_at_start {
        warn!(task = kind.name(), "test-exit-at-start is set: exiting with status 3");
        std::process::exit(3);
    }
    if cfg!(debug_assertions) && start.settings.test.flood_control {
        flood_control(kind, control);
    }
    Ok((control, start))
}
