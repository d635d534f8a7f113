//! `mldefender block del PREFIX --benign` (issue 14, item 7): the operator releases a
//! blocked source and marks it benign; the release is in the signed log, the detect task
//! refuses to block the source again (the refusal names the exemption), also after the
//! supervisor restarts; without a supervisor the deny entry still goes and the CLI says
//! the exemption was not recorded. Privileged (root) where a lab is needed.

mod common;

use std::process::Command;
use std::time::Duration;

use common::lab::{eventually, Lab};
use common::supervisor::Supervisor;
use common::*;
use serde_json::Value;

const ATTACKER: &str = "10.66.2.2";

/// nmap SYN scan from the attacker for 3 s (it may be blocked on the way).
fn scan(lab: &Lab) {
    let scan =
        run(Command::new("bash").arg(repo().join("tests/lab/scenario.sh")).args([lab.id.as_str(), "nmap-syn", "3"]).env("MLD_SCENARIO_ALLOW_BLOCKED", "1"));
    assert!(scan.status.success(), "{}", stderr(&scan));
}

fn denied(lab: &Lab) -> bool {
    stdout(&lab.mldefender(&["block", "list"])).lines().any(|line| line.starts_with(&format!("{ATTACKER}/32")))
}

/// The attacker's refusals that name the operator's exemption.
fn exempt_refusals(lab: &Lab) -> usize {
    lab.events()
        .iter()
        .filter(|event| {
            event["action"] == "refused"
                && event["src_ip"] == ATTACKER
                && event["provenance"].as_str().is_some_and(|why| why.contains("not blocked: marked benign by the operator at") && why.contains("(lab test)"))
        })
        .count()
}

fn non_observations(lab: &Lab) -> Vec<Value> {
    lab.events().into_iter().filter(|event| event["action"] != "observe").collect()
}

#[test]
fn a_source_released_as_benign_is_logged_and_not_blocked_again_also_after_a_restart() {
    let Some(lab) = Lab::up() else { return };
    let mut supervisor = Supervisor::start(&lab, "");
    supervisor.wait_ready(Duration::from_secs(30));
    scan(&lab);
    let blocked = eventually(Duration::from_secs(15), || denied(&lab));
    assert!(blocked, "the scan was not blocked: {}", supervisor.status());

    let release = lab.mldefender(&["block", "del", ATTACKER, "--benign", "--reason", "lab test", "--for", "3600", "--runtime-dir", &supervisor.runtime_dir]);
    let said = stdout(&release);
    assert!(release.status.success(), "block del --benign failed:\n{said}{}", stderr(&release));
    assert!(said.contains(&format!("unblocked {ATTACKER}/32")) && said.contains("marked benign by the operator at") && said.contains("(lab test)"), "{said}");
    assert!(!denied(&lab), "the deny entry is still there");
    let runtime = std::path::PathBuf::from(&supervisor.runtime_dir);
    assert!(runtime.join("detect/benign.json").is_file(), "the exemption was not kept in the detect task's state directory");
    let logged = eventually(Duration::from_secs(10), || {
        lab.events().iter().any(|event| {
            event["action"] == "release-benign"
                && event["src_ip"] == ATTACKER
                && event["category"] == "benign"
                && event["provenance"].as_str().is_some_and(|why| why.contains("(lab test)") && why.contains(&format!("exemption {ATTACKER}/32 until")))
        })
    });
    assert!(logged, "no release-benign event: {:?}", non_observations(&lab));
    let config = lab.config("");
    let explained = lab.mldefender(&["block", "explain", ATTACKER, "--config", &config.path().display().to_string()]);
    let explanation = stdout(&explained);
    assert!(
        explanation.contains("in force: not blocked now") && explanation.contains("exemption: marked benign by the operator at"),
        "{explanation}{}",
        stderr(&explained)
    );

    // The same scan again: refused, naming the exemption; never blocked.
    scan(&lab);
    let refused = eventually(Duration::from_secs(15), || exempt_refusals(&lab) >= 1);
    assert!(refused, "no refusal naming the exemption: {:?}", non_observations(&lab));
    assert!(!denied(&lab), "the released source was blocked again");
    assert_eq!(supervisor.status()["pipeline"]["blocks"], 1, "one block: the first scan's");

    // A new supervisor (and detect task) reads the exemption back.
    supervisor.stop();
    let mut supervisor = Supervisor::start(&lab, "");
    supervisor.wait_ready(Duration::from_secs(30));
    scan(&lab);
    let refused_again = eventually(Duration::from_secs(15), || exempt_refusals(&lab) >= 2);
    assert!(refused_again, "the exemption did not survive the restart: {:?}\n{}", non_observations(&lab), supervisor.log());
    assert!(!denied(&lab), "the released source was blocked after the restart");
    assert_eq!(supervisor.status()["pipeline"]["blocks"], 0);
    supervisor.stop();

    let key = runtime.join("keys/log.key");
    let verified = run(mldefender().args(["log", "verify"]).arg(lab.log_dir()).arg("--key").arg(&key));
    assert!(verified.status.success(), "the log does not verify:\n{}{}", stdout(&verified), stderr(&verified));
}

#[test]
fn a_broken_exemptions_file_is_named_and_never_overwritten() {
    let Some(lab) = Lab::up() else { return };
    let state = std::path::PathBuf::from(format!("/run/mldefender-lab-{}/detect", lab.id));
    std::fs::create_dir_all(&state).expect("state dir");
    std::fs::write(state.join("benign.json"), "{not json").expect("write");
    let mut supervisor = Supervisor::start(&lab, "");
    supervisor.wait_ready(Duration::from_secs(30));
    let release = lab.mldefender(&["block", "del", ATTACKER, "--benign", "--runtime-dir", &supervisor.runtime_dir]);
    let errors = stderr(&release);
    assert!(!release.status.success(), "a broken file must not be replaced");
    assert!(errors.contains("NOT recorded") && errors.contains("benign.json") && errors.contains("not a valid exemptions file"), "{errors}");
    assert_eq!(std::fs::read_to_string(state.join("benign.json")).expect("read"), "{not json", "the file was overwritten");
    supervisor.stop();
}

#[test]
fn without_a_supervisor_the_deny_entry_goes_and_the_exemption_is_not_recorded() {
    let Some(lab) = Lab::up() else { return };
    let config = lab.config("");
    let capture = lab.capture(&config);
    let added = lab.mldefender(&["block", "add", ATTACKER, "--ttl", "600"]);
    assert!(added.status.success(), "{}", stderr(&added));
    let runtime = tempfile::tempdir().expect("an empty runtime directory");
    let release = lab.mldefender(&["block", "del", ATTACKER, "--benign", "--reason", "x", "--runtime-dir", &runtime.path().display().to_string()]);
    assert_eq!(release.status.code(), Some(1), "{}", stderr(&release));
    assert!(stdout(&release).contains(&format!("unblocked {ATTACKER}/32")), "{}", stdout(&release));
    let errors = stderr(&release);
    assert!(errors.contains("the exemption of 10.66.2.2/32 was NOT recorded: no supervisor answers on"), "{errors}");
    assert!(!denied(&lab), "the deny entry is still there");
    capture.stop();
}

#[test]
fn the_benign_options_need_benign() {
    let output = run(mldefender().args(["block", "del", ATTACKER, "--reason", "x"]));
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let output = run(mldefender().args(["block", "del", ATTACKER, "--benign", "--for", "0"]));
    assert_eq!(output.status.code(), Some(2), "--for 0 is refused: {}", stderr(&output));
}
