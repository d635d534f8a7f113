//! The supervisor in the lab: unprivileged tasks, restarts that nothing else notices,
//! memory budgets, hold, orderly shutdown. Privileged (root); CI requires them.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::lab::{eventually, Lab};
use common::supervisor::Supervisor;
use common::*;
use serde_json::Value;

fn proc_status(pid: u64) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status.lines().find_map(|line| line.strip_prefix(name)).map(str::trim).unwrap_or("")
}

fn kernel_before_6_5() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|part| part.parse::<u32>().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) < (6, 5)
}

#[test]
fn tasks_run_unprivileged_and_a_killed_task_restarts_alone_while_blocks_hold() {
    let Some(lab) = Lab::up() else { return };
    let mut supervisor = Supervisor::start(&lab, "");
    supervisor.wait_ready(Duration::from_secs(20));

    for name in ["capture", "detect", "log", "ingest"] {
        let pid = supervisor.task(name)["pid"].as_u64().expect("pid");
        let status = proc_status(pid);
        let uid = field(&status, "Uid:").split_whitespace().next().unwrap_or("0");
        assert_ne!(uid, "0", "{name} runs as root");
        assert_eq!(field(&status, "NoNewPrivs:"), "1", "{name}: no_new_privs");
        let expected_caps = if name == "capture" && kernel_before_6_5() { "0000008000000000" } else { "0000000000000000" };
        assert_eq!(field(&status, "CapEff:"), expected_caps, "{name}: capabilities");
        assert_eq!(field(&status, "Groups:"), "", "{name}: no supplementary groups");
    }
    // The capture task reads the allow and counters maps through read-only fds (the
    // kernel refuses writes through them); only the ring, the deny map and the guard's
    // maps are writable.
    let capture_pid = supervisor.task("capture")["pid"].as_u64().expect("pid");
    let access_mode = |fd: u32| {
        let info = std::fs::read_to_string(format!("/proc/{capture_pid}/fdinfo/{fd}")).expect("fdinfo");
        let flags = info.lines().find_map(|line| line.strip_prefix("flags:")).expect("flags").trim().to_string();
        u32::from_str_radix(&flags, 8).expect("octal flags") & 0o3
    };
    assert_eq!(
        (access_mode(5), access_mode(6), access_mode(7), access_mode(9)),
        (0, 0, 0, 0),
        "the allowlist's tries and selector (fds 5-7) and counters (fd 9) must be read-only"
    );
    assert_eq!((access_mode(4), access_mode(8)), (2, 2), "ring (fd 4) and deny (fd 8) are read-write");
    assert_eq!((access_mode(10), access_mode(11), access_mode(12)), (2, 2, 2), "the guard maps (fds 10, 11, 12) are read-write: the capture task decides them");

    // Flows reach the detect task over IPC.
    for _ in 0..3 {
        assert!(lab.exec("c", &["curl", "-sf", "-o", "/dev/null", "http://10.66.9.2:8080/index.html"]).status.success());
    }
    assert!(
        eventually(Duration::from_secs(10), || supervisor.status()["pipeline"]["flows_received"].as_u64().unwrap_or(0) >= 3),
        "flows did not reach the detect task: {}",
        supervisor.status()
    );

    // Block the attacker, then kill the capture task under traffic.
    assert!(lab.mldefender(&["block", "add", "10.66.2.2", "--ttl", "600"]).status.success());
    let detect_pid = supervisor.task("detect")["pid"].as_u64();
    let capture_pid = supervisor.task("capture")["pid"].as_u64().expect("pid");
    let killed_at = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(capture_pid as i32), nix::sys::signal::Signal::SIGKILL).expect("SIGKILL");
    assert!(!lab.ping("a", "10.66.9.2"), "the blocked attacker got through while capture restarted");
    let back = eventually(Duration::from_secs(5), || {
        let task = supervisor.task("capture");
        task["state"] == "ready" && task["pid"].as_u64() != Some(capture_pid)
    });
    let elapsed = killed_at.elapsed();
    assert!(back, "capture did not come back: {}", supervisor.status());
    // The ping above waited up to 1 s; the restart itself is measured from the log.
    let capture = supervisor.task("capture");
    assert_eq!(capture["restarts"], 1);
    assert!(capture["last_exit"].as_str().unwrap_or("").contains("SIGKILL"), "{capture}");
    assert!(capture["uptime_secs"].as_f64().unwrap_or(99.0) < elapsed.as_secs_f64());
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    let detect = supervisor.task("detect");
    assert_eq!(detect["pid"].as_u64(), detect_pid, "the detect task was not restarted");
    assert_eq!(detect["restarts"], 0);
    assert!(!lab.ping("a", "10.66.9.2"), "still blocked after the restart");
    let log = supervisor.log();
    let restart_ms = restart_time_ms(&log).expect("restart in the log");
    assert!(restart_ms < 1000.0, "the capture task was ready {restart_ms} ms after its death:\n{log}");

    // The restarted capture task's flows, handed over at shutdown, all reach the detect task.
    assert!(lab.exec("c", &["curl", "-sf", "-o", "/dev/null", "http://10.66.9.2:8080/index.html"]).status.success());
    let (_, log) = supervisor.stop_with_log();
    let number_after = |needle: &str| -> u64 {
        let line = log.lines().rev().find(|line| line.contains(needle)).unwrap_or_else(|| panic!("no `{needle}` in:\n{log}"));
        let rest = line.split(needle).nth(1).unwrap_or("");
        rest.split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no number in {line}"))
    };
    let sent = number_after("capture task stopped flows=");
    let received = number_after("detect task stopped flows=");
    assert!(sent >= 1, "{log}");
    // The detect task also got the 3 (or more) flows of the capture task that was killed.
    assert!(received >= sent + 3, "the restarted capture task sent {sent} flows, the detect task received {received} in all:\n{log}");
}

/// The tasks run the supervisor's own binary from the fd it opened at start
/// (execveat), not by path: a binary in a directory only root can enter (here a fresh
/// 0700 directory, as `/root` or `mktemp -d`) starts all four tasks, and removing the
/// file does not stop a task from being restarted.
#[test]
fn tasks_start_from_a_binary_in_a_directory_only_root_can_enter_and_restart_after_the_file_is_gone() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some(lab) = Lab::up() else { return };
    let private = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod 0700");
    let metadata = std::fs::metadata(private.path()).expect("stat");
    assert_eq!((metadata.uid(), metadata.mode() & 0o7777), (0, 0o700), "the directory is root's, 0700");
    let binary = private.path().join("mldefender");
    std::fs::copy(env!("CARGO_BIN_EXE_mldefender"), &binary).expect("copy the binary");
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod 0755");
    let mut supervisor = Supervisor::start_binary(&lab, &binary, "", &[]);
    supervisor.wait_ready(Duration::from_secs(30));
    for name in ["capture", "detect", "log", "ingest"] {
        let task = supervisor.task(name);
        assert_eq!(task["state"], "ready", "{name}: {task}");
        let pid = task["pid"].as_u64().expect("pid");
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("the task's exe");
        assert_eq!(exe, binary, "{name} runs the supervisor's binary");
    }
    assert!(!supervisor.log().contains("Permission denied"), "{}", supervisor.log());

    std::fs::remove_file(&binary).expect("remove the binary");
    let capture_pid = supervisor.task("capture")["pid"].as_u64().expect("pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(capture_pid as i32), nix::sys::signal::Signal::SIGKILL).expect("SIGKILL capture");
    let back = eventually(Duration::from_secs(10), || {
        let task = supervisor.task("capture");
        task["state"] == "ready" && task["pid"].as_u64().is_some_and(|pid| pid != capture_pid)
    });
    assert!(back, "capture did not restart once its binary was removed: {}\n{}", supervisor.status(), supervisor.log());
    supervisor.stop();
}

/// Milliseconds from "task exited" to the next "task ready" of the capture task.
fn restart_time_ms(log: &str) -> Option<f64> {
    let time_of = |line: &str| -> Option<f64> {
        let stamp = line.split_whitespace().next()?;
        let clock = stamp.split('T').nth(1)?.trim_end_matches('Z');
        let mut parts = clock.split(':');
        let hours: f64 = parts.next()?.parse().ok()?;
        let minutes: f64 = parts.next()?.parse().ok()?;
        let seconds: f64 = parts.next()?.parse().ok()?;
        Some((hours * 3600.0 + minutes * 60.0 + seconds) * 1000.0)
    };
    let lines: Vec<&str> = log.lines().collect();
    let exited = lines.iter().position(|line| line.contains("task exited") && line.contains("task=\"capture\""))?;
    let ready = lines[exited..].iter().find(|line| line.contains("task ready") && line.contains("task=\"capture\""))?;
    Some(time_of(ready)? - time_of(lines[exited])?)
}

#[test]
fn a_task_over_its_memory_budget_is_killed_and_restarted_with_the_reason() {
    let Some(lab) = Lab::up() else { return };
    let extra = "[supervisor]\nmemory-enforcement = \"rss\"\n[tasks.detect]\nmemory-high-mib = 40\nmemory-max-mib = 64\ntest-allocate-mib = 128\n";
    let supervisor = Supervisor::start(&lab, extra);
    let killed = eventually(Duration::from_secs(10), || {
        let detect = supervisor.task("detect");
        detect["restarts"].as_u64().unwrap_or(0) >= 1 && detect["last_exit"].as_str().unwrap_or("").contains("over the 64 MiB budget (RSS watchdog)")
    });
    assert!(killed, "{}\n{}", supervisor.status(), supervisor.log());
    assert!(supervisor.log().contains("memory: resident"), "the reason is logged:\n{}", supervisor.log());
    assert_eq!(supervisor.task("detect")["memory_enforcement"], "rss");
    assert_eq!(supervisor.task("capture")["restarts"], 0, "the capture task is not affected");
    supervisor.stop();
}

/// The cgroup v2 path, where the machine has the memory controller in a writable v2
/// hierarchy (not on hosts that keep it in cgroup v1).
#[test]
fn the_cgroup_path_kills_at_memory_max_where_cgroup_v2_is_available() {
    let has_v2_memory = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").is_ok_and(|controllers| controllers.contains("memory"));
    if !has_v2_memory {
        eprintln!("skipped: /sys/fs/cgroup is not cgroup v2 with the memory controller on this machine");
        return;
    }
    let Some(lab) = Lab::up() else { return };
    let extra = "[tasks.detect]\nmemory-high-mib = 48\nmemory-max-mib = 64\ntest-allocate-mib = 128\n";
    let supervisor = Supervisor::start(&lab, extra);
    let killed = eventually(Duration::from_secs(10), || supervisor.task("detect")["restarts"].as_u64().unwrap_or(0) >= 1);
    assert!(killed, "{}", supervisor.status());
    assert_eq!(supervisor.task("detect")["memory_enforcement"], "cgroup+rss");
    supervisor.stop();
}

#[test]
fn a_task_that_crashes_at_start_is_held_and_the_supervisor_stays_up() {
    let Some(lab) = Lab::up() else { return };
    let extra = "[tasks.detect]\ntest-exit-at-start = true\nhold-after-restarts = 3\nbackoff-initial-ms = 10\nbackoff-max-ms = 50\n";
    let supervisor = Supervisor::start(&lab, extra);
    let held = eventually(Duration::from_secs(10), || supervisor.task("detect")["state"] == "held");
    assert!(held, "{}", supervisor.status());
    let detect = supervisor.task("detect");
    assert_eq!(detect["restarts"], 3);
    assert!(detect["last_exit"].as_str().unwrap_or("").contains("exited with status 3"), "{detect}");
    assert!(supervisor.log().contains("task held"), "{}", supervisor.log());
    assert_eq!(supervisor.task("capture")["state"], "ready", "the other task runs on");
    let table = stdout(&run(mldefender().args(["status", "--runtime-dir", &supervisor.runtime_dir])));
    assert!(table.lines().any(|line| line.starts_with("detect") && line.contains("held")), "{table}");
    supervisor.stop();
}

/// A task that floods its control channel (the test hook MLD_TEST_FLOOD_CONTROL, honoured
/// by test builds only) cannot hold the supervisor's loop: it is killed and restarted,
/// counted and logged, while the other tasks run on untouched and `status` answers.
#[test]
fn a_task_flooding_its_control_channel_is_restarted_while_the_others_run_on() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the flood hook exists in test (debug) builds only");
        return;
    }
    let Some(lab) = Lab::up() else { return };
    let extra = "[tasks.detect]\nhold-after-restarts = 1000\nbackoff-initial-ms = 10\nbackoff-max-ms = 50\n";
    let supervisor = Supervisor::start_with_env(&lab, extra, &[("MLD_TEST_FLOOD_CONTROL", "detect")]);
    let others = ["capture", "log", "ingest"];
    let ready = eventually(Duration::from_secs(20), || others.iter().all(|name| supervisor.task(name)["state"] == "ready"));
    assert!(ready, "the other tasks did not start: {}\n{}", supervisor.status(), supervisor.log());
    let pids: Vec<u64> = others.iter().map(|name| supervisor.task(name)["pid"].as_u64().expect("pid")).collect();
    let started = Instant::now();
    let restarted = eventually(Duration::from_secs(20), || {
        let detect = supervisor.task("detect");
        detect["control_floods"].as_u64().unwrap_or(0) >= 2 && detect["restarts"].as_u64().unwrap_or(0) >= 2
    });
    let detect = supervisor.task("detect");
    assert!(restarted, "the flooding task was not killed and restarted: {detect}\n{}", supervisor.log());
    // Three seconds over the limit, twice, plus the restarts: well under 20 s.
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    assert!(detect["last_exit"].as_str().unwrap_or("").contains("control channel flood"), "{detect}");
    for (name, pid) in others.iter().zip(&pids) {
        let task = supervisor.task(name);
        assert_eq!(
            (task["state"].as_str(), task["pid"].as_u64(), task["restarts"].as_u64()),
            (Some("ready"), Some(*pid), Some(0)),
            "{name} was disturbed: {task}"
        );
    }
    let table = stdout(&run(mldefender().args(["status", "--runtime-dir", &supervisor.runtime_dir])));
    assert!(table.lines().any(|line| line.starts_with("task") && line.contains("floods")), "{table}");
    let log = supervisor.stop_with_log().1;
    assert!(log.contains("killing task: it misused its control channel") && log.contains("control channel flood"), "{log}");
}

/// Alive: not gone and not a zombie (a zombie holds no fds, sockets or keys).
fn alive(pid: u64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z'))
}

/// A SIGKILLed supervisor (an OOM kill, a crash) takes every task with it
/// (PR_SET_PDEATHSIG): even tasks that are stuck and would never notice their control
/// channel close (here stopped with SIGSTOP) are gone at once, holding no socket or key.
#[test]
fn no_task_outlives_a_killed_supervisor_even_a_stuck_one() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let Some(lab) = Lab::up() else { return };
    let mut supervisor = Supervisor::start(&lab, "");
    supervisor.wait_ready(Duration::from_secs(20));
    let supervisor_pid = supervisor.status()["supervisor_pid"].as_u64().expect("supervisor pid");
    let pids: Vec<u64> = ["capture", "detect", "log", "ingest"].iter().map(|name| supervisor.task(name)["pid"].as_u64().expect("pid")).collect();
    for pid in &pids {
        kill(Pid::from_raw(*pid as i32), Signal::SIGSTOP).expect("SIGSTOP a task");
    }
    kill(Pid::from_raw(supervisor_pid as i32), Signal::SIGKILL).expect("SIGKILL the supervisor");
    let gone = eventually(Duration::from_secs(5), || !pids.iter().any(|pid| alive(*pid)));
    let survivors: Vec<String> = pids.iter().filter(|pid| alive(**pid)).map(|pid| format!("{pid}: {}", field(&proc_status(*pid), "Name:"))).collect();
    for pid in &pids {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    assert!(gone, "tasks outlived their supervisor: {survivors:?}\n{}", supervisor.log());
}

#[test]
fn sigterm_under_traffic_stops_everything_within_the_deadline() {
    let Some(lab) = Lab::up() else { return };
    let mut supervisor = Supervisor::start(&lab, "[supervisor]\nshutdown-deadline-ms = 3000\n");
    supervisor.wait_ready(Duration::from_secs(20));
    let pids: Vec<u64> = ["capture", "detect", "log", "ingest"].iter().map(|name| supervisor.task(name)["pid"].as_u64().expect("pid")).collect();
    let mut traffic = Command::new("bash")
        .arg(repo().join("tests/lab/lab.sh"))
        .args(["exec", &lab.id, "c", "iperf3", "-c", "10.66.9.2", "-t", "10"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3");
    std::thread::sleep(Duration::from_millis(800));
    let took = supervisor.stop();
    let _ = traffic.kill();
    let _ = traffic.wait();
    assert!(took < Duration::from_millis(3000 + 2000), "shutdown took {took:?}");
    for pid in pids {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "task {pid} survived (or is a zombie)");
    }
    // Fail static: the program stays, enforcing, until `capture detach`.
    let links = stdout(&lab.exec("g", &["ip", "link", "show"]));
    assert!(links.contains(" xdp") || links.contains("prog/xdp"), "the XDP program was detached at a normal stop:\n{links}");
}

/// What the supervisor makes is private unless given on purpose (umask 077); each task
/// gets only its own directory; sockets have exactly their modes; the key handed to the
/// log and ingest tasks is root's, 0600.
#[test]
fn the_supervisor_makes_private_files_and_gives_each_task_only_its_own() {
    use std::os::unix::fs::MetadataExt;
    let Some(lab) = Lab::up() else { return };
    let mut supervisor = Supervisor::start(&lab, "");
    supervisor.wait_ready(Duration::from_secs(20));
    let runtime = std::path::PathBuf::from(&supervisor.runtime_dir);
    let stat = |path: &std::path::Path| std::fs::symlink_metadata(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let umask_of = |pid: u64| field(&proc_status(pid), "Umask:").to_string();
    assert_eq!(umask_of(supervisor.status()["supervisor_pid"].as_u64().expect("pid")), "0077", "the supervisor's umask");
    let mut ids = std::collections::HashMap::new();
    for name in ["capture", "detect", "log", "ingest"] {
        let pid = supervisor.task(name)["pid"].as_u64().expect("pid");
        let status = proc_status(pid);
        let uid: u32 = field(&status, "Uid:").split_whitespace().next().and_then(|uid| uid.parse().ok()).expect("uid");
        let gid: u32 = field(&status, "Gid:").split_whitespace().next().and_then(|gid| gid.parse().ok()).expect("gid");
        assert_eq!(umask_of(pid), "0022", "{name}: tasks get the usual umask, not the supervisor's");
        let dir = stat(&runtime.join("tasks").join(name));
        assert_eq!((dir.uid(), dir.gid(), dir.mode() & 0o7777), (uid, gid, 0o700), "{name}'s runtime directory");
        ids.insert(name, (uid, gid));
    }
    for (socket, mode) in [("supervisor.sock", 0o600), ("flows.sock", 0o666), ("events.sock", 0o666), ("query.sock", 0o660)] {
        let metadata = stat(&runtime.join(socket));
        assert_eq!((metadata.uid(), metadata.mode() & 0o7777), (0, mode), "{socket}: owner and mode");
    }
    assert_eq!(stat(&runtime.join("query.sock")).gid(), ids["detect"].1, "query.sock belongs to the detect task's group");
    let log_dir = stat(&runtime.join("log"));
    assert_eq!((log_dir.uid(), log_dir.gid(), log_dir.mode() & 0o7777), (ids["log"].0, ids["ingest"].1, 0o750), "the log directory");
    let ingest_dir = stat(&runtime.join("ingest"));
    assert_eq!((ingest_dir.uid(), ingest_dir.mode() & 0o7777), (ids["ingest"].0, 0o700), "the ingest state directory");
    let key = stat(&runtime.join("keys/log.key"));
    assert_eq!((key.uid(), key.mode() & 0o7777), (0, 0o600), "the log key");
    let signing_key = stat(&runtime.join("keys/log-signing.key"));
    assert_eq!((signing_key.uid(), signing_key.mode() & 0o7777), (0, 0o600), "the checkpoint signing key, created next to the log key");
    assert_eq!(stat(&runtime.join("keys")).mode() & 0o077, 0, "the key's directory is private");
    supervisor.stop();
}

#[test]
fn status_is_for_root_only() {
    let Some(lab) = Lab::up() else { return };
    let mut supervisor = Supervisor::start(&lab, "");
    supervisor.wait_ready(Duration::from_secs(20));
    let output = run(Command::new("setpriv").args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(env!("CARGO_BIN_EXE_mldefender")).args([
        "status",
        "--runtime-dir",
        &supervisor.runtime_dir,
    ]));
    assert!(!output.status.success());
    assert!(stderr(&output).contains("no supervisor answers"), "{}", stderr(&output));
    supervisor.stop();
}

#[test]
fn readiness_is_sent_to_systemd_when_notify_socket_is_set() {
    let Some(lab) = Lab::up() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("notify socket");
    socket.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut supervisor = Supervisor::start_with_env(&lab, "", &[("NOTIFY_SOCKET", socket_path.to_str().expect("utf-8"))]);
    let mut buffer = [0u8; 256];
    let received = socket.recv(&mut buffer).expect("a notification from the supervisor");
    assert_eq!(&buffer[..received], b"READY=1");
    supervisor.wait_ready(Duration::from_secs(5));
    supervisor.stop();
}

/// Where a journald socket exists, log records go there (here a stand-in journald: a
/// datagram socket at /run/systemd/journal/socket in a private mount namespace).
#[test]
fn logs_go_to_journald_when_its_socket_exists() {
    if !is_root() {
        assert!(!env_flag("MLD_REQUIRE_LAB"), "MLD_REQUIRE_LAB is set but the tests do not run as root");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let received = dir.path().join("journal.txt");
    let config = dir.path().join("config.toml");
    // An interface that does not exist: the supervisor logs an error through tracing and exits.
    std::fs::write(&config, "[[capture.interfaces]]\nname = \"nosuchif9\"\n").expect("write config");
    let listener = r#"
import socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind('/run/systemd/journal/socket')
s.settimeout(20)
out = open(OUT, 'wb')
open('/run/ready', 'w').close()
while True:
    data = s.recv(65536)
    out.write(data + b'\n---\n')
    out.flush()
    if b'failed to start the XDP data plane' in data:
        break
"#
    .replace("OUT", &format!("'{}'", received.display()));
    let script = format!(
        "set -e; mount -t tmpfs tmpfs /run; mkdir -p /run/systemd/journal; \
         /usr/bin/python3 -c \"$LISTENER\" & \
         for i in $(seq 100); do [ -e /run/ready ] && break; sleep 0.05; done; \
         {} supervise --config {} || true; wait",
        env!("CARGO_BIN_EXE_mldefender"),
        config.display()
    );
    let output = run(Command::new("unshare").args(["-m", "sh", "-c", &script]).env("LISTENER", listener));
    let journal = std::fs::read(&received).unwrap_or_default();
    let journal = String::from_utf8_lossy(&journal);
    assert!(journal.contains("failed to start the XDP data plane"), "journald got: {journal}\n{}", stderr(&output));
    assert!(journal.contains("SYSLOG_IDENTIFIER") && journal.contains("mldefender"), "{journal}");
    assert!(!stderr(&output).contains("failed to start the XDP data plane"), "not on stderr when journald is there");
}

fn verify_lab_log(lab: &Lab) -> (bool, String) {
    let dir = format!("/run/mldefender-lab-{}", lab.id);
    let output = run(mldefender().args(["log", "verify", &format!("{dir}/log"), "--key", &format!("{dir}/keys/log.key")]));
    (output.status.success(), stdout(&output))
}

/// The ids of the flow observations in the lab's signed log (decisions left out).
fn event_ids(lab: &Lab) -> Vec<String> {
    let dir = std::path::PathBuf::from(format!("/run/mldefender-lab-{}/log", lab.id));
    let mut ids = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("log dir").flatten().map(|entry| entry.path()).collect();
    files.sort();
    for file in files.iter().filter(|file| file.file_name().is_some_and(|name| name.to_string_lossy().starts_with("events-"))) {
        for line in std::fs::read_to_string(file).expect("read").lines() {
            if let Ok(Value::Object(record)) = serde_json::from_str(line) {
                if record["type"] == "event" && record["action"] == "observe" {
                    ids.push(record["event_id"].as_str().unwrap_or_default().to_string());
                }
            }
        }
    }
    ids
}

/// Every flow becomes an event that the log task writes into the signed log, and the log
/// task can be killed under load: after its restart the log verifies (a cut line is
/// quarantined) and every acknowledged event is there exactly once. Then the detect task is
/// killed: its next run's events (new sequence numbers) are logged too.
#[test]
fn events_reach_the_signed_log_and_survive_a_killed_log_task() {
    let Some(lab) = Lab::up() else { return };
    // The load is one client making requests as fast as it can, which detection rightly
    // calls a flood: dry run, so that it is logged and not blocked.
    let mut supervisor = Supervisor::start(&lab, "[response]\nmode = \"dry-run\"\n");
    supervisor.wait_ready(Duration::from_secs(20));
    // Load: many short flows (each curl is one flow, each ending with FIN).
    let mut traffic = Command::new("bash")
        .arg(repo().join("tests/lab/lab.sh"))
        .args(["exec", &lab.id, "c", "sh", "-c", "for i in $(seq 300); do curl -s -o /dev/null http://10.66.9.2:8080/index.html; done"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("traffic");
    let logging = eventually(Duration::from_secs(20), || supervisor.status()["pipeline"]["events_logged"].as_u64().unwrap_or(0) >= 20);
    assert!(logging, "events are not being logged: {}", supervisor.status());
    let log_pid = supervisor.task("log")["pid"].as_u64().expect("pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(log_pid as i32), nix::sys::signal::Signal::SIGKILL).expect("SIGKILL");
    let back = eventually(Duration::from_secs(10), || {
        let task = supervisor.task("log");
        task["state"] == "ready" && task["pid"].as_u64() != Some(log_pid)
    });
    assert!(back, "the log task did not come back: {}", supervisor.status());
    let _ = traffic.wait();
    // Nothing of the first run may be in flight when the detect task dies (its window is memory).
    let all_logged = eventually(Duration::from_secs(15), || event_ids(&lab).len() >= 300);
    assert!(all_logged, "{} of 300 events logged: {}", event_ids(&lab).len(), supervisor.status());
    let detect_pid = supervisor.task("detect")["pid"].as_u64().expect("pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(detect_pid as i32), nix::sys::signal::Signal::SIGKILL).expect("SIGKILL");
    let back = eventually(Duration::from_secs(10), || {
        let task = supervisor.task("detect");
        task["state"] == "ready" && task["pid"].as_u64() != Some(detect_pid)
    });
    assert!(back, "the detect task did not come back: {}", supervisor.status());
    let after_detect_restart = Command::new("bash")
        .arg(repo().join("tests/lab/lab.sh"))
        .args(["exec", &lab.id, "c", "sh", "-c", "for i in $(seq 100); do curl -s -o /dev/null http://10.66.9.2:8080/index.html; done"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("traffic after the detect task's restart");
    assert!(after_detect_restart.success());
    let (_, log) = supervisor.stop_with_log();
    let (ok, report) = verify_lab_log(&lab);
    assert!(ok, "the log does not verify after a killed log task: {report}\n{log}");
    // And with the checkpoint public key alone: what the killed run left without a
    // checkpoint was covered by the next run's first (ADR 0007).
    let dir = format!("/run/mldefender-lab-{}", lab.id);
    let public_key = run(mldefender().args(["log", "public-key", "--signing-key", &format!("{dir}/keys/log-signing.key")]));
    assert!(public_key.status.success(), "{}", stderr(&public_key));
    std::fs::write(format!("{dir}/log-signing.pub"), stdout(&public_key)).expect("write the public key");
    let by_checkpoints = run(mldefender().args(["log", "verify", &format!("{dir}/log"), "--public-key", &format!("{dir}/log-signing.pub")]));
    assert!(by_checkpoints.status.success(), "the log does not verify by its checkpoints after a killed log task: {}\n{log}", stdout(&by_checkpoints));
    let ids = event_ids(&lab);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "an event was written twice");
    let finished = log
        .lines()
        .filter(|line| line.contains("capture task stopped flows="))
        .filter_map(|line| line.split("flows=").nth(1)?.split_whitespace().next()?.parse::<usize>().ok())
        .sum::<usize>();
    assert!(ids.len() >= 400, "{} events for 300 + 100 requests:\n{log}", ids.len());
    assert!(ids.len() <= finished, "more events ({}) than flows ({finished})", ids.len());
}

/// The ingest task follows the signed log as it is written and verifies every record; a
/// line forged into the log is quarantined with its reason, and the genuine records after
/// it still verify.
#[test]
fn the_ingest_task_verifies_the_live_log_and_quarantines_a_forged_line() {
    let Some(lab) = Lab::up() else { return };
    let mut supervisor = Supervisor::start(&lab, "[response]\nmode = \"dry-run\"\n");
    supervisor.wait_ready(Duration::from_secs(20));
    let requests = |count: usize| {
        for _ in 0..count {
            assert!(lab.exec("c", &["curl", "-sf", "-o", "/dev/null", "http://10.66.9.2:8080/index.html"]).status.success());
        }
    };
    // The ingest task holds no key it could forge records with (ADR 0007): it is handed
    // no key fd (tasks read a key fd once and close it, so the handed list says it), has
    // none open, and gets the checkpoint public key in its environment; the log task is
    // handed both keys.
    let keys_held = |task: &str| -> Vec<String> {
        let pid = supervisor.task(task)["pid"].as_u64().expect("the task runs");
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("the task's fds")
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .map(|target| target.display().to_string())
            .filter(|target| target.ends_with("/keys/log.key") || target.ends_with("/keys/log-signing.key"))
            .collect()
    };
    assert_eq!(keys_held("ingest"), Vec::<String>::new(), "the ingest task has an fd to a log key");
    let environ = |task: &str| {
        let pid = supervisor.task(task)["pid"].as_u64().expect("the task runs");
        let bytes = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
        String::from_utf8_lossy(&bytes).split('\0').map(str::to_string).collect::<Vec<String>>()
    };
    // The public key (and every other setting) travels on the control channel, typed:
    // nothing in the environment a task must agree on by convention.
    for task in ["capture", "detect", "log", "ingest"] {
        let settings: Vec<String> = environ(task).into_iter().filter(|entry| entry.starts_with("MLD_")).collect();
        assert!(settings.is_empty(), "task {task} has settings in its environment: {settings:?}");
    }
    requests(10);
    let verified = |supervisor: &Supervisor| supervisor.status()["pipeline"]["events_verified"].as_u64().unwrap_or(0);
    assert!(eventually(Duration::from_secs(15), || verified(&supervisor) >= 10), "events are not verified: {}", supervisor.status());
    // Forge: a copy of the newest event with one field changed, appended to the file the
    // log task is writing.
    let dir = std::path::PathBuf::from(format!("/run/mldefender-lab-{}/log", lab.id));
    let newest = std::fs::read_dir(&dir)
        .expect("log dir")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("events-")))
        .max()
        .expect("a log file");
    let text = std::fs::read_to_string(&newest).expect("read log");
    let forged = text.lines().rev().find(|line| line.contains("\"action\":\"observe\"")).expect("an event").replacen(
        "\"action\":\"observe\"",
        "\"action\":\"ignore\"",
        1,
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .and_then(|mut file| std::io::Write::write_all(&mut file, format!("{forged}\n").as_bytes()))
        .expect("append the forged line");
    let before = verified(&supervisor);
    requests(5);
    let quarantined = eventually(Duration::from_secs(15), || supervisor.status()["pipeline"]["events_quarantined"].as_u64().unwrap_or(0) >= 1);
    assert!(quarantined, "the forged line was not quarantined: {}", supervisor.status());
    assert!(
        eventually(Duration::from_secs(15), || verified(&supervisor) >= before + 5),
        "genuine records after the forged line are not verified: {}",
        supervisor.status()
    );
    let (_, log) = supervisor.stop_with_log();
    let quarantine = std::fs::read_to_string(format!("/run/mldefender-lab-{}/ingest/quarantine.jsonl", lab.id)).expect("the quarantine file");
    let entry: Value = serde_json::from_str(quarantine.lines().next().expect("an entry")).expect("JSON");
    // No signed checkpoint covers it (the ingest task cannot tell a forged line by its
    // HMAC any more: it has no HMAC key).
    assert_eq!(entry["reason"], "unsigned", "{entry}\n{log}");
}

/// Seconds left on the deny entry for `prefix`, from `mldefender block list`.
fn seconds_left(lab: &Lab, prefix: &str) -> Option<u64> {
    let listed = stdout(&lab.mldefender(&["block", "list"]));
    listed.lines().find(|line| line.starts_with(prefix)).and_then(|line| line.split_whitespace().rev().nth(1)).and_then(|secs| secs.parse().ok())
}

#[test]
fn a_killed_supervisor_leaves_blocks_enforced_and_the_next_one_adopts_them_also_after_a_reboot() {
    let Some(lab) = Lab::up() else { return };
    let mut supervisor = Supervisor::start(&lab, "");
    supervisor.wait_ready(Duration::from_secs(30));
    assert!(lab.mldefender(&["block", "add", "10.66.2.2", "--ttl", "600", "--reason", "scan"]).status.success());
    assert!(!lab.ping("a", "10.66.9.2"), "the block does not drop");
    let task_pids: Vec<u64> = ["capture", "detect", "log", "ingest"].iter().filter_map(|name| supervisor.task(name)["pid"].as_u64()).collect();
    assert_eq!(task_pids.len(), 4, "every task runs");
    let blocks_file = format!("/run/mldefender-lab-{}/capture/blocks.json", lab.id);
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read_to_string(&blocks_file).is_ok_and(|text| text.contains("10.66.2.2/32"))),
        "the blocks in force were not saved to {blocks_file}"
    );

    // SIGKILL (an OOM kill, a crash): the gate stays shut, and no task outlives it.
    supervisor.kill();
    assert!(!lab.ping("a", "10.66.9.2"), "the attacker passes once the supervisor is dead");
    assert!(lab.ping("c", "10.66.9.2"), "the client is cut off");
    assert!(
        eventually(Duration::from_secs(5), || task_pids.iter().all(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())),
        "tasks outlived their supervisor"
    );

    // The next supervisor adopts the running data plane: the block and its TTL are intact.
    let mut supervisor = Supervisor::start(&lab, "");
    supervisor.wait_ready(Duration::from_secs(30));
    assert!(supervisor.log().contains("adopted the running data plane"), "{}", supervisor.log());
    let left = seconds_left(&lab, "10.66.2.2/32").expect("the block is gone after the restart");
    assert!((560..=600).contains(&left), "TTL not intact: {left} s left");
    assert!(!lab.ping("a", "10.66.9.2"), "the attacker passes after the restart");
    supervisor.stop();

    // A reboot empties bpffs: stand in for it by removing the pins (and the program).
    let detached = run(mldefender().args(["capture", "detach", "--config"]).arg(lab.config("").path()));
    assert!(detached.status.success(), "{}", stderr(&detached));
    assert!(lab.ping("a", "10.66.9.2"), "still enforcing after the detach");
    let supervisor = Supervisor::start(&lab, "");
    assert!(
        eventually(Duration::from_secs(20), || supervisor.log().contains("restored the blocks in force")),
        "the saved blocks were not restored:\n{}",
        supervisor.log()
    );
    let left = seconds_left(&lab, "10.66.2.2/32").expect("the block is gone after the reboot");
    assert!((540..=600).contains(&left), "TTL not intact after the reboot: {left} s left");
    assert!(!lab.ping("a", "10.66.9.2"), "the attacker passes after the reboot");
    supervisor.stop();
}

/// A duplicate of `fd` of process `pid` (pidfd_getfd; root may take any process's fds).
fn take_fd(pid: u64, fd: i32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: plain syscalls with integer arguments; each returned fd is checked and owned.
    #[allow(unsafe_code)]
    unsafe {
        let pidfd = nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as nix::libc::pid_t, 0);
        assert!(pidfd >= 0, "pidfd_open({pid}): {}", std::io::Error::last_os_error());
        let pidfd = std::os::fd::OwnedFd::from_raw_fd(pidfd as i32);
        let taken = nix::libc::syscall(nix::libc::SYS_pidfd_getfd, std::os::fd::AsRawFd::as_raw_fd(&pidfd), fd, 0);
        assert!(taken >= 0, "pidfd_getfd({pid}, {fd}): {}", std::io::Error::last_os_error());
        std::os::fd::OwnedFd::from_raw_fd(taken as i32)
    }
}

#[test]
fn the_capture_task_refuses_block_commands_no_detect_task_should_send() {
    let Some(lab) = Lab::up() else { return };
    let mut supervisor = Supervisor::start(&lab, "");
    supervisor.wait_ready(Duration::from_secs(30));
    // Stand in for the detect task: stop it, take its flow listener (fd 4), and let a
    // restarted capture task connect to us.
    let detect_pid = supervisor.task("detect")["pid"].as_u64().expect("detect pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(detect_pid as i32), nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP detect");
    let listener = std::os::unix::net::UnixListener::from(take_fd(detect_pid, 4));
    let capture_pid = supervisor.task("capture")["pid"].as_u64().expect("capture pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(capture_pid as i32), nix::sys::signal::Signal::SIGKILL).expect("SIGKILL capture");
    listener.set_nonblocking(true).expect("nonblocking");
    let mut connection = None;
    assert!(
        eventually(Duration::from_secs(20), || {
            connection = listener.accept().ok().map(|(stream, _)| stream);
            connection.is_some()
        }),
        "the restarted capture task did not connect:\n{}",
        supervisor.log()
    );
    let mut connection = connection.expect("connection");
    connection.set_nonblocking(false).expect("blocking");
    let commands = [
        (1, "0.0.0.0/0", 600, "scan"),
        (2, "10.0.0.0/8", 600, "flood"),
        (3, "10.66.2.2/32", u64::MAX, "scan"),
        (4, "10.66.9.1/32", 600, "scan"),
        (5, "10.66.2.2/32", 60, "scan"),
    ];
    let mut frames = Vec::new();
    for (id, prefix, ttl_secs, reason) in commands {
        let (prefix, reason) = (prefix.parse().expect("prefix"), mld_types::DenyReason::parse(reason).expect("reason"));
        let command = mld_ipc::ResponseMessage::Block { id, prefix, ttl_secs, reason, decided_boot_ns: 0 };
        mld_ipc::write_frame(&mut frames, &command).expect("frame");
    }
    std::io::Write::write_all(&mut connection, &frames).expect("send the commands");
    connection.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut decoder = mld_ipc::FrameDecoder::default();
    let mut results = std::collections::BTreeMap::new();
    let mut chunk = [0u8; 65536];
    while results.len() < commands.len() {
        let read = std::io::Read::read(&mut connection, &mut chunk).expect("read from the capture task");
        assert!(read > 0, "the capture task closed the connection: {results:?}");
        decoder.push(&chunk[..read]);
        while let Some(message) = decoder.next_message::<mld_ipc::FlowMessage>().expect("frame from the capture task") {
            if let mld_ipc::FlowMessage::BlockResult { id, error, .. } = message {
                results.insert(id, error);
            }
        }
    }
    for id in 1..=4 {
        let error = results[&id].as_deref().unwrap_or_else(|| panic!("command {id} {:?} was applied", commands[id as usize - 1]));
        assert!(error.contains("refused"), "command {id}: {error}");
    }
    assert_eq!(results[&5], None, "a sound block command was refused");
    let listed = stdout(&lab.mldefender(&["block", "list"]));
    assert!(!listed.contains("0.0.0.0/0") && !listed.contains("10.0.0.0/8") && !listed.contains("10.66.9.1"), "{listed}");
    let left = listed
        .lines()
        .find(|line| line.starts_with("10.66.2.2/32"))
        .and_then(|line| line.split_whitespace().rev().nth(1))
        .and_then(|secs| secs.parse::<u64>().ok());
    assert!(left.is_some_and(|left| left <= 60), "the sound block is not in force with its TTL: {listed}");
    assert!(lab.ping("c", "10.66.9.2"), "the client is cut off");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(detect_pid as i32), nix::sys::signal::Signal::SIGCONT).expect("SIGCONT detect");
    drop(connection);
    supervisor.stop();
}
