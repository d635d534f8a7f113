//! What the writer accepts and where it resumes: bodies carrying fields the log writes
//! itself are refused (and can be put on record without being written); at open, the
//! newest file is verified before its chain is continued, and a damaged one is never
//! continued from an unverified line.

use std::path::{Path, PathBuf};

use mld_eventlog::{verify_paths, BodyError, ChainVerifier, Delivery, FailureReason, LogKey, LogWriter, WriterConfig, WriterError, GENESIS_TAG};

const KEY: [u8; 32] = [9; 32];
const NODE: &str = "node-a";

fn event(n: u64) -> serde_json::Map<String, serde_json::Value> {
    let mut record = serde_json::Map::new();
    record.insert("type".to_string(), "event".into());
    record.insert("event_id".to_string(), format!("ev-{n}").into());
    record.insert("src_ip".to_string(), "10.66.2.2".into());
    record
}

fn config(dir: &Path) -> WriterConfig {
    WriterConfig { max_file_bytes: 2048, sync_every_records: 16, rotate_daily: false, ..WriterConfig::new(dir.to_path_buf(), NODE.to_string()) }
}

fn open(dir: &Path) -> LogWriter {
    LogWriter::open(config(dir), LogKey::from_bytes(KEY)).expect("open writer")
}

fn write_events(dir: &Path, events: std::ops::Range<u64>) {
    let mut writer = open(dir);
    for n in events {
        writer.append(&event(n)).expect("append");
    }
    writer.sync().expect("sync");
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

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).expect("read").lines().map(str::to_string).collect()
}

fn records(path: &Path) -> Vec<serde_json::Value> {
    lines(path).iter().map(|line| serde_json::from_str(line).expect("JSON")).collect()
}

fn verify_dir(dir: &Path) -> Result<mld_eventlog::VerifySummary, mld_eventlog::Failure> {
    verify_paths(&[dir.to_path_buf()], &[LogKey::from_bytes(KEY)])
}

#[test]
fn reserved_keys_in_an_event_body_are_refused_and_never_reach_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut writer = open(dir.path());
    writer.append(&event(0)).expect("a plain event");
    let before = writer.last_seq();
    let bodies = [
        (r#"{"type":"event","event_id":"x","seq":2}"#, "seq"),
        (r#"{"type":"event","event_id":"x","hmac":"00"}"#, "hmac"),
        (r#"{"type":"event","event_id":"x","prev_tag":"00"}"#, "prev_tag"),
        (r#"{"type":"event","event_id":"x","delivery_seq":9}"#, "delivery_seq"),
        (r#"{"type":"header","schema":"mldefender-log/1","node":"node-a","file_index":0}"#, "schema"),
        (r#"{"type":"header","event_id":"x"}"#, "type"),
        (r#"{"type":"event","type":"header"}"#, "type"),
    ];
    for (body, key) in bodies {
        match writer.append_json(body, Some(Delivery { stream: 1, seq: 1 })) {
            Err(WriterError::Body(error)) => assert_eq!(error.key(), Some(key), "{body}: {error}"),
            other => panic!("{body} was not refused: {other:?}"),
        }
    }
    let mut map = event(1);
    map.insert("seq".to_string(), 2.into());
    assert!(matches!(writer.append(&map), Err(WriterError::Body(BodyError::ReservedKey(key))) if key == "seq"));
    assert_eq!(writer.last_seq(), before, "refused bodies take no sequence number");

    // The log task puts a refused body on record without writing it.
    let body = r#"{"type":"event","event_id":"x","seq":2}"#;
    let error = BodyError::ReservedKey("seq".to_string());
    writer.append_rejected(body, &error, Some(Delivery { stream: 0xabc, seq: 7 })).expect("rejected record");
    writer.append(&event(2)).expect("the log goes on");
    writer.sync().expect("sync");
    drop(writer);

    let written = records(&files(dir.path())[0]);
    let seqs: Vec<u64> = written.iter().map(|record| record["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "every seq once, in order");
    let rejected = written.iter().find(|record| record["type"] == "rejected_event").expect("a rejected_event record");
    assert_eq!((rejected["key"].as_str(), rejected["body_bytes"].as_u64()), (Some("seq"), Some(body.len() as u64)));
    assert_eq!(rejected["delivery_seq"], 7, "the delivery is on record, so a restart does not take the event again");
    assert!(!lines(&files(dir.path())[0]).iter().any(|line| line.contains("\"event_id\":\"x\"")), "the body itself is not in the log");
    verify_dir(dir.path()).expect("the log verifies");
    assert_eq!(open(dir.path()).last_delivery(), Some(Delivery { stream: 0xabc, seq: 7 }));
}

#[test]
fn an_intact_newest_file_is_continued() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_events(dir.path(), 0..30);
    write_events(dir.path(), 30..40);
    let summary = verify_dir(dir.path()).expect("the chain runs across the restart");
    assert!(summary.from_genesis);
    assert!(!files(dir.path()).iter().any(|file| lines(file).iter().any(|line| line.contains("\"type\":\"recovery\""))), "nothing to recover");
}

#[test]
fn a_tampered_last_line_is_not_resumed_from() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_events(dir.path(), 0..30);
    let newest = files(dir.path()).pop().expect("a file");
    let original = lines(&newest);
    let last: serde_json::Value = serde_json::from_str(original.last().expect("a line")).expect("JSON");
    let last_seq = last["seq"].as_u64().expect("seq");
    // Change one byte of the last record (its tag and seq stay as they were).
    let mut tampered = original.clone();
    let line = tampered.last_mut().expect("a line");
    *line = line.replacen("10.66.2.2", "10.66.2.3", 1);
    assert_ne!(&tampered, &original, "the tamper changed the file");
    std::fs::write(&newest, tampered.iter().map(|line| format!("{line}\n")).collect::<String>()).expect("tamper");

    write_events(dir.path(), 30..35);
    assert_eq!(lines(&newest), tampered, "the damaged file is left as it is (evidence)");
    let after = files(dir.path()).pop().expect("the new file");
    let new = records(&after);
    assert_eq!(new[0]["type"], "header");
    assert_eq!(new[0]["prev_tag"], GENESIS_TAG, "the new file does not link to the unverified line");
    assert_eq!(new[0]["prev_file_last_tag"], GENESIS_TAG);
    assert_eq!(new[0]["seq"].as_u64(), Some(last_seq + 1), "the new anchor is above every seq written before");
    assert_eq!(new[1]["type"], "recovery");
    assert_eq!(new[1]["failure"], FailureReason::BadHmac.to_string());
    assert_eq!(new[1]["last_verified_seq"].as_u64(), Some(last_seq - 1));

    // A reader that follows the chain line by line (as the ingest task does) re-anchors
    // at the new header: authentic, of a later file, with a seq above every one before.
    let mut reader = ChainVerifier::new(vec![LogKey::from_bytes(KEY)], Some(NODE.to_string()));
    for file in &files(dir.path())[..files(dir.path()).len() - 1] {
        let index = file.to_string_lossy().rsplit('-').next().and_then(|rest| rest.strip_suffix(".jsonl")).and_then(|index| index.parse().ok()).expect("index");
        for line in lines(file) {
            let _ = reader.check_line(index, &line);
        }
    }
    let new_index = new[0]["file_index"].as_u64().expect("file index");
    let header = reader.authenticate(&lines(&after)[0]).expect("the new header is authentic");
    assert!(reader.continue_chain(new_index, &header).is_err(), "it does not continue the damaged chain");
    reader.reanchor(new_index, &header).expect("a reader re-anchors at it");
    reader.check_line(new_index, &lines(&after)[1]).expect("and reads on");

    // `log verify` still names the altered line; the files from the new anchor on verify.
    let failure = verify_dir(dir.path()).expect_err("the tampering stays visible");
    assert_eq!((failure.path.as_path(), failure.line, failure.reason), (newest.as_path(), original.len(), FailureReason::BadHmac));
    verify_paths(std::slice::from_ref(&after), &[LogKey::from_bytes(KEY)]).expect("the new anchor verifies");
    // And the writer continues normally from a file that verifies.
    write_events(dir.path(), 35..36);
    let next = records(&files(dir.path()).pop().expect("file"));
    assert_eq!(next[0]["prev_file_last_tag"], records(&after).last().expect("record")["hmac"]);
}

/// A line signed with another key (as a forger would sign it), `seq` set to `seq`.
fn forged_line(seq: u64) -> String {
    let other = tempfile::tempdir().expect("temp dir");
    let mut writer =
        LogWriter::open(WriterConfig { rotate_daily: false, ..WriterConfig::new(other.path().to_path_buf(), NODE.to_string()) }, LogKey::from_bytes([1; 32]))
            .expect("writer");
    writer.append(&event(99)).expect("append");
    writer.sync().expect("sync");
    let line = lines(&files(other.path())[0])[1].clone();
    line.replacen("\"seq\":2,", &format!("\"seq\":{seq},"), 1)
}

fn append_line(path: &Path, line: &str) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes.extend_from_slice(format!("{line}\n").as_bytes());
    std::fs::write(path, bytes).expect("append a line");
}

#[test]
fn a_forged_line_with_an_old_seq_is_skipped_and_the_chain_continues_from_the_last_verified_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_events(dir.path(), 0..30);
    let newest = files(dir.path()).pop().expect("a file");
    let last: serde_json::Value = serde_json::from_str(lines(&newest).last().expect("line")).expect("JSON");
    append_line(&newest, &forged_line(2));
    append_line(&newest, "not even JSON");

    // And one inserted in the middle: the genuine lines after it still verify.
    let mut middle = lines(&newest);
    middle.insert(2, forged_line(3));
    std::fs::write(&newest, middle.iter().map(|line| format!("{line}\n")).collect::<String>()).expect("insert a line");

    write_events(dir.path(), 30..32);
    let new = records(&files(dir.path()).pop().expect("file"));
    assert_eq!(new[0]["prev_file_last_seq"], last["seq"], "continued from the last verified record");
    assert_eq!(new[0]["prev_file_last_tag"], last["hmac"]);
    assert_eq!(new[1]["type"], "recovery");
    assert!(new[1]["failure"].as_str().expect("failure").contains("unknown key"), "{}", new[1]);
    let failure = verify_dir(dir.path()).expect_err("the forged line stays visible");
    assert!(matches!(failure.reason, FailureReason::UnknownKey(_)), "{failure}");
}

#[test]
fn a_forged_line_claiming_a_later_seq_is_not_resumed_from_and_no_seq_is_written_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_events(dir.path(), 0..30);
    let newest = files(dir.path()).pop().expect("a file");
    let last: serde_json::Value = serde_json::from_str(lines(&newest).last().expect("line")).expect("JSON");
    let claimed = last["seq"].as_u64().expect("seq") + 5;
    append_line(&newest, &forged_line(claimed));

    write_events(dir.path(), 30..32);
    let new = records(&files(dir.path()).pop().expect("file"));
    assert_eq!((new[0]["seq"].as_u64(), new[0]["prev_tag"].as_str()), (Some(claimed + 1), Some(GENESIS_TAG)), "a new anchor above the claimed seq");
    assert_eq!(new[1]["type"], "recovery");
}

#[test]
fn an_empty_newest_file_left_by_a_crash_is_removed_and_the_one_before_continued() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_events(dir.path(), 0..10);
    let newest = files(dir.path()).pop().expect("a file");
    let index: u64 =
        newest.to_string_lossy().rsplit('-').next().and_then(|rest| rest.strip_suffix(".jsonl")).and_then(|index| index.parse().ok()).expect("index");
    let empty = dir.path().join(mld_eventlog::file_name(NODE, index + 1));
    std::fs::write(&empty, b"").expect("a crash right after creating the next file");
    write_events(dir.path(), 10..12);
    verify_dir(dir.path()).expect("the chain continues across the crash");
}
