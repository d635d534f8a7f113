//! The operator interfaces on the management network (`[metrics]`, docs/operations.md):
//! Prometheus metrics at `/metrics`, the read-only status page at `/` and the JSON it
//! reads under `/api/`.
//!
//! The supervisor binds the listeners (only the configured management addresses; a
//! wildcard is refused by the configuration) and answers on a few threads of its own:
//! GET and HEAD of fixed paths, nothing else, and only with a `Host` that names a listening
//! address (a web page elsewhere cannot rebind its name to the appliance and read it).
//! Everything is read-only. Every bound is explicit: a request head of at most
//! [`REQUEST_MAX_BYTES`], sent within [`REQUEST_DEADLINE`] in all, the answer read within
//! [`RESPONSE_DEADLINE`] in all, [`WORKERS_PER_LISTENER`] connections at a time per
//! address, [`DECISIONS_MAX`] recent decisions, [`BLOCKS_MAX`] blocks listed, [`MINUTES`]
//! minutes of history, the XDP maps read at most once per [`MAPS_FRESH`] whatever the
//! requests. A client outside `metrics.allow-from` is closed unanswered.
//!
//! What is served comes from three places: the status report the supervisor's loop
//! publishes every second (tasks and the pipeline's counters, as `mldefender status`),
//! the XDP program's pinned maps (drops per reason, the blocks in force with their time
//! left, as `mldefender counters` and `block list`), and the tail of the newest signed log
//! files (recent decisions, as written; the ingest task verifies them, and `mldefender log
//! export` exports only verified records).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mld_capture::{Counters, PinnedMaps};
use mld_config::{Config, MetricsConfig};
use mld_ipc::{LatencyHistogram, StatusReport, TaskState};
use mld_types::DenyReason;
use serde_json::{json, Value};
use tracing::{info, warn};

/// A request head larger than this is refused (431).
const REQUEST_MAX_BYTES: usize = 8192;
/// Time a client has to send its whole request head.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// Time a client has to read the whole answer.
const RESPONSE_DEADLINE: Duration = Duration::from_secs(5);
/// How long one reading of the XDP maps (counters, deny entries) serves every request.
const MAPS_FRESH: Duration = Duration::from_secs(1);
/// Connections answered at once per listening address (one thread each).
const WORKERS_PER_LISTENER: usize = 2;
/// Recent decisions on the page.
pub const DECISIONS_MAX: usize = 50;
/// How far back the newest log files are read for them.
pub const DECISIONS_TAIL_BYTES: u64 = 512 * 1024;
/// Blocks listed (the rest are counted).
const BLOCKS_MAX: usize = 1000;
/// Minutes of per-minute history.
pub const MINUTES: usize = 60;

const PAGE: &str = include_str!("../assets/status.html");
const SCRIPT: &str = include_str!("../assets/status.js");

/// The supervisor's handle: it publishes the status report here.
#[derive(Debug, Clone)]
pub struct Web {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    report: Option<StatusReport>,
    series: Series,
}

/// Where the handlers read from.
#[derive(Debug)]
struct Sources {
    bpffs_dir: PathBuf,
    log_dir: PathBuf,
    node: String,
    metrics: MetricsConfig,
    state: Arc<Mutex<State>>,
    /// The last reading of the XDP maps, shared by the requests within [`MAPS_FRESH`].
    maps: Mutex<Option<(Instant, Option<XdpReading>)>>,
}

/// The XDP program's counters and deny entries, read together.
#[derive(Debug, Clone)]
struct XdpReading {
    counters: Counters,
    entries: Vec<mld_capture::DenyEntry>,
}

impl Web {
    /// Binds every `metrics.listen` address and starts the workers; `None` when metrics
    /// are off or no address could be bound (each failure logged: the appliance protects
    /// without its metrics).
    pub fn start(config: &Config) -> Option<Web> {
        if !config.metrics.enabled {
            return None;
        }
        let state = Arc::new(Mutex::new(State::default()));
        let sources = Arc::new(Sources {
            bpffs_dir: config.capture.bpffs_dir.clone(),
            log_dir: config.log.dir.clone(),
            node: config.log.node.clone(),
            metrics: config.metrics.clone(),
            state: Arc::clone(&state),
            maps: Mutex::new(None),
        });
        let mut bound = 0;
        for address in &config.metrics.listen {
            let listener = match TcpListener::bind(address) {
                Ok(listener) => listener,
                Err(error) => {
                    warn!(address = %address, error = %error, "metrics: failed to listen on a management address; it is not served");
                    continue;
                }
            };
            for worker in 0..WORKERS_PER_LISTENER {
                let listener = match listener.try_clone() {
                    Ok(listener) => listener,
                    Err(error) => {
                        warn!(address = %address, error = %error, "metrics: failed to share a listener");
                        break;
                    }
                };
                let sources = Arc::clone(&sources);
                let spawned = std::thread::Builder::new().name(format!("metrics-{bound}-{worker}")).spawn(move || serve(&listener, &sources));
                if let Err(error) = spawned {
                    warn!(address = %address, error = %error, "metrics: failed to start a worker");
                }
            }
            info!(address = %address, "metrics and the status page served (read-only)");
            bound += 1;
        }
        (bound > 0).then_some(Web { state })
    }

    /// The supervisor's latest status report (every second).
    pub fn publish(&self, report: StatusReport) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.series.sample(unix_secs(SystemTime::now()), &report);
        state.report = Some(report);
    }
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

/// What the graphs show: totals at the start of each minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    dropped: u64,
    decisions: u64,
    blocks: u64,
}

impl Totals {
    fn of(report: &StatusReport) -> Totals {
        let pipeline = &report.pipeline;
        let decisions = pipeline.detect.decisions.iter().map(|(_, _, count)| count).sum();
        Totals { dropped: pipeline.capture.xdp_dropped, decisions, blocks: pipeline.detect.blocks }
    }
}

/// Per-minute history: the totals at the start of each of the last [`MINUTES`] minutes,
/// and the latest.
#[derive(Debug, Default)]
struct Series {
    minutes: VecDeque<(u64, Totals)>,
    latest: Totals,
}

impl Series {
    fn sample(&mut self, now_secs: u64, report: &StatusReport) {
        let totals = Totals::of(report);
        let minute = now_secs - now_secs % 60;
        if self.minutes.back().is_none_or(|(start, _)| *start < minute) {
            if self.minutes.len() == MINUTES {
                self.minutes.pop_front();
            }
            self.minutes.push_back((minute, totals));
        }
        self.latest = totals;
    }

    /// Each minute's start and its increases (the minute in progress up to now). A task's
    /// restart starts its counters again: such a minute counts from zero, not negative.
    fn per_minute(&self) -> Vec<(u64, Totals)> {
        let ends = self.minutes.iter().skip(1).map(|(_, totals)| *totals).chain(std::iter::once(self.latest));
        self.minutes
            .iter()
            .zip(ends)
            .map(|((start, at), end)| {
                let delta = |end: u64, at: u64| if end >= at { end - at } else { end };
                (
                    *start,
                    Totals { dropped: delta(end.dropped, at.dropped), decisions: delta(end.decisions, at.decisions), blocks: delta(end.blocks, at.blocks) },
                )
            })
            .collect()
    }
}

fn serve(listener: &TcpListener, sources: &Sources) {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(error = %error, "metrics: accept failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if !sources.metrics.admits(peer.ip()) {
            // Closed unanswered.
            continue;
        }
        if let Err(error) = answer(stream, sources) {
            tracing::debug!(peer = %peer, error = %error, "metrics: a request was not answered");
        }
    }
}

/// A response: status, content type, body.
type Response = (u16, &'static str, Vec<u8>);

fn timed_out(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_string())
}

/// What is left of `deadline`, or a timeout error.
fn left(deadline: Instant, what: &str) -> std::io::Result<Duration> {
    deadline.checked_duration_since(Instant::now()).filter(|left| !left.is_zero()).ok_or_else(|| timed_out(what))
}

fn answer(mut stream: TcpStream, sources: &Sources) -> std::io::Result<()> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (method, path, host) = loop {
        // Each read may wait only for what is left of the one deadline.
        stream.set_read_timeout(Some(left(deadline, "request not sent in time")?))?;
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..read]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                let host = request
                    .headers
                    .iter()
                    .find(|header| header.name.eq_ignore_ascii_case("host"))
                    .map(|header| String::from_utf8_lossy(header.value).into_owned());
                break (request.method.unwrap_or("").to_string(), request.path.unwrap_or("").to_string(), host);
            }
            Ok(httparse::Status::Partial) if head.len() < REQUEST_MAX_BYTES => {}
            Ok(httparse::Status::Partial) => return respond(&mut stream, false, (431, "text/plain", b"request head too large\n".to_vec())),
            Err(_) => return respond(&mut stream, false, (400, "text/plain", b"bad request\n".to_vec())),
        }
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(&mut stream, false, (405, "text/plain", b"read-only: GET and HEAD only\n".to_vec()));
    }
    if !host.as_deref().is_some_and(|host| host_is_listened(host, &sources.metrics.listen)) {
        return respond(&mut stream, false, (421, "text/plain", b"the Host header must name the address this listens on\n".to_vec()));
    }
    let path = path.split('?').next().unwrap_or("");
    let response = route(path, sources);
    respond(&mut stream, head_only, response)
}

/// Whether `host` (a request's `Host`: `ADDRESS:PORT`, `[V6]:PORT`, or the address alone
/// for port 80) names one of the listening addresses.
fn host_is_listened(host: &str, listen: &[std::net::SocketAddr]) -> bool {
    let host = host.trim();
    let parsed = host.parse::<std::net::SocketAddr>().ok().or_else(|| {
        let address = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().ok()?;
        Some(std::net::SocketAddr::new(address, 80))
    });
    parsed.is_some_and(|host| listen.iter().any(|address| address.ip().to_canonical() == host.ip().to_canonical() && address.port() == host.port()))
}

fn route(path: &str, sources: &Sources) -> Response {
    let json = |value: Value| (200, "application/json", value.to_string().into_bytes());
    match path {
        "/" | "/index.html" => (200, "text/html; charset=utf-8", PAGE.as_bytes().to_vec()),
        "/status.js" => (200, "text/javascript; charset=utf-8", SCRIPT.as_bytes().to_vec()),
        "/metrics" => (200, "text/plain; version=0.0.4; charset=utf-8", metrics(sources).into_bytes()),
        "/api/status" => json(status_json(sources)),
        "/api/blocks" => json(blocks_json(sources)),
        "/api/decisions" => json(Value::Array(recent_decisions(&sources.log_dir, &sources.node, DECISIONS_MAX))),
        "/api/series" => json(series_json(sources)),
        _ => (404, "text/plain", b"not found\n".to_vec()),
    }
}

fn respond(stream: &mut TcpStream, head_only: bool, (status, content_type, body): Response) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let allow = if status == 405 { "Allow: GET, HEAD\r\n" } else { "" };
    let header = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\nContent-Security-Policy: default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self'\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut out = header.into_bytes();
    if !head_only {
        out.extend_from_slice(&body);
    }
    // The whole answer within one deadline, however slowly the client reads.
    let deadline = Instant::now() + RESPONSE_DEADLINE;
    let mut rest = out.as_slice();
    while !rest.is_empty() {
        stream.set_write_timeout(Some(left(deadline, "answer not read in time")?))?;
        match stream.write(rest) {
            Ok(0) => return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "the client closed")),
            Ok(written) => rest = &rest[written..],
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn report(sources: &Sources) -> Option<StatusReport> {
    sources.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).report.clone()
}

/// The XDP program's counters and deny entries, read from their pins (which outlive the
/// supervisor's restarts) at most once per [`MAPS_FRESH`]: any number of requests cost
/// one walk of the deny map a second. `None` while the maps are not there.
fn xdp(sources: &Sources) -> Option<XdpReading> {
    let mut cached = sources.maps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((at, reading)) = cached.as_ref() {
        if at.elapsed() < MAPS_FRESH {
            return reading.clone();
        }
    }
    let reading =
        PinnedMaps::open(&sources.bpffs_dir).ok().and_then(|maps| Some(XdpReading { counters: maps.counters().ok()?, entries: maps.deny_list().ok()? }));
    *cached = Some((Instant::now(), reading.clone()));
    reading
}

fn xdp_json(counters: &Counters) -> Value {
    let mut reasons = serde_json::Map::new();
    for reason in DenyReason::ALL {
        reasons.insert(reason.as_str().to_string(), counters.dropped_for(reason).into());
    }
    reasons.insert("spoofed".to_string(), counters.spoofed.into());
    reasons.insert("guard".to_string(), counters.guard_dropped.into());
    json!({
        "passed": counters.passed,
        "allowlisted": counters.allowed,
        "dropped": counters.dropped,
        "dropped_by_reason": reasons,
        "malformed": counters.malformed,
        "not_ip": counters.not_ip,
        "ring_full": counters.ring_full,
    })
}

fn status_json(sources: &Sources) -> Value {
    let xdp = xdp(sources);
    // The fleet's view (its etcd endpoints, every member's configuration digest) is the
    // fleet's business, not the page's.
    let report = report(sources).map(|mut report| {
        report.fleet = None;
        report
    });
    json!({
        "node": sources.node,
        "generated_unix_ms": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64),
        "report": report,
        "xdp": xdp.as_ref().map(|reading| xdp_json(&reading.counters)),
    })
}

fn blocks_json(sources: &Sources) -> Value {
    let Some(XdpReading { entries, .. }) = xdp(sources) else {
        return json!({ "total": 0, "blocks": [], "error": "the XDP maps are not there (is the capture running?)" });
    };
    let now = mld_capture::boot_time_ns();
    let mut entries: Vec<_> = entries.into_iter().filter(|entry| entry.remaining(now).is_none_or(|left| !left.is_zero())).collect();
    // Longest left first; permanent ones first of all.
    entries.sort_by_key(|entry| std::cmp::Reverse(entry.remaining(now).unwrap_or(Duration::MAX)));
    let total = entries.len();
    let blocks: Vec<Value> = entries
        .iter()
        .take(BLOCKS_MAX)
        .map(|entry| {
            json!({
                "prefix": entry.prefix.to_string(),
                "reason": entry.reason.as_str(),
                "permanent": entry.expires_boot_ns.is_none(),
                "remaining_secs": entry.remaining(now).map(|left| left.as_secs()),
            })
        })
        .collect();
    json!({ "total": total, "blocks": blocks })
}

fn series_json(sources: &Sources) -> Value {
    let state = sources.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let minutes: Vec<Value> = state
        .series
        .per_minute()
        .into_iter()
        .map(|(start, totals)| json!({ "minute_unix": start, "dropped": totals.dropped, "decisions": totals.decisions, "blocks": totals.blocks }))
        .collect();
    json!({ "minutes": minutes })
}

/// The newest event records of the node's log, newest first, from its newest files (at
/// most `budget` bytes read from their ends), as written; at most `limit`, and only those
/// `keep` accepts.
pub fn tail_events(
    dir: &Path,
    node: &str,
    budget: u64,
    limit: usize,
    keep: impl Fn(&serde_json::Map<String, Value>) -> bool,
) -> Vec<serde_json::Map<String, Value>> {
    let prefix = format!("events-{node}-");
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let index = name.strip_prefix(&prefix)?.strip_suffix(".jsonl")?.parse().ok()?;
            Some((index, entry.path()))
        })
        .collect();
    files.sort_unstable_by_key(|(index, _)| std::cmp::Reverse(*index));
    let mut found = Vec::new();
    let mut budget = budget;
    for (_, path) in files {
        if found.len() >= limit || budget == 0 {
            break;
        }
        // The directory is the log task's: never follow a link it put there, never wait
        // on a FIFO, read only a regular file.
        let opened = std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK).open(&path);
        let Ok(mut file) = opened else { continue };
        let Ok(meta) = file.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let length = meta.len();
        let start = length.saturating_sub(budget);
        budget -= length - start;
        let mut text = Vec::new();
        if std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start)).is_err() || file.take(length - start).read_to_end(&mut text).is_err() {
            continue;
        }
        let text = String::from_utf8_lossy(&text);
        let mut lines: Vec<&str> = text.lines().collect();
        if start > 0 && !lines.is_empty() {
            // The first line is cut.
            lines.remove(0);
        }
        for line in lines.into_iter().rev() {
            let Ok(Value::Object(record)) = serde_json::from_str::<Value>(line) else { continue };
            if record.get("type").and_then(Value::as_str) != Some("event") || !keep(&record) {
                continue;
            }
            found.push(record);
            if found.len() >= limit {
                break;
            }
        }
    }
    found
}

/// The newest decisions (event records whose action is not `observe`), newest first, as
/// the status page shows them. At most `limit`.
pub fn recent_decisions(dir: &Path, node: &str, limit: usize) -> Vec<Value> {
    let is_decision = |record: &serde_json::Map<String, Value>| record.get("action").and_then(Value::as_str).is_some_and(|action| action != "observe");
    let mut decisions = tail_events(dir, node, DECISIONS_TAIL_BYTES, limit, is_decision);
    // The log's order is the order of writing: a decision that waited for its nearest past
    // events is written after a later one.
    decisions.sort_by_key(|record| std::cmp::Reverse(record.get("ts_us").and_then(Value::as_u64).unwrap_or(0)));
    decisions
        .into_iter()
        .map(|record| {
            let mut provenance = record.get("provenance").and_then(Value::as_str).unwrap_or("").to_string();
            if provenance.len() > 300 {
                let cut = (0..=300).rev().find(|at| provenance.is_char_boundary(*at)).unwrap_or(0);
                provenance.truncate(cut);
                provenance.push('…');
            }
            let field = |name: &str| record.get(name).cloned().unwrap_or(Value::Null);
            json!({
                "ts": field("ts"),
                "seq": field("seq"),
                "event_id": field("event_id"),
                "action": field("action"),
                "category": field("category"),
                "src_ip": field("src_ip"),
                "dst_ip": field("dst_ip"),
                "dst_port": field("dst_port"),
                "protocol": field("protocol_name"),
                "block_ttl_secs": field("block_ttl_secs"),
                "provenance": provenance,
            })
        })
        .collect()
}

/// The Prometheus text exposition (format 0.0.4).
fn metrics(sources: &Sources) -> String {
    let mut out = Exposition::default();
    let xdp = xdp(sources).map(|reading| (reading.counters, reading.entries));
    if let Some(report) = report(sources) {
        render_report(&mut out, &report);
    }
    out.family("mldefender_xdp_maps_readable", "gauge", "1 when the XDP program's pinned maps could be read for this scrape.");
    out.sample("mldefender_xdp_maps_readable", &[], u64::from(xdp.is_some()) as f64);
    if let Some((counters, entries)) = xdp {
        render_xdp(&mut out, &counters, &entries);
    }
    out.text
}

fn render_report(out: &mut Exposition, report: &StatusReport) {
    out.family("mldefender_up", "gauge", "1 when every task is ready.");
    out.sample("mldefender_up", &[], f64::from(u8::from(report.ready)));
    out.family("mldefender_supervisor_uptime_seconds", "gauge", "Time since the supervisor started.");
    out.sample("mldefender_supervisor_uptime_seconds", &[], report.uptime_secs);
    out.family("mldefender_supervisor_resident_bytes", "gauge", "The supervisor's resident memory.");
    out.sample("mldefender_supervisor_resident_bytes", &[], report.supervisor_memory_bytes as f64);
    let states = [
        (TaskState::Starting, "starting"),
        (TaskState::Ready, "ready"),
        (TaskState::Restarting, "restarting"),
        (TaskState::Held, "held"),
        (TaskState::Stopping, "stopping"),
        (TaskState::Stopped, "stopped"),
        (TaskState::Disabled, "disabled"),
    ];
    out.family("mldefender_task_state", "gauge", "1 for the state each task is in (a state set).");
    for task in &report.tasks {
        for (state, name) in states {
            out.sample("mldefender_task_state", &[("task", &task.name), ("state", name)], f64::from(u8::from(task.state == state)));
        }
    }
    type PerTask = (&'static str, &'static str, &'static str, fn(&mld_ipc::TaskStatus) -> f64);
    let per_task: [PerTask; 5] = [
        ("mldefender_task_restarts_total", "counter", "Restarts of each task since the supervisor started.", |task| f64::from(task.restarts)),
        ("mldefender_task_uptime_seconds", "gauge", "Time since each task's current process started.", |task| task.uptime_secs),
        ("mldefender_task_resident_bytes", "gauge", "Each task's memory (cgroup or RSS, as its enforcement reads it).", |task| task.memory_bytes as f64),
        ("mldefender_task_memory_budget_bytes", "gauge", "Each task's memory budget.", |task| task.memory_budget_bytes as f64),
        ("mldefender_task_control_floods_total", "counter", "Times each task was killed for flooding its control channel.", |task| task.control_floods as f64),
    ];
    for (name, kind, help, value) in per_task {
        out.family(name, kind, help);
        for task in &report.tasks {
            out.sample(name, &[("task", &task.name)], value(task));
        }
    }
    let p = &report.pipeline;
    let counters: [(&str, &str, u64); 18] = [
        ("mldefender_capture_records_total", "Packet records the capture task read from the ring buffer.", p.capture.records_read),
        ("mldefender_flows_finished_total", "Flows the capture task finished.", p.capture.flows_finished),
        ("mldefender_flows_sent_total", "Flows sent to the detect task.", p.capture.flows_sent),
        ("mldefender_detect_flows_received_total", "Flows the detect task received.", p.detect.flows_received),
        ("mldefender_detect_flows_scored_total", "Flows the detect task scored with the model.", p.detect.flows_scored),
        ("mldefender_detect_reports_total", "Active-source reports the detect task received.", p.detect.reports_received),
        ("mldefender_detect_stray_flows_total", "Flows claiming an address with a proven path that arrived by another.", p.detect.stray_flows),
        ("mldefender_events_acked_total", "Events the log task acknowledged to the detect task.", p.detect.events_acked),
        ("mldefender_log_events_total", "Events written to the signed log.", p.log.events_logged),
        ("mldefender_log_refused_events_total", "Event bodies the log refused (each logged as a rejected_event record).", p.log.events_refused),
        ("mldefender_log_write_failures_total", "Times the log could not be written (the task retries).", p.log.log_write_failures),
        ("mldefender_log_written_bytes_total", "Bytes the log task wrote to the signed log.", p.log.log_bytes),
        ("mldefender_ingest_verified_total", "Records of the signed log the ingest task verified.", p.ingest.events_verified),
        ("mldefender_ingest_quarantined_total", "Lines of the signed log the ingest task quarantined.", p.ingest.events_quarantined),
        ("mldefender_ingest_indexed_total", "Events added to the similarity index.", p.ingest.events_indexed),
        ("mldefender_ingest_text_indexed_total", "Decisions described in words and added to the text index.", p.ingest.events_text_indexed),
        ("mldefender_guards_on_total", "Services put under a guard against random-source floods.", p.capture.guards_on),
        ("mldefender_shared_blocks_applied_total", "Other fleet nodes' blocks applied here.", p.detect.shared_applied),
    ];
    for (name, help, value) in counters {
        out.family(name, "counter", help);
        out.sample(name, &[], value as f64);
    }
    out.family("mldefender_shared_blocks_refused_total", "counter", "Other fleet nodes' blocks refused here.");
    out.sample("mldefender_shared_blocks_refused_total", &[], p.detect.shared_refused as f64);
    out.family("mldefender_flows_dropped_total", "counter", "Flows lost: the capture task's queue to detection was full, or detection fell behind.");
    out.sample("mldefender_flows_dropped_total", &[("stage", "capture")], p.capture.flows_dropped as f64);
    out.sample("mldefender_flows_dropped_total", &[("stage", "detect")], p.detect.flows_dropped_detect as f64);
    out.family("mldefender_decisions_total", "counter", "Decisions by action and category (as the signed log names them).");
    for (action, category, count) in p.detect.decisions.iter() {
        out.sample("mldefender_decisions_total", &[("action", action), ("category", category)], count as f64);
    }
    let gauges: [(&str, &str, u64); 5] = [
        ("mldefender_blocks_in_force", "Blocks in force, as the detect task counts them (its own and the fleet's).", p.detect.active_blocks),
        ("mldefender_breaker_holding", "1 while the circuit breaker holds new blocks back.", p.detect.breaker_holding),
        ("mldefender_guards_active", "Services guarded now against random-source floods.", p.capture.guards_active),
        ("mldefender_log_disk_bytes", "Bytes the signed log's files take on disk.", p.log.log_disk_bytes),
        ("mldefender_fleet_members", "Fleet members with a live lease, this node included (0 without a fleet).", p.fleet.fleet_members),
    ];
    for (name, help, value) in gauges {
        out.family(name, "gauge", help);
        out.sample(name, &[], value as f64);
    }
    out.histogram("mldefender_block_latency_seconds", "From a block verdict to its deny-map entry.", &p.detect.block_latency);
    let fleet: [(&str, &str, &str, u64); 9] = [
        ("mldefender_fleet_connected", "gauge", "1 while the fleet task's last request to etcd succeeded.", p.fleet.fleet_connected),
        ("mldefender_fleet_connects_total", "counter", "Connections the fleet task made to etcd.", p.fleet.fleet_connects),
        ("mldefender_fleet_published_total", "counter", "This node's blocks written to etcd.", p.fleet.fleet_published),
        ("mldefender_fleet_publish_failures_total", "counter", "This node's blocks that could not be written to etcd.", p.fleet.fleet_publish_failed),
        ("mldefender_fleet_received_total", "counter", "Other nodes' blocks received from etcd.", p.fleet.fleet_received),
        ("mldefender_fleet_handoff_dropped_total", "counter", "Other nodes' blocks dropped on the way to the detect task.", p.fleet.fleet_handoff_dropped),
        ("mldefender_fleet_invalid_total", "counter", "Watch events or records refused by their checks.", p.fleet.fleet_invalid),
        ("mldefender_fleet_resyncs_total", "counter", "Full resyncs with etcd.", p.fleet.fleet_resyncs),
        ("mldefender_fleet_revision", "gauge", "The etcd revision the fleet task applied up to.", p.fleet.fleet_revision),
    ];
    for (name, kind, help, value) in fleet {
        out.family(name, kind, help);
        out.sample(name, &[], value as f64);
    }
}

fn render_xdp(out: &mut Exposition, counters: &Counters, entries: &[mld_capture::DenyEntry]) {
    let simple: [(&str, &str, u64); 5] = [
        ("mldefender_xdp_passed_packets_total", "Packets the XDP program passed.", counters.passed),
        ("mldefender_xdp_allowlisted_packets_total", "Packets from allowlisted sources (passed, never dropped).", counters.allowed),
        ("mldefender_xdp_malformed_packets_total", "Packets whose headers could not be parsed.", counters.malformed),
        ("mldefender_xdp_not_ip_packets_total", "Packets that are not IPv4 or IPv6.", counters.not_ip),
        ("mldefender_xdp_ring_full_total", "Packet records lost to a full ring buffer (the packets passed).", counters.ring_full),
    ];
    for (name, help, value) in simple {
        out.family(name, "counter", help);
        out.sample(name, &[], value as f64);
    }
    out.family(
        "mldefender_xdp_dropped_packets_total",
        "counter",
        "Packets the XDP program dropped, by reason: a deny entry's reason, a forged source (spoofed) or a guarded service (guard).",
    );
    for reason in DenyReason::ALL {
        out.sample("mldefender_xdp_dropped_packets_total", &[("reason", reason.as_str())], counters.dropped_for(reason) as f64);
    }
    out.sample("mldefender_xdp_dropped_packets_total", &[("reason", "spoofed")], counters.spoofed as f64);
    out.sample("mldefender_xdp_dropped_packets_total", &[("reason", "guard")], counters.guard_dropped as f64);
    let now = mld_capture::boot_time_ns();
    out.family("mldefender_deny_entries", "gauge", "Entries in the XDP deny map in force, by reason.");
    for reason in DenyReason::ALL {
        let count = entries.iter().filter(|entry| entry.reason == reason && entry.remaining(now).is_none_or(|left| !left.is_zero())).count();
        out.sample("mldefender_deny_entries", &[("reason", reason.as_str())], count as f64);
    }
}

/// The text format, one family after the other.
#[derive(Debug, Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", help.replace('\\', "\\\\").replace('\n', "\\n"));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (label, value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.text.push(',');
                }
                let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(self.text, "{label}=\"{escaped}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn histogram(&mut self, name: &str, help: &str, histogram: &LatencyHistogram) {
        self.family(name, "histogram", help);
        let mut cumulative = 0;
        for (bound, count) in LatencyHistogram::BOUNDS_US.iter().zip(histogram.buckets) {
            cumulative += count;
            let le = (*bound as f64 / 1e6).to_string();
            self.sample(&format!("{name}_bucket"), &[("le", &le)], cumulative as f64);
        }
        self.sample(&format!("{name}_bucket"), &[("le", "+Inf")], histogram.count as f64);
        self.sample(&format!("{name}_sum"), &[], histogram.sum_us as f64 / 1e6);
        self.sample(&format!("{name}_count"), &[], histogram.count as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report_with(dropped: u64, blocks: u64) -> StatusReport {
        let mut report: StatusReport = serde_json::from_value(json!({
            "supervisor_pid": 1, "uptime_secs": 1.0, "ready": true, "supervisor_memory_bytes": 0, "tasks": [], "pipeline": {}
        }))
        .expect("a report");
        report.pipeline.capture.xdp_dropped = dropped;
        report.pipeline.detect.blocks = blocks;
        report
    }

    #[test]
    fn the_series_counts_each_minutes_increase_and_a_restart_from_zero() {
        let mut series = Series::default();
        series.sample(600, &report_with(10, 1));
        series.sample(630, &report_with(25, 2));
        series.sample(660, &report_with(40, 2));
        // A restart of the capture task: its counter starts again.
        series.sample(725, &report_with(5, 3));
        let minutes = series.per_minute();
        assert_eq!(
            minutes.iter().map(|(start, totals)| (*start, totals.dropped, totals.blocks)).collect::<Vec<_>>(),
            vec![(600, 30, 1), (660, 5, 1), (720, 0, 0)]
        );
    }

    #[test]
    fn the_exposition_escapes_labels_and_keeps_histograms_cumulative() {
        let mut out = Exposition::default();
        let mut histogram = LatencyHistogram::default();
        histogram.observe(40);
        histogram.observe(700);
        out.histogram("x_seconds", "h", &histogram);
        out.sample("y", &[("task", "a\"b\\c")], 1.0);
        assert!(out.text.contains("x_seconds_bucket{le=\"0.00005\"} 1\n"), "{}", out.text);
        assert!(out.text.contains("x_seconds_bucket{le=\"0.001\"} 2\n"), "{}", out.text);
        assert!(out.text.contains("x_seconds_bucket{le=\"+Inf\"} 2\n") && out.text.contains("x_seconds_count 2\n"), "{}", out.text);
        assert!(out.text.contains("y{task=\"a\\\"b\\\\c\"} 1\n"), "{}", out.text);
    }

    #[test]
    fn recent_decisions_are_newest_first_and_skip_observations() {
        let dir = tempfile::tempdir().expect("dir");
        let line = |seq: u64, action: &str, ts_us: u64| {
            json!({"type": "event", "seq": seq, "ts_us": ts_us, "action": action, "src_ip": "10.0.0.9", "category": "scan"}).to_string()
        };
        // seq 5 was decided before seq 3 but written after it (it waited for its neighbours).
        let first = [line(1, "block", 100), line(2, "observe", 150)].join("\n") + "\n";
        let second = [line(3, "alert", 300), line(4, "observe", 350), line(5, "block", 200), "{cut".to_string()].join("\n");
        std::fs::write(dir.path().join("events-n-0.jsonl"), first).expect("write");
        std::fs::write(dir.path().join("events-n-1.jsonl"), second).expect("write");
        std::fs::write(dir.path().join("events-other-5.jsonl"), line(9, "block", 900)).expect("write");
        // A FIFO or a link in the log task's directory is not read (a FIFO would hang it).
        nix::unistd::mkfifo(&dir.path().join("events-n-7.jsonl"), nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("events-n-6.jsonl")).expect("link");
        let found = recent_decisions(dir.path(), "n", 10);
        assert_eq!(found.iter().map(|record| record["seq"].as_u64().expect("a seq")).collect::<Vec<_>>(), vec![3, 5, 1]);
        assert_eq!(recent_decisions(dir.path(), "n", 1).len(), 1);
    }

    fn sources(listen: &str, allow_from: &[&str]) -> Sources {
        let dir = std::env::temp_dir().join("mld-web-test-nothing-here");
        Sources {
            bpffs_dir: dir.clone(),
            log_dir: dir,
            node: "n".to_string(),
            metrics: MetricsConfig {
                enabled: true,
                listen: vec![listen.parse().expect("an address")],
                allow_from: allow_from.iter().map(|text| text.parse().expect("a prefix")).collect(),
            },
            state: Arc::new(Mutex::new(State::default())),
            maps: Mutex::new(None),
        }
    }

    /// Serves one connection on a listener of its own and returns what `request` got back.
    fn exchange(request: &[u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let sources = sources(&address.to_string(), &["127.0.0.1"]);
        let request = String::from_utf8_lossy(request).replace("HOST", &address.to_string());
        let client = std::thread::spawn(move || {
            let mut stream = TcpStream::connect(address).expect("connect");
            stream.write_all(request.as_bytes()).expect("send");
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            answer
        });
        let (stream, _) = listener.accept().expect("accept");
        let _ = answer(stream, &sources);
        client.join().expect("client")
    }

    #[test]
    fn only_get_and_head_of_known_paths_with_the_listened_host_are_answered() {
        let page = exchange(b"GET / HTTP/1.1\r\nHost: HOST\r\n\r\n");
        assert!(page.starts_with("HTTP/1.1 200 OK") && page.contains("<title>ml-defender status</title>"), "{page}");
        let head = exchange(b"HEAD /metrics HTTP/1.1\r\nHost: HOST\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK") && head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
        assert!(exchange(b"POST /metrics HTTP/1.1\r\nHost: HOST\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(exchange(b"GET /etc/passwd HTTP/1.1\r\nHost: HOST\r\n\r\n").starts_with("HTTP/1.1 404"));
        // A name that a web page elsewhere rebound to the appliance, or none at all.
        assert!(exchange(b"GET /api/status HTTP/1.1\r\nHost: evil.example:80\r\n\r\n").starts_with("HTTP/1.1 421"));
        assert!(exchange(b"GET /api/status HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 421"));
        assert!(exchange(b"GET / HTTP/1.1\r\nHost: HOST\r\nX-Pad: ".iter().chain(&[b'a'; 9000]).copied().collect::<Vec<u8>>().as_slice())
            .starts_with("HTTP/1.1 431"));
        assert!(exchange(b"\x01\x02 garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    }

    #[test]
    fn a_client_that_sends_slowly_is_cut_off_at_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let sources = sources(&address.to_string(), &[]);
        let client = std::thread::spawn(move || {
            let mut stream = TcpStream::connect(address).expect("connect");
            // A byte every half second, never the end of the head.
            for _ in 0..20 {
                if stream.write_all(b"G").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        let (stream, _) = listener.accept().expect("accept");
        let started = Instant::now();
        let result = answer(stream, &sources);
        assert!(result.is_err_and(|error| error.kind() == std::io::ErrorKind::TimedOut || error.kind() == std::io::ErrorKind::WouldBlock));
        let took = started.elapsed();
        assert!(took >= REQUEST_DEADLINE && took < REQUEST_DEADLINE + Duration::from_secs(1), "{took:?}");
        let _ = client.join();
    }

    #[test]
    fn the_host_may_be_written_with_or_without_the_default_port() {
        let listen = ["10.0.0.1:9464".parse().expect("address"), "[::1]:80".parse().expect("address")];
        assert!(host_is_listened("10.0.0.1:9464", &listen));
        assert!(host_is_listened("[::1]", &listen) && host_is_listened("[::1]:80", &listen));
        assert!(!host_is_listened("10.0.0.1", &listen) && !host_is_listened("10.0.0.2:9464", &listen) && !host_is_listened("localhost:9464", &listen));
    }
}
