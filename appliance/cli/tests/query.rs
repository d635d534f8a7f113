//! The similarity index in the running appliance (lab, root): events are searchable moments
//! after the log task writes them; a query for an attack event returns that attack's other
//! events ahead of benign ones; killing the ingest task mid-stream and deleting the index
//! both end in the same index a fresh build makes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::lab::{eventually, Lab};
use common::supervisor::Supervisor;
use common::{mldefender, repo, run, stderr, stdout};
use serde_json::Value;

const ATTACKER: &str = "10.66.2.2";
const CLIENT: &str = "10.66.1.2";
/// Dry run (every decision is logged, nothing is blocked, so each scenario runs to its
/// end), and an index saved every second.
const EXTRA: &str =
    "[response]\nmode = \"dry-run\"\n\n[ingest]\nsave-interval-secs = 1\n\n[detect]\nnearest-past-events = 5\nnearest-past-events-budget-ms = 200\n";

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_micros() as i64
}

/// Runs a lab scenario for `seconds`; returns its time window (µs since the epoch).
fn scenario(lab: &Lab, name: &str, seconds: u32) -> (i64, i64) {
    let start = now_us();
    let output = run(Command::new("bash").arg(repo().join("tests/lab/scenario.sh")).args([&lab.id, name, &seconds.to_string()]));
    assert!(output.status.success(), "scenario {name} failed: {}", stderr(&output));
    (start, now_us())
}

/// Runs an attack scenario against an appliance that blocks: the tool must run and send,
/// but the server may stop answering once the attacker is blocked (nmap then finds no
/// open port it had not reached yet).
fn blocked_scenario(lab: &Lab, name: &str, seconds: u32) {
    let output =
        run(Command::new("bash").arg(repo().join("tests/lab/scenario.sh")).args([&lab.id, name, &seconds.to_string()]).env("MLD_SCENARIO_ALLOW_BLOCKED", "1"));
    assert!(output.status.success(), "scenario {name} failed: {}", stderr(&output));
}

fn query(supervisor: &Supervisor, args: &[&str]) -> Result<Value, String> {
    let socket = format!("{}/query.sock", supervisor.runtime_dir);
    let output = run(mldefender().arg("query").args(args).args(["--socket", &socket]));
    if !output.status.success() {
        return Err(stderr(&output));
    }
    serde_json::from_str(stdout(&output).trim()).map_err(|error| format!("not JSON: {error}"))
}

fn log_dir(lab: &Lab) -> PathBuf {
    PathBuf::from(format!("/run/mldefender-lab-{}/log", lab.id))
}

fn index_dir(lab: &Lab) -> PathBuf {
    PathBuf::from(format!("/run/mldefender-lab-{}/ingest/index", lab.id))
}

/// The event records in the log files, in order.
fn logged_events(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).expect("log dir").flatten().map(|entry| entry.path()).collect();
    files.retain(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("events-")));
    files.sort();
    files
        .iter()
        .flat_map(|file| std::fs::read_to_string(file).expect("read log").lines().map(str::to_string).collect::<Vec<_>>())
        .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
        .filter(|record| record["type"] == "event")
        .collect()
}

/// Waits until the index holds every event in the log; returns how many.
fn wait_indexed(lab: &Lab, supervisor: &Supervisor, timeout: Duration) -> u64 {
    let mut last = (0, 0);
    let caught_up = eventually(timeout, || {
        let logged = logged_events(&log_dir(lab)).len() as u64;
        let indexed = query(supervisor, &["ip", ATTACKER, "--limit", "1"]).map_or(0, |answer| answer["indexed"].as_u64().unwrap_or(0));
        last = (logged, indexed);
        logged > 0 && indexed == logged
    });
    assert!(caught_up, "the index did not catch up with the log (logged, indexed) = {last:?}:\n{}", supervisor.log());
    last.1
}

#[test]
fn lab_events_are_searchable_at_once_and_similar_to_their_own_scenario() {
    let Some(lab) = Lab::up() else { return };
    let mut supervisor = Supervisor::start(&lab, EXTRA);
    supervisor.wait_ready(Duration::from_secs(30));

    let benign = scenario(&lab, "benign-http-burst", 4);
    std::thread::sleep(Duration::from_secs(2));
    let scan = scenario(&lab, "nmap-syn", 4);
    std::thread::sleep(Duration::from_secs(2));
    let brute = scenario(&lab, "brute-force", 4);

    // Moments after it is written: the newest event in the log answers a query within 3 s.
    let newest = logged_events(&log_dir(&lab)).last().cloned().expect("events in the log");
    let event_id = newest["event_id"].as_str().expect("event_id").to_string();
    let asked = Instant::now();
    let searchable = eventually(Duration::from_secs(3), || query(&supervisor, &["similar", "--event", &event_id, "-k", "1"]).is_ok());
    assert!(searchable, "event {event_id} was not searchable 3 s after it was in the log:\n{}", supervisor.log());
    eprintln!("newest logged event searchable after {:?}", asked.elapsed());
    let indexed = wait_indexed(&lab, &supervisor, Duration::from_secs(20));

    // Usefulness: for attack events of each scenario, the nearest events are that
    // scenario's, and no benign event comes ahead of them.
    let events = logged_events(&log_dir(&lab));
    let label = |hit: &Value| -> &'static str {
        let ts = hit["ts_us"].as_i64().expect("ts_us");
        let within = |(start, end): (i64, i64)| ts >= start - 1_000_000 && ts <= end + 1_000_000;
        match hit["src_ip"].as_str() {
            Some(CLIENT) if within(benign) => "benign",
            Some(ATTACKER) if within(scan) => "scan",
            Some(ATTACKER) if within(brute) => "brute",
            _ => "other",
        }
    };
    let mut report = Vec::new();
    for (name, window) in [("scan", scan), ("brute", brute)] {
        let mine: Vec<&Value> = events.iter().filter(|event| event["src_ip"] == ATTACKER && label(event) == name).collect();
        assert!(mine.len() >= 20, "{name}: only {} events", mine.len());
        for event in mine.iter().step_by(mine.len() / 5).take(5) {
            let seq = event["seq"].as_u64().expect("seq").to_string();
            let answer = query(&supervisor, &["similar", "--event", &seq, "-k", "10"]).expect("similar");
            let labels: Vec<&str> = answer["hits"].as_array().expect("hits").iter().map(label).collect();
            let same = labels.iter().filter(|found| **found == name).count();
            let first_benign = labels.iter().position(|found| *found == "benign").unwrap_or(labels.len());
            let last_same = labels.iter().rposition(|found| *found == name).unwrap_or(0);
            assert!(same >= 9 && last_same < first_benign, "{name} event {seq} (window {window:?}): nearest are {labels:?}");
            report.push(format!("{name} seq {seq}: {same}/10 same scenario"));
        }
    }
    eprintln!("{indexed} events indexed; {}", report.join("; "));

    // Decisions carry their nearest past events (asked of the ingest task by the detect
    // task, off its detection path): earlier events, nearest first. The attack's first
    // decision may find only benign events, far away (nothing like it came before); once
    // the attack's own events are indexed, later decisions find those.
    let decisions: Vec<&Value> = events.iter().filter(|event| event["action"] != "observe" && event["src_ip"] == ATTACKER).collect();
    assert!(!decisions.is_empty(), "no decision about the attacker was logged");
    let (mut answered, mut own) = (0, 0);
    for decision in &decisions {
        let nearest = &decision["nearest_past_events"];
        let status = nearest["status"].as_str().unwrap_or_else(|| panic!("a decision without nearest_past_events: {decision}"));
        assert!(["ok", "timeout", "busy", "unavailable"].contains(&status), "{nearest}");
        let neighbours = nearest["events"].as_array().expect("events");
        if status != "ok" || neighbours.is_empty() {
            continue;
        }
        answered += 1;
        assert!(neighbours.len() <= 5);
        let seq = decision["seq"].as_u64().expect("seq");
        assert!(neighbours.iter().all(|neighbour| neighbour["seq"].as_u64().expect("seq") < seq), "not past events: {decision}");
        let distances: Vec<f64> = neighbours.iter().map(|neighbour| neighbour["distance"].as_f64().expect("distance")).collect();
        assert!(distances.windows(2).all(|pair| pair[0] <= pair[1]), "not nearest first: {nearest}");
        if neighbours.iter().all(|neighbour| neighbour["src_ip"] == ATTACKER) {
            own += 1;
        }
    }
    eprintln!("{} decisions about the attacker: {answered} with nearest past events, {own} of them all the attacker's", decisions.len());
    assert!(answered * 2 >= decisions.len() && own >= 1, "{answered} of {} decisions answered, {own} with the attacker's own events", decisions.len());
    assert!(events.iter().filter(|event| event["action"] == "observe").all(|event| event.get("nearest_past_events").is_none()));

    // Filters and the address query.
    let answer = query(&supervisor, &["ip", CLIENT, "--limit", "1000"]).expect("ip");
    assert_eq!(answer["caught_up"], true, "the task has read the log to its end: {answer}");
    let hits = answer["hits"].as_array().expect("hits");
    assert!(!hits.is_empty() && hits.iter().all(|hit| hit["src_ip"] == CLIENT || hit["dst_ip"] == CLIENT));
    let scan_start = chrono_free_rfc3339(scan.0);
    let answer = query(&supervisor, &["ip", ATTACKER, "--limit", "1000", "--from", &scan_start, "--action", "would-block"]).expect("ip filtered");
    let hits = answer["hits"].as_array().expect("hits");
    assert!(!hits.is_empty(), "the dry run logged would-block decisions for the attacker");
    assert!(hits.iter().all(|hit| hit["action"] == "would-block" && hit["ts_us"].as_i64().expect("ts") >= scan.0), "{hits:?}");

    // A flow given as `mldefender flows` would write it embeds like its event: a flow record
    // built from a logged event (its CIC columns and windows) finds that event at distance 0.
    let event = events.iter().find(|event| label(event) == "scan").expect("a scan event");
    let flow = flow_from_event(event);
    let file = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(file.path(), flow.to_string()).expect("write");
    let answer = query(&supervisor, &["similar", "--flow-json", file.path().to_str().expect("path"), "-k", "50"]).expect("similar by flow");
    let hits = answer["hits"].as_array().expect("hits");
    assert_eq!(hits[0]["distance"].as_f64(), Some(0.0), "{hits:?}");
    assert!(hits.iter().any(|hit| hit["event_id"] == event["event_id"]), "the event itself is among the nearest");

    // Nobody else may ask: the socket is root's and the detect task's group's.
    let socket = format!("{}/query.sock", supervisor.runtime_dir);
    let output = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_mldefender"))
        .args(["query", "ip", CLIENT, "--socket", &socket]));
    assert!(!output.status.success() && stderr(&output).contains("Permission denied"), "{}", stderr(&output));
    supervisor.stop();
}

/// `ts` (µs) as RFC 3339 UTC, through the binary's own accepted forms: µs works too, but
/// this checks the date form end to end.
fn chrono_free_rfc3339(ts_us: i64) -> String {
    let output = run(Command::new("date").args(["-u", "-d", &format!("@{}", ts_us / 1_000_000), "+%Y-%m-%dT%H:%M:%SZ"]));
    assert!(output.status.success());
    stdout(&output).trim().to_string()
}

/// The CIC columns and windows of an event under the names `mldefender flows` uses.
fn flow_from_event(event: &Value) -> Value {
    let flows = common::flows_jsonl(&[repo().join("tests/pcap/lab-attacks.pcap")], &[]);
    let columns: Vec<String> = flows[0].keys().cloned().collect();
    let schema = run(mldefender().args(["log", "schema"]));
    let properties = serde_json::from_str::<Value>(&stdout(&schema)).expect("schema")["$defs"]["event"]["properties"].as_object().expect("properties").clone();
    let mut flow = serde_json::Map::new();
    for column in columns {
        // The event's name for a CIC column is `cic_` + its lowercase words; windows keep theirs.
        let event_name = properties
            .iter()
            .find(|(_, property)| property["description"].as_str().is_some_and(|text| text.contains(&format!("\"{column}\""))))
            .map(|(name, _)| name.clone())
            .unwrap_or_else(|| column.clone());
        if let Some(value) = event.get(&event_name) {
            flow.insert(column, value.clone());
        }
    }
    assert!(flow.len() > 80, "{} columns mapped", flow.len());
    Value::Object(flow)
}

#[test]
fn a_killed_ingest_task_and_a_deleted_index_both_end_in_the_index_a_fresh_build_makes() {
    let Some(lab) = Lab::up() else { return };
    let mut supervisor = Supervisor::start(&lab, EXTRA);
    supervisor.wait_ready(Duration::from_secs(30));
    let before = supervisor.task("ingest");
    // Kill the ingest task while events stream in.
    let traffic = std::thread::scope(|scope| {
        let busy = scope.spawn(|| scenario(&lab, "benign-http-burst", 6));
        assert!(
            eventually(Duration::from_secs(10), || supervisor.status()["pipeline"]["events_indexed"].as_u64().unwrap_or(0) > 20),
            "nothing indexed:\n{}",
            supervisor.log()
        );
        let pid = before["pid"].as_i64().expect("pid") as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("SIGKILL the ingest task");
        busy.join().expect("traffic")
    });
    assert!(traffic.1 > traffic.0);
    let restarted = eventually(Duration::from_secs(20), || {
        let task = supervisor.task("ingest");
        task["pid"] != before["pid"] && task["state"] == "ready"
    });
    assert!(restarted, "the ingest task was not restarted: {}", supervisor.status());
    let indexed = wait_indexed(&lab, &supervisor, Duration::from_secs(30));
    let (_, log) = supervisor.stop_with_log();
    // Built once, at the first start; the kill did not force a rebuild.
    assert_eq!(log.matches("building the similarity index").count(), 1, "{log}");
    let killed_fields = std::fs::read(index_dir(&lab).join("fields.log")).expect("fields.log");
    let events = logged_events(&log_dir(&lab));
    let sample: Vec<u64> = events.iter().step_by((events.len() / 5).max(1)).take(5).map(|event| event["seq"].as_u64().expect("seq")).collect();
    let until_us = events.last().and_then(|event| event["ts_us"].as_i64()).expect("ts_us") + 1;
    let killed_answers = offline_answers(&lab, &sample, until_us);

    // Delete the index: the next start rebuilds it from the verified log.
    std::fs::remove_dir_all(index_dir(&lab)).expect("delete the index");
    let mut supervisor = Supervisor::start(&lab, EXTRA);
    supervisor.wait_ready(Duration::from_secs(30));
    let rebuilt = wait_indexed(&lab, &supervisor, Duration::from_secs(30));
    let (_, log) = supervisor.stop_with_log();
    assert!(log.contains("building the similarity index from the verified log"), "{log}");
    assert!(rebuilt >= indexed);
    let fresh_fields = std::fs::read(index_dir(&lab).join("fields.log")).expect("fields.log");
    // The side store holds each event's id, vector (bit for bit) and fields, in seq order:
    // the killed-and-resumed index is a prefix of (or equal to) the fresh build.
    assert!(fresh_fields.starts_with(&killed_fields), "{} vs {} bytes differ", killed_fields.len(), fresh_fields.len());
    assert_eq!(offline_answers(&lab, &sample, until_us), killed_answers, "queries answer the same");
}

/// `query similar` offline (--index) for the events `seqs`, among events before `until_us`
/// (the second run may log more): the hits' seqs and distances.
fn offline_answers(lab: &Lab, seqs: &[u64], until_us: i64) -> Vec<Vec<(u64, String)>> {
    let index = index_dir(lab);
    seqs.iter()
        .map(|seq| {
            let output =
                run(mldefender().args(["query", "similar", "--event", &seq.to_string(), "-k", "10", "--to", &until_us.to_string(), "--index"]).arg(&index));
            assert!(output.status.success(), "offline query: {}", stderr(&output));
            let answer: Value = serde_json::from_str(stdout(&output).trim()).expect("JSON");
            let hits: Vec<(u64, String)> =
                answer["hits"].as_array().expect("hits").iter().map(|hit| (hit["seq"].as_u64().expect("seq"), hit["distance"].to_string())).collect();
            assert_eq!(hits.len(), 10);
            hits
        })
        .collect()
}

/// Without its embedder the ingest task still verifies the log; queries say why there is
/// no index, naming the missing model file.
#[test]
fn without_its_embedder_the_ingest_task_verifies_and_queries_say_why_there_is_no_index() {
    let Some(lab) = Lab::up() else { return };
    let mut supervisor = Supervisor::start(&lab, "[response]\nmode = \"dry-run\"\n\n[ingest]\nembedder = \"no-such-model\"\n");
    supervisor.wait_ready(Duration::from_secs(30));
    for _ in 0..5 {
        assert!(lab.exec("c", &["curl", "-sf", "-o", "/dev/null", "http://10.66.9.2:8080/index.html"]).status.success());
    }
    let verified = eventually(Duration::from_secs(15), || supervisor.status()["pipeline"]["events_verified"].as_u64().unwrap_or(0) >= 5);
    assert!(verified, "the log is not verified without the index: {}", supervisor.status());
    let error = query(&supervisor, &["ip", CLIENT]).expect_err("no index to ask");
    assert!(error.contains("similarity index is unavailable") && error.contains("no-such-model"), "{error}");
    assert_eq!(supervisor.task("ingest")["restarts"], 0, "the task did not crash");
    let (_, log) = supervisor.stop_with_log();
    assert!(log.contains("the similarity index is unavailable"), "{log}");
}

/// Issue 19's "done when": on the lab appliance, a question in words finds the scanner's
/// block first, online (the ingest task's socket) and offline (the text index directory),
/// and the words of the question filter by time and address.
#[test]
fn who_scanned_the_server_returns_the_scanner_block_first() {
    let Some(lab) = Lab::up() else { return };
    let mut supervisor = Supervisor::start(&lab, "[ingest]\nsave-interval-secs = 1\n");
    supervisor.wait_ready(Duration::from_secs(30));
    scenario(&lab, "benign-http-burst", 3);
    blocked_scenario(&lab, "nmap-syn", 4);

    let mut last = Value::Null;
    let found = eventually(Duration::from_secs(20), || {
        last = query(&supervisor, &["ask", "who scanned the server", "-k", "5", "--json"]).unwrap_or_else(Value::String);
        last["hits"].as_array().is_some_and(|hits| !hits.is_empty())
    });
    assert!(found, "no answer to the question: {last}\n{}", supervisor.log());
    let first = &last["hits"][0];
    assert_eq!((first["action"].as_str(), first["src_ip"].as_str(), first["category"].as_str()), (Some("block"), Some(ATTACKER), Some("scan")), "{last:#}");
    let description = first["description"].as_str().expect("description");
    assert!(description.starts_with(&format!("blocked {ATTACKER}, which scanned 10.66.9.2")), "{description}");
    let summary = &last["summary"];
    assert_eq!(summary["events"].as_u64(), last["hits"].as_array().map(|hits| hits.len() as u64), "{last:#}");
    assert!(summary["sources"].as_array().expect("sources").iter().any(|source| source[0] == ATTACKER), "{last:#}");
    assert!(summary["actions"]["block"].as_u64() >= Some(1), "{last:#}");
    // The status counts what went into the text index (the metric reads the same counter).
    let described =
        eventually(Duration::from_secs(10), || supervisor.status()["pipeline"]["events_text_indexed"].as_u64() >= summary["actions"]["block"].as_u64());
    assert!(described, "the status does not count the described decisions: {}", supervisor.status()["pipeline"]);

    // What an analyst reads on a terminal.
    let socket = format!("{}/query.sock", supervisor.runtime_dir);
    let output = run(mldefender().args(["query", "ask", "who scanned the server", "-k", "3", "--socket", &socket]));
    let text = stdout(&output);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(text.contains(&format!("blocked {ATTACKER}, which scanned")) && text.contains("summary: "), "{text}");

    // Words in the question: the client's own events only, and a time range said back.
    let client = query(&supervisor, &["ask", &format!("what did {CLIENT} do in the last hour"), "--json"]).expect("ask about the client");
    assert_eq!(client["address_filter"], format!("events of {CLIENT}"));
    assert_eq!(client["time_filter"], "the last hour");
    assert!(client["hits"].as_array().expect("hits").iter().all(|hit| hit["src_ip"] == CLIENT || hit["dst_ip"] == CLIENT), "{client:#}");

    // Offline, from the saved text index, read-only beside the running task.
    let text_index = PathBuf::from(format!("/run/mldefender-lab-{}/ingest/text-index", lab.id));
    let saved = eventually(Duration::from_secs(10), || text_index.join("manifest.json").exists());
    assert!(saved, "the text index was not saved in {}", text_index.display());
    let output = run(mldefender()
        .args(["query", "ask", "who scanned the server", "--json", "--index"])
        .arg(&text_index)
        .args(["--config"])
        .arg(&supervisor.config_path));
    assert!(output.status.success(), "{}", stderr(&output));
    let offline: Value = serde_json::from_str(stdout(&output).trim()).expect("JSON");
    assert_eq!(offline["hits"][0]["src_ip"], ATTACKER, "{offline:#}");
    assert_eq!(offline["hits"][0]["action"], "block");

    // The flow index is not a text index: said so, not answered wrongly.
    let output =
        run(mldefender().args(["query", "ask", "who scanned the server", "--index"]).arg(index_dir(&lab)).args(["--config"]).arg(&supervisor.config_path));
    assert!(!output.status.success() && stderr(&output).contains("is not a text index"), "{}", stderr(&output));
    supervisor.stop();
}
