//! The detect task: scores flows and active-source reports from the capture task,
//! decides, sends blocks back to the capture task (before anything else), and hands every
//! event to the log task, acknowledged.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use mld_capture::{boot_time_ns, boot_to_realtime_offset_ns};
use mld_detect::engine::{Action, Event};
use mld_detect::heuristics::Category;
use mld_hostnet::{HostNet, Protected};
use mld_ipc::{AckWindow, Connection, DetectCounters, EventAck, EventMessage, FlowMessage, Gap, GapQueue, Queued, ResponseMessage, TaskCounters};
use mld_types::{DenyReason, IpPrefix};
use tracing::{info, warn};

use super::{Control, Start, DRAIN_DEADLINE, RECONNECT_INTERVAL};
use crate::detection::Detection;
use crate::exit::Exit;

/// Events in flight between the detect task and the log task.
const EVENT_WINDOW: usize = 4096;
/// Events waiting for room in the window (the log task away, behind, or its disk full),
/// at most this many and this many bytes (records are ~4 KiB): beyond, the newest are
/// dropped, counted by action into one gap record written once the log is back. Blocks
/// never wait for the log (docs/event-log.md, "Gaps").
const EVENT_QUEUE_MAX_EVENTS: usize = 65_536;
const EVENT_QUEUE_MAX_BYTES: usize = 64 << 20;
/// Encoded events waiting for the log task's socket, at most.
const EVENT_WRITE_BYTES: usize = 4 << 20;
/// Block commands and flow connections: a few frames.
const FLOW_CONNECTION_OUT_BYTES: usize = 1 << 20;
/// Blocks in flight whose decision time is remembered (for the latency), at most.
const DECIDED_MAX: usize = 4096;
/// The shortest time between two ticks that reports set off.
const REPORT_GATHER: Duration = Duration::from_millis(5);

/// The connection to the log task: events stay in the window until acknowledged and are
/// sent again after a reconnect.
#[derive(Debug)]
pub struct EventSender {
    path: PathBuf,
    connection: Option<Connection>,
    next_attempt: Instant,
    window: AckWindow<String>,
    /// The lowest sequence number in the window not yet handed to the connection.
    next_to_write: u64,
    /// Events acknowledged so far.
    pub acked: u64,
    /// This run's id: the log task keeps sequence numbers per stream.
    stream_id: u64,
    /// Events waiting for room in the window; what it cannot hold becomes a gap record.
    queue: GapQueue<String>,
}

impl EventSender {
    pub fn new(path: PathBuf, window: usize, queue_events: usize, queue_bytes: usize) -> EventSender {
        EventSender {
            path,
            connection: None,
            next_attempt: Instant::now(),
            window: AckWindow::new(window),
            next_to_write: 0,
            acked: 0,
            stream_id: new_stream_id(),
            queue: GapQueue::new(queue_events, queue_bytes),
        }
    }

    /// Queues an event record for the log task; never waits (a full queue counts it
    /// into the gap record).
    pub fn send(&mut self, record: serde_json::Map<String, serde_json::Value>) {
        let action = record.get("action").and_then(|action| action.as_str()).unwrap_or("unknown").to_string();
        let ts_us = record.get("ts_us").and_then(|ts| ts.as_u64()).unwrap_or(0);
        let text = serde_json::Value::Object(record).to_string();
        let bytes = text.len();
        self.queue.push(text, bytes, &action, ts_us);
    }

    /// Events lost to a full queue (each counted in a gap record).
    pub fn lost(&self) -> u64 {
        self.queue.lost()
    }

    /// Connects when due, moves queued events (and gap records, built by `gap_record`)
    /// into the window while it has room, writes what the socket takes, and takes in
    /// acknowledgements.
    pub fn pump(&mut self, gap_record: &dyn Fn(&Gap) -> String) {
        while self.window.can_send() {
            let record = match self.queue.pop() {
                Some(Queued::Item(record)) => record,
                Some(Queued::Gap(gap)) => {
                    warn!(lost = gap.lost(), first_us = gap.first_us, last_us = gap.last_us, "events were lost while the log was away; writing a gap record");
                    gap_record(&gap)
                }
                None => break,
            };
            self.window.send(record);
        }
        if self.connection.is_none() && Instant::now() >= self.next_attempt {
            match Connection::connect(&self.path, EVENT_WRITE_BYTES) {
                Ok(mut connection) => {
                    // A new connection: everything not yet acknowledged goes again.
                    let _ = connection.queue(&EventMessage::Hello { stream: self.stream_id });
                    self.next_to_write = 0;
                    self.connection = Some(connection);
                }
                Err(_) => self.next_attempt = Instant::now() + RECONNECT_INTERVAL,
            }
        }
        let Some(connection) = self.connection.as_mut() else { return };
        let from = self.next_to_write;
        for (seq, record) in self.window.unacknowledged().filter(|(seq, _)| *seq >= from) {
            match connection.queue(&EventMessage::Event { seq: *seq, record: record.clone() }) {
                Ok(()) => self.next_to_write = seq + 1,
                Err(mld_ipc::SendError::Full { .. }) => break,
                Err(error) => {
                    // Larger than a frame (records are bounded far below): never sendable.
                    warn!(seq, error = %error, "an event cannot be sent to the log task");
                    self.next_to_write = seq + 1;
                }
            }
        }
        connection.flush();
        connection.receive();
        while let Ok(Some(EventAck { seq })) = connection.next_message::<EventAck>() {
            let before = self.window.unacknowledged().count();
            self.window.ack(seq);
            self.acked += (before - self.window.unacknowledged().count()) as u64;
        }
        if !connection.is_open() {
            self.connection = None;
            self.next_attempt = Instant::now() + RECONNECT_INTERVAL;
        }
    }

    /// True when every event was acknowledged.
    pub fn idle(&self) -> bool {
        self.window.unacknowledged().next().is_none() && self.queue.is_empty()
    }
}

/// A random id for this process's event stream.
fn new_stream_id() -> u64 {
    let mut bytes = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut random| std::io::Read::read_exact(&mut random, &mut bytes)).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Verdict → deny-map latencies of the last blocks, µs.
#[derive(Debug, Default)]
struct Latencies {
    recent: VecDeque<u64>,
    histogram: mld_ipc::LatencyHistogram,
}

impl Latencies {
    const KEEP: usize = 1024;

    fn add(&mut self, micros: u64) {
        self.histogram.observe(micros);
        if self.recent.len() >= Self::KEEP {
            self.recent.pop_front();
        }
        self.recent.push_back(micros);
    }

    fn p99(&self) -> u64 {
        let mut sorted: Vec<u64> = self.recent.iter().copied().collect();
        sorted.sort_unstable();
        sorted.get((sorted.len() * 99).div_ceil(100).saturating_sub(1)).copied().unwrap_or(0)
    }
}

/// The deny reason a detection category is blocked for.
pub fn deny_reason(category: Category) -> DenyReason {
    match category {
        Category::Flood => DenyReason::Flood,
        Category::Scan => DenyReason::Scan,
        Category::BruteForce => DenyReason::BruteForce,
        Category::Slow => DenyReason::Slow,
        Category::Other => DenyReason::Other,
    }
}

/// The blocks of one tick's decisions, as commands for the capture task (one batch,
/// numbered from `next_id`).
pub fn block_commands(decisions: &[Event], next_id: &mut u64, decided_boot_ns: u64) -> Vec<ResponseMessage> {
    decisions
        .iter()
        .filter(|event| event.action == Action::Block)
        .filter_map(|event| {
            let ttl = event.ttl?;
            let id = *next_id;
            *next_id += 1;
            Some(ResponseMessage::Block {
                id,
                prefix: IpPrefix::host(event.source),
                ttl_secs: ttl.as_secs(),
                reason: deny_reason(event.category),
                decided_boot_ns,
            })
        })
        .collect()
}

/// The capture task's connections and what came over them.
#[derive(Debug)]
struct Intake {
    listener: UnixListener,
    capture_uid: u32,
    connections: Vec<Connection>,
    /// When each block in flight was decided (CLOCK_BOOTTIME ns), by command id.
    decided: HashMap<u64, u64>,
    latencies: Latencies,
    /// Decisions by action and category, for the metrics.
    decisions: mld_ipc::DecisionCounts,
    /// Active-source reports arrived since the last tick.
    reports_pending: bool,
}

impl Intake {
    /// Admits the capture task (nobody else), reads every connection, and hands flows,
    /// reports and expiries to detection. Returns (read anything, every stream ended).
    fn step(&mut self, detection: &mut Detection, events: &mut EventSender) -> (bool, bool) {
        while let Some(accepted) = mld_ipc::accept(&self.listener, &[self.capture_uid]) {
            match accepted.map_err(anyhow::Error::from).and_then(|peer| Ok((peer.pid, Connection::new(peer.stream, FLOW_CONNECTION_OUT_BYTES)?))) {
                Ok((pid, connection)) => {
                    info!(pid, "flow connection from the capture task");
                    // A new capture task starts without guards and will not report that the
                    // old one's lapsed: their victims get the usual hold from now.
                    let now = detection.detector.now_ns();
                    detection.detector.responder_mut().flood_victims_lapse(now.saturating_add(mld_capture::guard::VICTIM_HOLD_NS));
                    self.connections.push(connection);
                }
                Err(error) => warn!(error = %error, "refused a flow connection"),
            }
        }
        let mut busy = false;
        let mut all_closed = !self.connections.is_empty();
        for connection in &mut self.connections {
            busy |= connection.receive().bytes > 0;
            loop {
                match connection.next_message::<FlowMessage>() {
                    Ok(Some(FlowMessage::Flow { flow })) => detection.detector.on_flow(*flow),
                    Ok(Some(FlowMessage::Source { report })) => {
                        detection.detector.on_report(*report);
                        self.reports_pending = true;
                    }
                    Ok(Some(FlowMessage::BlockResult { id, prefix, error, applied_boot_ns })) => match error {
                        None => {
                            if let Some(at) = self.decided.remove(&id) {
                                self.latencies.add(applied_boot_ns.saturating_sub(at) / 1000);
                            }
                        }
                        Some(error) => warn!(prefix = %prefix, error = %error, "the capture task could not block"),
                    },
                    Ok(Some(FlowMessage::BlockExpired { prefix })) => {
                        if let Some(event) = detection.detector.on_expired(prefix.addr()) {
                            self.decisions.add(event.action.as_str(), event.category.as_str());
                            events.send(detection.record(&event, "standalone"));
                        }
                    }
                    Ok(Some(FlowMessage::Guard { report })) => {
                        // The flood's victim is not blocked while guarded and for the hold
                        // after (the capture task refuses it too, but then the log would say
                        // "block").
                        let service = format!("{}:{}/{}", report.dst, report.port, report.protocol);
                        let now = detection.detector.now_ns();
                        let (what, until) = if report.on {
                            (format!("the victim of a random-source flood: its service {service} is guarded"), u64::MAX)
                        } else {
                            let hold = mld_capture::guard::VICTIM_HOLD_NS;
                            (format!("the victim of a random-source flood: its service {service} was guarded until lately"), now.saturating_add(hold))
                        };
                        detection.detector.responder_mut().flood_victim(report.dst, &format!("{}/{}", report.port, report.protocol), what, until, now);
                        events.send(detection.record(&super::guard::event(&report), "standalone"));
                    }
                    Ok(None) => break,
                    Err(error) => {
                        warn!(error = %error, "bad flow frame; dropping the connection");
                        break;
                    }
                }
            }
            all_closed &= !connection.is_open();
        }
        self.connections.retain(Connection::is_open);
        (busy, all_closed)
    }

    /// Sends one tick's block commands to the newest capture connection, in one write.
    fn send_blocks(&mut self, commands: &[ResponseMessage]) {
        if commands.is_empty() {
            return;
        }
        if self.decided.len() + commands.len() > DECIDED_MAX {
            self.decided.clear();
        }
        for command in commands {
            if let ResponseMessage::Block { id, decided_boot_ns, .. } = command {
                self.decided.insert(*id, *decided_boot_ns);
            }
        }
        let Some(connection) = self.connections.last_mut() else {
            warn!(blocks = commands.len(), "no capture task connected: blocks cannot be applied now");
            return;
        };
        for command in commands {
            if let Err(error) = connection.queue(command) {
                warn!(error = %error, "failed to send a block to the capture task");
            }
        }
        connection.flush();
    }
}

/// Runs the detect task until shutdown.
pub fn run(start: &Start, control: &mut Control, stop: &AtomicBool, flows: OwnedFd) -> anyhow::Result<Exit> {
    let config = &start.config;
    let listener = UnixListener::from(flows);
    listener.set_nonblocking(true).context("failed to configure the flow socket")?;
    let config_sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(start.config_toml.as_bytes()))
    };
    // Fail closed: without its models (when required) the task does not start.
    let net = HostNet::read();
    let mut detection = Detection::new(config, &config_sha256, Protected::from_host(&config.response, &config.allowlist, &net))?;
    detection.detector.set_anchored_interfaces(crate::detection::anchored_interfaces(config, &net));
    let mut last_network_refresh = Instant::now();
    info!(models = %detection.model_description, policy = config.detect.policy.as_str(), mode = ?config.response.mode, "detection loaded");
    let mut intake = Intake {
        listener,
        capture_uid: start.settings.capture_uid,
        connections: Vec::new(),
        decided: HashMap::new(),
        latencies: Latencies::default(),
        decisions: mld_ipc::DecisionCounts::default(),
        reports_pending: false,
    };
    let queue_max = start.settings.test.event_queue_max.filter(|_| cfg!(debug_assertions));
    let mut events = EventSender::new(
        start.settings.events_socket.clone(),
        queue_max.unwrap_or(EVENT_WINDOW),
        queue_max.unwrap_or(EVENT_QUEUE_MAX_EVENTS),
        EVENT_QUEUE_MAX_BYTES,
    );
    let mut neighbours = match config.detect.nearest_past_events {
        0 => None,
        k => Some(
            crate::neighbours::Neighbours::start(start.settings.query_socket.clone(), k, config.detect.nearest_past_events_budget)
                .context("failed to start the nearest-past-events thread")?,
        ),
    };
    let mut next_block_id = 1u64;
    let mut last_tick = Instant::now();
    let offset_ns = boot_to_realtime_offset_ns();
    let mut fleet = start.settings.fleet_socket.clone().map(super::shared::FleetLink::new);
    let mut benign = crate::benign::BenignStore::open(&config.detect.state_dir, &mut detection, boot_time_ns() + offset_ns);
    if let Some(note) = &start.settings.config_note {
        events.send(detection.config_record(note, "in force at the detect task's start", boot_time_ns() + offset_ns));
    }
    control.ready();
    info!("detect task ready");
    let mut drain_deadline = None;
    loop {
        if drain_deadline.is_none() && (stop.load(Ordering::Relaxed) || control.shutdown_requested()) {
            drain_deadline = Some(Instant::now() + DRAIN_DEADLINE);
            control.send(&mld_ipc::TaskMessage::Stopping { reason: "shutdown".to_string() });
        }
        // Always read and decide, whatever the log task's state: blocking never waits
        // for the log (events wait in a bounded queue; what it cannot hold is counted
        // into a gap record).
        let (busy, all_closed) = intake.step(&mut detection, &mut events);
        for request in control.take_requests() {
            match request {
                mld_ipc::SupervisorMessage::MarkBenign { id, prefix, reason, for_secs } => {
                    let result = benign.apply(&mut detection, prefix, &reason, for_secs, boot_time_ns() + offset_ns).map(|(description, record)| {
                        events.send(record);
                        description
                    });
                    if result.is_ok() {
                        if let Some(link) = fleet.as_mut() {
                            link.withdraw(prefix);
                        }
                    }
                    control.send(&mld_ipc::TaskMessage::MarkedBenign { id, result });
                }
                mld_ipc::SupervisorMessage::Reconfigure { config_toml, note, .. } => {
                    match mld_config::Config::from_toml(&config_toml, "the supervisor's configuration") {
                        Ok(new) => {
                            let sha256 = {
                                use sha2::Digest;
                                hex::encode(sha2::Sha256::digest(config_toml.as_bytes()))
                            };
                            detection.reconfigure(&new, &sha256, &HostNet::read());
                            info!(generation = note.generation, "configuration applied live");
                            events.send(detection.config_record(&note, "applied live", boot_time_ns() + offset_ns));
                        }
                        Err(errors) => warn!(errors = %errors, "the supervisor's new configuration does not parse here; keeping the current one"),
                    }
                }
                mld_ipc::SupervisorMessage::Note { action, text } => {
                    let now_ns = boot_time_ns() + offset_ns;
                    let unspecified = std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
                    events.send(detection.flowless_record(&action, unspecified, (now_ns, now_ns), text, &format!("{action}|{now_ns}")));
                }
                mld_ipc::SupervisorMessage::Release { id, prefix } => {
                    let (description, record) = crate::benign::released(&mut detection, prefix, fleet.as_mut(), boot_time_ns() + offset_ns);
                    events.send(record);
                    control.send(&mld_ipc::TaskMessage::Released { id, result: Ok(description) });
                }
                _ => {}
            }
        }
        // Other nodes' blocks, judged here like our own verdicts, applied in one write.
        if let Some(link) = fleet.as_mut() {
            let now_ns = boot_time_ns() + offset_ns;
            let mut commands = Vec::new();
            for message in link.receive() {
                let judged = super::shared::judge(link, &mut detection, message, now_ns, &mut next_block_id, boot_time_ns());
                commands.extend(judged.command);
                if let Some(record) = judged.record {
                    events.send(record);
                }
            }
            intake.send_blocks(&commands);
        }
        // At shutdown: once the capture task's streams ended (it stops first), or at the
        // drain deadline, decide on what arrived and stop.
        let drained = drain_deadline.is_some_and(|deadline| all_closed || intake.connections.is_empty() || Instant::now() >= deadline);
        if last_network_refresh.elapsed() >= config.capture.network_refresh {
            // Resolvers, default gateways and own addresses follow the host.
            last_network_refresh = Instant::now();
            let net = HostNet::read();
            detection.detector.set_anchored_interfaces(crate::detection::anchored_interfaces(config, &net));
            if detection.detector.responder_mut().protected_mut().refresh(&net) {
                let protected = detection.detector.responder().protected();
                info!(resolvers = ?protected.resolvers(), default_gateways = ?protected.default_gateways(), "protected infrastructure changed");
            }
        }
        // A tick on the timer, or as soon as active-source reports arrived (the capture
        // task sends them once per tick, by its clock, in one write): a verdict does not
        // wait up to another tick here. At most one such tick every few ms.
        let reports_due = intake.reports_pending && last_tick.elapsed() >= REPORT_GATHER;
        if last_tick.elapsed() >= config.detect.tick || drained || reports_due {
            last_tick = Instant::now();
            intake.reports_pending = false;
            detection.detector.advance_to(boot_time_ns() + offset_ns);
            let decisions = detection.detector.tick();
            // Blocks first, all in one write, before anything else is done with the
            // events: the verdict-to-map time is what the deny map waits for.
            intake.send_blocks(&block_commands(&decisions, &mut next_block_id, boot_time_ns()));
            let now_ms = (boot_time_ns() + offset_ns) / 1_000_000;
            for event in decisions {
                log_decision(&event);
                intake.decisions.add(event.action.as_str(), event.category.as_str());
                let record = detection.record(&event, "standalone");
                if let (Some(link), Action::Block, Some(ttl)) = (fleet.as_mut(), event.action, event.ttl) {
                    let event_id = record.get("event_id").and_then(|id| id.as_str()).unwrap_or_default().to_string();
                    link.decided(IpPrefix::host(event.source), deny_reason(event.category), now_ms + ttl.as_millis() as u64, now_ms, event_id);
                }
                let record = match neighbours.as_mut() {
                    Some(neighbours) if event.action != Action::Observe => neighbours.submit(record),
                    _ => Some(record),
                };
                if let Some(record) = record {
                    events.send(record);
                }
            }
            if drained {
                break;
            }
        }
        if let Some(neighbours) = neighbours.as_mut() {
            for record in neighbours.ready() {
                events.send(record);
            }
        }
        events.pump(&|gap| gap_record(&detection, gap));
        control.report_due(|| TaskCounters::Detect(Box::new(counters(&detection, &events, &intake, fleet.as_ref()))));
        if !busy {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // Decisions still waiting for their neighbours (at most the budget), then hand every
    // event to the log task and wait for its acknowledgement (bounded).
    if let Some(neighbours) = neighbours.take() {
        for record in neighbours.finish() {
            events.send(record);
        }
    }
    let deadline = Instant::now() + DRAIN_DEADLINE;
    while !events.idle() && Instant::now() < deadline {
        events.pump(&|gap| gap_record(&detection, gap));
        std::thread::sleep(Duration::from_millis(2));
    }
    let counters = counters(&detection, &events, &intake, fleet.as_ref());
    control.finish(TaskCounters::Detect(Box::new(counters)));
    info!(flows = counters.flows_received, blocks = counters.blocks, "detect task stopped");
    Ok(Exit::Success)
}

fn gap_record(detection: &Detection, gap: &Gap) -> String {
    serde_json::Value::Object(detection.gap_record(gap, EVENT_QUEUE_MAX_EVENTS, EVENT_QUEUE_MAX_BYTES)).to_string()
}

fn log_decision(event: &Event) {
    match event.action {
        Action::Block => {
            info!(source = %event.source, category = event.category.as_str(), ttl_secs = event.ttl.map_or(0, |ttl| ttl.as_secs()), step = event.escalation_step, "block")
        }
        Action::Observe => {}
        action => info!(source = %event.source, action = action.as_str(), category = event.category.as_str(), "decision"),
    }
}

fn counters(detection: &Detection, events: &EventSender, intake: &Intake, fleet: Option<&super::shared::FleetLink>) -> DetectCounters {
    let d = detection.detector.counters;
    DetectCounters {
        flows_received: d.flows_received,
        flows_scored: d.flows_scored,
        flows_dropped_detect: d.flows_dropped + events.lost(),
        reports_received: d.reports_received,
        blocks: d.blocks,
        alerts: d.alerts,
        refused: d.refused,
        breaker_open: d.breaker_open,
        stray_flows: d.stray_flows,
        active_blocks: detection.detector.responder().active_blocks() as u64,
        block_latency_p99_us: intake.latencies.p99(),
        events_acked: events.acked,
        shared_applied: fleet.map_or(0, |link| link.applied),
        shared_refused: fleet.map_or(0, |link| link.refused),
        decisions: intake.decisions,
        breaker_holding: u64::from(detection.detector.responder().breaker_holding(detection.detector.now_ns())),
        block_latency: intake.latencies.histogram,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mld_ipc::FrameDecoder;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    fn record(n: u64) -> serde_json::Map<String, serde_json::Value> {
        let mut record = serde_json::Map::new();
        record.insert("action".to_string(), "alert".into());
        record.insert("ts_us".to_string(), n.into());
        record.insert("n".to_string(), n.into());
        record
    }

    fn no_gap(_: &Gap) -> String {
        panic!("no gap expected")
    }

    /// The log task's side: reads until `want` events arrived (or the deadline).
    fn read_events(stream: &mut UnixStream, decoder: &mut FrameDecoder, sender: &mut EventSender, want: usize) -> Vec<EventMessage> {
        stream.set_nonblocking(true).expect("nonblocking");
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut chunk = [0u8; 65536];
        while out.iter().filter(|message| matches!(message, EventMessage::Event { .. })).count() < want && Instant::now() < deadline {
            sender.pump(&no_gap);
            if let Ok(n) = stream.read(&mut chunk) {
                decoder.push(&chunk[..n]);
            }
            while let Some(message) = decoder.next_message::<EventMessage>().expect("frame") {
                out.push(message);
            }
        }
        out
    }

    /// The sender's next connection, pumping it until it connects (5 s at most).
    fn accept_while(listener: &UnixListener, mut pump: impl FnMut()) -> UnixStream {
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            pump();
            if let Ok((stream, _)) = listener.accept() {
                return stream;
            }
            assert!(Instant::now() < deadline, "the sender did not connect within 5 s");
        }
    }

    fn seqs(messages: &[EventMessage]) -> Vec<u64> {
        messages.iter().filter_map(|message| if let EventMessage::Event { seq, .. } = message { Some(*seq) } else { None }).collect()
    }

    #[test]
    fn events_stay_in_the_window_until_acknowledged_and_go_again_after_a_reconnect() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let mut sender = EventSender::new(path, 8, 64, 1 << 20);
        for n in 1..=5 {
            sender.send(record(n));
        }
        sender.pump(&no_gap);
        let (mut log, _) = listener.accept().expect("connected");
        let mut decoder = FrameDecoder::default();
        let first = read_events(&mut log, &mut decoder, &mut sender, 5);
        assert!(matches!(first.first(), Some(EventMessage::Hello { .. })), "the stream says hello first");
        assert_eq!(seqs(&first), vec![1, 2, 3, 4, 5]);
        // The log task acknowledges up to 3, then goes away.
        log.set_nonblocking(false).expect("blocking");
        mld_ipc::write_frame(&mut log, &EventAck { seq: 3 }).expect("ack");
        let deadline = Instant::now() + Duration::from_secs(5);
        while sender.acked < 3 && Instant::now() < deadline {
            sender.pump(&no_gap);
        }
        assert_eq!(sender.acked, 3);
        assert!(!sender.idle(), "4 and 5 are not acknowledged");
        drop(log);
        // The next connection gets 4 and 5 again, after a hello with the same stream id.
        let mut second = accept_while(&listener, || sender.pump(&no_gap));
        let mut decoder = FrameDecoder::default();
        let again = read_events(&mut second, &mut decoder, &mut sender, 2);
        assert_eq!(seqs(&again), vec![4, 5]);
        let hellos: Vec<u64> =
            first.iter().chain(&again).filter_map(|message| if let EventMessage::Hello { stream } = message { Some(*stream) } else { None }).collect();
        assert!(hellos.len() == 2 && hellos[0] == hellos[1], "one stream id per run: {hellos:?}");
        second.set_nonblocking(false).expect("blocking");
        second.write_all(&mld_ipc::encode_frame(&EventAck { seq: 5 }).expect("frame")).expect("ack");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !sender.idle() && Instant::now() < deadline {
            sender.pump(&no_gap);
        }
        assert!(sender.idle(), "everything acknowledged");
    }

    #[test]
    fn a_full_window_holds_events_back_and_an_overflowing_queue_becomes_one_gap_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.sock");
        // No log task listening: nothing is sent; the window (2) and queue (3) fill.
        let mut sender = EventSender::new(path.clone(), 2, 3, 1 << 20);
        for n in 1..=10 {
            sender.send(record(n));
            sender.pump(&no_gap);
        }
        assert_eq!(sender.lost(), 5, "2 in the window, 3 queued, the other 5 lost");
        let listener = UnixListener::bind(&path).expect("bind");
        let gap_seen = std::cell::Cell::new(0);
        let gap = |gap: &Gap| {
            gap_seen.set(gap.lost());
            r#"{"action":"gap"}"#.to_string()
        };
        let mut log = accept_while(&listener, || sender.pump(&gap));
        log.set_nonblocking(true).expect("nonblocking");
        let mut decoder = FrameDecoder::default();
        let mut events = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut chunk = [0u8; 65536];
        while events.len() < 6 && Instant::now() < deadline {
            sender.pump(&gap);
            if let Ok(n) = log.read(&mut chunk) {
                decoder.push(&chunk[..n]);
            }
            while let Some(message) = decoder.next_message::<EventMessage>().expect("frame") {
                if let EventMessage::Event { seq, record } = message {
                    events.push((seq, record));
                    log.set_nonblocking(false).expect("blocking");
                    mld_ipc::write_frame(&mut log, &EventAck { seq }).expect("ack");
                    log.set_nonblocking(true).expect("nonblocking");
                }
            }
        }
        let records: Vec<&str> = events.iter().map(|(_, record)| record.as_str()).collect();
        assert_eq!(records.len(), 6, "2 + 3 events and one gap record: {records:?}");
        assert_eq!(records[5], r#"{"action":"gap"}"#, "the gap comes after what was kept");
        assert_eq!(gap_seen.get(), 5, "the gap counts the 5 lost events");
    }

    #[test]
    fn one_ticks_blocks_become_one_numbered_batch_with_the_category_as_reason() {
        let source: std::net::IpAddr = "10.66.2.66".parse().expect("addr");
        let flow = mld_flow::FlowRecord {
            src_ip: source,
            src_port: 40000,
            dst_ip: "10.66.9.2".parse().expect("addr"),
            dst_port: 22,
            protocol: 6,
            ip_version: 4,
            first_seen_ns: 0,
            last_seen_ns: 0,
            end_reason: mld_flow::EndReason::TcpFin,
            fwd_ip_bytes: 0,
            bwd_ip_bytes: 0,
            ifindex: 0,
            path: Default::default(),
            features: mld_flow::features::FlowFeatures([0.0; mld_flow::features::FEATURE_COUNT]),
            source_windows: Vec::new(),
        };
        let event = |action, category, ttl| Event {
            action,
            source,
            flow: flow.clone(),
            category,
            score_fast: 1.0,
            score_model: None,
            score_final: 1.0,
            score_divergence: None,
            authoritative: "fast",
            provenance: String::new(),
            ttl,
            escalation_step: 0,
            protected: false,
        };
        let decisions = vec![
            event(Action::Block, Category::Scan, Some(Duration::from_secs(60))),
            event(Action::Alert, Category::Flood, None),
            event(Action::Block, Category::BruteForce, Some(Duration::from_secs(600))),
        ];
        let mut next_id = 7;
        let commands = block_commands(&decisions, &mut next_id, 42);
        let summary: Vec<(u64, String, u64, DenyReason)> = commands
            .iter()
            .filter_map(|command| match command {
                ResponseMessage::Block { id, prefix, ttl_secs, reason, .. } => Some((*id, prefix.to_string(), *ttl_secs, *reason)),
                ResponseMessage::Unblock { .. } => None,
            })
            .collect();
        assert_eq!(summary, vec![(7, "10.66.2.66/32".to_string(), 60, DenyReason::Scan), (8, "10.66.2.66/32".to_string(), 600, DenyReason::BruteForce)]);
        assert_eq!(next_id, 9);
    }
}
