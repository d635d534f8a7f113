//! The server half of `mldefender query`: the ingest task answers one query per
//! connection, between its reads of the log, with a deadline on the connection so a stuck
//! client cannot stall it.

use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use anyhow::Context;
use mld_config::Config;
use mld_history::{Embedder, Query, Reply};
use tracing::warn;

/// The query socket's name in the supervisor's runtime directory.
pub const QUERY_SOCKET: &str = "query.sock";

/// How long one connection may take to send its query and read the answer.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(2);
/// Connections answered per call of [`serve`] (the rest wait for the next call).
const MAX_CONNECTIONS_PER_CALL: usize = 16;

/// The embedder the configuration names (models dir, release key, windows).
pub fn load_embedder(config: &Config) -> anyhow::Result<Embedder> {
    let name = config.ingest.index.as_ref().map_or("embedder", |index| index.embedder.as_str());
    let windows: Vec<u64> = config.windows.lengths.iter().map(|length| length.as_secs()).collect();
    Embedder::load(&config.detect.onnxruntime, &config.detect.models_dir, name, &config.detect.model_public_key, &windows)
        .with_context(|| format!("failed to load the embedder `{name}` from `{}`", config.detect.models_dir.display()))
}

/// Answers the queries waiting on `listener` (non-blocking), at most a few per call, from
/// processes running as one of `uids` (peer credentials; root and the detect task).
/// `answer_one` gets each query.
pub fn serve(listener: &UnixListener, uids: &[u32], answer_one: &mut dyn FnMut(&Query) -> Reply) {
    // However the askers behave, one call spends at most this long on them.
    let deadline = std::time::Instant::now() + CONNECTION_DEADLINE;
    for _ in 0..MAX_CONNECTIONS_PER_CALL {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        let mut stream = match mld_ipc::accept(listener, uids) {
            None => return,
            Some(Ok(peer)) => peer.stream,
            Some(Err(refusal)) => {
                refused(&refusal.to_string());
                if let mld_ipc::Refused::Uid { mut stream, .. } = refusal {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_write_timeout(Some(left));
                    let _ = mld_ipc::write_frame(&mut stream, &Reply::Error("only root and the detect task may query the similarity index".to_string()));
                }
                continue;
            }
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(left));
        let _ = stream.set_write_timeout(Some(left));
        // The deadline holds for the whole query, however the bytes trickle in.
        let reply = match mld_ipc::read_frame::<Query>(&mut Deadline { stream: &stream, deadline }) {
            Ok(Some(query)) => answer_one(&query),
            Ok(None) => continue,
            Err(error) => Reply::Error(format!("unreadable query: {error}")),
        };
        match mld_ipc::write_frame(&mut stream, &reply) {
            Ok(()) => {}
            Err(mld_ipc::FrameError::TooLarge(bytes)) => {
                let too_large = Reply::Error(format!(
                    "the answer takes {bytes} bytes, more than one frame holds ({} bytes): ask for fewer events",
                    mld_ipc::MAX_FRAME_BYTES
                ));
                let _ = mld_ipc::write_frame(&mut stream, &too_large);
            }
            // The asker gave up (the detect task's budget ran out): nothing to report.
            Err(mld_ipc::FrameError::Io(error)) if matches!(error.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset) => {
                tracing::debug!(error = %error, "a query's asker left before its answer");
            }
            Err(error) => warn!(error = %error, "failed to send a query's answer"),
        }
    }
}

/// A stream whose reads all end by one deadline (a socket timeout applies to each read).
struct Deadline<'a> {
    stream: &'a UnixStream,
    deadline: std::time::Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the query's deadline passed"));
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut stream = self.stream;
        stream.read(buffer)
    }
}

/// Logs a refused asker, at most once a minute (with how many so far).
fn refused(who: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, PoisonError};
    static REFUSED: AtomicU64 = AtomicU64::new(0);
    static LAST_WARNING: Mutex<Option<std::time::Instant>> = Mutex::new(None);
    let count = REFUSED.fetch_add(1, Ordering::Relaxed) + 1;
    let mut last = LAST_WARNING.lock().unwrap_or_else(PoisonError::into_inner);
    if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
        *last = Some(std::time::Instant::now());
        warn!(last = who, refused_so_far = count, "refused queries from processes that are neither root nor the detect task");
    }
}
