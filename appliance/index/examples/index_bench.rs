//! Query latency, build time, recall and memory of `EventIndex` (numbers, not a test).
//!
//! usage:
//!   index_bench gen N QUERIES SEED FILE   write N base and QUERIES query vectors (D = 16,
//!                                         uniform in [0, 1)) as little-endian f32: N, then Q
//!   index_bench run FILE N QUERIES FACTORY PARAM=VALUE|- [TRUTH]   (efSearch=64, nprobe=8)
//!       builds the index in a temp dir from the first N base vectors (batches of 10,000,
//!       with fields), saves it, runs QUERIES single-vector queries (k = 10), prints one
//!       result line; with TRUTH (written by a Flat run: each query's 10th exact distance)
//!       prints recall@10, counting a hit when it is as near as the 10th exact one (ties).
//!       A Flat run writes FILE.truth.N.

use std::fs;
use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use mld_index::{EventIndex, HitFields, SearchFilter};

const DIMS: usize = 16;
const K: usize = 10;
const BATCH: usize = 10_000;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gen") if args.len() == 5 => generate(args[1].parse()?, args[2].parse()?, args[3].parse()?, &args[4]),
        Some("run") if args.len() >= 6 => run(&args[1], args[2].parse()?, args[3].parse()?, &args[4], &args[5], args.get(6)),
        _ => bail!("usage: index_bench gen N QUERIES SEED FILE | run FILE N QUERIES FACTORY PARAM=VALUE|- [TRUTH]"),
    }
}

fn generate(n: usize, queries: usize, seed: u64, path: &str) -> Result<()> {
    let mut state = seed.max(1);
    let mut out = Vec::with_capacity((n + queries) * DIMS * 4);
    for _ in 0..(n + queries) * DIMS {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let value = (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
        out.extend_from_slice(&value.to_le_bytes());
    }
    fs::write(path, out).with_context(|| format!("write {path}"))
}

fn fields_for(id: u64) -> HitFields {
    HitFields {
        seq: id,
        event_id: format!("0190c2a4-0000-7000-8000-{id:012x}"),
        ts_us: 1_764_000_000_000_000 + id as i64 * 1_000,
        src_ip: format!("10.{}.{}.{}", id >> 16 & 255, id >> 8 & 255, id & 255),
        dst_ip: "192.0.2.10".to_owned(),
        dst_port: 443,
        protocol: "tcp".to_owned(),
        action: if id % 10 == 0 { "block" } else { "allow" }.to_owned(),
        category: if id % 10 == 0 { "scan" } else { "benign" }.to_owned(),
        score_fast: 0.12,
        score_model: Some(0.034),
        score_final: 0.12,
        description: None,
    }
}

fn rss_bytes() -> u64 {
    let statm = fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn run(file: &str, n: usize, queries: usize, factory: &str, parameter: &str, truth: Option<&String>) -> Result<()> {
    let bytes = fs::read(file).with_context(|| format!("read {file}"))?;
    let floats: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let total = floats.len() / DIMS - queries;
    if n > total {
        bail!("{file} has {total} base vectors, {n} asked");
    }
    let base = &floats[..n * DIMS];
    let query_vectors = &floats[total * DIMS..(total + queries) * DIMS];
    let dir = tempfile::tempdir()?;
    let rss_before = rss_bytes();
    let started = Instant::now();
    let mut index = EventIndex::create(dir.path(), DIMS as u32, factory)?;
    if let Some((name, value)) = parameter.split_once('=') {
        index.set_search_parameter(name, value.parse()?)?;
    }
    for start in (0..n).step_by(BATCH) {
        let end = (start + BATCH).min(n);
        let ids: Vec<u64> = (start as u64..end as u64).collect();
        let fields: Vec<HitFields> = ids.iter().map(|&id| fields_for(id)).collect();
        index.add(&ids, &base[start * DIMS..end * DIMS], &fields)?;
    }
    let add_secs = started.elapsed().as_secs_f64();
    let save_started = Instant::now();
    index.save()?;
    let save_secs = save_started.elapsed().as_secs_f64();
    let rss_growth = rss_bytes().saturating_sub(rss_before);
    let report = index.memory_report();

    let filter = SearchFilter::default();
    // Warm-up (first-touch page faults, OpenMP threads), not timed; Python does the same.
    for query in query_vectors.chunks(DIMS).take(20) {
        index.search(query, K, &filter)?;
    }
    let mut latencies_us = Vec::with_capacity(queries);
    let mut answers: Vec<u64> = Vec::with_capacity(queries * K);
    let mut distances: Vec<f32> = Vec::with_capacity(queries * K);
    for query in query_vectors.chunks(DIMS) {
        let t = Instant::now();
        let hits = index.search(query, K, &filter)?;
        latencies_us.push(t.elapsed().as_secs_f64() * 1e6);
        answers.extend(hits.iter().map(|hit| hit.id));
        answers.extend(std::iter::repeat_n(u64::MAX, K - hits.len()));
        distances.extend(hits.iter().map(|hit| hit.distance));
        distances.extend(std::iter::repeat_n(f32::INFINITY, K - hits.len()));
    }
    // A filtered query too (one event in ten passes), to show the over-fetch cost.
    let blocked = SearchFilter { actions: vec!["block".to_owned()], ..SearchFilter::default() };
    let mut filtered_us = Vec::with_capacity(queries);
    for query in query_vectors.chunks(DIMS) {
        let t = Instant::now();
        index.search(query, K, &blocked)?;
        filtered_us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    // Recall@10, tie-aware: a hit counts when it is as near as the exact search's 10th
    // (lab histories hold many identical flows, so ids alone would undercount).
    let recall = match truth {
        Some(path) => {
            let kth: Vec<f32> = fs::read(path)?.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            let mut found = 0usize;
            // float32 distances of (near-)duplicates differ by rounding, about eps |q|^2.
            for ((got, limit), query) in distances.chunks(K).zip(&kth).zip(query_vectors.chunks(DIMS)) {
                let tolerance = 1e-4 * (1.0 + query.iter().map(|value| value * value).sum::<f32>());
                found += got.iter().filter(|distance| **distance <= limit + tolerance).count();
            }
            format!("{:.4}", found as f64 / (queries * K) as f64)
        }
        None => {
            let mut out = fs::File::create(format!("{file}.truth.{n}"))?;
            for row in distances.chunks(K) {
                out.write_all(&row[K - 1].to_le_bytes())?;
            }
            "exact".to_owned()
        }
    };
    println!(
        "n={n} factory={factory} param={parameter} add_s={add_secs:.2} save_s={save_secs:.2} p50_us={:.0} p99_us={:.0} filtered_p50_us={:.0} filtered_p99_us={:.0} recall10={recall} disk_bytes_per_event={:.1} ram_rss_bytes_per_event={:.1} ram_estimate_bytes_per_event={:.1}",
        percentile(&mut latencies_us, 0.50),
        percentile(&mut latencies_us, 0.99),
        percentile(&mut filtered_us, 0.50),
        percentile(&mut filtered_us, 0.99),
        report.disk_bytes_per_event(),
        rss_growth as f64 / n as f64,
        report.ram_bytes_per_event(),
    );
    Ok(())
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}
