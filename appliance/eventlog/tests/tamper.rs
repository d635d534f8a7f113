//! The tamper suite: every way of changing a written log is caught by `verify_paths`,
//! which names the file, the line and the reason. Plus golden output and crash recovery.

use std::path::{Path, PathBuf};

use mld_eventlog::{verify_paths, FailureReason, LogKey, LogWriter, WriterConfig};

const KEY: [u8; 32] = [9; 32];

fn event(n: u64) -> serde_json::Map<String, serde_json::Value> {
    let mut record = serde_json::Map::new();
    record.insert("type".to_string(), "event".into());
    record.insert("event_id".to_string(), format!("ev-{n}").into());
    record.insert("src_ip".to_string(), "10.66.2.2".into());
    record.insert("score".to_string(), (n as f64 / 100.0).into());
    record
}

/// A log of `events` events for `node` in `dir`, rotated every ~2 KiB.
fn write_log(dir: &Path, node: &str, events: u64, key: [u8; 32]) {
    let config = WriterConfig { dir: dir.to_path_buf(), node: node.to_string(), max_file_bytes: 2048, sync_every_records: 16 };
    let mut writer = LogWriter::open(config, LogKey::from_bytes(key)).expect("open writer");
    for n in 0..events {
        writer.append(&event(n)).expect("append");
    }
    writer.sync().expect("sync");
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).expect("list").map(|entry| entry.expect("entry").path()).filter(|path| path.extension().is_some_and(|ext| ext == "jsonl") && path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("events-"))).collect();
    files.sort();
    files
}

fn keys() -> Vec<LogKey> {
    vec![LogKey::from_bytes(KEY)]
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).expect("read").lines().map(str::to_string).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.iter().map(|line| format!("{line}\n")).collect::<String>()).expect("write");
}

fn verify_dir(dir: &Path) -> Result<mld_eventlog::VerifySummary, mld_eventlog::Failure> {
    verify_paths(&[dir.to_path_buf()], &keys())
}

fn fresh() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), "node-a", 60, KEY);
    let files = files(dir.path());
    assert!(files.len() >= 3, "rotation made {} files", files.len());
    (dir, files)
}

#[test]
fn an_intact_log_verifies() {
    let (dir, files) = fresh();
    let summary = verify_dir(dir.path()).expect("intact");
    assert_eq!(summary.node, "node-a");
    assert_eq!(summary.files, files.len());
    assert_eq!(summary.records, 60 + files.len() as u64, "events plus one header per file");
    assert_eq!((summary.first_seq, summary.last_seq), (1, summary.records));
    assert!(summary.from_genesis);
}

#[test]
fn a_flipped_byte_is_a_bad_hmac() {
    let (dir, files) = fresh();
    let mut content = lines(&files[1]);
    content[2] = content[2].replace("10.66.2.2", "10.66.2.3");
    write_lines(&files[1], &content);
    let failure = verify_dir(dir.path()).expect_err("tampered");
    assert_eq!((failure.path.as_path(), failure.line, failure.reason.clone()), (files[1].as_path(), 3, FailureReason::BadHmac));
    assert!(failure.to_string().contains(":3: HMAC mismatch"), "{failure}");
}

#[test]
fn a_deleted_line_is_a_sequence_gap() {
    let (dir, files) = fresh();
    let mut content = lines(&files[0]);
    content.remove(3);
    write_lines(&files[0], &content);
    let failure = verify_dir(dir.path()).expect_err("tampered");
    assert_eq!(failure.line, 4);
    assert!(matches!(failure.reason, FailureReason::SequenceGap { expected: 4, found: 5 }), "{failure}");
}

#[test]
fn swapped_lines_are_caught() {
    let (dir, files) = fresh();
    let mut content = lines(&files[0]);
    content.swap(2, 3);
    write_lines(&files[0], &content);
    let failure = verify_dir(dir.path()).expect_err("tampered");
    assert_eq!(failure.line, 3);
    assert!(matches!(failure.reason, FailureReason::SequenceGap { .. } | FailureReason::SequenceBack { .. }), "{failure}");
}

#[test]
fn a_duplicated_line_is_a_replay() {
    let (dir, files) = fresh();
    let mut content = lines(&files[0]);
    let copy = content[2].clone();
    content.insert(3, copy);
    write_lines(&files[0], &content);
    let failure = verify_dir(dir.path()).expect_err("tampered");
    assert_eq!(failure.line, 4);
    assert!(matches!(failure.reason, FailureReason::SequenceBack { .. }), "{failure}");
    assert!(failure.to_string().contains("reordered, duplicated or replayed"));
}

#[test]
fn truncation_is_caught_mid_line_and_at_a_line_boundary() {
    let (dir, files) = fresh();
    let bytes = std::fs::read(&files[0]).expect("read");
    std::fs::write(&files[0], &bytes[..bytes.len() - 10]).expect("truncate");
    let failure = verify_dir(dir.path()).expect_err("cut mid-line");
    assert_eq!(failure.reason, FailureReason::TruncatedLine);

    let (dir, files) = fresh();
    let mut content = lines(&files[0]);
    content.truncate(content.len() - 2);
    write_lines(&files[0], &content);
    let failure = verify_dir(dir.path()).expect_err("cut at a line boundary");
    assert_eq!(failure.path, files[1], "the next file's header does not match");
    assert!(matches!(failure.reason, FailureReason::SequenceGap { .. } | FailureReason::HeaderMismatch(_)), "{failure}");
}

#[test]
fn a_dropped_rotated_file_is_caught() {
    let (dir, files) = fresh();
    std::fs::remove_file(&files[1]).expect("remove");
    let failure = verify_dir(dir.path()).expect_err("file dropped");
    assert_eq!(failure.reason, FailureReason::FileMissing { index: 1 });
}

#[test]
fn splicing_two_nodes_is_caught() {
    let (dir, files) = fresh();
    let other = tempfile::tempdir().expect("temp dir");
    write_log(other.path(), "node-b", 60, KEY);
    let other_files = files_of(other.path());
    // A whole file of node B in place of node A's second file.
    std::fs::remove_file(&files[1]).expect("remove");
    std::fs::copy(&other_files[1], dir.path().join("events-node-a-000001.jsonl")).expect("copy");
    let failure = verify_dir(dir.path()).expect_err("spliced file");
    assert!(matches!(failure.reason, FailureReason::NodeMismatch { .. }), "{failure}");

    // A line of node B inside node A's file (same key): the node is part of every tag.
    let (dir, files) = fresh();
    let mut content = lines(&files[0]);
    content[2] = lines(&other_files[0])[2].clone();
    write_lines(&files[0], &content);
    assert_eq!(verify_dir(dir.path()).expect_err("spliced line").reason, FailureReason::BadHmac);
}

fn files_of(dir: &Path) -> Vec<PathBuf> {
    files(dir)
}

#[test]
fn re_signing_with_another_key_is_caught() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), "node-a", 60, [1; 32]);
    let failure = verify_dir(dir.path()).expect_err("another key");
    assert!(matches!(failure.reason, FailureReason::UnknownKey(_)), "{failure}");
    // A line edited to claim our key id, still signed with the other key.
    let ours = LogKey::from_bytes(KEY);
    let theirs = LogKey::from_bytes([1; 32]);
    let files = files(dir.path());
    let mut content = lines(&files[0]);
    content[1] = content[1].replace(theirs.id(), ours.id());
    write_lines(&files[0], &content);
    let result = verify_paths(&[files[0].clone()], &[ours]);
    assert!(matches!(result.expect_err("claims our key").reason, FailureReason::UnknownKey(_) | FailureReason::BadHmac));
}

#[test]
fn golden_output_is_byte_identical() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), "golden", 5, KEY);
    let written = std::fs::read_to_string(dir.path().join("events-golden-000000.jsonl")).expect("read");
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/events-golden-000000.jsonl");
    if std::env::var_os("MLD_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &written).expect("update golden");
    }
    assert_eq!(written, std::fs::read_to_string(&golden).expect("golden file (MLD_UPDATE_GOLDEN=1 writes it)"));
}

#[test]
fn a_partial_line_after_a_crash_is_quarantined_and_the_chain_continues() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), "node-a", 10, KEY);
    let last = files(dir.path()).pop().expect("a file");
    let mut bytes = std::fs::read(&last).expect("read");
    bytes.extend_from_slice(b"{\"type\":\"event\",\"event_id\":\"ev-cut");
    std::fs::write(&last, &bytes).expect("simulate a crash mid-write");
    assert_eq!(verify_dir(dir.path()).expect_err("partial").reason, FailureReason::TruncatedLine);

    write_log(dir.path(), "node-a", 3, KEY);
    let summary = verify_dir(dir.path()).expect("recovered log verifies");
    assert!(summary.records > 13);
    let quarantine = std::fs::read_to_string(dir.path().join("quarantine-node-a.jsonl")).expect("quarantine file");
    assert!(quarantine.contains("ev-cut") && quarantine.contains("partial line after a crash"), "{quarantine}");
    let newest = files(dir.path()).pop().expect("a file");
    assert!(std::fs::read_to_string(newest).expect("read").lines().nth(1).expect("record").contains("\"type\":\"recovery\""));
}
