//! The server half of `mldefender query`: the ingest task answers one query per
//! connection, between its reads of the log, with a deadline on the connection so a stuck
//! client cannot stall it.

use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use mld_config::Config;
use mld_history::{Embedder, Query, Reply};
use mld_index::EventIndex;
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

/// The sentence model of the text index (`ingest.text-model-dir`), checked against the
/// release key, with ONNX Runtime loaded first.
pub fn load_text_model(config: &Config, text: &mld_config::TextIndexConfig) -> anyhow::Result<mld_model::text::TextModel> {
    mld_model::init_runtime(&config.detect.onnxruntime)?;
    let key = mld_model::signing::ModelPublicKey::from_base64(&config.detect.model_public_key)
        .map_err(|error| anyhow::anyhow!("detect.model-public-key is not a valid Ed25519 public key: {error}"))?;
    mld_model::text::TextModel::load(&text.model_dir, TEXT_MODEL_NAME, &key)
        .with_context(|| format!("failed to load the text model `{TEXT_MODEL_NAME}` from `{}`", text.model_dir.display()))
}

/// The text model's name in `ingest.text-model-dir`.
pub const TEXT_MODEL_NAME: &str = "text-embedder";

/// Now, µs since the epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_micros() as i64)
}

/// The local time zone's offset from UTC at `ts_us` (the zone of /etc/localtime or TZ, as
/// the log's daily rotation uses; 0 where there is none, as in the appliance image), so
/// that "since midnight" in a question means the operator's midnight.
pub fn local_utc_offset_secs(ts_us: i64) -> i64 {
    mld_eventlog::local_utc_offset_secs(ts_us.div_euclid(1_000_000))
}

/// Answers a question in words from a text index directory opened read-only (safe beside
/// a running ingest task), with the configured sentence model.
fn ask_text_offline(dir: &Path, config: Option<&Config>, query: &Query, index: EventIndex) -> anyhow::Result<Reply> {
    let Some(config) = config else {
        anyhow::bail!("a question in words needs the configuration's text model (--config)");
    };
    let text_config = match config.ingest.index.as_ref().and_then(|index| index.text.clone()) {
        Some(text) => text,
        // Off in the configuration, but an index directory was given: its model anyway.
        None => mld_config::TextIndexConfig {
            dir: dir.to_path_buf(),
            model_dir: std::path::PathBuf::from(mld_config::raw::RawIngest::default().text_model_dir),
            max_events: 0,
            observations: false,
        },
    };
    let model = load_text_model(config, &text_config)?;
    let observations = index.source().ends_with(" with observations");
    let mut text = match mld_history::TextIndex::from_index(index, model, observations)? {
        Ok(text) => text,
        Err(refused) => {
            return Ok(Reply::Error(format!(
                "`{}` is not a text index of this model: {} (the text index is <ingest.state-dir>/text-index)",
                dir.display(),
                refused.1
            )))
        }
    };
    let now = now_us();
    Ok(match mld_history::answer_ask(&mut text, query, now, local_utc_offset_secs(now)) {
        Ok(answer) => Reply::Answer(Box::new(answer)),
        Err(error) => Reply::Error(format!("{:#}", anyhow::Error::from(error))),
    })
}

/// Answers `query` from an index directory opened read-only (safe beside a running ingest
/// task); `config` names the embedder, needed only to embed an object.
pub fn ask_offline(dir: &Path, config: Option<&Config>, query: &Query) -> anyhow::Result<Reply> {
    // The running task may replace its snapshot between our reading the manifest and the
    // index file it names: a few tries see a whole one.
    let mut attempt = 0;
    let index = loop {
        match EventIndex::open_read_only(dir) {
            Ok(index) => break index,
            Err(mld_index::IndexError::Missing { .. } | mld_index::IndexError::Corrupt { .. })
                if attempt < 3 && dir.join(mld_index::MANIFEST_FILE).exists() =>
            {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(error) => return Err(anyhow::Error::from(error).context(format!("failed to open the index `{}`", dir.display()))),
        }
    };
    if matches!(query, Query::Ask { .. }) {
        return ask_text_offline(dir, config, query, index);
    }
    let mut embedder = match (query, config) {
        (Query::SimilarToObject { .. }, Some(config)) => Some(load_embedder(config)?),
        (Query::SimilarToObject { .. }, None) => anyhow::bail!("embedding an object needs the configuration's embedder"),
        _ => None,
    };
    if let Some(embedder) = &embedder {
        if embedder.source() != index.source() {
            return Ok(Reply::Error(format!(
                "index `{}` was made by `{}`, the configured embedder is `{}`: its vectors are not comparable",
                dir.display(),
                index.source(),
                embedder.source()
            )));
        }
    }
    Ok(match mld_history::answer(&index, embedder.as_mut(), query) {
        Ok(answer) => Reply::Answer(Box::new(answer)),
        Err(error) => Reply::Error(format!("{:#}", anyhow::Error::from(error))),
    })
}

/// Asks the running ingest task on its query socket.
pub fn ask_online(socket: &Path, query: &Query) -> anyhow::Result<Reply> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!("failed to connect to the ingest task at `{}` (is the appliance running with [ingest] index = true? offline: --index DIR)", socket.display())
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).context("failed to set a timeout on the query socket")?;
    mld_ipc::write_frame(&mut stream, query).context("failed to send the query")?;
    mld_ipc::read_frame::<Reply>(&mut stream).context("failed to read the answer")?.context("the ingest task closed the connection without an answer")
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
