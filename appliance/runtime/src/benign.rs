//! `mldefender block del PREFIX --benign`: the operator releases a source and marks it
//! benign. The path of the request: the CLI (root) removes the deny entry itself, then
//! asks the supervisor (`supervisor.sock`, [`ControlRequest::MarkBenign`]); the
//! supervisor passes it on to the detect task on its control channel
//! ([`SupervisorMessage::MarkBenign`]) and answers the CLI with the detect task's reply
//! ([`TaskMessage::MarkedBenign`]) or why there is none. The detect task records the
//! exemption (`mld_detect::exempt`: its responder refuses to block the prefix until it
//! expires), keeps it in `<detect.state-dir>/benign.json` (written atomically) and logs a
//! `release-benign` event.
//!
//! Here: the file, the detect task's side ([`BenignStore`]), the supervisor's side
//! ([`Releases`]) and the CLI's ([`release`]).

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mld_detect::exempt::{Exemption, Exemptions};
use mld_ipc::{ControlRequest, MarkBenignAnswer, SupervisorMessage, TaskMessage};
use mld_supervisor::machine::Machine;
use mld_types::IpPrefix;
use serde_json::{json, Map, Value};
use tracing::{info, warn};

use crate::detection::Detection;

/// The file of the exemptions in `detect.state-dir`.
pub const EXEMPTIONS_FILE: &str = "benign.json";
/// The `action` of the event that records a release.
pub const RELEASE_ACTION: &str = "release-benign";
/// The file is read only up to this size (1,024 exemptions take about 300 KiB).
const MAX_FILE_BYTES: u64 = 1 << 20;
const FORMAT: u64 = 1;
/// How long the supervisor waits for the detect task's answer.
const ANSWER_DEADLINE: Duration = Duration::from_secs(3);
/// Requests waiting for the detect task's answer at most; more are refused.
const PENDING_MAX: usize = 8;

/// Reads the exemptions saved in `dir` (none when there is no file). A file that is too
/// large or not an exemptions file is an error naming it: never silently reset.
pub fn load(dir: &Path, now_ns: u64) -> Result<Exemptions, String> {
    let path = dir.join(EXEMPTIONS_FILE);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Exemptions::default()),
        Err(error) => return Err(format!("failed to open `{}`: {error}", path.display())),
    };
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text).map_err(|error| format!("failed to read `{}`: {error}", path.display()))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("`{}` is larger than {} KiB: not an exemptions file", path.display(), MAX_FILE_BYTES >> 10));
    }
    parse(&text, now_ns).map_err(|error| format!("`{}` is not a valid exemptions file: {error}", path.display()))
}

fn parse(text: &str, now_ns: u64) -> Result<Exemptions, String> {
    let value: Value = serde_json::from_str(text).map_err(|error| error.to_string())?;
    if value.get("format").and_then(Value::as_u64) != Some(FORMAT) {
        return Err(format!("format is not {FORMAT}"));
    }
    let entries = value.get("exemptions").and_then(Value::as_array).ok_or("no `exemptions` list")?;
    let mut parsed = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let number = |key: &str| entry.get(key).and_then(Value::as_u64).ok_or_else(|| format!("exemption {index}: `{key}` is not a number"));
        let prefix = entry.get("prefix").and_then(Value::as_str).ok_or_else(|| format!("exemption {index}: no `prefix`"))?;
        parsed.push(Exemption {
            prefix: prefix.parse::<IpPrefix>().map_err(|error| format!("exemption {index}: {error}"))?,
            marked_at_ns: number("marked_at_us")?.saturating_mul(1000),
            until_ns: number("until_us")?.saturating_mul(1000),
            reason: entry.get("reason").and_then(Value::as_str).ok_or_else(|| format!("exemption {index}: no `reason`"))?.to_string(),
        });
    }
    Exemptions::from_entries(parsed, now_ns).map_err(|error| error.to_string())
}

/// Writes the exemptions to `dir` atomically: a temporary file, fsync, rename, fsync of
/// the directory.
pub fn save(dir: &Path, exemptions: &Exemptions) -> Result<PathBuf, String> {
    let entries: Vec<Value> = exemptions
        .iter()
        .map(|entry| {
            json!({"prefix": entry.prefix.to_string(), "marked_at_us": entry.marked_at_ns / 1000, "until_us": entry.until_ns / 1000, "reason": entry.reason})
        })
        .collect();
    let text = json!({"format": FORMAT, "exemptions": entries}).to_string();
    let path = dir.join(EXEMPTIONS_FILE);
    mld_supervisor::files::write_atomically(&path, text.as_bytes(), 0o600).map_err(|error| format!("failed to write `{}`: {error}", path.display()))?;
    Ok(path)
}

/// The detect task's side: the exemptions' directory, and the file's error when it could
/// not be read at start (then no exemption is recorded, so the file is not overwritten,
/// until it is repaired or removed and the task restarted).
#[derive(Debug)]
pub struct BenignStore {
    dir: PathBuf,
    broken: Option<String>,
}

impl BenignStore {
    /// Reads the saved exemptions into the detector's responder.
    pub fn open(dir: &Path, detection: &mut Detection, now_ns: u64) -> BenignStore {
        let broken = match load(dir, now_ns) {
            Ok(exemptions) => {
                if !exemptions.is_empty() {
                    info!(exemptions = exemptions.len(), file = %dir.join(EXEMPTIONS_FILE).display(), "restored the sources the operator marked benign");
                }
                detection.detector.responder_mut().set_exemptions(exemptions);
                None
            }
            Err(error) => {
                tracing::error!(error = %error, "the operator's exemptions cannot be read: none apply, and none are recorded until the file is repaired or removed");
                Some(error)
            }
        };
        BenignStore { dir: dir.to_path_buf(), broken }
    }

    /// Applies a request: the exemption is saved first, then given to the responder;
    /// returns its description and the event record of the release.
    pub fn apply(
        &mut self,
        detection: &mut Detection,
        prefix: IpPrefix,
        reason: &str,
        for_secs: u64,
        now_ns: u64,
    ) -> Result<(String, Map<String, Value>), String> {
        if let Some(broken) = &self.broken {
            return Err(format!("{broken}; no exemption is recorded until it is repaired or removed (and the detect task restarted)"));
        }
        let duration = Duration::from_secs(for_secs);
        let mut updated = detection.detector.responder().exemptions().clone();
        let exemption = updated.add(prefix, reason, duration, now_ns).map_err(|error| error.to_string())?;
        save(&self.dir, &updated)?;
        detection.detector.responder_mut().mark_benign(prefix, reason, duration, now_ns).map_err(|error| error.to_string())?;
        let description = exemption.describe();
        info!(prefix = %prefix, reason = %reason, for_secs, "the operator released a source and marked it benign");
        Ok((description, release_record(detection, &exemption)))
    }
}

/// The signed-log record of a release: a valid `event` record with `action`
/// "release-benign", category "benign", the prefix's address as `src_ip` (no flow: the
/// other end unspecified, protocol 0), the time of the release, and in `provenance` the
/// prefix, the operator's reason and the expiry.
pub fn release_record(detection: &Detection, exemption: &Exemption) -> Map<String, Value> {
    let provenance = format!(
        "released by the operator (mldefender block del --benign): {}; the detect task refuses to block a source it covers until then (its refusals name the exemption)",
        exemption.describe()
    );
    let at = exemption.marked_at_ns;
    let id_text = format!("{RELEASE_ACTION}|{}|{}", exemption.prefix, exemption.marked_at_ns);
    let mut record = detection.flowless_record(RELEASE_ACTION, exemption.prefix.addr(), (at, at), provenance, &id_text);
    record.insert("category".to_string(), "benign".into());
    record
}

/// `action` of the record of a plain `block del`.
pub const UNBLOCK_ACTION: &str = "unblock";

/// The detect task's side of a plain `block del PREFIX` (the CLI removed the deny entry):
/// the responder forgets the blocks `prefix` covers, the fleet task is told to withdraw
/// this node's shared blocks it covers, and the record says so. Returns what to tell the
/// operator and the record.
pub fn released(
    detection: &mut Detection,
    prefix: IpPrefix,
    fleet: Option<&mut crate::task::shared::FleetLink>,
    now_ns: u64,
) -> (String, serde_json::Map<String, serde_json::Value>) {
    let forgotten = detection.detector.release(prefix);
    let shared = fleet.is_some();
    if let Some(link) = fleet {
        link.withdraw(prefix);
    }
    let description = format!("the detect task forgot {forgotten} block(s) of {prefix}{}", if shared { " and withdraws them from the fleet" } else { "" });
    let provenance = format!("the operator removed the deny entry of {prefix} (mldefender block del): {description}");
    let record = detection.flowless_record(UNBLOCK_ACTION, prefix.addr(), (now_ns, now_ns), provenance, &format!("{UNBLOCK_ACTION}|{prefix}|{now_ns}"));
    (description, record)
}

/// The supervisor's side: requests passed on to the detect task, waiting for its answer.
#[derive(Debug, Default)]
pub struct Releases {
    next_id: u64,
    pending: Vec<(u64, UnixStream, Instant)>,
}

impl Releases {
    /// Passes a request (made with its id) on to the detect task, or answers at once why
    /// it cannot be.
    pub fn request(&mut self, machine: &mut Machine, mut stream: UnixStream, request: impl FnOnce(u64) -> SupervisorMessage, now: Instant) {
        if self.pending.len() >= PENDING_MAX {
            answer(&mut stream, Err(format!("{PENDING_MAX} requests are already waiting for the detect task; try again")));
            return;
        }
        self.next_id += 1;
        let id = self.next_id;
        match machine.send_to_task(mld_config::TaskKind::Detect, &request(id)) {
            Ok(()) => self.pending.push((id, stream, now + ANSWER_DEADLINE)),
            Err(error) => answer(&mut stream, Err(error)),
        }
    }

    /// Answers the requests the detect task answered, and those it did not answer in time.
    pub fn poll(&mut self, machine: &mut Machine, now: Instant) {
        for reply in machine.take_replies() {
            let (TaskMessage::MarkedBenign { id, result } | TaskMessage::Released { id, result }) = reply else { continue };
            if let Some(index) = self.pending.iter().position(|(pending, _, _)| *pending == id) {
                let (_, mut stream, _) = self.pending.swap_remove(index);
                answer(&mut stream, result);
            }
        }
        self.pending.retain_mut(|(_, stream, deadline)| {
            if now < *deadline {
                return true;
            }
            answer(stream, Err(format!("the detect task did not answer within {} s", ANSWER_DEADLINE.as_secs())));
            false
        });
    }
}

fn answer(stream: &mut UnixStream, result: Result<String, String>) {
    if let Err(error) = mld_ipc::write_frame(stream, &MarkBenignAnswer { result }) {
        warn!(error = %error, "failed to answer a mark-benign request");
    }
}

/// What `block del PREFIX --benign` did: the deny entry (removed, not there, or the
/// error) and the exemption (its description, or why it was not recorded).
#[derive(Debug)]
pub struct Release {
    pub unblocked: Result<bool, String>,
    pub exemption: Result<String, String>,
}

impl Release {
    /// What to tell the operator: (what was done, the errors).
    pub fn report(&self, prefix: IpPrefix) -> (Vec<String>, Vec<String>) {
        let (mut said, mut errors) = (Vec::new(), Vec::new());
        match &self.unblocked {
            Ok(true) => said.push(format!("unblocked {prefix}")),
            Ok(false) => said.push(format!("{prefix} was not in the deny list")),
            Err(error) => errors.push(format!("the deny entry of {prefix} was not removed: {error}")),
        }
        match &self.exemption {
            Ok(description) => said.push(format!("{prefix} {description}")),
            Err(error) => errors.push(format!("the exemption of {prefix} was NOT recorded: {error}")),
        }
        (said, errors)
    }

    /// The deny entry is gone (or was not there) and the exemption is recorded.
    pub fn succeeded(&self) -> bool {
        self.unblocked.is_ok() && self.exemption.is_ok()
    }
}

/// The CLI's side: removes the deny entry of `prefix` from the pinned maps under
/// `maps_dir` (whatever happens next), then asks the supervisor under `runtime_dir` to
/// record the exemption.
pub fn release(maps_dir: &Path, runtime_dir: &Path, prefix: IpPrefix, reason: &str, for_secs: u64) -> Release {
    let unblocked = mld_capture::PinnedMaps::open(maps_dir).and_then(|mut maps| maps.deny_del(&prefix)).map_err(|error| crate::error_chain(&error));
    let path = runtime_dir.join(crate::supervise::STATUS_SOCKET);
    let exemption = UnixStream::connect(&path)
        .map_err(|error| format!("no supervisor answers on `{}` ({error})", path.display()))
        .and_then(|stream| ask(stream, &ControlRequest::MarkBenign { prefix, reason: reason.to_string(), for_secs }));
    Release { unblocked, exemption }
}

/// The CLI's side of a plain `block del` (the deny entry removed already): tells the
/// running supervisor under `runtime_dir`, whose detect task forgets the blocks `prefix`
/// covers and withdraws them from the fleet. `Ok(None)`: no supervisor runs there (a
/// standalone `mldefender capture`, or none at all); `Ok(Some(what))`: what it did.
pub fn tell_released(runtime_dir: &Path, prefix: IpPrefix) -> Result<Option<String>, String> {
    let path = runtime_dir.join(crate::supervise::STATUS_SOCKET);
    let stream = match UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(error) if matches!(error.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => return Ok(None),
        Err(error) => return Err(format!("failed to reach the supervisor on `{}`: {error}", path.display())),
    };
    ask(stream, &ControlRequest::Release { prefix }).map(Some)
}

/// Sends one request to the supervisor and waits for its answer (the detect task's).
fn ask(mut stream: UnixStream, request: &ControlRequest) -> Result<String, String> {
    stream.set_read_timeout(Some(ANSWER_DEADLINE + Duration::from_secs(2))).map_err(|error| error.to_string())?;
    mld_ipc::write_frame(&mut stream, request).map_err(|error| format!("failed to ask the supervisor: {error}"))?;
    match mld_ipc::read_frame::<MarkBenignAnswer>(&mut stream) {
        Ok(Some(answer)) => answer.result,
        Ok(None) => Err("the supervisor closed the connection without an answer".to_string()),
        Err(error) => Err(format!("failed to read the supervisor's answer: {error}")),
    }
}

/// What `mldefender block explain` says of the operator's exemption of `address` (read
/// from `<detect.state-dir>/benign.json`, now).
pub fn explain_line(state_dir: &Path, address: std::net::IpAddr) -> String {
    let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_nanos() as u64);
    match load(state_dir, now_ns) {
        Ok(exemptions) => match exemptions.covering(address, now_ns) {
            Some(exemption) => format!("exemption: {} (not blocked again until then)", exemption.describe()),
            None => "exemption: none (not marked benign by the operator, or expired)".to_string(),
        },
        Err(error) => format!("exemption: unknown ({error})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn exemptions_survive_a_save_and_load_and_expired_ones_are_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(load(dir.path(), 0).expect("no file is no exemptions").is_empty());
        let mut exemptions = Exemptions::default();
        exemptions.add("10.66.2.2/32".parse().expect("prefix"), "lab \"scanner\"", Duration::from_secs(60), 100 * SECOND).expect("add");
        exemptions.add("2001:db8::/64".parse().expect("prefix"), "", Duration::from_secs(10), 100 * SECOND).expect("add");
        let path = save(dir.path(), &exemptions).expect("save");
        assert_eq!(path, dir.path().join(EXEMPTIONS_FILE));
        assert_eq!(load(dir.path(), 101 * SECOND).expect("load"), exemptions);
        let later = load(dir.path(), 120 * SECOND).expect("load");
        assert_eq!(later.iter().map(|entry| entry.prefix.to_string()).collect::<Vec<_>>(), vec!["10.66.2.2/32"]);
        assert!(!dir.path().join(format!(".{EXEMPTIONS_FILE}.tmp")).exists(), "the temporary file was renamed");
    }

    #[test]
    fn a_corrupt_or_oversized_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(EXEMPTIONS_FILE);
        for (text, says) in [
            ("{not json".to_string(), "not a valid exemptions file"),
            (r#"{"format":2,"exemptions":[]}"#.to_string(), "format is not 1"),
            (r#"{"format":1,"exemptions":[{"prefix":"10.1.1.1/33","marked_at_us":0,"until_us":9,"reason":""}]}"#.to_string(), "exemption 0"),
            (r#"{"format":1,"exemptions":[{"prefix":"10.1.1.1/32","until_us":9,"reason":""}]}"#.to_string(), "`marked_at_us` is not a number"),
            (" ".repeat(MAX_FILE_BYTES as usize + 1), "larger than 1024 KiB"),
        ] {
            std::fs::write(&path, &text).expect("write");
            let error = load(dir.path(), 0).expect_err("refused");
            assert!(error.contains(&path.display().to_string()) && error.contains(says), "{error}");
        }
    }

    #[test]
    fn without_a_detect_task_the_supervisor_answers_at_once_why() {
        let config = mld_config::Config::default();
        let mut machine = Machine::new(mld_supervisor::machine::Settings::new(&config, String::new()), Vec::new(), Instant::now());
        let (supervisor_end, mut cli_end) = UnixStream::pair().expect("pair");
        let mut releases = Releases::default();
        let prefix = "10.66.2.2/32".parse().expect("prefix");
        releases.request(&mut machine, supervisor_end, |id| SupervisorMessage::Release { id, prefix }, Instant::now());
        let answer: MarkBenignAnswer = mld_ipc::read_frame(&mut cli_end).expect("read").expect("an answer");
        assert_eq!(answer.result, Err("the detect task is not enabled".to_string()));
        assert!(releases.pending.is_empty());
    }

    #[test]
    fn more_exemptions_than_the_bound_in_the_file_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entries: Vec<Value> = (0..=mld_detect::exempt::MAX_EXEMPTIONS)
            .map(|i| json!({"prefix": format!("10.{}.{}.1/32", i / 256, i % 256), "marked_at_us": 0, "until_us": 1_000_000, "reason": ""}))
            .collect();
        std::fs::write(dir.path().join(EXEMPTIONS_FILE), json!({"format": 1, "exemptions": entries}).to_string()).expect("write");
        let error = load(dir.path(), 0).expect_err("too many");
        assert!(error.contains("full"), "{error}");
    }
}
