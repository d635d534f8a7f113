//! The binary as a user meets it: help, config commands, flow output, bad input.

mod common;

use std::io::Write;
use std::path::PathBuf;

use common::*;

fn lab_pcap() -> PathBuf {
    repo().join("tests/pcap/lab-mix.pcap")
}

#[test]
fn help_lists_every_subcommand_and_each_has_help() {
    let output = run(mldefender().arg("--help"));
    assert!(output.status.success());
    let help = stdout(&output);
    for subcommand in ["flows", "config", "capture", "block", "allow", "counters", "supervise", "status", "replay", "log"] {
        assert!(help.contains(subcommand), "--help does not list `{subcommand}`:\n{help}");
    }
    for args in [
        &["flows", "--help"][..],
        &["config", "--help"],
        &["config", "check", "--help"],
        &["config", "example", "--help"],
        &["capture", "--help"],
        &["block", "--help"],
        &["block", "add", "--help"],
        &["allow", "--help"],
        &["counters", "--help"],
        &["supervise", "--help"],
        &["status", "--help"],
        &["replay", "--help"],
        &["log", "verify", "--help"],
        &["log", "schema", "--help"],
    ] {
        let output = run(mldefender().args(args));
        assert!(output.status.success(), "{args:?} failed");
        assert!(stdout(&output).contains("Usage:"), "{args:?} printed no usage");
    }
}

#[test]
fn config_example_passes_config_check() {
    let example = run(mldefender().args(["config", "example"]));
    assert!(example.status.success());
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(&example.stdout).expect("write");
    let check = run(mldefender().args(["config", "check"]).arg(file.path()));
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    assert!(stdout(&check).ends_with(": ok\n"));
}

#[test]
fn config_check_lists_every_error_and_exits_64() {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(b"[flow]\nmax-flows = 0\nidle-timeout = 5\n[output]\nformat = \"xml\"\n").expect("write");
    let check = run(mldefender().args(["config", "check"]).arg(file.path()).arg(repo().join("config/mldefender.toml")));
    assert_eq!(check.status.code(), Some(64));
    let errors = stderr(&check);
    assert!(errors.contains("`flow.idle-timeout`: unknown key"), "{errors}");
    // Shape errors come first; once the shape is right, range errors are listed together.
    std::fs::write(file.path(), "[flow]\nmax-flows = 0\n[output]\nformat = \"xml\"\n").expect("write");
    let check = run(mldefender().args(["config", "check"]).arg(file.path()));
    let errors = stderr(&check);
    assert!(errors.contains("2 errors"), "{errors}");
    assert!(errors.contains("`flow.max-flows`: must be between 1 and 16777216, got 0"), "{errors}");
    assert!(errors.contains("`output.format`"), "{errors}");
    assert!(errors.contains(&file.path().display().to_string()), "the file is named: {errors}");
}

/// Tasks never run as root, whatever the spelling, and no two share a user (peer checks
/// compare uids). Every problem is listed with its key, and the exit status is 64.
#[test]
fn config_check_refuses_root_task_users_and_shared_users() {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(b"[tasks.capture]\nuser = \"00\"\n[tasks.detect]\nuser = \"root\"\n[tasks.log]\ngroup = \"0\"\n").expect("write");
    let check = run(mldefender().args(["config", "check"]).arg(file.path()));
    assert_eq!(check.status.code(), Some(64), "{}", stderr(&check));
    let errors = stderr(&check);
    assert!(errors.contains("3 errors"), "{errors}");
    assert!(errors.contains("`tasks.capture.user`: must not be root: tasks run unprivileged (got \"00\", which is uid 0)"), "{errors}");
    assert!(errors.contains("`tasks.detect.user`: must not be root: tasks run unprivileged (got \"root\", which is uid 0)"), "{errors}");
    assert!(errors.contains("`tasks.log.group`: must not be root's group"), "{errors}");

    // Numbers without a passwd entry stand for themselves: no users needed on this machine.
    let users = "[tasks.capture]\nuser = \"60101\"\n[tasks.detect]\nuser = \"60102\"\n[tasks.log]\nuser = \"60103\"\n[tasks.ingest]\nuser = \"60102\"\n";
    std::fs::write(file.path(), users).expect("write");
    let check = run(mldefender().args(["config", "check"]).arg(file.path()));
    assert_eq!(check.status.code(), Some(64), "{}", stderr(&check));
    let errors = stderr(&check);
    assert!(errors.contains("`tasks.ingest.user`: user `60102` (uid 60102) is also the user of task detect; every task needs its own user"), "{errors}");
    std::fs::write(file.path(), users.replace("[tasks.ingest]\nuser = \"60102\"", "[tasks.ingest]\nuser = \"60104\"")).expect("write");
    let check = run(mldefender().args(["config", "check"]).arg(file.path()));
    assert_eq!(check.status.code(), Some(0), "distinct users pass: {}", stderr(&check));
}

#[test]
fn flows_csv_and_jsonl_carry_the_same_columns_and_values() {
    let jsonl = flows_jsonl(&[lab_pcap()], &[]);
    let csv = run(mldefender().arg("flows").arg(lab_pcap()).args(["--format", "csv"]));
    assert!(csv.status.success());
    let text = stdout(&csv);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let rows: Vec<Vec<&str>> = lines.map(|line| line.split(',').collect()).collect();
    assert_eq!(rows.len(), jsonl.len());
    assert!(header.len() >= 76 + 7, "{} columns", header.len());
    let json_keys: Vec<&String> = jsonl[0].keys().collect();
    assert_eq!(json_keys, header, "same columns, same order");
    for (row, record) in rows.iter().zip(&jsonl) {
        assert_eq!(row.len(), header.len());
        assert_eq!(row[header.iter().position(|h| *h == "Flow Duration").expect("column")], record["Flow Duration"].to_string());
    }
    // CIC feature columns are all present by their CIC names.
    for name in ["Flow Duration", "Fwd Avg Bulk Rate", "Init_Win_bytes_backward", "Idle Min", "Subflow Bwd Bytes"] {
        assert!(header.contains(&name), "missing {name}");
    }
}

#[test]
fn replay_is_deterministic() {
    let first = run(mldefender().arg("flows").arg(lab_pcap()));
    let second = run(mldefender().arg("flows").arg(lab_pcap()));
    assert!(first.status.success());
    assert!(!first.stdout.is_empty());
    assert_eq!(first.stdout, second.stdout);
}

#[test]
fn summary_is_readable_and_counts_the_scan() {
    let output = run(mldefender().arg("flows").arg(lab_pcap()).arg("--summary"));
    assert!(output.status.success());
    let summary = stdout(&output);
    assert!(summary.starts_with("Flows: "), "{summary}");
    assert!(summary.contains("tcp-rst"), "the nmap probes end with RST: {summary}");
    let line = summary.lines().find(|line| line.trim_start().starts_with("10.77.0.1 ")).expect("the scanner is a top source");
    assert!(line.ends_with("128 / 1"), "the 200-port scan saturates the distinct-port count: {line}");
    let totals = stderr(&output);
    assert!(totals.contains("packets") && totals.contains("flows") && totals.contains("malformed"), "{totals}");
}

/// A legacy pcap (Ethernet) holding `frames`.
fn pcap_with(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for field in [0xa1b2_c3d4u32.to_le_bytes().to_vec(), 2u16.to_le_bytes().to_vec(), 4u16.to_le_bytes().to_vec()] {
        bytes.extend_from_slice(&field);
    }
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&65535u32.to_le_bytes());
    bytes.extend_from_slice(&1u32.to_le_bytes());
    for (index, frame) in frames.iter().enumerate() {
        bytes.extend_from_slice(&(1_700_000_000u32 + index as u32).to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        bytes.extend_from_slice(frame);
    }
    bytes
}

/// Ethernet + IPv4 + TCP (20-byte header), `payload` bytes of payload.
fn tcp_frame(payload: usize) -> Vec<u8> {
    let total = 20 + 20 + payload;
    let mut frame = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    frame.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    frame.extend_from_slice(&[10, 1, 1, 1, 10, 1, 1, 2]);
    frame.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0x72, 0x10, 0, 0, 0, 0]);
    frame.extend(std::iter::repeat_n(0xab, payload));
    frame
}

#[test]
fn malformed_packets_are_counted_by_reason_and_the_rest_is_processed() {
    let good = tcp_frame(10);
    let mut bad_ihl = tcp_frame(10);
    bad_ihl[14] = 0x43;
    // The IP header says 28 bytes: 20 of IP, then only 8 of the 20-byte TCP header.
    let mut truncated_tcp = tcp_frame(0)[..14 + 20 + 8].to_vec();
    truncated_tcp[16..18].copy_from_slice(&28u16.to_be_bytes());
    let mut wrong_length = tcp_frame(10);
    wrong_length[16..18].copy_from_slice(&2000u16.to_be_bytes());
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), pcap_with(&[good.clone(), bad_ihl, truncated_tcp, wrong_length, good])).expect("write");
    let output = run(mldefender().arg("flows").arg(file.path()));
    assert!(output.status.success(), "{}", stderr(&output));
    let report = stderr(&output);
    assert!(report.contains("5 frames, 2 packets, 1 flows"), "{report}");
    assert!(report.contains("3 malformed"), "{report}");
    for reason in ["bad-ip-header-length 1", "truncated-transport-header 1", "bad-ip-total-length 1"] {
        assert!(report.contains(reason), "missing `{reason}` in {report}");
    }
    assert_eq!(stdout(&output).lines().count(), 1);
}

#[test]
fn truncated_capture_names_file_and_offset_and_keeps_what_was_read() {
    let full = pcap_with(&[tcp_frame(10), tcp_frame(20), tcp_frame(30)]);
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), &full[..full.len() - 20]).expect("write");
    let output = run(mldefender().arg("flows").arg(file.path()));
    assert_eq!(output.status.code(), Some(65), "bad input data exits 65");
    let report = stderr(&output);
    assert!(report.contains(&file.path().display().to_string()), "{report}");
    // Header 24 bytes, then two records of 16 + 64 and 16 + 74 bytes: the third starts at 194.
    assert!(report.contains("truncated") && report.contains("offset 194"), "{report}");
    let flows = stdout(&output);
    assert!(flows.contains("\"Total Fwd Packets\":2"), "the two complete packets still form their flow: {flows}");
}

#[test]
fn garbage_and_missing_files_are_clear_errors() {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), b"GET / HTTP/1.1\r\nHost: example\r\n\r\n and more text to be long enough").expect("write");
    let output = run(mldefender().arg("flows").arg(file.path()).arg("/nonexistent/x.pcap"));
    assert_eq!(output.status.code(), Some(65));
    let report = stderr(&output);
    assert!(report.contains("is not a pcap or pcapng file"), "{report}");
    assert!(report.contains("failed to open capture file `/nonexistent/x.pcap`"), "{report}");
    assert!(!report.contains("panicked"), "{report}");
}

#[test]
fn a_bad_config_for_flows_exits_64() {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), "[flow]\nmax-flows = -5\n").expect("write");
    let output = run(mldefender().arg("flows").arg(lab_pcap()).arg("--config").arg(file.path()));
    assert_eq!(output.status.code(), Some(64));
    assert!(stderr(&output).contains("flow.max-flows"));
}

#[test]
fn a_tiny_table_evicts_and_says_so() {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), "[flow]\nmax-flows = 8\n").expect("write");
    let output = run(mldefender().arg("flows").arg(lab_pcap()).arg("--config").arg(file.path()));
    assert!(output.status.success());
    let report = stderr(&output);
    let evicted: u64 = report
        .split(", ")
        .find_map(|part| part.strip_suffix(" evicted"))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no eviction count in {report}"));
    assert!(evicted > 0, "{report}");
    let evicted_records = stdout(&output).matches("\"end_reason\":\"evicted\"").count() as u64;
    assert_eq!(evicted_records, evicted, "every eviction is a record");
}

#[test]
fn the_json_schema_in_docs_is_the_one_the_binary_generates() {
    let schema = run(mldefender().args(["config", "schema"]));
    assert!(schema.status.success(), "{}", stderr(&schema));
    let kept = std::fs::read_to_string(repo().join("docs/config.schema.json")).expect("docs/config.schema.json");
    assert!(stdout(&schema) == kept, "docs/config.schema.json is stale: regenerate it with `mldefender config schema > docs/config.schema.json`");
    let parsed: serde_json::Value = serde_json::from_str(&kept).expect("JSON");
    let ttl = &parsed["properties"]["response"]["properties"]["ttl-scan-secs"];
    assert_eq!((ttl["default"].as_i64(), ttl["minimum"].as_i64(), ttl["maximum"].as_i64()), (Some(3600), Some(1), Some(31_536_000)), "{ttl}");
    assert!(ttl["description"].as_str().is_some_and(|text| text.contains("scan")), "{ttl}");
}

#[test]
fn config_plan_names_every_change_with_its_class_as_the_golden_file_says() {
    let dir = repo().join("tests/config/plan");
    let plan = run(mldefender().args(["config", "plan"]).arg(dir.join("new.toml")).arg("--from").arg(dir.join("old.toml")));
    assert!(plan.status.success(), "{}", stderr(&plan));
    let expected = std::fs::read_to_string(dir.join("expected.txt")).expect("expected.txt");
    assert_eq!(
        stdout(&plan),
        expected,
        "if intended: mldefender config plan tests/config/plan/new.toml --from tests/config/plan/old.toml > tests/config/plan/expected.txt"
    );
    let json = run(mldefender().args(["config", "plan", "--json"]).arg(dir.join("new.toml")).arg("--from").arg(dir.join("old.toml")));
    let parsed: serde_json::Value = serde_json::from_str(stdout(&json).trim()).expect("JSON");
    let keys: Vec<&str> = parsed["changes"].as_array().expect("changes").iter().filter_map(|change| change["key"].as_str()).collect();
    assert_eq!(keys.len(), expected.lines().count() - 1, "{keys:?}");
    assert_eq!(parsed["overall"], "needs-image");
    // Invalid NEW: every error, exit 64, nothing on stdout.
    let mut invalid = tempfile::NamedTempFile::new().expect("temp file");
    invalid.write_all(b"[response]\nttl-scan-secs = 0\nmax-active-blocks = 0\n").expect("write");
    let refused = run(mldefender().args(["config", "plan"]).arg(invalid.path()).arg("--from").arg(dir.join("old.toml")));
    assert_eq!(refused.status.code(), Some(64));
    assert!(stdout(&refused).is_empty() && stderr(&refused).contains("2 errors"), "{}", stderr(&refused));
}
