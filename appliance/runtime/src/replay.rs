//! `mldefender replay`'s pipeline: captures → flows and active-source reports →
//! detection → the signed event log, in one process, on the packets' clock.

use std::path::PathBuf;

use anyhow::Context;
use mld_config::Config;
use mld_detect::engine::Action;
use mld_eventlog::{LogWriter, WriterConfig};
use mld_flow::{FlowRecord, FlowTable};
use mld_packet::{decode_frame, DecodeOutcome, PcapReader};
use sha2::{Digest, Sha256};

use crate::detection::Detection;
use crate::pipeline::{CaptureSide, Emitted};

/// What a replay did.
#[derive(Debug)]
pub struct ReplaySummary {
    pub events: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Decisions other than "observe".
    pub decisions: u64,
    pub blocks: u64,
    pub alerts: u64,
    pub refused: u64,
    pub model_description: String,
    /// Captures that could not be read to their end (what they held up to the damage was
    /// replayed), each with why.
    pub unreadable: Vec<String>,
}

/// Why a replay did not run or did not finish.
#[derive(Debug)]
pub enum ReplayError {
    /// Keys or models could not be loaded: nothing was written.
    Setup(anyhow::Error),
    /// The log could not be written.
    Write(anyhow::Error),
}

/// The offline pipeline in one process: captures → flows and active-source reports →
/// detection (heuristics, models, policy; nothing is blocked offline) →
/// signed event log. Deterministic: times come from the packets.
///
/// `progress` is told, every 4,096 frames, how many bytes of the captures are read.
pub fn replay(config: &Config, text: &str, files: &[PathBuf], progress: &mut dyn FnMut(u64)) -> Result<ReplaySummary, ReplayError> {
    let (key, signer) = crate::keys::load_keys(config).map_err(ReplayError::Setup)?;
    let config_sha256 = hex::encode(Sha256::digest(text.as_bytes()));
    // The same detection as the detect task (models as configured, fail closed), on the
    // packets' clock; the gateway's own addresses are unknown offline.
    let protected = mld_hostnet::Protected::from_host(&config.response, &config.allowlist, &mld_hostnet::HostNet::default());
    let mut detection = Detection::new(config, &config_sha256, protected).map_err(ReplayError::Setup)?;
    // Checkpoints by count only: replay is deterministic (the same input, keys and
    // configuration give the same bytes), so nothing may depend on how long it runs.
    let writer_config = WriterConfig { checkpoint_interval: std::time::Duration::MAX, ..crate::keys::writer_config(config) };
    let mut writer = LogWriter::open_signed(writer_config, key, signer).context("failed to open the event log").map_err(ReplayError::Write)?;
    let first_seq = writer.last_seq() + 1;
    let mut table = FlowTable::new(config.flow_table());
    let mut side = CaptureSide::new(config, &mut table);
    let tick_ns = config.detect.tick.as_nanos() as u64;
    let mut next_tick_ns = 0u64;
    let mut finished: Vec<FlowRecord> = Vec::new();
    let mut emitted: Vec<Emitted> = Vec::new();
    let mut events = 0u64;
    let mut decisions = 0u64;
    let mut unreadable = Vec::new();
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
    // Bytes of the files before the one being read.
    let mut before = 0u64;
    let mut frames = 0u64;
    for file in files {
        let result = PcapReader::read_file(file, |frame| {
            frames += 1;
            if frames % 4096 == 0 {
                progress(before + frame.offset);
            }
            if let DecodeOutcome::Packet(record) = decode_frame(frame.link, frame.data, frame.wire_len, frame.ts_ns) {
                table.process(&record, &mut finished);
                step(&mut table, &mut side, &mut finished, false);
            }
        });
        if let Err(error) = result {
            unreadable.push(error.to_string());
        }
        before += std::fs::metadata(file).map_or(0, |meta| meta.len());
        progress(before);
    }
    table.flush(&mut finished);
    step(&mut table, &mut side, &mut finished, true);
    if let Some(error) = write_error {
        return Err(ReplayError::Write(anyhow::Error::from(error).context("failed to write the event log")));
    }
    writer.checkpoint().and_then(|()| writer.sync()).context("failed to fsync the event log").map_err(ReplayError::Write)?;
    let counters = detection.detector.counters;
    Ok(ReplaySummary {
        events,
        first_seq,
        last_seq: writer.last_seq(),
        decisions,
        blocks: counters.blocks,
        alerts: counters.alerts,
        refused: counters.refused,
        model_description: detection.model_description.clone(),
        unreadable,
    })
}
