//! The log task.

use super::*;

/// The log task: the only writer of the signed event log. It writes events from the
/// sink in order, fsyncs, then acknowledges; a sequence number seen before is dropped.
pub(super) fn log_task(config: &Config, fds: &HandedFds, control: &mut Control, stop: &AtomicBool) -> anyhow::Result<Exit> {
    let listener = UnixListener::from(fds.take("events")?);
    listener.set_nonblocking(true)?;
    let key_file = std::fs::File::from(fds.take("key")?);
    let signing_key_file = std::fs::File::from(fds.take("signing-key")?);
    // Keys are read with read_at from dups of the handed fds, so the writer can be
    // opened again after the storage failed.
    let open_writer = || -> anyhow::Result<LogWriter> {
        let key = LogKey::from_file(key_file.try_clone().context("failed to dup the log key fd")?, &config.log.key_file)?;
        let signer = mld_eventlog::CheckpointSigningKey::from_file(
            signing_key_file.try_clone().context("failed to dup the signing key fd")?,
            &config.log.signing_key_file,
        )?;
        LogWriter::open_signed(crate::keys::writer_config(config), key, signer).context("failed to open the event log")
    };
    let producer_uid: u32 = std::env::var("MLD_DETECT_UID").ok().and_then(|uid| uid.parse().ok()).context("MLD_DETECT_UID is not set")?;
    let mut writer = Some(open_writer()?);
    for warning in config.warnings().iter().filter(|warning| warning.path.starts_with("log.")) {
        warn!(key = %warning.path, warning = %warning.message, "configuration warning");
    }
    let mut connection: Option<EventConnection> = None;
    // Where the log ends in the producer's stream, read back from the log itself, so a
    // restart of this task neither duplicates nor loses what the sink sends again.
    let mut delivered = writer.as_ref().and_then(LogWriter::last_delivery).unwrap_or(Delivery { stream: 0, seq: 0 });
    let mut counters = PipelineCounters::default();
    let mut last_counters = Instant::now();
    control.ready();
    info!(dir = %config.log.dir.display(), "log task ready");
    let mut buffer = [0u8; 65536];
    // When the log cannot be written (a full disk, an IO error), the task does not exit
    // (the supervisor would hold it after a few restarts, and the log would never come
    // back): it drops the connection, so that the detect task keeps what was not
    // acknowledged (and records what overflows as a gap), and opens the log again every
    // STORAGE_RETRY until it can write; the writer's recovery puts a cut line on record.
    const STORAGE_RETRY: Duration = Duration::from_secs(1);
    let mut last_attempt = Instant::now();
    while !stop.load(Ordering::Relaxed) && !control.shutdown_requested() {
        let Some(current) = writer.as_mut() else {
            if last_attempt.elapsed() >= STORAGE_RETRY {
                last_attempt = Instant::now();
                match open_writer() {
                    Ok(reopened) => {
                        info!(dir = %config.log.dir.display(), "the event log can be written again");
                        delivered = reopened.last_delivery().unwrap_or(delivered);
                        writer = Some(reopened);
                        continue;
                    }
                    Err(error) => warn!(error = %format!("{error:#}"), "the event log still cannot be written"),
                }
            }
            if last_counters.elapsed() >= COUNTERS_INTERVAL {
                control.send(&TaskMessage::Counters(counters));
                last_counters = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        // Records wait at most log.checkpoint-interval-ms for their signed checkpoint,
        // which is what the ingest task waits for.
        let pass = serve_events(&listener, producer_uid, &mut connection, current, &mut delivered, &mut counters, &mut buffer)
            .and_then(|busy| Ok(busy | current.tick().context("failed to write a checkpoint")?));
        let mut busy = match pass {
            Ok(busy) => busy,
            Err(error) => {
                error!(error = %format!("{error:#}"), "the event log cannot be written; blocking goes on, events wait in the detect task; retrying every second");
                counters.log_write_failures += 1;
                connection = None;
                if let Some(failed) = writer.take() {
                    failed.abandon();
                }
                last_attempt = Instant::now();
                true
            }
        };
        if last_counters.elapsed() >= COUNTERS_INTERVAL {
            control.send(&TaskMessage::Counters(counters));
            last_counters = Instant::now();
            busy = true;
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // Shutdown order is capture, sink, log: the sink has handed over everything it had.
    // Take what is still in the socket.
    let deadline = Instant::now() + DRAIN_DEADLINE;
    if let Some(writer) = writer.as_mut() {
        while Instant::now() < deadline && serve_events(&listener, producer_uid, &mut connection, writer, &mut delivered, &mut counters, &mut buffer)? {}
        // Nothing is left without a checkpoint at shutdown.
        writer.checkpoint().and_then(|()| writer.sync()).context("failed to fsync the event log")?;
    }
    control.send(&TaskMessage::Stopping { reason: "shutdown".to_string() });
    control.send(&TaskMessage::Counters(counters));
    info!(events = counters.events_logged, last_seq = writer.as_ref().map(LogWriter::last_seq), "log task stopped");
    Ok(Exit::Success)
}

/// The sink's connection: its stream id once it said hello.
struct EventConnection {
    stream: UnixStream,
    decoder: FrameDecoder,
    producer: Option<u64>,
}

/// One pass: accept the sink, read its events, write and fsync them, acknowledge.
/// Returns whether anything happened.
fn serve_events(
    listener: &UnixListener,
    producer_uid: u32,
    connection: &mut Option<EventConnection>,
    writer: &mut LogWriter,
    delivered: &mut Delivery,
    counters: &mut PipelineCounters,
    buffer: &mut [u8],
) -> anyhow::Result<bool> {
    let mut busy = false;
    while let Ok((stream, _)) = listener.accept() {
        match nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials) {
            Ok(credentials) if credentials.uid() == producer_uid => {
                let _ = stream.set_nonblocking(true);
                // The newest connection replaces an older one (the sink reconnected).
                *connection = Some(EventConnection { stream, decoder: FrameDecoder::default(), producer: None });
                busy = true;
            }
            Ok(credentials) => warn!(uid = credentials.uid(), "refused an event connection from a process that is not the sink"),
            Err(error) => warn!(error = %error, "refused an event connection without peer credentials"),
        }
    }
    let Some(EventConnection { stream, decoder, producer }) = connection.as_mut() else { return Ok(busy) };
    let (read, mut open) = read_available(stream, decoder, buffer);
    busy |= read;
    let mut newest = None;
    loop {
        match decoder.next_message::<EventMessage>() {
            Ok(Some(EventMessage::Hello { stream: id })) => {
                if id != delivered.stream {
                    // A new run of the sink: its sequence numbers start again.
                    info!(stream = format_args!("{id:016x}"), "a new event stream");
                    *delivered = Delivery { stream: id, seq: 0 };
                }
                *producer = Some(id);
            }
            Ok(Some(EventMessage::Event { seq, record })) => {
                if *producer != Some(delivered.stream) {
                    warn!("an event before the stream's hello; dropping the connection");
                    open = false;
                    break;
                }
                newest = Some(seq);
                if !is_new(&mut delivered.seq, seq) {
                    continue;
                }
                let delivery = Some(Delivery { stream: delivered.stream, seq });
                match writer.append_json(&record, delivery) {
                    Ok(_) => counters.events_logged += 1,
                    Err(WriterError::Body(error)) => {
                        // Never sealed as it is (a `seq` in a body would make the rest of
                        // the file unreadable): counted, and put on record without its body.
                        counters.events_refused += 1;
                        warn!(seq, key = %error.key().unwrap_or("-"), error = %error, "refused an event body; writing a rejected_event record instead");
                        writer.append_rejected(&record, &error, delivery).context("failed to write the event log")?;
                    }
                    Err(error) => return Err(error).context("failed to write the event log"),
                }
            }
            Ok(None) => break,
            Err(error) => {
                warn!(error = %error, "bad event frame; dropping the connection");
                open = false;
                break;
            }
        }
    }
    if let Some(seq) = newest {
        // Durable first, then acknowledged.
        writer.sync().context("failed to fsync the event log")?;
        if open {
            let _ = stream.set_nonblocking(false);
            let _ = mld_ipc::write_frame(stream, &EventAck { seq });
            let _ = stream.set_nonblocking(true);
        }
    }
    if !open {
        *connection = None;
    }
    Ok(busy)
}
