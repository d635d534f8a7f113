//! `mldefender replay`, `mldefender log verify`, `mldefender log schema`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use mld_detect::engine::Action;
use mld_eventlog::{verify_paths, verify_paths_signed, CheckpointPublicKey, CheckpointSigningKey, LogKey, LogWriter, WriterConfig};
use mld_flow::{FlowRecord, FlowTable};
use mld_packet::{decode_frame, DecodeOutcome, PcapReader};
use sha2::{Digest, Sha256};

use mld_runtime::detection::Detection;
use mld_runtime::pipeline::{CaptureSide, Emitted};
use mld_runtime::Exit;

/// The offline pipeline in one process: captures → flows and active-source reports →
/// detection (heuristics, models, policy; nothing is blocked offline) →
/// signed event log. Deterministic: times come from the packets.
pub fn replay(config_path: &Path, files: &[PathBuf]) -> anyhow::Result<Exit> {
    let (config, text) = match crate::load::config_with_text(config_path) {
        Ok(loaded) => loaded,
        Err(exit) => return Ok(exit),
    };
    let (key, signer) = match mld_runtime::keys::load_keys(&config) {
        Ok(keys) => keys,
        Err(error) => {
            eprintln!("mldefender: error: {error:#}");
            return Ok(Exit::Config);
        }
    };
    let config_sha256 = hex::encode(Sha256::digest(text.as_bytes()));
    // The same detection as the detect task (models as configured, fail closed), on the
    // packets' clock; the gateway's own addresses are unknown offline.
    let mut detection =
        match Detection::new(&config, &config_sha256, mld_hostnet::Protected::from_host(&config.response, &config.allowlist, &mld_hostnet::HostNet::default()))
        {
            Ok(detection) => detection,
            Err(error) => {
                eprintln!("mldefender: error: {error:#}");
                return Ok(Exit::Config);
            }
        };
    // Checkpoints by count only: replay is deterministic (the same input, keys and
    // configuration give the same bytes), so nothing may depend on how long it runs.
    let writer_config = WriterConfig { checkpoint_interval: std::time::Duration::MAX, ..mld_runtime::keys::writer_config(&config) };
    let mut writer = LogWriter::open_signed(writer_config, key, signer).context("failed to open the event log")?;
    let first_seq = writer.last_seq() + 1;
    let mut table = FlowTable::new(config.flow_table());
    let mut side = CaptureSide::new(&config, &mut table);
    let tick_ns = config.detect.tick.as_nanos() as u64;
    let mut next_tick_ns = 0u64;
    let mut finished: Vec<FlowRecord> = Vec::new();
    let mut emitted: Vec<Emitted> = Vec::new();
    let mut events = 0u64;
    let mut decisions = 0u64;
    let mut exit = Exit::Success;
    let mut write_error = None;
    let mut step = |table: &mut FlowTable, side: &mut CaptureSide, finished: &mut Vec<FlowRecord>, end: bool| {
        side.poll(table, finished, &mut emitted);
        for item in emitted.drain(..) {
            match item {
                Emitted::Flow(flow) => detection.detector.on_flow(flow),
                Emitted::Source(report) => detection.detector.on_report(report),
            }
        }
        let now = table.now_ns();
        if now < next_tick_ns && !end {
            return;
        }
        next_tick_ns = now + tick_ns;
        detection.detector.advance_to(now);
        for event in detection.detector.tick() {
            if event.action != Action::Observe {
                decisions += 1;
            }
            if write_error.is_none() {
                match writer.append(&detection.record(&event, "replay")) {
                    Ok(_) => events += 1,
                    Err(error) => write_error = Some(error),
                }
            }
        }
    };
    for file in files {
        let result = PcapReader::read_file(file, |frame| {
            if let DecodeOutcome::Packet(record) = decode_frame(frame.link, frame.data, frame.wire_len, frame.ts_ns) {
                table.process(&record, &mut finished);
                step(&mut table, &mut side, &mut finished, false);
            }
        });
        if let Err(error) = result {
            eprintln!("mldefender: error: {error}");
            exit = Exit::Data;
        }
    }
    table.flush(&mut finished);
    step(&mut table, &mut side, &mut finished, true);
    if let Some(error) = write_error {
        return Err(error).context("failed to write the event log");
    }
    writer.checkpoint().and_then(|()| writer.sync()).context("failed to fsync the event log")?;
    let counters = detection.detector.counters;
    eprintln!(
        "mldefender replay: {events} events written to {} (seq {first_seq}..{}, node {}); {decisions} decisions ({} blocks, {} alerts, {} refused); {}",
        config.log.dir.display(),
        writer.last_seq(),
        config.log.node,
        counters.blocks,
        counters.alerts,
        counters.refused,
        detection.model_description
    );
    Ok(exit)
}

/// Every key file, or the first error printed and exit 64.
fn load_keys<K, E: std::fmt::Display>(paths: &[PathBuf], load: impl Fn(&Path) -> Result<K, E>) -> Result<Vec<K>, Exit> {
    paths
        .iter()
        .map(|path| {
            load(path).map_err(|error| {
                eprintln!("mldefender: error: {error}");
                Exit::Config
            })
        })
        .collect()
}

/// `log verify --public-key`: by the signed checkpoints only.
pub fn verify_signed(paths: &[PathBuf], key_files: &[PathBuf]) -> anyhow::Result<Exit> {
    let keys = match load_keys(key_files, CheckpointPublicKey::load) {
        Ok(keys) => keys,
        Err(exit) => return Ok(exit),
    };
    match verify_paths_signed(paths, &keys) {
        Ok(summary) => {
            println!(
                "ok: node {}, {} files, {} records covered by {} signed checkpoints, seq {}..{}",
                summary.node, summary.files, summary.records, summary.checkpoints, summary.first_seq, summary.last_seq
            );
            Ok(Exit::Success)
        }
        Err(failure) => {
            println!("FAILED: {failure}");
            Ok(Exit::Failure)
        }
    }
}

/// `log public-key`: the checkpoint public key, base64.
pub fn public_key(config_path: Option<&Path>, signing_key_path: Option<&Path>) -> anyhow::Result<Exit> {
    let path = match (signing_key_path, config_path) {
        (Some(path), _) => path.to_path_buf(),
        (None, config_path) => {
            let config = match crate::load::config(config_path) {
                Ok(config) => config,
                Err(exit) => return Ok(exit),
            };
            config.log.signing_key_file.clone()
        }
    };
    match CheckpointSigningKey::load(&path) {
        Ok(key) => {
            println!("{}", key.public_key().to_base64());
            Ok(Exit::Success)
        }
        Err(error) => {
            eprintln!("mldefender: error: {error}");
            Ok(Exit::Config)
        }
    }
}

pub fn verify(paths: &[PathBuf], key_files: &[PathBuf]) -> anyhow::Result<Exit> {
    let keys = match load_keys(key_files, LogKey::load) {
        Ok(keys) => keys,
        Err(exit) => return Ok(exit),
    };
    match verify_paths(paths, &keys) {
        Ok(summary) => {
            println!(
                "ok: node {}, {} files, {} records, seq {}..{}{}",
                summary.node,
                summary.files,
                summary.records,
                summary.first_seq,
                summary.last_seq,
                match (summary.from_genesis, summary.removed_through_index) {
                    (true, _) => String::new(),
                    (false, Some(index)) => format!(" (files up to index {index} removed by retention, on record)"),
                    (false, None) => " (from a later file: earlier files not given)".to_string(),
                }
            );
            Ok(Exit::Success)
        }
        Err(failure) => {
            println!("FAILED: {failure}");
            Ok(Exit::Failure)
        }
    }
}

pub fn schema(config: Option<&Path>) -> anyhow::Result<Exit> {
    let config = match crate::load::config(config) {
        Ok(config) => config,
        Err(exit) => return Ok(exit),
    };
    let windows_secs: Vec<u64> = config.windows.lengths.iter().map(|length| length.as_secs()).collect();
    println!("{}", serde_json::to_string_pretty(&mld_eventlog::json_schema(&windows_secs)).context("failed to encode the schema")?);
    Ok(Exit::Success)
}
