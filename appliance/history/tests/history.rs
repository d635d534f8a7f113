//! The history against real signed logs (written by `LogWriter`) and the shipped signed
//! embedder: only verified events are indexed; a history killed at any point resumes to
//! the index a fresh build makes; a deleted or damaged index is rebuilt and answers the same.
//!
//! Needs ONNX Runtime (scripts/setup installs it; `MLD_ONNXRUNTIME` overrides the path).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mld_eventlog::{event_fields, CheckpointSigningKey, LogKey, LogWriter, WriterConfig};

/// The log's checkpoint signing key (seed): the history verifies with its public key only.
const SIGNING_SEED: [u8; 32] = [6; 32];
use mld_history::{answer, Embedder, EventRef, Filter, History, IndexSettings, Query, Rebuild};
use mld_ingest::{IngestConfig, QuarantineEntry, QUARANTINE_FILE};
use serde_json::{Map, Value};

const KEY: [u8; 32] = [7; 32];
const NODE: &str = "node-h";
const WINDOWS: [u64; 2] = [10, 60];
const BASE_TS_US: u64 = 1_700_000_000_000_000;
/// The project's release key: it signs models/*.json.
const RELEASE_KEY: &str = "viO2lPvEO07YVapWMGqPadpKkt4VNsnwQftl4CPiHns=";
const SCENARIOS: [&str; 4] = ["scan", "flood", "brute-force", "benign"];

fn runtime() -> PathBuf {
    let path = std::env::var_os("MLD_ONNXRUNTIME").map_or_else(|| PathBuf::from("/usr/local/lib/mldefender/libonnxruntime.so.1.31.1"), PathBuf::from);
    assert!(path.exists(), "ONNX Runtime library {} not found: run scripts/setup (as root), or set MLD_ONNXRUNTIME", path.display());
    path
}

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

fn embedder() -> Embedder {
    Embedder::load(&runtime(), &models_dir(), "embedder", RELEASE_KEY, &WINDOWS).expect("load the shipped embedder")
}

/// A deterministic generator (splitmix64).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Event `n` of scenario `n % 4`: every feature of the event schema set around a centre
/// that differs by orders of magnitude between scenarios, with ±10 % noise per event.
fn event(n: u64) -> Map<String, Value> {
    let scenario = (n % SCENARIOS.len() as u64) as usize;
    let mut record = Map::new();
    record.insert("type".into(), "event".into());
    record.insert("event_id".into(), format!("ev-{:024x}", mix(n) as u128 * 7919).into());
    record.insert("ts_us".into(), (BASE_TS_US + n * 1_000_000).into());
    record.insert("src_ip".into(), format!("10.0.{scenario}.{}", n % 200 + 1).into());
    record.insert("dst_ip".into(), "192.0.2.10".into());
    record.insert("dst_port".into(), (20 + scenario as u64 * 1000).into());
    record.insert("protocol".into(), 6.into());
    record.insert("protocol_name".into(), "tcp".into());
    for (index, field) in event_fields(&WINDOWS).iter().enumerate() {
        let numeric = field.name.starts_with("cic_") || field.name.starts_with("src_1") || field.name.starts_with("src_6");
        if !numeric {
            continue;
        }
        if field.kind == "boolean" {
            record.insert(field.name.clone(), (scenario == 1).into());
            continue;
        }
        let centre = 10f64.powi(((scenario * 2 + index) % 7) as i32);
        let noise = 0.9 + 0.2 * (mix(n * 1000 + index as u64) >> 11) as f64 / (1u64 << 53) as f64;
        record.insert(field.name.clone(), serde_json::Number::from_f64((centre * noise).round()).map_or(Value::Null, Value::Number));
    }
    record.insert("score_fast".into(), 0.5.into());
    record.insert("score_final".into(), 0.5.into());
    record.insert("category".into(), SCENARIOS[scenario].into());
    record.insert("action".into(), if scenario == 3 { "observe" } else { "block" }.into());
    record
}

fn write_events(dir: &Path, from: u64, to: u64) {
    let config =
        WriterConfig { max_file_bytes: 64 * 1024, sync_every_records: 64, rotate_daily: false, ..WriterConfig::new(dir.to_path_buf(), NODE.to_string()) };
    let mut writer = LogWriter::open_signed(config, LogKey::from_bytes(KEY), CheckpointSigningKey::from_seed(SIGNING_SEED)).expect("open writer");
    for n in from..to {
        writer.append(&event(n)).expect("append");
    }
    writer.sync().expect("sync");
}

struct Paths {
    _root: tempfile::TempDir,
    log: PathBuf,
    state: PathBuf,
}

impl Paths {
    fn new() -> Paths {
        let root = tempfile::tempdir().expect("temp dir");
        let log = root.path().join("log");
        let state = root.path().join("state");
        Paths { log, state, _root: root }
    }

    fn index(&self) -> PathBuf {
        self.state.join("index")
    }

    fn open(&self, save_interval: Duration) -> History {
        self.open_in(&self.state, save_interval)
    }

    fn open_in(&self, state: &Path, save_interval: Duration) -> History {
        let ingest =
            IngestConfig::new(self.log.clone(), state.to_path_buf(), NODE.to_string(), vec![CheckpointSigningKey::from_seed(SIGNING_SEED).public_key()]);
        let settings =
            IndexSettings { dir: state.join("index"), factory: "Flat".to_string(), search_parameters: Vec::new(), save_interval, max_events: 1_000_000 };
        History::open(ingest, settings, embedder()).expect("open history")
    }
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).expect("list").map(|entry| entry.expect("entry").path()).collect();
    files.retain(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("events-")));
    files.sort();
    files
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).expect("read").lines().map(str::to_string).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.iter().map(|line| format!("{line}\n")).collect::<String>()).expect("write");
}

/// Steps until a step reads nothing, then saves.
fn drain(history: &mut History) {
    while history.step().expect("step").lines > 0 {}
    history.save().expect("save");
}

fn quarantine_reasons(state: &Path) -> Vec<String> {
    std::fs::read_to_string(state.join(QUARANTINE_FILE))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str::<QuarantineEntry>(line).expect("quarantine entry").reason)
        .collect()
}

/// Every indexed id with its vector and fields, for comparing two indexes.
fn contents(history: &History) -> Vec<(u64, Vec<u32>, String)> {
    let index = history.index();
    let last = index.last_id().unwrap_or(0);
    (0..=last)
        .filter_map(|id| index.get(id).expect("read"))
        .map(|stored| (stored.fields.seq, stored.vector.iter().map(|value| value.to_bits()).collect(), serde_json::to_string(&stored.fields).expect("JSON")))
        .collect()
}

fn similar(history: &mut History, seq: u64, k: usize) -> Vec<(u64, String)> {
    let query = Query::SimilarToEvent { event: EventRef::Seq(seq), k, filter: Filter::default() };
    let (index, embedder) = history.parts();
    answer(index, Some(embedder), &query).expect("answer").hits.into_iter().map(|hit| (hit.fields.seq, hit.fields.category)).collect()
}

#[test]
fn verified_events_are_indexed_and_answer_by_similarity_address_and_event_id() {
    let paths = Paths::new();
    write_events(&paths.log, 0, 400);
    let mut history = paths.open(Duration::from_secs(3600));
    assert_eq!(history.rebuilt(), Some(&Rebuild::Missing), "first start");
    drain(&mut history);
    assert_eq!(history.index().len(), 400);

    // Nearest events to a scan event are the other scan events.
    let hits = similar(&mut history, 5 + 4, 20);
    assert_eq!(hits.len(), 20);
    let query_category = history.index().get(9).expect("read").expect("indexed").fields.category;
    assert!(hits.iter().all(|(seq, category)| *category == query_category && *seq != 9), "{query_category}: {hits:?}");

    // The same event given as an object embeds to the same vector: distance 0 to itself.
    let (index, embedder) = history.parts();
    let object = Query::SimilarToObject { object: event(8), k: 1, filter: Filter::default() };
    let found = answer(index, Some(embedder), &object).expect("answer");
    let seq_of_event_8 = index.find_event_id(event(8)["event_id"].as_str().expect("id")).expect("lookup").expect("indexed");
    assert_eq!(found.hits[0].fields.seq, seq_of_event_8);
    assert_eq!(found.hits[0].distance, Some(0.0));

    // By event id, with a filter; and by address.
    let by_id = Query::SimilarToEvent {
        event: EventRef::parse(event(8)["event_id"].as_str().expect("id")),
        k: 5,
        filter: Filter { actions: vec!["observe".into()], ..Filter::default() },
    };
    let found = answer(index, None, &by_id).expect("answer");
    assert_eq!(found.query_event.as_ref().map(|fields| fields.seq), Some(seq_of_event_8));
    assert!(found.hits.iter().all(|hit| hit.fields.action == "observe") && found.hits.len() == 5);
    let by_ip = Query::Ip { ip: "10.0.2.3".parse().expect("ip"), limit: 100, filter: Filter::default() };
    let found = answer(index, None, &by_ip).expect("answer");
    assert!(!found.hits.is_empty() && found.hits.iter().all(|hit| hit.fields.src_ip == "10.0.2.3"));
    assert!(found.hits.windows(2).all(|pair| pair[0].fields.seq > pair[1].fields.seq), "newest first");

    // Clear refusals.
    let error = answer(index, None, &Query::SimilarToEvent { event: EventRef::Seq(99_999), k: 5, filter: Filter::default() }).expect_err("unknown seq");
    assert!(error.to_string().contains("99999"), "{error}");
    let error = answer(index, None, &Query::Ip { ip: "10.0.2.3".parse().expect("ip"), limit: 0, filter: Filter::default() }).expect_err("limit 0");
    assert!(error.to_string().contains("limit"), "{error}");
    let mut nothing = Map::new();
    nothing.insert("hello".into(), 1.into());
    let error = answer(index, Some(embedder), &Query::SimilarToObject { object: nothing, k: 5, filter: Filter::default() }).expect_err("no features");
    assert!(error.to_string().contains("none of the embedder's features"), "{error}");
}

#[test]
fn forged_replayed_reordered_truncated_and_foreign_lines_are_never_indexed() {
    // Each kind of tampering on a fresh log: the line is quarantined with its reason, and
    // the index holds exactly the genuine events the signed checkpoints let through (a
    // reordering keeps the writer's bytes: they are delivered in seq order).
    let cases: [(&str, &str); 5] =
        [("forge", "digest_mismatch"), ("replay", "unsigned"), ("reorder", ""), ("truncate", "truncated_line"), ("wrong-key", "unsigned")];
    for (case, reason) in cases {
        let paths = Paths::new();
        write_events(&paths.log, 0, 300);
        let files = log_files(&paths.log);
        assert!(files.len() >= 3, "rotation made {} files", files.len());
        let mut content = lines(&files[1]);
        let mut must_not_be_indexed: Vec<String> = Vec::new();
        match case {
            "forge" => {
                content[3] = content[3].replace("\"10.0.", "\"10.9.");
                must_not_be_indexed.push("10.9.".into());
            }
            "replay" => {
                let old = lines(&files[0])[2].clone();
                let last = files.last().expect("files");
                let mut tail = lines(last);
                // Before the file's closing checkpoint (after it, it would wait for one).
                let at = tail.len() - 1;
                tail.insert(at, old);
                write_lines(last, &tail);
            }
            "reorder" => content.swap(3, 4),
            "truncate" => {
                let cut = content[5].len() / 2;
                content[5].truncate(cut);
                content.truncate(6);
            }
            "wrong-key" => {
                let other = paths.state.parent().expect("root").join("other");
                let config = WriterConfig { rotate_daily: false, ..WriterConfig::new(other.clone(), NODE.to_string()) };
                let mut writer = LogWriter::open_signed(config, LogKey::from_bytes([1; 32]), CheckpointSigningKey::from_seed(SIGNING_SEED)).expect("writer");
                let mut foreign = event(10_000);
                foreign.insert("src_ip".into(), "10.77.7.7".into());
                writer.append(&foreign).expect("append");
                writer.sync().expect("sync");
                content.insert(3, lines(&log_files(&other)[0])[1].clone());
                must_not_be_indexed.push("10.77.7.7".into());
            }
            _ => unreachable!(),
        }
        if case == "truncate" {
            // The file cut short in the middle of a line: no newline at its end.
            std::fs::write(&files[1], content.join("\n")).expect("write");
        } else {
            write_lines(&files[1], &content);
        }

        let mut history = paths.open(Duration::from_secs(3600));
        drain(&mut history);
        let reasons = quarantine_reasons(&paths.state);
        assert!(reasons.iter().any(|found| found == reason) || (reason.is_empty() && reasons.is_empty()), "{case}: quarantine reasons {reasons:?}");
        // What the ingest foundation delivered is exactly what is indexed, once.
        let indexed = contents(&history);
        let seqs: BTreeSet<u64> = indexed.iter().map(|(seq, _, _)| *seq).collect();
        assert_eq!(seqs.len(), indexed.len());
        assert_eq!(history.ingest().nonces().high_water(NODE).map(|seq| seq >= *seqs.last().expect("some")), Some(true));
        for (_, _, fields) in &indexed {
            for text in &must_not_be_indexed {
                assert!(!fields.contains(text.as_str()), "{case}: {fields}");
            }
        }
        assert!(
            indexed.len() < 300 || case == "replay" || case == "wrong-key" || case == "reorder",
            "{case}: a genuine event was lost with its window, not {}",
            indexed.len()
        );
        assert!(indexed.len() <= 300);
        assert!(indexed.len() >= 250, "{case}: the rest of the log is still indexed ({})", indexed.len());
    }
}

#[test]
fn a_history_killed_at_any_point_resumes_to_the_index_a_fresh_build_makes() {
    let paths = Paths::new();
    write_events(&paths.log, 0, 1500);
    // Killed again and again: each run does a few steps (a step reads at most 4096
    // lines; a small batch makes more runs), sometimes saving, then is dropped without
    // its final save, as SIGKILL would leave it.
    let mut runs = 0;
    loop {
        runs += 1;
        let save_every = if runs % 2 == 0 { Duration::ZERO } else { Duration::from_secs(3600) };
        let ingest = IngestConfig {
            max_batch_lines: 97,
            ..IngestConfig::new(paths.log.clone(), paths.state.clone(), NODE.to_string(), vec![CheckpointSigningKey::from_seed(SIGNING_SEED).public_key()])
        };
        let settings =
            IndexSettings { dir: paths.index(), factory: "Flat".to_string(), search_parameters: Vec::new(), save_interval: save_every, max_events: 1_000_000 };
        let mut history = History::open(ingest, settings, embedder()).expect("open");
        if runs > 1 {
            assert_eq!(history.rebuilt(), None, "run {runs}: a kill never forces a rebuild");
        }
        let mut read = 0;
        for _ in 0..3 {
            read += history.step().expect("step").lines;
        }
        if read == 0 {
            history.save().expect("save");
            break;
        }
        assert!(runs < 200, "no progress");
        drop(history);
    }
    assert!(runs > 10, "the log took {runs} runs");
    let resumed = paths.open(Duration::from_secs(3600));

    let fresh_state = paths.state.parent().expect("root").join("fresh");
    let mut fresh = paths.open_in(&fresh_state, Duration::from_secs(3600));
    drain(&mut fresh);
    assert_eq!(fresh.index().len(), 1500);
    assert!(contents(&resumed) == contents(&fresh), "same ids, vectors (bit for bit) and fields");
}

#[test]
fn a_deleted_or_damaged_index_is_rebuilt_from_the_log_and_answers_the_same() {
    let paths = Paths::new();
    write_events(&paths.log, 0, 600);
    let mut history = paths.open(Duration::from_secs(3600));
    drain(&mut history);
    let before = contents(&history);
    let answers: Vec<_> = [3, 100, 257].iter().map(|&seq| similar(&mut history, seq, 10)).collect();
    drop(history);

    std::fs::remove_dir_all(paths.index()).expect("delete the index");
    let mut history = paths.open(Duration::from_secs(3600));
    assert_eq!(history.rebuilt(), Some(&Rebuild::Missing));
    drain(&mut history);
    assert!(contents(&history) == before);
    assert_eq!([3, 100, 257].iter().map(|&seq| similar(&mut history, seq, 10)).collect::<Vec<_>>(), answers);
    drop(history);

    // A flipped byte in the FAISS file: named, rebuilt, same answers.
    let index_file = std::fs::read_dir(paths.index())
        .expect("list")
        .map(|entry| entry.expect("entry").path())
        .find(|path| path.extension().is_some_and(|extension| extension == "faiss"))
        .expect("an index file");
    let mut bytes = std::fs::read(&index_file).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&index_file, bytes).expect("write");
    let mut history = paths.open(Duration::from_secs(3600));
    match history.rebuilt() {
        Some(Rebuild::Damaged(reason)) => assert!(reason.contains(&index_file.display().to_string()), "{reason}"),
        other => panic!("expected a rebuild of a damaged index, got {other:?}"),
    }
    drain(&mut history);
    assert!(contents(&history) == before);
    assert_eq!([3, 100, 257].iter().map(|&seq| similar(&mut history, seq, 10)).collect::<Vec<_>>(), answers);
    assert!(quarantine_reasons(&paths.state).is_empty(), "re-verifying the log quarantines nothing");
}

#[test]
fn events_written_while_the_history_follows_are_searchable_at_the_next_step() {
    let paths = Paths::new();
    write_events(&paths.log, 0, 50);
    let mut history = paths.open(Duration::from_secs(3600));
    drain(&mut history);
    assert_eq!(history.index().len(), 50);
    write_events(&paths.log, 50, 80);
    let stats = history.step().expect("step");
    assert_eq!((stats.indexed, stats.quarantined), (30, 0));
    let last = history.index().last_id().expect("some");
    assert!(history.index().get(last).expect("read").is_some());
}

#[test]
fn a_verified_event_whose_fields_cannot_be_read_is_left_out_and_the_rest_indexed() {
    // Authentic records of another schema (here a port that is not a port) must not stop
    // the index: that one is named and left out, the others go in.
    let paths = Paths::new();
    let config = WriterConfig { rotate_daily: false, ..WriterConfig::new(paths.log.clone(), NODE.to_string()) };
    let mut writer = LogWriter::open_signed(config, LogKey::from_bytes(KEY), CheckpointSigningKey::from_seed(SIGNING_SEED)).expect("open writer");
    for n in 0..20 {
        let mut record = event(n);
        if n == 7 {
            record.insert("dst_port".into(), "ssh".into());
        }
        writer.append(&record).expect("append");
    }
    writer.sync().expect("sync");
    drop(writer);
    let mut history = paths.open(Duration::from_secs(3600));
    let mut unreadable = 0;
    loop {
        let stats = history.step().expect("a bad record does not fail the step");
        unreadable += stats.unreadable;
        if stats.lines == 0 {
            break;
        }
    }
    assert_eq!((history.index().len(), unreadable), (19, 1));
    let why = history.last_unreadable().expect("named");
    assert!(why.contains("seq") && why.contains("ssh"), "{why}");
}

#[test]
fn a_bad_index_setting_fails_the_open_and_hands_back_the_ingest_configuration_untouched() {
    // (the ingest task then goes on verifying without an index)
    let paths = Paths::new();
    write_events(&paths.log, 0, 30);
    let mut history = paths.open(Duration::from_secs(3600));
    drain(&mut history);
    drop(history);
    let checkpoint = mld_ingest::read_checkpoint(&paths.state).expect("state").expect("saved");
    let ingest = IngestConfig::new(paths.log.clone(), paths.state.clone(), NODE.to_string(), vec![CheckpointSigningKey::from_seed(SIGNING_SEED).public_key()]);
    let settings = IndexSettings {
        dir: paths.index(),
        factory: "Flat".to_string(),
        search_parameters: vec![("nprobe".to_string(), 8.0)],
        save_interval: Duration::from_secs(1),
        max_events: 1_000_000,
    };
    let failure = History::open(ingest, settings, embedder()).expect_err("Flat has no nprobe");
    assert!(failure.to_string().contains("nprobe"), "{failure}");
    assert!(failure.ingest_config.is_some(), "given back");
    assert_eq!(mld_ingest::read_checkpoint(&paths.state).expect("state"), Some(checkpoint), "the state was not touched");
    assert_eq!(paths.open(Duration::from_secs(3600)).rebuilt(), None, "nor the index");
}

#[test]
fn a_save_cut_between_the_snapshot_and_the_checkpoint_never_moves_the_checkpoint_nor_forces_a_rebuild() {
    let paths = Paths::new();
    write_events(&paths.log, 0, 40);
    let mut history = paths.open(Duration::from_secs(3600));
    drain(&mut history);
    let checkpoint = mld_ingest::read_checkpoint(&paths.state).expect("state").expect("saved");
    // More events; the save fails after the index snapshot (covered.json cannot be written).
    write_events(&paths.log, 40, 70);
    while history.step().expect("step").lines > 0 {}
    let blocker = paths.index().join(format!("{}.tmp", mld_history::COVERED_FILE));
    std::fs::create_dir(&blocker).expect("block covered.json");
    history.save().expect_err("the save is cut after the snapshot");
    assert_eq!(mld_ingest::read_checkpoint(&paths.state).expect("state"), Some(checkpoint), "the checkpoint did not move");
    drop(history);
    std::fs::remove_dir(&blocker).expect("unblock");
    // The newer snapshot with the older covered.json: no rebuild, and nothing lost.
    let mut history = paths.open(Duration::from_secs(3600));
    assert_eq!(history.rebuilt(), None);
    drain(&mut history);
    assert_eq!(history.index().len(), 70);
}

#[test]
fn a_full_index_keeps_the_newest_events_and_stays_within_its_bound() {
    let paths = Paths::new();
    write_events(&paths.log, 0, 400);
    let open = |max_events: usize| {
        let ingest =
            IngestConfig::new(paths.log.clone(), paths.state.clone(), NODE.to_string(), vec![CheckpointSigningKey::from_seed(SIGNING_SEED).public_key()]);
        let settings = IndexSettings {
            dir: paths.index(),
            factory: "Flat".to_string(),
            search_parameters: Vec::new(),
            save_interval: Duration::from_secs(3600),
            max_events,
        };
        History::open(ingest, settings, embedder()).expect("open")
    };
    let mut history = open(100);
    let mut rollovers = 0;
    loop {
        let stats = history.step().expect("step");
        rollovers += u64::from(stats.rolled_over.is_some());
        assert!(history.index().len() < 100, "bounded: {}", history.index().len());
        if stats.lines == 0 {
            break;
        }
    }
    history.save().expect("save");
    assert!(rollovers >= 1);
    let min_seq = history.min_seq().expect("a window");
    let newest = history.index().last_id().expect("events");
    let ids: Vec<u64> = (0..=newest).filter(|id| history.index().contains(*id)).collect();
    assert!(ids.iter().all(|id| *id >= min_seq), "nothing below the window");
    assert!(ids.len() >= 40, "the newest events are kept: {}", ids.len());
    // Nothing at or above the window was lost to a roll-over.
    let logged: Vec<u64> = log_files(&paths.log)
        .iter()
        .flat_map(|file| lines(file))
        .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
        .filter(|record| record["type"] == "event")
        .filter_map(|record| record["seq"].as_u64())
        .filter(|seq| *seq >= min_seq)
        .collect();
    assert_eq!(ids, logged, "every event of the window is indexed");
    assert!(quarantine_reasons(&paths.state).is_empty(), "verifying again quarantines nothing");
    drop(history);

    // A crash in the middle of a roll-over's swap: the complete new index beside a
    // missing one is put in place at the next open.
    let index = paths.index();
    let aside = index.with_file_name("index.old");
    let new = index.with_file_name("index.new");
    std::fs::rename(&index, &aside).expect("aside");
    std::fs::create_dir(&new).expect("new");
    for entry in std::fs::read_dir(&aside).expect("list") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), new.join(entry.file_name())).expect("copy");
    }
    // After a restart the window holds, and new events go in.
    write_events(&paths.log, 400, 410);
    let mut history = open(100);
    assert!(!aside.exists() && !new.exists(), "the swap was finished and cleaned up");
    assert_eq!((history.rebuilt(), history.min_seq()), (None, Some(min_seq)));
    drain(&mut history);
    assert!(history.index().last_id() > Some(newest));
    assert!(history.index().len() < 100);
}

#[test]
fn answers_say_whether_the_history_has_caught_up_with_the_log() {
    let paths = Paths::new();
    write_events(&paths.log, 0, 300);
    let ingest = IngestConfig {
        max_batch_lines: 50,
        ..IngestConfig::new(paths.log.clone(), paths.state.clone(), NODE.to_string(), vec![CheckpointSigningKey::from_seed(SIGNING_SEED).public_key()])
    };
    let settings = IndexSettings {
        dir: paths.index(),
        factory: "Flat".to_string(),
        search_parameters: Vec::new(),
        save_interval: Duration::from_secs(3600),
        max_events: 1_000_000,
    };
    let mut history = History::open(ingest, settings, embedder()).expect("open");
    history.step().expect("step");
    assert!(!history.caught_up(), "50 of 300 lines read");
    while history.step().expect("step").lines > 0 {}
    assert!(history.caught_up());
    assert_eq!(history.index().len(), 300);
}

fn text_model() -> mld_model::text::TextModel {
    mld_model::init_runtime(&runtime()).expect("ONNX Runtime");
    let dir = std::env::var_os("MLD_TEXT_MODEL_DIR").map_or_else(|| PathBuf::from("/usr/local/share/mldefender/text"), PathBuf::from);
    let key = mld_model::signing::ModelPublicKey::from_base64(RELEASE_KEY).expect("key");
    mld_model::text::TextModel::load(&dir, "text-embedder", &key).expect("the text model (scripts/setup installs it)")
}

fn open_with_text(paths: &Paths, max_events: usize) -> History {
    let ingest = IngestConfig::new(paths.log.clone(), paths.state.clone(), NODE.to_string(), vec![CheckpointSigningKey::from_seed(SIGNING_SEED).public_key()]);
    let settings = IndexSettings {
        dir: paths.index(),
        factory: "Flat".to_string(),
        search_parameters: Vec::new(),
        save_interval: Duration::from_secs(3600),
        max_events: 1_000_000,
    };
    let text = mld_history::TextSettings { dir: paths.state.join("text-index"), max_events, observations: false };
    History::open_with_text(ingest, settings, embedder(), Some((text, text_model()))).expect("open history with the text index")
}

#[test]
fn the_text_index_keeps_in_step_with_the_log_and_is_refilled_when_it_goes() {
    let paths = Paths::new();
    write_events(&paths.log, 0, 400);
    let mut history = open_with_text(&paths, 100_000);
    drain(&mut history);
    // Scenarios scan, flood, brute-force are blocks; benign ones are observations.
    let decisions = 300;
    assert_eq!(history.text_index().expect("text index").index().len(), decisions);
    assert_eq!(history.index().len(), 400, "the flow index holds every event");
    drop(history);

    // A reopen finds both in step: nothing is verified again.
    let mut history = open_with_text(&paths, 100_000);
    assert_eq!(history.rebuilt(), None);
    write_events(&paths.log, 400, 440);
    drain(&mut history);
    assert_eq!(history.text_index().expect("text index").index().len(), decisions + 30);
    drop(history);

    // The text index deleted (or turned on later): the log is verified again to fill it,
    // and the flow index keeps what it has.
    std::fs::remove_dir_all(paths.state.join("text-index")).expect("remove the text index");
    let mut history = open_with_text(&paths, 100_000);
    assert!(matches!(history.rebuilt(), Some(Rebuild::Text(reason)) if reason.contains("no text index")), "{:?}", history.rebuilt());
    drain(&mut history);
    assert_eq!(history.text_index().expect("text index").index().len(), decisions + 30);
    assert_eq!(history.index().len(), 440);
    let now = (BASE_TS_US + 440 * 1_000_000) as i64;
    let query = Query::Ask { question: "who scanned the server".to_string(), k: 5, filter: Filter::default(), ip: None };
    let answer = mld_history::answer_ask(history.text_index_mut().expect("text"), &query, now, 0).expect("ask");
    assert_eq!(answer.hits.len(), 5);
    assert!(answer.hits.iter().all(|hit| hit.fields.category == "scan"), "{:#?}", answer.hits);
    assert_eq!(answer.summary.expect("summary").actions.get("block"), Some(&5));
}

#[test]
fn a_full_text_index_keeps_its_newest_half() {
    let paths = Paths::new();
    write_events(&paths.log, 0, 1600);
    let mut history = open_with_text(&paths, 1000);
    drain(&mut history);
    let text = history.text_index().expect("text index").index();
    // 1,200 decisions through a bound of 1,000: rolled over once to its newest 500, then grew.
    assert!(text.len() < 1000 && text.len() >= 500, "{}", text.len());
    let newest = text.last_id().expect("newest");
    drop(history);
    let history = open_with_text(&paths, 1000);
    assert_eq!(history.rebuilt(), None, "a roll-over is not a reason to read the log again");
    assert_eq!(history.text_index().expect("text index").index().last_id(), Some(newest));
}
