//! Detection and response in the lab, under the supervisor, with the signed models:
//! real attacks are blocked, benign traffic is not, dry run blocks nothing, protected
//! sources are refused, the circuit breaker holds, bad models fail closed. Privileged
//! (root); CI requires them.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::lab::{eventually, Lab};
use common::supervisor::Supervisor;
use common::*;
use serde_json::Value;

/// Runs tests/lab/eval.sh (its own lab) on `scenarios` with `extra` configuration;
/// `None` when the lab cannot run here (not root).
fn eval(scenarios: &[&str], extra: &str) -> Option<Vec<Value>> {
    if !is_root() {
        assert!(!env_flag("MLD_REQUIRE_LAB"), "MLD_REQUIRE_LAB is set but the tests do not run as root");
        eprintln!("skipped: the lab needs root");
        return None;
    }
    let extra_file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(extra_file.path(), extra).expect("write extra configuration");
    let output = run(Command::new("bash")
        .arg(repo().join("tests/lab/eval.sh"))
        .arg("--extra-toml")
        .arg(extra_file.path())
        // A blocked attacker's tool retries into silence until its own time-out: stop it
        // 3 s after the first drop (the published tables run every scenario to its end).
        .args(["--stop-after-block", "3"])
        .args(scenarios)
        .env("MLD_BIN", env!("CARGO_BIN_EXE_mldefender")));
    assert!(output.status.success(), "eval.sh failed:\n{}", stderr(&output));
    let rows: Vec<Value> = stdout(&output).lines().map(|line| serde_json::from_str(line).expect("eval JSON line")).collect();
    assert_eq!(rows.len(), scenarios.len(), "{}", stderr(&output));
    Some(rows)
}

const ATTACKS: [&str; 17] = [
    "nmap-syn",
    "nmap-syn-fast",
    "nmap-syn-slow",
    "nmap-connect",
    "nmap-xmas",
    "nmap-udp",
    "nmap-version",
    "hping-syn-flood",
    "hping-ack-flood",
    "hping-udp-flood",
    "hping-udp-flood-large",
    "hping-icmp-flood",
    "hping-icmp-flood-large",
    "http-flood",
    "brute-force",
    "ssh-brute-force",
    "slow-http",
];
const BENIGN: [&str; 9] =
    ["benign-iperf", "benign-iperf-http", "benign-browse", "benign-crawl", "benign-dns", "benign-dns-burst", "benign-ping", "benign-http-burst", "benign-idle"];
/// Floods forged with the benign hosts' addresses (the attacker link's source check off).
const SPOOFED: [&str; 2] = ["spoof-syn-client", "spoof-udp-server"];

/// The goals, attack start to first drop: 1 s for floods and scans at 100 probes
/// a second or more, 5 s for slow scans at 2 or more; `None`: no time goal (a handful of
/// probes, or evidence that takes time by its nature: password guessing, slow sessions).
fn goal_ms(scenario: &str) -> Option<u64> {
    match scenario {
        "nmap-syn" | "nmap-syn-fast" | "nmap-connect" | "nmap-xmas" => Some(1000),
        name if name.starts_with("hping-") || name == "http-flood" => Some(1000),
        "nmap-syn-slow" | "nmap-udp" => Some(5000),
        _ => None,
    }
}

#[test]
fn every_lab_attack_is_blocked_and_no_benign_source_ever_is() {
    let scenarios: Vec<&str> = ATTACKS.iter().chain(BENIGN.iter()).chain(SPOOFED.iter()).copied().collect();
    let Some(rows) = eval(&scenarios, "") else { return };
    let mut failures = Vec::new();
    for row in &rows {
        let name = row["scenario"].as_str().unwrap_or_default();
        if !row["scenario_ran"].as_bool().unwrap_or(false) {
            failures.push(format!("{name}: the scenario's traffic did not run as intended (a forged flood's benign traffic must get every answer)"));
        }
        if row["label"] == "attack" {
            if row["attacker_blocked"] != true {
                failures.push(format!("{name}: the attacker was not blocked: {row}"));
            }
            // docs/detection.md records the measured times; the test allows twice the
            // goal on a loaded CI machine running the debug build. The attack starts with
            // its first packet: a tool's own start-up (nmap's first run can take a second
            // to load) is not the appliance's time.
            if let Some(goal) = goal_ms(name) {
                let from_first_packet = row["first_drop_ms"].as_u64().map(|drop| drop.saturating_sub(row["first_packet_ms"].as_u64().unwrap_or(0)));
                if from_first_packet.is_none_or(|ms| ms > 2 * goal) {
                    failures.push(format!("{name}: first dropped packet later than {} ms after the attack's first packet: {row}", 2 * goal));
                }
            }
        }
        let benign_blocked = !row["benign_blocked"].as_array().is_some_and(Vec::is_empty);
        let benign_denied = row["deny_entries"].as_array().is_some_and(|entries| {
            entries
                .iter()
                .filter_map(Value::as_str)
                .any(|entry| entry.starts_with("10.66.1.") || entry.starts_with("10.66.9.") || entry.starts_with("fd66:1:") || entry.starts_with("fd66:9:"))
        });
        if benign_blocked || benign_denied || (row["label"] == "benign" && !row["deny_entries"].as_array().is_some_and(Vec::is_empty)) {
            failures.push(format!("{name}: a benign host was blocked: {row}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn dry_run_logs_would_block_and_blocks_nothing() {
    let Some(rows) = eval(&["nmap-syn"], "[response]\nmode = \"dry-run\"\n") else { return };
    let row = &rows[0];
    assert_eq!(row["attacker_blocked"], true, "the decision is logged as would-block: {row}");
    assert_eq!(row["deny_entries"], Value::Array(Vec::new()), "nothing reaches the deny map: {row}");
    assert_eq!(row["first_drop_ms"], Value::Null, "nothing is dropped: {row}");
}

#[test]
fn an_allowlisted_attacker_is_never_blocked_and_the_refusal_is_logged() {
    let Some(rows) = eval(&["hping-syn-flood"], "[allowlist]\nprefixes = [\"10.66.2.2\"]\n") else { return };
    let row = &rows[0];
    assert_eq!(row["attacker_blocked"], false, "{row}");
    assert_eq!(row["deny_entries"], Value::Array(Vec::new()), "{row}");
    assert_eq!(row["refused"], serde_json::json!(["10.66.2.2"]), "the refusal is logged: {row}");
}

#[test]
fn spoofed_scanners_cannot_starve_the_breaker_and_the_real_scanner_is_blocked() {
    let Some(lab) = Lab::up() else { return };
    let extra = format!("{}\n[response]\nmax-new-blocks-per-minute = 20\n", lab.no_source_check_on_the_attacker());
    let mut supervisor = Supervisor::start(&lab, &extra);
    supervisor.wait_ready(Duration::from_secs(30));
    // 150 spoofed sources, each sending SYNs to 40 ports (each alone looks like a port
    // scan), in the same minute as one real nmap scan.
    let mac = lab.gateway_mac("a");
    let iface = format!("mld{}a0", lab.id);
    let spoofed = lab.exec("a", &["/usr/bin/python3", &repo().join("tests/lab/spoofed-scan.py").display().to_string(), &iface, &mac, "150", "40"]);
    assert!(spoofed.status.success(), "{}", stderr(&spoofed));
    // A connect scan with version probes: the services' answers are two-way evidence
    // (docs/detection.md), which the spoofed sources cannot make.
    let scan = lab.exec("a", &["nmap", "-n", "-Pn", "-sT", "-sV", "--version-light", "-T4", "--top-ports", "200", "10.66.9.2"]);
    assert!(scan.status.success(), "{}", stderr(&scan));
    let blocked = eventually(Duration::from_secs(10), || stdout(&lab.mldefender(&["block", "list"])).contains("10.66.2.2/32"));
    let entries = stdout(&lab.mldefender(&["block", "list"]));
    assert!(blocked, "the real scanner was not blocked:\n{entries}\n{}", supervisor.status());
    let spoofed_blocks = entries.lines().skip(1).filter(|line| line.starts_with("198.18.")).count();
    // The unreserved share at most (20 less the 25 % kept for two-way evidence).
    assert!(spoofed_blocks <= 15, "{spoofed_blocks} spoofed sources blocked:\n{entries}");
    supervisor.stop();
}

#[test]
fn spoofed_scans_from_the_resolver_and_the_upstream_gateway_never_get_them_blocked() {
    let Some(lab) = Lab::up() else { return };
    // The server is the lab's resolver; 10.66.9.3 is the gateway's upstream next hop.
    assert!(lab.exec("g", &["ip", "route", "add", "default", "via", "10.66.9.3", "dev", &lab.gateway_interface("s"), "onlink"]).status.success());
    let extra = format!("{}\n[response]\nresolvers = [\"10.66.9.2\"]\n", lab.no_source_check_on_the_attacker());
    let mut supervisor = Supervisor::start(&lab, &extra);
    supervisor.wait_ready(Duration::from_secs(30));
    let mac = lab.gateway_mac("a");
    let iface = format!("mld{}a0", lab.id);
    let script = repo().join("tests/lab/spoofed-scan.py").display().to_string();
    for source in ["10.66.9.2", "10.66.9.3"] {
        let sent = lab.exec("a", &["/usr/bin/python3", &script, &iface, &mac, "1", "60", source, "10.66.1.2"]);
        assert!(sent.status.success(), "{}", stderr(&sent));
    }
    // A real scan in the same run is blocked: detection was on.
    assert!(lab.exec("a", &["nmap", "-n", "-Pn", "-sS", "-T4", "--top-ports", "200", "10.66.9.2"]).status.success());
    assert!(
        eventually(Duration::from_secs(10), || stdout(&lab.mldefender(&["block", "list"])).contains("10.66.2.2/32")),
        "the real scanner was not blocked: {}",
        supervisor.status()
    );
    let entries = stdout(&lab.mldefender(&["block", "list"]));
    assert!(!entries.contains("10.66.9.2/32") && !entries.contains("10.66.9.3/32"), "infrastructure blocked:\n{entries}");
    assert!(lab.exec("c", &["dig", "+time=1", "+tries=2", "@10.66.9.2", "lab.test"]).status.success(), "the site's DNS is cut");
    supervisor.stop();
}

/// A copy of the repository's models with one change.
fn models_copy(change: impl FnOnce(&Path)) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("mld-models").tempdir().expect("temp dir");
    for entry in std::fs::read_dir(repo().join("models")).expect("models dir").flatten() {
        let path = entry.path();
        if path.is_file() && path.extension().is_some_and(|ext| ext == "onnx" || ext == "json" || ext == "sig") {
            std::fs::copy(&path, dir.path().join(entry.file_name())).expect("copy model file");
        }
    }
    change(dir.path());
    // The detect task's user must read them.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

#[test]
fn a_bad_model_stops_the_detect_task_with_the_cause_and_the_supervisor_holds_it() {
    let Some(lab) = Lab::up() else { return };
    type Change = Box<dyn FnOnce(&Path)>;
    let cases: [(&str, Change); 3] = [
        (
            "SHA-256",
            Box::new(|dir: &Path| {
                let path = dir.join("attack.onnx");
                let mut bytes = std::fs::read(&path).expect("read model");
                let last = bytes.len() - 1;
                bytes[last] ^= 0x01;
                std::fs::write(&path, bytes).expect("write model");
            }),
        ),
        (
            "signature",
            Box::new(|dir: &Path| {
                let path = dir.join("attack.json.sig");
                let text = std::fs::read_to_string(&path).expect("read signature");
                let flipped: String = text.trim().chars().rev().collect();
                std::fs::write(&path, flipped).expect("write signature");
            }),
        ),
        ("does not exist", Box::new(|dir: &Path| std::fs::remove_file(dir.join("attack.json.sig")).expect("remove signature"))),
    ];
    for (cause, change) in cases {
        let models = models_copy(change);
        let extra = format!("[detect]\nmodels-dir = \"{}\"\n\n[tasks.detect]\nhold-after-restarts = 2\nbackoff-initial-ms = 50\n", models.path().display());
        let supervisor = Supervisor::start(&lab, &extra);
        let held = eventually(Duration::from_secs(20), || supervisor.task("detect")["state"] == "held");
        assert!(held, "{cause}: the detect task is not held: {}\n{}", supervisor.status(), supervisor.log());
        let log = supervisor.log();
        assert!(log.contains("failed to load the detection models") && log.contains(cause), "{cause}: the error does not name the cause:\n{log}");
        drop(supervisor);
    }

    // A model whose metadata lists one feature fewer than the ONNX graph takes, signed
    // properly (with a key made here and configured as the trusted one).
    let keys = tempfile::tempdir().expect("temp dir");
    let (private, public) = (keys.path().join("model.key"), keys.path().join("model.pub"));
    let made = run(mldefender().args(["model", "keygen"]).arg(&private).arg(&public));
    assert!(made.status.success(), "{}", stderr(&made));
    let public_key = stdout(&made).trim().to_string();
    let models = models_copy(|dir: &Path| {
        let path = dir.join("attack.json");
        let mut metadata: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read metadata")).expect("metadata JSON");
        metadata["features"].as_array_mut().expect("features").pop();
        std::fs::write(&path, serde_json::to_string_pretty(&metadata).expect("encode")).expect("write metadata");
    });
    let signed =
        run(mldefender().args(["model", "sign", "--key"]).arg(&private).arg(models.path().join("attack.json")).arg(models.path().join("category.json")));
    assert!(signed.status.success(), "{}", stderr(&signed));
    let extra = format!(
        "[detect]\nmodels-dir = \"{}\"\nmodel-public-key = \"{public_key}\"\n\n[tasks.detect]\nhold-after-restarts = 2\nbackoff-initial-ms = 50\n",
        models.path().display()
    );
    let supervisor = Supervisor::start(&lab, &extra);
    let held = eventually(Duration::from_secs(20), || supervisor.task("detect")["state"] == "held");
    assert!(held, "feature count: the detect task is not held: {}\n{}", supervisor.status(), supervisor.log());
    let log = supervisor.log();
    assert!(
        log.contains("feature count mismatch") && log.contains("takes 92 features") && log.contains("lists 91"),
        "the error does not name both counts:\n{log}"
    );
}

#[test]
fn a_block_lapses_after_its_ttl_and_the_expiry_is_logged() {
    let Some(lab) = Lab::up() else { return };
    let mut supervisor = Supervisor::start(&lab, "[response]\nttl-scan-secs = 2\nttl-flood-secs = 2\n");
    supervisor.wait_ready(Duration::from_secs(30));
    let scan =
        run(Command::new("bash").arg(repo().join("tests/lab/scenario.sh")).args([lab.id.as_str(), "nmap-syn", "3"]).env("MLD_SCENARIO_ALLOW_BLOCKED", "1"));
    assert!(scan.status.success(), "{}", stderr(&scan));
    let blocked = eventually(Duration::from_secs(10), || supervisor.status()["pipeline"]["blocks"].as_u64().unwrap_or(0) >= 1);
    assert!(blocked, "the scan was not blocked: {}", supervisor.status());
    let lapsed = eventually(Duration::from_secs(15), || stdout(&lab.mldefender(&["block", "list"])).lines().skip(1).all(|line| line.trim().is_empty()));
    assert!(lapsed, "the deny entry is still there after its TTL:\n{}", stdout(&lab.mldefender(&["block", "list"])));
    let logged = eventually(Duration::from_secs(10), || lab.events().iter().any(|event| event["action"] == "expire" && event["src_ip"] == "10.66.2.2"));
    let events = lab.events();
    let block = events.iter().position(|event| event["action"] == "block").expect("a block event");
    assert_eq!(events[block]["block_ttl_secs"], 2);
    assert!(logged, "no expire event: {:?}", events.iter().filter(|event| event["action"] != "observe").collect::<Vec<_>>());
    let expire = events.iter().position(|event| event["action"] == "expire").expect("expire");
    assert!(expire > block, "the expiry comes after the block");
    drop(supervisor);
}
