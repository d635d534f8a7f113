//! The text index on the decisions of a real replay (tests/pcap/lab-attacks.pcap through
//! `mldefender replay`: an nmap scan alerted then blocked, a slow HTTP alert, a client's
//! burst alerted as password guessing, and one observation), plus an expiry and a refusal
//! in the same shape, asked in words with the sentence embedder scripts/setup installs.

use std::path::{Path, PathBuf};

use mld_history::{AskFilter, TextIndex};
use mld_model::signing::ModelPublicKey;
use mld_model::text::TextModel;
use serde_json::{json, Map, Value};

const RELEASE_KEY: &str = "viO2lPvEO07YVapWMGqPadpKkt4VNsnwQftl4CPiHns=";
const ONNXRUNTIME: &str = "/usr/local/lib/mldefender/libonnxruntime.so.1.31.1";
const TEXT_DIR: &str = "/usr/local/share/mldefender/text";
const HOUR_US: i64 = 3_600_000_000;

fn model() -> TextModel {
    let runtime = std::env::var_os("MLD_ONNXRUNTIME").map_or_else(|| PathBuf::from(ONNXRUNTIME), PathBuf::from);
    mld_model::init_runtime(&runtime).expect("ONNX Runtime (scripts/setup installs it)");
    let dir = std::env::var_os("MLD_TEXT_MODEL_DIR").map_or_else(|| PathBuf::from(TEXT_DIR), PathBuf::from);
    let key = ModelPublicKey::from_base64(RELEASE_KEY).expect("release key");
    TextModel::load(&dir, "text-embedder", &key).expect("the text model (scripts/setup installs it)")
}

/// The fixture's lines and two more decisions about the scanner; (seq, line).
fn lines() -> Vec<(u64, String)> {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lab-attacks-decisions.jsonl");
    let text = std::fs::read_to_string(fixture).expect("read the fixture");
    let mut lines: Vec<(u64, String)> = text
        .lines()
        .map(|line| {
            let record: Map<String, Value> = serde_json::from_str(line).expect("a record");
            (record["seq"].as_u64().expect("seq"), line.to_string())
        })
        .collect();
    let block =
        lines.iter().map(|(_, line)| serde_json::from_str::<Map<String, Value>>(line).expect("record")).find(|r| r["action"] == "block").expect("the block");
    let mut expire = block.clone();
    expire.insert("action".into(), json!("expire"));
    expire.insert("ts_us".into(), json!(block["ts_us"].as_i64().expect("ts") + HOUR_US));
    let mut refused = block.clone();
    for (field, value) in [
        ("action", json!("refused")),
        ("category", json!("flood")),
        ("protocol_name", json!("udp")),
        ("dst_port", json!(53)),
        ("allowlisted", json!(true)),
        ("src_ip", json!("10.66.9.53")),
    ] {
        refused.insert(field.into(), value);
    }
    lines.push((5000, serde_json::to_string(&expire).expect("json")));
    lines.push((5001, serde_json::to_string(&refused).expect("json")));
    lines
}

fn scan_block_ts() -> i64 {
    lines().iter().map(|(_, line)| serde_json::from_str::<Map<String, Value>>(line).expect("record")).find(|r| r["action"] == "block").expect("block")["ts_us"]
        .as_i64()
        .expect("ts")
}

#[test]
fn who_scanned_the_server_finds_the_scanner_block_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut index = TextIndex::create(&dir.path().join("text"), model(), false).expect("create");
    let lines = lines();
    let refs: Vec<(u64, &str)> = lines.iter().map(|(seq, line)| (*seq, line.as_str())).collect();
    let stats = index.add_lines(&refs).expect("add");
    assert_eq!((stats.indexed, stats.skipped, stats.unreadable), (6, 1, 0), "decisions are described, the observation is not");
    assert_eq!(index.add_lines(&refs).expect("again").indexed, 0, "seqs already in are skipped");

    let now = scan_block_ts() + 2 * HOUR_US;
    let answer = index.ask("who scanned the server", 10, &AskFilter::default(), now, 0).expect("ask");
    let first = &answer.hits[0].fields;
    assert_eq!((first.action.as_str(), first.src_ip.as_str(), first.category.as_str()), ("block", "10.66.2.2", "scan"), "{:#?}", answer.hits);
    assert!(first.description.as_deref().expect("described").starts_with("blocked 10.66.2.2, which scanned 10.66.9.2"));
    assert_eq!(answer.time_filter, None);

    let guessing = index.ask("password guessing", 3, &AskFilter::default(), now, 0).expect("ask");
    assert_eq!(guessing.hits[0].fields.category, "brute-force");
    let refused = index.ask("what was not blocked because the host is protected", 3, &AskFilter::default(), now, 0).expect("ask");
    assert_eq!(refused.hits[0].fields.action, "refused");
    let expired = index.ask("which blocks expired", 3, &AskFilter::default(), now, 0).expect("ask");
    assert_eq!(expired.hits[0].fields.action, "expire");
}

#[test]
fn addresses_and_time_words_in_the_question_filter_the_answer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut index = TextIndex::create(&dir.path().join("text"), model(), false).expect("create");
    let lines = lines();
    let refs: Vec<(u64, &str)> = lines.iter().map(|(seq, line)| (*seq, line.as_str())).collect();
    index.add_lines(&refs).expect("add");

    let now = scan_block_ts() + 2 * HOUR_US;
    let client = index.ask("what did 10.66.1.2 do?", 10, &AskFilter::default(), now, 0).expect("ask");
    assert_eq!(client.address_filter.as_deref(), Some("events of 10.66.1.2"));
    assert_eq!(client.summary.sources, [("10.66.1.2".to_string(), 1)]);
    assert_eq!(client.summary.to_string().split(';').next(), Some("1 events from 1 source: 10.66.1.2 (1)"));

    // An hour before `now` only the expiry (an hour after the block) is left.
    let recent = index.ask("scans in the last hour", 10, &AskFilter::default(), now, 0).expect("ask");
    assert_eq!(recent.time_filter.as_deref(), Some("the last hour"));
    assert!(!recent.hits.is_empty());
    assert!(recent.hits.iter().all(|hit| hit.fields.ts_us >= now - HOUR_US), "{:#?}", recent.hits);
    assert!(recent.hits.iter().all(|hit| hit.fields.action == "expire"));

    // A flag's range wins over the words.
    let mut flags = AskFilter::default();
    flags.search.from_ts_us = Some(0);
    let flagged = index.ask("scans in the last hour", 10, &flags, now, 0).expect("ask");
    assert_eq!(flagged.time_filter, None);
    assert!(flagged.hits.len() > recent.hits.len());
}

/// The scanner's block again and again, from `count` sources, a second apart from `first_ts`.
fn repeated_blocks(count: u64, first_seq: u64, first_ts: i64) -> Vec<(u64, String)> {
    let block = lines()
        .into_iter()
        .map(|(_, line)| serde_json::from_str::<Map<String, Value>>(&line).expect("record"))
        .find(|r| r["action"] == "block")
        .expect("block");
    (0..count)
        .map(|n| {
            let mut record = block.clone();
            record.insert("src_ip".into(), json!(format!("10.{}.{}.{}", 100 + n / 65536, (n / 256) % 256, n % 256)));
            record.insert("ts_us".into(), json!(first_ts + n as i64 * 1_000_000));
            record.insert("seq".into(), json!(first_seq + n));
            (first_seq + n, serde_json::to_string(&record).expect("json"))
        })
        .collect()
}

#[test]
fn equal_answers_are_the_newest_and_a_filter_finds_a_match_behind_thousands_of_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("text");
    let mut index = TextIndex::create(&path, model(), false).expect("create");
    // One old block by 10.66.77.7, then 6,000 newer blocks that read the same: more than a
    // search could over-fetch (MAX_CANDIDATES) to filter afterwards.
    let start = scan_block_ts();
    let mut all = repeated_blocks(1, 10, start);
    all[0].1 = all[0].1.replace("\"10.100.0.0\"", "\"10.66.77.7\"");
    all.extend(repeated_blocks(6000, 100, start + 10_000_000));
    let refs: Vec<(u64, &str)> = all.iter().map(|(seq, line)| (*seq, line.as_str())).collect();
    assert_eq!(index.add_lines(&refs).expect("add").indexed, 6001);
    assert_eq!(index.distinct_texts(), 1, "the blocks differ only in address and time: one text");

    let now = start + 10 * HOUR_US;
    let check = |index: &mut TextIndex| {
        let newest = index.ask("who scanned the server", 5, &AskFilter::default(), now, 0).expect("ask");
        let seqs: Vec<u64> = newest.hits.iter().map(|hit| hit.id).collect();
        assert_eq!(seqs, [6099, 6098, 6097, 6096, 6095], "the five newest of 6,001 equal answers, newest first");
        let old = index.ask("what did 10.66.77.7 do", 5, &AskFilter::default(), now, 0).expect("ask");
        assert_eq!(old.hits.iter().map(|hit| hit.id).collect::<Vec<_>>(), [10], "the one block of that address, behind 6,000 equal ones");
        let mut early = AskFilter::default();
        early.search.to_ts_us = Some(start + 11_000_000);
        let before = index.ask("who scanned the server", 5, &early, now, 0).expect("ask");
        assert_eq!(before.hits.iter().map(|hit| hit.id).collect::<Vec<_>>(), [100, 10], "a time filter that keeps the oldest two");
    };
    check(&mut index);
    index.index_mut().save().expect("save");
    drop(index);
    let reopened = mld_index::EventIndex::open(&path).expect("reopen");
    let mut index = TextIndex::from_index(reopened, model(), false).expect("read back").map_err(|refused| refused.1).expect("the same model and wording");
    assert_eq!(index.distinct_texts(), 1, "grouped again from the side store");
    check(&mut index);
}
