//! `mldefender supervise`: the one supervisor process.
//!
//! Start-up story: (PID 1: mount the system) → validate the configuration (exit 64 with
//! every error) → load and attach XDP (the only privileged step) → open the control and
//! flow sockets → start each task as an unprivileged child → watch them: readiness,
//! memory, exits, restarts → on SIGTERM stop them in order within the deadline, detach
//! XDP last (PID 1: sync and power off).
//!
//! This module is the set-up and the real [`Spawner`] (it owns the data plane's fds, the
//! listeners and the key files it hands to the tasks); the state machine that watches,
//! restarts and stops the tasks is [`mld_supervisor::machine`].
//!
//! The loop is single-threaded on purpose: tasks are forked from it, and a fork of a
//! multi-threaded process may inherit a lock held by another thread.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::enforcement::Enforcement;
use anyhow::Context;
use mld_capture::TaskFds as DataplaneFds;
use mld_config::{Config, TaskConfig, TaskKind};
use mld_ipc::{ControlRequest, TaskSettings};
use mld_supervisor::files::{create_dirs, give_dir, give_socket_to_group, set_umask, with_umask, PASS_THROUGH_MODE, SUPERVISOR_UMASK};
use mld_supervisor::layout::{CaptureFds, DetectFds, FleetFds, IngestFds, LogFds, TaskFds};
use mld_supervisor::machine::{Clock, ExitStatus, Machine, Reaped, Settings, Spawner, SystemClock, TaskSetup, LOOP_TICK};
use mld_supervisor::memory::{resident_bytes, TaskCgroup};
use mld_supervisor::spawn::{kernel_needs_cap_bpf_for_map_fds, spawn, Executable, TaskSpawn};
use mld_supervisor::{init, notify};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::{error, info, warn};

use crate::exit::Exit;

pub const STATUS_SOCKET: &str = "supervisor.sock";
pub const FLOWS_SOCKET: &str = "flows.sock";
pub const EVENTS_SOCKET: &str = "events.sock";
/// Where the fleet task listens for the detect task (only with `[fleet]` on).
pub const FLEET_SOCKET: &str = "fleet.sock";

/// What the real spawner needs to start one task: who it runs as, where, in which cgroup.
struct TaskProcess {
    kind: TaskKind,
    uid: u32,
    gid: u32,
    cgroup: Option<TaskCgroup>,
    runtime_dir: PathBuf,
}

/// Starts task processes for the machine: owns everything they are handed (the data
/// plane's fds, the listeners, the key files) and starts them through
/// [`mld_supervisor::spawn`].
struct RealSpawner {
    /// The supervisor's own binary, which every task runs (opened at start).
    exe: Executable,
    /// The configuration's runtime directory (`capture.runtime-dir`).
    runtime_dir: PathBuf,
    dataplane: Enforcement,
    flows_listener: UnixListener,
    events_listener: UnixListener,
    query_listener: UnixListener,
    /// The log key, opened by the supervisor (root) and handed to the log task as an fd.
    log_key: std::fs::File,
    /// The checkpoint signing key, the same way, to the log task only; the ingest task
    /// gets its public key (ADR 0007).
    signing_key: std::fs::File,
    log_public_key: String,
    /// The fleet task's socket and etcd identity, opened here (`None` without a fleet).
    fleet: Option<FleetHandout>,
    tasks: Vec<TaskProcess>,
    keep_cap_bpf: bool,
    /// The configuration generation and the fleet document in force (the fleet task
    /// judges new documents against the generation's own text).
    documents: crate::fleet_doc::Documents,
    /// The generation in force, for the tasks' record.
    config_note: mld_ipc::ConfigNote,
    /// The appliance image's boot slots (`None` off the image).
    image: Option<crate::slots::ImageSlots>,
    /// Metrics and the status page (`None` when `[metrics]` is off), and when the status
    /// report was last published to them.
    web: Option<crate::web::Web>,
    published: Option<Instant>,
}

/// How often the status report is published to the metrics and the status page.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Set when an operator asked for a reboot (`mldefender update apply --reboot`): PID 1
/// reboots after the orderly stop instead of powering off.
pub static REBOOT_REQUESTED: AtomicBool = AtomicBool::new(false);
/// Set by `mldefender stop`: the loop ends as on SIGTERM.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

pub fn run(config_path: &Path) -> anyhow::Result<Exit> {
    let pid1 = init::is_pid1();
    if pid1 {
        if let Err(error) = init::mount_system() {
            eprintln!("mldefender: error: {error}");
        }
    }
    // Before anything else (as PID 1, once /proc is there): tasks run this very binary,
    // started from the fd, wherever it lives and whatever replaces the file later.
    let exe = Executable::open_self();
    crate::logging::init("mldefender");
    let outcome = supervise(config_path, exe);
    if pid1 {
        // As init there is nobody to return to. An orderly stop (Ctrl-Alt-Del, SIGTERM)
        // powers off; a failure reboots, so that a slot on trial falls back to the other
        // one after its tries (systemd-boot's boot counting) and a blessed one starts
        // again; a requested reboot (an update) reboots.
        let failed = !matches!(outcome, Ok(Exit::Success));
        if let Err(error) = &outcome {
            error!(error = %format!("{error:#}"), "supervisor failed");
        }
        if failed || REBOOT_REQUESTED.load(Ordering::SeqCst) {
            if failed {
                eprintln!("mldefender: the supervisor stopped on a failure: rebooting");
            }
            eprintln!("mldefender: rebooting");
            let failure = init::reboot();
            error!(error = %failure, "reboot failed");
        }
        let failure = init::power_off();
        error!(error = %failure, "power off failed");
    }
    outcome
}

fn supervise(config_path: &Path, exe: std::io::Result<Executable>) -> anyhow::Result<Exit> {
    // Whatever the supervisor creates is private unless a mode is given on purpose.
    set_umask(SUPERVISOR_UMASK);
    let origin = config_path.display().to_string();
    let (file_config, file_text) =
        match Config::from_file_with_text(config_path).and_then(|(config, text)| config.check_environment(&origin).map(|()| (config, text))) {
            Ok(loaded) => loaded,
            Err(errors) => {
                eprintln!("{errors}");
                return Ok(Exit::Config);
            }
        };
    // The generation in force (an applied one, unless the file changed since), with the
    // fleet configuration document kept by an earlier run laid over it.
    let (running, documents) = crate::reconfigure::start(config_path, file_config, file_text, &origin);
    // A generation applied while running that fails before the supervisor runs (an
    // interface it names is gone, XDP will not attach) is marked failed, and the
    // supervisor restarts in place with the one before it.
    let fallback = (running.note.source != crate::generations::FROM_FILE)
        .then(|| (running.config.supervisor.state_dir.clone(), running.config.supervisor.generations_max, running.generation));
    let mut reached_loop = false;
    let outcome = serve(exe, running, documents, &mut reached_loop);
    if let (Some((state_dir, max, generation)), false) = (fallback, reached_loop) {
        if !matches!(outcome, Ok(Exit::Success)) {
            error!(
                generation,
                "the configuration generation in force failed before the supervisor ran: marking it failed and restarting with the previous one"
            );
            let marked = crate::generations::Generations::open(&state_dir, max).and_then(|mut generations| generations.mark_failed(generation));
            match marked.map_err(anyhow::Error::msg).and_then(|()| Executable::open_self().map_err(anyhow::Error::from)) {
                Ok(exe) => error!(error = %exe.reexec(), "failed to restart the supervisor in place"),
                Err(error) => error!(error = %format!("{error:#}"), "cannot fall back to the previous configuration generation"),
            }
        }
    }
    outcome
}

/// The supervisor from the generation in force on: the data plane, the sockets, the
/// tasks, the loop, the shutdown. `reached_loop` says whether it got as far as running.
fn serve(
    exe: std::io::Result<Executable>,
    running: crate::reconfigure::Running,
    documents: crate::fleet_doc::Documents,
    reached_loop: &mut bool,
) -> anyhow::Result<Exit> {
    let (config, config_toml) = (running.config.clone(), running.effective_toml.clone());
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("failed to install the signal handlers")?;
    }
    // SIGHUP: read the configuration file again and apply it (`ExecReload`).
    let hangup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hangup)).context("failed to install the SIGHUP handler")?;
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
        match init::prepare_data(data) {
            Ok(init::DataOutcome::Mounted { device, formatted: true }) => {
                info!(device = %device.display(), mount = %data.mount.display(), label = %data.label, "first boot: the blank data partition was formatted and mounted")
            }
            Ok(init::DataOutcome::Mounted { device, formatted: false }) => {
                info!(device = %device.display(), mount = %data.mount.display(), "persistent storage mounted")
            }
            Ok(init::DataOutcome::Absent) => {
                warn!(device = %data.device.display(), "no persistent storage: the log, keys and saved blocks live in RAM until the next boot")
            }
            Err(error) => error!(error = %error, "persistent storage refused: the log, keys and saved blocks live in RAM until the next boot"),
        }
    }
    if config.pki.enabled {
        // After the data partition is mounted (the certificates live there). A failure
        // stops nothing local: detection and blocking do not need certificates, only the
        // fleet does.
        if let Err(error) = crate::pki::provision(&config, false) {
            error!(error = %error, "certificates not provisioned ([pki]); `mldefender pki status` shows what is there");
        }
    }
    for interface in &config.system.interfaces_up {
        if let Err(error) = init::set_link_up("lo").and_then(|()| init::set_link_up(interface)) {
            error!(error = %error, "failed to bring an interface up");
            return Ok(Exit::Failure);
        }
    }
    for (interface, address, prefix) in &config.system.addresses {
        if let Err(error) = init::set_address(interface, *address, *prefix) {
            error!(error = %error, "failed to set an interface address");
            return Ok(Exit::Failure);
        }
    }
    if config.system.ip_forward {
        if let Err(error) = init::enable_ip_forward() {
            error!(error = %error, "the appliance cannot route");
            return Ok(Exit::Failure);
        }
    }
    // The image's slots (after the modules: vfat and efivarfs are modules there).
    let image = crate::slots::ImageSlots::at_start(&config.image);
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
    if init::is_pid1() {
        // A hypervisor's management port to the control socket (qemu/, docs/image.md).
        crate::management_port::start(runtime.join(STATUS_SOCKET));
    }
    // Metrics and the status page, on the management addresses only (`[metrics]`).
    let web = crate::web::Web::start(&config);
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
    // The fleet is a bonus: without its identity the appliance protects on its own.
    let fleet = if config.fleet.enabled && config.tasks.iter().any(|task| task.kind == TaskKind::Fleet && task.enabled) {
        match FleetHandout::open(&config, &runtime) {
            Ok(handout) => Some(handout),
            Err(error) => {
                error!(error = %format!("{error:#}"), "the fleet task cannot start: this node runs without its fleet");
                None
            }
        }
    } else {
        None
    };

    let mut processes = Vec::new();
    let mut setups = Vec::new();
    for task_config in config.tasks.iter().filter(|task| task.enabled && (task.kind != TaskKind::Fleet || fleet.is_some())) {
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
        setups.push(TaskSetup { config: task_config.clone(), cgroup: cgroup.is_some() });
        processes.push(TaskProcess { kind: task_config.kind, uid, gid, cgroup, runtime_dir });
    }
    if let Some(detect) = processes.iter().find(|task| task.kind == TaskKind::Detect) {
        // Bound 0660 above.
        let path = runtime.join(crate::query_server::QUERY_SOCKET);
        give_socket_to_group(&path, detect.gid).with_context(|| format!("failed to give `{}` to the detect task's group", path.display()))?;
    }
    let mut spawner = RealSpawner {
        exe: exe.context("failed to open the mldefender executable (/proc/self/exe)")?,
        runtime_dir: runtime.clone(),
        dataplane,
        flows_listener,
        events_listener,
        query_listener,
        log_key,
        signing_key,
        log_public_key,
        fleet,
        tasks: processes,
        keep_cap_bpf: kernel_needs_cap_bpf_for_map_fds(),
        config_note: running.note.clone(),
        documents,
        image,
        web,
        published: None,
    };
    let clock = SystemClock;
    let mut machine = Machine::new(Settings::new(&config, config_toml), setups, clock.now());
    let certificates = crate::pki::Watch::new(&config, clock.now());
    let mut running = running;
    *reached_loop = true;
    let signals = Signals { stop: &stop, hangup: &hangup };
    let end = run_loop(&mut machine, &mut spawner, &status_listener, signals, &clock, certificates, &mut running);
    machine.shutdown(&mut spawner, &clock);
    let RealSpawner { exe, dataplane, .. } = spawner;
    if let LoopEnd::Restart { generation } = end {
        // The XDP program and the blocks stay in the kernel; the next run adopts them.
        if !dataplane.hand_over() {
            warn!("an interface is attached without a bpf link: its enforcement pauses until the restarted supervisor attaches again");
        }
        info!(generation, "tasks stopped; the supervisor restarts itself in place with the configuration");
        let error = exe.reexec();
        error!(error = %error, "failed to restart the supervisor in place");
        return Ok(Exit::Failure);
    }
    dataplane.shutdown();
    info!("supervisor stopped");
    println!("mldefender: stopped");
    let _ = std::fs::remove_file(runtime.join(STATUS_SOCKET));
    let _ = std::fs::remove_file(runtime.join(FLOWS_SOCKET));
    let _ = std::fs::remove_file(runtime.join(EVENTS_SOCKET));
    let _ = std::fs::remove_file(runtime.join(FLEET_SOCKET));
    let _ = std::fs::remove_file(runtime.join(crate::query_server::QUERY_SOCKET));
    Ok(Exit::Success)
}

/// Why the supervisor's loop ended.
enum LoopEnd {
    /// SIGTERM or SIGINT: stop.
    Stop,
    /// Restart in place (execute itself again, same pid): a fleet configuration document
    /// was kept, a change needs a new supervisor, or the generation in force failed.
    Restart { generation: u64 },
}

/// What the supervisor opens for the fleet task: the socket the detect task connects to
/// (the task admits the detect task's user only), and its etcd identity from `pki.dir`.
/// The key is checked like every secret (`mld-secret`: root's, no group or other access,
/// no link); the task reads the fds and never sees the directory. The files are opened
/// again for every start of the task, so a renewed certificate is used from its next start.
#[derive(Debug)]
struct FleetHandout {
    listener: UnixListener,
    dir: PathBuf,
    cert: std::fs::File,
    key: std::fs::File,
    ca: std::fs::File,
}

impl FleetHandout {
    fn open(config: &Config, runtime: &Path) -> anyhow::Result<FleetHandout> {
        let dir = config.pki.dir.clone();
        let (cert, key, ca) = FleetHandout::identity(&dir)?;
        let listener = bind(&runtime.join(FLEET_SOCKET), 0o666)?;
        listener.set_nonblocking(true).context("failed to configure the fleet socket")?;
        Ok(FleetHandout { listener, dir, cert, key, ca })
    }

    fn identity(dir: &Path) -> anyhow::Result<(std::fs::File, std::fs::File, std::fs::File)> {
        let open = |name: String| {
            let path = dir.join(&name);
            std::fs::File::open(&path).with_context(|| format!("failed to open `{}` (run `mldefender pki status`)", path.display()))
        };
        let cert = open(format!("{}.pem", mld_pki::store::CLIENT))?;
        let key_path = dir.join(format!("{}-key.pem", mld_pki::store::CLIENT));
        let key = mld_secret::open_secret_file(&key_path, "the fleet's etcd client key").map_err(anyhow::Error::from)?;
        let ca = open(mld_pki::store::TRUST_BUNDLE.to_string())?;
        Ok((cert, key, ca))
    }

    /// Opens the identity files again (a renewal replaced them by rename).
    fn reopen(&mut self) -> anyhow::Result<()> {
        (self.cert, self.key, self.ca) = FleetHandout::identity(&self.dir)?;
        Ok(())
    }
}

/// Opens the log key once (creating it, 0600, when missing and allowed), checked on the
/// open fd (`LogKey::open`: no link, owner root, no group or other access, a key's
/// length), and gives the log, ingest and detect state directories to their tasks. The returned
/// file is the one handed to the tasks.
fn open_log_key(config: &Config) -> anyhow::Result<std::fs::File> {
    let key_file = crate::keys::open_log_key(config)?;
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
    if let Some(task) = config.tasks.iter().find(|task| task.kind == TaskKind::Detect && task.enabled) {
        // The operator's exemptions (`benign.json`): written by the detect task alone.
        let (uid, gid) = uid_gid(task)?;
        let dir = &config.detect.state_dir;
        create_dirs(dir, 0o700)
            .and_then(|()| give_dir(dir, uid, gid, 0o700))
            .with_context(|| format!("failed to give `{}` to the detect task", dir.display()))?;
    }
    Ok(key_file)
}

/// Opens the checkpoint signing key once (creating it, 0600, when missing and
/// `log.create-key` allows), checked on the open fd as the log key is; returns the file
/// (for the log task) and its public key, base64 (for the ingest task).
fn open_signing_key(config: &Config) -> anyhow::Result<(std::fs::File, String)> {
    let path = &config.log.signing_key_file;
    let file = crate::keys::open_signing_key(config)?;
    let public_key =
        mld_eventlog::CheckpointSigningKey::from_file(file.try_clone().context("failed to duplicate the signing key fd")?, path)?.public_key().to_base64();
    Ok((file, public_key))
}

/// Binds a socket with exactly `mode` (set by `bind` through the umask: no chmod of a
/// path afterwards).
fn bind(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    with_umask(mode, || UnixListener::bind(path)).with_context(|| format!("failed to bind `{}`", path.display()))
}

/// The supervisor's loop until SIGTERM or SIGINT: the machine's step, the status socket,
/// the data plane's periodic work.
/// The signals the loop watches: SIGTERM or SIGINT (stop), SIGHUP (reload the file).
#[derive(Clone, Copy)]
struct Signals<'a> {
    stop: &'a AtomicBool,
    hangup: &'a AtomicBool,
}

fn run_loop(
    machine: &mut Machine,
    spawner: &mut RealSpawner,
    status_listener: &UnixListener,
    signals: Signals<'_>,
    clock: &dyn Clock,
    mut certificates: Option<crate::pki::Watch>,
    running: &mut crate::reconfigure::Running,
) -> LoopEnd {
    let origin = running.file.display().to_string();
    let origin = origin.as_str();
    let mut releases = crate::benign::Releases::default();
    let started = clock.now();
    let mut ever_ready = false;
    // Since when every task has been ready without a break (blessing an image slot).
    let mut healthy_since: Option<Instant> = None;
    let mut image_noted = false;
    while !signals.stop.load(Ordering::Relaxed) && !REBOOT_REQUESTED.load(Ordering::SeqCst) && !STOP_REQUESTED.load(Ordering::SeqCst) {
        if signals.hangup.swap(false, Ordering::Relaxed) {
            // `ExecReload`: the file again, applied as any change (its answer is the log).
            match std::fs::read_to_string(&running.file) {
                Ok(text) => {
                    if let (_, Some(end)) = apply_change(machine, spawner, running, &text, crate::generations::FROM_SIGHUP) {
                        return end;
                    }
                }
                Err(error) => error!(file = %running.file.display(), error = %error, "SIGHUP: failed to read the configuration file; nothing changed"),
            }
        }
        // A start from a generation applied while running that never gets ready falls
        // back to the one before it (the file's own generations are the operator's).
        if !ever_ready
            && running.note.source != crate::generations::FROM_FILE
            && clock.now().saturating_duration_since(started) >= running.config.supervisor.ready_timeout
        {
            error!(
                generation = running.generation,
                timeout_secs = running.config.supervisor.ready_timeout.as_secs(),
                "the configuration generation in force did not reach ready: marking it failed and restarting with the previous one"
            );
            if running.generations.mark_failed(running.generation).is_ok() {
                return LoopEnd::Restart { generation: running.generation };
            }
            ever_ready = true;
        }
        // An image slot on trial that does not get ready burns its try: reboot, so that
        // the boot loader tries it again or falls back to the other slot.
        if !ever_ready
            && spawner.image.as_ref().is_some_and(crate::slots::ImageSlots::on_trial)
            && clock.now().saturating_duration_since(started) >= running.config.supervisor.ready_timeout
        {
            error!(
                timeout_secs = running.config.supervisor.ready_timeout.as_secs(),
                "the image slot on trial did not get ready: rebooting (the boot loader falls back once its tries are spent)"
            );
            REBOOT_REQUESTED.store(true, Ordering::SeqCst);
            continue;
        }
        if let Some(document) = machine.take_fleet_document() {
            match spawner.documents.adopt(&document, &format!("{origin} with a fleet document")) {
                Ok(generation) => {
                    info!(generation, "fleet configuration document kept: restarting the tasks with it");
                    return LoopEnd::Restart { generation };
                }
                Err((generation, errors)) => {
                    error!(generation = ?generation, errors = ?errors, "refused the fleet configuration document the fleet task took");
                    let refused = mld_ipc::SupervisorMessage::FleetDocumentRefused { generation: generation.unwrap_or(0), errors };
                    if let Err(why) = machine.send_to_task(TaskKind::Fleet, &refused) {
                        warn!(why, "the refusal did not reach the fleet task");
                    }
                }
            }
        }
        if let Some(watch) = certificates.as_mut() {
            if watch.poll(clock.now()).client_changed {
                hand_identity(machine, spawner);
            }
        }
        let step = machine.step(spawner, clock.now());
        ever_ready |= step.all_ready;
        healthy_since = if machine.all_ready() { Some(healthy_since.unwrap_or(clock.now())) } else { None };
        if let Some(image) = spawner.image.as_mut() {
            if !image_noted && machine.all_ready() {
                image_noted = true;
                note_image_boot(machine, image);
            }
            if let Some(result) = image.bless_if_due(healthy_since.map(|since| clock.now().saturating_duration_since(since))) {
                let text = match result {
                    Ok(name) => {
                        println!("mldefender: image slot blessed ({name})");
                        format!("image slot blessed: {name} stayed healthy for {} s with every task ready", image.config.bless_after.as_secs())
                    }
                    Err(error) => format!("image slot not blessed: {error}; it falls back at a later boot"),
                };
                info!(text = %text, "image");
                if let Err(why) = machine.send_to_task(TaskKind::Detect, &mld_ipc::SupervisorMessage::Note { action: IMAGE_ACTION.to_string(), text }) {
                    warn!(why, "the blessing is not in the signed log");
                }
            }
        }
        if let Some((mut stream, request)) = serve_status(machine, &mut releases, status_listener, clock.now()) {
            match request {
                ControlRequest::RunningConfig => {
                    let answer = mld_ipc::RunningConfig {
                        generation: running.generation,
                        base_toml: running.base_toml.clone(),
                        document_toml: spawner.documents.document_toml.clone(),
                        effective_toml: running.effective_toml.clone(),
                    };
                    if let Err(error) = mld_ipc::write_frame(&mut stream, &answer) {
                        warn!(error = %error, "failed to answer a configuration request");
                    }
                }
                ControlRequest::UpdateStatus => {
                    let result = match spawner.image.as_ref() {
                        Some(image) => image.report().and_then(|report| serde_json::to_string(&report).map_err(|error| error.to_string())),
                        None => Err(NOT_THE_IMAGE.to_string()),
                    };
                    if let Err(error) = mld_ipc::write_frame(&mut stream, &mld_ipc::UpdateAnswer { result }) {
                        warn!(error = %error, "failed to answer an update status request");
                    }
                }
                ControlRequest::UpdateApply { bytes, sha256, signature, reboot } => {
                    let image = spawner.image.clone();
                    // Receiving and writing take seconds: not in the loop.
                    std::thread::spawn(move || receive_update(stream, image, bytes, sha256, signature, reboot));
                }
                ControlRequest::Apply { toml, source } => {
                    let source = if source == crate::generations::FROM_ROLLBACK { crate::generations::FROM_ROLLBACK } else { crate::generations::FROM_APPLY };
                    let (answer, end) = apply_change(machine, spawner, running, &toml, source);
                    if let Err(error) = mld_ipc::write_frame(&mut stream, &answer) {
                        warn!(error = %error, "failed to answer a configuration change");
                    }
                    if let Some(end) = end {
                        return end;
                    }
                }
                _ => {}
            }
        }
        releases.poll(machine, clock.now());
        if step.all_ready {
            log_task_identities(machine, &running.config, clock.now());
            println!("mldefender: ready");
            if let Err(error) = notify::sd_notify("READY=1") {
                warn!(error = %error, "failed to notify systemd");
            }
        }
        if let Some(web) = spawner.web.as_ref() {
            if spawner.published.is_none_or(|at| clock.now().saturating_duration_since(at) >= PUBLISH_EVERY) {
                spawner.published = Some(clock.now());
                web.publish(machine.status_report(clock.now(), std::process::id(), resident_bytes(std::process::id()).unwrap_or(0)));
            }
        }
        spawner.dataplane.tick();
        clock.sleep(LOOP_TICK);
    }
    LoopEnd::Stop
}

/// Each task's identity as the kernel sees it, once every task is ready: its uid,
/// effective capabilities and no_new_privs (/proc/PID/status) and its cgroup's memory
/// limits. What the TOML asked for, checked where it runs (the image's boot test reads it
/// from the console).
fn log_task_identities(machine: &Machine, config: &Config, now: Instant) {
    let report = machine.status_report(now, std::process::id(), 0);
    for task in &report.tasks {
        let Some(pid) = task.pid else { continue };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status.lines().find_map(|line| line.strip_prefix(name)).map(|value| value.split_whitespace().next().unwrap_or("").to_string()).unwrap_or_default()
        };
        let cgroup = config.supervisor.cgroup_root.join(&task.name);
        let limit = |file: &str| std::fs::read_to_string(cgroup.join(file)).map(|text| text.trim().to_string()).unwrap_or_else(|_| "none".to_string());
        info!(
            task = %task.name,
            pid,
            uid = %field("Uid:"),
            cap_eff = %field("CapEff:"),
            no_new_privs = %field("NoNewPrivs:"),
            memory_high = %limit("memory.high"),
            memory_max = %limit("memory.max"),
            "task identity"
        );
    }
}

/// The `action` of the signed log's records about the image's slots.
pub const IMAGE_ACTION: &str = "image";
const NOT_THE_IMAGE: &str = "this machine does not run the appliance image (no ESP at image.esp-device): updates are for the image (docs/image.md)";

/// The booted slot, and a fallback from a failed one, on the console and in the signed log.
fn note_image_boot(machine: &mut Machine, image: &crate::slots::ImageSlots) {
    let booted = image.booted.map_or("unknown".to_string(), String::from);
    let mut texts = vec![format!(
        "image slot {booted} booted ({})",
        image
            .report()
            .map(|report| {
                report
                    .slots
                    .iter()
                    .find(|slot| Some(slot.slot) == image.booted)
                    .map(|slot| format!("{}, {}", slot.version.as_deref().unwrap_or("unknown version"), slot.state()))
                    .unwrap_or_default()
            })
            .unwrap_or_else(|error| error)
    )];
    for note in &image.notes {
        error!(note = %note, "image");
        println!("mldefender: {note}");
        texts.push(note.clone());
    }
    for text in texts {
        if let Err(why) = machine.send_to_task(TaskKind::Detect, &mld_ipc::SupervisorMessage::Note { action: IMAGE_ACTION.to_string(), text }) {
            warn!(why, "the image's boot is not in the signed log");
        }
    }
}

/// `update apply`: reads the image that follows the request (bounded by half the ESP),
/// verifies and writes it (`ImageSlots::apply`), answers, and asks for the reboot.
fn receive_update(mut stream: UnixStream, image: Option<crate::slots::ImageSlots>, bytes: u64, sha256: Option<String>, signature: String, reboot: bool) {
    use std::io::Read;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let result = (|| {
        let image = image.ok_or_else(|| NOT_THE_IMAGE.to_string())?;
        if reboot && !init::is_pid1() {
            return Err("--reboot: the supervisor is not PID 1 here; nothing written (reboot the machine yourself after the update)".to_string());
        }
        if bytes > image.max_update_bytes() {
            return Err(format!("the update is {bytes} bytes; this ESP takes at most {} per slot: nothing written", image.max_update_bytes()));
        }
        let mut data = Vec::with_capacity(bytes as usize);
        (&mut stream).take(bytes).read_to_end(&mut data).map_err(|error| format!("failed to receive the update: {error}"))?;
        if data.len() as u64 != bytes {
            return Err(format!("the update ended after {} of {bytes} bytes: nothing written", data.len()));
        }
        image.apply(&data, sha256.as_deref(), &signature)
    })();
    match &result {
        Ok(done) => info!(done = %done, "update written"),
        Err(error) => error!(error = %error, "update refused"),
    }
    let ok = result.is_ok();
    if let Err(error) = mld_ipc::write_frame(&mut stream, &mld_ipc::UpdateAnswer { result }) {
        warn!(error = %error, "failed to answer an update");
    }
    if ok && reboot {
        info!("rebooting into the update");
        REBOOT_REQUESTED.store(true, Ordering::SeqCst);
    }
}

/// A changed client certificate (renewed here, or a new bundle copied in) goes to the
/// running fleet task, which reconnects with it once; its next start opens the new files.
fn hand_identity(machine: &mut Machine, spawner: &mut RealSpawner) {
    let Some(fleet) = spawner.fleet.as_mut() else { return };
    let read = || -> anyhow::Result<mld_ipc::SupervisorMessage> {
        use base64::Engine;
        use std::io::Read;
        let (mut cert, mut key, mut ca) = FleetHandout::identity(&fleet.dir)?;
        let (mut cert_pem, mut ca_pem) = (String::new(), String::new());
        let mut key_pem = zeroize::Zeroizing::new(Vec::with_capacity(8192));
        cert.read_to_string(&mut cert_pem).context("failed to read the client certificate")?;
        key.read_to_end(&mut key_pem).context("failed to read the client key")?;
        ca.read_to_string(&mut ca_pem).context("failed to read the trust bundle")?;
        let key_pem_base64 = base64::engine::general_purpose::STANDARD.encode(key_pem.as_slice());
        Ok(mld_ipc::SupervisorMessage::FleetIdentity { cert_pem, key_pem_base64, ca_pem })
    };
    let sent = read().and_then(|mut message| {
        let result = machine.send_to_task(TaskKind::Fleet, &message).map_err(anyhow::Error::msg);
        if let mld_ipc::SupervisorMessage::FleetIdentity { key_pem_base64, .. } = &mut message {
            zeroize::Zeroize::zeroize(key_pem_base64);
        }
        result
    });
    match sent {
        Ok(()) => info!("handed the changed etcd client certificate to the fleet task"),
        Err(error) => warn!(error = %format!("{error:#}"), "the changed etcd client certificate reaches the fleet task at its next start"),
    }
}

/// Answers a request on the status socket; a configuration request comes back to the loop
/// with its stream.
fn serve_status(
    machine: &mut Machine,
    releases: &mut crate::benign::Releases,
    status_listener: &UnixListener,
    now: Instant,
) -> Option<(UnixStream, ControlRequest)> {
    let Ok((mut stream, _)) = status_listener.accept() else { return None };
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
    match mld_ipc::read_frame::<ControlRequest>(&mut stream) {
        Ok(Some(ControlRequest::Status)) => {
            let report = machine.status_report(now, std::process::id(), resident_bytes(std::process::id()).unwrap_or(0));
            if let Err(error) = mld_ipc::write_frame(&mut stream, &report) {
                warn!(error = %error, "failed to answer a status request");
            }
        }
        // Answered once the detect task has (`benign::Releases::poll`).
        Ok(Some(ControlRequest::MarkBenign { prefix, reason, for_secs })) => {
            releases.request(machine, stream, |id| mld_ipc::SupervisorMessage::MarkBenign { id, prefix, reason, for_secs }, now)
        }
        Ok(Some(ControlRequest::Release { prefix })) => releases.request(machine, stream, |id| mld_ipc::SupervisorMessage::Release { id, prefix }, now),
        Ok(Some(ControlRequest::Stop { reboot })) => {
            let result = if reboot && !init::is_pid1() {
                Err("--reboot: the supervisor is not PID 1 here; nothing stopped (reboot the machine yourself)".to_string())
            } else {
                info!(reboot, "stop requested through the control socket");
                REBOOT_REQUESTED.fetch_or(reboot, Ordering::SeqCst);
                STOP_REQUESTED.store(true, Ordering::SeqCst);
                Ok(match (init::is_pid1(), reboot) {
                    (true, true) => "stopping the tasks in order, then rebooting",
                    (true, false) => "stopping the tasks in order, then powering off",
                    (false, _) => "stopping the tasks in order; the supervisor then exits",
                }
                .to_string())
            };
            if let Err(error) = mld_ipc::write_frame(&mut stream, &mld_ipc::UpdateAnswer { result }) {
                warn!(error = %error, "failed to answer a stop request");
            }
        }
        Ok(Some(
            request @ (ControlRequest::RunningConfig | ControlRequest::Apply { .. } | ControlRequest::UpdateStatus | ControlRequest::UpdateApply { .. }),
        )) => {
            // An apply may take a while to judge (the checks read the machine).
            let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
            return Some((stream, request));
        }
        Ok(None) => {}
        Err(error) => warn!(error = %error, "bad request on the status socket"),
    }
    None
}

/// Applies `text` (a whole configuration from `source`) with the least disruption its plan
/// allows (`reconfigure`): every error and nothing changed; or the new generation kept,
/// then what is live sent to the running tasks (and the allowlist into the XDP maps), the
/// tasks to restart restarted one at a time, or the supervisor restarted in place.
fn apply_change(
    machine: &mut Machine,
    spawner: &mut RealSpawner,
    running: &mut crate::reconfigure::Running,
    text: &str,
    source: &str,
) -> (mld_ipc::ApplyAnswer, Option<LoopEnd>) {
    use mld_config::plan::Class;
    let origin = format!("the configuration ({source})");
    let prepared = match running.prepare(&spawner.documents, text, &origin) {
        Ok(prepared) => prepared,
        Err(errors) => {
            error!(source, errors = ?errors, "configuration change refused: nothing changed");
            return (mld_ipc::ApplyAnswer { result: Err(errors) }, None);
        }
    };
    let plan = prepared.plan.to_text();
    // A change the fleet document in force hides (nothing runs differently) is still kept:
    // it is the base the next document is laid over.
    if prepared.plan.is_empty() && prepared.base_toml == running.base_toml {
        info!(source, "configuration unchanged");
        return (mld_ipc::ApplyAnswer { result: Ok(mld_ipc::Applied { generation: None, plan, done: crate::reconfigure::describe(&prepared.plan, 0) }) }, None);
    }
    let old_allowlist = running.config.allowlist.clone();
    let note = match running.commit(&prepared, source) {
        Ok(note) => note,
        Err(why) => {
            error!(source, why = %why, "configuration change not kept: nothing changed");
            return (mld_ipc::ApplyAnswer { result: Err(vec![why]) }, None);
        }
    };
    let mut done = if prepared.plan.is_empty() {
        format!("generation {} kept: the fleet configuration document in force hides the change, so nothing runs differently", note.generation)
    } else {
        crate::reconfigure::describe(&prepared.plan, note.generation)
    };
    info!(generation = note.generation, source, classes = ?note.classes, sha256 = %note.sha256, "{done}");
    spawner.documents.base_toml = prepared.base_toml.clone();
    spawner.config_note = note.clone();
    if prepared.plan.overall() == Some(Class::RestartsSupervisor) {
        let answer = mld_ipc::ApplyAnswer { result: Ok(mld_ipc::Applied { generation: Some(note.generation), plan, done }) };
        return (answer, Some(LoopEnd::Restart { generation: note.generation }));
    }
    machine.set_config_toml(prepared.effective_toml.clone());
    // Budgets and restart policies: the watchdog's and the kernel's limits from now on.
    for task in &prepared.config.tasks {
        machine.set_task_config(task);
        if let Some(cgroup) = spawner.tasks.iter().find(|process| process.kind == task.kind).and_then(|process| process.cgroup.as_ref()) {
            if let Err(error) = cgroup.set_limits(task.memory_high_bytes, task.memory_max_bytes) {
                warn!(task = task.kind.name(), error = %error, "failed to set the task's cgroup memory limits; the RSS watchdog enforces the new budget");
            }
        }
    }
    if old_allowlist != prepared.config.allowlist {
        match spawner.dataplane.replace_allowlist(&prepared.config.allowlist) {
            Ok(()) => info!(entries = prepared.config.allowlist.len(), "allowlist replaced in the XDP maps"),
            Err(error) => {
                let why = crate::error_chain(&error);
                error!(error = %why, "failed to replace the allowlist in the XDP maps");
                done.push_str(&format!("; BUT the allowlist could not be written into the XDP maps ({why}): the previous one is in force"));
            }
        }
    }
    let message =
        mld_ipc::SupervisorMessage::Reconfigure { config_toml: prepared.effective_toml.clone(), base_toml: prepared.base_toml.clone(), note: note.clone() };
    let mut restart = prepared.plan.tasks_to_restart();
    for kind in [TaskKind::Capture, TaskKind::Detect, TaskKind::Log, TaskKind::Ingest, TaskKind::Fleet] {
        if spawner.tasks.iter().any(|task| task.kind == kind) {
            if let Err(why) = machine.send_to_task(kind, &message) {
                // Still starting with the previous configuration: restarted with this one.
                warn!(task = kind.name(), why, "the live change did not reach the task; it restarts with the new configuration");
                if !restart.contains(&kind) {
                    restart.push(kind);
                }
            }
        }
    }
    machine.restart_tasks(&restart);
    let answer = mld_ipc::ApplyAnswer { result: Ok(mld_ipc::Applied { generation: Some(note.generation), plan, done }) };
    (answer, None)
}

impl RealSpawner {
    fn process(&self, kind: TaskKind) -> anyhow::Result<&TaskProcess> {
        self.tasks.iter().find(|task| task.kind == kind).with_context(|| format!("task {} is not enabled", kind.name()))
    }

    /// The fds a task of `kind` is handed (its control channel first: fd 3, then 4, ...)
    /// and its environment. Everything a task is given is decided here.
    /// The fds a task of `kind` is handed, in the order the task takes them
    /// (`mld_supervisor::layout`).
    fn handed_fds<'a>(&'a self, kind: TaskKind, control: BorrowedFd<'a>, fds: &'a DataplaneFds<'a>) -> Vec<BorrowedFd<'a>> {
        match kind {
            TaskKind::Capture => TaskFds::Capture(CaptureFds {
                control,
                ring: fds.ring,
                allow: fds.allow[0].as_fd(),
                allow_next: fds.allow[1].as_fd(),
                allow_selector: fds.allow[2].as_fd(),
                deny: fds.deny,
                counters: fds.counters.as_fd(),
                guard: fds.guard,
                good: fds.good,
                guard_on: fds.guard_on,
            }),
            TaskKind::Detect => TaskFds::Detect(DetectFds { control, flows: self.flows_listener.as_fd() }),
            TaskKind::Log => {
                TaskFds::Log(LogFds { control, events: self.events_listener.as_fd(), key: self.log_key.as_fd(), signing_key: self.signing_key.as_fd() })
            }
            // No key fd at all: the checkpoint public key comes in the settings.
            TaskKind::Ingest => TaskFds::Ingest(IngestFds { control, query: self.query_listener.as_fd() }),
            // Only started when the handout opened (see `run`).
            TaskKind::Fleet => match &self.fleet {
                Some(fleet) => {
                    TaskFds::Fleet(FleetFds { control, link: fleet.listener.as_fd(), cert: fleet.cert.as_fd(), key: fleet.key.as_fd(), ca: fleet.ca.as_fd() })
                }
                None => return vec![control],
            },
        }
        .into_list()
    }

    fn spawn_task(&self, kind: TaskKind, control: UnixStream) -> anyhow::Result<u32> {
        let task = self.process(kind)?;
        let fds = self.dataplane.task_fds()?;
        let handed = self.handed_fds(kind, control.as_fd(), &fds);
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
        // The task's end of the control channel is the child's now.
        drop(control);
        // The child is reaped by waitpid(-1) in `reap`, not through `Child`.
        Ok(child.id())
    }
}

impl Spawner for RealSpawner {
    fn task_settings(&self, kind: TaskKind) -> TaskSettings {
        let uid_of = |kind: TaskKind| self.tasks.iter().find(|task| task.kind == kind).map_or(u32::MAX, |task| task.uid);
        TaskSettings {
            flows_socket: self.runtime_dir.join(FLOWS_SOCKET),
            events_socket: self.runtime_dir.join(EVENTS_SOCKET),
            query_socket: self.runtime_dir.join(crate::query_server::QUERY_SOCKET),
            capture_uid: uid_of(TaskKind::Capture),
            detect_uid: uid_of(TaskKind::Detect),
            fleet_socket: self.fleet.as_ref().map(|_| self.runtime_dir.join(FLEET_SOCKET)),
            fleet_base_toml: (kind == TaskKind::Fleet).then(|| self.documents.base_toml.clone()),
            fleet_generation: self.documents.generation,
            config_note: Some(self.config_note.clone()),
            log_public_key: (kind == TaskKind::Ingest).then(|| self.log_public_key.clone()),
            test: crate::task::test_hooks(kind),
        }
    }

    fn start(&mut self, kind: TaskKind, control: UnixStream) -> Result<u32, String> {
        if let (TaskKind::Fleet, Some(fleet)) = (kind, self.fleet.as_mut()) {
            fleet.reopen().map_err(|error| format!("{error:#}"))?;
        }
        self.spawn_task(kind, control).map_err(|error| format!("{error:#}"))
    }

    fn signal(&mut self, pid: u32, signal: Signal) {
        let _ = kill(Pid::from_raw(pid as i32), signal);
    }

    /// waitpid(-1, WNOHANG): every child, as PID 1 orphans too.
    fn reap(&mut self) -> Option<Reaped> {
        loop {
            return match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => None,
                Ok(WaitStatus::Exited(pid, code)) => Some(Reaped { pid: pid.as_raw() as u32, status: ExitStatus::Exited(code) }),
                Ok(WaitStatus::Signaled(pid, signal, _)) => Some(Reaped { pid: pid.as_raw() as u32, status: ExitStatus::Killed(signal) }),
                Ok(_) => continue,
            };
        }
    }

    fn resident_bytes(&mut self, pid: u32) -> Option<u64> {
        resident_bytes(pid)
    }

    fn oom_kills(&mut self, kind: TaskKind) -> Option<u64> {
        self.tasks.iter().find(|task| task.kind == kind)?.cgroup.as_ref().map(TaskCgroup::oom_kills)
    }
}
