//! The feature vector a model reads, by the names its metadata lists: the CIC feature
//! columns of `mldefender flows --format csv` ("Flow Duration", ...), the window
//! aggregates (`src_<W>s_<metric>`) and `Protocol`. A missing value (a source dropped
//! from the bounded window aggregator) is 0, as in training.

use mld_flow::features::Feature;
use mld_flow::window::WindowSnapshot;
use mld_flow::FlowRecord;

/// Window metrics by column suffix.
const WINDOW_METRICS: [&str; 8] =
    ["distinct_dst_addrs", "distinct_dst_ports", "new_flows_per_sec", "packets_per_sec", "bytes_per_sec", "syn_without_ack_ratio", "rst_ratio", "saturated"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Column {
    Cic(Feature),
    Window { index: usize, metric: usize },
    Protocol,
}

/// Turns flow records into rows for one model.
#[derive(Debug, Clone)]
pub struct FeatureExtractor {
    names: Vec<String>,
    columns: Vec<Column>,
}

fn column(name: &str, windows_secs: &[u64]) -> Option<Column> {
    if name == "Protocol" {
        return Some(Column::Protocol);
    }
    if let Some(feature) = Feature::ALL.iter().find(|feature| feature.cic_name() == name) {
        return Some(Column::Cic(*feature));
    }
    let rest = name.strip_prefix("src_")?;
    let (secs, metric) = rest.split_once("s_")?;
    let secs: u64 = secs.parse().ok()?;
    let index = windows_secs.iter().position(|window| *window == secs)?;
    let metric = WINDOW_METRICS.iter().position(|known| *known == metric)?;
    Some(Column::Window { index, metric })
}

/// Whether this configuration can compute the named feature.
pub fn is_known_feature(name: &str, windows_secs: &[u64]) -> bool {
    column(name, windows_secs).is_some()
}

fn window_value(window: &WindowSnapshot, metric: usize) -> f64 {
    match metric {
        0 => f64::from(window.distinct_dst_addrs),
        1 => f64::from(window.distinct_dst_ports),
        2 => window.new_flows_per_sec,
        3 => window.packets_per_sec,
        4 => window.bytes_per_sec,
        5 => window.syn_without_ack_ratio,
        6 => window.rst_ratio,
        _ => f64::from(u8::from(window.saturated)),
    }
}

impl FeatureExtractor {
    /// An extractor for `names` in order; the error names the first unknown feature.
    pub fn new(names: &[String], windows_secs: &[u64]) -> Result<FeatureExtractor, String> {
        let columns = names
            .iter()
            .map(|name| column(name, windows_secs).ok_or_else(|| format!("unknown feature \"{name}\" (windows configured: {windows_secs:?} s)")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(FeatureExtractor { names: names.to_vec(), columns })
    }

    pub fn len(&self) -> usize {
        self.columns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Appends the flow's row. Non-finite values become 0 (they never reach a model).
    pub fn push_row(&self, flow: &FlowRecord, out: &mut Vec<f32>) {
        for column in &self.columns {
            out.push(self.value(flow, *column) as f32);
        }
    }

    /// The named feature's value for `flow`, if the extractor has it.
    pub fn value_of(&self, flow: &FlowRecord, name: &str) -> Option<f64> {
        let index = self.names.iter().position(|known| known == name)?;
        Some(self.value(flow, self.columns[index]))
    }

    fn value(&self, flow: &FlowRecord, column: Column) -> f64 {
        let value = match column {
            Column::Cic(feature) => flow.features.get(feature),
            Column::Window { index, metric } => flow.source_windows.get(index).map_or(0.0, |window| window_value(window, metric)),
            Column::Protocol => f64::from(flow.protocol),
        };
        if value.is_finite() {
            value
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_the_csv_columns_and_unknown_names_are_refused() {
        let windows = [10, 60];
        assert!(is_known_feature("Flow Duration", &windows));
        assert!(is_known_feature("src_60s_packets_per_sec", &windows));
        assert!(is_known_feature("Protocol", &windows));
        assert!(!is_known_feature("src_30s_packets_per_sec", &windows), "no 30 s window configured");
        assert!(!is_known_feature("Flow Colour", &windows));
        let error = FeatureExtractor::new(&["Flow Duration".to_string(), "Flow Colour".to_string()], &windows).expect_err("unknown");
        assert!(error.contains("Flow Colour"), "{error}");
    }
}
