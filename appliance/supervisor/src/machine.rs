//! The supervisor's state machine: the task table, starting tasks, reaping them,
//! restarting them with back-off (or holding them), the memory watchdog, kill escalation
//! (SIGTERM, then SIGKILL after a grace), reading the control channels within their
//! budget ([`crate::control`]), readiness, the ordered shutdown with its deadline, and the
//! status report.
//!
//! It does no system call of its own except reading and writing the control channels:
//! processes are started, signalled, reaped and measured through a [`Spawner`], and time
//! comes in as an argument (`now`) or through a [`Clock`]. The real loop is
//!
//! ```text
//! while !stop { machine.step(&mut spawner, clock.now()); /* serve status */ clock.sleep(LOOP_TICK) }
//! machine.shutdown(&mut spawner, &clock);
//! ```
//!
//! and the tests drive the same machine with a fake spawner and a fake clock.
//!
//! Single-threaded on purpose: the real spawner forks, and a fork of a multi-threaded
//! process may inherit a lock held by another thread.

use std::fmt;
use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use mld_config::{Config, TaskConfig, TaskKind};
use mld_ipc::{FrameDecoder, PipelineCounters, StatusReport, SupervisorMessage, TaskCounters, TaskMessage, TaskSettings, TaskState, TaskStatus};
use nix::sys::signal::Signal;
use tracing::{error, info, warn};

use crate::control::{self, ControlMeter};
use crate::policy::{Decision, RestartHistory};

/// One turn of the real loop.
pub const LOOP_TICK: Duration = Duration::from_millis(10);
/// How long a task asked (or forced) to die gets before the next SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_millis(1000);
/// After the shutdown deadline: how long the tasks killed then get to be reaped.
pub const REAP_AFTER_KILL: Duration = Duration::from_secs(2);

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this status.
    Exited(i32),
    /// A signal ended it.
    Killed(Signal),
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exited with status {code}"),
            ExitStatus::Killed(signal) => write!(f, "killed by {signal:?}"),
        }
    }
}

/// A child collected by [`Spawner::reap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    pub pid: u32,
    pub status: ExitStatus,
}

/// Everything the machine asks of the operating system.
pub trait Spawner {
    /// Starts a task of `kind`, handing it `control` (the task's end of its control
    /// channel); returns its pid, or why it could not be started (the whole chain).
    fn start(&mut self, kind: TaskKind, control: UnixStream) -> Result<u32, String>;
    /// What a task of `kind` is told at start beside the configuration (sockets, peers'
    /// users, the public key).
    fn task_settings(&self, kind: TaskKind) -> TaskSettings;
    /// Sends `signal` to `pid` (errors are ignored: the process may be gone already).
    fn signal(&mut self, pid: u32, signal: Signal);
    /// One exited child, or `None` when no child has exited (never blocks). As PID 1 this
    /// also returns orphans that are not tasks; the machine ignores them.
    fn reap(&mut self) -> Option<Reaped>;
    /// Resident memory of `pid`, bytes; `None` when it is gone.
    fn resident_bytes(&mut self, pid: u32) -> Option<u64>;
    /// How many times the kernel OOM-killed in the task's cgroup; `None` without one.
    fn oom_kills(&mut self, kind: TaskKind) -> Option<u64>;
}

/// Monotonic time, and waiting for it to pass.
pub trait Clock {
    fn now(&self) -> Instant;
    fn sleep(&self, duration: Duration);
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// What the machine needs of the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Sent to every task as its first message ([`SupervisorMessage::Configure`]).
    pub config_toml: String,
    pub watchdog_interval: Duration,
    pub shutdown_deadline: Duration,
    pub kill_grace: Duration,
}

impl Settings {
    pub fn new(config: &Config, config_toml: String) -> Settings {
        Settings {
            config_toml,
            watchdog_interval: config.supervisor.watchdog_interval,
            shutdown_deadline: config.supervisor.shutdown_deadline,
            kill_grace: KILL_GRACE,
        }
    }
}

/// One task the machine runs.
#[derive(Debug, Clone)]
pub struct TaskSetup {
    pub config: TaskConfig,
    /// It has a cgroup with memory limits (status: "cgroup+rss", else "rss").
    pub cgroup: bool,
}

/// What one [`Machine::step`] brought about that the caller announces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct Step {
    /// Every task said Ready, for the first time: announce readiness (once).
    pub all_ready: bool,
}

struct Task {
    config: TaskConfig,
    cgroup: bool,
    state: TaskState,
    pid: Option<u32>,
    started_at: Instant,
    control: Option<UnixStream>,
    decoder: FrameDecoder,
    history: RestartHistory,
    next_start: Option<Instant>,
    last_exit: Option<String>,
    kill_reason: Option<String>,
    kill_deadline: Option<Instant>,
    /// Set when the supervisor asked the task to stop (shutdown): its exit is no failure.
    stop_requested: bool,
    oom_kills_seen: u64,
    memory_bytes: u64,
    counters: Option<TaskCounters>,
    /// What the task sent on its control channel this second (see `read_control`).
    control_meter: ControlMeter,
    /// Times it was killed for flooding its control channel.
    control_floods: u64,
    /// The fleet task's last view of the fleet.
    fleet_view: Option<mld_ipc::FleetView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Stopping the tasks in order: `index` has been asked, the ones before it are done.
    Stopping {
        deadline: Instant,
        index: usize,
    },
    /// The deadline passed: what was left got SIGKILL; reaping it until `until`.
    Killing {
        until: Instant,
    },
    Stopped,
}

/// The supervisor's state machine; see the module doc.
pub struct Machine {
    settings: Settings,
    tasks: Vec<Task>,
    started: Instant,
    next_watchdog: Instant,
    announced_ready: bool,
    phase: Phase,
    jitter: Box<dyn FnMut() -> f64>,
    /// Answers of the detect task to requests passed on (`MarkedBenign`, `Released`), until taken.
    replies: Vec<TaskMessage>,
    /// The log task's newest durable head, until passed on to the fleet task.
    log_head: Option<(u64, String)>,
    /// The newest configuration document the fleet task took, until the loop takes it.
    fleet_document: Option<String>,
    /// A configuration change's task restarts, one at a time (`restart_tasks`).
    rolling: Option<Rolling>,
}

/// Tasks restarting for a configuration change: the first of `waiting` is being stopped
/// (`stopping`) or started and awaited until `deadline`; the next goes once it is ready.
#[derive(Debug)]
struct Rolling {
    waiting: std::collections::VecDeque<TaskKind>,
    stopping: bool,
    deadline: Option<Instant>,
}

/// How long a task restarted for a configuration change has to stop and to say ready
/// before the next one goes anyway (logged).
const ROLLING_STEP_MAX: Duration = Duration::from_secs(60);

/// The largest configuration document passed on (`fleet_doc::MAX_BYTES`).
const FLEET_DOCUMENT_MAX_BYTES: usize = 64 * 1024;

impl fmt::Debug for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Machine")
            .field("tasks", &self.tasks.iter().map(|task| (task.config.kind, task.state, task.pid)).collect::<Vec<_>>())
            .field("phase", &self.phase)
            .field("announced_ready", &self.announced_ready)
            .finish_non_exhaustive()
    }
}

/// Restart jitter, uniform in [0, 1): a xorshift generator seeded from the wall clock and
/// the pid (spread, not secrecy: restarts of tasks, and of appliances that booted together,
/// do not fall on the same instant).
fn clock_jitter() -> impl FnMut() -> f64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_nanos() as u64);
    let mut state = (nanos ^ (u64::from(std::process::id()) << 32)) | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Machine {
    /// The tasks, in the configuration's order (the shutdown order), all due to start at `now`.
    pub fn new(settings: Settings, tasks: Vec<TaskSetup>, now: Instant) -> Machine {
        let tasks = tasks
            .into_iter()
            .map(|setup| Task {
                config: setup.config,
                cgroup: setup.cgroup,
                state: TaskState::Starting,
                pid: None,
                started_at: now,
                control: None,
                decoder: FrameDecoder::default(),
                history: RestartHistory::new(),
                next_start: Some(now),
                last_exit: None,
                kill_reason: None,
                kill_deadline: None,
                stop_requested: false,
                oom_kills_seen: 0,
                memory_bytes: 0,
                counters: None,
                control_meter: ControlMeter::new(now),
                control_floods: 0,
                fleet_view: None,
            })
            .collect();
        Machine {
            settings,
            tasks,
            started: now,
            next_watchdog: now,
            announced_ready: false,
            phase: Phase::Running,
            jitter: Box::new(clock_jitter()),
            replies: Vec::new(),
            log_head: None,
            fleet_document: None,
            rolling: None,
        }
    }

    /// Replaces the restart jitter (values in [0, 1); tests make it deterministic).
    pub fn with_jitter(mut self, jitter: impl FnMut() -> f64 + 'static) -> Machine {
        self.jitter = Box::new(jitter);
        self
    }

    /// One turn of the loop. While running: reap, read the control channels, watch memory
    /// (every `watchdog_interval`), escalate kills, start what is due, check readiness.
    /// After [`Machine::begin_shutdown`]: the shutdown's next step.
    pub fn step(&mut self, spawner: &mut dyn Spawner, now: Instant) -> Step {
        if self.phase != Phase::Running {
            self.shutdown_step(spawner, now);
            return Step::default();
        }
        self.reap(spawner, now);
        self.read_control(spawner, now);
        // The log's head goes on to the fleet task (its anchor), when one runs.
        if let Some((seq, hmac)) = self.log_head.take() {
            if self.tasks.iter().any(|task| task.config.kind == TaskKind::Fleet) {
                let _ = self.send_to_task(TaskKind::Fleet, &SupervisorMessage::LogHead { seq, hmac });
            }
        }
        if now >= self.next_watchdog {
            self.watchdog(spawner, now);
            self.next_watchdog = now + self.settings.watchdog_interval;
        }
        self.escalate_kills(spawner, now);
        self.start_due(spawner, now);
        self.roll(spawner, now);
        Step { all_ready: self.check_readiness(now) }
    }

    /// The configuration sent to tasks from now on (their next start, or a restart).
    pub fn set_config_toml(&mut self, config_toml: String) {
        self.settings.config_toml = config_toml;
    }

    /// A task's budget and restart policy from now on (the watchdog reads them; its
    /// restart history is kept).
    pub fn set_task_config(&mut self, config: &TaskConfig) {
        if let Some(task) = self.tasks.iter_mut().find(|task| task.config.kind == config.kind) {
            task.config = config.clone();
        }
    }

    /// Restarts the running tasks of `kinds` with the current configuration, one at a time
    /// in start order, each asked to stop as at a shutdown, started again at once (neither
    /// a failure nor a restart under its policy), and awaited until ready before the next
    /// goes. A task not running is left to its own schedule.
    pub fn restart_tasks(&mut self, kinds: &[TaskKind]) {
        let mut waiting: Vec<TaskKind> = self.tasks.iter().map(|task| task.config.kind).filter(|kind| kinds.contains(kind)).collect();
        if let Some(rolling) = &self.rolling {
            // A restart under way goes on; the new kinds queue behind it (the task being
            // restarted too, when it already started with the previous configuration).
            let front_started = !rolling.stopping && rolling.deadline.is_some();
            let pending: Vec<TaskKind> = rolling.waiting.iter().skip(usize::from(front_started)).copied().collect();
            waiting.retain(|kind| !pending.contains(kind));
            let mut queued = rolling.waiting.clone();
            queued.extend(waiting);
            self.rolling = Some(Rolling { waiting: queued, stopping: rolling.stopping, deadline: rolling.deadline });
        } else if !waiting.is_empty() {
            self.rolling = Some(Rolling { waiting: waiting.into(), stopping: false, deadline: None });
        }
    }

    /// True while tasks restart for a configuration change.
    pub fn restarting_tasks(&self) -> bool {
        self.rolling.is_some()
    }

    fn roll(&mut self, spawner: &mut dyn Spawner, now: Instant) {
        let Some(rolling) = self.rolling.as_mut() else { return };
        let Some(&kind) = rolling.waiting.front() else {
            self.rolling = None;
            return;
        };
        let Some(index) = self.tasks.iter().position(|task| task.config.kind == kind) else {
            rolling.waiting.pop_front();
            return;
        };
        let task = &self.tasks[index];
        if !rolling.stopping && rolling.deadline.is_none() {
            if task.pid.is_none() {
                // Not running: between restarts it starts with the new configuration on its
                // own schedule; a held task is given its chance with it now.
                rolling.waiting.pop_front();
                if task.state == TaskState::Held {
                    let task = &mut self.tasks[index];
                    info!(task = kind.name(), "starting the held task with the new configuration");
                    task.next_start = Some(now);
                    task.state = TaskState::Starting;
                }
                return;
            }
            info!(task = kind.name(), "restarting task for the new configuration");
            rolling.stopping = true;
            rolling.deadline = Some(now + ROLLING_STEP_MAX);
            self.ask_to_stop(spawner, index);
            return;
        }
        let deadline = rolling.deadline.unwrap_or(now);
        if rolling.stopping {
            if task.pid.is_some() {
                if now >= deadline {
                    warn!(task = kind.name(), "did not stop for the new configuration in time; killing it");
                    if let Some(pid) = task.pid {
                        spawner.signal(pid, Signal::SIGKILL);
                    }
                    rolling.deadline = Some(now + ROLLING_STEP_MAX);
                }
                return;
            }
            // Stopped: start it again now, outside its restart policy.
            rolling.stopping = false;
            rolling.deadline = Some(now + ROLLING_STEP_MAX);
            let task = &mut self.tasks[index];
            task.stop_requested = false;
            task.next_start = Some(now);
            task.state = TaskState::Starting;
            return;
        }
        if task.state == TaskState::Ready {
            info!(task = kind.name(), "task ready with the new configuration");
            rolling.waiting.pop_front();
            rolling.deadline = None;
        } else if now >= deadline {
            warn!(task = kind.name(), "not ready with the new configuration in time; going on with the next");
            rolling.waiting.pop_front();
            rolling.deadline = None;
        }
    }

    /// Stops the tasks in order (capture first: intake stops, then the consumers drain),
    /// within the deadline; names and kills any still running. Blocks until done.
    pub fn shutdown(&mut self, spawner: &mut dyn Spawner, clock: &dyn Clock) {
        self.begin_shutdown(spawner, clock.now());
        loop {
            let _ = self.step(spawner, clock.now());
            if self.is_stopped() {
                return;
            }
            clock.sleep(LOOP_TICK);
        }
    }

    /// Starts the shutdown at `now`: nothing is started any more, the first task is asked
    /// to stop; the following [`Machine::step`]s carry it on until [`Machine::is_stopped`].
    pub fn begin_shutdown(&mut self, spawner: &mut dyn Spawner, now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        info!(deadline_ms = self.settings.shutdown_deadline.as_millis() as u64, "shutting down");
        self.phase = Phase::Stopping { deadline: now + self.settings.shutdown_deadline, index: 0 };
        if !self.tasks.is_empty() {
            self.ask_to_stop(spawner, 0);
        }
    }

    /// True once the shutdown is over: every task stopped, or killed and the time to reap
    /// it over.
    pub fn is_stopped(&self) -> bool {
        self.phase == Phase::Stopped
    }

    /// Passes an operator's request on to the running task of `kind` (never waits: a
    /// channel without room is an error). Errors say why in words: the task is not
    /// enabled, not ready (its state), or its channel is full.
    pub fn send_to_task(&mut self, kind: TaskKind, message: &SupervisorMessage) -> Result<(), String> {
        if self.phase != Phase::Running {
            return Err("the supervisor is shutting down".to_string());
        }
        let Some(task) = self.tasks.iter_mut().find(|task| task.config.kind == kind) else {
            return Err(format!("the {} task is not enabled", kind.name()));
        };
        let state = task.state;
        match task.control.as_mut() {
            Some(control) if state == TaskState::Ready && task.pid.is_some() => {
                // Wiped when it goes: a request may carry a key (`FleetIdentity`).
                let frame = zeroize::Zeroizing::new(mld_ipc::encode_frame(message).map_err(|error| error.to_string())?);
                let written = match std::io::Write::write(control, &frame) {
                    Ok(written) if written == frame.len() => return Ok(()),
                    Ok(written) => written,
                    Err(_) => return Err(format!("the {} task's control channel is full", kind.name())),
                };
                // Part of a frame went: the rest must follow, or the task's framing is lost.
                let rest = control.set_nonblocking(false).and_then(|()| control.set_write_timeout(Some(Duration::from_millis(200)))).and_then(|()| {
                    let result = std::io::Write::write_all(control, &frame[written..]);
                    control.set_nonblocking(true).and(result)
                });
                if rest.is_err() {
                    // The channel is closed instead: the task sees it end, exits and is restarted.
                    warn!(task = kind.name(), "a request could not be written whole to the control channel; closing it");
                    task.control = None;
                    return Err(format!("the {} task's control channel failed; it restarts", kind.name()));
                }
                Ok(())
            }
            _ => Err(format!("the {} task is not running (state: {})", kind.name(), format!("{state:?}").to_lowercase())),
        }
    }

    /// The configuration document the fleet task took since the last call, if any (the
    /// newest one: an older one waiting is superseded).
    pub fn take_fleet_document(&mut self) -> Option<String> {
        self.fleet_document.take()
    }

    /// The tasks' answers to requests passed on since the last call.
    pub fn take_replies(&mut self) -> Vec<TaskMessage> {
        std::mem::take(&mut self.replies)
    }

    /// True when every task said Ready (and is still running).
    pub fn all_ready(&self) -> bool {
        self.tasks.iter().all(|task| task.state == TaskState::Ready)
    }

    /// `mldefender status`'s answer at `now`.
    pub fn status_report(&self, now: Instant, supervisor_pid: u32, supervisor_memory_bytes: u64) -> StatusReport {
        let mut pipeline = PipelineCounters::default();
        for counters in self.tasks.iter().filter_map(|task| task.counters.clone()) {
            pipeline.update(counters);
        }
        StatusReport {
            supervisor_pid,
            uptime_secs: now.saturating_duration_since(self.started).as_secs_f64(),
            ready: self.all_ready(),
            supervisor_memory_bytes,
            tasks: self
                .tasks
                .iter()
                .map(|task| TaskStatus {
                    name: task.config.kind.name().to_string(),
                    state: task.state,
                    pid: task.pid,
                    uptime_secs: if task.pid.is_some() { now.saturating_duration_since(task.started_at).as_secs_f64() } else { 0.0 },
                    restarts: task.history.total_restarts(),
                    last_exit: task.last_exit.clone(),
                    memory_bytes: task.memory_bytes,
                    memory_budget_bytes: task.config.memory_max_bytes,
                    memory_enforcement: if task.cgroup { "cgroup+rss" } else { "rss" }.to_string(),
                    user: task.config.user.clone(),
                    control_floods: task.control_floods,
                })
                .collect(),
            pipeline,
            fleet: self.tasks.iter().find_map(|task| task.fleet_view.clone()),
        }
    }

    fn start_due(&mut self, spawner: &mut dyn Spawner, now: Instant) {
        for index in 0..self.tasks.len() {
            if self.tasks[index].next_start.is_some_and(|at| at <= now) {
                self.tasks[index].next_start = None;
                if let Err(error) = self.start(spawner, index, now) {
                    let task = &mut self.tasks[index];
                    error!(task = task.config.kind.name(), error = %error, "failed to start task");
                    task.last_exit = Some(format!("failed to start: {error}"));
                    self.after_exit(index, Duration::ZERO, now);
                }
            }
        }
    }

    fn start(&mut self, spawner: &mut dyn Spawner, index: usize, now: Instant) -> Result<(), String> {
        let (mut control, task_end) = UnixStream::pair().map_err(|error| format!("failed to create the control channel: {error}"))?;
        let kind = self.tasks[index].config.kind;
        let pid = spawner.start(kind, task_end)?;
        let configured = mld_ipc::write_frame(
            &mut control,
            &SupervisorMessage::Configure { config_toml: self.settings.config_toml.clone(), settings: spawner.task_settings(kind) },
        )
        .map_err(|error| format!("failed to configure the task: {}", mld_types::error_chain(&error)))
        .and_then(|()| control.set_nonblocking(true).map_err(|error| format!("failed to configure the control channel: {error}")));
        if let Err(error) = configured {
            // Started, but not to be kept: it would run unwatched.
            spawner.signal(pid, Signal::SIGKILL);
            return Err(error);
        }
        let oom_kills = spawner.oom_kills(kind).unwrap_or(0);
        let task = &mut self.tasks[index];
        task.oom_kills_seen = oom_kills;
        task.pid = Some(pid);
        task.control = Some(control);
        task.decoder = FrameDecoder::default();
        task.control_meter = ControlMeter::new(now);
        task.started_at = now;
        task.state = TaskState::Starting;
        task.kill_reason = None;
        task.kill_deadline = None;
        info!(task = kind.name(), pid, user = %task.config.user, "task started");
        Ok(())
    }

    /// Reaps every exited child (as PID 1, orphans too).
    fn reap(&mut self, spawner: &mut dyn Spawner, now: Instant) {
        while let Some(reaped) = spawner.reap() {
            let Some(index) = self.tasks.iter().position(|task| task.pid == Some(reaped.pid)) else { continue };
            let ran = now.saturating_duration_since(self.tasks[index].started_at);
            let kind = self.tasks[index].config.kind;
            let oom = {
                let seen = self.tasks[index].oom_kills_seen;
                self.tasks[index].cgroup && spawner.oom_kills(kind).is_some_and(|kills| kills > seen)
            };
            let task = &mut self.tasks[index];
            task.pid = None;
            task.control = None;
            if task.stop_requested {
                task.state = TaskState::Stopped;
                info!(task = task.config.kind.name(), "task stopped");
                continue;
            }
            // The kernel's kill is the cause even when the RSS watchdog had already asked the
            // task to stop (it counts shared pages the cgroup also charges, so both can fire).
            let asked = task.kill_reason.take();
            let reason = match asked {
                _ if oom => format!("memory: killed by the kernel at memory.max ({} MiB, cgroup)", task.config.memory_max_bytes >> 20),
                Some(reason) => reason,
                None => reaped.status.to_string(),
            };
            warn!(task = task.config.kind.name(), reason = %reason, ran_ms = ran.as_millis() as u64, "task exited");
            task.last_exit = Some(reason);
            self.after_exit(index, ran, now);
        }
    }

    fn after_exit(&mut self, index: usize, ran: Duration, now: Instant) {
        let jitter = (self.jitter)();
        let task = &mut self.tasks[index];
        match task.history.on_exit(&task.config, now, ran, jitter) {
            Decision::RestartAfter(delay) => {
                task.state = TaskState::Restarting;
                task.next_start = Some(now + delay);
                info!(task = task.config.kind.name(), delay_ms = delay.as_millis() as u64, "restarting task");
            }
            Decision::Hold => {
                task.state = TaskState::Held;
                error!(
                    task = task.config.kind.name(),
                    restarts = task.history.total_restarts(),
                    "task held: too many restarts; the supervisor stays up, XDP keeps enforcing"
                );
            }
        }
    }

    /// Reads each task's control channel within its budget (`crate::control`): at most
    /// 64 KiB and 64 frames a turn, and nothing more while a whole frame waits to be
    /// decoded, so no task can hold the loop or grow the supervisor's memory. A task that
    /// floods its channel, or sends a frame that is not a message, is killed (and
    /// restarted under its policy) with the reason logged.
    fn read_control(&mut self, spawner: &mut dyn Spawner, now: Instant) {
        /// Answers kept until the supervisor's loop takes them (each turn), at most.
        const REPLIES_MAX: usize = 64;
        let replies = &mut self.replies;
        let log_head = &mut self.log_head;
        let fleet_document = &mut self.fleet_document;
        for task in &mut self.tasks {
            let Some(control_stream) = task.control.as_mut() else { continue };
            let mut buffer = [0u8; 8192];
            let mut read = 0;
            while read < control::READ_BYTES_PER_TURN && task.decoder.buffered_bytes() < control::MAX_BUFFERED_BYTES {
                let want = buffer.len().min(control::READ_BYTES_PER_TURN - read);
                match control_stream.read(&mut buffer[..want]) {
                    Ok(0) => break,
                    Ok(n) => {
                        task.decoder.push(&buffer[..n]);
                        read += n;
                    }
                    Err(error) if error.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let mut frames = 0;
            let mut bad_frame = None;
            while frames < control::FRAMES_PER_TURN {
                match task.decoder.next_message::<TaskMessage>() {
                    Ok(Some(message)) => {
                        frames += 1;
                        match message {
                            TaskMessage::Ready => {
                                task.state = TaskState::Ready;
                                info!(
                                    task = task.config.kind.name(),
                                    after_ms = now.saturating_duration_since(task.started_at).as_millis() as u64,
                                    "task ready"
                                );
                            }
                            TaskMessage::Counters { counters } => {
                                // Each task reports its own part only.
                                if counters.kind() == task.config.kind.name() {
                                    task.counters = Some(counters);
                                }
                            }
                            TaskMessage::Stopping { reason } => {
                                info!(task = task.config.kind.name(), reason = %reason, "task stopping");
                                if task.stop_requested {
                                    task.state = TaskState::Stopping;
                                }
                            }
                            TaskMessage::LogHead { seq, hmac } => {
                                if task.config.kind == TaskKind::Log && hmac.len() <= 128 {
                                    *log_head = Some((seq, hmac));
                                }
                            }
                            TaskMessage::Fleet { mut view } => {
                                if task.config.kind == TaskKind::Fleet {
                                    view.members.truncate(mld_ipc::FleetView::MEMBERS_MAX);
                                    task.fleet_view = Some(view);
                                }
                            }
                            TaskMessage::FleetDocument { document } => {
                                if task.config.kind == TaskKind::Fleet && document.len() <= FLEET_DOCUMENT_MAX_BYTES {
                                    *fleet_document = Some(document);
                                }
                            }
                            reply @ (TaskMessage::MarkedBenign { .. } | TaskMessage::Released { .. }) => {
                                if task.config.kind == TaskKind::Detect && replies.len() < REPLIES_MAX {
                                    replies.push(reply);
                                }
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        bad_frame = Some(error);
                        break;
                    }
                }
            }
            // A bad frame loses the framing of everything after it: start the task afresh.
            let kill_reason = match (bad_frame, task.control_meter.record(now, read, frames)) {
                (Some(error), _) => Some(format!("bad frame on the control channel: {error}")),
                (None, Some(flood)) => {
                    task.control_floods += 1;
                    Some(flood.to_string())
                }
                (None, None) => None,
            };
            if let (Some(reason), Some(pid)) = (kill_reason, task.pid) {
                warn!(task = task.config.kind.name(), pid, reason = %reason, "killing task: it misused its control channel");
                task.kill_reason = Some(reason);
                task.kill_deadline = Some(now + self.settings.kill_grace);
                task.control = None;
                spawner.signal(pid, Signal::SIGKILL);
            }
        }
    }

    fn watchdog(&mut self, spawner: &mut dyn Spawner, now: Instant) {
        for task in &mut self.tasks {
            let Some(pid) = task.pid else {
                task.memory_bytes = 0;
                continue;
            };
            task.memory_bytes = spawner.resident_bytes(pid).unwrap_or(0);
            if task.memory_bytes > task.config.memory_max_bytes && task.kill_deadline.is_none() {
                let reason =
                    format!("memory: resident {} MiB over the {} MiB budget (RSS watchdog)", task.memory_bytes >> 20, task.config.memory_max_bytes >> 20);
                warn!(task = task.config.kind.name(), reason = %reason, "killing task");
                task.kill_reason = Some(reason);
                task.kill_deadline = Some(now + self.settings.kill_grace);
                spawner.signal(pid, Signal::SIGTERM);
            }
        }
    }

    fn escalate_kills(&mut self, spawner: &mut dyn Spawner, now: Instant) {
        for task in &mut self.tasks {
            if let (Some(pid), Some(deadline)) = (task.pid, task.kill_deadline) {
                if now >= deadline {
                    warn!(task = task.config.kind.name(), "task did not exit after SIGTERM; sending SIGKILL");
                    spawner.signal(pid, Signal::SIGKILL);
                    task.kill_deadline = Some(now + self.settings.kill_grace);
                }
            }
        }
    }

    /// True once, the first time every task is ready.
    fn check_readiness(&mut self, now: Instant) -> bool {
        if self.announced_ready || !self.all_ready() {
            return false;
        }
        self.announced_ready = true;
        info!(after_ms = now.saturating_duration_since(self.started).as_millis() as u64, "all tasks ready");
        true
    }

    /// Asks task `index` to stop: a Shutdown message on its control channel, or SIGTERM
    /// when that cannot be sent. A task that is not running is stopped already.
    fn ask_to_stop(&mut self, spawner: &mut dyn Spawner, index: usize) {
        let task = &mut self.tasks[index];
        task.next_start = None;
        let Some(pid) = task.pid else {
            task.state = TaskState::Stopped;
            return;
        };
        task.state = TaskState::Stopping;
        task.stop_requested = true;
        let asked = task
            .control
            .as_mut()
            .map(|control| {
                // Never waits: a task that does not read its channel (stuck, or flooding
                // it) gets SIGTERM instead of holding the supervisor's shutdown.
                let frame = mld_ipc::encode_frame(&SupervisorMessage::Shutdown).unwrap_or_default();
                std::io::Write::write(control, &frame).is_ok_and(|written| written == frame.len())
            })
            .unwrap_or(false);
        if !asked {
            spawner.signal(pid, Signal::SIGTERM);
        }
    }

    fn shutdown_step(&mut self, spawner: &mut dyn Spawner, now: Instant) {
        self.reap(spawner, now);
        loop {
            match self.phase {
                Phase::Running | Phase::Stopped => return,
                Phase::Stopping { deadline, index } => {
                    let waiting = index < self.tasks.len() && self.tasks[index].pid.is_some();
                    if waiting && now < deadline {
                        return;
                    }
                    if index + 1 < self.tasks.len() {
                        // The next in order is asked, also after the deadline (its exit is
                        // then no failure), and killed below.
                        self.phase = Phase::Stopping { deadline, index: index + 1 };
                        self.ask_to_stop(spawner, index + 1);
                        continue;
                    }
                    // The last one is done, or the deadline passed: kill what is left.
                    for task in &mut self.tasks {
                        if let Some(pid) = task.pid {
                            error!(task = task.config.kind.name(), pid, "task still running at the shutdown deadline; killing it");
                            spawner.signal(pid, Signal::SIGKILL);
                        }
                    }
                    self.phase = Phase::Killing { until: now + REAP_AFTER_KILL };
                }
                Phase::Killing { until } => {
                    if self.tasks.iter().all(|task| task.pid.is_none()) || now >= until {
                        self.phase = Phase::Stopped;
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_jitter_spreads_over_the_whole_range() {
        let mut jitter = clock_jitter();
        let draws: Vec<f64> = (0..1000).map(|_| jitter()).collect();
        assert!(draws.iter().all(|draw| (0.0..1.0).contains(draw)));
        // Each tenth of the range gets some of 1,000 uniform draws (a tenth empty by
        // chance: about 1e-45).
        for tenth in 0..10 {
            let low = f64::from(tenth) / 10.0;
            assert!(draws.iter().any(|draw| (low..low + 0.1).contains(draw)), "nothing in [{low}, {})", low + 0.1);
        }
    }
}
