//! The event log's keys and writer settings, one way for every command and task.

use std::fs::File;
use std::io::ErrorKind;

use anyhow::Context;
use mld_config::Config;
use mld_eventlog::{CheckpointSigningKey, KeyError, LogKey, SigningKeyError, WriterConfig};
use mld_secret::SecretFileError;
use mld_supervisor::files::create_dirs;
use tracing::info;

/// Opens the log's HMAC key file once, checked on the open fd (`LogKey::open`: no link,
/// no group or other access, a key's length); creates it (0600, its directory 0700) when
/// it is missing and `log.create-key` allows. The supervisor hands the file to the log
/// task; `replay` reads it.
pub fn open_log_key(config: &Config) -> anyhow::Result<File> {
    let path = &config.log.key_file;
    match LogKey::open(path) {
        Err(KeyError::File(SecretFileError::Io { source, .. })) if config.log.create_key && source.kind() == ErrorKind::NotFound => {
            create_parent(path)?;
            LogKey::create(path)?;
            info!(path = %path.display(), "log key created");
            Ok(LogKey::open(path)?)
        }
        opened => Ok(opened?),
    }
}

/// Opens the checkpoint signing key file the same way.
pub fn open_signing_key(config: &Config) -> anyhow::Result<File> {
    let path = &config.log.signing_key_file;
    match CheckpointSigningKey::open(path) {
        Err(SigningKeyError::File(SecretFileError::Io { source, .. })) if config.log.create_key && source.kind() == ErrorKind::NotFound => {
            create_parent(path)?;
            CheckpointSigningKey::create(path)?;
            info!(path = %path.display(), "log signing key created");
            Ok(CheckpointSigningKey::open(path)?)
        }
        opened => Ok(opened?),
    }
}

/// Both keys, read (for a writer in this process: `replay`).
pub fn load_keys(config: &Config) -> anyhow::Result<(LogKey, CheckpointSigningKey)> {
    let key = LogKey::from_file(open_log_key(config)?, &config.log.key_file)?;
    let signer = CheckpointSigningKey::from_file(open_signing_key(config)?, &config.log.signing_key_file)?;
    Ok((key, signer))
}

fn create_parent(path: &std::path::Path) -> anyhow::Result<()> {
    match path.parent() {
        Some(parent) => create_dirs(parent, 0o700).with_context(|| format!("failed to create `{}`", parent.display())),
        None => Ok(()),
    }
}

/// The writer settings of `[log]`.
pub fn writer_config(config: &Config) -> WriterConfig {
    WriterConfig {
        max_file_bytes: config.log.max_file_bytes,
        rotate_daily: config.log.rotate_daily,
        sync_every_records: config.log.sync_every_records,
        sync_interval: config.log.sync_interval,
        max_disk_bytes: config.log.max_disk_bytes,
        max_age: config.log.max_age,
        checkpoint_every_records: config.log.checkpoint_every_records,
        checkpoint_interval: config.log.checkpoint_interval,
        ..WriterConfig::new(config.log.dir.clone(), config.log.node.clone())
    }
}
