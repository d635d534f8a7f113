//! Scoring cost of a model: µs per flow for batches of 1, 16, 256 and 1024 flows, and the latency
//! of one flow (p50, p99 over 10,000 calls). Each call includes building the input rows (copying
//! a flow's features into the reused row buffer) and copying the probabilities out.
//!
//! usage: cargo run --release -p mld-model --example model_bench -- [MODEL.onnx [METADATA.json]]
//!
//! Without arguments it measures the test fixture. The metadata defaults to the .onnx path with
//! `.json`. The files are copied to a temp dir and signed there with a throwaway key, so the
//! model goes through the same checks as in the appliance. ONNX Runtime: `MLD_ONNXRUNTIME`, or
//! where scripts/setup installs it. The input rows are synthetic (deterministic pseudo-random).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mld_model::signing;
use mld_model::{init_runtime, LoadedModel, ModelFiles};

const BATCH_SIZES: [usize; 4] = [1, 16, 256, 1024];
const LATENCY_CALLS: usize = 10_000;
/// Distinct synthetic flows that batches are drawn from.
const POOL_FLOWS: usize = 4096;

fn main() -> Result<()> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fixture-rf.onnx");
    let onnx = arguments.first().map_or(fixture, PathBuf::from);
    let metadata = arguments.get(1).map_or_else(|| onnx.with_extension("json"), PathBuf::from);
    if arguments.len() > 2 {
        bail!("usage: model_bench [MODEL.onnx [METADATA.json]]");
    }
    let library = std::env::var_os("MLD_ONNXRUNTIME").map_or_else(|| PathBuf::from("/usr/local/lib/mldefender/libonnxruntime.so.1.31.1"), PathBuf::from);
    init_runtime(&library).context("load ONNX Runtime (run scripts/setup, or set MLD_ONNXRUNTIME)")?;

    let dir = tempfile::tempdir().context("create a temp dir")?;
    let files = ModelFiles::in_dir(dir.path(), "bench")?;
    std::fs::copy(&onnx, &files.onnx).with_context(|| format!("copy `{}`", onnx.display()))?;
    std::fs::copy(&metadata, &files.metadata).with_context(|| format!("copy `{}`", metadata.display()))?;
    let private_key = dir.path().join("bench.key");
    let public_key = signing::generate_key_pair(&private_key, &dir.path().join("bench.pub"))?;
    signing::sign(&private_key, &files.metadata)?;
    let started = Instant::now();
    let mut model = LoadedModel::load(files, &public_key, |_| true).context("load the model")?;
    let load_time = started.elapsed();

    let n_features = model.features().len();
    let n_classes = model.classes().len();
    println!(
        "model {} ({}): {n_features} features, {n_classes} classes, {} KiB; checks + session {:.1} ms; {} build",
        model.metadata().name(),
        onnx.display(),
        std::fs::metadata(&onnx).map(|file| file.len() / 1024).unwrap_or(0),
        load_time.as_secs_f64() * 1e3,
        if cfg!(debug_assertions) { "DEBUG (use --release)" } else { "release" },
    );

    let pool = synthetic_flows(POOL_FLOWS, n_features);
    let mut rows: Vec<f32> = Vec::with_capacity(BATCH_SIZES[3] * n_features);
    let mut scores: Vec<f32> = Vec::with_capacity(BATCH_SIZES[3] * n_classes);
    let mut next_flow = 0usize;
    let mut score_batch = |model: &mut LoadedModel, n: usize| -> Result<()> {
        rows.clear();
        for _ in 0..n {
            rows.extend_from_slice(&pool[next_flow * n_features..(next_flow + 1) * n_features]);
            next_flow = (next_flow + 1) % POOL_FLOWS;
        }
        let probabilities = model.predict(&rows, n)?;
        scores.clear();
        scores.extend_from_slice(probabilities);
        std::hint::black_box(&scores);
        Ok(())
    };

    println!("{:>6} {:>10} {:>12} {:>10}", "batch", "µs/flow", "µs/batch", "batches");
    for n in BATCH_SIZES {
        for _ in 0..20 {
            score_batch(&mut model, n)?;
        }
        // About 0.5 s per size, at least 20 batches.
        let (mut batches, mut elapsed) = (0u64, Duration::ZERO);
        let started = Instant::now();
        while elapsed < Duration::from_millis(500) || batches < 20 {
            score_batch(&mut model, n)?;
            batches += 1;
            elapsed = started.elapsed();
        }
        let per_batch_us = elapsed.as_secs_f64() * 1e6 / batches as f64;
        println!("{n:>6} {:>10.2} {per_batch_us:>12.1} {batches:>10}", per_batch_us / n as f64);
    }

    let mut latencies_ns: Vec<u64> = Vec::with_capacity(LATENCY_CALLS);
    for _ in 0..1000 {
        score_batch(&mut model, 1)?;
    }
    for _ in 0..LATENCY_CALLS {
        let started = Instant::now();
        score_batch(&mut model, 1)?;
        latencies_ns.push(started.elapsed().as_nanos() as u64);
    }
    latencies_ns.sort_unstable();
    let percentile = |p: usize| latencies_ns[(latencies_ns.len() * p / 100).min(latencies_ns.len() - 1)] as f64 / 1e3;
    println!(
        "single flow over {LATENCY_CALLS} calls: p50 {:.2} µs, p99 {:.2} µs, max {:.2} µs",
        percentile(50),
        percentile(99),
        latencies_ns[latencies_ns.len() - 1] as f64 / 1e3
    );
    Ok(())
}

/// Deterministic rows spread over several magnitudes, like flow features (counts, bytes, rates).
fn synthetic_flows(n_flows: usize, n_features: usize) -> Vec<f32> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..n_flows * n_features)
        .map(|index| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
            let magnitude = [1.0, 10.0, 1e3, 1e5][index % 4];
            unit * magnitude
        })
        .collect()
}
