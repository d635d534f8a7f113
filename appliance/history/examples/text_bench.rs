//! The text index's numbers (not a test; docs/benchmarks.md, "Asking in words").
//!
//! usage: text_bench TEXT_MODEL_DIR ONNXRUNTIME
//!
//! Decision records in the shape the detect task writes (scans, floods, password guessing,
//! slow HTTP, refusals, expiries; sources and numbers varied) are described, then timed on
//! one core:
//!   tokenise  the tokenizer alone on the descriptions (the anchor: the part every
//!             embedder of this model pays, whatever runs the graph)
//!   embed     descriptions per second, batches of 64 (tokenise + ONNX Runtime)
//!   ask       `TextIndex::ask` (embed the question, compare it with each distinct
//!             embedded text, read the fields of the answer) p50/p99 over 200 questions
//!             at 10 K and 100 K indexed decisions; the index is filled by cycling the
//!             2,048 records with new seqs and times
//! and the index's memory at 100 K.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mld_history::{describe, AskFilter, TextIndex};
use mld_model::signing::ModelPublicKey;
use mld_model::text::TextModel;
use serde_json::{json, Map, Value};

const RELEASE_KEY: &str = "viO2lPvEO07YVapWMGqPadpKkt4VNsnwQftl4CPiHns=";
const DISTINCT: usize = 2048;
const BATCH: usize = 64;
const QUESTIONS: [&str; 8] = [
    "who scanned the server",
    "password guessing against ssh",
    "which hosts flooded the web server",
    "slowloris against the web server",
    "blocks that expired",
    "what was refused because it is allowlisted",
    "udp flood against dns",
    "port scans since midnight",
];

fn record(i: usize) -> Map<String, Value> {
    let src = format!("10.{}.{}.{}", 60 + i % 7, (i / 7) % 250, 2 + i % 200);
    let dst = format!("10.66.9.{}", 2 + i % 5);
    let (action, category, protocol, port, source) = match i % 10 {
        0 | 1 => ("block", "scan", "tcp", [22, 80, 111, 443, 3306][i % 5], "both"),
        2 => ("alert", "scan", "udp", [53, 123, 161][i % 3], "fast"),
        3 => ("block", "flood", "tcp", 80, "fast"),
        4 => ("block", "flood", "udp", 53, "both"),
        5 => ("alert", "brute-force", "tcp", [22, 8080][i % 2], "fast"),
        6 => ("block", "brute-force", "tcp", 22, "both"),
        7 => ("alert", "slow", "tcp", 8080, "model"),
        8 => ("refused", "flood", "udp", 53, "fast"),
        _ => ("expire", "scan", "tcp", 443, "none"),
    };
    let value = json!({
        "type": "event", "event_id": format!("bench-{i}"), "ts_us": 1_764_806_400_000_000i64 + i as i64 * 1_000_000,
        "src_ip": src, "dst_ip": dst, "dst_port": port, "protocol_name": protocol, "action": action, "category": category,
        "authoritative_source": source, "score_fast": 0.5 + (i % 50) as f64 / 100.0, "score_model": 0.97,
        "block_ttl_secs": if action == "block" { json!(600 << (i % 3)) } else { Value::Null }, "escalation_step": i % 3,
        "allowlisted": action == "refused", "src_10s_distinct_dst_ports": 20 + i % 900, "src_10s_distinct_dst_addrs": 1 + i % 3 / 2,
        "src_10s_packets_per_sec": 50.0 + (i * 37 % 20_000) as f64, "src_10s_new_flows_per_sec": 1.0 + (i % 40) as f64,
        "src_10s_syn_without_ack_ratio": if i % 2 == 0 { 0.9 } else { 0.1 },
        "provenance": "policy tiered: no engine alone is sure enough",
    });
    value.as_object().cloned().unwrap_or_default()
}

/// This process's resident memory (VmRSS), KiB.
fn rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| status.lines().find(|line| line.starts_with("VmRSS:")).and_then(|line| line.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 2 {
        bail!("usage: text_bench TEXT_MODEL_DIR ONNXRUNTIME");
    }
    let (model_dir, runtime) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    mld_model::init_runtime(&runtime)?;
    let rss_runtime = rss_kib();
    let key = ModelPublicKey::from_base64(RELEASE_KEY)?;
    let mut model = TextModel::load(&model_dir, "text-embedder", &key).context("load the text model")?;
    model.embed(&["blocked a host, which scanned a host: a TCP port scan"; 64])?;
    let rss_model = rss_kib();
    println!(
        "resident memory: ONNX Runtime loaded {} MiB; + the text model after a batch of 64: +{} MiB",
        rss_runtime / 1024,
        (rss_model - rss_runtime) / 1024
    );

    let records: Vec<Map<String, Value>> = (0..DISTINCT).map(record).collect();
    let descriptions: Vec<String> = records.iter().map(|record| describe(record, false).unwrap_or_default()).collect();
    let mean_bytes = descriptions.iter().map(String::len).sum::<usize>() as f64 / DISTINCT as f64;
    println!("descriptions: {DISTINCT} distinct, mean {mean_bytes:.0} bytes; e.g. {:?}", descriptions[0]);

    let semantic: Vec<String> = descriptions.iter().map(|text| mld_history::describe::semantic_text(text)).collect();
    let mut distinct = semantic.clone();
    distinct.sort();
    distinct.dedup();
    println!("embedded texts (addresses and measurements left out): {} distinct of {DISTINCT}; e.g. {:?}", distinct.len(), semantic[0]);

    for (what, texts) in [("full descriptions", &descriptions), ("embedded texts", &semantic)] {
        let start = Instant::now();
        let mut tokens = 0usize;
        for text in texts.iter() {
            tokens += model.token_ids(text)?.len();
        }
        let tokenise = start.elapsed().as_secs_f64();
        let start = Instant::now();
        for chunk in texts.chunks(BATCH) {
            let texts: Vec<&str> = chunk.iter().map(String::as_str).collect();
            model.embed(&texts)?;
        }
        let embed = start.elapsed().as_secs_f64();
        println!(
            "{what}: {:.1} tokens each; tokenise {:.0}/s; embed (no cache) {:.0}/s, batches of {BATCH}, one thread: {:.0}x the tokeniser's time",
            tokens as f64 / DISTINCT as f64,
            DISTINCT as f64 / tokenise,
            DISTINCT as f64 / embed,
            embed / tokenise
        );
    }

    let work = tempfile::tempdir()?;
    let mut index = TextIndex::create(&work.path().join("text"), model, false)?;
    let lines: Vec<String> = (0..100_000usize)
        .map(|seq| {
            let mut record = records[seq % DISTINCT].clone();
            record.insert("event_id".into(), json!(format!("bench-{seq}")));
            record.insert("ts_us".into(), json!(1_764_806_400_000_000i64 + seq as i64 * 1_000_000));
            serde_json::to_string(&record).unwrap_or_default()
        })
        .collect();
    let rss_before_index = rss_kib();
    let mut added = 0usize;
    for target in [10_000usize, 100_000] {
        let start = Instant::now();
        for chunk in (added..target).collect::<Vec<_>>().chunks(1024) {
            let batch: Vec<(u64, &str)> = chunk.iter().map(|&seq| (seq as u64 + 1, lines[seq].as_str())).collect();
            index.add_lines(&batch)?;
        }
        let secs = start.elapsed().as_secs_f64();
        println!("add_lines {added}..{target}: {:.0} decisions/s (parse, describe, embed with the cache, FAISS add)", (target - added) as f64 / secs);
        added = target;
        let mut times = Vec::new();
        for round in 0..200 {
            let question = QUESTIONS[round % QUESTIONS.len()];
            let start = Instant::now();
            let answer = index.ask(question, 10, &AskFilter::default(), 1_764_806_400_000_000 + 200_000 * 1_000_000, 0)?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
            if round < QUESTIONS.len() && target == 10_000 {
                let first = answer.hits.first().and_then(|hit| hit.fields.description.clone()).unwrap_or_default();
                println!("  {question:?} -> {first:?} ({})", answer.time_filter.as_deref().unwrap_or("no time filter"));
            }
        }
        times.sort_by(f64::total_cmp);
        println!(
            "ask at {target} decisions ({} distinct texts): p50 {:.1} ms, p99 {:.1} ms (embed the question, compare, read the answer's fields)",
            index.distinct_texts(),
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
    let memory = index.index().memory_report();
    println!(
        "index at 100000 decisions: {memory:?}; resident memory +{} MiB for the index ({:.0} bytes per decision; the index's own estimate leaves out FAISS's vectors)",
        (rss_kib() - rss_before_index) / 1024,
        (rss_kib() - rss_before_index) as f64 * 1024.0 / 100_000.0
    );
    // Reopening reads every stored event once more, to group the events by text.
    index.index_mut().save()?;
    let path = index.index().dir().to_path_buf();
    drop(index);
    let model = TextModel::load(&model_dir, "text-embedder", &key).context("load the text model")?;
    let start = Instant::now();
    let reopened = mld_index::EventIndex::open(&path)?;
    let opened = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let index = TextIndex::from_index(reopened, model, false)?.map_err(|refused| anyhow::anyhow!(refused.1))?;
    println!(
        "reopen at 100000 decisions: the index {:.0} ms, grouping its events by text {:.0} ms ({} distinct texts)",
        opened * 1e3,
        start.elapsed().as_secs_f64() * 1e3,
        index.distinct_texts()
    );
    Ok(())
}
