//! Detection outlives its log: with the log task stopped, the detect task keeps reading
//! flows and blocking; what its bounded queue cannot hold becomes one gap record once
//! the log is back, and the log still verifies. Privileged (root, the lab).

mod common;

use std::process::Command;
use std::time::Duration;

use common::lab::{eventually, Lab};
use common::supervisor::Supervisor;
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

fn scenario(lab: &Lab, name: &str, seconds: &str) {
    let output =
        run(Command::new("bash").arg(repo().join("tests/lab/scenario.sh")).args([lab.id.as_str(), name, seconds]).env("MLD_SCENARIO_ALLOW_BLOCKED", "1"));
    assert!(output.status.success(), "{name}: {}", stderr(&output));
}

#[test]
fn blocking_continues_while_the_log_is_stopped_and_the_gap_is_recorded_once_it_is_back() {
    let Some(lab) = Lab::up() else { return };
    // A window and queue of 16 events each (test builds only), so that a few seconds of
    // traffic overflow them.
    let mut supervisor = Supervisor::start_with_env(&lab, "", &[("MLD_TEST_EVENT_QUEUE_MAX", "16")]);
    supervisor.wait_ready(Duration::from_secs(30));
    let log_pid = supervisor.task("log")["pid"].as_u64().expect("the log task's pid") as i32;
    kill(Pid::from_raw(log_pid), Signal::SIGSTOP).expect("SIGSTOP the log task");
    // Benign traffic until the detect task's queue is full and events are being lost.
    scenario(&lab, "benign-http-burst", "5");
    let overflowing = eventually(Duration::from_secs(20), || supervisor.status()["pipeline"]["flows_dropped_detect"].as_u64().unwrap_or(0) > 0);
    assert!(overflowing, "the event queue never overflowed: {}", supervisor.status());
    // The log is still stopped: the attack is blocked all the same.
    scenario(&lab, "nmap-syn", "3");
    let blocked = eventually(Duration::from_secs(10), || stdout(&lab.mldefender(&["block", "list"])).contains("10.66.2.2/32"));
    let still_stopped = supervisor.task("log")["pid"].as_u64() == Some(log_pid as u64);
    kill(Pid::from_raw(log_pid), Signal::SIGCONT).expect("SIGCONT the log task");
    assert!(still_stopped, "the log task was restarted meanwhile: {}", supervisor.status());
    assert!(blocked, "nothing was blocked while the log was stopped:\n{}\n{}", stdout(&lab.mldefender(&["block", "list"])), supervisor.log());
    // The log is back: one gap record, in its place, saying what was lost.
    let recorded = eventually(Duration::from_secs(20), || lab.events().iter().any(|event| event["action"] == "gap"));
    let events = lab.events();
    let gaps: Vec<&Value> = events.iter().filter(|event| event["action"] == "gap").collect();
    assert!(recorded, "no gap record: {:?}", events.iter().filter(|event| event["action"] != "observe").collect::<Vec<_>>());
    assert_eq!(gaps.len(), 1, "one gap record for one outage: {gaps:?}");
    let provenance = gaps[0]["provenance"].as_str().unwrap_or_default();
    assert!(provenance.starts_with("gap: ") && provenance.contains("events lost (") && provenance.contains("observe "), "{provenance}");
    assert!(gaps[0]["flow_first_seen_us"].as_u64() <= gaps[0]["flow_last_seen_us"].as_u64(), "the span: {}", gaps[0]);
    let block_logged = events.iter().any(|event| event["action"] == "block" && event["src_ip"] == "10.66.2.2");
    assert!(block_logged || provenance.contains("block "), "the block is in the log, or counted in the gap: {provenance}");
    let key = format!("/run/mldefender-lab-{}/log.key", lab.id);
    let config = lab.config("");
    let key = std::fs::read_to_string(config.path())
        .ok()
        .and_then(|text| text.lines().find(|line| line.trim_start().starts_with("key-file")).and_then(|line| line.split('"').nth(1).map(str::to_string)))
        .unwrap_or(key);
    supervisor.stop();
    let verified = run(mldefender().args(["log", "verify"]).arg(lab.log_dir()).arg("--key").arg(&key));
    assert!(verified.status.success(), "log verify failed: {}{}", stdout(&verified), stderr(&verified));
}

/// Unmounts the lab's log tmpfs when the test ends, also when it fails.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

#[test]
fn a_full_log_disk_stops_neither_blocking_nor_the_log_task_and_the_log_comes_back_with_room() {
    let Some(lab) = Lab::up() else { return };
    // The log directory on a 256 KiB tmpfs: a disk that fills after a few dozen events.
    let dir = lab.log_dir();
    std::fs::create_dir_all(&dir).expect("log dir");
    let mounted = run(Command::new("mount").args(["-t", "tmpfs", "-o", "size=256k,mode=0750", "tmpfs"]).arg(&dir));
    assert!(mounted.status.success(), "mount tmpfs: {}", stderr(&mounted));
    let _unmount = Unmount(dir.clone());
    let mut supervisor = Supervisor::start_with_env(&lab, "", &[("MLD_TEST_EVENT_QUEUE_MAX", "16")]);
    supervisor.wait_ready(Duration::from_secs(30));
    let log_pid = supervisor.task("log")["pid"].as_u64();
    scenario(&lab, "benign-http-burst", "5");
    let full = eventually(Duration::from_secs(30), || supervisor.status()["pipeline"]["log_write_failures"].as_u64().unwrap_or(0) > 0);
    assert!(full, "the log never filled its disk: {}", supervisor.status());
    // The disk is full: the attack is blocked all the same, and the log task lives on.
    scenario(&lab, "nmap-syn", "3");
    let blocked = eventually(Duration::from_secs(10), || stdout(&lab.mldefender(&["block", "list"])).contains("10.66.2.2/32"));
    assert!(blocked, "nothing was blocked while the log's disk was full:\n{}", supervisor.log());
    assert_eq!(supervisor.task("log")["pid"].as_u64(), log_pid, "the log task was restarted (and would be held): {}", supervisor.status());
    // Room again: the log comes back by itself, with the gap on record.
    let grown = run(Command::new("mount").args(["-o", "remount,size=64m"]).arg(&dir));
    assert!(grown.status.success(), "remount: {}", stderr(&grown));
    let back = eventually(Duration::from_secs(20), || supervisor.log().contains("the event log can be written again"));
    assert!(back, "the log did not come back:\n{}", supervisor.log());
    let recorded = eventually(Duration::from_secs(20), || lab.events().iter().any(|event| event["action"] == "gap"));
    assert!(recorded, "no gap record once the log was back");
    let key = lab.config("");
    let key = std::fs::read_to_string(key.path())
        .ok()
        .and_then(|text| text.lines().find(|line| line.trim_start().starts_with("key-file")).and_then(|line| line.split('"').nth(1).map(str::to_string)))
        .expect("the lab's key-file");
    supervisor.stop();
    let verified = run(mldefender().args(["log", "verify"]).arg(&dir).arg("--key").arg(&key));
    assert!(verified.status.success(), "log verify failed: {}{}", stdout(&verified), stderr(&verified));
}
