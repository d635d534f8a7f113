//! `mldefender top`: a live view of the running appliance in the terminal, redrawn in
//! place every second: the tasks, the rates, the blocks in force (one can be released
//! with a key), the top sources of the recent log, the newest decisions.
//!
//! Plain ANSI through crossterm (raw mode, the alternate screen, cursor moves), so it
//! works on a serial console as on a desktop terminal. Each line is cut to the terminal's
//! width. Without a terminal (or with --once) it prints one frame and exits. It reads what
//! `status`, `block list` and the log read: the supervisor's control socket, the XDP
//! program's pinned maps and the log directory, so it runs as root like them.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::{cursor, execute, queue, style, terminal};
use mld_capture::{boot_time_ns, DenyEntry, PinnedMaps};
use mld_ipc::{ControlRequest, StatusReport};
use mld_runtime::Exit;
use serde_json::Value;

/// Blocks and decisions listed at most (the frame is cut to the terminal's height too).
const BLOCKS_SHOWN: usize = 12;
const DECISIONS_SHOWN: usize = 10;
const TALKERS_SHOWN: usize = 5;
/// Flows of the recent log the top sources are counted over.
const TALKER_FLOWS: usize = 2000;
const TAIL_BYTES: u64 = 2 << 20;

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Configuration file: the runtime directory, the XDP pins and the log directory.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The supervisor's runtime directory (default: capture.runtime-dir of --config).
    #[arg(long, value_name = "DIR")]
    runtime_dir: Option<PathBuf>,
    /// Refresh interval, milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(200..=60_000))]
    interval_ms: u64,
    /// Print one frame and exit (what happens anyway when stdout is not a terminal).
    #[arg(long)]
    once: bool,
}

/// Where the appliance is read.
struct Sources {
    runtime_dir: PathBuf,
    bpffs_dir: PathBuf,
    log_dir: PathBuf,
    node: String,
}

/// One reading of the appliance.
struct Snapshot {
    at: Instant,
    node: String,
    report: Result<StatusReport, String>,
    blocks: Result<Vec<DenyEntry>, String>,
    decisions: Vec<serde_json::Map<String, Value>>,
    /// Source, flows, bytes: the sources of the most flows in the recent log.
    talkers: Vec<(String, u64, u64)>,
    talker_flows: usize,
}

pub fn top(args: &TopArgs) -> anyhow::Result<Exit> {
    let config = match crate::load::config(args.config.as_deref()) {
        Ok(config) => config,
        Err(exit) => return Ok(exit),
    };
    let sources = Sources {
        runtime_dir: args.runtime_dir.clone().unwrap_or(config.capture.runtime_dir),
        bpffs_dir: config.capture.bpffs_dir,
        log_dir: config.log.dir,
        node: config.log.node,
    };
    let interactive = !args.once && crossterm::tty::IsTty::is_tty(&std::io::stdout());
    if !interactive {
        let now = read(&sources);
        for line in render(&now, None, 0, "", 200) {
            println!("{line}");
        }
        return Ok(if now.report.is_ok() { Exit::Success } else { Exit::Failure });
    }
    // SIGTERM, SIGHUP (the terminal went away) and SIGINT end the loop, so that the
    // terminal is restored (in raw mode Ctrl-C is a key, handled below).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, std::sync::Arc::clone(&stop))?;
    }
    let _screen = Screen::enter()?;
    let interval = Duration::from_millis(args.interval_ms);
    let mut before: Option<Snapshot> = None;
    let mut selected = 0usize;
    let mut message = String::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let now = read(&sources);
        // Only a block on the screen can be selected (and released).
        let block_count = now.blocks.as_ref().map_or(0, |blocks| blocks.len().min(BLOCKS_SHOWN));
        selected = selected.min(block_count.saturating_sub(1));
        draw(&render(&now, before.as_ref(), selected, &message, usize::MAX))?;
        let next = now.at + interval;
        before = Some(now);
        // Keys until the next frame (polled in short steps, so that a signal is seen); a
        // key that changes something redraws at once.
        while let Some(left) = next.checked_duration_since(Instant::now()) {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            if !crossterm::event::poll(left.min(Duration::from_millis(100)))? {
                continue;
            }
            let Event::Key(KeyEvent { code, modifiers, kind: KeyEventKind::Press, .. }) = crossterm::event::read()? else { continue };
            match code {
                KeyCode::Char('q') | KeyCode::Esc => return Ok(Exit::Success),
                KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => return Ok(Exit::Success),
                KeyCode::Up | KeyCode::Char('k') => selected = selected.saturating_sub(1),
                KeyCode::Down | KeyCode::Char('j') => selected = (selected + 1).min(block_count.saturating_sub(1)),
                KeyCode::Char('r') => {
                    let prefix = before.as_ref().and_then(|shown| shown.blocks.as_ref().ok()?.get(selected).map(|entry| entry.prefix));
                    message = match prefix {
                        Some(prefix) => release(&sources, prefix),
                        None => "no block selected".to_string(),
                    };
                }
                _ => continue,
            }
            break;
        }
    }
    Ok(Exit::Success)
}

/// The terminal in raw mode on the alternate screen, restored when dropped (a panic, an
/// error, a signal that ends the loop).
struct Screen;

impl Screen {
    fn enter() -> anyhow::Result<Screen> {
        terminal::enable_raw_mode()?;
        // From here on, whatever fails restores the terminal.
        let screen = Screen;
        execute!(std::io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(std::io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

/// Writes the frame in place: each line from its start, the rest of the line and of the
/// screen cleared; lines cut to the terminal's size.
fn draw(lines: &[String]) -> anyhow::Result<()> {
    let (width, height) = terminal::size().unwrap_or((80, 24));
    let mut out = std::io::stdout().lock();
    for (row, line) in lines.iter().take(usize::from(height)).enumerate() {
        let cut: String = line.chars().take(usize::from(width)).collect();
        queue!(out, cursor::MoveTo(0, row as u16), style::Print(cut), terminal::Clear(terminal::ClearType::UntilNewLine))?;
    }
    queue!(out, cursor::MoveTo(0, lines.len().min(usize::from(height)) as u16), terminal::Clear(terminal::ClearType::FromCursorDown))?;
    out.flush()?;
    Ok(())
}

fn read(sources: &Sources) -> Snapshot {
    let report = ask_status(sources);
    let blocks = PinnedMaps::open(&sources.bpffs_dir)
        .and_then(|maps| maps.deny_list())
        .map_err(|error| format!("the XDP maps in `{}`: {error}", sources.bpffs_dir.display()))
        .map(|mut entries| {
            let now = boot_time_ns();
            entries.retain(|entry| entry.remaining(now).is_none_or(|left| !left.is_zero()));
            entries.sort_by_key(|entry| std::cmp::Reverse(entry.remaining(now).unwrap_or(Duration::MAX)));
            entries
        });
    let recent = mld_runtime::web::tail_events(&sources.log_dir, &sources.node, TAIL_BYTES, TALKER_FLOWS, |_| true);
    let mut talkers: std::collections::HashMap<String, (u64, u64)> = std::collections::HashMap::new();
    for record in &recent {
        let Some(source) = record.get("src_ip").and_then(Value::as_str) else { continue };
        if record.get("src_port").is_none_or(Value::is_null) || source.parse::<IpAddr>().is_ok_and(|address| address.is_unspecified()) {
            continue;
        }
        let bytes = ["fwd_ip_bytes", "bwd_ip_bytes"].iter().filter_map(|name| record.get(*name).and_then(Value::as_u64)).sum::<u64>();
        let entry = talkers.entry(source.to_string()).or_default();
        entry.0 += 1;
        entry.1 += bytes;
    }
    let mut talkers: Vec<(String, u64, u64)> = talkers.into_iter().map(|(source, (flows, bytes))| (source, flows, bytes)).collect();
    talkers.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0)));
    talkers.truncate(TALKERS_SHOWN);
    let mut decisions: Vec<_> = recent
        .iter()
        .filter(|record| record.get("action").and_then(Value::as_str).is_some_and(|action| action != "observe"))
        .take(DECISIONS_SHOWN)
        .cloned()
        .collect();
    // Newest first by their time (a decision that waited for its nearest past events is
    // written after a later one).
    decisions.sort_by_key(|record| std::cmp::Reverse(record.get("ts_us").and_then(Value::as_u64).unwrap_or(0)));
    Snapshot { at: Instant::now(), node: sources.node.clone(), report, blocks, decisions, talkers, talker_flows: recent.len() }
}

/// The supervisor's report, quietly (errors go on the frame, not over it).
fn ask_status(sources: &Sources) -> Result<StatusReport, String> {
    let path = sources.runtime_dir.join(mld_runtime::supervise::STATUS_SOCKET);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).map_err(|error| format!("no supervisor answers on `{}`: {error}", path.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).map_err(|error| error.to_string())?;
    mld_ipc::write_frame(&mut stream, &ControlRequest::Status).map_err(|error| format!("failed to ask the supervisor: {error}"))?;
    mld_ipc::read_frame(&mut stream)
        .map_err(|error| format!("failed to read the supervisor's answer: {error}"))?
        .ok_or_else(|| "the supervisor closed the connection".to_string())
}

/// `block del` of the selected block from the keyboard: the deny entry removed, then the
/// supervisor told (its detect task forgets it and withdraws it from the fleet).
fn release(sources: &Sources, prefix: mld_types::IpPrefix) -> String {
    let removed = PinnedMaps::open(&sources.bpffs_dir).and_then(|mut maps| maps.deny_del(&prefix));
    match removed {
        Ok(true) => match mld_runtime::benign::tell_released(&sources.runtime_dir, prefix) {
            Ok(Some(what)) => format!("released {prefix}: {what}"),
            Ok(None) => format!("released {prefix}"),
            Err(error) => format!("released {prefix} from the deny map, but the supervisor was not told: {error}"),
        },
        Ok(false) => format!("{prefix} was no longer blocked"),
        Err(error) => format!("failed to release {prefix}: {error}"),
    }
}

/// Text from the log as it may be printed on a terminal: control characters (an escape
/// sequence in a record must not drive the operator's terminal) shown as `?`.
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn duration(secs: f64) -> String {
    let secs = secs.max(0.0) as u64;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}M", bytes as f64 / f64::from(1u32 << 20))
}

/// The frame's lines; `rows_cap` bounds the lists when printing without a terminal.
fn render(now: &Snapshot, before: Option<&Snapshot>, selected: usize, message: &str, rows_cap: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let report = now.report.as_ref();
    let head = match report {
        Ok(report) => format!(
            "mldefender top - node {} - {} - up {} - supervisor pid {}",
            now.node,
            if report.ready { "ready" } else { "NOT READY" },
            duration(report.uptime_secs),
            report.supervisor_pid
        ),
        Err(error) => format!("mldefender top - {error}"),
    };
    lines.push(head);
    lines.push("keys: q quit  up/down select a block  r release the selected block".to_string());
    lines.push(String::new());
    if let Ok(report) = report {
        lines.push(format!("{:<10} {:<11} {:>8} {:>8} {:>9} {:>17}", "TASK", "STATE", "PID", "UP", "RESTARTS", "MEMORY/BUDGET"));
        for task in &report.tasks {
            let state = serde_json::to_value(task.state).ok().and_then(|value| value.as_str().map(str::to_string)).unwrap_or_default();
            lines.push(format!(
                "{:<10} {:<11} {:>8} {:>8} {:>9} {:>17}",
                task.name,
                state,
                task.pid.map_or("-".to_string(), |pid| pid.to_string()),
                duration(task.uptime_secs),
                task.restarts,
                format!("{}/{}", mib(task.memory_bytes), mib(task.memory_budget_bytes))
            ));
        }
        let p = &report.pipeline;
        let rate = |value: &dyn Fn(&StatusReport) -> u64| match before.and_then(|before| Some((before, before.report.as_ref().ok()?))) {
            Some((then, earlier)) => {
                let secs = now.at.saturating_duration_since(then.at).as_secs_f64().max(0.001);
                format!("{:.0}/s", value(report).saturating_sub(value(earlier)) as f64 / secs)
            }
            None => "-".to_string(),
        };
        lines.push(String::new());
        lines.push(format!(
            "RATES  xdp passed {}  dropped {}  flows {}  events logged {}  decisions {}",
            rate(&|r| r.pipeline.capture.xdp_passed),
            rate(&|r| r.pipeline.capture.xdp_dropped),
            rate(&|r| r.pipeline.detect.flows_received),
            rate(&|r| r.pipeline.log.events_logged),
            rate(&|r| r.pipeline.detect.decisions.iter().map(|(_, _, count)| count).sum())
        ));
        lines.push(format!(
            "TOTALS xdp dropped {} (malformed {})  blocks {}  alerts {}  refused {}  breaker {}  logged {}  verified {}  quarantined {}",
            p.capture.xdp_dropped,
            p.capture.xdp_malformed,
            p.detect.blocks,
            p.detect.alerts,
            p.detect.refused,
            if p.detect.breaker_holding == 1 { "HOLDING" } else { "closed" },
            p.log.events_logged,
            p.ingest.events_verified,
            p.ingest.events_quarantined
        ));
    }
    lines.push(String::new());
    match &now.blocks {
        Ok(blocks) => {
            lines.push(format!("BLOCKS IN FORCE ({})", blocks.len()));
            let boot = boot_time_ns();
            for (index, entry) in blocks.iter().enumerate().take(BLOCKS_SHOWN.min(rows_cap)) {
                let left = entry.remaining(boot).map_or("permanent".to_string(), |left| format!("{} left", duration(left.as_secs_f64())));
                lines.push(format!("{} {:<43} {:<12} {left}", if index == selected { ">" } else { " " }, entry.prefix.to_string(), entry.reason.as_str()));
            }
            if blocks.len() > BLOCKS_SHOWN {
                lines.push(format!("  ... and {} more (mldefender block list)", blocks.len() - BLOCKS_SHOWN));
            }
        }
        Err(error) => lines.push(format!("BLOCKS IN FORCE: {error}")),
    }
    if !message.is_empty() {
        lines.push(format!("  {message}"));
    }
    lines.push(String::new());
    lines.push(format!("TOP SOURCES (of the last {} logged flows)", now.talker_flows));
    for (source, flows, bytes) in &now.talkers {
        lines.push(format!("  {:<41} {flows:>7} flows {:>10}", printable(source), mib(*bytes)));
    }
    lines.push(String::new());
    lines.push("RECENT DECISIONS (newest first)".to_string());
    for record in now.decisions.iter().take(rows_cap) {
        let text = |name: &str| printable(&record.get(name).map_or(String::new(), |value| value.as_str().map_or_else(|| value.to_string(), str::to_string)));
        let time = text("ts");
        // RFC 3339: the time of day; anything else as it is.
        let time = time.get(11..19).unwrap_or(&time).to_string();
        // Records without a flow (a configuration, an image boot) carry the unspecified address.
        let unspecified = |address: &str| address.parse::<IpAddr>().is_ok_and(|address| address.is_unspecified());
        let target = match (text("dst_ip").as_str(), text("dst_port").as_str()) {
            ("" | "null", _) => String::new(),
            (address, _) if unspecified(address) => String::new(),
            (address, "" | "null") => address.to_string(),
            (address, port) => format!("{address}:{port}"),
        };
        let source = text("src_ip");
        let source = if unspecified(&source) { "-".to_string() } else { source };
        let target = if target.is_empty() { String::new() } else { format!("-> {target}") };
        lines.push(format!("  {time} {:<12} {:<11} {source:<39} {target}", text("action"), text("category")));
    }
    lines
}
