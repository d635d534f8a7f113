//! The detect task.

use super::*;

/// The sink's connection to the log task: events stay in the window until acknowledged
/// and are sent again after a reconnect.
struct EventSender {
    path: String,
    stream: Option<UnixStream>,
    decoder: FrameDecoder,
    next_attempt: Instant,
    window: AckWindow<String>,
    buffer: Vec<u8>,
    acked: u64,
    /// This run's id: the log task keeps sequence numbers per stream.
    stream_id: u64,
    /// Events waiting for room in the window; what it cannot hold becomes a gap record.
    queue: GapQueue<String>,
}

/// Test builds only: [`TEST_EVENT_QUEUE_MAX`].
fn test_event_queue_max() -> Option<usize> {
    cfg!(debug_assertions).then(|| std::env::var(TEST_EVENT_QUEUE_MAX).ok().and_then(|max| max.parse().ok())).flatten()
}

/// A random id for this process's event stream.
fn new_stream_id() -> u64 {
    let mut bytes = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut random| random.read_exact(&mut bytes)).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

impl EventSender {
    /// Queues an event record for the log task; never waits (a full queue counts it
    /// into the gap record).
    fn send(&mut self, record: serde_json::Map<String, serde_json::Value>) {
        let action = record.get("action").and_then(|action| action.as_str()).unwrap_or("unknown").to_string();
        let ts_us = record.get("ts_us").and_then(|ts| ts.as_u64()).unwrap_or(0);
        let text = serde_json::Value::Object(record).to_string();
        let bytes = text.len();
        self.queue.push(text, bytes, &action, ts_us);
    }

    /// Events lost to a full queue (each counted in a gap record).
    fn lost(&self) -> u64 {
        self.queue.lost()
    }

    /// Moves queued events (and gap records, built by `detection`) into the window while
    /// it has room.
    fn fill_window(&mut self, detection: &Detection) {
        while self.window.can_send() {
            let record = match self.queue.pop() {
                Some(Queued::Item(record)) => record,
                Some(Queued::Gap(gap)) => {
                    warn!(lost = gap.lost(), first_us = gap.first_us, last_us = gap.last_us, "events were lost while the log was away; writing a gap record");
                    serde_json::Value::Object(detection.gap_record(&gap, EVENT_QUEUE_MAX_EVENTS, EVENT_QUEUE_MAX_BYTES)).to_string()
                }
                None => break,
            };
            if let Some((seq, record)) = self.window.send(record) {
                let _ = mld_ipc::write_frame(&mut self.buffer, &EventMessage::Event { seq, record });
            }
        }
    }

    fn pump(&mut self, detection: &Detection) {
        self.fill_window(detection);
        if self.stream.is_none() && Instant::now() >= self.next_attempt {
            match UnixStream::connect(&self.path) {
                Ok(stream) => {
                    let _ = stream.set_nonblocking(true);
                    // A new connection: everything not yet acknowledged goes again.
                    self.buffer.clear();
                    let _ = mld_ipc::write_frame(&mut self.buffer, &EventMessage::Hello { stream: self.stream_id });
                    for (seq, record) in self.window.unacknowledged() {
                        let _ = mld_ipc::write_frame(&mut self.buffer, &EventMessage::Event { seq: *seq, record: record.clone() });
                    }
                    self.decoder = FrameDecoder::default();
                    self.stream = Some(stream);
                }
                Err(_) => self.next_attempt = Instant::now() + RECONNECT_INTERVAL,
            }
        }
        let Some(stream) = self.stream.as_mut() else { return };
        let mut broken = false;
        while !self.buffer.is_empty() {
            match stream.write(&self.buffer) {
                Ok(0) => break,
                Ok(n) => {
                    self.buffer.drain(..n);
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        let mut chunk = [0u8; 4096];
        let (_, open) = read_available(stream, &mut self.decoder, &mut chunk);
        broken |= !open;
        while let Ok(Some(EventAck { seq })) = self.decoder.next_message::<EventAck>() {
            let before = self.window.unacknowledged().count();
            self.window.ack(seq);
            self.acked += (before - self.window.unacknowledged().count()) as u64;
        }
        if broken {
            self.stream = None;
            self.next_attempt = Instant::now() + RECONNECT_INTERVAL;
        }
    }

    fn idle(&self) -> bool {
        self.window.unacknowledged().next().is_none() && self.queue.is_empty()
    }
}

/// The capture task's connection to the detect task.
struct CaptureConnection {
    stream: UnixStream,
    decoder: FrameDecoder,
}

/// Verdict → deny-map latencies of the last blocks, µs.
#[derive(Default)]
struct Latencies {
    recent: std::collections::VecDeque<u64>,
}

impl Latencies {
    const KEEP: usize = 1024;

    fn add(&mut self, micros: u64) {
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

/// The detect task: scores flows and active-source reports from the capture task, decides,
/// sends blocks back to the capture task, and hands every event to the log task.
pub(super) fn detect(config: &Config, config_toml: &str, fds: &HandedFds, control: &mut Control, stop: &AtomicBool) -> anyhow::Result<Exit> {
    let listener = UnixListener::from(fds.take("flows")?);
    listener.set_nonblocking(true)?;
    let capture_uid: u32 = std::env::var("MLD_CAPTURE_UID").ok().and_then(|uid| uid.parse().ok()).context("MLD_CAPTURE_UID is not set")?;
    let config_sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(config_toml.as_bytes()))
    };
    // Fail closed: without its models (when required) the task does not start.
    let net = mld_hostnet::HostNet::read();
    let mut detection = Detection::new(config, &config_sha256, mld_hostnet::Protected::from_host(&config.response, &config.allowlist, &net))?;
    detection.detector.set_anchored_interfaces(crate::detection::anchored_interfaces(config, &net));
    let mut last_network_refresh = Instant::now();
    info!(models = %detection.model_description, policy = config.detect.policy.as_str(), mode = ?config.response.mode, "detection loaded");
    let mut connections: Vec<CaptureConnection> = Vec::new();
    let mut counters = PipelineCounters::default();
    let mut last_counters = Instant::now();
    let mut last_tick = Instant::now();
    let mut events = EventSender {
        path: std::env::var("MLD_EVENTS_SOCKET").context("MLD_EVENTS_SOCKET is not set")?,
        stream: None,
        decoder: FrameDecoder::default(),
        next_attempt: Instant::now(),
        window: AckWindow::new(test_event_queue_max().unwrap_or(EVENT_WINDOW)),
        buffer: Vec::new(),
        acked: 0,
        stream_id: new_stream_id(),
        queue: GapQueue::new(test_event_queue_max().unwrap_or(EVENT_QUEUE_MAX_EVENTS), EVENT_QUEUE_MAX_BYTES),
    };
    let mut neighbours = match config.detect.nearest_past_events {
        0 => None,
        k => {
            let socket = config.capture.runtime_dir.join(crate::query_server::QUERY_SOCKET);
            Some(
                crate::neighbours::Neighbours::start(socket, k, config.detect.nearest_past_events_budget)
                    .context("failed to start the nearest-past-events thread")?,
            )
        }
    };
    let mut latencies = Latencies::default();
    // When each block in flight was decided (CLOCK_BOOTTIME ns), by command id; bounded.
    let mut decided: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    let mut next_block_id = 1u64;
    let offset_ns = boot_to_realtime_offset_ns();
    control.ready();
    info!("detect task ready");
    let mut buffer = vec![0u8; 65536];
    let mut running = true;
    let mut drain_deadline = None;
    loop {
        if running && (stop.load(Ordering::Relaxed) || control.shutdown_requested()) {
            running = false;
            drain_deadline = Some(Instant::now() + DRAIN_DEADLINE);
            control.send(&TaskMessage::Stopping { reason: "shutdown".to_string() });
        }
        let mut busy = false;
        while let Ok((stream, _)) = listener.accept() {
            // Only the capture task may send flows.
            match nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials) {
                Ok(credentials) if credentials.uid() == capture_uid => {
                    let _ = stream.set_nonblocking(true);
                    info!(pid = credentials.pid(), "flow connection from the capture task");
                    connections.push(CaptureConnection { stream, decoder: FrameDecoder::default() });
                }
                Ok(credentials) => warn!(uid = credentials.uid(), "refused a flow connection from a process that is not the capture task"),
                Err(error) => warn!(error = %error, "refused a flow connection without peer credentials"),
            }
        }
        // Always read and decide, whatever the log task's state: blocking never waits
        // for the log (events wait in a bounded queue; what it cannot hold is counted
        // into a gap record).
        let mut all_closed = !connections.is_empty();
        connections.retain_mut(|connection| {
            let (read, open) = read_available(&mut connection.stream, &mut connection.decoder, &mut buffer);
            busy |= read;
            loop {
                match connection.decoder.next_message::<FlowMessage>() {
                    Ok(Some(FlowMessage::Flow { flow })) => detection.detector.on_flow(*flow),
                    Ok(Some(FlowMessage::Source { report })) => detection.detector.on_report(*report),
                    Ok(Some(FlowMessage::BlockResult { id, prefix, error, applied_boot_ns })) => match error {
                        None => {
                            if let Some(at) = decided.remove(&id) {
                                latencies.add(applied_boot_ns.saturating_sub(at) / 1000);
                            }
                        }
                        Some(error) => warn!(prefix = %prefix, error = %error, "the capture task could not block"),
                    },
                    Ok(Some(FlowMessage::BlockExpired { prefix })) => {
                        if let Ok(prefix) = prefix.parse::<mld_config::IpPrefix>() {
                            if let Some(event) = detection.detector.on_expired(prefix.addr()) {
                                events.send(detection.record(&event, "standalone"));
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        warn!(error = %error, "bad flow frame; dropping the connection");
                        return false;
                    }
                }
            }
            if open {
                all_closed = false;
            }
            open
        });
        // At shutdown: once the capture task's streams ended (it stops first), or at the
        // drain deadline, decide on what arrived and stop.
        let drained = !running && (all_closed || connections.is_empty() || drain_deadline.is_some_and(|deadline| Instant::now() >= deadline));
        if last_network_refresh.elapsed() >= config.capture.network_refresh {
            // Resolvers, default gateways and own addresses follow the host.
            last_network_refresh = Instant::now();
            let net = mld_hostnet::HostNet::read();
            detection.detector.set_anchored_interfaces(crate::detection::anchored_interfaces(config, &net));
            if detection.detector.responder_mut().protected_mut().refresh(&net) {
                let protected = detection.detector.responder().protected();
                info!(resolvers = ?protected.resolvers(), default_gateways = ?protected.default_gateways(), "protected infrastructure changed");
            }
        }
        if last_tick.elapsed() >= config.detect.tick || drained {
            last_tick = Instant::now();
            detection.detector.advance_to(boot_time_ns() + offset_ns);
            let decisions = detection.detector.tick();
            // Blocks first, all in one write, before anything else is done with the
            // events: the verdict-to-map time is what the deny map waits for.
            let decided_boot_ns = boot_time_ns();
            let mut commands = Vec::new();
            for event in decisions.iter().filter(|event| event.action == mld_detect::engine::Action::Block) {
                let Some(ttl) = event.ttl else { continue };
                let id = next_block_id;
                next_block_id += 1;
                if decided.len() >= 4096 {
                    decided.clear();
                }
                decided.insert(id, decided_boot_ns);
                let command = ResponseMessage::Block {
                    id,
                    prefix: mld_config::IpPrefix::host(event.source).to_string(),
                    ttl_secs: ttl.as_secs(),
                    reason: event.category.as_str().to_string(),
                    decided_boot_ns,
                };
                let _ = mld_ipc::write_frame(&mut commands, &command);
            }
            if !commands.is_empty() {
                match connections.last_mut() {
                    Some(connection) => {
                        let _ = connection.stream.set_nonblocking(false);
                        if let Err(error) = std::io::Write::write_all(&mut connection.stream, &commands) {
                            warn!(error = %error, "failed to send blocks to the capture task");
                        }
                        let _ = connection.stream.set_nonblocking(true);
                    }
                    None => warn!("no capture task connected: blocks cannot be applied now"),
                }
            }
            for event in decisions {
                match event.action {
                    mld_detect::engine::Action::Block => {
                        info!(source = %event.source, category = event.category.as_str(), ttl_secs = event.ttl.map_or(0, |ttl| ttl.as_secs()), step = event.escalation_step, "block")
                    }
                    mld_detect::engine::Action::Observe => {}
                    action => info!(source = %event.source, action = action.as_str(), category = event.category.as_str(), "decision"),
                }
                let record = detection.record(&event, "standalone");
                let record = match neighbours.as_mut() {
                    Some(neighbours) if event.action != mld_detect::engine::Action::Observe => neighbours.submit(record),
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
        events.pump(&detection);
        let d = detection.detector.counters;
        counters.flows_received = d.flows_received;
        counters.flows_scored = d.flows_scored;
        counters.flows_dropped_detect = d.flows_dropped + events.lost();
        counters.reports_received = d.reports_received;
        counters.blocks = d.blocks;
        counters.alerts = d.alerts;
        counters.refused = d.refused;
        counters.breaker_open = d.breaker_open;
        counters.active_blocks = detection.detector.responder().active_blocks() as u64;
        counters.events_acked = events.acked;
        if last_counters.elapsed() >= COUNTERS_INTERVAL {
            counters.block_latency_p99_us = latencies.p99();
            control.send(&TaskMessage::Counters(counters));
            last_counters = Instant::now();
        }
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
        events.pump(&detection);
        std::thread::sleep(Duration::from_millis(2));
    }
    counters.events_acked = events.acked;
    counters.block_latency_p99_us = latencies.p99();
    control.send(&TaskMessage::Counters(counters));
    info!(flows = counters.flows_received, blocks = counters.blocks, "detect task stopped");
    Ok(Exit::Success)
}
