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
    let summary = match mld_runtime::replay::replay(&config, &text, files) {
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
pub fn verify_signed(paths: &[PathBuf], key_files: &[PathBuf]) -> anyhow::Result<Exit> {
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
            Ok(Exit::Success)
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

pub fn verify(paths: &[PathBuf], key_files: &[PathBuf]) -> anyhow::Result<Exit> {
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
            Ok(Exit::Success)
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
