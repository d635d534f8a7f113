//! The operator's interfaces on a running appliance in the lab (issue 18): while nmap
//! scans the server, an operator watches the attacker get blocked through each of them:
//! `mldefender top` in a terminal (driven through tmux), the Prometheus metrics (parsed by
//! Prometheus's own parser), the status page (loaded in headless Chromium), and the live
//! EVE feed (`log export --follow`). Then the block is released from `top`'s keyboard.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::lab::{eventually, Lab};
use common::supervisor::Supervisor;
use common::*;
use serde_json::Value;

const ATTACKER: &str = "10.66.2.2";

/// A tmux server of its own, with one window running `command`; killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(socket: &str, command: &str) -> Tmux {
        let tmux = Tmux { socket: socket.to_string() };
        // The window stays after the command exits, so that a failure can be read.
        let shell = format!("{command}; echo \"top exited: $?\"; sleep 600");
        let output = run(Command::new("tmux").args(["-L", socket, "-f", "/dev/null", "new-session", "-d", "-s", "top", "-x", "160", "-y", "60", &shell]));
        assert!(output.status.success(), "tmux: {}", stderr(&output));
        tmux
    }

    fn capture(&self) -> String {
        stdout(&run(Command::new("tmux").args(["-L", &self.socket, "capture-pane", "-p", "-t", "top"])))
    }

    fn keys(&self, keys: &str) {
        assert!(run(Command::new("tmux").args(["-L", &self.socket, "send-keys", "-t", "top", keys])).status.success());
    }

    /// Waits until the pane shows what `shows` looks for; the pane either way.
    fn wait(&self, timeout: Duration, shows: impl Fn(&str) -> bool) -> (bool, String) {
        let seen = eventually(timeout, || shows(&self.capture()));
        (seen, self.capture())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).output();
    }
}

/// A child whose stdout lines are collected; killed on drop.
struct Collected {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Collected {
    fn start(command: &mut Command) -> Collected {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().expect("lock").push(line);
            }
        });
        Collected { child, lines }
    }
}

impl Drop for Collected {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the sample `name` with every label of `labels`.
fn sample(scrape: &Value, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape["samples"].as_array()?.iter().find_map(|sample| {
        let matches = sample[0] == name && labels.iter().all(|(label, value)| sample[1][label] == *value);
        matches.then(|| sample[2].as_f64()).flatten()
    })
}

/// Headless Chromium in the client's namespace (the management network's side).
fn chromium(lab: &Lab, profile: &Path, args: &[&str]) -> Output {
    let profile = format!("--user-data-dir={}", profile.display());
    let mut all = vec!["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars", profile.as_str()];
    all.extend_from_slice(args);
    lab.exec("c", &all)
}

#[test]
fn an_operator_sees_a_scan_blocked_in_top_the_metrics_the_status_page_and_the_eve_feed() {
    let Some(lab) = Lab::up() else { return };
    let mut supervisor = Supervisor::start(
        &lab,
        "[metrics]\nenabled = true\nlisten = [\"10.66.1.1:9464\"]\n# The client is the operator's desk; the attacker is not.\nallow-from = [\"10.66.1.2\"]\n",
    );
    supervisor.wait_ready(Duration::from_secs(30));
    let config = supervisor.config_path.display().to_string();
    let binary = env!("CARGO_BIN_EXE_mldefender");
    let top = Tmux::start(&format!("mld-top-{}", lab.id), &format!("{binary} top --config {config}"));
    let (drawn, pane) = top.wait(Duration::from_secs(15), |pane| pane.contains("BLOCKS IN FORCE (0)") && pane.contains("capture"));
    assert!(drawn, "top did not draw the running appliance:\n{pane}");
    let eve = Collected::start(Command::new(binary).args(["log", "export", "--format", "eve", "--follow", "--decisions-only", "--config", &config]));

    // Only the management network is answered: the client gets the page; the attacker's
    // connection is closed unanswered (before it is blocked: after, XDP drops it anyway).
    let page = lab.exec("c", &["curl", "-sS", "-m", "5", "http://10.66.1.1:9464/"]);
    assert!(page.status.success() && stdout(&page).contains("<title>ml-defender status</title>"), "{}", stderr(&page));
    let refused = lab.exec("a", &["curl", "-sS", "-m", "5", "http://10.66.1.1:9464/metrics"]);
    // 52: the connection was accepted and closed without an answer (56: reset); not a
    // timeout or an unreachable network, which would prove nothing.
    assert!(matches!(refused.status.code(), Some(52 | 56)) && stdout(&refused).is_empty(), "the attacker was answered, or never reached it: {refused:?}");
    let written = lab.exec("c", &["curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "http://10.66.1.1:9464/metrics"]);
    assert_eq!(stdout(&written), "405", "the listener is read-only");

    let scan =
        run(Command::new("bash").arg(repo().join("tests/lab/scenario.sh")).args([lab.id.as_str(), "nmap-syn", "3"]).env("MLD_SCENARIO_ALLOW_BLOCKED", "1"));
    assert!(scan.status.success(), "{}", stderr(&scan));

    // top: the block appears, with its reason and time left, and the decision below.
    let blocked_line = format!("{ATTACKER}/32");
    let (shown, pane) = top.wait(Duration::from_secs(15), |pane| {
        pane.lines().any(|line| line.contains(&blocked_line) && line.contains("scan") && line.contains("left")) && pane.contains("block ")
    });
    assert!(shown, "top does not show the attacker's block:\n{pane}");
    let artifacts = repo().join("target/operator");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    std::fs::write(artifacts.join("top.txt"), &pane).expect("save the pane");

    // Prometheus: the scrape parses, keeps the naming conventions, shows the drops (the
    // tasks' counters reach the supervisor's report within a second or two).
    let scrape_now = || {
        let metrics = lab.exec("c", &["curl", "-sS", "-m", "5", "http://10.66.1.1:9464/metrics"]);
        assert!(metrics.status.success(), "{}", stderr(&metrics));
        (reference_check("prom_check.py", &stdout(&metrics)), stdout(&metrics))
    };
    let mut last = scrape_now();
    eventually(Duration::from_secs(10), || {
        last = scrape_now();
        let scrape = &last.0;
        sample(scrape, "mldefender_decisions_total", &[("action", "block"), ("category", "scan")]) >= Some(1.0)
            && sample(scrape, "mldefender_block_latency_seconds_count", &[]) >= Some(1.0)
    });
    let (scrape, metrics) = last;
    assert_eq!(scrape["problems"], serde_json::json!([]), "{metrics}");
    let dropped = sample(&scrape, "mldefender_xdp_dropped_packets_total", &[("reason", "scan")]);
    assert!(dropped.is_some_and(|dropped| dropped > 0.0), "no scan drops in the scrape:\n{metrics}");
    assert!(sample(&scrape, "mldefender_decisions_total", &[("action", "block"), ("category", "scan")]) >= Some(1.0), "{metrics}");
    assert_eq!(sample(&scrape, "mldefender_deny_entries", &[("reason", "scan")]), Some(1.0));
    assert_eq!(sample(&scrape, "mldefender_task_state", &[("task", "detect"), ("state", "ready")]), Some(1.0));
    assert!(sample(&scrape, "mldefender_block_latency_seconds_count", &[]) >= Some(1.0), "{metrics}");
    assert_eq!(scrape["families"]["mldefender_block_latency_seconds"], "histogram");
    // The Grafana dashboard in docs/ asks only for what the appliance exports.
    let exported: std::collections::BTreeSet<String> =
        scrape["samples"].as_array().expect("samples").iter().filter_map(|sample| sample[0].as_str().map(str::to_string)).collect();
    let dashboard = std::fs::read_to_string(repo().join("docs/grafana/mldefender-dashboard.json")).expect("the dashboard");
    let asked: std::collections::BTreeSet<&str> =
        dashboard.split("mldefender_").skip(1).map(|rest| rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap_or("")).collect();
    let missing: Vec<&&str> = asked.iter().filter(|name| !name.is_empty() && !exported.contains(&format!("mldefender_{name}"))).collect();
    assert!(missing.is_empty(), "the dashboard asks for metrics the appliance does not export: {missing:?}");

    // The status page in a real browser: the blocked attacker, and the drops graphed.
    let profile = tempfile::tempdir().expect("browser profile");
    let dom = chromium(&lab, profile.path(), &["--virtual-time-budget=8000", "--dump-dom", "http://10.66.1.1:9464/"]);
    let dom = stdout(&dom);
    assert!(dom.contains("data-loaded=\"1\""), "the page did not load its data:\n{dom}");
    let blocks_table = dom.split("id=\"blocks\"").nth(1).and_then(|rest| rest.split("</table>").next()).unwrap_or_default();
    assert!(blocks_table.contains(&blocked_line) && blocks_table.contains("scan"), "the page does not show the block:\n{blocks_table}");
    let graph = dom.split("id=\"graph-dropped\"").nth(1).and_then(|rest| rest.split("</svg>").next()).unwrap_or_default();
    let drawn: Vec<u64> = graph.split("data-value=\"").skip(1).filter_map(|rest| rest.split('"').next().and_then(|value| value.parse().ok())).collect();
    assert!(drawn.iter().any(|value| *value > 0), "the drops graph has no bar:\n{graph}");
    let screenshot = artifacts.join("status-page.png");
    let shot = chromium(
        &lab,
        profile.path(),
        &["--virtual-time-budget=8000", "--window-size=1280,1500", &format!("--screenshot={}", screenshot.display()), "http://10.66.1.1:9464/"],
    );
    let size = std::fs::metadata(&screenshot).map_or(0, |meta| meta.len());
    assert!(size > 20_000, "no screenshot ({size} bytes): {}", stderr(&shot));

    // The SIEM feed: the block arrives as a blocked EVE alert, verified, in chain order.
    let alerted = eventually(Duration::from_secs(15), || {
        eve.lines.lock().expect("lock").iter().any(|line| line.contains(&format!("\"src_ip\":\"{ATTACKER}\"")) && line.contains("\"action\":\"blocked\""))
    });
    let feed = eve.lines.lock().expect("lock").join("\n");
    assert!(alerted, "the live EVE feed has no blocked alert for the attacker:\n{feed}");
    assert_eq!(reference_check("eve_check.py", &(feed + "\n"))["errors"], serde_json::json!([]));

    // Release from top's keyboard: the deny entry goes, and the supervisor is told.
    top.keys("r");
    let (released, pane) = top.wait(Duration::from_secs(10), |pane| pane.contains(&format!("released {blocked_line}")) && pane.contains("BLOCKS IN FORCE (0)"));
    assert!(released, "the block was not released from top:\n{pane}");
    assert!(!stdout(&lab.mldefender(&["block", "list"])).contains(&blocked_line));
    let logged = eventually(Duration::from_secs(10), || lab.events().iter().any(|event| event["action"] == "unblock" && event["src_ip"] == ATTACKER));
    assert!(logged, "the release from top is not on record");
    top.keys("q");
    let (quit, pane) = top.wait(Duration::from_secs(5), |pane| pane.contains("top exited: 0"));
    assert!(quit, "top did not quit on q:\n{pane}");
    drop(supervisor);
}
