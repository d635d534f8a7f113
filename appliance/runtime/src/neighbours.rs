//! "Nearest past events" for the detect task's decisions (`detect.nearest-past-events`).
//!
//! A decision's record waits here while a thread of its own asks the ingest task (its
//! query socket) for the most similar indexed events; the record leaves with a
//! `nearest_past_events` field when the answer is in or its budget is spent (status
//! `timeout`), whatever the thread is doing. Detection never waits: blocks are sent before
//! records are built, the hand-over is a non-blocking send into a bounded queue, and a
//! full queue means the record goes on at once with status `busy`. So a record reaches
//! the log late by at most the budget, possibly after records of later flows.

use std::collections::VecDeque;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use mld_history::{Filter, Query, Reply};
use serde_json::{json, Map, Value};

/// Decisions waiting for their neighbours at most; beyond, they go on with status `busy`.
const QUEUE: usize = 64;

type Record = Map<String, Value>;

/// One decision waiting: its record, its deadline, and the answer once in.
#[derive(Debug)]
struct Waiting {
    id: u64,
    record: Record,
    deadline: Instant,
    answer: Option<Value>,
}

/// The enrichment thread, and the records waiting for it. The records stay here, on the
/// detect task's side: whatever the thread does (a connect that hangs, a slow answer),
/// each record leaves by its deadline.
#[derive(Debug)]
pub struct Neighbours {
    requests: Option<SyncSender<(u64, Record, Instant)>>,
    results: Receiver<(u64, Value)>,
    waiting: VecDeque<Waiting>,
    next_id: u64,
    budget: Duration,
}

impl Neighbours {
    pub fn start(socket: PathBuf, k: usize, budget: Duration) -> std::io::Result<Neighbours> {
        let (requests, inbox) = mpsc::sync_channel::<(u64, Record, Instant)>(QUEUE);
        let (outbox, results) = mpsc::channel();
        // Not joined: if it is stuck, the process exits without it (records never wait on it).
        std::thread::Builder::new().name("neighbours".to_string()).spawn(move || {
            for (id, object, deadline) in inbox {
                if outbox.send((id, ask(&socket, object, k, deadline))).is_err() {
                    return;
                }
            }
        })?;
        Ok(Neighbours { requests: Some(requests), results, waiting: VecDeque::new(), next_id: 0, budget })
    }

    /// Hands a decision's record over. `Some(record)` (with status `busy`) when too many
    /// are waiting: the caller sends it on at once.
    pub fn submit(&mut self, record: Record) -> Option<Record> {
        let Some(requests) = &self.requests else { return Some(with_status(record, "busy", Some("the enrichment thread has stopped"))) };
        if self.waiting.len() >= QUEUE {
            return Some(with_status(record, "busy", None));
        }
        let id = self.next_id;
        self.next_id += 1;
        let deadline = Instant::now() + self.budget;
        match requests.try_send((id, record.clone(), deadline)) {
            Ok(()) => {
                self.waiting.push_back(Waiting { id, record, deadline, answer: None });
                None
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Some(with_status(record, "busy", None)),
        }
    }

    /// Records whose answer is in or whose deadline has passed (status `timeout`).
    pub fn ready(&mut self) -> Vec<Record> {
        self.collect_answers();
        let now = Instant::now();
        let mut out = Vec::new();
        self.waiting.retain_mut(|waiting| {
            if waiting.answer.is_none() && waiting.deadline > now {
                return true;
            }
            let mut record = std::mem::take(&mut waiting.record);
            let field = waiting.answer.take().unwrap_or_else(|| timeout_field(self.budget));
            record.insert("nearest_past_events".to_string(), field);
            out.push(record);
            false
        });
        out
    }

    /// Every record still waiting, after at most its deadline.
    pub fn finish(mut self) -> Vec<Record> {
        self.requests = None;
        let mut records = Vec::new();
        while !self.waiting.is_empty() {
            records.extend(self.ready());
            if let Some(next) = self.waiting.iter().map(|waiting| waiting.deadline).min() {
                let left = next.saturating_duration_since(Instant::now());
                match self.results.recv_timeout(left) {
                    Ok((id, answer)) => self.attach(id, answer),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    // The thread is gone: nothing more will come; the rest time out now.
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        for waiting in &mut self.waiting {
                            waiting.deadline = Instant::now();
                        }
                    }
                }
            }
        }
        records
    }

    fn collect_answers(&mut self) {
        while let Ok((id, answer)) = self.results.try_recv() {
            self.attach(id, answer);
        }
    }

    fn attach(&mut self, id: u64, answer: Value) {
        if let Some(waiting) = self.waiting.iter_mut().find(|waiting| waiting.id == id) {
            waiting.answer = Some(answer);
        }
    }
}

fn timeout_field(budget: Duration) -> Value {
    json!({ "status": "timeout", "events": [], "detail": format!("no answer within {} ms", budget.as_millis()) })
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
fn ask(socket: &std::path::Path, object: Record, k: usize, deadline: Instant) -> Value {
    let status = |status: &str, detail: String| json!({ "status": status, "events": [], "detail": detail });
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return status("timeout", "the budget was spent waiting in the queue".to_string());
    }
    let mut stream = match connect_now(socket) {
        Ok(stream) => stream,
        Err(error) => return status("unavailable", format!("connect to `{}`: {error}", socket.display())),
    };
    let _ = stream.set_write_timeout(Some(left));
    let _ = stream.set_read_timeout(Some(left));
    let query = Query::SimilarToObject { object, k, filter: Filter::default() };
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

/// Connects without waiting: when nobody accepts (the ingest task down, its queue full),
/// the kernel says so at once instead of blocking.
fn connect_now(socket: &std::path::Path) -> std::io::Result<UnixStream> {
    use nix::sys::socket::{connect, socket as new_socket, AddressFamily, SockFlag, SockType, UnixAddr};
    use std::os::fd::AsRawFd;
    let fd = new_socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)?;
    let address = UnixAddr::new(socket)?;
    match connect(fd.as_raw_fd(), &address) {
        Ok(()) => {}
        Err(nix::errno::Errno::EAGAIN) => return Err(std::io::Error::other("the ingest task is not accepting (its queue is full or it is down)")),
        Err(error) => return Err(error.into()),
    }
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}
