//! The signed event log through the binary: replay writes it, verify checks it, the
//! schema describes it, bad keys are refused, Community IDs match the reference.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

fn config(dir: &Path, key: &Path, create: bool) -> PathBuf {
    let path = dir.join("mldefender.toml");
    let text = format!(
        "[log]\ndir = \"{}\"\nnode = \"replay-node\"\nkey-file = \"{}\"\ncreate-key = {create}\nmax-file-bytes = 65536\nrotate-daily = false\n{}",
        dir.join("log").display(),
        key.display(),
        detect_section()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn replay(config: &Path) -> std::process::Output {
    run(mldefender().args(["replay", "--config"]).arg(config).arg(repo().join("tests/pcap/lab-mix.pcap")))
}

fn events(dir: &Path) -> Vec<serde_json::Map<String, Value>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).expect("log dir").map(|entry| entry.expect("entry").path()).collect();
    files.sort();
    let mut events = Vec::new();
    for file in files {
        for line in std::fs::read_to_string(&file).expect("read").lines() {
            if let Ok(Value::Object(record)) = serde_json::from_str(line) {
                if record["type"] == "event" {
                    events.push(record);
                }
            }
        }
    }
    events
}

fn records_of_type(dir: &Path, kind: &str) -> Vec<serde_json::Map<String, Value>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).expect("log dir").map(|entry| entry.expect("entry").path()).collect();
    files.sort();
    let mut records = Vec::new();
    for file in files {
        for line in std::fs::read_to_string(&file).expect("read").lines() {
            if let Ok(Value::Object(record)) = serde_json::from_str(line) {
                if record["type"] == kind {
                    records.push(record);
                }
            }
        }
    }
    records
}

#[test]
fn replay_writes_a_log_that_verifies_and_tampering_is_caught() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("keys/log.key");
    let output = replay(&config(dir.path(), &key, true));
    assert!(output.status.success(), "{}", stderr(&output));
    // 222 flows observed, plus the decisions (the capture's nmap scan is blocked).
    assert!(stderr(&output).contains("(1 blocks,"), "{}", stderr(&output));
    assert_eq!(std::fs::metadata(&key).expect("key created").permissions().mode() & 0o777, 0o600);

    let log = dir.path().join("log");
    let verified = run(mldefender().args(["log", "verify"]).arg(&log).arg("--key").arg(&key));
    assert!(verified.status.success(), "{}", stdout(&verified));
    assert!(stdout(&verified).starts_with("ok: node replay-node,"), "{}", stdout(&verified));

    // Tamper with one event: verify names the file, the line and the reason.
    let file = std::fs::read_dir(&log).expect("list").map(|entry| entry.expect("entry").path()).min().expect("a file");
    let text = std::fs::read_to_string(&file).expect("read");
    let line = text.lines().position(|line| line.contains("\"action\":\"observe\"")).expect("an observation") + 1;
    std::fs::write(&file, text.replacen("\"action\":\"observe\"", "\"action\":\"ignore!\"", 1)).expect("tamper");
    let tampered = run(mldefender().args(["log", "verify"]).arg(&log).arg("--key").arg(&key));
    assert_eq!(tampered.status.code(), Some(1));
    assert!(stdout(&tampered).contains(&format!("FAILED: {}:{line}: HMAC mismatch", file.display())), "{}", stdout(&tampered));

    // The public key alone (no secret) catches the same change: its signed checkpoint
    // no longer matches the bytes it covers. One byte: "observe" → "observf".
    std::fs::write(&file, &text).expect("restore");
    let public_key = run(mldefender().args(["log", "public-key", "--signing-key"]).arg(dir.path().join("keys/log-signing.key")));
    assert!(public_key.status.success(), "{}", stderr(&public_key));
    let public_key_file = dir.path().join("log-signing.pub");
    std::fs::write(&public_key_file, stdout(&public_key)).expect("write the public key");
    let by_checkpoints = run(mldefender().args(["log", "verify"]).arg(&log).arg("--public-key").arg(&public_key_file));
    assert!(by_checkpoints.status.success(), "{}", stdout(&by_checkpoints));
    assert!(
        stdout(&by_checkpoints).starts_with("ok: node replay-node,") && stdout(&by_checkpoints).contains("signed checkpoints"),
        "{}",
        stdout(&by_checkpoints)
    );
    std::fs::write(&file, text.replacen("\"action\":\"observe\"", "\"action\":\"observf\"", 1)).expect("tamper one byte");
    let tampered = run(mldefender().args(["log", "verify"]).arg(&log).arg("--public-key").arg(&public_key_file));
    assert_eq!(tampered.status.code(), Some(1), "{}", stdout(&tampered));
    // Named at the signed checkpoint whose digest the change broke (the first after it).
    let checkpoint_line =
        text.lines().enumerate().skip(line).find(|(_, record)| record.contains("\"type\":\"checkpoint\"")).expect("a checkpoint after it").0 + 1;
    assert!(
        stdout(&tampered).contains(&format!("FAILED: {}:{checkpoint_line}: the covered lines do not match the signed checkpoint", file.display())),
        "{}",
        stdout(&tampered)
    );
}

#[test]
fn replay_is_byte_identical_for_the_same_input_and_key() {
    // The same configuration text (it is hashed into every record) and key, twice.
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("log.key");
    let config = config(dir.path(), &key, true);
    assert!(replay(&config).status.success());
    std::fs::rename(dir.path().join("log"), dir.path().join("first")).expect("move the first log away");
    assert!(replay(&config).status.success());
    let read_all = |log: &Path| {
        let mut files: Vec<PathBuf> = std::fs::read_dir(log).expect("list").map(|entry| entry.expect("entry").path()).collect();
        files.sort();
        files.iter().map(|file| std::fs::read(file).expect("read")).collect::<Vec<_>>()
    };
    let (a, b) = (read_all(&dir.path().join("first")), read_all(&dir.path().join("log")));
    assert!(!a.is_empty());
    assert_eq!(a.len(), b.len(), "same number of files");
    for (index, (left, right)) in a.iter().zip(&b).enumerate() {
        assert!(left == right, "file {index} differs between two replays of the same input");
    }
}

#[test]
fn every_event_validates_against_the_documented_schema() {
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(repo().join("docs/event-schema.json")).expect("docs/event-schema.json")).expect("JSON");
    let generated = run(mldefender().args(["log", "schema"]));
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&generated)).expect("schema JSON"),
        schema,
        "docs/event-schema.json is stale: regenerate with `mldefender log schema`"
    );
    // Events are $defs/event; the other record type the schema accepts is the signed
    // checkpoint (ADR 0007), checked below against the real ones replay writes.
    let event_schema = &schema["$defs"]["event"];
    let properties = event_schema["properties"].as_object().expect("properties");
    assert!(properties.len() >= 83, "{} fields", properties.len());
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("log.key");
    assert!(replay(&config(dir.path(), &key, true)).status.success());
    let events = events(&dir.path().join("log"));
    assert_eq!(events.iter().filter(|event| event["action"] == "observe").count(), 222, "every flow is observed once");
    let blocks: Vec<_> = events.iter().filter(|event| event["action"] == "block").collect();
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!(
        (blocks[0]["src_ip"].as_str(), blocks[0]["category"].as_str(), blocks[0]["block_ttl_secs"].as_u64()),
        (Some("10.77.0.1"), Some("scan"), Some(3600))
    );
    let provenance = blocks[0]["provenance"].as_str().unwrap_or_default();
    assert!(provenance.contains("distinct destination ports") && provenance.contains("policy tiered"), "the block explains itself: {provenance}");
    assert!(blocks[0]["model_sha256"].as_str().is_some_and(|sha| sha.len() == 64), "the model in force is named");
    let checkpoint_schema = &schema["$defs"]["checkpoint"];
    let mut checkpoint_required: Vec<&str> = checkpoint_schema["required"].as_array().expect("required").iter().filter_map(Value::as_str).collect();
    checkpoint_required.sort_unstable();
    let checkpoints = records_of_type(&dir.path().join("log"), "checkpoint");
    assert!(!checkpoints.is_empty(), "replay writes signed checkpoints");
    for checkpoint in &checkpoints {
        let mut keys: Vec<&str> = checkpoint.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, checkpoint_required, "a checkpoint has exactly the schema's fields");
        for (name, value) in checkpoint {
            let property = &checkpoint_schema["properties"][name];
            match property["type"].as_str() {
                Some("integer") => assert!(value.is_u64(), "{name}"),
                Some("string") => {
                    let pattern = property["pattern"].as_str().unwrap_or("");
                    let text = value.as_str().expect("a string");
                    if let Some(digits) = pattern.strip_prefix("^[0-9a-f]{").and_then(|rest| rest.strip_suffix("}$")) {
                        assert!(
                            text.len() == digits.parse::<usize>().expect("count") && text.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                            "{name}: {text}"
                        );
                    }
                }
                _ => assert_eq!(property["const"], *value, "{name}"),
            }
        }
    }
    let mut required: Vec<&str> = event_schema["required"].as_array().expect("required").iter().filter_map(Value::as_str).collect();
    required.sort_unstable();
    assert!(required.len() >= 83, "{} required fields", required.len());
    for event in &events {
        let mut keys: Vec<&str> = event.keys().map(String::as_str).collect();
        keys.sort_unstable();
        // Replay writes every required field and nothing else (the delivery fields are
        // the log task's).
        assert_eq!(keys, required, "fields of {}", event["event_id"]);
        for (name, value) in event {
            let allowed: Vec<&str> = match &properties[name]["type"] {
                Value::String(kind) => vec![kind.as_str()],
                Value::Array(kinds) => kinds.iter().filter_map(Value::as_str).collect(),
                other => panic!("bad type {other}"),
            };
            let kind = match value {
                Value::Null => "null",
                Value::Bool(_) => "boolean",
                Value::String(_) => "string",
                Value::Number(number) if number.is_u64() || number.is_i64() => "integer",
                Value::Number(_) => "number",
                _ => "object",
            };
            assert!(allowed.contains(&kind) || (kind == "integer" && allowed.contains(&"number")), "{name} is {kind}, schema says {allowed:?}");
        }
    }
}

#[test]
fn bad_key_files_are_refused_with_a_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("log.key");
    std::fs::write(&key, [7u8; 32]).expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let output = replay(&config(dir.path(), &key, false));
    assert_eq!(output.status.code(), Some(64));
    assert!(stderr(&output).contains("mode 0644; group and others must have no access"), "{}", stderr(&output));

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let link = dir.path().join("link.key");
    std::os::unix::fs::symlink(&key, &link).expect("symlink");
    let output = replay(&config(dir.path(), &link, false));
    assert_eq!(output.status.code(), Some(64));
    assert!(stderr(&output).contains("is a symbolic link"), "{}", stderr(&output));

    let missing = dir.path().join("missing.key");
    let output = replay(&config(dir.path(), &missing, false));
    assert_eq!(output.status.code(), Some(64), "a missing key is not created unless configured");
}

#[test]
fn community_ids_match_the_reference_package() {
    let python = std::env::var("MLD_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("log.key");
    assert!(replay(&config(dir.path(), &key, true)).status.success());
    let flows: Vec<_> = events(&dir.path().join("log")).into_iter().filter(|event| event["protocol"] == 6 || event["protocol"] == 17).collect();
    assert!(flows.len() > 200);
    let input: String = flows
        .iter()
        .map(|event| {
            serde_json::json!({"src_ip": event["src_ip"], "src_port": event["src_port"], "dst_ip": event["dst_ip"], "dst_port": event["dst_port"], "protocol": event["protocol"]}).to_string() + "\n"
        })
        .collect();
    let child =
        Command::new(&python).arg(repo().join("tests/reference/community_ids.py")).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => {
            assert!(env_flag("MLD_SKIP_REFERENCE"), "cannot run {python}: {error}");
            return;
        }
    };
    use std::io::Write;
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
    let output = child.wait_with_output().expect("reference");
    if !output.status.success() {
        assert!(env_flag("MLD_SKIP_REFERENCE"), "the communityid reference failed (scripts/setup installs it): {}", stderr(&output));
        return;
    }
    let reference: Vec<String> = stdout(&output).lines().map(str::to_string).collect();
    assert_eq!(reference.len(), flows.len());
    for (event, expected) in flows.iter().zip(&reference) {
        assert_eq!(
            event["community_id"].as_str(),
            Some(expected.as_str()),
            "{} {}:{} -> {}:{}",
            event["protocol"],
            event["src_ip"],
            event["src_port"],
            event["dst_ip"],
            event["dst_port"]
        );
    }
}

/// Decisions of a replay: (action, source, category) of every event that is not an
/// observation, in log order.
fn decisions(dir: &Path) -> Vec<(String, String, String, String)> {
    events(dir)
        .iter()
        .filter(|event| event["action"] != "observe")
        .map(|event| {
            let text = |name: &str| event[name].as_str().unwrap_or_default().to_string();
            (text("action"), text("src_ip"), text("category"), format!("{}/{}", event["score_fast"], event["score_model"]))
        })
        .collect()
}

#[test]
fn replay_of_captured_attacks_makes_the_same_decisions_every_run() {
    let run_once = || {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("log.key");
        let config = config(dir.path(), &key, true);
        let output = run(mldefender().args(["replay", "--config"]).arg(&config).arg(repo().join("tests/pcap/lab-attacks.pcap")));
        assert!(output.status.success(), "{}", stderr(&output));
        decisions(&dir.path().join("log"))
    };
    let first = run_once();
    assert_eq!(first, run_once(), "same capture, same decisions");
    // nmap SYN scan, brute force and slow HTTP from the attacker; a busy benign client.
    let blocked: Vec<&str> = first.iter().filter(|d| d.0 == "block").map(|d| d.1.as_str()).collect();
    assert_eq!(blocked, vec!["10.66.2.2"], "{first:?}");
    assert!(first.iter().all(|d| d.1 != "10.66.1.2" || d.0 == "alert"), "the busy benign client is at most alerted on: {first:?}");
}

fn log_config_text(dir: &Path, key: &Path, extra: &str) -> String {
    format!(
        "[log]\ndir = \"{}\"\nnode = \"replay-node\"\nkey-file = \"{}\"\nmax-file-bytes = 65536\nrotate-daily = false\n{extra}{}",
        dir.join("log").display(),
        key.display(),
        detect_section()
    )
}

#[test]
fn retention_removes_the_oldest_files_on_record_and_what_is_left_verifies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("log.key");
    let config = dir.path().join("mldefender.toml");
    // 1 MiB for 64 KiB files: each replay writes more than half of that.
    std::fs::write(&config, log_config_text(dir.path(), &key, "max-disk-mib = 1\n")).expect("write config");
    let log = dir.path().join("log");
    for _ in 0..3 {
        let output = replay(&config);
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&log).expect("list").map(|entry| entry.expect("entry").path()).filter(|path| path.to_string_lossy().contains("events-")).collect();
    files.sort();
    assert!(!files[0].to_string_lossy().ends_with("-000000.jsonl"), "the oldest files were removed: {files:?}");
    // The rule: the closed files and a full file being written fit in the budget.
    let closed: u64 = files[..files.len() - 1].iter().map(|file| std::fs::metadata(file).expect("stat").len()).sum();
    assert!(closed + 65536 <= 1 << 20, "the closed files use {closed} bytes: no room left for a full file in the 1 MiB budget");

    let retention: Vec<serde_json::Map<String, Value>> = files
        .iter()
        .flat_map(|file| std::fs::read_to_string(file).expect("read").lines().map(|line| serde_json::from_str(line).expect("JSON")).collect::<Vec<_>>())
        .filter_map(|record: Value| record.as_object().filter(|record| record["type"] == "retention").cloned())
        .collect();
    assert!(!retention.is_empty(), "the removals are on record");
    let removed = retention.last().expect("a record")["removed"].as_array().expect("removed").clone();
    assert!(
        removed.iter().all(|entry| entry["bytes"].as_u64().is_some_and(|bytes| bytes > 0) && entry["first_seq"].is_u64() && entry["last_seq"].is_u64()),
        "{removed:?}"
    );

    let verified = run(mldefender().args(["log", "verify"]).arg(&log).arg("--key").arg(&key));
    assert!(verified.status.success(), "{}", stdout(&verified));
    assert!(stdout(&verified).contains("removed by retention, on record"), "{}", stdout(&verified));

    // A file removed by someone else is still caught, at the start and in the middle.
    std::fs::remove_file(&files[1]).expect("remove a file in the middle");
    let tampered = run(mldefender().args(["log", "verify"]).arg(&log).arg("--key").arg(&key));
    assert_eq!(tampered.status.code(), Some(1), "{}", stdout(&tampered));
    assert!(stdout(&tampered).contains("is missing"), "{}", stdout(&tampered));
    std::fs::remove_file(&files[0]).expect("remove the first file left");
    let tampered = run(mldefender().args(["log", "verify"]).arg(&log).arg("--key").arg(&key));
    assert_eq!(tampered.status.code(), Some(1), "{}", stdout(&tampered));
    assert!(stdout(&tampered).contains("is missing"), "{}", stdout(&tampered));
}

#[test]
fn config_check_warns_when_the_node_is_left_as_the_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let default = dir.path().join("default.toml");
    std::fs::write(&default, "").expect("write config");
    let output = run(mldefender().args(["config", "check"]).arg(&default));
    assert_eq!(output.status.code(), Some(0), "a warning is not an error: {}", stderr(&output));
    assert!(stderr(&output).contains("warning: `log.node`: not set") && stderr(&output).contains("unique id"), "{}", stderr(&output));
    let named = dir.path().join("named.toml");
    std::fs::write(&named, "[log]\nnode = \"gw-1\"\n").expect("write config");
    let output = run(mldefender().args(["config", "check"]).arg(&named));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!stderr(&output).contains("warning"), "{}", stderr(&output));
}

/// The log task alone, started as the supervisor starts it (fds 3 control, 4 events
/// listener, 5 key), with this test as its supervisor and its event sender.
struct LogTask {
    child: std::process::Child,
    control: std::os::unix::net::UnixStream,
    events: PathBuf,
}

impl LogTask {
    fn start(dir: &Path, config_toml: &str, key: &Path) -> LogTask {
        use std::os::fd::AsRawFd;
        use std::os::unix::net::{UnixListener, UnixStream};
        use std::os::unix::process::CommandExt;
        let (control, task_control) = UnixStream::pair().expect("socketpair");
        let events = dir.join(format!("events-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&events);
        let listener = UnixListener::bind(&events).expect("bind the events socket");
        let key_file = std::fs::File::open(key).expect("open key");
        // The checkpoint signing key, where the configuration puts it by default.
        let signing_key = key.with_file_name("log-signing.key");
        if !signing_key.exists() {
            mld_eventlog::CheckpointSigningKey::create(&signing_key).expect("create the signing key");
        }
        let signing_key_file = std::fs::File::open(&signing_key).expect("open the signing key");
        let handed = mld_supervisor::layout::LogFds {
            control: task_control.as_raw_fd(),
            events: listener.as_raw_fd(),
            key: key_file.as_raw_fd(),
            signing_key: signing_key_file.as_raw_fd(),
        };
        let sources: Vec<i32> = mld_supervisor::layout::TaskFds::Log(handed).into_list();
        let mut command = Command::new(env!("CARGO_BIN_EXE_mldefender"));
        command.args(["task", "log"]).stdout(Stdio::null()).stderr(Stdio::piped());
        #[allow(unsafe_code)]
        // SAFETY: runs in the forked child before exec; only fcntl and dup2 on integers
        // copied into the closure (async-signal-safe, no allocation).
        unsafe {
            command.pre_exec(move || {
                let mut moved = [0; 4];
                for (index, source) in sources.iter().enumerate() {
                    moved[index] = nix::libc::fcntl(*source, nix::libc::F_DUPFD_CLOEXEC, 64);
                    if moved[index] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (index, high) in moved.iter().enumerate() {
                    if nix::libc::dup2(*high, 3 + index as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start the log task");
        drop((task_control, listener, key_file, signing_key_file));
        let mut control = control;
        control.set_read_timeout(Some(std::time::Duration::from_secs(20))).expect("timeout");
        let uid = nix::unistd::getuid().as_raw();
        let settings = mld_ipc::TaskSettings {
            flows_socket: "/nonexistent/flows.sock".into(),
            events_socket: events.clone(),
            query_socket: "/nonexistent/query.sock".into(),
            fleet_socket: None,
            fleet_base_toml: None,
            fleet_generation: 0,
            config_note: None,
            capture_uid: uid,
            detect_uid: uid,
            log_public_key: None,
            test: Default::default(),
        };
        mld_ipc::write_frame(&mut control, &mld_ipc::SupervisorMessage::Configure { config_toml: config_toml.to_string(), settings }).expect("configure");
        let ready: Option<mld_ipc::TaskMessage> = mld_ipc::read_frame(&mut control).expect("read the task's first message");
        assert_eq!(ready, Some(mld_ipc::TaskMessage::Ready));
        LogTask { child, control, events }
    }

    /// Sends `records` as one stream and waits until the last is acknowledged.
    fn send(&self, stream: u64, records: &[String]) {
        let mut connection = std::os::unix::net::UnixStream::connect(&self.events).expect("connect to the log task");
        connection.set_read_timeout(Some(std::time::Duration::from_secs(20))).expect("timeout");
        mld_ipc::write_frame(&mut connection, &mld_ipc::EventMessage::Hello { stream }).expect("hello");
        for (index, record) in records.iter().enumerate() {
            mld_ipc::write_frame(&mut connection, &mld_ipc::EventMessage::Event { seq: index as u64 + 1, record: record.clone() }).expect("event");
        }
        let last = records.len() as u64;
        loop {
            let ack: Option<mld_ipc::EventAck> = mld_ipc::read_frame(&mut connection).expect("an acknowledgement within the timeout");
            match ack {
                Some(ack) if ack.seq >= last => return,
                Some(_) => continue,
                None => panic!("the log task closed the connection before acknowledging seq {last}"),
            }
        }
    }

    /// Shuts the task down; returns its last counters and its log output.
    fn stop(mut self) -> (mld_ipc::LogCounters, String) {
        mld_ipc::write_frame(&mut self.control, &mld_ipc::SupervisorMessage::Shutdown).expect("shutdown");
        let mut counters = None;
        while let Ok(Some(message)) = mld_ipc::read_frame::<mld_ipc::TaskMessage>(&mut self.control) {
            if let mld_ipc::TaskMessage::Counters { counters: mld_ipc::TaskCounters::Log(last) } = message {
                counters = Some(last);
            }
        }
        let output = self.child.wait_with_output().expect("the task exits");
        assert!(output.status.success(), "the log task failed: {}", stderr(&output));
        (counters.expect("counters at shutdown"), stderr(&output))
    }
}

#[test]
fn the_log_task_refuses_reserved_keys_counts_them_and_keeps_the_log_verifiable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("log.key");
    std::fs::write(&key, [5u8; 32]).expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let config_toml = log_config_text(dir.path(), &key, "");
    let task = LogTask::start(dir.path(), &config_toml, &key);
    let event = |n: u64, extra: &str| format!("{{\"type\":\"event\",\"event_id\":\"ev-{n}\",\"src_ip\":\"10.66.2.2\"{extra}}}");
    let records = vec![
        event(1, ""),
        event(2, ",\"seq\":3"),
        event(3, ""),
        event(4, ",\"hmac\":\"00\""),
        "{\"type\":\"header\",\"schema\":\"mldefender-log/1\",\"node\":\"replay-node\",\"file_index\":0}".to_string(),
        event(6, ",\"delivery_seq\":1"),
        event(7, ""),
        // The checkpoint's fields are the log's own too (ADR 0007).
        event(8, ",\"covered_sha256\":\"00\""),
        "{\"type\":\"checkpoint\",\"covered_first_seq\":1}".to_string(),
    ];
    task.send(0x5eed, &records);
    let (counters, log) = task.stop();
    assert_eq!((counters.events_logged, counters.events_refused), (3, 6), "{counters:?}");
    // (Where journald runs, the task logs there instead of to stderr.)
    if !Path::new("/run/systemd/journal/socket").exists() {
        assert!(log.contains("refused an event body") && log.contains("key=seq") && log.contains("key=hmac"), "warnings name the key:\n{log}");
    }

    let log_dir = dir.path().join("log");
    let verified = run(mldefender().args(["log", "verify"]).arg(&log_dir).arg("--key").arg(&key));
    assert!(verified.status.success(), "{}", stdout(&verified));
    let lines: Vec<Value> = std::fs::read_dir(&log_dir)
        .expect("list")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.to_string_lossy().contains("events-"))
        .flat_map(|file| std::fs::read_to_string(file).expect("read").lines().map(|line| serde_json::from_str(line).expect("JSON")).collect::<Vec<Value>>())
        .collect();
    let kinds: Vec<&str> = lines.iter().filter_map(|record| record["type"].as_str()).collect();
    assert_eq!(kinds.iter().filter(|kind| **kind == "header").count(), 1, "no header from a body: {kinds:?}");
    assert_eq!(kinds.iter().filter(|kind| **kind == "rejected_event").count(), 6, "{kinds:?}");
    let delivered: Vec<u64> = lines.iter().filter_map(|record| record["delivery_seq"].as_u64()).collect();
    assert_eq!(delivered, (1..=9).collect::<Vec<_>>(), "every delivery once, refused ones on record");
    // The only checkpoints are the log's own, and they verify with the public key alone.
    assert!(lines
        .iter()
        .filter(|record| record["type"] == "checkpoint")
        .all(|record| record["covered_sha256"].as_str().is_some_and(|digest| digest.len() == 64)));
    let public_key = dir.path().join("log-signing.pub");
    std::fs::write(
        &public_key,
        mld_eventlog::CheckpointSigningKey::load(&key.with_file_name("log-signing.key")).expect("signing key").public_key().to_base64(),
    )
    .expect("write");
    let by_checkpoints = run(mldefender().args(["log", "verify"]).arg(&log_dir).arg("--public-key").arg(&public_key));
    assert!(by_checkpoints.status.success(), "the log task checkpoints at shutdown: {}", stdout(&by_checkpoints));
    assert!(!lines.iter().any(|record| record["event_id"] == "ev-2"), "a refused body is not written");
}

#[test]
fn block_explain_shows_why_from_an_authenticated_record_and_skips_a_forged_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("log.key");
    let config = config(dir.path(), &key, true);
    let output = run(mldefender().args(["replay", "--config"]).arg(&config).arg(repo().join("tests/pcap/lab-attacks.pcap")));
    assert!(output.status.success(), "{}", stderr(&output));
    let log = dir.path().join("log");
    let block = events(&log).into_iter().find(|event| event["action"] == "block").expect("the lab's attacks hold a block decision");
    let attacker = block["src_ip"].as_str().expect("src_ip").to_string();
    let explain = || run(mldefender().args(["block", "explain", &attacker, "--bpffs-dir", "/nonexistent", "--config"]).arg(&config));
    let output = explain();
    assert_eq!(output.status.code(), Some(0), "{}\n{}", stdout(&output), stderr(&output));
    let text = stdout(&output);
    for expected in [
        "decision: block".to_string(),
        "authenticated with the log key".to_string(),
        format!("category {}", block["category"].as_str().expect("category")),
        format!("seq {}", block["seq"]),
        "why: fast".to_string(),
        "in force: unknown".to_string(),
    ] {
        assert!(text.contains(&expected), "`{expected}` missing from:\n{text}");
    }
    // Forge the decision (a lower score): it no longer authenticates, and is not explained.
    let event_id = format!("\"event_id\":{}", block["event_id"]);
    let file = std::fs::read_dir(&log)
        .expect("log dir")
        .map(|entry| entry.expect("entry").path())
        .find(|path| std::fs::read_to_string(path).expect("read").contains(&event_id))
        .expect("the file with the block");
    let original = std::fs::read_to_string(&file).expect("read");
    let line = original.lines().find(|line| line.contains(&event_id)).expect("the block line");
    let forged = line.replacen("\"score_final\":1.0", "\"score_final\":0.42", 1);
    assert_ne!(forged, line, "the forgery changed nothing: {line}");
    std::fs::write(&file, original.replacen(line, &forged, 1)).expect("write");
    let output = explain();
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(stderr(&output).contains("fails authentication"), "{}", stderr(&output));
    assert!(stdout(&output).contains("no block decision about") && !stdout(&output).contains("0.42"), "{}", stdout(&output));
}

/// The EVE checker (tests/reference/eve_check.py: Suricata's documented field set as a
/// JSON Schema, Community IDs by the `communityid` package) on `eve`: its summary.
fn check_eve(eve: &str) -> Value {
    reference_check("eve_check.py", eve)
}

#[test]
fn the_eve_export_of_a_replayed_capture_validates_and_a_tampered_record_is_left_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("keys/log.key");
    let config = config(dir.path(), &key, true);
    let output = replay(&config);
    assert!(output.status.success(), "{}", stderr(&output));
    let export = || run(mldefender().args(["log", "export", "--format", "eve", "--config"]).arg(&config));

    let exported = export();
    assert!(exported.status.success(), "{}", stderr(&exported));
    let eve = stdout(&exported);
    let summary = check_eve(&eve);
    assert_eq!(summary["errors"], serde_json::json!([]), "{summary}");
    // Every event of the capture, as flows and alerts: the nmap scan's source blocked.
    let logged = events(&dir.path().join("log")).len() as u64;
    assert_eq!(summary["lines"].as_u64(), Some(logged), "{summary}");
    assert!(summary["event_types"]["flow"].as_u64() > Some(200), "{summary}");
    assert_eq!(summary["alert_actions"]["blocked"].as_u64(), Some(1), "{summary}");
    assert!(summary["community_ids_checked"].as_u64() > Some(200), "{summary}");
    assert!(stderr(&exported).contains(&format!("{logged} records verified")), "{}", stderr(&exported));

    // One byte of an observation changed: that record fails its signed checkpoint and is
    // quarantined with its reason; it never reaches the SIEM, and the exit says so.
    let log = dir.path().join("log");
    let file = std::fs::read_dir(&log).expect("list").map(|entry| entry.expect("entry").path()).min().expect("a file");
    let text = std::fs::read_to_string(&file).expect("read");
    std::fs::write(&file, text.replacen("\"action\":\"observe\"", "\"action\":\"observf\"", 1)).expect("tamper");
    let tampered = export();
    assert_eq!(tampered.status.code(), Some(65), "{}", stderr(&tampered));
    assert!(!stdout(&tampered).contains("observf"), "a tampered record was exported");
    assert!(stderr(&tampered).contains("quarantined") && !stderr(&tampered).contains(" 0 quarantined"), "{}", stderr(&tampered));
    assert_eq!(check_eve(&stdout(&tampered))["errors"], serde_json::json!([]));
}
