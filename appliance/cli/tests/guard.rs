//! The per-destination guard against random-source floods, in the lab under the
//! supervisor: a SYN flood from random spoofed sources puts the server's :8080 under
//! attack (a guard-on event in the signed log), the XDP program drops first packets of
//! unknown sources, the client that completed handshakes before keeps getting its
//! answers, and the guard lapses when the flood ends (guard-off). The same flood with
//! `[guard] enabled = false` is measured for comparison. Privileged (root); CI requires it.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::lab::{eventually, Lab};
use common::supervisor::Supervisor;
use common::*;
use serde_json::Value;

/// One HTTP request from the client to the server, answered within 2 s.
fn request(lab: &Lab) -> bool {
    lab.exec("c", &["curl", "-s", "-f", "-o", "/dev/null", "--max-time", "2", "http://10.66.9.2:8080/index.html"]).status.success()
}

/// This branch's binary, copied where no other build replaces it while the test runs
/// (the target directory may be shared).
struct Binary {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Binary {
    fn copy() -> Binary {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("mldefender");
        std::fs::copy(env!("CARGO_BIN_EXE_mldefender"), &path).expect("copy the binary");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod 0755");
        let example = run(Command::new(&path).args(["config", "example"]));
        assert!(stdout(&example).contains("[guard]"), "{} is not a build with the guard", path.display());
        Binary { _dir: dir, path }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        run(Command::new(&self.path).args(args))
    }
}

fn status(binary: &Binary, supervisor: &Supervisor) -> Value {
    let output = binary.run(&["status", "--json", "--runtime-dir", &supervisor.runtime_dir]);
    assert!(output.status.success(), "status failed: {}", stderr(&output));
    serde_json::from_str(stdout(&output).trim()).expect("status JSON")
}

/// The XDP counters: (guard drops, packet records lost to a full ring).
fn xdp_counters(binary: &Binary, lab: &Lab) -> (u64, u64) {
    let output = binary.run(&["counters", "--json", "--bpffs-dir", &lab.bpffs_dir()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let counters: Value = serde_json::from_str(stdout(&output).trim()).expect("counters JSON");
    (counters["guard_dropped"].as_u64().expect("guard_dropped"), counters["ring_full"].as_u64().expect("ring_full"))
}

fn guard_events(lab: &Lab, action: &str) -> Vec<Value> {
    lab.events().into_iter().filter(|event| event["action"] == action).collect()
}

/// What one flood did.
struct Run {
    /// The client's requests during the flood: (succeeded, made).
    requests: (usize, usize),
    guard_dropped: u64,
    /// Packet records the XDP program lost to a full ring buffer (the gateway's own
    /// capture and detection overwhelmed).
    ring_full: u64,
    flood_secs: f64,
}

/// Starts the supervisor with `extra`, makes the client known good, floods :8080 from
/// random sources for `seconds` while the client makes requests, one after another.
fn flood(binary: &Binary, lab: &Lab, extra: &str, seconds: u64) -> (Supervisor, Run) {
    let mut supervisor = Supervisor::start_binary(lab, &binary.path, extra, &[]);
    supervisor.wait_ready(Duration::from_secs(30));
    // Known good: handshakes completed, the server's answers seen by the gateway.
    for _ in 0..3 {
        assert!(request(lab), "the client cannot reach the server before the flood");
    }
    let (dropped_before, ring_full_before) = xdp_counters(binary, lab);
    let started = Instant::now();
    // hping3 every 100 µs (about 10,000 SYNs a second on an idle machine; measured
    // here: 5,000-6,500), each from a new random source. MLD_GUARD_FLOOD=flood: as fast
    // as it can (hping3 --flood), for measurements.
    let pace: &[&str] = match std::env::var("MLD_GUARD_FLOOD").as_deref() {
        Ok("flood") => &["--flood"],
        _ => &["-i", "u100"],
    };
    let mut hping = Command::new("bash")
        .arg(repo().join("tests/lab/lab.sh"))
        .args(["exec", &lab.id, "a", "timeout", "-s", "INT", &seconds.to_string(), "hping3", "-q", "-S", "-p", "8080", "--rand-source"])
        .args(pace)
        .arg("10.66.9.2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hping3");
    // Let the flood begin before measuring.
    std::thread::sleep(Duration::from_millis(300));
    let (mut succeeded, mut made) = (0, 0);
    while started.elapsed() < Duration::from_secs(seconds) {
        made += 1;
        succeeded += usize::from(request(lab));
        // About 4 requests a second: a busy client, not one the detection's
        // repeated-sessions rule (brute force) would take for an attacker.
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = hping.wait();
    let flood_secs = started.elapsed().as_secs_f64();
    let (dropped, ring_full) = xdp_counters(binary, lab);
    let run = Run { requests: (succeeded, made), guard_dropped: dropped - dropped_before, ring_full: ring_full - ring_full_before, flood_secs };
    (supervisor, run)
}

#[test]
fn a_random_source_flood_is_guarded_the_known_client_gets_through_and_the_guard_lapses() {
    let Some(lab) = Lab::up() else { return };
    let binary = Binary::copy();
    let extra = format!("{}\n[guard]\nquiet-secs = 3\n", lab.no_source_check_on_the_attacker());
    let (supervisor, guarded) = flood(&binary, &lab, &extra, 7);
    let on = eventually(Duration::from_secs(5), || !guard_events(&lab, "guard-on").is_empty());
    assert!(on, "no guard-on event: {}\n{}", status(&binary, &supervisor), supervisor.log());
    let event = guard_events(&lab, "guard-on").remove(0);
    assert_eq!((event["dst_ip"].as_str(), event["dst_port"].as_u64(), event["protocol"].as_u64()), (Some("10.66.9.2"), Some(8080), Some(6)), "{event}");
    assert_eq!(event["src_ip"], "0.0.0.0", "a guard is about a service, not a source: {event}");
    eprintln!("guard-on: {}", event["provenance"]);
    assert!(guarded.guard_dropped > 0, "the XDP program dropped nothing for the guard: {}", status(&binary, &supervisor));
    let report = status(&binary, &supervisor);
    assert!(report["pipeline"]["capture"]["xdp_guard_dropped"].as_u64().unwrap_or(0) > 0 || guarded.guard_dropped > 0, "{report}");
    // The guard lapses by itself after the quiet period (3 s here).
    let off = eventually(Duration::from_secs(20), || !guard_events(&lab, "guard-off").is_empty());
    assert!(off, "no guard-off event after the flood: {}\n{}", status(&binary, &supervisor), supervisor.log());
    let event = guard_events(&lab, "guard-off").remove(0);
    eprintln!("guard-off: {}", event["provenance"]);
    let provenance = event["provenance"].as_str().unwrap_or_default();
    assert!(provenance.contains("dropped ") && !provenance.contains("dropped 0,"), "the drop count is in the event: {event}");
    let (succeeded, made) = guarded.requests;
    let ratio = succeeded as f64 / made as f64;
    eprintln!(
        "with the guard: {succeeded} of {made} client requests answered during the {:.1} s flood ({:.1} %); XDP guard drops {}; records lost to a full ring {}",
        guarded.flood_secs,
        100.0 * ratio,
        guarded.guard_dropped,
        guarded.ring_full
    );
    // After it, the client still works, and the victim was never blocked (its answers to
    // forged sources can look like a scan; the capture task refuses such blocks).
    let reachable = eventually(Duration::from_secs(5), || request(&lab));
    let blocks = stdout(&binary.run(&["block", "list", "--bpffs-dir", &lab.bpffs_dir()]));
    assert!(reachable, "the client cannot reach the server after the guard lapsed; blocks:\n{blocks}\n{}", supervisor.log());
    assert!(!blocks.contains("10.66.9.2/32"), "the flood's victim was blocked:\n{blocks}");
    assert!(ratio >= 0.9, "only {succeeded} of {made} client requests succeeded during the flood with the guard");
    supervisor.stop();

    // The same flood without the guard, for comparison (printed; nothing guarded).
    let extra = format!("{}\n[guard]\nenabled = false\n", lab.no_source_check_on_the_attacker());
    let events_before = guard_events(&lab, "guard-on").len();
    let (supervisor, unguarded) = flood(&binary, &lab, &extra, 7);
    let (succeeded, made) = unguarded.requests;
    eprintln!(
        "without the guard: {succeeded} of {made} client requests answered during the {:.1} s flood ({:.1} %); XDP guard drops {}; records lost to a full ring {}",
        unguarded.flood_secs,
        100.0 * succeeded as f64 / made as f64,
        unguarded.guard_dropped,
        unguarded.ring_full
    );
    assert_eq!(unguarded.guard_dropped, 0);
    assert_eq!(guard_events(&lab, "guard-on").len(), events_before, "disabled, it never guards");
    supervisor.stop();
}
