//! Changing a running appliance's configuration (docs/operations.md, "Changing the
//! configuration"): `config plan`, `config apply`, SIGHUP, generations and rollback, in
//! the lab. Each class of change is applied with no more disruption than it needs, and
//! enforcement never stops. Privileged (root, network namespaces); CI requires it.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::lab::{eventually, Lab};
use common::supervisor::Supervisor;
use common::*;
use serde_json::Value;

const ATTACKER: &str = "10.66.2.2";
const SERVER: &str = "10.66.9.2";

fn pids(supervisor: &Supervisor) -> BTreeMap<String, u64> {
    supervisor.status()["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|task| (task["name"].as_str().unwrap_or("").to_string(), task["pid"].as_u64().unwrap_or(0)))
        .collect()
}

fn config_command(supervisor: &Supervisor, args: &[&str]) -> std::process::Output {
    run(mldefender().arg("config").args(args).args(["--runtime-dir", &supervisor.runtime_dir]))
}

fn apply(supervisor: &Supervisor, file: &tempfile::NamedTempFile) -> std::process::Output {
    config_command(supervisor, &["apply", &file.path().display().to_string()])
}

fn generations(supervisor: &Supervisor) -> Vec<Value> {
    let output = run(mldefender().args(["config", "generations", "--json", "--config"]).arg(&supervisor.config_path));
    assert!(output.status.success(), "{}", stderr(&output));
    let listed: Value = serde_json::from_str(stdout(&output).trim()).expect("json");
    listed["generations"].as_array().cloned().unwrap_or_default()
}

fn records(lab: &Lab, action: &str) -> Vec<Value> {
    lab.events().into_iter().filter(|event| event["action"] == action).collect()
}

fn blocked(lab: &Lab, address: &str) -> bool {
    stdout(&lab.mldefender(&["block", "list"])).lines().any(|line| line.starts_with(&format!("{address}/32")))
}

#[test]
fn a_running_appliance_takes_each_class_of_change_with_no_more_disruption_than_it_needs_and_rolls_back() {
    let Some(lab) = Lab::up() else { return };
    let mut supervisor = Supervisor::start(&lab, "");
    supervisor.wait_ready(Duration::from_secs(30));
    let start = pids(&supervisor);
    assert_eq!(generations(&supervisor).len(), 1, "the file is generation 1");

    // Invalid: every error, exit 64, nothing changed.
    let invalid = lab.config("[response]\nttl-scan-secs = 0\n[tasks.detect]\nmemory-max-mib = 0\n");
    let refused = apply(&supervisor, &invalid);
    assert_eq!(refused.status.code(), Some(64), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("response.ttl-scan-secs") && stderr(&refused).contains("tasks.detect.memory-max-mib"), "{}", stderr(&refused));
    assert_eq!((generations(&supervisor).len(), pids(&supervisor)), (1, start.clone()));
    // What needs a new image is refused with that reason.
    let image = lab.config("[system]\ndata-wait-ms = 100\n");
    let refused = apply(&supervisor, &image);
    assert_eq!(refused.status.code(), Some(64));
    assert!(stderr(&refused).contains("new image") && stderr(&refused).contains("nothing was applied"), "{}", stderr(&refused));

    // A live change: planned as live, applied with no task restarted, seen in a decision.
    let live = lab.config("[response]\nttl-scan-secs = 90\n[log]\ncheckpoint-interval-ms = 500\n");
    let plan = config_command(&supervisor, &["plan", &live.path().display().to_string()]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    let planned = stdout(&plan);
    assert!(planned.contains("log.checkpoint-interval-ms  1000 -> 500  [live]") && planned.contains("-> 90  [live]\noverall: live"), "{planned}");
    let applied = apply(&supervisor, &live);
    assert!(applied.status.success() && stdout(&applied).contains("applied live"), "{}{}", stdout(&applied), stderr(&applied));
    assert_eq!(pids(&supervisor), start, "no task restarted");
    let scan = lab.exec("a", &["nmap", "-n", "-Pn", "-sT", "-T4", "--top-ports", "200", SERVER]);
    assert!(scan.status.success(), "{}", stderr(&scan));
    assert!(eventually(Duration::from_secs(10), || blocked(&lab, ATTACKER)), "the scan is blocked:\n{}", supervisor.log());
    let block = records(&lab, "block").into_iter().find(|event| event["src_ip"] == ATTACKER).expect("the block record");
    assert_eq!(block["block_ttl_secs"], 90, "the new TTL decides: {block}");
    assert!(
        records(&lab, "config").iter().any(|event| event["config_generation"] == 2 && event["provenance"].as_str().unwrap_or("").contains("applied live")),
        "the apply is on record"
    );

    // The allowlist, with the block in force: the newly allowlisted source passes at once;
    // taken out again, it is dropped again (its deny entry still holds).
    assert!(!lab.ping("a", SERVER), "blocked before");
    let allowed = lab.config(&format!("[response]\nttl-scan-secs = 90\n[allowlist]\nprefixes = [\"{ATTACKER}\"]\n"));
    assert!(apply(&supervisor, &allowed).status.success());
    assert!(lab.ping("a", SERVER), "allowlisted: passes as soon as the apply returns");
    let listed = stdout(&lab.mldefender(&["allow", "list"]));
    assert_eq!(listed.trim(), format!("{ATTACKER}/32"), "`allow list` reads the allowlist in force (the other trie now)");
    assert!(apply(&supervisor, &live).status.success());
    assert!(!lab.ping("a", SERVER), "no longer allowlisted: the block holds again");
    assert_eq!(pids(&supervisor), start, "allowlist changes restart nothing");

    // A memory budget: exactly that task restarts, and is ready again.
    let budget = lab.config("[response]\nttl-scan-secs = 90\n[tasks.ingest]\nmemory-max-mib = 700\n");
    let applied = apply(&supervisor, &budget);
    assert!(stdout(&applied).contains("restarting ingest"), "{}", stdout(&applied));
    assert!(
        eventually(Duration::from_secs(30), || supervisor.task("ingest")["state"] == "ready"
            && supervisor.task("ingest")["pid"].as_u64() != start.get("ingest").copied()),
        "ingest restarted: {}",
        supervisor.status()
    );
    let after = pids(&supervisor);
    for task in ["capture", "detect", "log"] {
        assert_eq!(after[task], start[task], "{task} untouched");
    }
    assert_eq!(supervisor.task("ingest")["restarts"], 0, "a planned restart is no failure");
    assert_eq!(supervisor.task("ingest")["memory_budget_bytes"], 700u64 << 20, "the watchdog's budget is the new one");
    // `block del` of a prefix that is not in the deny list removes nothing, and tells
    // nobody: the block of the source inside it holds.
    let missed = lab.mldefender(&["block", "del", "10.66.2.0/24", "--runtime-dir", &supervisor.runtime_dir]);
    assert!(!missed.status.success() && stderr(&missed).contains("not in the deny list"), "{}", stderr(&missed));
    assert!(blocked(&lab, ATTACKER) && !lab.ping("a", SERVER));

    // SIGHUP: the file again. It now holds a new TTL; applied live as its own generation.
    let edited = format!("{}\n[response]\nttl-scan-secs = 120\n", std::fs::read_to_string(&supervisor.config_path).expect("read"));
    std::fs::write(&supervisor.config_path, edited).expect("edit the file");
    let pid = supervisor.status()["supervisor_pid"].as_u64().expect("pid") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    assert!(
        eventually(Duration::from_secs(10), || generations(&supervisor).last().is_some_and(|last| last["source"] == "sighup")),
        "SIGHUP makes a generation: {:?}",
        generations(&supervisor)
    );
    let sighup = generations(&supervisor).last().cloned().expect("generation");
    let diff = run(mldefender().args(["config", "diff", "5", &sighup["number"].to_string(), "--config"]).arg(&supervisor.config_path));
    let line = |text: &str, key: &str, change: &str| text.lines().any(|line| line.starts_with(key) && line.ends_with(change));
    assert!(line(&stdout(&diff), "response.ttl-scan-secs ", "90 -> 120  [live]"), "{}{}", stdout(&diff), stderr(&diff));

    // Rollback: the generation before, as a new generation; the supervisor keeps its pid
    // and enforcement through every step.
    let rolled = config_command(&supervisor, &["rollback", "--config", &supervisor.config_path.display().to_string()]);
    assert!(rolled.status.success(), "{}{}", stdout(&rolled), stderr(&rolled));
    let last = generations(&supervisor).last().cloned().expect("generation");
    assert_eq!((last["source"].as_str(), last["sha256"].as_str()), (Some("rollback"), generations(&supervisor)[4]["sha256"].as_str()), "{last}");
    assert_eq!(supervisor.status()["supervisor_pid"].as_u64(), Some(pid as u64));

    // What the supervisor itself holds: it restarts in place (same pid, every task anew),
    // and the blocks stay in force through it.
    let supervisor_change = lab.config("[response]\nttl-scan-secs = 90\n[tasks.ingest]\nmemory-max-mib = 700\n[supervisor]\nwatchdog-interval-ms = 150\n");
    let applied = apply(&supervisor, &supervisor_change);
    assert!(stdout(&applied).contains("restarts in place"), "{}{}", stdout(&applied), stderr(&applied));
    supervisor.wait_ready_times(2, Duration::from_secs(60));
    let restarted = pids(&supervisor);
    assert!(restarted.iter().all(|(task, pid)| start.get(task) != Some(pid)), "every task anew: {restarted:?}");
    assert_eq!(supervisor.status()["supervisor_pid"].as_u64(), Some(pid as u64), "the same supervisor process");
    let generation = generations(&supervisor).last().and_then(|last| last["number"].as_u64()).expect("generation");
    assert!(
        eventually(Duration::from_secs(10), || records(&lab, "config")
            .iter()
            .any(|event| event["config_generation"] == generation && event["provenance"].as_str().unwrap_or("").contains("at the detect task's start"))),
        "the restarted detect task records generation {generation}"
    );
    assert!(blocked(&lab, ATTACKER) && !lab.ping("a", SERVER), "enforcement never stopped");

    // A generation that never gets ready (its detect task exits at every start) is marked
    // failed after supervisor.ready-timeout-secs, and the one before it runs again.
    let good = generations(&supervisor).last().and_then(|last| last["number"].as_u64()).expect("generation");
    let broken = lab.config(
        "[response]\nttl-scan-secs = 90\n[tasks.ingest]\nmemory-max-mib = 700\n[supervisor]\nwatchdog-interval-ms = 150\nready-timeout-secs = 5\n[tasks.detect]\ntest-exit-at-start = true\n",
    );
    assert!(apply(&supervisor, &broken).status.success());
    supervisor.wait_ready_times(3, Duration::from_secs(60));
    let kept = generations(&supervisor);
    let failed = kept.last().expect("generation");
    assert_eq!((failed["number"].as_u64(), failed["failed"].as_bool()), (Some(good + 1), Some(true)), "{kept:?}");
    let listed = stdout(&run(mldefender().args(["config", "generations", "--config"]).arg(&supervisor.config_path)));
    assert!(listed.lines().any(|line| line.starts_with(&format!("{good} ")) && line.ends_with("in force")), "{listed}");
    assert_eq!(supervisor.task("detect")["state"], "ready");

    // One that fails before the supervisor runs (an interface that is not there): marked
    // failed, and the one before it runs again.
    let gone = lab.config(&format!(
        "[response]\nttl-scan-secs = 90\n[tasks.ingest]\nmemory-max-mib = 700\n[supervisor]\nwatchdog-interval-ms = 150\n[capture]\ninterfaces = [{{ name = \"{}\", role = \"lan\" }}, {{ name = \"mldnosuch0\", role = \"lan\" }}]\n",
        lab.gateway_interface("c")
    ));
    assert!(apply(&supervisor, &gone).status.success());
    supervisor.wait_ready_times(4, Duration::from_secs(60));
    let kept = generations(&supervisor);
    assert_eq!(kept.last().and_then(|last| last["failed"].as_bool()), Some(true), "{kept:?}");
    assert!(supervisor.log().contains("failed before the supervisor ran"), "{}", supervisor.log());
    supervisor.stop();
}
