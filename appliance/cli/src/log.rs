//! `mldefender replay`, `mldefender log verify`, `mldefender log schema`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use mld_eventlog::{verify_paths, verify_paths_signed, CheckpointPublicKey, CheckpointSigningKey, LogKey};
use mld_runtime::Exit;

/// `mldefender replay`: the offline pipeline (`mld_runtime::replay`) on the captures.
pub fn replay(config_path: &Path, files: &[PathBuf]) -> anyhow::Result<Exit> {
    let (config, text) = match crate::load::config_with_text(config_path) {
        Ok(loaded) => loaded,
        Err(exit) => return Ok(exit),
    };
    let total = files.iter().map(|file| std::fs::metadata(file).map_or(0, |meta| meta.len())).sum();
    let mut progress = crate::progress::Progress::bytes("replay", total);
    let result = mld_runtime::replay::replay(&config, &text, files, &mut |done| progress.set(done));
    progress.finish();
    let summary = match result {
        Ok(summary) => summary,
        Err(mld_runtime::replay::ReplayError::Setup(error)) => {
            eprintln!("mldefender: error: {error:#}");
            return Ok(Exit::Config);
        }
        Err(mld_runtime::replay::ReplayError::Write(error)) => return Err(error),
    };
    for error in &summary.unreadable {
        eprintln!("mldefender: error: {error}");
    }
    eprintln!(
        "mldefender replay: {} events written to {} (seq {}..{}, node {}); {} decisions ({} blocks, {} alerts, {} refused); {}",
        summary.events,
        config.log.dir.display(),
        summary.first_seq,
        summary.last_seq,
        config.log.node,
        summary.decisions,
        summary.blocks,
        summary.alerts,
        summary.refused,
        summary.model_description
    );
    Ok(if summary.unreadable.is_empty() { Exit::Success } else { Exit::Data })
}

/// Every key file, or the first error printed and exit 64.
fn load_keys<K, E: std::fmt::Display>(paths: &[PathBuf], load: impl Fn(&Path) -> Result<K, E>) -> Result<Vec<K>, Exit> {
    paths
        .iter()
        .map(|path| {
            load(path).map_err(|error| {
                eprintln!("mldefender: error: {error}");
                Exit::Config
            })
        })
        .collect()
}

/// `log verify --public-key`: by the signed checkpoints only.
pub fn verify_signed(paths: &[PathBuf], key_files: &[PathBuf], anchors: Option<&Path>) -> anyhow::Result<Exit> {
    let keys = match load_keys(key_files, CheckpointPublicKey::load) {
        Ok(keys) => keys,
        Err(exit) => return Ok(exit),
    };
    match verify_paths_signed(paths, &keys) {
        Ok(summary) => {
            println!(
                "ok: node {}, {} files, {} records covered by {} signed checkpoints, seq {}..{}",
                summary.node, summary.files, summary.records, summary.checkpoints, summary.first_seq, summary.last_seq
            );
            check_anchors(paths, anchors, &summary.node, summary.first_seq, summary.last_seq)
        }
        Err(failure) => {
            println!("FAILED: {failure}");
            Ok(Exit::Failure)
        }
    }
}

/// `log public-key`: the checkpoint public key, base64.
pub fn public_key(config_path: Option<&Path>, signing_key_path: Option<&Path>) -> anyhow::Result<Exit> {
    let path = match (signing_key_path, config_path) {
        (Some(path), _) => path.to_path_buf(),
        (None, config_path) => {
            let config = match crate::load::config(config_path) {
                Ok(config) => config,
                Err(exit) => return Ok(exit),
            };
            config.log.signing_key_file.clone()
        }
    };
    match CheckpointSigningKey::load(&path) {
        Ok(key) => {
            println!("{}", key.public_key().to_base64());
            Ok(Exit::Success)
        }
        Err(error) => {
            eprintln!("mldefender: error: {error}");
            Ok(Exit::Config)
        }
    }
}

pub fn verify(paths: &[PathBuf], key_files: &[PathBuf], anchors: Option<&Path>) -> anyhow::Result<Exit> {
    let keys = match load_keys(key_files, LogKey::load) {
        Ok(keys) => keys,
        Err(exit) => return Ok(exit),
    };
    match verify_paths(paths, &keys) {
        Ok(summary) => {
            println!(
                "ok: node {}, {} files, {} records, seq {}..{}{}",
                summary.node,
                summary.files,
                summary.records,
                summary.first_seq,
                summary.last_seq,
                match (summary.from_genesis, summary.removed_through_index) {
                    (true, _) => String::new(),
                    (false, Some(index)) => format!(" (files up to index {index} removed by retention, on record)"),
                    (false, None) => " (from a later file: earlier files not given)".to_string(),
                }
            );
            check_anchors(paths, anchors, &summary.node, summary.first_seq, summary.last_seq)
        }
        Err(failure) => {
            println!("FAILED: {failure}");
            Ok(Exit::Failure)
        }
    }
}

pub fn schema(config: Option<&Path>) -> anyhow::Result<Exit> {
    let config = match crate::load::config(config) {
        Ok(config) => config,
        Err(exit) => return Ok(exit),
    };
    let windows_secs: Vec<u64> = config.windows.lengths.iter().map(|length| length.as_secs()).collect();
    println!("{}", serde_json::to_string_pretty(&mld_eventlog::json_schema(&windows_secs)).context("failed to encode the schema")?);
    Ok(Exit::Success)
}

/// `log verify --anchors FILE`: the verified log against the heads its node published
/// (`etcdctl get --prefix --print-value-only /mld/nodes/NODE/` saved to FILE). Exit 1 when
/// one shows the log cut back or rewritten.
fn check_anchors(paths: &[PathBuf], anchors: Option<&Path>, node: &str, first_seq: u64, last_seq: u64) -> anyhow::Result<Exit> {
    let Some(file) = anchors else { return Ok(Exit::Success) };
    let text = std::fs::read_to_string(file).with_context(|| format!("failed to read the anchors `{}`", file.display()))?;
    let anchors = mld_eventlog::parse_anchors(&text);
    let mine: Vec<_> = anchors.into_iter().filter(|anchor| anchor.node == node).collect();
    if mine.is_empty() {
        println!("FAILED: `{}` holds no anchor of node {node}", file.display());
        return Ok(Exit::Failure);
    }
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).with_context(|| format!("failed to read `{}`", path.display()))?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("events-") && name.ends_with(".jsonl") {
                    files.push(entry.path());
                }
            }
        } else {
            files.push(path.clone());
        }
    }
    let checks = mld_eventlog::check_anchors(&mine, node, first_seq, last_seq, &files).context("failed to read the log for its anchors")?;
    let mut failed = false;
    for (anchor, check) in &checks {
        let at = mld_flow::time::rfc3339_utc(anchor.at_unix_ms.saturating_mul(1_000_000));
        match check {
            mld_eventlog::AnchorCheck::Holds => println!("anchor ok: seq {} published {at} is in the log with its tag", anchor.seq),
            mld_eventlog::AnchorCheck::CutBack { last_seq } => {
                failed = true;
                println!("FAILED: the log was cut back: it ends at seq {last_seq}, but seq {} was published as its head at {at}", anchor.seq);
            }
            mld_eventlog::AnchorCheck::Rewritten { found } => {
                failed = true;
                println!("FAILED: the log was rewritten: record {} carries tag {found}, but {} was published at {at}", anchor.seq, anchor.hmac);
            }
            mld_eventlog::AnchorCheck::BeforeLog { first_seq } => {
                println!("anchor not checkable: seq {} (published {at}) is older than the log's first record {first_seq} (retention)", anchor.seq)
            }
            mld_eventlog::AnchorCheck::OtherNode => {}
        }
    }
    Ok(if failed { Exit::Failure } else { Exit::Success })
}
