//! The ingest task: follows the signed log and verifies every record by its signed
//! checkpoint (read-only access to the log directory through its group; the checkpoint
//! public key from the supervisor, never the HMAC key: ADR 0007); quarantines what
//! fails; embeds every verified event into the similarity index and answers queries on the
//! socket the supervisor handed over (`[ingest] index = false`: verify only).

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use mld_ipc::{IngestCounters, TaskCounters};
use tracing::{info, warn};

use super::{Control, Start, DRAIN_DEADLINE};
use crate::exit::Exit;

/// Runs the ingest task until shutdown.
pub fn run(start: &Start, control: &mut Control, stop: &AtomicBool, query: OwnedFd) -> anyhow::Result<Exit> {
    let config = &start.config;
    let public_key = start
        .settings
        .log_public_key
        .as_deref()
        .and_then(|text| mld_eventlog::CheckpointPublicKey::from_base64(text).ok())
        .context("no checkpoint public key in the task settings: the supervisor hands it over")?;
    let listener = UnixListener::from(query);
    listener.set_nonblocking(true).context("failed to configure the query socket")?;
    // Root (the operator's `mldefender query`) and the detect task (nearest past events).
    let askers = [0u32, start.settings.detect_uid];
    let mut ingest_config = mld_ingest::IngestConfig::new(config.log.dir.clone(), config.ingest.state_dir.clone(), config.log.node.clone(), vec![public_key]);
    ingest_config.max_age_us = config.ingest.max_age.as_micros() as u64;
    ingest_config.recent_seqs = config.ingest.recent_seqs;
    ingest_config.max_quarantine_bytes = config.ingest.max_quarantine_bytes;
    let mut counters = IngestCounters::default();
    // The supervisor made the log directory (group-readable) before any task started;
    // files appear as the log task writes them.
    // The text index is the analyst's convenience: without its model (not installed, not
    // signed by the release key) the task goes on with the flow index and every question in
    // words is answered with why.
    let (text_model, text_off) = match config.ingest.index.as_ref().and_then(|index| index.text.as_ref()) {
        None => (None, Some("the text index is off on this appliance (ingest.text-index = false)".to_string())),
        Some(text) => match crate::query_server::load_text_model(config, text) {
            Ok(model) => (Some(model), None),
            Err(error) => {
                let reason = format!("{error:#}");
                tracing::error!(error = %reason, "the text index is unavailable; going on without it");
                (None, Some(format!("the text index is unavailable: {reason}")))
            }
        },
    };
    let mut source = match &config.ingest.index {
        Some(index) => match crate::query_server::load_embedder(config) {
            Ok(embedder) => match open_history(index, ingest_config, embedder, text_model) {
                Ok(history) => Verified::History(Box::new(history)),
                Err(failure) => match *failure {
                    mld_history::OpenFailure { error, ingest_config: Some(ingest_config) } => {
                        Verified::without_index(*ingest_config, format!("{:#}", anyhow::Error::from(error)))?
                    }
                    failure => return Err(anyhow::Error::from(failure).context("failed to open the ingest state")),
                },
            },
            // Without its embedder (missing, unsigned, no ONNX Runtime) the index cannot be
            // built.
            Err(error) => Verified::without_index(ingest_config, format!("{error:#}"))?,
        },
        None => Verified::Plain(Box::new(mld_ingest::Ingest::open(ingest_config).context("failed to open the ingest state")?), None),
    };
    control.ready();
    info!(dir = %config.log.dir.display(), state = %config.ingest.state_dir.display(), index = config.ingest.index.is_some(), "ingest task ready");
    let mut idle_wait = config.ingest.poll_interval.min(Duration::from_millis(100));
    let mut catch_up = CatchUp::new(config.log.dir.clone(), config.log.node.clone());
    while !stop.load(Ordering::Relaxed) && !control.shutdown_requested() {
        for request in control.take_requests() {
            // A configuration applied while running: the cadences (the rest restarts this task).
            if let mld_ipc::SupervisorMessage::Reconfigure { config_toml, .. } = request {
                match mld_config::Config::from_toml(&config_toml, "the supervisor's configuration") {
                    Ok(new) => {
                        idle_wait = new.ingest.poll_interval.min(Duration::from_millis(100));
                        if let (Verified::History(history), Some(index)) = (&mut source, &new.ingest.index) {
                            history.set_save_interval(index.save_interval);
                        }
                        info!("configuration applied live");
                    }
                    Err(errors) => warn!(errors = %errors, "the supervisor's new configuration does not parse here; keeping the current one"),
                }
            }
        }
        let lines = source.step(&mut counters)?;
        let busy = lines > 0;
        catch_up.after_step(lines, source.position(), &counters);
        crate::query_server::serve(&listener, &askers, &mut |query| source.answer(query, text_off.as_deref()));
        control.report_due(|| TaskCounters::Ingest(counters));
        if !busy {
            // Sleep until a query arrives or it is time to look at the log again.
            let mut fds = [nix::poll::PollFd::new(listener.as_fd(), nix::poll::PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::try_from(idle_wait).unwrap_or(nix::poll::PollTimeout::ZERO));
        }
    }
    // The log task stopped before this one: read what it wrote last (bounded: a rebuild
    // in progress goes on at the next start), then save.
    let drain_until = Instant::now() + DRAIN_DEADLINE;
    while Instant::now() < drain_until && source.step(&mut counters)? > 0 {}
    source.save();
    control.finish(TaskCounters::Ingest(counters));
    info!(
        verified = counters.events_verified,
        quarantined = counters.events_quarantined,
        indexed = counters.events_indexed,
        described = counters.events_text_indexed,
        "ingest task stopped"
    );
    Ok(Exit::Success)
}

/// Progress lines while the task is behind the log (a first start on a long log, an
/// index rebuilt from it): every [`CatchUp::EVERY`], the records verified and indexed per
/// second, what is left to read and the time left at that rate; a line when caught up.
struct CatchUp {
    log_dir: std::path::PathBuf,
    node: String,
    /// Since when the task has been reading full batches, with its counters and position then.
    behind: Option<(Instant, IngestCounters, u64)>,
    last_line: Instant,
}

impl CatchUp {
    const EVERY: Duration = Duration::from_secs(5);

    fn new(log_dir: std::path::PathBuf, node: String) -> CatchUp {
        CatchUp { log_dir, node, behind: None, last_line: Instant::now() }
    }

    /// Bytes of the node's log files from `position` (file index, offset) on.
    fn left(&self, position: (u64, u64)) -> u64 {
        let prefix = format!("events-{}-", self.node);
        std::fs::read_dir(&self.log_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let index: u64 = name.strip_prefix(&prefix)?.strip_suffix(".jsonl")?.parse().ok()?;
                let length = entry.metadata().ok()?.len();
                match index.cmp(&position.0) {
                    std::cmp::Ordering::Less => None,
                    std::cmp::Ordering::Equal => Some(length.saturating_sub(position.1)),
                    std::cmp::Ordering::Greater => Some(length),
                }
            })
            .sum()
    }

    fn after_step(&mut self, lines: u64, position: Option<((u64, u64), usize)>, counters: &IngestCounters) {
        let Some((position, batch)) = position else { return };
        // Less than a full batch: nothing more is waiting.
        if lines < batch as u64 {
            if let Some((since, _, _)) = self.behind.take() {
                if since.elapsed() >= CatchUp::EVERY {
                    info!(verified = counters.events_verified, indexed = counters.events_indexed, secs = since.elapsed().as_secs(), "caught up with the log");
                }
            }
            return;
        }
        let Some((since, at_start, left_at_start)) = self.behind else {
            self.behind = Some((Instant::now(), *counters, self.left(position)));
            self.last_line = Instant::now();
            return;
        };
        if self.last_line.elapsed() < CatchUp::EVERY {
            return;
        }
        self.last_line = Instant::now();
        // The directory is read once per line, not per batch.
        let left = self.left(position);
        let secs = since.elapsed().as_secs_f64().max(0.001);
        let read_per_sec = left_at_start.saturating_sub(left) as f64 / secs;
        info!(
            verified_per_sec = ((counters.events_verified - at_start.events_verified) as f64 / secs).round(),
            indexed_per_sec = ((counters.events_indexed - at_start.events_indexed) as f64 / secs).round(),
            left_mib = format_args!("{:.1}", left as f64 / f64::from(1u32 << 20)),
            eta_secs = if read_per_sec > 0.0 { (left as f64 / read_per_sec).round() } else { f64::NAN },
            "catching up with the log"
        );
    }
}

/// The history (verify, embed, index), opened from the configuration.
fn open_history(
    index: &mld_config::IndexConfig,
    ingest_config: mld_ingest::IngestConfig,
    embedder: mld_history::Embedder,
    text_model: Option<mld_model::text::TextModel>,
) -> Result<mld_history::History, Box<mld_history::OpenFailure>> {
    let settings = mld_history::IndexSettings {
        dir: index.dir.clone(),
        factory: index.factory.clone(),
        search_parameters: index.search_parameters.clone(),
        save_interval: index.save_interval,
        max_events: index.max_events,
    };
    let text = index
        .text
        .as_ref()
        .zip(text_model)
        .map(|(text, model)| (mld_history::TextSettings { dir: text.dir.clone(), max_events: text.max_events, observations: text.observations }, model));
    let history = mld_history::History::open_with_text(ingest_config, settings, embedder, text)?;
    if let Some(reason) = history.rebuilt() {
        warn!(index = %index.dir.display(), reason = %reason, "building the similarity index from the verified log");
    }
    Ok(history)
}

/// What the ingest task runs: the history (verify, embed, index), or verification alone
/// (with why the index is unavailable, when it was configured).
enum Verified {
    History(Box<mld_history::History>),
    Plain(Box<mld_ingest::Ingest>, Option<String>),
    /// Only for the instant of switching from `History` to `Plain` after an error.
    Switching,
}

impl Verified {
    /// Verification goes on without the index, which is unavailable for `reason`.
    /// Verification is the security job; the index is the analyst's tool: its absence is
    /// loud (here, and in every query's answer), never the end of verification.
    fn without_index(ingest_config: mld_ingest::IngestConfig, reason: String) -> anyhow::Result<Verified> {
        tracing::error!(error = %reason, "the similarity index is unavailable; verifying the log without it");
        let ingest = mld_ingest::Ingest::open(ingest_config).context("failed to open the ingest state")?;
        Ok(Verified::Plain(Box::new(ingest), Some(reason)))
    }

    /// Where reading stands (the file index and offset saved last), and the most lines a
    /// step reads.
    fn position(&self) -> Option<((u64, u64), usize)> {
        let ingest = match self {
            Verified::History(history) => history.ingest(),
            Verified::Plain(ingest, _) => ingest,
            Verified::Switching => return None,
        };
        ingest.checkpoint().map(|checkpoint| ((checkpoint.read_file_index, checkpoint.offset), ingest.max_batch_lines()))
    }

    /// One bounded read of the log (at most `max_batch_lines` lines); returns the lines read.
    fn step(&mut self, counters: &mut IngestCounters) -> anyhow::Result<u64> {
        let (lines, verified, quarantined, indexed, text_indexed) = match self {
            Verified::History(history) => match history.step() {
                Ok(stats) => {
                    if let Some(min_seq) = stats.rolled_over {
                        warn!(min_seq, "the similarity index was full (ingest.index-max-events): kept the newest half");
                    }
                    if stats.unreadable > 0 {
                        warn!(
                            events = stats.unreadable,
                            last = history.last_unreadable().unwrap_or_default(),
                            "verified events left out of the similarity index: their fields cannot be read"
                        );
                    }
                    (stats.lines, stats.verified, stats.quarantined, stats.indexed, stats.text_indexed)
                }
                // Reading or verifying the log failed: the task's own job; fail as before
                // (the supervisor restarts it; the index is intact).
                Err(mld_history::HistoryError::Ingest(error)) => return Err(anyhow::Error::from(error).context("failed to read the signed log")),
                Err(error) => {
                    // The index failed (a full disk, FAISS): go on verifying without it. The
                    // records of this step were verified but not indexed; at the next start
                    // the index is found behind the checkpoint and filled in from the log.
                    let reason = format!("{:#}", anyhow::Error::from(error));
                    tracing::error!(error = %reason, "the similarity index failed; verifying the log without it");
                    if let Verified::History(history) = std::mem::replace(self, Verified::Switching) {
                        *self = Verified::Plain(Box::new(history.into_ingest()), Some(reason));
                    }
                    return Ok(1);
                }
            },
            Verified::Plain(ingest, _) => {
                let stats = ingest.poll(&mut |_record| {}).context("failed to read the signed log")?;
                (stats.lines, stats.delivered, stats.quarantined, 0, 0)
            }
            Verified::Switching => (0, 0, 0, 0, 0),
        };
        counters.events_verified += verified;
        counters.events_quarantined += quarantined;
        counters.events_indexed += indexed;
        counters.events_text_indexed += text_indexed;
        if quarantined > 0 {
            let reasons = match self {
                Verified::History(history) => history.ingest().rejected_by_reason().clone(),
                Verified::Plain(ingest, _) => ingest.rejected_by_reason().clone(),
                Verified::Switching => Default::default(),
            };
            warn!(lines = quarantined, reasons = ?reasons, "log lines quarantined");
        }
        Ok(lines)
    }

    /// Saves the index (then the checkpoint). A failure is logged: the next start finds
    /// the index behind the checkpoint, or the checkpoint where it was, and catches up.
    fn save(&mut self) {
        if let Verified::History(history) = self {
            if let Err(error) = history.save() {
                tracing::error!(error = %format!("{:#}", anyhow::Error::from(error)), "failed to save the similarity index at shutdown");
            }
        }
    }

    fn answer(&mut self, query: &mld_history::Query, text_off: Option<&str>) -> mld_history::Reply {
        match self {
            Verified::History(history) if matches!(query, mld_history::Query::Ask { .. }) => {
                let caught_up = history.caught_up();
                let Some(text) = history.text_index_mut() else {
                    return mld_history::Reply::Error(text_off.unwrap_or("the text index is unavailable").to_string());
                };
                let now_us = crate::query_server::now_us();
                match mld_history::answer_ask(text, query, now_us, crate::query_server::local_utc_offset_secs(now_us)) {
                    Ok(mut answer) => {
                        answer.caught_up = Some(caught_up);
                        mld_history::Reply::Answer(Box::new(answer))
                    }
                    Err(error) => mld_history::Reply::Error(format!("{:#}", anyhow::Error::from(error))),
                }
            }
            Verified::History(history) => {
                let caught_up = history.caught_up();
                let (index, embedder) = history.parts();
                match mld_history::answer(index, Some(embedder), query) {
                    Ok(mut answer) => {
                        answer.caught_up = Some(caught_up);
                        mld_history::Reply::Answer(Box::new(answer))
                    }
                    Err(error) => mld_history::Reply::Error(format!("{:#}", anyhow::Error::from(error))),
                }
            }
            Verified::Plain(_, None) => mld_history::Reply::Error("the similarity index is off on this appliance (ingest.index = false)".to_string()),
            Verified::Plain(_, Some(reason)) => mld_history::Reply::Error(format!("the similarity index is unavailable: {reason}")),
            Verified::Switching => mld_history::Reply::Error("the similarity index is unavailable".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_left_to_read_counts_the_rest_of_the_file_and_every_later_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, bytes) in [("events-n-0.jsonl", 100), ("events-n-1.jsonl", 300), ("events-n-2.jsonl", 50), ("events-m-3.jsonl", 999)] {
            std::fs::write(dir.path().join(name), vec![b'x'; bytes]).expect("write");
        }
        let catch_up = CatchUp::new(dir.path().to_path_buf(), "n".to_string());
        assert_eq!(catch_up.left((1, 120)), 180 + 50);
        assert_eq!(catch_up.left((0, 0)), 450);
        assert_eq!(catch_up.left((3, 0)), 0);
    }
    use mld_eventlog::{CheckpointSigningKey, LogKey, LogWriter, WriterConfig};

    #[test]
    fn one_step_reads_at_most_a_batch_and_the_steps_reach_every_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log_dir, state_dir) = (dir.path().join("log"), dir.path().join("state"));
        std::fs::create_dir(&log_dir).expect("log dir");
        std::fs::create_dir(&state_dir).expect("state dir");
        let key = LogKey::create(&dir.path().join("log.key")).expect("key");
        let signer = CheckpointSigningKey::create(&dir.path().join("signing.key")).expect("signing key");
        let public_key = signer.public_key();
        let config = WriterConfig { rotate_daily: false, checkpoint_every_records: 1000, ..WriterConfig::new(log_dir.clone(), "n".to_string()) };
        let mut writer = LogWriter::open_signed(config, key, signer).expect("writer");
        for n in 0..35 {
            writer.append_json(&format!(r#"{{"type":"event","action":"alert","n":{n}}}"#), None).expect("append");
        }
        writer.checkpoint().and_then(|()| writer.sync()).expect("checkpoint");
        let mut ingest_config = mld_ingest::IngestConfig::new(log_dir, state_dir, "n".to_string(), vec![public_key]);
        ingest_config.max_batch_lines = 10;
        let mut source = Verified::Plain(Box::new(mld_ingest::Ingest::open(ingest_config).expect("ingest")), None);
        let mut counters = IngestCounters::default();
        let mut steps = 0;
        loop {
            let lines = source.step(&mut counters).expect("step");
            assert!(lines <= 10, "one step read {lines} lines");
            if lines == 0 {
                break;
            }
            steps += 1;
            assert!(steps < 100, "the steps never end");
        }
        assert_eq!(counters.events_verified, 35, "every record verified");
        assert!(steps >= 4, "{steps} steps for 35 records and a header and a checkpoint at 10 lines a step");
        assert_eq!(counters.events_quarantined, 0);
    }
}
