//! The file as written: every key optional (defaults here, in one place), unknown keys
//! refused, kebab-case names, units in the names. Nothing here is validated yet.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    pub flow: RawFlow,
    pub windows: RawWindows,
    pub output: RawOutput,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawFlow {
    /// A flow with no packet for this long ends. Seconds.
    pub idle_timeout_secs: i64,
    /// A flow older than this ends at its next packet. Seconds.
    pub active_timeout_secs: i64,
    /// Close linger after FIN from both sides or RST. Milliseconds.
    pub tcp_close_linger_ms: i64,
    /// Flows held at once.
    pub max_flows: i64,
    /// CIC active/idle threshold. Milliseconds.
    pub activity_timeout_ms: i64,
    /// CIC subflow gap. Milliseconds.
    pub subflow_gap_ms: i64,
    /// CIC bulk gap. Milliseconds.
    pub bulk_gap_ms: i64,
}

impl Default for RawFlow {
    fn default() -> RawFlow {
        RawFlow {
            idle_timeout_secs: 120,
            active_timeout_secs: 1800,
            tcp_close_linger_ms: 1000,
            max_flows: 262_144,
            activity_timeout_ms: 5000,
            subflow_gap_ms: 1000,
            bulk_gap_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawWindows {
    /// Window lengths. Seconds.
    pub lengths_secs: Vec<i64>,
    /// Sources tracked at once.
    pub max_sources: i64,
    /// Distinct destinations remembered per source and window.
    pub max_distinct: i64,
}

impl Default for RawWindows {
    fn default() -> RawWindows {
        RawWindows { lengths_secs: vec![10, 60], max_sources: 16_384, max_distinct: 128 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawOutput {
    /// "jsonl" or "csv".
    pub format: String,
}

impl Default for RawOutput {
    fn default() -> RawOutput {
        RawOutput { format: "jsonl".to_string() }
    }
}
