//! The supervisor's state machine without processes, root or sleeps: a fake spawner
//! stands in for the tasks (their control channels are real socket pairs) and a fake
//! clock is advanced by hand.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use mld_config::{Config, TaskConfig, TaskKind};
use mld_ipc::{FrameDecoder, StatusReport, SupervisorMessage, TaskMessage, TaskSettings, TaskState, TaskStatus};
use mld_supervisor::machine::{Clock, ExitStatus, Machine, Reaped, Settings, Spawner, TaskSetup, KILL_GRACE};
use nix::sys::signal::Signal;

const MIB: u64 = 1 << 20;

struct FakeClock {
    now: Cell<Instant>,
}

impl FakeClock {
    fn new() -> FakeClock {
        FakeClock { now: Cell::new(Instant::now()) }
    }

    fn advance(&self, by: Duration) {
        self.now.set(self.now.get() + by);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.now.get()
    }

    fn sleep(&self, duration: Duration) {
        self.advance(duration);
    }
}

/// A task process as the fake spawner plays it.
struct FakeTask {
    kind: TaskKind,
    pid: u32,
    /// The task's end of its control channel.
    control: UnixStream,
    decoder: FrameDecoder,
}

/// Plays the tasks: each obeys a Shutdown message and SIGTERM unless told otherwise, and
/// dies of SIGKILL.
#[derive(Default)]
struct FakeSpawner {
    next_pid: u32,
    running: Vec<FakeTask>,
    exited: Vec<Reaped>,
    /// Every start, in order.
    starts: Vec<TaskKind>,
    /// The configuration each task was given, in order (read while reaping).
    configured: Vec<(TaskKind, String)>,
    /// Every signal sent to a task, in order.
    signals: Vec<(TaskKind, Signal)>,
    /// Every Shutdown message a task received, in order.
    asked_to_stop: Vec<TaskKind>,
    /// How each task ended, in order.
    ends: Vec<(TaskKind, ExitStatus)>,
    memory: HashMap<TaskKind, u64>,
    ignores_sigterm: HashSet<TaskKind>,
    ignores_shutdown: HashSet<TaskKind>,
    /// The kernel's memory.events oom_kill count of each task's cgroup.
    oom_kills: HashMap<TaskKind, u64>,
}

impl FakeSpawner {
    fn new() -> FakeSpawner {
        FakeSpawner { next_pid: 100, ..FakeSpawner::default() }
    }

    fn task(&mut self, kind: TaskKind) -> &mut FakeTask {
        self.running.iter_mut().find(|task| task.kind == kind).unwrap_or_else(|| panic!("{kind:?} is not running"))
    }

    fn is_running(&self, kind: TaskKind) -> bool {
        self.running.iter().any(|task| task.kind == kind)
    }

    /// The task sends `message` on its control channel.
    fn send(&mut self, kind: TaskKind, message: &TaskMessage) {
        mld_ipc::write_frame(&mut self.task(kind).control, message).expect("write a frame");
    }

    fn send_raw(&mut self, kind: TaskKind, bytes: &[u8]) {
        self.task(kind).control.write_all(bytes).expect("write bytes");
    }

    /// The task's process ends on its own.
    fn end(&mut self, kind: TaskKind, status: ExitStatus) {
        let Some(index) = self.running.iter().position(|task| task.kind == kind) else { return };
        let task = self.running.remove(index);
        self.exited.push(Reaped { pid: task.pid, status });
        self.ends.push((kind, status));
    }

    /// What the supervisor sent the task since the last look.
    fn receive(&mut self, kind: TaskKind) -> Vec<SupervisorMessage> {
        let task = self.task(kind);
        let mut buffer = [0u8; 4096];
        while let Ok(read) = task.control.read(&mut buffer) {
            if read == 0 {
                break;
            }
            task.decoder.push(&buffer[..read]);
        }
        std::iter::from_fn(|| task.decoder.next_message::<SupervisorMessage>().expect("a frame from the supervisor")).collect()
    }
}

fn task_settings() -> TaskSettings {
    TaskSettings {
        flows_socket: "/run/test/flows.sock".into(),
        events_socket: "/run/test/events.sock".into(),
        query_socket: "/run/test/query.sock".into(),
        fleet_socket: None,
        fleet_base_toml: None,
        fleet_generation: 0,
        config_note: None,
        capture_uid: 1001,
        detect_uid: 1002,
        log_public_key: None,
        test: Default::default(),
    }
}

impl Spawner for FakeSpawner {
    fn task_settings(&self, _kind: TaskKind) -> TaskSettings {
        task_settings()
    }

    fn start(&mut self, kind: TaskKind, control: UnixStream) -> Result<u32, String> {
        self.next_pid += 1;
        control.set_nonblocking(true).expect("nonblocking");
        self.running.push(FakeTask { kind, pid: self.next_pid, control, decoder: FrameDecoder::default() });
        self.starts.push(kind);
        Ok(self.next_pid)
    }

    fn signal(&mut self, pid: u32, signal: Signal) {
        let Some(kind) = self.running.iter().find(|task| task.pid == pid).map(|task| task.kind) else { return };
        self.signals.push((kind, signal));
        if signal == Signal::SIGKILL || (signal == Signal::SIGTERM && !self.ignores_sigterm.contains(&kind)) {
            self.end(kind, ExitStatus::Killed(signal));
        }
    }

    fn reap(&mut self) -> Option<Reaped> {
        let kinds: Vec<TaskKind> = self.running.iter().map(|task| task.kind).collect();
        for kind in kinds {
            let messages = self.receive(kind);
            for message in &messages {
                if let SupervisorMessage::Configure { config_toml, .. } = message {
                    self.configured.push((kind, config_toml.clone()));
                }
            }
            if messages.contains(&SupervisorMessage::Shutdown) {
                self.asked_to_stop.push(kind);
                if !self.ignores_shutdown.contains(&kind) {
                    self.end(kind, ExitStatus::Exited(0));
                }
            }
        }
        (!self.exited.is_empty()).then(|| self.exited.remove(0))
    }

    fn resident_bytes(&mut self, pid: u32) -> Option<u64> {
        let kind = self.running.iter().find(|task| task.pid == pid)?.kind;
        Some(self.memory.get(&kind).copied().unwrap_or(10 * MIB))
    }

    fn oom_kills(&mut self, kind: TaskKind) -> Option<u64> {
        Some(self.oom_kills.get(&kind).copied().unwrap_or(0))
    }
}

fn task_config(kind: TaskKind) -> TaskConfig {
    let mut config = Config::default().tasks.into_iter().find(|task| task.kind == kind).expect("a default task");
    config.backoff_initial = Duration::from_millis(100);
    config.backoff_max = Duration::from_millis(1000);
    config.min_run = Duration::from_secs(5);
    config.hold_after_restarts = 100;
    config.hold_window = Duration::from_secs(60);
    config.memory_max_bytes = 64 * MIB;
    config
}

fn settings() -> Settings {
    Settings {
        config_toml: "# the configuration\n".to_string(),
        watchdog_interval: Duration::from_millis(100),
        shutdown_deadline: Duration::from_secs(3),
        kill_grace: KILL_GRACE,
    }
}

/// A machine for `tasks` (in this order), no jitter.
fn machine(clock: &FakeClock, tasks: Vec<TaskConfig>) -> Machine {
    let setups = tasks.into_iter().map(|config| TaskSetup { config, cgroup: false }).collect();
    Machine::new(settings(), setups, clock.now()).with_jitter(|| 0.0)
}

/// The four tasks every appliance runs (the fleet task runs only with `[fleet]` on).
const FOUR: [TaskKind; 4] = [TaskKind::Capture, TaskKind::Detect, TaskKind::Log, TaskKind::Ingest];

fn all_four() -> Vec<TaskConfig> {
    FOUR.into_iter().map(task_config).collect()
}

fn report(machine: &Machine, clock: &FakeClock) -> StatusReport {
    machine.status_report(clock.now(), 1, 0)
}

fn status(machine: &Machine, clock: &FakeClock, kind: TaskKind) -> TaskStatus {
    report(machine, clock).tasks.into_iter().find(|task| task.name == kind.name()).expect("the task's status")
}

/// Steps every `tick` for `duration`; true when any step announced readiness.
fn run_for(machine: &mut Machine, spawner: &mut FakeSpawner, clock: &FakeClock, duration: Duration) -> bool {
    let until = clock.now() + duration;
    let mut announced = false;
    while clock.now() < until {
        announced |= machine.step(spawner, clock.now()).all_ready;
        clock.advance(Duration::from_millis(10));
    }
    announced
}

fn starts_of(spawner: &FakeSpawner, kind: TaskKind) -> usize {
    spawner.starts.iter().filter(|started| **started == kind).count()
}

#[test]
fn every_task_is_started_with_the_configuration_as_its_first_message() {
    let clock = FakeClock::new();
    let mut spawner = FakeSpawner::new();
    let mut machine = machine(&clock, all_four());
    let _ = machine.step(&mut spawner, clock.now());
    assert_eq!(spawner.starts, FOUR.to_vec());
    for kind in FOUR {
        assert_eq!(spawner.receive(kind), vec![SupervisorMessage::Configure { config_toml: "# the configuration\n".to_string(), settings: task_settings() }]);
        let task = status(&machine, &clock, kind);
        assert_eq!((task.state, task.pid.is_some(), task.memory_enforcement.as_str()), (TaskState::Starting, true, "rss"));
    }
}

#[test]
fn a_task_that_exits_is_restarted_after_a_back_off_that_doubles_for_short_runs_and_resets_after_a_long_run() {
    let clock = FakeClock::new();
    let mut spawner = FakeSpawner::new();
    let mut machine = machine(&clock, vec![task_config(TaskKind::Detect)]);
    let _ = machine.step(&mut spawner, clock.now());
    // Short runs: 100 ms, then 200, then 400 before the next start.
    for (run, delay_ms) in [(1, 100), (2, 200), (3, 400)] {
        spawner.end(TaskKind::Detect, ExitStatus::Exited(3));
        let _ = machine.step(&mut spawner, clock.now());
        let task = status(&machine, &clock, TaskKind::Detect);
        assert_eq!((task.state, task.pid, task.restarts), (TaskState::Restarting, None, run), "after short run {run}");
        assert_eq!(task.last_exit.as_deref(), Some("exited with status 3"));
        clock.advance(Duration::from_millis(delay_ms - 1));
        let _ = machine.step(&mut spawner, clock.now());
        assert_eq!(starts_of(&spawner, TaskKind::Detect), run as usize, "started before its {delay_ms} ms back-off");
        clock.advance(Duration::from_millis(1));
        let _ = machine.step(&mut spawner, clock.now());
        assert_eq!(starts_of(&spawner, TaskKind::Detect), run as usize + 1, "not started after its {delay_ms} ms back-off");
    }
    // A run longer than min-run resets the back-off; a signal is named.
    clock.advance(Duration::from_secs(6));
    spawner.end(TaskKind::Detect, ExitStatus::Killed(Signal::SIGKILL));
    let _ = machine.step(&mut spawner, clock.now());
    assert_eq!(status(&machine, &clock, TaskKind::Detect).last_exit.as_deref(), Some("killed by SIGKILL"));
    clock.advance(Duration::from_millis(100));
    let _ = machine.step(&mut spawner, clock.now());
    assert_eq!(starts_of(&spawner, TaskKind::Detect), 5, "the back-off did not reset after a long run");
    assert_eq!(status(&machine, &clock, TaskKind::Detect).state, TaskState::Starting);
}

#[test]
fn a_task_restarted_too_often_in_the_window_is_held_while_the_others_run_on() {
    let clock = FakeClock::new();
    let mut spawner = FakeSpawner::new();
    let detect = TaskConfig { hold_after_restarts: 3, ..task_config(TaskKind::Detect) };
    let mut machine = machine(&clock, vec![task_config(TaskKind::Capture), detect]);
    let _ = machine.step(&mut spawner, clock.now());
    for _ in 0..4 {
        spawner.end(TaskKind::Detect, ExitStatus::Exited(3));
        let _ = run_for(&mut machine, &mut spawner, &clock, Duration::from_secs(1));
    }
    let task = status(&machine, &clock, TaskKind::Detect);
    assert_eq!((task.state, task.pid, task.restarts), (TaskState::Held, None, 3));
    assert_eq!(starts_of(&spawner, TaskKind::Detect), 4, "three restarts, then held");
    let _ = run_for(&mut machine, &mut spawner, &clock, Duration::from_secs(120));
    assert_eq!(starts_of(&spawner, TaskKind::Detect), 4, "a held task stays down");
    let capture = status(&machine, &clock, TaskKind::Capture);
    assert_eq!((capture.state, capture.restarts, starts_of(&spawner, TaskKind::Capture)), (TaskState::Starting, 0, 1));
}

#[test]
fn the_watchdog_terminates_a_task_over_its_memory_budget_and_kills_it_after_the_grace_with_the_reason_as_last_exit() {
    let clock = FakeClock::new();
    let mut spawner = FakeSpawner::new();
    let mut machine = machine(&clock, vec![task_config(TaskKind::Capture), task_config(TaskKind::Detect)]);
    let _ = machine.step(&mut spawner, clock.now());
    spawner.ignores_sigterm.insert(TaskKind::Detect);
    spawner.memory.insert(TaskKind::Detect, 100 * MIB);
    let _ = run_for(&mut machine, &mut spawner, &clock, Duration::from_millis(200));
    assert_eq!(spawner.signals, vec![(TaskKind::Detect, Signal::SIGTERM)], "SIGTERM once, no SIGKILL before the grace");
    assert_eq!(status(&machine, &clock, TaskKind::Detect).memory_bytes, 100 * MIB);
    let _ = run_for(&mut machine, &mut spawner, &clock, KILL_GRACE);
    assert_eq!(spawner.signals, vec![(TaskKind::Detect, Signal::SIGTERM), (TaskKind::Detect, Signal::SIGKILL)]);
    let _ = machine.step(&mut spawner, clock.now());
    let task = status(&machine, &clock, TaskKind::Detect);
    assert_eq!((task.restarts, task.last_exit.as_deref()), (1, Some("memory: resident 100 MiB over the 64 MiB budget (RSS watchdog)")));
    assert_eq!(status(&machine, &clock, TaskKind::Capture).restarts, 0, "the other task is not touched");
}

#[test]
fn a_task_the_kernel_kills_at_memory_max_after_the_watchdog_asked_it_to_stop_names_the_cgroup_kill() {
    let clock = FakeClock::new();
    let mut spawner = FakeSpawner::new();
    let setups = vec![TaskSetup { config: task_config(TaskKind::Detect), cgroup: true }];
    let mut machine = Machine::new(settings(), setups, clock.now()).with_jitter(|| 0.0);
    let _ = machine.step(&mut spawner, clock.now());
    spawner.ignores_sigterm.insert(TaskKind::Detect);
    spawner.memory.insert(TaskKind::Detect, 70 * MIB);
    let _ = run_for(&mut machine, &mut spawner, &clock, Duration::from_millis(200));
    assert_eq!(spawner.signals, vec![(TaskKind::Detect, Signal::SIGTERM)], "the watchdog asked first");
    // Before the grace ends the kernel kills the task at memory.max.
    spawner.oom_kills.insert(TaskKind::Detect, 1);
    spawner.end(TaskKind::Detect, ExitStatus::Killed(Signal::SIGKILL));
    let _ = machine.step(&mut spawner, clock.now());
    let task = status(&machine, &clock, TaskKind::Detect);
    assert_eq!((task.restarts, task.last_exit.as_deref()), (1, Some("memory: killed by the kernel at memory.max (64 MiB, cgroup)")));
}

#[test]
fn shutdown_asks_the_tasks_in_order_each_after_the_one_before_has_exited_and_kills_what_is_left_at_the_deadline() {
    let clock = FakeClock::new();
    let mut spawner = FakeSpawner::new();
    let mut machine = machine(&clock, all_four());
    let _ = machine.step(&mut spawner, clock.now());
    spawner.ignores_shutdown.extend([TaskKind::Capture, TaskKind::Log]);
    spawner.ignores_sigterm.insert(TaskKind::Log);
    let started = clock.now();
    machine.begin_shutdown(&mut spawner, clock.now());
    let _ = run_for(&mut machine, &mut spawner, &clock, Duration::from_millis(500));
    assert_eq!(spawner.asked_to_stop, vec![TaskKind::Capture], "detect is asked only once capture has exited");
    assert_eq!(status(&machine, &clock, TaskKind::Capture).state, TaskState::Stopping);
    // Capture finishes draining; detect is asked and obeys; log is asked and does not.
    spawner.end(TaskKind::Capture, ExitStatus::Exited(0));
    let _ = run_for(&mut machine, &mut spawner, &clock, Duration::from_millis(500));
    assert_eq!(spawner.asked_to_stop, vec![TaskKind::Capture, TaskKind::Detect, TaskKind::Log]);
    assert!(spawner.signals.is_empty(), "nothing is killed before the deadline: {:?}", spawner.signals);
    assert!(!machine.is_stopped());
    while !machine.is_stopped() {
        let _ = machine.step(&mut spawner, clock.now());
        clock.advance(Duration::from_millis(10));
    }
    let took = clock.now() - started;
    assert!(took >= Duration::from_secs(3) && took < Duration::from_millis(3100), "shut down after {took:?}");
    assert_eq!(spawner.signals, vec![(TaskKind::Log, Signal::SIGKILL), (TaskKind::Ingest, Signal::SIGKILL)]);
    assert_eq!(
        spawner.ends,
        vec![
            (TaskKind::Capture, ExitStatus::Exited(0)),
            (TaskKind::Detect, ExitStatus::Exited(0)),
            (TaskKind::Log, ExitStatus::Killed(Signal::SIGKILL)),
            (TaskKind::Ingest, ExitStatus::Killed(Signal::SIGKILL)),
        ]
    );
    let report = report(&machine, &clock);
    assert!(report.tasks.iter().all(|task| task.state == TaskState::Stopped && task.pid.is_none() && task.restarts == 0), "{:?}", report.tasks);
    assert!(spawner.running.is_empty());
}

#[test]
fn shutdown_returns_as_soon_as_every_task_has_obeyed_and_starts_nothing_more() {
    let clock = FakeClock::new();
    let mut spawner = FakeSpawner::new();
    let mut machine = machine(&clock, all_four());
    let _ = machine.step(&mut spawner, clock.now());
    // Restarting when the shutdown comes: it is not started again.
    spawner.end(TaskKind::Log, ExitStatus::Exited(1));
    let _ = machine.step(&mut spawner, clock.now());
    let started = clock.now();
    machine.shutdown(&mut spawner, &clock);
    assert!(clock.now() - started < Duration::from_millis(100), "took {:?}", clock.now() - started);
    assert_eq!(spawner.asked_to_stop, vec![TaskKind::Capture, TaskKind::Detect, TaskKind::Ingest]);
    assert!(spawner.signals.is_empty(), "{:?}", spawner.signals);
    assert_eq!(starts_of(&spawner, TaskKind::Log), 1);
    assert!(report(&machine, &clock).tasks.iter().all(|task| task.state == TaskState::Stopped));
    let _ = run_for(&mut machine, &mut spawner, &clock, Duration::from_secs(5));
    assert_eq!(spawner.starts.len(), 4, "a stopped machine starts nothing");
}

#[test]
fn readiness_is_announced_once_and_only_when_every_task_said_ready() {
    let clock = FakeClock::new();
    let mut spawner = FakeSpawner::new();
    let mut machine = machine(&clock, all_four());
    let _ = machine.step(&mut spawner, clock.now());
    for kind in [TaskKind::Capture, TaskKind::Detect, TaskKind::Log] {
        spawner.send(kind, &TaskMessage::Ready);
    }
    assert!(!run_for(&mut machine, &mut spawner, &clock, Duration::from_millis(100)), "announced with ingest still starting");
    assert!(!report(&machine, &clock).ready);
    spawner.send(TaskKind::Ingest, &TaskMessage::Ready);
    assert!(machine.step(&mut spawner, clock.now()).all_ready, "not announced when all four are ready");
    assert!(report(&machine, &clock).ready);
    // A restart and a second Ready from every task: never announced again.
    spawner.end(TaskKind::Detect, ExitStatus::Exited(1));
    let _ = run_for(&mut machine, &mut spawner, &clock, Duration::from_millis(200));
    assert!(!report(&machine, &clock).ready);
    spawner.send(TaskKind::Detect, &TaskMessage::Ready);
    assert!(!run_for(&mut machine, &mut spawner, &clock, Duration::from_millis(100)), "announced twice");
    assert!(report(&machine, &clock).ready);
}

#[test]
fn a_task_flooding_its_control_channel_is_killed_counted_and_restarted_with_the_reason() {
    let clock = FakeClock::new();
    let mut spawner = FakeSpawner::new();
    let mut machine = machine(&clock, vec![task_config(TaskKind::Capture), task_config(TaskKind::Detect)]);
    let _ = machine.step(&mut spawner, clock.now());
    spawner.send(TaskKind::Capture, &TaskMessage::Ready);
    let pid = spawner.task(TaskKind::Detect).pid;
    let mut turns = 0;
    while spawner.is_running(TaskKind::Detect) && spawner.task(TaskKind::Detect).pid == pid {
        for _ in 0..64 {
            spawner.send(TaskKind::Detect, &TaskMessage::Ready);
        }
        let _ = machine.step(&mut spawner, clock.now());
        clock.advance(Duration::from_millis(10));
        turns += 1;
        assert!(turns < 1000, "the flood was not stopped");
    }
    assert_eq!(turns, 301, "three seconds over the limit, then killed");
    assert_eq!(spawner.signals, vec![(TaskKind::Detect, Signal::SIGKILL)]);
    let _ = machine.step(&mut spawner, clock.now());
    let task = status(&machine, &clock, TaskKind::Detect);
    assert_eq!((task.control_floods, task.restarts, task.state), (1, 1, TaskState::Restarting));
    let last_exit = task.last_exit.unwrap_or_default();
    assert!(last_exit.starts_with("control channel flood: 6400 frames/s"), "{last_exit}");
    let capture = status(&machine, &clock, TaskKind::Capture);
    assert_eq!((capture.state, capture.restarts), (TaskState::Ready, 0), "the other task runs on");
}

#[test]
fn a_task_sending_a_bad_frame_is_killed_at_once_and_restarted_with_the_reason() {
    let clock = FakeClock::new();
    let mut spawner = FakeSpawner::new();
    let mut machine = machine(&clock, vec![task_config(TaskKind::Log)]);
    let _ = machine.step(&mut spawner, clock.now());
    let body = b"not a message";
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    spawner.send_raw(TaskKind::Log, &frame);
    let _ = machine.step(&mut spawner, clock.now());
    assert_eq!(spawner.signals, vec![(TaskKind::Log, Signal::SIGKILL)]);
    let _ = machine.step(&mut spawner, clock.now());
    let task = status(&machine, &clock, TaskKind::Log);
    assert_eq!((task.control_floods, task.restarts, task.state), (0, 1, TaskState::Restarting));
    assert_eq!(task.last_exit.as_deref(), Some("bad frame on the control channel: frame is not a valid message"));
    let _ = run_for(&mut machine, &mut spawner, &clock, Duration::from_millis(200));
    assert_eq!(starts_of(&spawner, TaskKind::Log), 2, "restarted under its policy");
}

#[test]
fn an_operator_request_reaches_only_a_ready_detect_task_and_its_answer_comes_back() {
    let clock = FakeClock::new();
    let mut spawner = FakeSpawner::new();
    let mut machine = machine(&clock, vec![task_config(TaskKind::Capture), task_config(TaskKind::Detect)]);
    let _ = machine.step(&mut spawner, clock.now());
    let request = SupervisorMessage::MarkBenign { id: 7, prefix: "10.66.2.2/32".parse().expect("prefix"), reason: "test".to_string(), for_secs: 60 };
    let refused = machine.send_to_task(TaskKind::Detect, &request).expect_err("not ready yet");
    assert_eq!(refused, "the detect task is not running (state: starting)");
    assert_eq!(machine.send_to_task(TaskKind::Ingest, &request).expect_err("not enabled"), "the ingest task is not enabled");
    spawner.send(TaskKind::Detect, &TaskMessage::Ready);
    let _ = machine.step(&mut spawner, clock.now());
    machine.send_to_task(TaskKind::Detect, &request).expect("passed on");
    assert_eq!(spawner.receive(TaskKind::Detect), vec![request]);
    // Only the detect task's answers count.
    spawner.send(TaskKind::Capture, &TaskMessage::MarkedBenign { id: 7, result: Ok("forged".to_string()) });
    spawner.send(TaskKind::Detect, &TaskMessage::MarkedBenign { id: 7, result: Ok("marked".to_string()) });
    let _ = machine.step(&mut spawner, clock.now());
    assert_eq!(machine.take_replies(), vec![TaskMessage::MarkedBenign { id: 7, result: Ok("marked".to_string()) }]);
    assert!(machine.take_replies().is_empty());
}

#[test]
fn only_the_fleet_tasks_configuration_document_is_taken_and_the_newest_supersedes() {
    let clock = FakeClock::new();
    let mut spawner = FakeSpawner::new();
    let mut machine = machine(&clock, vec![task_config(TaskKind::Detect), task_config(TaskKind::Fleet)]);
    let _ = machine.step(&mut spawner, clock.now());
    // Another task cannot make the supervisor apply a document.
    spawner.send(TaskKind::Detect, &TaskMessage::FleetDocument { document: "{\"generation\":9}".to_string() });
    let _ = machine.step(&mut spawner, clock.now());
    assert_eq!(machine.take_fleet_document(), None);
    spawner.send(TaskKind::Fleet, &TaskMessage::FleetDocument { document: "{\"generation\":1}".to_string() });
    spawner.send(TaskKind::Fleet, &TaskMessage::FleetDocument { document: "{\"generation\":2}".to_string() });
    let _ = machine.step(&mut spawner, clock.now());
    assert_eq!(machine.take_fleet_document().as_deref(), Some("{\"generation\":2}"));
    assert_eq!(machine.take_fleet_document(), None, "taken once");
}

#[test]
fn a_configuration_change_restarts_the_named_tasks_one_at_a_time_each_after_the_one_before_is_ready_with_the_new_configuration() {
    let clock = FakeClock::new();
    let mut spawner = FakeSpawner::new();
    let mut machine = machine(&clock, all_four());
    let _ = machine.step(&mut spawner, clock.now());
    for kind in FOUR {
        spawner.send(kind, &TaskMessage::Ready);
        let _ = spawner.receive(kind);
    }
    let _ = run_for(&mut machine, &mut spawner, &clock, Duration::from_millis(100));
    machine.set_config_toml("# the new configuration\n".to_string());
    machine.restart_tasks(&[TaskKind::Log, TaskKind::Detect]);
    assert!(machine.restarting_tasks());
    let _ = run_for(&mut machine, &mut spawner, &clock, Duration::from_millis(300));
    // Detect first (start order), asked as at a shutdown, started again at once.
    assert_eq!(spawner.asked_to_stop, vec![TaskKind::Detect]);
    assert_eq!((starts_of(&spawner, TaskKind::Detect), starts_of(&spawner, TaskKind::Log)), (2, 1), "log waits for detect to be ready");
    assert_eq!(spawner.configured.last(), Some(&(TaskKind::Detect, "# the new configuration\n".to_string())), "started with the new configuration");
    let _ = run_for(&mut machine, &mut spawner, &clock, Duration::from_secs(5));
    assert_eq!(starts_of(&spawner, TaskKind::Log), 1, "still waiting for detect's ready");
    spawner.send(TaskKind::Detect, &TaskMessage::Ready);
    let _ = run_for(&mut machine, &mut spawner, &clock, Duration::from_millis(300));
    assert_eq!(spawner.asked_to_stop, vec![TaskKind::Detect, TaskKind::Log]);
    assert_eq!(starts_of(&spawner, TaskKind::Log), 2);
    spawner.send(TaskKind::Log, &TaskMessage::Ready);
    let _ = run_for(&mut machine, &mut spawner, &clock, Duration::from_millis(100));
    assert!(!machine.restarting_tasks());
    let report = report(&machine, &clock);
    assert!(report.ready, "{:?}", report.tasks);
    assert!(report.tasks.iter().all(|task| task.restarts == 0 && task.last_exit.is_none()), "a planned restart is no failure: {:?}", report.tasks);
    assert_eq!((starts_of(&spawner, TaskKind::Capture), starts_of(&spawner, TaskKind::Ingest)), (1, 1), "the others untouched");
}

#[test]
fn a_task_already_restarted_for_one_change_restarts_again_for_the_next() {
    let clock = FakeClock::new();
    let mut spawner = FakeSpawner::new();
    let mut machine = machine(&clock, vec![task_config(TaskKind::Detect)]);
    let _ = machine.step(&mut spawner, clock.now());
    spawner.send(TaskKind::Detect, &TaskMessage::Ready);
    let _ = run_for(&mut machine, &mut spawner, &clock, Duration::from_millis(100));
    machine.set_config_toml("# generation 2\n".to_string());
    machine.restart_tasks(&[TaskKind::Detect]);
    let _ = run_for(&mut machine, &mut spawner, &clock, Duration::from_millis(300));
    assert_eq!(starts_of(&spawner, TaskKind::Detect), 2, "restarted with generation 2, not yet ready");
    // Generation 3 arrives while it is starting with 2: it restarts again once ready.
    machine.set_config_toml("# generation 3\n".to_string());
    machine.restart_tasks(&[TaskKind::Detect]);
    spawner.send(TaskKind::Detect, &TaskMessage::Ready);
    let _ = run_for(&mut machine, &mut spawner, &clock, Duration::from_millis(300));
    assert_eq!(starts_of(&spawner, TaskKind::Detect), 3);
    assert_eq!(spawner.configured.last(), Some(&(TaskKind::Detect, "# generation 3\n".to_string())));
}
