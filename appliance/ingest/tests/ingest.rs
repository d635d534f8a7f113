//! The ingest foundation against real logs written by `LogWriter`: following a live log
//! across rotations, resuming from the checkpoint, and every kind of tampering refused,
//! quarantined with its reason and counted. Ingest holds the checkpoint public key only
//! (ADR 0007): nothing here gives it the HMAC key.

use std::path::{Path, PathBuf};

use mld_eventlog::{file_name, CheckpointSigningKey, LogKey, LogWriter, Sealer, WriterConfig};
use mld_ingest::{Ingest, IngestConfig, QuarantineEntry, VerifiedRecord, QUARANTINE_FILE};

const KEY: [u8; 32] = [9; 32];
/// The writer's checkpoint signing key (seed).
const SIGNING_SEED: [u8; 32] = [6; 32];
const NODE: &str = "node-a";
/// Event times start here (µs): a plausible present.
const BASE_TS_US: u64 = 1_700_000_000_000_000;

fn event(n: u64) -> serde_json::Map<String, serde_json::Value> {
    let mut record = serde_json::Map::new();
    record.insert("type".to_string(), "event".into());
    record.insert("event_id".to_string(), format!("ev-{n}").into());
    record.insert("ts_us".to_string(), (BASE_TS_US + n * 1_000_000).into());
    record.insert("src_ip".to_string(), "10.66.2.2".into());
    record
}

fn writer(dir: &Path, key: [u8; 32]) -> LogWriter {
    let config = WriterConfig { max_file_bytes: 2048, sync_every_records: 4, rotate_daily: false, ..WriterConfig::new(dir.to_path_buf(), NODE.to_string()) };
    LogWriter::open_signed(config, LogKey::from_bytes(key), CheckpointSigningKey::from_seed(SIGNING_SEED)).expect("open writer")
}

/// A log of events `from..to` in `dir`, rotated every ~2 KiB.
fn write_events(dir: &Path, from: u64, to: u64) {
    let mut writer = writer(dir, KEY);
    for n in from..to {
        writer.append(&event(n)).expect("append");
    }
    writer.sync().expect("sync");
}

fn config(log: &Path, state: &Path) -> IngestConfig {
    IngestConfig::new(log.to_path_buf(), state.to_path_buf(), NODE.to_string(), vec![CheckpointSigningKey::from_seed(SIGNING_SEED).public_key()])
}

fn open(log: &Path, state: &Path) -> Ingest {
    Ingest::open(config(log, state)).expect("open ingest")
}

/// Polls until a poll reads nothing.
fn drain(ingest: &mut Ingest) -> Vec<VerifiedRecord> {
    let mut records = Vec::new();
    loop {
        let stats = ingest.poll(&mut |record| records.push(record)).expect("poll");
        if stats.lines == 0 {
            return records;
        }
    }
}

fn event_ids(records: &[VerifiedRecord]) -> Vec<String> {
    records.iter().map(|record| record.fields()["event_id"].as_str().expect("event_id").to_string()).collect()
}

fn expected_ids(range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|n| format!("ev-{n}")).collect()
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
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

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.iter().map(|line| format!("{line}\n")).collect::<String>()).expect("write");
}

fn quarantined(state: &Path) -> Vec<QuarantineEntry> {
    match std::fs::read_to_string(state.join(QUARANTINE_FILE)) {
        Ok(text) => text.lines().map(|line| serde_json::from_str(line).expect("quarantine entry")).collect(),
        Err(_) => Vec::new(),
    }
}

fn count(ingest: &Ingest, reason: &str) -> u64 {
    ingest.rejected_by_reason().get(reason).copied().unwrap_or(0)
}

fn assert_strictly_increasing(records: &[VerifiedRecord]) {
    assert!(records.windows(2).all(|pair| pair[0].seq < pair[1].seq), "delivered seqs must increase");
}

/// A fresh log of 60 events over at least 3 files, and an empty state directory.
fn fresh() -> (tempfile::TempDir, PathBuf, PathBuf, Vec<PathBuf>) {
    let root = tempfile::tempdir().expect("temp dir");
    let log = root.path().join("log");
    let state = root.path().join("state");
    write_events(&log, 0, 60);
    let files = log_files(&log);
    assert!(files.len() >= 3, "rotation made {} files", files.len());
    (root, log, state, files)
}

#[test]
fn a_log_written_while_followed_is_delivered_completely_in_order_once() {
    let root = tempfile::tempdir().expect("temp dir");
    let (log, state) = (root.path().join("log"), root.path().join("state"));
    let mut writer = writer(&log, KEY);
    let mut ingest = open(&log, &state);
    let mut records = Vec::new();
    for n in 0..300 {
        writer.append(&event(n)).expect("append");
        if n % 7 == 0 {
            // What the writer has committed so far, possibly mid-file or mid-rotation.
            writer.commit().expect("commit");
            ingest.poll(&mut |record| records.push(record)).expect("poll");
        }
    }
    writer.checkpoint().expect("checkpoint");
    writer.sync().expect("sync");
    records.extend(drain(&mut ingest));
    assert!(log_files(&log).len() >= 5, "the log rotated by size");
    assert_eq!(event_ids(&records), expected_ids(0..300));
    assert_strictly_increasing(&records);
    assert!(ingest.rejected_by_reason().is_empty(), "{:?}", ingest.rejected_by_reason());
    assert!(quarantined(&state).is_empty());
    // Headers are verified but not delivered: every seq up to the writer's last is accounted for.
    let checkpoint = ingest.checkpoint().expect("checkpoint");
    assert_eq!(checkpoint.last_seq, Some(writer.last_seq()));
}

#[test]
fn a_restart_resumes_from_the_checkpoint_with_no_gap_and_no_duplicate() {
    let (root, log, state, _) = fresh();
    let single_pass = event_ids(&drain(&mut open(&log, &root.path().join("single"))));
    assert_eq!(single_pass, expected_ids(0..60));

    let mut delivered = Vec::new();
    for _ in 0..4 {
        let mut ingest = Ingest::open(IngestConfig { max_batch_lines: 7, ..config(&log, &state) }).expect("open");
        for _ in 0..2 {
            ingest.poll(&mut |record| delivered.push(record)).expect("poll");
        }
        // Dropped here, as a killed task would stop after its last saved poll.
    }
    assert!(delivered.len() < 60, "stopped part way");
    delivered.extend(drain(&mut open(&log, &state)));
    assert_eq!(event_ids(&delivered), single_pass);

    // The writer restarts (a new file) and the ingest task too: still no gap, no duplicate.
    write_events(&log, 60, 80);
    delivered.extend(drain(&mut open(&log, &state)));
    assert_eq!(event_ids(&delivered), expected_ids(0..80));
    assert_strictly_increasing(&delivered);
    assert!(quarantined(&state).is_empty());
}

#[test]
fn a_changed_line_is_quarantined_with_its_window_and_the_next_checkpoint_goes_on() {
    let (_root, log, state, files) = fresh();
    let mut content = lines(&files[1]);
    let forged_id = serde_json::from_str::<serde_json::Value>(&content[2]).expect("JSON")["event_id"].as_str().expect("id").to_string();
    content[2] = content[2].replace("10.66.2.2", "10.66.2.3");
    write_lines(&files[1], &content);

    let mut ingest = open(&log, &state);
    let records = drain(&mut ingest);
    let ids = event_ids(&records);
    assert!(!ids.contains(&forged_id));
    // The signed checkpoint that closes file 1 no longer matches its lines: it is refused
    // and every line it covers is quarantined with it; the next checkpoint goes on, and
    // the gap is on record.
    assert_eq!(count(&ingest, "digest_mismatch"), content.len() as u64, "the file's records and its checkpoint");
    assert_eq!(count(&ingest, "uncovered"), 1);
    assert!(ids.contains(&"ev-59".to_string()), "the files after it are delivered");
    assert_strictly_increasing(&records);
    let entries = quarantined(&state);
    let forged = entries.iter().find(|entry| entry.line.contains("10.66.2.3")).expect("quarantined");
    assert!(forged.reason == "digest_mismatch" && forged.file.ends_with(&file_name(NODE, 1)), "{forged:?}");
    assert!(forged.detail.contains("do not match the signed checkpoint"), "{}", forged.detail);
}

#[test]
fn an_inserted_line_is_dropped_and_the_lines_after_it_still_verify() {
    let (_root, log, state, files) = fresh();
    let mut content = lines(&files[1]);
    // The same seq and tag as the genuine line, another body.
    let forged = content[2].replace("10.66.2.2", "10.66.2.9");
    content.insert(2, forged);
    write_lines(&files[1], &content);
    let mut ingest = open(&log, &state);
    let records = drain(&mut ingest);
    assert_eq!(event_ids(&records), expected_ids(0..60), "every genuine record, the inserted one not");
    assert_eq!(ingest.rejected_by_reason().iter().map(|(reason, n)| (*reason, *n)).collect::<Vec<_>>(), vec![("unsigned", 1)]);
}

/// What a compromised ingest task could do before ADR 0007: seal a record with the HMAC
/// key. The line verifies under the HMAC key and continues the chain, but no signed
/// checkpoint covers it: it is quarantined and the genuine line is delivered.
#[test]
fn a_line_forged_with_the_hmac_key_is_quarantined() {
    let (_root, log, state, files) = fresh();
    let mut content = lines(&files[1]);
    let before: serde_json::Value = serde_json::from_str(&content[1]).expect("JSON");
    let mut sealer = Sealer::new(NODE, LogKey::from_bytes(KEY), before["seq"].as_u64().expect("seq"), before["hmac"].as_str().expect("hmac"));
    let mut forged = Vec::new();
    let mut body = event(999);
    body.insert("src_ip".to_string(), "10.66.6.6".into());
    sealer.seal(&body, &mut forged).expect("seal");
    let forged = String::from_utf8(forged).expect("UTF-8").trim_end().to_string();
    mld_eventlog::verify_paths(&[files[0].clone()], &[LogKey::from_bytes(KEY)]).expect("the HMAC key verifies the log");
    content.insert(2, forged.clone());
    write_lines(&files[1], &content);
    let mut ingest = open(&log, &state);
    let records = drain(&mut ingest);
    assert_eq!(event_ids(&records), expected_ids(0..60), "the forged record is not handed on, every genuine one is");
    assert_eq!(count(&ingest, "unsigned"), 1);
    let entry = quarantined(&state).into_iter().find(|entry| entry.line == forged).expect("the forged line is quarantined");
    assert!(entry.detail.contains("no valid signed checkpoint"), "{}", entry.detail);
}

#[test]
fn records_are_handed_on_only_after_their_signed_checkpoint() {
    let root = tempfile::tempdir().expect("temp dir");
    let (log, state) = (root.path().join("log"), root.path().join("state"));
    let config = WriterConfig {
        max_file_bytes: 1 << 20,
        rotate_daily: false,
        checkpoint_every_records: 10_000,
        checkpoint_interval: std::time::Duration::from_secs(3600),
        ..WriterConfig::new(log.clone(), NODE.to_string())
    };
    let mut writer = LogWriter::open_signed(config, LogKey::from_bytes(KEY), CheckpointSigningKey::from_seed(SIGNING_SEED)).expect("open");
    let mut ingest = open(&log, &state);
    for n in 0..5 {
        writer.append(&event(n)).expect("append");
    }
    writer.sync().expect("sync");
    assert!(drain(&mut ingest).is_empty(), "written and durable, not yet covered by a checkpoint");
    assert_eq!(ingest.pending_lines(), 6, "the header and five events wait");
    // A restart in between loses nothing: the waiting lines are read again.
    drop(ingest);
    let mut ingest = open(&log, &state);
    assert!(drain(&mut ingest).is_empty());
    writer.checkpoint().expect("checkpoint");
    assert_eq!(event_ids(&drain(&mut ingest)), expected_ids(0..5), "handed on once the checkpoint verifies");
    assert!(ingest.rejected_by_reason().is_empty(), "{:?}", ingest.rejected_by_reason());

    // A checkpoint whose signature does not verify (another key claiming this key's id):
    // refused, and what it claims to cover is never handed on.
    for n in 5..8 {
        writer.append(&event(n)).expect("append");
    }
    writer.checkpoint().expect("checkpoint");
    writer.sync().expect("sync");
    drop(writer);
    let path = log.join(file_name(NODE, 0));
    let mut content = lines(&path);
    let last = content.pop().expect("the checkpoint");
    let at = last.find("\"signature\":\"").expect("signature") + 13;
    let mut bad = last.clone();
    bad.replace_range(at..at + 2, if &last[at..at + 2] == "00" { "11" } else { "00" });
    content.push(bad);
    write_lines(&path, &content);
    assert!(drain(&mut ingest).is_empty(), "nothing after a bad signature");
    assert_eq!(count(&ingest, "bad_checkpoint_signature"), 1);
}

#[test]
fn a_replayed_window_is_refused_as_stale() {
    let (_root, log, state, files) = fresh();
    let old = lines(&files[0]);
    let last = files.last().expect("files");
    let mut content = lines(last);
    // The first file again, signed checkpoint and all, at the end of the log.
    content.extend(old.iter().cloned());
    write_lines(last, &content);
    let mut ingest = open(&log, &state);
    let records = drain(&mut ingest);
    assert_eq!(event_ids(&records), expected_ids(0..60), "the copy is not delivered again");
    assert_eq!(count(&ingest, "stale_checkpoint"), old.len() as u64, "{:?}", ingest.rejected_by_reason());
    let entries = quarantined(&state);
    assert_eq!(entries.len(), old.len());
    assert_eq!(entries[0].line, old[0]);
    assert!(entries[0].detail.contains("replayed"), "{}", entries[0].detail);
}

#[test]
fn reordered_lines_are_delivered_in_seq_order() {
    let (_root, log, state, files) = fresh();
    let mut content = lines(&files[1]);
    content.swap(2, 3);
    write_lines(&files[1], &content);
    let mut ingest = open(&log, &state);
    let records = drain(&mut ingest);
    // The bytes are the writer's (the digest is over seq order): delivered, in order.
    assert_strictly_increasing(&records);
    assert_eq!(event_ids(&records), expected_ids(0..60));
}

#[test]
fn a_partial_last_line_is_waited_for_and_never_consumed() {
    let (_root, log, state, files) = fresh();
    let last = files.last().expect("files");
    let whole = std::fs::read(last).expect("read");
    let cut = whole.len() - 30;
    std::fs::write(last, &whole[..cut]).expect("truncate");
    // The cut line is the file's closing checkpoint: its records wait for it.
    let in_last: Vec<String> =
        lines(last).iter().filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok()?["event_id"].as_str().map(str::to_string)).collect();
    assert!(!in_last.is_empty());
    let mut ingest = open(&log, &state);
    let records = drain(&mut ingest);
    let before: Vec<String> = expected_ids(0..60).into_iter().filter(|id| !in_last.contains(id)).collect();
    assert_eq!(event_ids(&records), before);
    assert!(ingest.rejected_by_reason().is_empty(), "a partial line is not an error yet");
    let checkpoint = ingest.checkpoint().expect("checkpoint");
    assert_eq!((checkpoint.read_file_index, checkpoint.offset), (files.len() as u64 - 1, 0), "the checkpoint stays before the waiting lines");
    // The rest of the line arrives (after a restart of the ingest task, even).
    std::fs::write(last, &whole).expect("complete");
    let mut ingest = open(&log, &state);
    assert_eq!(event_ids(&drain(&mut ingest)), in_last);
}

#[test]
fn truncation_at_the_end_of_a_rotated_file_is_caught_by_the_next_header() {
    // Cut in the middle of the last line: the line is quarantined once the next file exists.
    let (_root, log, state, files) = fresh();
    let whole = std::fs::read(&files[0]).expect("read");
    std::fs::write(&files[0], &whole[..whole.len() - 20]).expect("truncate");
    let first_file_lines = lines(&files[0]).len() as u64;
    let first_file_events = first_file_lines - 2;
    let mut ingest = open(&log, &state);
    let records = drain(&mut ingest);
    // The cut line is file 0's checkpoint: its records are never covered.
    assert_eq!(records.len() as u64, 60 - first_file_events);
    assert_eq!(count(&ingest, "truncated_line"), 1);
    assert_eq!(count(&ingest, "unsigned"), first_file_lines - 1, "the header and events of file 0");
    assert_strictly_increasing(&records);

    // Cut at a line boundary: only the next file's header can tell.
    let (_root, log, state, files) = fresh();
    let mut content = lines(&files[0]);
    let dropped = content.pop().expect("a line");
    write_lines(&files[0], &content);
    assert!(dropped.contains("\"type\":\"checkpoint\""), "the writer closed the file with a checkpoint");
    let mut ingest = open(&log, &state);
    let records = drain(&mut ingest);
    assert_eq!(records.len() as u64, 60 - (content.len() as u64 - 1));
    let entries = quarantined(&state);
    assert_eq!(entries.len(), content.len());
    assert!(entries.iter().all(|entry| entry.reason == "unsigned" && entry.file.ends_with(&file_name(NODE, 0))), "{entries:?}");
}

#[test]
fn a_line_signed_with_another_key_is_refused() {
    let (root, log, state, files) = fresh();
    let other = root.path().join("other");
    let mut other_writer = writer(&other, [4; 32]);
    other_writer.append(&event(1000)).expect("append");
    other_writer.sync().expect("sync");
    let foreign = lines(&log_files(&other)[0])[1].clone();
    let last = files.last().expect("files");
    let mut content = lines(last);
    content.insert(1, foreign);
    write_lines(last, &content);
    let mut ingest = open(&log, &state);
    let records = drain(&mut ingest);
    assert_eq!(event_ids(&records), expected_ids(0..60));
    assert_eq!(count(&ingest, "unsigned"), 1);
    assert!(quarantined(&state)[0].detail.contains("no valid signed checkpoint"));
}

#[test]
fn records_older_than_the_age_window_are_refused() {
    let root = tempfile::tempdir().expect("temp dir");
    let (log, state) = (root.path().join("log"), root.path().join("state"));
    let mut writer = writer(&log, KEY);
    for n in 0..10 {
        let mut record = event(n);
        if n == 5 {
            record.insert("ts_us".to_string(), (BASE_TS_US - 2 * 3600 * 1_000_000).into());
        }
        writer.append(&record).expect("append");
    }
    writer.sync().expect("sync");
    drop(writer);
    let mut ingest = open(&log, &state);
    let records = drain(&mut ingest);
    let mut expected = expected_ids(0..10);
    expected.remove(5);
    assert_eq!(event_ids(&records), expected, "the chain goes on past the old record");
    assert_eq!(count(&ingest, "too_old"), 1);
}

#[test]
fn an_old_file_copied_in_as_a_new_index_is_refused_after_a_restart() {
    let (_root, log, state, files) = fresh();
    assert_eq!(drain(&mut open(&log, &state)).len(), 60);
    // Stopped; meanwhile an old file reappears under the next index.
    let next = files.len() as u64;
    std::fs::copy(&files[0], log.join(file_name(NODE, next))).expect("copy");
    let copied_lines = lines(&files[0]).len() as u64;
    let small = IngestConfig { recent_seqs: 4, ..config(&log, &state) };
    let mut ingest = Ingest::open(small).expect("open");
    assert!(drain(&mut ingest).is_empty(), "nothing of the copy is delivered");
    // Its signed checkpoint covers records at or below the last one accepted.
    assert_eq!(count(&ingest, "stale_checkpoint"), copied_lines, "every line refused: {:?}", ingest.rejected_by_reason());
    assert_eq!(ingest.nonces().high_water(NODE), ingest.checkpoint().and_then(|checkpoint| checkpoint.last_seq));
}

#[test]
fn a_removed_or_shrunk_file_is_reported_and_reading_goes_on_at_the_next_file() {
    for case in ["removed", "shrunk"] {
        let (_root, log, state, files) = fresh();
        // Read part of file 1, then the operator removes (or cuts) it.
        let mut ingest = Ingest::open(IngestConfig { max_batch_lines: 2, ..config(&log, &state) }).expect("open");
        let mut delivered = Vec::new();
        while ingest.checkpoint().is_none_or(|checkpoint| checkpoint.read_file_index < 1 || checkpoint.offset == 0) {
            ingest.poll(&mut |record| delivered.push(record)).expect("poll");
        }
        drop(ingest);
        match case {
            "removed" => std::fs::remove_file(&files[1]).expect("remove"),
            _ => std::fs::write(&files[1], b"").expect("cut"),
        }
        let mut ingest = open(&log, &state);
        delivered.extend(drain(&mut ingest));
        assert_eq!(count(&ingest, "file_gone"), 1, "{case}");
        let entry = quarantined(&state).into_iter().find(|entry| entry.reason == "file_gone").expect("on record");
        assert!(entry.file.ends_with(&file_name(NODE, 1)) && entry.detail.contains("went on at the next file"), "{case}: {entry:?}");
        // The next file's header re-anchors the chain: everything after it is delivered.
        assert!(event_ids(&delivered).contains(&"ev-59".to_string()), "{case}");
        assert_strictly_increasing(&delivered);
    }
}

#[test]
fn the_quarantine_is_bounded_and_keeps_the_newest_entries() {
    let (_root, log, state, files) = fresh();
    // 40 forged lines inserted into the last file: 40 entries of about 600 bytes.
    let last = files.last().expect("files");
    let mut content = lines(last);
    let genuine = content[1].clone();
    for n in 0..40 {
        content.insert(1, genuine.replace("10.66.2.2", &format!("10.66.3.{n}")));
    }
    write_lines(last, &content);
    let mut ingest = Ingest::open(IngestConfig { max_quarantine_bytes: 4096, ..config(&log, &state) }).expect("open");
    drain(&mut ingest);
    assert_eq!(count(&ingest, "unsigned"), 40);
    let current = std::fs::metadata(state.join(QUARANTINE_FILE)).expect("current").len();
    let previous = std::fs::metadata(state.join(mld_ingest::QUARANTINE_PREVIOUS_FILE)).expect("previous").len();
    assert!(current <= 4096 && previous <= 4096, "{current} and {previous} bytes");
    // The newest entry (inserted first, so read last: 10.66.3.0) is in the current file.
    let newest = quarantined(&state).last().cloned().expect("entries");
    assert!(newest.line.contains("10.66.3.0\""), "{newest:?}");
}
