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
    let config = WriterConfig { max_file_bytes: 2048, sync_every_records: 16, rotate_daily: false, ..WriterConfig::new(dir.to_path_buf(), node.to_string()) };
    let mut writer = LogWriter::open(config, LogKey::from_bytes(key)).expect("open writer");
    for n in 0..events {
        writer.append(&event(n)).expect("append");
    }
    writer.sync().expect("sync");
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl") && path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("events-")))
        .collect();
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

/// The test clock for daily rotation: seconds since the epoch, moved by the test.
static CLOCK_SECS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn test_clock() -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(CLOCK_SECS.load(std::sync::atomic::Ordering::SeqCst))
}

#[test]
fn a_new_local_day_starts_a_new_file_and_the_chain_runs_across_it() {
    use std::sync::atomic::Ordering;
    // 2026-11-25 12:00 UTC: noon, so the local day is the same calendar day in any zone
    // within ±11 h of UTC and changes 24 h later.
    let noon = 1_795_608_000;
    CLOCK_SECS.store(noon, Ordering::SeqCst);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = WriterConfig { clock: test_clock, ..WriterConfig::new(dir.path().to_path_buf(), "node-a".to_string()) };
    let mut writer = LogWriter::open(config, LogKey::from_bytes(KEY)).expect("open writer");
    for n in 0..5 {
        writer.append(&event(n)).expect("append");
    }
    assert_eq!(files(dir.path()).len(), 1, "one file within one day");
    CLOCK_SECS.store(noon + 86_400, Ordering::SeqCst);
    for n in 5..10 {
        writer.append(&event(n)).expect("append");
    }
    writer.sync().expect("sync");
    let written = files(dir.path());
    assert_eq!(written.len(), 2, "the next day's records start a new file");
    let second = lines(&written[1]);
    assert!(second[0].contains("\"type\":\"header\""), "the new file starts with a header");
    assert!(second[1].contains("\"event_id\":\"ev-5\""), "the first record of the new day is in the new file");
    let summary = verify_dir(dir.path()).expect("the chain runs across the day's rotation");
    assert_eq!((summary.files, summary.first_seq), (2, 1));
}

#[test]
fn json_text_seals_like_the_same_map_and_non_objects_are_refused() {
    let from_map = tempfile::tempdir().expect("temp dir");
    let from_text = tempfile::tempdir().expect("temp dir");
    let open = |dir: &Path| {
        LogWriter::open(WriterConfig { rotate_daily: false, ..WriterConfig::new(dir.to_path_buf(), "node-a".to_string()) }, LogKey::from_bytes(KEY))
            .expect("open writer")
    };
    let mut a = open(from_map.path());
    let mut b = open(from_text.path());
    for n in 0..3 {
        a.append(&event(n)).expect("append");
        b.append_json(&serde_json::Value::Object(event(n)).to_string(), None).expect("append JSON text");
    }
    for bad in ["[1,2]", "\"text\"", "{\"a\":1", "{\"a\":\n1}", "{\"a\":1}{\"b\":2}"] {
        let error = b.append_json(bad, None).expect_err(bad);
        assert!(error.to_string().contains("one JSON object on one line"), "{bad}: {error}");
    }
    a.sync().expect("sync");
    b.sync().expect("sync");
    assert_eq!(b.durable_seq(), b.last_seq(), "sync returns when everything appended is on disk");
    assert_eq!(lines(&files(from_map.path())[0]), lines(&files(from_text.path())[0]), "byte-identical lines, refused bodies left no trace");
}

#[test]
fn the_last_delivery_is_read_back_from_the_log_across_restarts() {
    use mld_eventlog::Delivery;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = || WriterConfig { max_file_bytes: 2048, rotate_daily: false, ..WriterConfig::new(dir.path().to_path_buf(), "node-a".to_string()) };
    let mut writer = LogWriter::open(config(), LogKey::from_bytes(KEY)).expect("open writer");
    assert_eq!(writer.last_delivery(), None, "a new log has no delivery");
    for seq in 1..=40 {
        let text = serde_json::Value::Object(event(seq)).to_string();
        writer.append_json(&text, Some(Delivery { stream: 0xabc, seq })).expect("append");
    }
    writer.append(&event(99)).expect("an event without delivery (e.g. from replay)");
    drop(writer);
    // Two restarts without events: the newest files hold only headers.
    drop(LogWriter::open(config(), LogKey::from_bytes(KEY)).expect("reopen"));
    let reopened = LogWriter::open(config(), LogKey::from_bytes(KEY)).expect("reopen");
    assert_eq!(reopened.last_delivery(), Some(Delivery { stream: 0xabc, seq: 40 }), "found behind the header-only files");
    drop(reopened);
    let first = lines(&files(dir.path())[1]);
    let record: serde_json::Value = serde_json::from_str(&first[1]).expect("JSON");
    assert_eq!(
        (record["delivery_stream"].as_str(), record["delivery_seq"].as_u64()),
        (Some("0000000000000abc"), Some(record["event_id"].as_str().and_then(|id| id.strip_prefix("ev-")).and_then(|n| n.parse().ok()).expect("id")))
    );
    verify_dir(dir.path()).expect("delivery fields are signed like the rest");
}
