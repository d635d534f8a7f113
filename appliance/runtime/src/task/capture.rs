//! The capture task: packet records from the XDP ring become flows and active-source
//! reports for the detect task; the detect task's block commands come back, are checked
//! again and written to the deny map; expired blocks are swept.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mld_capture::{boot_time_ns, PinnedMaps, RingReader};
use mld_flow::FlowTable;
use mld_hostnet::{HostNet, Protected};
use mld_ipc::{CaptureCounters, Connection, FlowMessage, Outbox, ResponseMessage, TaskCounters, Unsent};
use tracing::{info, warn};

use super::{Control, Start, DRAIN_DEADLINE, RECONNECT_INTERVAL};
use crate::exit::Exit;
use crate::flow_pump::FlowPump;
use crate::pipeline::{CaptureSide, Emitted};

/// Flows and reports waiting for the detect task, at most (then the newest are dropped
/// and counted).
const OUTBOX_CAPACITY: usize = 65_536;
/// Encoded frames waiting for the socket, at most.
const WRITE_BUFFER_BYTES: usize = 256 * 1024;
/// How often the table's clock is advanced when no packet arrives.
const TABLE_TICK: Duration = Duration::from_millis(100);

/// The connection to the detect task, non-blocking, with a bounded queue in front of it:
/// flows and reports go out, block commands come back.
#[derive(Debug)]
pub struct FlowSender {
    path: PathBuf,
    connection: Option<Connection>,
    next_attempt: Instant,
    outbox: Outbox<FlowMessage>,
    /// Block results and expiries: never dropped for lack of room (they are few).
    urgent: VecDeque<FlowMessage>,
    /// Frames not yet written when the last connection ended, for the next one.
    carried: Unsent,
    /// Block commands received, waiting to be applied.
    pub commands: Vec<ResponseMessage>,
    /// Flows handed to the connection.
    pub sent: u64,
    /// Frames cut in the middle by a lost connection.
    pub lost_on_disconnect: u64,
    /// Connection attempts failed in a row.
    failed_attempts: u64,
}

impl FlowSender {
    pub fn new(path: PathBuf, capacity: usize) -> FlowSender {
        FlowSender {
            path,
            connection: None,
            next_attempt: Instant::now(),
            outbox: Outbox::new(capacity),
            urgent: VecDeque::new(),
            carried: Unsent::default(),
            commands: Vec::new(),
            sent: 0,
            lost_on_disconnect: 0,
            failed_attempts: 0,
        }
    }

    /// Queues a flow or report (dropped and counted when the queue is full).
    pub fn queue(&mut self, message: FlowMessage) {
        self.outbox.push(message);
    }

    /// Queues a block result or expiry: never dropped.
    pub fn queue_urgent(&mut self, message: FlowMessage) {
        self.urgent.push_back(message);
    }

    /// Messages lost: dropped from the full queue, cut by a lost connection, or still
    /// waiting (at shutdown).
    pub fn dropped(&self) -> u64 {
        self.outbox.dropped() + self.lost_on_disconnect + self.outbox.len() as u64
    }

    /// The socket to wake on when a command arrives.
    pub fn wake_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.connection.as_ref().map(AsFd::as_fd)
    }

    /// Reads the block commands that arrived (into `commands`).
    pub fn receive(&mut self) {
        let Some(connection) = self.connection.as_mut() else { return };
        connection.receive();
        loop {
            match connection.next_message::<ResponseMessage>() {
                Ok(Some(message)) => self.commands.push(message),
                Ok(None) => break,
                Err(error) => {
                    warn!(error = %error, "bad frame from the detect task; dropping the connection");
                    break;
                }
            }
        }
        self.drop_if_closed();
    }

    /// Connects when due, reads commands, moves queued messages into the connection while
    /// it has room (urgent first), and writes what the socket takes.
    pub fn pump(&mut self) {
        if self.connection.is_none() && Instant::now() >= self.next_attempt {
            match std::os::unix::net::UnixStream::connect(&self.path)
                .and_then(|stream| Connection::resume(stream, WRITE_BUFFER_BYTES, std::mem::take(&mut self.carried)))
            {
                Ok(connection) => {
                    self.failed_attempts = 0;
                    self.connection = Some(connection);
                }
                Err(error) => {
                    // The first failure and then one in a hundred: the operator learns why
                    // flows wait without a line per retry.
                    if self.failed_attempts % 100 == 0 {
                        warn!(socket = %self.path.display(), error = %error, attempts = self.failed_attempts + 1, "cannot reach the detect task's flow socket; flows wait in the bounded queue");
                    }
                    self.failed_attempts += 1;
                    self.next_attempt = Instant::now() + RECONNECT_INTERVAL;
                }
            }
        }
        self.receive();
        let Some(connection) = self.connection.as_mut() else { return };
        while let Some(message) = self.urgent.front().or_else(|| self.outbox.front()) {
            let flow = matches!(message, FlowMessage::Flow { .. });
            match connection.queue(message) {
                Ok(()) => {
                    if self.urgent.pop_front().is_none() {
                        self.outbox.pop();
                    }
                    self.sent += u64::from(flow);
                }
                // The buffer is full: write a batch, then go on while the socket takes
                // bytes (one write per batch of frames, not per flow).
                Err(mld_ipc::SendError::Full { .. }) => {
                    if connection.flush() == 0 {
                        break;
                    }
                }
                Err(error) => {
                    warn!(error = %error, "a message for the detect task cannot be encoded; dropped");
                    if self.urgent.pop_front().is_none() {
                        self.outbox.pop();
                    }
                }
            }
        }
        connection.flush();
        self.drop_if_closed();
    }

    /// True when everything queued was written.
    pub fn idle(&self) -> bool {
        self.outbox.is_empty() && self.urgent.is_empty() && self.connection.as_ref().is_none_or(Connection::is_flushed) && self.carried.frames.is_empty()
    }

    fn drop_if_closed(&mut self) {
        if self.connection.as_ref().is_some_and(|connection| !connection.is_open()) {
            // The detect task went away (it restarts). Frames not started go to the next
            // connection; a frame cut in the middle is lost (counted).
            let unsent = self.connection.take().map(Connection::unsent).unwrap_or_default();
            self.lost_on_disconnect += u64::from(unsent.cut_frame);
            self.carried = unsent;
            self.next_attempt = Instant::now() + RECONNECT_INTERVAL;
        }
    }
}

/// The XDP program's maps the capture task is handed (`mld_supervisor::layout::CaptureFds`).
#[derive(Debug)]
pub struct Maps {
    pub ring: OwnedFd,
    /// The allowlist's two tries and its selector (read-only).
    pub allow: [OwnedFd; 3],
    pub deny: OwnedFd,
    /// Read-only.
    pub counters: OwnedFd,
    /// The per-destination guard, the known-good sources, the guarded count.
    pub guard: [OwnedFd; 3],
}

/// Runs the capture task until shutdown.
pub fn run(start: &Start, control: &mut Control, stop: &AtomicBool, maps: Maps) -> anyhow::Result<Exit> {
    let Maps { ring, allow, deny, counters, guard: [guard_map, good_map, guard_on] } = maps;
    let config = &start.config;
    let mut maps = PinnedMaps::from_fds(allow, deny, counters)?;
    let mut guard = super::guard::Guard::new(mld_capture::GuardSettings::from(&config.guard), mld_capture::GuardMaps::from_fds(guard_map, good_map, guard_on)?);
    let mut table = FlowTable::new(config.flow_table());
    let mut side = CaptureSide::new(config, &mut table);
    let mut pump = FlowPump::new(RingReader::from_fd(ring)?, table, TABLE_TICK);
    let mut sender = FlowSender::new(start.settings.flows_socket.clone(), OUTBOX_CAPACITY);
    let mut emitted: Vec<Emitted> = Vec::with_capacity(1024);
    let mut counters = CaptureCounters::default();
    let mut last_sweep = Instant::now();
    let mut protected = Protected::from_host(&config.response, &config.allowlist, &HostNet::read());
    let mut ttl_max = config.response.ttl_max;
    let mut last_network_refresh = Instant::now();
    control.ready();
    info!("capture task ready");
    while !stop.load(Ordering::Relaxed) && !control.shutdown_requested() {
        // Block commands from the detect task wake the loop at once.
        pump.pump_observing(sender.wake_fd(), |record, new_flow| guard.tracker.observe(record, new_flow))?;
        // Blocks before anything else.
        sender.receive();
        refuse_victims(&guard, &mut sender);
        apply_commands(&mut sender, &mut maps, &protected, ttl_max);
        side.poll(&mut pump.table, &mut pump.finished, &mut emitted);
        queue(&mut emitted, &mut sender, &mut counters);
        sender.pump();
        // Commands that arrived while pumping: now, not after the next wait.
        refuse_victims(&guard, &mut sender);
        apply_commands(&mut sender, &mut maps, &protected, ttl_max);
        for message in guard.step() {
            sender.queue_urgent(message);
        }
        for request in control.take_requests() {
            // A configuration applied while running: the protections and the TTL bound
            // block commands are checked against (the rest restarts this task).
            if let mld_ipc::SupervisorMessage::Reconfigure { config_toml, .. } = request {
                match mld_config::Config::from_toml(&config_toml, "the supervisor's configuration") {
                    Ok(new) => {
                        protected = Protected::from_host(&new.response, &new.allowlist, &HostNet::read());
                        ttl_max = new.response.ttl_max;
                        info!("configuration applied live");
                    }
                    Err(errors) => warn!(errors = %errors, "the supervisor's new configuration does not parse here; keeping the current one"),
                }
            }
        }
        if last_network_refresh.elapsed() >= config.capture.network_refresh {
            protected.refresh(&HostNet::read());
            last_network_refresh = Instant::now();
        }
        if last_sweep.elapsed() >= config.capture.sweep_interval {
            for prefix in maps.sweep_expired(boot_time_ns())? {
                info!(prefix = %prefix, "deny entry expired and was removed");
                sender.queue_urgent(FlowMessage::BlockExpired { prefix });
            }
            last_sweep = Instant::now();
        }
        counters.guards_active = guard.tracker.guarded_count() as u64;
        counters.guards_on = guard.tracker.counters.guards_on;
        control.report_due(|| TaskCounters::Capture(fill(&mut counters, &pump, &maps, &sender)));
    }
    // Shutdown: stop intake, drain the ring, end every flow, hand them on, then exit.
    pump.drain()?;
    emitted.extend(pump.finished.drain(..).map(Emitted::Flow));
    queue(&mut emitted, &mut sender, &mut counters);
    let deadline = Instant::now() + DRAIN_DEADLINE;
    while !sender.idle() && Instant::now() < deadline {
        sender.pump();
        std::thread::sleep(Duration::from_millis(5));
    }
    let counters = fill(&mut counters, &pump, &maps, &sender);
    control.finish(TaskCounters::Capture(counters));
    info!(flows = counters.flows_finished, sent = counters.flows_sent, dropped = counters.flows_dropped, "capture task stopped");
    Ok(Exit::Success)
}

/// Block commands for a random-source flood's victim are refused (answered with why).
fn refuse_victims(guard: &super::guard::Guard, sender: &mut FlowSender) {
    let mut results = Vec::new();
    guard.refuse_victims(&mut sender.commands, &mut results);
    for result in results {
        sender.queue_urgent(result);
    }
}

/// Hands what the capture side emitted to the sender.
fn queue(emitted: &mut Vec<Emitted>, sender: &mut FlowSender, counters: &mut CaptureCounters) {
    for item in emitted.drain(..) {
        match item {
            Emitted::Flow(flow) => {
                if flow.end_reason != mld_flow::EndReason::Active {
                    counters.flows_finished += 1;
                }
                sender.queue(FlowMessage::Flow { flow: Box::new(flow) });
            }
            Emitted::Source(report) => sender.queue(FlowMessage::Source { report: Box::new(report) }),
        }
    }
}

/// Writes the deny entries the detect task asked for and answers each with its result.
fn apply_commands(sender: &mut FlowSender, maps: &mut PinnedMaps, protected: &Protected, ttl_max: Duration) {
    // Every map write first, then the logging: a burst of blocks is not slowed by it.
    let mut results = Vec::new();
    for command in std::mem::take(&mut sender.commands) {
        let (id, prefix, ttl_secs, reason, decided_boot_ns) = match command {
            ResponseMessage::Block { id, prefix, ttl_secs, reason, decided_boot_ns } => (id, prefix, ttl_secs, reason, decided_boot_ns),
            ResponseMessage::Unblock { prefix } => {
                unblock(maps, prefix);
                continue;
            }
        };
        // Re-checked here whoever sent it: bounded prefix, nothing protected, TTL within
        // bounds (the detect task is less trusted than the data plane).
        let result = mld_capture::check_block_command(prefix, ttl_secs, reason, protected, ttl_max)
            .map_err(|why| format!("refused: {why}"))
            .and_then(|checked| maps.deny_add(&checked.prefix, Some(checked.ttl), checked.reason).map_err(|error| format!("{error:#}")));
        results.push((id, prefix, ttl_secs, decided_boot_ns, result, boot_time_ns()));
    }
    for (id, prefix, ttl_secs, decided_boot_ns, result, applied_boot_ns) in results {
        match &result {
            Ok(()) => info!(prefix = %prefix, ttl_secs, latency_us = applied_boot_ns.saturating_sub(decided_boot_ns) / 1000, "blocked"),
            Err(error) => warn!(prefix = %prefix, error = %error, "failed to block"),
        }
        sender.queue_urgent(FlowMessage::BlockResult { id, prefix, error: result.err(), applied_boot_ns });
    }
}

/// Removes the deny entry of exactly `prefix` (a shared block withdrawn by the node that
/// decided it), unless the operator wrote it: `manual` entries are the operator's alone.
fn unblock(maps: &mut PinnedMaps, prefix: mld_types::IpPrefix) {
    let entry = match maps.deny_list() {
        Ok(entries) => entries.into_iter().find(|entry| entry.prefix == prefix),
        Err(error) => {
            warn!(prefix = %prefix, error = %crate::error_chain(&error), "failed to read the deny map to unblock");
            return;
        }
    };
    match entry {
        None => {}
        Some(entry) if entry.reason == mld_types::DenyReason::Manual => info!(prefix = %prefix, "kept the operator's manual block"),
        Some(_) => match maps.deny_del(&prefix) {
            Ok(_) => info!(prefix = %prefix, "unblocked"),
            Err(error) => warn!(prefix = %prefix, error = %crate::error_chain(&error), "failed to unblock"),
        },
    }
}

/// The counters as of now.
fn fill(counters: &mut CaptureCounters, pump: &FlowPump, maps: &PinnedMaps, sender: &FlowSender) -> CaptureCounters {
    counters.records_read = pump.records;
    counters.flows_sent = sender.sent;
    counters.flows_dropped = sender.dropped();
    if let Ok(xdp) = maps.counters() {
        counters.xdp_passed = xdp.passed;
        counters.xdp_dropped = xdp.dropped;
        counters.xdp_malformed = xdp.malformed;
        counters.xdp_ring_full = xdp.ring_full;
        counters.xdp_guard_dropped = xdp.guard_dropped;
    }
    *counters
}

#[cfg(test)]
mod tests {
    use super::*;
    use mld_ipc::FrameDecoder;
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    fn expired(prefix: &str) -> FlowMessage {
        FlowMessage::BlockExpired { prefix: prefix.parse().expect("prefix") }
    }

    fn read_messages(stream: &mut std::os::unix::net::UnixStream, want: usize) -> Vec<FlowMessage> {
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut decoder = FrameDecoder::default();
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        while out.len() < want {
            let n = stream.read(&mut chunk).expect("read");
            assert!(n > 0, "closed after {} messages", out.len());
            decoder.push(&chunk[..n]);
            while let Some(message) = decoder.next_message::<FlowMessage>().expect("frame") {
                out.push(message);
            }
        }
        out
    }

    #[test]
    fn urgent_messages_overtake_queued_flows_and_a_full_queue_drops_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("flows.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let mut sender = FlowSender::new(path, 2);
        for prefix in ["10.0.0.1/32", "10.0.0.2/32", "10.0.0.3/32"] {
            sender.queue(expired(prefix));
        }
        sender.queue_urgent(expired("10.9.9.9/32"));
        assert_eq!(sender.dropped(), 3, "one dropped, two waiting");
        sender.pump();
        let (mut detect, _) = listener.accept().expect("the sender connected");
        let received = read_messages(&mut detect, 3);
        assert_eq!(received, vec![expired("10.9.9.9/32"), expired("10.0.0.1/32"), expired("10.0.0.2/32")]);
        assert!(sender.idle());
        assert_eq!(sender.dropped(), 1, "only the one the full queue refused");
    }

    #[test]
    fn the_sender_reconnects_after_the_detect_task_restarts_and_sends_what_waited() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("flows.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let mut sender = FlowSender::new(path.clone(), 16);
        sender.queue(expired("10.0.0.1/32"));
        sender.pump();
        let (first, _) = listener.accept().expect("connected");
        drop(first);
        // The closed peer is seen on the next pump; the queued message waits for the next one.
        sender.queue(expired("10.0.0.2/32"));
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut second = None;
        listener.set_nonblocking(true).expect("nonblocking");
        while second.is_none() && Instant::now() < deadline {
            sender.pump();
            second = listener.accept().ok().map(|(stream, _)| stream);
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut second = second.expect("the sender reconnected within the deadline");
        second.set_nonblocking(false).expect("blocking");
        sender.pump();
        let received = read_messages(&mut second, 1);
        assert_eq!(received.last(), Some(&expired("10.0.0.2/32")));
    }

    #[test]
    fn block_commands_from_the_detect_task_are_collected_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("flows.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let mut sender = FlowSender::new(path, 16);
        sender.pump();
        let (mut detect, _) = listener.accept().expect("connected");
        for id in 1..=3 {
            let block = ResponseMessage::Block {
                id,
                prefix: "10.66.2.66/32".parse().expect("prefix"),
                ttl_secs: 60,
                reason: mld_types::DenyReason::Scan,
                decided_boot_ns: 0,
            };
            mld_ipc::write_frame(&mut detect, &block).expect("write");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while sender.commands.len() < 3 && Instant::now() < deadline {
            sender.receive();
        }
        let ids: Vec<u64> =
            sender.commands.iter().filter_map(|command| if let ResponseMessage::Block { id, .. } = command { Some(*id) } else { None }).collect();
        assert_eq!(ids, vec![1, 2, 3]);
    }
}
