//! Raw → validated. Every check runs; all failures come back together.

use std::time::Duration;

use mld_flow::features::FeatureParams;
use mld_flow::window::WindowConfig;
use mld_flow::FlowTableConfig;

use crate::error::ConfigError;
use crate::raw::{RawConfig, RawFlow, RawOutput, RawWindows};

/// A validated configuration: every value is in range and consistent.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub flow: FlowConfig,
    pub windows: WindowsConfig,
    pub output: OutputConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlowConfig {
    pub idle_timeout: Duration,
    pub active_timeout: Duration,
    pub tcp_close_linger: Duration,
    pub max_flows: usize,
    pub activity_timeout: Duration,
    pub subflow_gap: Duration,
    pub bulk_gap: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WindowsConfig {
    pub lengths: Vec<Duration>,
    pub max_sources: usize,
    pub max_distinct: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Jsonl,
    Csv,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutputConfig {
    pub format: OutputFormat,
}

impl Default for Config {
    fn default() -> Config {
        Config::try_from(RawConfig::default()).expect("the default configuration is valid")
    }
}

impl Config {
    /// The flow table's parameters.
    pub fn flow_table(&self) -> FlowTableConfig {
        let ns = |duration: Duration| duration.as_nanos() as u64;
        FlowTableConfig {
            idle_timeout_ns: ns(self.flow.idle_timeout),
            active_timeout_ns: ns(self.flow.active_timeout),
            tcp_close_linger_ns: ns(self.flow.tcp_close_linger),
            max_flows: self.flow.max_flows,
            features: FeatureParams {
                activity_timeout_ns: ns(self.flow.activity_timeout),
                subflow_gap_ns: ns(self.flow.subflow_gap),
                bulk_gap_ns: ns(self.flow.bulk_gap),
            },
            windows: WindowConfig {
                windows_ns: self.windows.lengths.iter().map(|length| ns(*length)).collect(),
                max_sources: self.windows.max_sources,
                max_distinct: self.windows.max_distinct,
            },
        }
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = Vec<ConfigError>;

    fn try_from(raw: RawConfig) -> Result<Config, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let flow = validate_flow(&raw.flow, &mut errors);
        let windows = validate_windows(&raw.windows, &mut errors);
        let output = validate_output(&raw.output, &mut errors);
        if errors.is_empty() {
            Ok(Config { flow, windows, output })
        } else {
            Err(errors)
        }
    }
}

/// Checks `value` against an inclusive range, recording an error with `path` otherwise.
fn in_range(value: i64, min: i64, max: i64, path: &str, errors: &mut Vec<ConfigError>) -> u64 {
    if value < min || value > max {
        errors.push(ConfigError::new(path, format!("must be between {min} and {max}, got {value}")));
        min.max(0) as u64
    } else {
        value as u64
    }
}

fn validate_flow(raw: &RawFlow, errors: &mut Vec<ConfigError>) -> FlowConfig {
    let secs = |value, path, errors: &mut Vec<ConfigError>| Duration::from_secs(in_range(value, 1, 86_400, path, errors));
    let millis = |value, min, path, errors: &mut Vec<ConfigError>| {
        Duration::from_millis(in_range(value, min, 3_600_000, path, errors))
    };
    let idle_timeout = secs(raw.idle_timeout_secs, "flow.idle-timeout-secs", errors);
    let active_timeout = secs(raw.active_timeout_secs, "flow.active-timeout-secs", errors);
    if raw.active_timeout_secs < raw.idle_timeout_secs {
        errors.push(ConfigError::new(
            "flow.active-timeout-secs",
            format!(
                "must be at least flow.idle-timeout-secs ({}), got {}",
                raw.idle_timeout_secs, raw.active_timeout_secs
            ),
        ));
    }
    let tcp_close_linger = Duration::from_millis(in_range(raw.tcp_close_linger_ms, 0, 60_000, "flow.tcp-close-linger-ms", errors));
    let max_flows = in_range(raw.max_flows, 1, 16_777_216, "flow.max-flows", errors) as usize;
    FlowConfig {
        idle_timeout,
        active_timeout,
        tcp_close_linger,
        max_flows,
        activity_timeout: millis(raw.activity_timeout_ms, 1, "flow.activity-timeout-ms", errors),
        subflow_gap: millis(raw.subflow_gap_ms, 1, "flow.subflow-gap-ms", errors),
        bulk_gap: millis(raw.bulk_gap_ms, 1, "flow.bulk-gap-ms", errors),
    }
}

fn validate_windows(raw: &RawWindows, errors: &mut Vec<ConfigError>) -> WindowsConfig {
    if raw.lengths_secs.len() > 4 {
        errors.push(ConfigError::new(
            "windows.lengths-secs",
            format!("at most 4 windows, got {}", raw.lengths_secs.len()),
        ));
    }
    let mut lengths = Vec::new();
    for (index, length) in raw.lengths_secs.iter().enumerate() {
        let path = format!("windows.lengths-secs[{index}]");
        let secs = in_range(*length, 1, 3600, &path, errors);
        let length = Duration::from_secs(secs);
        if lengths.contains(&length) {
            errors.push(ConfigError::new(path, format!("duplicate window length {secs}")));
        }
        lengths.push(length);
    }
    WindowsConfig {
        lengths,
        max_sources: in_range(raw.max_sources, 1, 1_048_576, "windows.max-sources", errors) as usize,
        max_distinct: in_range(raw.max_distinct, 1, 65_536, "windows.max-distinct", errors) as usize,
    }
}

fn validate_output(raw: &RawOutput, errors: &mut Vec<ConfigError>) -> OutputConfig {
    let format = match raw.format.as_str() {
        "jsonl" => OutputFormat::Jsonl,
        "csv" => OutputFormat::Csv,
        other => {
            errors.push(ConfigError::new("output.format", format!("must be \"jsonl\" or \"csv\", got \"{other}\"")));
            OutputFormat::Jsonl
        }
    };
    OutputConfig { format }
}
