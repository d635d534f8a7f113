//! `mldefender log export --format eve [--follow]`: the signed log's verified event
//! records as Suricata-EVE-shaped JSON, one object per line, for SIEMs and other tools that
//! read EVE (docs/operations.md, "SIEM export", has the field mapping).
//!
//! Records are read and verified exactly as the ingest task does (`mld_ingest::Ingest`:
//! every record covered by a validly signed checkpoint, in chain order, no replay): only
//! verified records are exported, each with its chain position (`mldefender.seq`, the
//! file and offset). A line that fails is quarantined in the state directory with its
//! reason, counted on stderr, and never exported.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mld_eventlog::{CheckpointPublicKey, CheckpointSigningKey};
use mld_ingest::{Ingest, IngestConfig, VerifiedRecord};
use mld_runtime::Exit;
use serde_json::{json, Map, Value};
use sha2::Digest;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Suricata EVE JSON (event_type alert, flow or mldefender).
    Eve,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Configuration file: the log's directory and node (`[log]`), and the checkpoint
    /// signing key whose public half verifies it.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "eve")]
    format: ExportFormat,
    /// Keep following the log: records are exported as their checkpoint is written (within
    /// log.checkpoint-interval-ms), until SIGINT or SIGTERM.
    #[arg(long)]
    follow: bool,
    /// The checkpoint public key file (base64; `mldefender log public-key`) instead of the
    /// configuration's signing key: export needs no secret.
    #[arg(long = "public-key", value_name = "FILE")]
    public_key: Option<PathBuf>,
    /// A directory to keep the export's position in (and its quarantine): a later export
    /// with the same directory resumes after the last record exported. Default: a
    /// temporary one (everything from the oldest file kept).
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Only decisions (alerts), not every flow's observation.
    #[arg(long)]
    decisions_only: bool,
}

/// What was exported, for the summary line.
#[derive(Debug, Default)]
struct Tally {
    verified: u64,
    alerts: u64,
    flows: u64,
    other: u64,
    quarantined: u64,
}

pub fn export(args: &ExportArgs) -> anyhow::Result<Exit> {
    let config = match crate::load::config(Some(&args.config)) {
        Ok(config) => config,
        Err(exit) => return Ok(exit),
    };
    let key = match &args.public_key {
        Some(path) => CheckpointPublicKey::load(path),
        None => CheckpointSigningKey::load(&config.log.signing_key_file).map(|key| key.public_key()),
    };
    let key = match key {
        Ok(key) => key,
        Err(error) => {
            eprintln!("mldefender: error: {error}");
            return Ok(Exit::Config);
        }
    };
    let temporary;
    let state_dir = match &args.state {
        Some(dir) => dir.clone(),
        None => {
            temporary = tempfile::tempdir().context("failed to create a temporary state directory")?;
            temporary.path().to_path_buf()
        }
    };
    let mut ingest_config = IngestConfig::new(config.log.dir.clone(), state_dir.clone(), config.log.node.clone(), vec![key]);
    // The chain orders the records; an export reads history, however old.
    ingest_config.max_age_us = u64::MAX;
    let mut ingest = Ingest::open(ingest_config).with_context(|| format!("failed to open the log `{}` for export", config.log.dir.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("failed to install the signal handlers")?;
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut tally = Tally::default();
    let mut failed: Option<std::io::Error> = None;
    // A signal stops it between batches, also while there is more to read.
    while !stop.load(Ordering::Relaxed) {
        let stats = ingest
            .read(&mut |record| {
                tally.verified += 1;
                if failed.is_some() {
                    return;
                }
                let Some(eve) = eve(&record) else { return };
                let kind = eve["event_type"].as_str().unwrap_or_default();
                if args.decisions_only && kind != "alert" {
                    return;
                }
                match kind {
                    "alert" => tally.alerts += 1,
                    "flow" => tally.flows += 1,
                    _ => tally.other += 1,
                }
                if let Err(error) = serde_json::to_writer(&mut out, &eve).map_err(std::io::Error::from).and_then(|()| out.write_all(b"\n")) {
                    failed = Some(error);
                }
            })
            .with_context(|| format!("failed to read the log `{}`", config.log.dir.display()))?;
        tally.quarantined += stats.quarantined;
        if let Some(error) = failed.take().or_else(|| out.flush().err()) {
            // Nothing of this batch is saved as exported: a later export with the same
            // --state writes it again.
            if error.kind() == std::io::ErrorKind::BrokenPipe {
                // The reader went away (`| head`): not an error of ours.
                return Ok(Exit::Success);
            }
            return Err(anyhow::Error::from(error).context("failed to write the export"));
        }
        // Written out: only now is the position saved.
        ingest.commit().with_context(|| format!("failed to save the export's position in `{}`", state_dir.display()))?;
        if stats.lines > 0 {
            continue;
        }
        if !args.follow {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let reasons: Vec<String> = ingest.rejected_by_reason().iter().map(|(reason, count)| format!("{reason} {count}")).collect();
    eprintln!(
        "mldefender log export: {} records verified; exported {} alerts, {} flows, {} other; {} quarantined{}{}",
        tally.verified,
        tally.alerts,
        tally.flows,
        tally.other,
        tally.quarantined,
        if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(", ")) },
        if tally.quarantined > 0 { format!(", kept in `{}`", state_dir.join("quarantine.jsonl").display()) } else { String::new() }
    );
    Ok(if tally.quarantined > 0 { Exit::Data } else { Exit::Success })
}

/// The decisions exported as EVE alerts, and their signature ids' base.
const ALERT_ACTIONS: [&str; 5] = ["block", "would-block", "alert", "refused", "breaker-open"];
const CATEGORIES: [&str; 5] = ["flood", "scan", "brute-force", "slow", "other"];
const SIGNATURE_ID_BASE: u64 = 9_200_000;

/// One verified record as an EVE object; `None` for records that are not events
/// (headers, checkpoints, recovery and retention records).
pub fn eve(record: &VerifiedRecord) -> Option<Value> {
    if record.kind != "event" {
        return None;
    }
    let fields = record.fields();
    let text = |name: &str| fields.get(name).and_then(Value::as_str);
    let number = |name: &str| fields.get(name).and_then(Value::as_f64);
    let action = text("action").unwrap_or("observe");
    let category = text("category").unwrap_or("other");
    let has_flow = text("community_id").is_some() && fields.get("src_port").is_some_and(|port| !port.is_null());
    let event_type = match action {
        "observe" if has_flow => "flow",
        action if has_flow && ALERT_ACTIONS.contains(&action) => "alert",
        _ => "mldefender",
    };
    let mut eve = Map::new();
    eve.insert("timestamp".into(), fields.get("ts_us").and_then(Value::as_u64).map_or(Value::Null, |us| suricata_time(us).into()));
    if has_flow {
        eve.insert("flow_id".into(), flow_id(text("community_id").unwrap_or_default(), fields.get("flow_first_seen_us")).into());
    }
    eve.insert("event_type".into(), event_type.into());
    eve.insert("host".into(), record.node.clone().into());
    eve.insert("src_ip".into(), fields.get("src_ip").cloned().unwrap_or(Value::Null));
    eve.insert("dest_ip".into(), fields.get("dst_ip").cloned().unwrap_or(Value::Null));
    if has_flow {
        let protocol = fields.get("protocol").and_then(Value::as_u64).unwrap_or(0);
        // Ports only where the protocol has them (Suricata leaves them out for ICMP).
        if matches!(protocol, 6 | 17 | 132) {
            eve.insert("src_port".into(), fields.get("src_port").cloned().unwrap_or(Value::Null));
            eve.insert("dest_port".into(), fields.get("dst_port").cloned().unwrap_or(Value::Null));
        }
        eve.insert("proto".into(), proto_name(protocol, text("protocol_name")).into());
        eve.insert("community_id".into(), text("community_id").unwrap_or_default().into());
        let first = fields.get("flow_first_seen_us").and_then(Value::as_u64);
        let last = fields.get("flow_last_seen_us").and_then(Value::as_u64);
        let end_reason = text("flow_end_reason").unwrap_or("");
        eve.insert(
            "flow".into(),
            json!({
                "pkts_toserver": number("cic_total_fwd_packets").unwrap_or(0.0) as u64,
                "pkts_toclient": number("cic_total_backward_packets").unwrap_or(0.0) as u64,
                "bytes_toserver": fields.get("fwd_ip_bytes").and_then(Value::as_u64).unwrap_or(0),
                "bytes_toclient": fields.get("bwd_ip_bytes").and_then(Value::as_u64).unwrap_or(0),
                "start": first.map(suricata_time),
                "end": last.map(suricata_time),
                "age": match (first, last) { (Some(first), Some(last)) => last.saturating_sub(first) / 1_000_000, _ => 0 },
                "state": if end_reason == "active" { "established" } else { "closed" },
                "reason": match end_reason { "active" => "forced", "end-of-input" | "shutdown" => "shutdown", _ => "timeout" },
                "alerted": event_type == "alert",
            }),
        );
    }
    if event_type == "alert" {
        let action_index = ALERT_ACTIONS.iter().position(|name| *name == action).unwrap_or(0) as u64;
        let category_index = CATEGORIES.iter().position(|name| *name == category).unwrap_or(CATEGORIES.len() - 1) as u64;
        eve.insert(
            "alert".into(),
            json!({
                "action": if action == "block" { "blocked" } else { "allowed" },
                "gid": 1,
                "signature_id": SIGNATURE_ID_BASE + 100 * action_index + category_index,
                "rev": 1,
                "signature": format!("ML-Defender {action}: {category}"),
                "category": class_type(category),
                "severity": match action { "block" => 1, "would-block" | "alert" => 2, _ => 3 },
            }),
        );
    }
    let mut own = Map::new();
    own.insert("node".into(), record.node.clone().into());
    own.insert("seq".into(), record.seq.into());
    own.insert("log_file".into(), record.file.file_name().map_or(String::new(), |name| name.to_string_lossy().into_owned()).into());
    own.insert("log_offset".into(), record.offset.into());
    for name in [
        "event_id",
        "action",
        "category",
        "score_fast",
        "score_model",
        "score_final",
        "authoritative_source",
        "block_ttl_secs",
        "escalation_step",
        "flow_end_reason",
        "ifindex",
        "provenance",
    ] {
        if let Some(value) = fields.get(name) {
            own.insert(name.into(), value.clone());
        }
    }
    eve.insert("mldefender".into(), Value::Object(own));
    Some(Value::Object(eve))
}

/// Suricata's timestamp: `2026-12-04T09:34:52.123456+0000`.
fn suricata_time(us: u64) -> String {
    let Ok(time) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000) else { return String::new() };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+0000",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second(),
        time.microsecond()
    )
}

/// A flow's id: stable for the flow (its Community ID and start), below 2^53 so that
/// JSON readers with doubles keep it exact.
fn flow_id(community_id: &str, first_seen: Option<&Value>) -> u64 {
    let mut hash = sha2::Sha256::new();
    hash.update(community_id.as_bytes());
    hash.update(first_seen.map(Value::to_string).unwrap_or_default().as_bytes());
    let digest = hash.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) >> 11
}

/// Suricata's protocol names.
fn proto_name(protocol: u64, name: Option<&str>) -> String {
    match protocol {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "IPv6-ICMP".into(),
        132 => "SCTP".into(),
        _ => name.map_or_else(|| protocol.to_string(), str::to_uppercase),
    }
}

/// The Suricata classification (classification.config) of a detection category.
fn class_type(category: &str) -> &'static str {
    match category {
        "scan" => "Detection of a Network Scan",
        "flood" | "slow" => "Detection of a Denial of Service Attack",
        "brute-force" => "Attempted User Privilege Gain",
        _ => "Misc activity",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: Value) -> VerifiedRecord {
        VerifiedRecord {
            node: "n1".into(),
            seq: 7,
            file: PathBuf::from("/var/log/events-n1-0.jsonl"),
            offset: 1234,
            kind: "event".into(),
            ts_us: None,
            line: fields.to_string(),
        }
    }

    #[test]
    fn a_block_becomes_a_blocked_alert_with_its_flow_and_chain_position() {
        let eve = eve(&record(json!({
            "type": "event", "ts_us": 1_795_618_593_528_897u64, "src_ip": "10.0.0.1", "src_port": 4000, "dst_ip": "10.0.0.2", "dst_port": 22,
            "protocol": 6, "protocol_name": "tcp", "community_id": "1:abc=", "flow_first_seen_us": 1_795_618_590_000_000u64,
            "flow_last_seen_us": 1_795_618_593_528_897u64, "flow_end_reason": "tcp-rst", "fwd_ip_bytes": 44, "bwd_ip_bytes": 40,
            "cic_total_fwd_packets": 2.0, "cic_total_backward_packets": 1.0, "action": "block", "category": "brute-force", "event_id": "ev-1"
        })))
        .expect("an event");
        assert_eq!(eve["event_type"], "alert");
        assert_eq!(eve["timestamp"], "2026-11-25T14:56:33.528897+0000");
        assert_eq!((eve["proto"].as_str(), eve["dest_port"].as_u64()), (Some("TCP"), Some(22)));
        assert_eq!(
            (eve["alert"]["action"].as_str(), eve["alert"]["severity"].as_u64(), eve["alert"]["signature_id"].as_u64()),
            (Some("blocked"), Some(1), Some(9_200_002))
        );
        assert_eq!((eve["flow"]["pkts_toserver"].as_u64(), eve["flow"]["age"].as_u64(), eve["flow"]["alerted"].as_bool()), (Some(2), Some(3), Some(true)));
        assert_eq!((eve["mldefender"]["seq"].as_u64(), eve["mldefender"]["log_file"].as_str()), (Some(7), Some("events-n1-0.jsonl")));
        assert!(eve["flow_id"].as_u64().expect("a flow id") < 1 << 53);
    }

    #[test]
    fn observations_are_flows_and_records_without_a_flow_are_our_own_type() {
        let flow = eve(&record(json!({"type": "event", "action": "observe", "protocol": 1, "src_port": 0, "community_id": "1:x="}))).expect("an event");
        assert_eq!(flow["event_type"], "flow");
        assert!(flow.get("src_port").is_none() && flow["proto"] == "ICMP");
        let unblock = eve(&record(json!({"type": "event", "action": "unblock", "src_ip": "10.0.0.1", "src_port": null}))).expect("an event");
        assert_eq!(unblock["event_type"], "mldefender");
        assert!(unblock.get("flow").is_none() && unblock.get("alert").is_none());
        let mut checkpoint = record(json!({"type": "checkpoint"}));
        checkpoint.kind = "checkpoint".into();
        assert!(eve(&checkpoint).is_none());
    }
}
