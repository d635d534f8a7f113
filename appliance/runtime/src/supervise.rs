//! `mldefender supervise`: the one supervisor process.
//!
//! Start-up story: (PID 1: mount the system) → validate the configuration (exit 64 with
//! every error) → load and attach XDP (the only privileged step) → open the control and
//! flow sockets → start each task as an unprivileged child → watch them: readiness,
//! memory, exits, restarts → on SIGTERM stop them in order within the deadline, detach
//! XDP last (PID 1: sync and power off).
//!
//! The loop is single-threaded on purpose: tasks are forked from it, and a fork of a
//! multi-threaded process may inherit a lock held by another thread.

use std::io::{ErrorKind, Read};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::enforcement::Enforcement;
use anyhow::Context;
use mld_config::{Config, TaskConfig, TaskKind};
use mld_ipc::{
    ControlRequest, FrameDecoder, PipelineCounters, StatusReport, SupervisorMessage, TaskCounters, TaskMessage, TaskSettings, TaskState, TaskStatus,
};
use mld_supervisor::control::{self, ControlMeter};
use mld_supervisor::files::{create_dirs, give_dir, give_socket_to_group, set_umask, with_umask, PASS_THROUGH_MODE, SUPERVISOR_UMASK};
use mld_supervisor::layout::{CaptureFds, DetectFds, IngestFds, LogFds, TaskFds};
use mld_supervisor::memory::{resident_bytes, TaskCgroup};
use mld_supervisor::policy::{Decision, RestartHistory};
use mld_supervisor::spawn::{kernel_needs_cap_bpf_for_map_fds, spawn, TaskSpawn};
use mld_supervisor::{init, notify};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::{error, info, warn};

use crate::exit::Exit;

const LOOP_TICK: Duration = Duration::from_millis(10);
const KILL_GRACE: Duration = Duration::from_millis(1000);
pub const STATUS_SOCKET: &str = "supervisor.sock";
pub const FLOWS_SOCKET: &str = "flows.sock";
pub const EVENTS_SOCKET: &str = "events.sock";

struct Task {
    config: TaskConfig,
    uid: u32,
    gid: u32,
    cgroup: Option<TaskCgroup>,
    runtime_dir: PathBuf,
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
}

struct Supervisor {
    config: Config,
    config_toml: String,
    exe: PathBuf,
    dataplane: Enforcement,
    flows_listener: UnixListener,
    events_listener: UnixListener,
    query_listener: UnixListener,
    status_listener: UnixListener,
    /// The log key, opened by the supervisor (root) and handed to the log task as an fd.
    log_key: std::fs::File,
    /// The checkpoint signing key, the same way, to the log task only; the ingest task
    /// gets its public key (ADR 0007).
    signing_key: std::fs::File,
    log_public_key: String,
    tasks: Vec<Task>,
    started: Instant,
    announced_ready: bool,
    keep_cap_bpf: bool,
}

pub fn run(config_path: &Path) -> anyhow::Result<Exit> {
    let pid1 = init::is_pid1();
    if pid1 {
        if let Err(error) = init::mount_system() {
            eprintln!("mldefender: error: {error}");
        }
    }
    crate::logging::init("mldefender");
    let outcome = supervise(config_path);
    if pid1 {
        // As init there is nobody to return to: report and power off.
        if let Err(error) = &outcome {
            error!(error = %format!("{error:#}"), "supervisor failed");
        }
        let failure = init::power_off();
        error!(error = %failure, "power off failed");
    }
    outcome
}

fn supervise(config_path: &Path) -> anyhow::Result<Exit> {
    // Whatever the supervisor creates is private unless a mode is given on purpose.
    set_umask(SUPERVISOR_UMASK);
    let config_toml = std::fs::read_to_string(config_path).with_context(|| format!("failed to read configuration `{}`", config_path.display()))?;
    let origin = config_path.display().to_string();
    let config = match Config::from_toml(&config_toml, &origin).and_then(|config| config.check_environment(&origin).map(|()| config)) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(Exit::Config);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("failed to install the signal handlers")?;
    }
    if init::is_pid1() {
        if let Err(error) = init::disable_ctrl_alt_del() {
            warn!(error = %error, "Ctrl-Alt-Del will reboot at once instead of shutting down");
        }
    }
    match init::load_modules(&config.system.modules_dir, &config.system.modules) {
        Ok(loaded) if !loaded.is_empty() => info!(modules = %loaded.join(","), "kernel modules loaded"),
        Ok(_) => {}
        Err(error) => {
            error!(error = %error, "failed to load kernel modules");
            return Ok(Exit::Failure);
        }
    }
    if let Some(data) = &config.system.data {
        // Before anything is written under it (keys, saved blocks, the log); without it
        // the appliance still runs, from whatever holds the path (RAM in the image).
        match init::mount_data(&data.device, &data.fstype, &data.mount, data.wait) {
            Ok(true) => info!(device = %data.device.display(), mount = %data.mount.display(), "persistent storage mounted"),
            Ok(false) => warn!(device = %data.device.display(), "no persistent storage: the log, keys and saved blocks live in RAM until the next boot"),
            Err(error) => error!(error = %error, "persistent storage did not mount: the log, keys and saved blocks live in RAM until the next boot"),
        }
    }
    for interface in &config.system.interfaces_up {
        if let Err(error) = init::set_link_up("lo").and_then(|()| init::set_link_up(interface)) {
            error!(error = %error, "failed to bring an interface up");
            return Ok(Exit::Failure);
        }
    }
    let runtime = config.capture.runtime_dir.clone();
    // Tasks pass through it to their sockets and directories.
    create_dirs(&runtime, PASS_THROUGH_MODE).with_context(|| format!("failed to create runtime directory `{}`", runtime.display()))?;

    let dataplane = match Enforcement::start(&config.capture, &config.allowlist) {
        Ok(dataplane) => dataplane,
        Err(error) => {
            error!(error = %crate::error_chain(&error), "failed to start the XDP data plane");
            return Ok(match error {
                mld_capture::CaptureError::UnknownInterface { .. } | mld_capture::CaptureError::Refused(_) => Exit::Config,
                _ => Exit::Failure,
            });
        }
    };
    let status_listener = bind(&runtime.join(STATUS_SOCKET), 0o600)?;
    let flows_listener = bind(&runtime.join(FLOWS_SOCKET), 0o666)?;
    flows_listener.set_nonblocking(true).context("failed to configure the flow socket")?;
    let events_listener = bind(&runtime.join(EVENTS_SOCKET), 0o666)?;
    events_listener.set_nonblocking(true).context("failed to configure the event socket")?;
    // Queries: the operator (root) and the detect task (its group, set below), checked
    // again by peer credentials in the ingest task, which answers them on this fd.
    let detect_enabled = config.tasks.iter().any(|task| task.kind == TaskKind::Detect && task.enabled);
    let query_listener = bind(&runtime.join(crate::query_server::QUERY_SOCKET), if detect_enabled { 0o660 } else { 0o600 })?;
    query_listener.set_nonblocking(true).context("failed to configure the query socket")?;
    let log_key = match open_log_key(&config) {
        Ok(file) => file,
        Err(error) => {
            error!(error = %format!("{error:#}"), "failed to open the log key");
            return Ok(Exit::Config);
        }
    };
    let (signing_key, log_public_key) = match open_signing_key(&config) {
        Ok(opened) => opened,
        Err(error) => {
            error!(error = %format!("{error:#}"), "failed to open the log signing key");
            return Ok(Exit::Config);
        }
    };
    status_listener.set_nonblocking(true).context("failed to configure the status socket")?;

    let mut tasks = Vec::new();
    for task_config in config.tasks.iter().filter(|task| task.enabled) {
        let (uid, default_gid) = mld_config::ids::resolve_user(&task_config.user)
            .with_context(|| format!("user `{}` of task {} does not exist", task_config.user, task_config.kind.name()))?;
        let gid = match &task_config.group {
            Some(group) => mld_config::ids::resolve_group(group).with_context(|| format!("group `{group}` does not exist"))?,
            None => default_gid,
        };
        let cgroup = if config.supervisor.use_cgroup {
            match TaskCgroup::create(&config.supervisor.cgroup_root, task_config.kind.name(), task_config.memory_high_bytes, task_config.memory_max_bytes) {
                Ok(cgroup) => cgroup,
                Err(error) => {
                    warn!(task = task_config.kind.name(), error = %error, "cgroup v2 memory limits unavailable; the RSS watchdog alone enforces the budget");
                    None
                }
            }
        } else {
            None
        };
        let runtime_dir = runtime.join("tasks").join(task_config.kind.name());
        create_dirs(&runtime_dir, 0o700)
            .and_then(|()| give_dir(&runtime_dir, uid, gid, 0o700))
            .with_context(|| format!("failed to give `{}` to its task", runtime_dir.display()))?;
        tasks.push(Task {
            config: task_config.clone(),
            uid,
            gid,
            cgroup,
            runtime_dir,
            state: TaskState::Starting,
            pid: None,
            started_at: Instant::now(),
            control: None,
            decoder: FrameDecoder::default(),
            history: RestartHistory::new(),
            next_start: Some(Instant::now()),
            last_exit: None,
            kill_reason: None,
            kill_deadline: None,
            stop_requested: false,
            oom_kills_seen: 0,
            memory_bytes: 0,
            counters: None,
            control_meter: ControlMeter::new(Instant::now()),
            control_floods: 0,
        });
    }
    if let Some(detect) = tasks.iter().find(|task| task.config.kind == TaskKind::Detect) {
        // Bound 0660 above.
        let path = runtime.join(crate::query_server::QUERY_SOCKET);
        give_socket_to_group(&path, detect.gid).with_context(|| format!("failed to give `{}` to the detect task's group", path.display()))?;
    }
    let mut supervisor = Supervisor {
        exe: std::env::current_exe().context("failed to find the mldefender executable")?,
        config,
        config_toml,
        dataplane,
        flows_listener,
        events_listener,
        query_listener,
        status_listener,
        log_key,
        signing_key,
        log_public_key,
        tasks,
        started: Instant::now(),
        announced_ready: false,
        keep_cap_bpf: kernel_needs_cap_bpf_for_map_fds(),
    };
    supervisor.run(&stop);
    supervisor.shutdown();
    let _ = std::fs::remove_file(runtime.join(STATUS_SOCKET));
    let _ = std::fs::remove_file(runtime.join(FLOWS_SOCKET));
    let _ = std::fs::remove_file(runtime.join(EVENTS_SOCKET));
    let _ = std::fs::remove_file(runtime.join(crate::query_server::QUERY_SOCKET));
    Ok(Exit::Success)
}

/// Opens the log key once (creating it, 0600, when missing and allowed), checked on the
/// open fd (`LogKey::open`: no link, owner root, no group or other access, a key's
/// length), and gives the log and ingest state directories to their tasks. The returned
/// file is the one handed to the tasks.
fn open_log_key(config: &Config) -> anyhow::Result<std::fs::File> {
    let path = &config.log.key_file;
    let key_file = match mld_eventlog::LogKey::open(path) {
        Err(error) if config.log.create_key && is_not_found(&error) => {
            if let Some(parent) = path.parent() {
                create_dirs(parent, 0o700).with_context(|| format!("failed to create `{}`", parent.display()))?;
            }
            mld_eventlog::LogKey::create(path)?;
            info!(path = %path.display(), "log key created");
            mld_eventlog::LogKey::open(path)?
        }
        opened => opened?,
    };
    let uid_gid = |task: &TaskConfig| mld_config::ids::resolve_user(&task.user).with_context(|| format!("user `{}` does not exist", task.user));
    if let Some(task) = config.tasks.iter().find(|task| task.kind == TaskKind::Log && task.enabled) {
        let (uid, gid) = uid_gid(task)?;
        // The ingest task reads the log through the directory's group; nobody else can.
        let reader = config.tasks.iter().find(|task| task.kind == TaskKind::Ingest && task.enabled).and_then(|task| mld_config::ids::resolve_user(&task.user));
        let (group, mode) = match reader {
            Some((_, reader_gid)) => (reader_gid, 0o750),
            None => (gid, 0o700),
        };
        create_dirs(&config.log.dir, mode)
            .and_then(|()| give_dir(&config.log.dir, uid, group, mode))
            .with_context(|| format!("failed to give `{}` to the log task", config.log.dir.display()))?;
    }
    if let Some(task) = config.tasks.iter().find(|task| task.kind == TaskKind::Ingest && task.enabled) {
        let (uid, gid) = uid_gid(task)?;
        let dir = &config.ingest.state_dir;
        create_dirs(dir, 0o700)
            .and_then(|()| give_dir(dir, uid, gid, 0o700))
            .with_context(|| format!("failed to give `{}` to the ingest task", dir.display()))?;
    }
    Ok(key_file)
}

/// Opens the checkpoint signing key once (creating it, 0600, when missing and
/// `log.create-key` allows), checked on the open fd as the log key is; returns the file
/// (for the log task) and its public key, base64 (for the ingest task).
fn open_signing_key(config: &Config) -> anyhow::Result<(std::fs::File, String)> {
    use mld_eventlog::{CheckpointSigningKey, SigningKeyError};
    use mld_secret::SecretFileError;
    let path = &config.log.signing_key_file;
    let file = match CheckpointSigningKey::open(path) {
        Err(SigningKeyError::File(SecretFileError::Io { source, .. })) if config.log.create_key && source.kind() == ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                create_dirs(parent, 0o700).with_context(|| format!("failed to create `{}`", parent.display()))?;
            }
            CheckpointSigningKey::create(path)?;
            info!(path = %path.display(), "log signing key created");
            CheckpointSigningKey::open(path)?
        }
        opened => opened?,
    };
    let public_key = CheckpointSigningKey::from_file(file.try_clone().context("failed to duplicate the signing key fd")?, path)?.public_key().to_base64();
    Ok((file, public_key))
}

fn is_not_found(error: &mld_eventlog::KeyError) -> bool {
    matches!(error, mld_eventlog::KeyError::File(mld_secret::SecretFileError::Io { source, .. }) if source.kind() == ErrorKind::NotFound)
}

/// Binds a socket with exactly `mode` (set by `bind` through the umask: no chmod of a
/// path afterwards).
fn bind(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    with_umask(mode, || UnixListener::bind(path)).with_context(|| format!("failed to bind `{}`", path.display()))
}

impl Supervisor {
    fn run(&mut self, stop: &AtomicBool) {
        let mut next_watchdog = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            self.reap();
            self.read_control();
            self.serve_status();
            if Instant::now() >= next_watchdog {
                self.watchdog();
                next_watchdog = Instant::now() + self.config.supervisor.watchdog_interval;
            }
            self.escalate_kills();
            self.start_due();
            self.announce_readiness();
            self.dataplane.tick();
            std::thread::sleep(LOOP_TICK);
        }
    }

    fn start_due(&mut self) {
        let now = Instant::now();
        for index in 0..self.tasks.len() {
            if self.tasks[index].next_start.is_some_and(|at| at <= now) {
                self.tasks[index].next_start = None;
                if let Err(error) = self.start(index) {
                    let task = &mut self.tasks[index];
                    error!(task = task.config.kind.name(), error = %format!("{error:#}"), "failed to start task");
                    task.last_exit = Some(format!("failed to start: {error:#}"));
                    self.after_exit(index, Duration::ZERO);
                }
            }
        }
    }

    fn start(&mut self, index: usize) -> anyhow::Result<()> {
        let (supervisor_end, task_end) = UnixStream::pair().context("failed to create the control channel")?;
        let kind = self.tasks[index].config.kind;
        let fds = self.dataplane.task_fds()?;
        let control = task_end.as_fd();
        let handed = match kind {
            TaskKind::Capture => {
                TaskFds::Capture(CaptureFds { control, ring: fds.ring, allow: fds.allow.as_fd(), deny: fds.deny, counters: fds.counters.as_fd() })
            }
            TaskKind::Detect => TaskFds::Detect(DetectFds { control, flows: self.flows_listener.as_fd() }),
            TaskKind::Log => {
                TaskFds::Log(LogFds { control, events: self.events_listener.as_fd(), key: self.log_key.as_fd(), signing_key: self.signing_key.as_fd() })
            }
            // No key fd at all: the checkpoint public key comes in the settings.
            TaskKind::Ingest => TaskFds::Ingest(IngestFds { control, query: self.query_listener.as_fd() }),
        }
        .into_list();
        let task = &self.tasks[index];
        let cgroup_procs = match &task.cgroup {
            Some(cgroup) => Some(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(cgroup.procs_path())
                    .with_context(|| format!("failed to open `{}`", cgroup.procs_path().display()))?
                    .into(),
            ),
            None => None,
        };
        let uid_of = |kind: TaskKind| self.tasks.iter().find(|task| task.config.kind == kind).map_or(u32::MAX, |task| task.uid);
        let runtime = &self.config.capture.runtime_dir;
        let settings = TaskSettings {
            flows_socket: runtime.join(FLOWS_SOCKET),
            events_socket: runtime.join(EVENTS_SOCKET),
            query_socket: runtime.join(crate::query_server::QUERY_SOCKET),
            capture_uid: uid_of(TaskKind::Capture),
            detect_uid: uid_of(TaskKind::Detect),
            log_public_key: (kind == TaskKind::Ingest).then(|| self.log_public_key.clone()),
            test: crate::task::test_hooks(kind),
        };
        let child = spawn(TaskSpawn {
            exe: &self.exe,
            args: vec!["task".into(), kind.name().into()],
            env: Vec::new(),
            uid: task.uid,
            gid: task.gid,
            keep_cap_bpf: kind == TaskKind::Capture && self.keep_cap_bpf,
            fds: handed,
            cgroup_procs,
            working_dir: task.runtime_dir.clone(),
        })
        .with_context(|| format!("failed to start task {}", kind.name()))?;
        drop(task_end);
        let mut control = supervisor_end;
        mld_ipc::write_frame(&mut control, &SupervisorMessage::Configure { config_toml: self.config_toml.clone(), settings })
            .context("failed to configure the task")?;
        control.set_nonblocking(true).context("failed to configure the control channel")?;
        let task = &mut self.tasks[index];
        task.oom_kills_seen = task.cgroup.as_ref().map_or(0, TaskCgroup::oom_kills);
        task.pid = Some(child.id());
        task.control = Some(control);
        task.decoder = FrameDecoder::default();
        task.control_meter = ControlMeter::new(Instant::now());
        task.started_at = Instant::now();
        task.state = TaskState::Starting;
        task.kill_reason = None;
        task.kill_deadline = None;
        info!(task = kind.name(), pid = child.id(), uid = task.uid, "task started");
        // The child is reaped by waitpid(-1) in `reap`, not through `Child`.
        drop(child);
        Ok(())
    }

    /// Reaps every exited child (as PID 1, orphans too).
    fn reap(&mut self) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => status,
            };
            let (pid, description) = match status {
                WaitStatus::Exited(pid, code) => (pid, format!("exited with status {code}")),
                WaitStatus::Signaled(pid, signal, _) => (pid, format!("killed by {signal:?}")),
                _ => continue,
            };
            let Some(index) = self.tasks.iter().position(|task| task.pid == Some(pid.as_raw() as u32)) else { continue };
            let ran = self.tasks[index].started_at.elapsed();
            let task = &mut self.tasks[index];
            task.pid = None;
            task.control = None;
            if task.stop_requested {
                task.state = TaskState::Stopped;
                info!(task = task.config.kind.name(), "task stopped");
                continue;
            }
            let oom = task.cgroup.as_ref().is_some_and(|cgroup| cgroup.oom_kills() > task.oom_kills_seen);
            let reason = match task.kill_reason.take() {
                Some(reason) => reason,
                None if oom => format!("memory: killed by the kernel at memory.max ({} MiB, cgroup)", task.config.memory_max_bytes >> 20),
                None => description,
            };
            warn!(task = task.config.kind.name(), reason = %reason, ran_ms = ran.as_millis() as u64, "task exited");
            task.last_exit = Some(reason);
            self.after_exit(index, ran);
        }
    }

    fn after_exit(&mut self, index: usize, ran: Duration) {
        let jitter = f64::from(Instant::now().elapsed().subsec_nanos() % 1000) / 1000.0;
        let task = &mut self.tasks[index];
        match task.history.on_exit(&task.config, Instant::now(), ran, jitter) {
            Decision::RestartAfter(delay) => {
                task.state = TaskState::Restarting;
                task.next_start = Some(Instant::now() + delay);
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

    /// Reads each task's control channel within its budget (`mld_supervisor::control`):
    /// at most 64 KiB and 64 frames a turn, and nothing more while a whole frame waits to
    /// be decoded, so no task can hold the loop or grow the supervisor's memory. A task
    /// that floods its channel, or sends a frame that is not a message, is killed (and
    /// restarted under its policy) with the reason logged.
    fn read_control(&mut self) {
        let now = Instant::now();
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
                                info!(task = task.config.kind.name(), after_ms = task.started_at.elapsed().as_millis() as u64, "task ready");
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
                task.kill_deadline = Some(now + KILL_GRACE);
                task.control = None;
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }

    fn watchdog(&mut self) {
        for task in &mut self.tasks {
            let Some(pid) = task.pid else {
                task.memory_bytes = 0;
                continue;
            };
            task.memory_bytes = resident_bytes(pid).unwrap_or(0);
            if task.memory_bytes > task.config.memory_max_bytes && task.kill_deadline.is_none() {
                let reason =
                    format!("memory: resident {} MiB over the {} MiB budget (RSS watchdog)", task.memory_bytes >> 20, task.config.memory_max_bytes >> 20);
                warn!(task = task.config.kind.name(), reason = %reason, "killing task");
                task.kill_reason = Some(reason);
                task.kill_deadline = Some(Instant::now() + KILL_GRACE);
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
        }
    }

    fn escalate_kills(&mut self) {
        for task in &mut self.tasks {
            if let (Some(pid), Some(deadline)) = (task.pid, task.kill_deadline) {
                if Instant::now() >= deadline {
                    warn!(task = task.config.kind.name(), "task did not exit after SIGTERM; sending SIGKILL");
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    task.kill_deadline = Some(Instant::now() + KILL_GRACE);
                }
            }
        }
    }

    fn announce_readiness(&mut self) {
        if self.announced_ready || !self.tasks.iter().all(|task| task.state == TaskState::Ready) {
            return;
        }
        self.announced_ready = true;
        info!(after_ms = self.started.elapsed().as_millis() as u64, "all tasks ready");
        println!("mldefender: ready");
        if let Err(error) = notify::sd_notify("READY=1") {
            warn!(error = %error, "failed to notify systemd");
        }
    }

    fn serve_status(&mut self) {
        let Ok((mut stream, _)) = self.status_listener.accept() else { return };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
        match mld_ipc::read_frame::<ControlRequest>(&mut stream) {
            Ok(Some(ControlRequest::Status)) => {
                let report = self.status_report();
                if let Err(error) = mld_ipc::write_frame(&mut stream, &report) {
                    warn!(error = %error, "failed to answer a status request");
                }
            }
            Ok(None) => {}
            Err(error) => warn!(error = %error, "bad request on the status socket"),
        }
    }

    fn status_report(&self) -> StatusReport {
        let mut pipeline = PipelineCounters::default();
        for counters in self.tasks.iter().filter_map(|task| task.counters) {
            pipeline.update(counters);
        }
        StatusReport {
            supervisor_pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            ready: self.tasks.iter().all(|task| task.state == TaskState::Ready),
            supervisor_memory_bytes: resident_bytes(std::process::id()).unwrap_or(0),
            tasks: self
                .tasks
                .iter()
                .map(|task| TaskStatus {
                    name: task.config.kind.name().to_string(),
                    state: task.state,
                    pid: task.pid,
                    uptime_secs: if task.pid.is_some() { task.started_at.elapsed().as_secs_f64() } else { 0.0 },
                    restarts: task.history.total_restarts(),
                    last_exit: task.last_exit.clone(),
                    memory_bytes: task.memory_bytes,
                    memory_budget_bytes: task.config.memory_max_bytes,
                    memory_enforcement: if task.cgroup.is_some() { "cgroup+rss" } else { "rss" }.to_string(),
                    user: task.config.user.clone(),
                    control_floods: task.control_floods,
                })
                .collect(),
            pipeline,
        }
    }

    /// Stops the tasks in order (capture first: intake stops, then the consumers
    /// drain), within the deadline; names and kills any still running; detaches XDP last.
    fn shutdown(mut self) {
        let deadline = Instant::now() + self.config.supervisor.shutdown_deadline;
        info!(deadline_ms = self.config.supervisor.shutdown_deadline.as_millis() as u64, "shutting down");
        for index in 0..self.tasks.len() {
            self.tasks[index].next_start = None;
            let Some(pid) = self.tasks[index].pid else {
                self.tasks[index].state = TaskState::Stopped;
                continue;
            };
            self.tasks[index].state = TaskState::Stopping;
            self.tasks[index].stop_requested = true;
            let asked = self.tasks[index]
                .control
                .as_mut()
                .map(|control| {
                    let _ = control.set_nonblocking(false);
                    mld_ipc::write_frame(control, &SupervisorMessage::Shutdown).is_ok()
                })
                .unwrap_or(false);
            if !asked {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            while self.tasks[index].pid.is_some() && Instant::now() < deadline {
                self.reap();
                std::thread::sleep(LOOP_TICK);
            }
        }
        for task in &mut self.tasks {
            if let Some(pid) = task.pid {
                error!(task = task.config.kind.name(), pid, "task still running at the shutdown deadline; killing it");
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        let kill_deadline = Instant::now() + Duration::from_secs(2);
        while self.tasks.iter().any(|task| task.pid.is_some()) && Instant::now() < kill_deadline {
            self.reap();
            std::thread::sleep(LOOP_TICK);
        }
        self.dataplane.shutdown();
        info!("supervisor stopped");
        println!("mldefender: stopped");
    }
}
