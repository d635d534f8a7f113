//! Logging for the long-running commands: journald where its socket exists, else stderr.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `RUST_LOG` overrides the `info` default.
pub fn init(process: &'static str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    // The journald layer fails where no journald runs (containers, the appliance's
    // initramfs): fall back to stderr instead of failing.
    match tracing_journald::layer() {
        Ok(journald) => registry.with(journald.with_syslog_identifier(process.to_string())).init(),
        Err(_) => registry.with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false).with_ansi(false)).init(),
    }
}
