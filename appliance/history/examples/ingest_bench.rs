//! Ingest throughput (numbers, not a test; bench/ingest.sh runs it on one core).
//!
//! usage: ingest_bench RECORDS.jsonl N MODELS_DIR ONNXRUNTIME ROWS_OUT
//!
//! RECORDS.jsonl: real event records (a replayed lab log); their integrity fields are
//! dropped and the events are written again, cycled to N, as a signed log with a fresh
//! key (untimed). Then, each from a fresh state directory, timed:
//!   verify   the ingest foundation alone (tail, HMAC, chain, nonces, checkpoint)
//!   history  verify + embed + add, as the ingest task does (History, save at the end)
//! and, on the records already in memory:
//!   embed    the embedder alone, batches of 1,024 (the original measured its embedders
//!            alone): reading the lines into rows and the model, then the model alone
//!   add      EventIndex::add alone (Flat), batches of 1,024
//! ROWS_OUT gets the embedder's input rows (f32, N x features, as the Rust side built them)
//! for the Python anchor.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mld_eventlog::{CheckpointSigningKey, LogKey, LogWriter, WriterConfig};
use mld_history::{Embedder, History, IndexSettings};
use mld_index::EventIndex;
use mld_ingest::{Ingest, IngestConfig};
use serde_json::{Map, Value};

const NODE: &str = "bench";
const KEY: [u8; 32] = [42; 32];
const RELEASE_KEY: &str = "viO2lPvEO07YVapWMGqPadpKkt4VNsnwQftl4CPiHns=";
const WINDOWS: [u64; 2] = [10, 60];
const BATCH: usize = 1024;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 5 {
        bail!("usage: ingest_bench RECORDS.jsonl N MODELS_DIR ONNXRUNTIME ROWS_OUT");
    }
    let (records_path, n, models, runtime, rows_out) = (&args[0], args[1].parse::<usize>()?, PathBuf::from(&args[2]), PathBuf::from(&args[3]), &args[4]);
    let templates = read_templates(records_path)?;
    let work = tempfile::tempdir()?;
    let log = work.path().join("log");
    write_log(&log, &templates, n)?;
    let log_bytes: u64 = std::fs::read_dir(&log)?.flatten().map(|entry| entry.metadata().map_or(0, |meta| meta.len())).sum();
    println!(
        "records: {n} events cycled from {} real lab events, log {:.0} MiB ({:.0} bytes/record)",
        templates.len(),
        log_bytes as f64 / 1048576.0,
        log_bytes as f64 / n as f64
    );

    // MLD_BENCH_ONLY=history: the history phase alone (for a profiler).
    let only = std::env::var("MLD_BENCH_ONLY").unwrap_or_default();
    let only_history = only == "history";
    if !only.is_empty() {
        // Marks where the timed part starts, for `perf record -D`.
        eprintln!("log written");
        std::thread::sleep(Duration::from_secs(2));
    }
    // verify
    let config = |state: &Path| {
        let mut config = IngestConfig::new(log.clone(), state.to_path_buf(), NODE.to_string(), vec![CheckpointSigningKey::from_seed([6; 32]).public_key()]);
        config.max_age_us = u64::MAX / 2;
        config
    };
    if !only_history {
        let state = work.path().join("verify");
        let started = Instant::now();
        let mut ingest = Ingest::open(config(&state))?;
        let mut delivered = 0u64;
        loop {
            let stats = ingest.poll(&mut |_record| {})?;
            delivered += stats.delivered;
            if stats.lines == 0 {
                break;
            }
        }
        report("verify", delivered, started.elapsed());
        if only == "verify" {
            return Ok(());
        }
    }

    // history: verify + embed + add
    let state = work.path().join("history");
    let embedder = Embedder::load(&runtime, &models, "embedder", RELEASE_KEY, &WINDOWS)?;
    let started = Instant::now();
    let settings = IndexSettings {
        dir: state.join("index"),
        factory: "Flat".to_string(),
        search_parameters: Vec::new(),
        save_interval: Duration::from_secs(10),
        max_events: 100_000_000,
    };
    let mut history = History::open(config(&state), settings, embedder)?;
    let mut indexed = 0u64;
    loop {
        let stats = history.step()?;
        indexed += stats.indexed;
        if stats.lines == 0 {
            break;
        }
    }
    history.save()?;
    report("history", indexed, started.elapsed());
    let memory = history.index().memory_report();
    println!(
        "index: {} events, {:.1} bytes/event on disk, {:.1} bytes/event in memory (estimate)",
        memory.events,
        memory.disk_bytes_per_event(),
        memory.ram_bytes_per_event()
    );
    drop(history);
    if only_history {
        return Ok(());
    }

    // embed alone (reading the lines, as the ingest task does; and the model alone on
    // rows built beforehand, as the Python anchor does), add alone: records in memory.
    let lines: Vec<String> = templates.iter().map(|record| Value::Object(record.clone()).to_string()).collect();
    let mut embedder = Embedder::load(&runtime, &models, "embedder", RELEASE_KEY, &WINDOWS)?;
    let started = Instant::now();
    let mut vectors = Vec::with_capacity(n * embedder.dims());
    let mut fields = Vec::with_capacity(n);
    let mut rows = Vec::with_capacity(n * embedder.row_width());
    for start in (0..n).step_by(BATCH) {
        let batch: Vec<(u64, &str)> = (start..(start + BATCH).min(n)).map(|i| (i as u64 + 1, lines[i % lines.len()].as_str())).collect();
        let embedded = embedder.embed_lines(&batch)?;
        vectors.extend(embedded.vectors);
        fields.extend(embedded.fields);
        rows.extend_from_slice(embedder.last_rows());
    }
    report("embed (lines)", n as u64, started.elapsed());
    // The same rows for the Python anchor.
    std::fs::write(rows_out, rows.iter().flat_map(|value| value.to_le_bytes()).collect::<Vec<u8>>()).with_context(|| format!("write {rows_out}"))?;
    let width = embedder.row_width();
    let started = Instant::now();
    for chunk in rows.chunks(BATCH * width) {
        embedder.embed_rows(chunk, chunk.len() / width)?;
    }
    report("embed (model alone)", n as u64, started.elapsed());

    let dir = work.path().join("add");
    let mut index = EventIndex::create(&dir, embedder.dims() as u32, "Flat")?;
    let dims = embedder.dims();
    let started = Instant::now();
    for (start, chunk) in fields.chunks(BATCH).enumerate() {
        let first = start * BATCH;
        let ids: Vec<u64> = (first..first + chunk.len()).map(|i| i as u64 + 1).collect();
        index.add(&ids, &vectors[first * dims..(first + chunk.len()) * dims], chunk)?;
    }
    index.save()?;
    report("add", n as u64, started.elapsed());
    Ok(())
}

fn report(what: &str, events: u64, took: Duration) {
    println!("{what}: {events} events in {:.2} s = {:.0} events/s", took.as_secs_f64(), events as f64 / took.as_secs_f64());
}

/// Event records without their integrity fields.
fn read_templates(path: &str) -> Result<Vec<Map<String, Value>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    let mut templates = Vec::new();
    for line in text.lines() {
        let Ok(Value::Object(mut record)) = serde_json::from_str::<Value>(line) else { continue };
        if record.get("type").and_then(Value::as_str) != Some("event") {
            continue;
        }
        for field in ["seq", "prev_tag", "key_id", "hmac"] {
            record.remove(field);
        }
        templates.push(record);
    }
    if templates.is_empty() {
        bail!("{path} holds no event records");
    }
    Ok(templates)
}

fn write_log(dir: &Path, templates: &[Map<String, Value>], n: usize) -> Result<()> {
    let config = WriterConfig { rotate_daily: false, ..WriterConfig::new(dir.to_path_buf(), NODE.to_string()) };
    let mut writer = LogWriter::open_signed(config, LogKey::from_bytes(KEY), CheckpointSigningKey::from_seed([6; 32]))?;
    for i in 0..n {
        writer.append(&templates[i % templates.len()])?;
    }
    writer.sync()?;
    Ok(())
}
