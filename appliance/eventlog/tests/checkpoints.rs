//! Signed checkpoints (ADR 0007): the writer covers every record with an Ed25519-signed
//! checkpoint (by count, by time, before closing a file, at shutdown, and after a crash),
//! and a reader with the public key only verifies the log and catches any change.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mld_eventlog::{
    file_name, verify_paths, verify_paths_signed, CheckpointPublicKey, CheckpointSigningKey, FailureReason, LogKey, LogWriter, WindowReason, WindowVerifier,
    WriterConfig,
};

const NODE: &str = "node-a";

fn signer() -> CheckpointSigningKey {
    CheckpointSigningKey::from_seed([4; 32])
}

fn public() -> Vec<CheckpointPublicKey> {
    vec![signer().public_key()]
}

fn config(dir: &Path) -> WriterConfig {
    WriterConfig {
        max_file_bytes: 4096,
        rotate_daily: false,
        checkpoint_every_records: 8,
        checkpoint_interval: Duration::from_secs(3600),
        ..WriterConfig::new(dir.to_path_buf(), NODE.to_string())
    }
}

fn event(n: u64) -> serde_json::Map<String, serde_json::Value> {
    let mut record = serde_json::Map::new();
    record.insert("type".to_string(), "event".into());
    record.insert("event_id".to_string(), format!("ev-{n}").into());
    record
}

fn all_lines(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).expect("list").map(|entry| entry.expect("entry").path()).filter(|path| path.to_string_lossy().contains("events-")).collect();
    files.sort();
    files
        .iter()
        .flat_map(|path| std::fs::read_to_string(path).expect("read").lines().map(|line| serde_json::from_str(line).expect("JSON")).collect::<Vec<_>>())
        .collect()
}

#[test]
fn every_record_is_covered_and_the_log_verifies_with_the_public_key_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut writer = LogWriter::open_signed(config(dir.path()), LogKey::from_bytes([9; 32]), signer()).expect("open");
    for n in 0..100 {
        writer.append(&event(n)).expect("append");
    }
    writer.checkpoint().expect("checkpoint");
    writer.sync().expect("sync");
    drop(writer);
    let lines = all_lines(dir.path());
    let checkpoints: Vec<&serde_json::Value> = lines.iter().filter(|line| line["type"] == "checkpoint").collect();
    assert!(checkpoints.len() >= 100 / 9, "{} checkpoints", checkpoints.len());
    assert_eq!(lines.last().expect("lines")["type"], "checkpoint", "nothing is left uncovered at shutdown");
    // Every file the writer closed ends with a checkpoint.
    let files = std::fs::read_dir(dir.path()).expect("list").count();
    assert!(files >= 3, "rotated: {files} files");
    for index in 0..files as u64 {
        let text = std::fs::read_to_string(dir.path().join(file_name(NODE, index))).expect("read");
        assert!(text.lines().last().expect("line").contains("\"type\":\"checkpoint\""), "file {index} ends with a checkpoint");
    }
    // The checkpoints chain and cover every other record exactly once.
    let mut expected_first = 1;
    let mut prev = "0".repeat(64);
    for checkpoint in &checkpoints {
        assert_eq!(checkpoint["covered_first_seq"], expected_first);
        assert_eq!(checkpoint["seq"], checkpoint["covered_last_seq"].as_u64().expect("seq") + 1);
        assert_eq!(checkpoint["prev_checkpoint_sha256"], prev.as_str());
        prev = checkpoint["covered_sha256"].as_str().expect("digest").to_string();
        expected_first = checkpoint["seq"].as_u64().expect("seq") + 1;
    }
    let summary = verify_paths_signed(&[dir.path().to_path_buf()], &public()).expect("verifies by checkpoints");
    assert_eq!((summary.records + summary.checkpoints, summary.last_seq + 1), (lines.len() as u64, lines.len() as u64));
    verify_paths(&[dir.path().to_path_buf()], &[LogKey::from_bytes([9; 32])]).expect("and still by HMAC");
    let other = CheckpointSigningKey::from_seed([5; 32]).public_key();
    let failure = verify_paths_signed(&[dir.path().to_path_buf()], &[other]).expect_err("another public key");
    assert!(matches!(failure.reason, FailureReason::Checkpoint(WindowReason::UnknownSigningKey(_))), "{failure}");
}

#[test]
fn a_one_byte_change_anywhere_is_caught_by_the_public_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut writer = LogWriter::open_signed(config(dir.path()), LogKey::from_bytes([9; 32]), signer()).expect("open");
    for n in 0..20 {
        writer.append(&event(n)).expect("append");
    }
    drop(writer);
    let path = dir.path().join(file_name(NODE, 0));
    let original = std::fs::read(&path).expect("read");
    // Every byte of the first lines (records, and the first checkpoint), one at a time.
    let first_checkpoint_end = String::from_utf8_lossy(&original)
        .find("\"type\":\"checkpoint\"")
        .map(|at| original[at..].iter().position(|b| *b == b'\n').expect("newline") + at)
        .expect("a checkpoint");
    for at in (0..first_checkpoint_end).step_by(7) {
        let mut changed = original.clone();
        // A byte changed (the structure kept, so the line still parses where it can).
        changed[at] = if changed[at] == b'1' {
            b'2'
        } else if changed[at] == b'"' || changed[at] == b'\n' {
            continue;
        } else {
            b'1'
        };
        if changed[at] == original[at] {
            continue;
        }
        std::fs::write(&path, &changed).expect("write");
        assert!(verify_paths_signed(&[dir.path().to_path_buf()], &public()).is_err(), "byte {at} changed and the log still verified");
    }
    std::fs::write(&path, &original).expect("write");
    verify_paths_signed(&[dir.path().to_path_buf()], &public()).expect("restored");
}

#[test]
fn after_a_crash_the_next_run_covers_what_the_last_one_left_unsigned() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut writer = LogWriter::open_signed(config(dir.path()), LogKey::from_bytes([9; 32]), signer()).expect("open");
    for n in 0..11 {
        writer.append(&event(n)).expect("append");
    }
    writer.sync().expect("sync");
    // A crash: no checkpoint at the end (the process dies without dropping the writer).
    std::mem::forget(writer);
    let lines = all_lines(dir.path());
    assert_ne!(lines.last().expect("lines")["type"], "checkpoint");
    assert!(verify_paths_signed(&[dir.path().to_path_buf()], &public()).is_err(), "the tail is unsigned");
    let mut writer = LogWriter::open_signed(config(dir.path()), LogKey::from_bytes([9; 32]), signer()).expect("reopen");
    writer.append(&event(11)).expect("append");
    drop(writer);
    let summary = verify_paths_signed(&[dir.path().to_path_buf()], &public()).expect("covered by the next run");
    assert_eq!(summary.last_seq + 1, all_lines(dir.path()).len() as u64);
}

#[test]
fn a_reader_hands_on_records_only_once_their_checkpoint_verifies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut writer = LogWriter::open_signed(config(dir.path()), LogKey::from_bytes([9; 32]), signer()).expect("open");
    for n in 0..7 {
        writer.append(&event(n)).expect("append");
    }
    drop(writer);
    let text = std::fs::read_to_string(dir.path().join(file_name(NODE, 0))).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    let mut verifier: WindowVerifier<usize> = WindowVerifier::new(public(), NODE.to_string(), None, 1000, 1 << 20);
    for (number, line) in lines.iter().enumerate().take(lines.len() - 1) {
        assert!(verifier.push(0, number, line).decided.is_empty(), "line {number} decided before its checkpoint");
    }
    let pushed = verifier.push(0, lines.len() - 1, lines[lines.len() - 1]);
    assert!(pushed.decided.iter().all(|decided| decided.verdict.is_ok()), "{:?}", pushed.decided);
    assert_eq!(pushed.decided.len(), lines.len());

    // A forged line (valid-looking, right seq, right prev_tag) inserted before the real
    // one, and a checkpoint with a bad signature: neither is accepted, the real lines are.
    let mut verifier: WindowVerifier<usize> = WindowVerifier::new(public(), NODE.to_string(), None, 1000, 1 << 20);
    let forged = lines[2].replace("ev-1", "ev-X");
    let bad_signature = {
        let mut bad = lines[lines.len() - 1].to_string();
        let at = bad.find("\"signature\":\"").expect("signature") + 13;
        let flipped = if &bad[at..at + 1] == "0" { "1" } else { "0" };
        bad.replace_range(at..at + 1, flipped);
        bad
    };
    let mut decided = Vec::new();
    for (number, line) in lines.iter().enumerate().take(lines.len() - 1) {
        if number == 2 {
            decided.extend(verifier.push(0, 100, &forged).decided);
        }
        decided.extend(verifier.push(0, number, line).decided);
    }
    decided.extend(verifier.push(0, 101, &bad_signature).decided);
    assert_eq!(decided.len(), 1, "only the bad checkpoint is decided: {decided:?}");
    assert_eq!(decided[0].verdict, Err(WindowReason::BadCheckpointSignature));
    let pushed = verifier.push(0, lines.len() - 1, lines[lines.len() - 1]);
    let rejected: Vec<_> = pushed.decided.iter().filter(|decided| decided.verdict.is_err()).map(|decided| (decided.token, decided.verdict.clone())).collect();
    // The forged line was one the bad checkpoint named: that is its reason.
    assert_eq!(rejected, vec![(100, Err(WindowReason::BadCheckpointSignature))]);
    assert_eq!(pushed.decided.iter().filter(|decided| decided.verdict.is_ok()).count(), lines.len());

    // A signed checkpoint whose lines were altered: refused, and its lines with it.
    let mut verifier: WindowVerifier<usize> = WindowVerifier::new(public(), NODE.to_string(), None, 1000, 1 << 20);
    for (number, line) in lines.iter().enumerate().take(lines.len() - 1) {
        let line = if number == 3 { line.replace("ev-2", "ev-Z") } else { line.to_string() };
        verifier.push(0, number, &line);
    }
    let pushed = verifier.push(0, lines.len() - 1, lines[lines.len() - 1]);
    assert_eq!(pushed.decided.len(), lines.len());
    assert!(pushed.decided.iter().all(|decided| decided.verdict == Err(WindowReason::DigestMismatch)), "{:?}", pushed.decided);
}
