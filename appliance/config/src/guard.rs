//! `[guard]`: the per-destination defence against random-source floods (the capture task
//! marks a service under attack; the XDP program rate-limits first packets of unknown
//! sources to it). Raw (as written) and validated forms side by side.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::validate::in_range;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawGuard {
    /// Watch destinations for random-source floods and guard them.
    pub enabled: bool,
    /// Distinct sources not known good starting flows to one service in one second, with
    /// fewer than half of them completing a handshake, that put the service under attack.
    pub new_sources_per_sec: i64,
    /// First packets of unknown sources let through per second while guarded.
    pub rate_per_sec: i64,
    /// ... and at most this many at once (the bucket's size).
    pub burst: i64,
    /// The guard lapses after this many seconds in a row below half the threshold. Seconds.
    pub quiet_secs: i64,
    /// A source that completed a handshake stays known good this long. Seconds.
    pub known_good_secs: i64,
    /// Services tracked at once at most (the least recently active unguarded one is forgotten).
    pub max_destinations: i64,
}

impl Default for RawGuard {
    fn default() -> RawGuard {
        RawGuard { enabled: true, new_sources_per_sec: 200, rate_per_sec: 50, burst: 100, quiet_secs: 10, known_good_secs: 3600, max_destinations: 4096 }
    }
}

/// The validated `[guard]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    pub enabled: bool,
    pub new_sources_per_sec: u64,
    pub rate_per_sec: u64,
    pub burst: u64,
    pub quiet: Duration,
    pub known_good: Duration,
    pub max_destinations: usize,
}

pub(crate) fn validate_guard(raw: &RawGuard, errors: &mut Vec<ConfigError>) -> GuardConfig {
    let new_sources_per_sec = in_range(raw.new_sources_per_sec, 10, 10_000_000, "guard.new-sources-per-sec", errors);
    let rate_per_sec = in_range(raw.rate_per_sec, 1, 10_000_000, "guard.rate-per-sec", errors);
    if raw.rate_per_sec >= raw.new_sources_per_sec && raw.new_sources_per_sec >= 10 {
        errors.push(ConfigError::new(
            "guard.rate-per-sec",
            format!(
                "must be below guard.new-sources-per-sec ({}), got {}: a guard that lets the flood's rate through does nothing",
                raw.new_sources_per_sec, raw.rate_per_sec
            ),
        ));
    }
    GuardConfig {
        enabled: raw.enabled,
        new_sources_per_sec,
        rate_per_sec,
        burst: in_range(raw.burst, 1, 10_000_000, "guard.burst", errors),
        quiet: Duration::from_secs(in_range(raw.quiet_secs, 1, 3600, "guard.quiet-secs", errors)),
        known_good: Duration::from_secs(in_range(raw.known_good_secs, 10, 604_800, "guard.known-good-secs", errors)),
        max_destinations: in_range(raw.max_destinations, 16, 1_000_000, "guard.max-destinations", errors) as usize,
    }
}
