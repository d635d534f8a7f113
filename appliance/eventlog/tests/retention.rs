//! Retention: the writer removes the oldest files beyond the disk budget or the age
//! limit, never the file being written, and puts every removal on record; what is left
//! verifies, and a file removed otherwise is still caught.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use mld_eventlog::{verify_paths, FailureReason, LogKey, LogWriter, WriterConfig};

const KEY: [u8; 32] = [9; 32];
const NODE: &str = "node-r";
const FILE_BYTES: u64 = 2048;

fn event(n: u64) -> serde_json::Map<String, serde_json::Value> {
    let mut record = serde_json::Map::new();
    record.insert("type".to_string(), "event".into());
    record.insert("event_id".to_string(), format!("ev-{n}").into());
    record.insert("src_ip".to_string(), "10.66.2.2".into());
    record
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("events-")))
        .collect();
    files.sort();
    files
}

fn records(dir: &Path) -> Vec<serde_json::Value> {
    files(dir)
        .iter()
        .flat_map(|file| std::fs::read_to_string(file).expect("read").lines().map(|line| serde_json::from_str(line).expect("JSON")).collect::<Vec<_>>())
        .collect()
}

fn verify_dir(dir: &Path) -> Result<mld_eventlog::VerifySummary, mld_eventlog::Failure> {
    verify_paths(&[dir.to_path_buf()], &[LogKey::from_bytes(KEY)])
}

fn index_of(path: &Path) -> u64 {
    path.to_string_lossy().rsplit('-').next().and_then(|rest| rest.strip_suffix(".jsonl")).and_then(|index| index.parse().ok()).expect("file index")
}

#[test]
fn the_disk_budget_removes_the_oldest_files_on_record_and_the_rest_verifies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let budget = 5 * FILE_BYTES;
    let config = WriterConfig {
        max_file_bytes: FILE_BYTES,
        max_disk_bytes: budget,
        rotate_daily: false,
        ..WriterConfig::new(dir.path().to_path_buf(), NODE.to_string())
    };
    let mut writer = LogWriter::open(config, LogKey::from_bytes(KEY)).expect("open writer");
    for n in 0..200 {
        writer.append(&event(n)).expect("append");
    }
    writer.sync().expect("sync");
    drop(writer);

    let left = files(dir.path());
    let first_index = index_of(&left[0]);
    assert!(first_index > 0, "old files were removed");
    let closed: u64 = left[..left.len() - 1].iter().map(|file| std::fs::metadata(file).expect("stat").len()).sum();
    assert!(closed + FILE_BYTES <= budget, "closed files {closed} bytes + a full current file fit in {budget}");

    let all = records(dir.path());
    let retention: Vec<&serde_json::Value> = all.iter().filter(|record| record["type"] == "retention").collect();
    assert!(!retention.is_empty(), "removals are on record");
    let newest = retention.last().expect("a record");
    assert_eq!(newest["reason"], "max-disk-mib");
    assert_eq!(newest["removed_through_index"].as_u64(), Some(first_index - 1), "the newest record accounts for every file before the first left");
    let removed = newest["removed"].as_array().expect("removed files");
    let entry = removed.last().expect("an entry");
    assert_eq!(entry["file"].as_str(), Some(mld_eventlog::file_name(NODE, first_index - 1).as_str()));
    assert!(entry["bytes"].as_u64().expect("bytes") > 0);
    let (first_seq, last_seq) = (entry["first_seq"].as_u64().expect("first seq"), entry["last_seq"].as_u64().expect("last seq"));
    assert!(first_seq <= last_seq, "{entry}");
    let first_left: &serde_json::Value = &records_of(&left[0])[0];
    assert_eq!(first_left["prev_file_last_seq"].as_u64(), Some(last_seq), "the removed file's range ends where the first file left starts");

    let summary = verify_dir(dir.path()).expect("what is left verifies");
    assert!(!summary.from_genesis);
    assert_eq!(summary.removed_through_index, Some(first_index - 1));
}

fn records_of(file: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file).expect("read").lines().map(|line| serde_json::from_str(line).expect("JSON")).collect()
}

#[test]
fn a_file_removed_without_a_retention_record_is_still_caught() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = WriterConfig {
        max_file_bytes: FILE_BYTES,
        max_disk_bytes: 5 * FILE_BYTES,
        rotate_daily: false,
        ..WriterConfig::new(dir.path().to_path_buf(), NODE.to_string())
    };
    let mut writer = LogWriter::open(config, LogKey::from_bytes(KEY)).expect("open writer");
    for n in 0..200 {
        writer.append(&event(n)).expect("append");
    }
    drop(writer);
    let left = files(dir.path());
    assert!(left.len() >= 3);

    // The first file left (not removed by retention), removed by someone else.
    let first = index_of(&left[0]);
    let saved = std::fs::read(&left[0]).expect("read");
    std::fs::remove_file(&left[0]).expect("remove");
    let failure = verify_dir(dir.path()).expect_err("an unrecorded removal at the start");
    assert_eq!(failure.reason, FailureReason::FileMissing { index: first });
    std::fs::write(&left[0], saved).expect("put back");

    // A file in the middle.
    std::fs::remove_file(&left[1]).expect("remove");
    let failure = verify_dir(dir.path()).expect_err("a file missing in the middle");
    assert_eq!(failure.reason, FailureReason::FileMissing { index: first + 1 });

    // Given files rather than the directory, verification starts at the first one given.
    let summary = verify_paths(&left[2..], &[LogKey::from_bytes(KEY)]).expect("a later run of files");
    assert!(!summary.from_genesis);
}

/// The test clock: seconds added to the real time.
static CLOCK_AHEAD_SECS: AtomicU64 = AtomicU64::new(0);

fn ahead_clock() -> SystemTime {
    SystemTime::now() + Duration::from_secs(CLOCK_AHEAD_SECS.load(Ordering::SeqCst))
}

#[test]
fn files_older_than_the_age_limit_are_removed_at_the_next_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = || WriterConfig {
        max_file_bytes: FILE_BYTES,
        max_age: Some(Duration::from_secs(90 * 86_400)),
        rotate_daily: false,
        clock: ahead_clock,
        ..WriterConfig::new(dir.path().to_path_buf(), NODE.to_string())
    };
    let mut writer = LogWriter::open(config(), LogKey::from_bytes(KEY)).expect("open writer");
    for n in 0..60 {
        writer.append(&event(n)).expect("append");
    }
    drop(writer);
    let before = files(dir.path());
    assert!(before.len() >= 3);
    assert!(!records(dir.path()).iter().any(|record| record["type"] == "retention"), "nothing is old yet");

    // 91 days later the writer starts again: every closed file is too old.
    CLOCK_AHEAD_SECS.store(91 * 86_400, Ordering::SeqCst);
    let writer = LogWriter::open(config(), LogKey::from_bytes(KEY)).expect("open writer");
    drop(writer);
    let after = files(dir.path());
    assert_eq!(after.len(), 1, "only the file being written is left");
    let left = records_of(&after[0]);
    let retention = left.iter().find(|record| record["type"] == "retention").expect("the removal is on record");
    assert_eq!(retention["reason"], "max-age-days");
    assert_eq!(retention["removed_files"].as_u64(), Some(before.len() as u64));
    assert_eq!(retention["max_age_days"], 90);
    verify_dir(dir.path()).expect("the file left verifies, its predecessors accounted for");
}
