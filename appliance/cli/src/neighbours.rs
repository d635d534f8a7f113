//! "Nearest past events" for the detect task's decisions (`detect.nearest-past-events`).
//!
//! A decision's record is handed to a thread of its own, which asks the ingest task (its
//! query socket) for the most similar indexed events within the budget and hands the
//! record back with a `nearest_past_events` field. Detection never waits: blocks are sent
//! before records are built, the hand-over is a non-blocking send into a bounded queue,
//! and a full queue means the record goes on at once with status `busy`. A record waits
//! for its answer at most the budget (status `timeout` after it), so it reaches the log
//! late by at most that much, possibly after records of later flows.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mld_history::{Filter, Query, Reply};
use serde_json::{json, Map, Value};

/// Decisions waiting for their neighbours at most; beyond, they go on with status `busy`.
const QUEUE: usize = 64;

type Record = Map<String, Value>;

/// The enrichment thread and its two queues.
#[derive(Debug)]
pub struct Neighbours {
    requests: Option<SyncSender<(Record, Instant)>>,
    results: Receiver<Record>,
    in_flight: usize,
    budget: Duration,
    thread: Option<JoinHandle<()>>,
}

impl Neighbours {
    pub fn start(socket: PathBuf, k: usize, budget: Duration) -> std::io::Result<Neighbours> {
        let (requests, inbox) = mpsc::sync_channel::<(Record, Instant)>(QUEUE);
        let (outbox, results) = mpsc::channel();
        let thread = std::thread::Builder::new().name("neighbours".to_string()).spawn(move || {
            for (mut record, deadline) in inbox {
                let field = ask(&socket, &record, k, deadline);
                record.insert("nearest_past_events".to_string(), field);
                if outbox.send(record).is_err() {
                    return;
                }
            }
        })?;
        Ok(Neighbours { requests: Some(requests), results, in_flight: 0, budget, thread: Some(thread) })
    }

    /// Hands a decision's record over. `Some(record)` (with status `busy`) when the queue
    /// is full: the caller sends it on at once.
    pub fn submit(&mut self, record: Record) -> Option<Record> {
        let Some(requests) = &self.requests else { return Some(with_status(record, "busy", Some("the enrichment thread has stopped"))) };
        match requests.try_send((record, Instant::now() + self.budget)) {
            Ok(()) => {
                self.in_flight += 1;
                None
            }
            Err(TrySendError::Full((record, _)) | TrySendError::Disconnected((record, _))) => Some(with_status(record, "busy", None)),
        }
    }

    /// Records whose answer (or timeout) is in, in the order they were submitted.
    pub fn ready(&mut self) -> Vec<Record> {
        let records: Vec<Record> = self.results.try_iter().collect();
        self.in_flight -= records.len().min(self.in_flight);
        records
    }

    /// Waits (at most the budget and a little) for every record in flight; returns them.
    pub fn finish(mut self) -> Vec<Record> {
        self.requests = None;
        let deadline = Instant::now() + self.budget + Duration::from_millis(100);
        let mut records = Vec::new();
        while self.in_flight > records.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.results.recv_timeout(left) {
                Ok(record) => records.push(record),
                Err(_) => break,
            }
        }
        if let Some(thread) = self.thread.take() {
            if records.len() == self.in_flight {
                let _ = thread.join();
            }
        }
        records
    }
}

fn with_status(mut record: Record, status: &str, detail: Option<&str>) -> Record {
    let mut field = json!({ "status": status, "events": [] });
    if let Some(detail) = detail {
        field["detail"] = detail.into();
    }
    record.insert("nearest_past_events".to_string(), field);
    record
}

/// One query within the deadline: the field's value.
fn ask(socket: &std::path::Path, record: &Record, k: usize, deadline: Instant) -> Value {
    let status = |status: &str, detail: String| json!({ "status": status, "events": [], "detail": detail });
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return status("timeout", "the budget was spent waiting in the queue".to_string());
    }
    let mut stream = match UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(error) => return status("unavailable", format!("connect to `{}`: {error}", socket.display())),
    };
    let _ = stream.set_write_timeout(Some(left));
    let _ = stream.set_read_timeout(Some(left));
    let query = Query::SimilarToObject { object: record.clone(), k, filter: Filter::default() };
    if let Err(error) = mld_ipc::write_frame(&mut stream, &query) {
        return status("unavailable", format!("send the query: {error}"));
    }
    match mld_ipc::read_frame::<Reply>(&mut stream) {
        Ok(Some(Reply::Answer(answer))) => {
            let events: Vec<Value> = answer
                .hits
                .iter()
                .map(|hit| {
                    json!({
                        "seq": hit.fields.seq,
                        "event_id": hit.fields.event_id,
                        "distance": hit.distance.unwrap_or_default(),
                        "ts_us": hit.fields.ts_us,
                        "src_ip": hit.fields.src_ip,
                        "dst_ip": hit.fields.dst_ip,
                        "dst_port": hit.fields.dst_port,
                        "action": hit.fields.action,
                        "category": hit.fields.category,
                    })
                })
                .collect();
            json!({ "status": "ok", "events": events })
        }
        Ok(Some(Reply::Error(message))) => status("unavailable", message),
        Ok(None) => status("unavailable", "the ingest task closed the connection".to_string()),
        Err(mld_ipc::FrameError::Io(error)) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            status("timeout", format!("no answer within {} ms", left.as_millis()))
        }
        Err(error) => status("unavailable", format!("read the answer: {error}")),
    }
}
