//! `mldefender flows`: capture files → flow records.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use mld_config::OutputFormat;
use mld_flow::{FlowRecord, FlowTable};
use mld_packet::{decode_frame, DecodeOutcome, DecodeStats, PcapReader};

use mld_runtime::flow_output::FlowWriter;
use mld_runtime::flow_summary::Summary;
use mld_runtime::Exit;

pub struct FlowsOptions {
    pub files: Vec<PathBuf>,
    pub format: Option<OutputFormat>,
    pub config: Option<PathBuf>,
    pub output: Option<PathBuf>,
    pub summary: bool,
}

/// Where finished flows go.
enum Sink {
    Records(FlowWriter<BufWriter<Box<dyn Write>>>),
    Summary(Box<Summary>),
}

impl Sink {
    fn take(&mut self, flows: &mut Vec<FlowRecord>) -> io::Result<()> {
        for flow in flows.drain(..) {
            match self {
                Sink::Records(writer) => writer.write(&flow)?,
                Sink::Summary(summary) => summary.add(&flow),
            }
        }
        Ok(())
    }
}

pub fn run(options: FlowsOptions) -> anyhow::Result<Exit> {
    let config = match crate::load::config(options.config.as_deref()) {
        Ok(config) => config,
        Err(exit) => return Ok(exit),
    };
    let format = options.format.unwrap_or(config.output.format);
    let windows_secs: Vec<u64> = config.windows.lengths.iter().map(|length| length.as_secs()).collect();
    let out: Box<dyn Write> = match &options.output {
        Some(path) => Box::new(File::create(path).with_context(|| format!("failed to create output file `{}`", path.display()))?),
        None => Box::new(io::stdout().lock()),
    };
    let mut sink = if options.summary {
        Sink::Summary(Box::default())
    } else {
        Sink::Records(FlowWriter::new(BufWriter::with_capacity(1 << 16, out), format, &windows_secs))
    };

    let started = Instant::now();
    let mut table = FlowTable::new(config.flow_table());
    let mut decode_stats = DecodeStats::default();
    let mut finished: Vec<FlowRecord> = Vec::with_capacity(1024);
    let mut write_error: Option<io::Error> = None;
    let mut exit = Exit::Success;
    for file in &options.files {
        let result = PcapReader::read_file(file, |frame| {
            let outcome = decode_frame(frame.link, frame.data, frame.wire_len, frame.ts_ns);
            decode_stats.count(&outcome);
            if let DecodeOutcome::Packet(record) = outcome {
                table.process(&record, &mut finished);
                if finished.len() >= 256 && write_error.is_none() {
                    write_error = sink.take(&mut finished).err();
                }
            }
        });
        if let Err(error) = result {
            // Keep going: the packets read before the damage are processed, and the
            // other files too. The exit status says the input was bad.
            eprintln!("mldefender: error: {error}");
            exit = Exit::Data;
        }
        if let Some(error) = write_error.take() {
            return write_failed(error);
        }
    }
    table.flush(&mut finished);
    if let Err(error) = sink.take(&mut finished) {
        return write_failed(error);
    }
    match sink {
        Sink::Records(writer) => {
            if let Err(error) = writer.finish() {
                return write_failed(error);
            }
        }
        Sink::Summary(summary) => {
            print!("{}", summary.render(windows_secs.first().copied()));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = table.stats();
    eprintln!(
        "mldefender flows: {} files, {} frames, {} packets, {} flows, {} evicted, {} malformed, {} not IP, {:.3} s ({:.0} packets/s)",
        options.files.len(),
        decode_stats.frames,
        decode_stats.packets,
        stats.flows_exported,
        stats.flows_evicted,
        decode_stats.malformed_total(),
        decode_stats.not_ip_total(),
        elapsed,
        decode_stats.frames as f64 / elapsed.max(1e-9),
    );
    if decode_stats.malformed_total() > 0 {
        let reasons: Vec<String> = mld_packet::MalformedReason::ALL
            .iter()
            .filter(|reason| decode_stats.malformed_count(**reason) > 0)
            .map(|reason| format!("{} {}", reason.as_str(), decode_stats.malformed_count(*reason)))
            .collect();
        eprintln!("mldefender flows: malformed packets (counted, not used): {}", reasons.join(", "));
    }
    Ok(exit)
}

/// A reader that stopped reading (`mldefender flows x.pcap | head`) is not an error.
fn write_failed(error: io::Error) -> anyhow::Result<Exit> {
    if error.kind() == io::ErrorKind::BrokenPipe {
        return Ok(Exit::Success);
    }
    Err(error).context("failed to write flow records")
}
