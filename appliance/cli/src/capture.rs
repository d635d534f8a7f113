//! `mldefender capture`: attach the XDP program and stream live flows.
//! `mldefender block|allow|counters`: act on a running capture's pinned maps.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mld_capture::{boot_time_ns, CaptureError, Counters, Dataplane, PinnedMaps};
use mld_config::OutputFormat;
use mld_flow::{FlowRecord, FlowTable};
use mld_types::DenyReason;
use mld_types::IpPrefix;

use mld_runtime::error_chain;
use mld_runtime::flow_output::FlowWriter;
use mld_runtime::flow_pump::FlowPump;
use mld_runtime::Exit;

const TICK: Duration = Duration::from_millis(250);

fn startup_exit(error: &CaptureError) -> Exit {
    match error {
        CaptureError::UnknownInterface { .. } | CaptureError::Refused(_) => Exit::Config,
        _ => Exit::Failure,
    }
}

pub fn run_capture(config_path: &Path, format: Option<OutputFormat>) -> anyhow::Result<Exit> {
    let config = match crate::load::config(Some(config_path)) {
        Ok(config) => config,
        Err(exit) => return Ok(exit),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("failed to install the signal handler")?;
    }
    let mut enforcement = match mld_runtime::enforcement::Enforcement::start(&config.capture, &config.allowlist) {
        Ok(dataplane) => dataplane,
        Err(error) => {
            eprintln!("mldefender: error: {}", error_chain(&error));
            return Ok(startup_exit(&error));
        }
    };
    let attached: Vec<String> = enforcement.dataplane().attached().iter().map(|interface| format!("{} ({})", interface.name, interface.mode)).collect();
    eprintln!(
        "mldefender capture: attached to {}; maps pinned under {}; {} allowlist entries",
        attached.join(", "),
        config.capture.bpffs_dir.display(),
        config.allowlist.len()
    );
    let mut pump = FlowPump::new(enforcement.dataplane().ring_reader()?, FlowTable::new(config.flow_table()), TICK);
    let windows_secs: Vec<u64> = config.windows.lengths.iter().map(|length| length.as_secs()).collect();
    let mut writer = FlowWriter::new(BufWriter::with_capacity(1 << 16, io::stdout().lock()), format.unwrap_or(OutputFormat::Jsonl), &windows_secs);
    let started = Instant::now();
    let mut last_sweep = Instant::now();
    let mut last_counters = Instant::now();
    let write_batch = |writer: &mut FlowWriter<_>, finished: &mut Vec<FlowRecord>| -> io::Result<()> {
        if finished.is_empty() {
            return Ok(());
        }
        for flow in finished.drain(..) {
            writer.write(&flow)?;
        }
        writer.flush()
    };
    while !stop.load(Ordering::Relaxed) {
        pump.pump(None)?;
        if let Err(error) = write_batch(&mut writer, &mut pump.finished) {
            if error.kind() == io::ErrorKind::BrokenPipe {
                break;
            }
            return Err(error).context("failed to write flow records");
        }
        if last_sweep.elapsed() >= config.capture.sweep_interval {
            for prefix in enforcement.dataplane().maps().sweep_expired(boot_time_ns())? {
                eprintln!("mldefender capture: deny entry {prefix} expired and was removed");
            }
            last_sweep = Instant::now();
        }
        enforcement.tick();
        if config.capture.counters_interval.is_some_and(|interval| last_counters.elapsed() >= interval) {
            let counters = enforcement.dataplane().maps().counters()?;
            eprintln!("mldefender capture: {}", counters_line(&counters, pump.records, pump.table.stats().active_flows));
            last_counters = Instant::now();
        }
    }
    // Shutdown: stop intake (drain what the ring holds), end every flow, detach last.
    pump.drain()?;
    let write_result = write_batch(&mut writer, &mut pump.finished);
    let counters = enforcement.dataplane().maps().counters()?;
    let detached = enforcement.shutdown();
    eprintln!(
        "mldefender capture: stopped after {:.1} s; {}; {}",
        started.elapsed().as_secs_f64(),
        counters_line(&counters, pump.records, 0),
        if detached {
            "XDP program detached".to_string()
        } else {
            format!("XDP program left enforcing, pinned under {} (`mldefender capture detach` removes it)", config.capture.bpffs_dir.display())
        }
    );
    match write_result {
        Err(error) if error.kind() != io::ErrorKind::BrokenPipe => Err(error).context("failed to write flow records"),
        _ => Ok(Exit::Success),
    }
}

/// `mldefender capture detach`: removes the program and its pins.
pub fn run_detach(config_path: &Path) -> anyhow::Result<Exit> {
    let config = match crate::load::config(Some(config_path)) {
        Ok(config) => config,
        Err(exit) => return Ok(exit),
    };
    match Dataplane::detach(&config.capture) {
        Ok(detached) if detached.is_empty() => {
            eprintln!("mldefender capture: nothing attached under {}", config.capture.bpffs_dir.display());
            Ok(Exit::Success)
        }
        Ok(detached) => {
            eprintln!("mldefender capture: XDP program detached from {}; pins under {} removed", detached.join(", "), config.capture.bpffs_dir.display());
            Ok(Exit::Success)
        }
        Err(error) => {
            eprintln!("mldefender: error: {}", error_chain(&error));
            Ok(startup_exit(&error))
        }
    }
}

fn counters_line(counters: &Counters, records: u64, active_flows: u64) -> String {
    let reasons: Vec<String> = DenyReason::ALL
        .iter()
        .filter(|reason| counters.dropped_for(**reason) > 0)
        .map(|reason| format!("{} {}", reason.as_str(), counters.dropped_for(*reason)))
        .collect();
    format!(
        "passed {} (allowlisted {}), dropped {}{}, spoofed {}, guard {}, malformed {}, not-ip {}, ring-full {}, expired-deny {}, records {}, active flows {}",
        counters.passed,
        counters.allowed,
        counters.dropped,
        if reasons.is_empty() { String::new() } else { format!(" [{}]", reasons.join(", ")) },
        counters.spoofed,
        counters.guard_dropped,
        counters.malformed,
        counters.not_ip,
        counters.ring_full,
        counters.expired,
        records,
        active_flows
    )
}

/// Where the running capture's maps are: `--bpffs-dir`, else the configuration's.
pub fn maps_dir(bpffs_dir: Option<PathBuf>, config: Option<&Path>) -> Result<PathBuf, Exit> {
    if let Some(dir) = bpffs_dir {
        return Ok(dir);
    }
    Ok(crate::load::config(config)?.capture.bpffs_dir)
}

fn open_maps(dir: &Path) -> Result<PinnedMaps, Exit> {
    PinnedMaps::open(dir).map_err(|error| {
        eprintln!("mldefender: error: {}", error_chain(&error));
        Exit::Failure
    })
}

pub enum ListAction {
    Add { prefix: IpPrefix, ttl: Option<Duration>, reason: DenyReason },
    Del { prefix: IpPrefix },
    List,
}

pub fn block(dir: &Path, action: ListAction) -> anyhow::Result<Exit> {
    let mut maps = match open_maps(dir) {
        Ok(maps) => maps,
        Err(exit) => return Ok(exit),
    };
    match action {
        ListAction::Add { prefix, ttl, reason } => {
            if let Err(error) = maps.deny_add(&prefix, ttl, reason) {
                eprintln!("mldefender: error: {}", error_chain(&error));
                return Ok(if matches!(error, CaptureError::Refused(_)) { Exit::Config } else { Exit::Failure });
            }
            let inside: Vec<String> = maps.allow_list()?.iter().filter(|allowed| prefix.covers(allowed)).map(ToString::to_string).collect();
            match ttl {
                Some(ttl) => println!("blocked {prefix} for {} s ({})", ttl.as_secs(), reason.as_str()),
                None => println!("blocked {prefix} permanently ({})", reason.as_str()),
            }
            if !inside.is_empty() {
                println!("note: allowlisted {} inside {prefix} stay reachable", inside.join(", "));
            }
        }
        ListAction::Del { prefix } => {
            if maps.deny_del(&prefix)? {
                println!("unblocked {prefix}");
            } else {
                eprintln!("mldefender: error: {prefix} is not in the deny list");
                return Ok(Exit::Failure);
            }
        }
        ListAction::List => {
            let now = boot_time_ns();
            println!("{:<44} {:<12} expires in", "prefix", "reason");
            for entry in maps.deny_list()? {
                let expires = match entry.remaining(now) {
                    None => "never".to_string(),
                    Some(left) if left.is_zero() => "expired (sweep pending)".to_string(),
                    Some(left) => format!("{} s", left.as_secs()),
                };
                println!("{:<44} {:<12} {expires}", entry.prefix.to_string(), entry.reason.as_str());
            }
        }
    }
    Ok(Exit::Success)
}

/// `block del PREFIX --benign`: exit 0 only when the deny entry is gone and the exemption recorded.
pub fn release_benign(maps: crate::MapsArgs, runtime: Option<PathBuf>, prefix: IpPrefix, reason: &str, for_secs: u64) -> anyhow::Result<Exit> {
    let Ok(config) = crate::load::config(maps.config.as_deref()).map(|config| config.capture) else { return Ok(Exit::Config) };
    let release = mld_runtime::benign::release(&maps.bpffs_dir.unwrap_or(config.bpffs_dir), &runtime.unwrap_or(config.runtime_dir), prefix, reason, for_secs);
    let (said, errors) = release.report(prefix);
    said.iter().for_each(|line| println!("{line}"));
    errors.iter().for_each(|line| eprintln!("mldefender: error: {line}"));
    Ok(if release.succeeded() { Exit::Success } else { Exit::Failure })
}

/// `block del PREFIX`: removes the deny entry, then tells the running supervisor (if one
/// runs) so that its detect task forgets the block and withdraws it from the fleet.
pub fn unblock(maps: crate::MapsArgs, runtime: Option<PathBuf>, prefix: IpPrefix) -> anyhow::Result<Exit> {
    let Ok(config) = crate::load::config(maps.config.as_deref()).map(|config| config.capture) else { return Ok(Exit::Config) };
    let dir = maps.bpffs_dir.unwrap_or(config.bpffs_dir);
    let exit = block(&dir, ListAction::Del { prefix })?;
    if exit != Exit::Success {
        // Nothing was removed here: the detect task and the fleet keep what they hold.
        return Ok(exit);
    }
    let mut exit = exit;
    match mld_runtime::benign::tell_released(&runtime.unwrap_or(config.runtime_dir), prefix) {
        Ok(Some(what)) => println!("{what}"),
        Ok(None) => {}
        Err(error) => {
            eprintln!("mldefender: error: the running supervisor was not told, so the detect task and the fleet still hold the block: {error}");
            exit = Exit::Failure;
        }
    }
    Ok(exit)
}

pub fn allow(dir: &Path, action: ListAction) -> anyhow::Result<Exit> {
    let mut maps = match open_maps(dir) {
        Ok(maps) => maps,
        Err(exit) => return Ok(exit),
    };
    match action {
        ListAction::Add { prefix, .. } => {
            maps.allow_add(&prefix)?;
            println!("allowlisted {prefix}");
        }
        ListAction::Del { prefix } => {
            if maps.allow_del(&prefix)? {
                println!("removed {prefix} from the allowlist");
            } else {
                eprintln!("mldefender: error: {prefix} is not in the allowlist");
                return Ok(Exit::Failure);
            }
        }
        ListAction::List => {
            for prefix in maps.allow_list()? {
                println!("{prefix}");
            }
        }
    }
    Ok(Exit::Success)
}

pub fn counters(dir: &Path, json: bool) -> anyhow::Result<Exit> {
    let maps = match open_maps(dir) {
        Ok(maps) => maps,
        Err(exit) => return Ok(exit),
    };
    let counters = maps.counters()?;
    if json {
        let mut reasons = serde_json::Map::new();
        for reason in DenyReason::ALL {
            reasons.insert(reason.as_str().to_string(), counters.dropped_for(reason).into());
        }
        let value = serde_json::json!({
            "passed": counters.passed,
            "allowed": counters.allowed,
            "dropped": counters.dropped,
            "dropped_by_reason": reasons,
            "spoofed": counters.spoofed,
            "guard_dropped": counters.guard_dropped,
            "malformed": counters.malformed,
            "not_ip": counters.not_ip,
            "ring_full": counters.ring_full,
            "expired_deny": counters.expired,
        });
        println!("{value}");
    } else {
        println!("{}", counters_line(&counters, 0, 0).split(", records").next().unwrap_or_default());
    }
    let _ = io::stdout().flush();
    Ok(Exit::Success)
}
