//! The event log's keys and writer settings, one way for every command and task.

use mld_config::Config;
use mld_eventlog::WriterConfig;

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
