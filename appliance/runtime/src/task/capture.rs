//! The capture task.

use super::*;

/// The connection to the detect task, non-blocking, with a bounded queue in front of it:
/// flows and reports go out, block commands come back.
struct FlowSender {
    path: String,
    stream: Option<UnixStream>,
    next_attempt: Instant,
    outbox: Outbox<FlowMessage>,
    /// Block results and expiries: never dropped for lack of room (they are few).
    urgent: std::collections::VecDeque<FlowMessage>,
    decoder: FrameDecoder,
    responses: Vec<ResponseMessage>,
    /// Encoded frames, and how many of their bytes are already written to the stream.
    buffer: Vec<u8>,
    written: usize,
    sent: u64,
    lost_on_disconnect: u64,
}

impl FlowSender {
    /// Reads the block commands the detect task sent (into `responses`); false when the
    /// connection ended.
    fn receive(&mut self) -> bool {
        let Some(stream) = self.stream.as_mut() else { return false };
        let mut chunk = [0u8; 4096];
        let (_, open) = read_available(stream, &mut self.decoder, &mut chunk);
        loop {
            match self.decoder.next_message::<ResponseMessage>() {
                Ok(Some(message)) => self.responses.push(message),
                Ok(None) => break,
                Err(error) => {
                    warn!(error = %error, "bad frame from the detect task");
                    break;
                }
            }
        }
        if !open {
            self.stream = None;
            self.next_attempt = Instant::now() + RECONNECT_INTERVAL;
        }
        open
    }

    fn pump(&mut self) {
        if self.stream.is_none() && Instant::now() >= self.next_attempt {
            match UnixStream::connect(&self.path) {
                Ok(stream) => {
                    let _ = stream.set_nonblocking(true);
                    self.decoder = FrameDecoder::default();
                    self.stream = Some(stream);
                }
                Err(_) => self.next_attempt = Instant::now() + RECONNECT_INTERVAL,
            }
        }
        if !self.receive() {
            return;
        }
        let Some(stream) = self.stream.as_mut() else { return };
        while self.buffer.len() < WRITE_BUFFER_BYTES {
            let message = match self.urgent.pop_front() {
                Some(message) => message,
                None => match self.outbox.pop() {
                    Some(message) => message,
                    None => break,
                },
            };
            let flow = matches!(message, FlowMessage::Flow { .. });
            if mld_ipc::write_frame(&mut self.buffer, &message).is_ok() && flow {
                self.sent += 1;
            }
        }
        while self.written < self.buffer.len() {
            match stream.write(&self.buffer[self.written..]) {
                Ok(0) => break,
                Ok(n) => self.written += n,
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    // The sink went away (it restarts). A frame cut in the middle is lost
                    // (counted); whole frames not yet written go to the next connection.
                    if self.written > 0 {
                        let head = frame_length(&self.buffer);
                        self.buffer.drain(..head);
                        self.lost_on_disconnect += 1;
                        self.written = 0;
                    }
                    self.stream = None;
                    self.next_attempt = Instant::now() + RECONNECT_INTERVAL;
                    break;
                }
            }
        }
        // Drop the frames written completely; keep a partly written one whole.
        let mut complete = 0;
        while complete < self.buffer.len() && complete + frame_length(&self.buffer[complete..]) <= self.written {
            complete += frame_length(&self.buffer[complete..]);
        }
        if complete > 0 {
            self.buffer.drain(..complete);
            self.written -= complete;
        }
    }

    fn idle(&self) -> bool {
        self.outbox.is_empty() && self.urgent.is_empty() && self.buffer.is_empty()
    }
}

/// The length of the frame at the start of `bytes` (its 4-byte big-endian length prefix
/// and body), as `mld_ipc::write_frame` writes it.
fn frame_length(bytes: &[u8]) -> usize {
    let prefix: [u8; 4] = bytes[..4].try_into().expect("a frame starts with its length");
    4 + u32::from_be_bytes(prefix) as usize
}

pub(super) fn capture(config: &Config, fds: &HandedFds, control: &mut Control, stop: &AtomicBool) -> anyhow::Result<Exit> {
    let mut reader = RingReader::from_fd(fds.take("ring")?)?;
    let mut maps = PinnedMaps::from_fds(fds.take("allow")?, fds.take("deny")?, fds.take("counters")?)?;
    let offset_ns = boot_to_realtime_offset_ns();
    let mut table = FlowTable::new(config.flow_table());
    let mut side = CaptureSide::new(config, &mut table);
    let mut sender = FlowSender {
        path: std::env::var("MLD_FLOWS_SOCKET").context("MLD_FLOWS_SOCKET is not set")?,
        stream: None,
        next_attempt: Instant::now(),
        outbox: Outbox::new(OUTBOX_CAPACITY),
        urgent: std::collections::VecDeque::new(),
        decoder: FrameDecoder::default(),
        responses: Vec::new(),
        buffer: Vec::new(),
        written: 0,
        sent: 0,
        lost_on_disconnect: 0,
    };
    let mut finished: Vec<FlowRecord> = Vec::with_capacity(1024);
    let mut emitted: Vec<Emitted> = Vec::with_capacity(1024);
    let mut counters = PipelineCounters::default();
    let mut last_counters = Instant::now();
    let mut last_sweep = Instant::now();
    let mut last_tick = Instant::now();
    let mut protected = mld_hostnet::Protected::from_host(&config.response, &config.allowlist, &mld_hostnet::HostNet::read());
    let mut last_network_refresh = Instant::now();
    control.ready();
    info!("capture task ready");

    let queue = |emitted: &mut Vec<Emitted>, sender: &mut FlowSender, counters: &mut PipelineCounters| {
        for item in emitted.drain(..) {
            match item {
                Emitted::Flow(flow) => {
                    if flow.end_reason != mld_flow::EndReason::Active {
                        counters.flows_finished += 1;
                    }
                    sender.outbox.push(FlowMessage::Flow { flow: Box::new(flow) });
                }
                Emitted::Source(report) => {
                    sender.outbox.push(FlowMessage::Source { report: Box::new(report) });
                }
            }
        }
    };
    while !stop.load(Ordering::Relaxed) && !control.shutdown_requested() {
        // Block commands from the detect task wake the loop at once.
        let wake = sender.stream.as_ref().map(std::os::fd::AsFd::as_fd);
        counters.records_read += reader.read_or_wake(Duration::from_millis(20), 8192, wake, |mut record| {
            record.ts_ns += offset_ns;
            table.process(&record, &mut finished);
        })? as u64;
        // Blocks before anything else.
        sender.receive();
        apply_responses(&mut sender, &mut maps, &protected, config.response.ttl_max);
        if last_tick.elapsed() >= Duration::from_millis(100) {
            table.advance_to(boot_time_ns() + offset_ns, &mut finished);
            last_tick = Instant::now();
        }
        side.poll(&mut table, &mut finished, &mut emitted);
        queue(&mut emitted, &mut sender, &mut counters);
        sender.pump();
        // Commands that arrived while pumping: now, not after the next wait.
        apply_responses(&mut sender, &mut maps, &protected, config.response.ttl_max);
        if last_network_refresh.elapsed() >= config.capture.network_refresh {
            protected.refresh(&mld_hostnet::HostNet::read());
            last_network_refresh = Instant::now();
        }
        if last_sweep.elapsed() >= config.capture.sweep_interval {
            for prefix in maps.sweep_expired(boot_time_ns())? {
                info!(prefix = %prefix, "deny entry expired and was removed");
                sender.urgent.push_back(FlowMessage::BlockExpired { prefix: prefix.to_string() });
            }
            last_sweep = Instant::now();
        }
        if last_counters.elapsed() >= COUNTERS_INTERVAL {
            report(&mut counters, &maps, &sender, control);
            last_counters = Instant::now();
        }
    }
    // Shutdown: stop intake, drain the ring, end every flow, hand them on, then exit.
    control.send(&TaskMessage::Stopping { reason: "shutdown".to_string() });
    counters.records_read += reader.read(Duration::ZERO, usize::MAX, |mut record| {
        record.ts_ns += offset_ns;
        table.process(&record, &mut finished);
    })? as u64;
    table.flush(&mut finished);
    emitted.extend(finished.drain(..).map(Emitted::Flow));
    queue(&mut emitted, &mut sender, &mut counters);
    let deadline = Instant::now() + DRAIN_DEADLINE;
    while !sender.idle() && Instant::now() < deadline {
        sender.pump();
        std::thread::sleep(Duration::from_millis(5));
    }
    report(&mut counters, &maps, &sender, control);
    info!(flows = counters.flows_finished, sent = counters.flows_sent, dropped = counters.flows_dropped, "capture task stopped");
    Ok(Exit::Success)
}

/// Writes the deny entries the detect task asked for and answers each with its result.
fn apply_responses(sender: &mut FlowSender, maps: &mut PinnedMaps, protected: &mld_hostnet::Protected, ttl_max: Duration) {
    // Every map write first, then the logging: a burst of blocks is not slowed by it.
    let mut results = Vec::new();
    for response in std::mem::take(&mut sender.responses) {
        match response {
            ResponseMessage::Block { id, prefix, ttl_secs, reason, decided_boot_ns } => {
                // Re-checked here whoever sent it: bounded prefix, nothing protected,
                // TTL within bounds (the detect task is less trusted than the data plane).
                let result = mld_capture::check_block_command(&prefix, ttl_secs, &reason, protected, ttl_max)
                    .map_err(|why| format!("refused: {why}"))
                    .and_then(|checked| maps.deny_add(&checked.prefix, Some(checked.ttl), checked.reason).map_err(|error| format!("{error:#}")));
                results.push((id, prefix, ttl_secs, decided_boot_ns, result, boot_time_ns()));
            }
        }
    }
    for (id, prefix, ttl_secs, decided_boot_ns, result, applied_boot_ns) in results {
        match &result {
            Ok(()) => info!(prefix = %prefix, ttl_secs, latency_us = applied_boot_ns.saturating_sub(decided_boot_ns) / 1000, "blocked"),
            Err(error) => warn!(prefix = %prefix, error = %error, "failed to block"),
        }
        sender.urgent.push_back(FlowMessage::BlockResult { id, prefix, error: result.err(), applied_boot_ns });
    }
}

fn report(counters: &mut PipelineCounters, maps: &PinnedMaps, sender: &FlowSender, control: &mut Control) {
    counters.flows_sent = sender.sent;
    counters.flows_dropped = sender.outbox.dropped() + sender.lost_on_disconnect + sender.outbox.len() as u64;
    if let Ok(xdp) = maps.counters() {
        counters.xdp_passed = xdp.passed;
        counters.xdp_dropped = xdp.dropped;
        counters.xdp_malformed = xdp.malformed;
        counters.xdp_ring_full = xdp.ring_full;
    }
    control.send(&TaskMessage::Counters(*counters));
}
