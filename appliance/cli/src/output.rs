//! Flow records as CSV or JSONL. Both formats carry the same columns in the same order:
//! identity (CIC names), the 76 CIC features (CIC names), then ours (snake_case, units
//! in names), then the initiator's window aggregates, one group per configured window.

use std::io::{self, Write};

use mld_config::OutputFormat;
use mld_flow::features::Feature;
use mld_flow::FlowRecord;

const IDENTITY: [&str; 7] = ["Flow ID", "Src IP", "Src Port", "Dst IP", "Dst Port", "Protocol", "Timestamp"];
const OURS: [&str; 7] =
    ["ip_version", "first_seen_us", "last_seen_us", "end_reason", "fwd_ip_bytes", "bwd_ip_bytes", "ifindex"];
const WINDOW: [&str; 6] =
    ["distinct_dst_addrs", "distinct_dst_ports", "new_flows_per_sec", "syn_without_ack_ratio", "rst_ratio", "saturated"];

/// One cell of a record.
enum Cell<'a> {
    Text(&'a str),
    Owned(String),
    Number(f64),
    Integer(u64),
    Bool(bool),
}

/// Writes flow records in one format.
pub struct FlowWriter<W: Write> {
    out: W,
    format: OutputFormat,
    columns: Vec<String>,
    header_written: bool,
    line: String,
}

impl<W: Write> FlowWriter<W> {
    /// `windows_secs` are the configured window lengths, for the column names.
    pub fn new(out: W, format: OutputFormat, windows_secs: &[u64]) -> FlowWriter<W> {
        let mut columns: Vec<String> = IDENTITY.iter().map(|name| name.to_string()).collect();
        columns.extend(Feature::ALL.iter().map(|feature| feature.cic_name().to_string()));
        columns.extend(OURS.iter().map(|name| name.to_string()));
        for secs in windows_secs {
            columns.extend(WINDOW.iter().map(|name| format!("src_{secs}s_{name}")));
        }
        FlowWriter { out, format, columns, header_written: false, line: String::with_capacity(4096) }
    }

    pub fn write(&mut self, flow: &FlowRecord) -> io::Result<()> {
        if self.format == OutputFormat::Csv && !self.header_written {
            let header = self.columns.join(",");
            writeln!(self.out, "{header}")?;
        }
        self.header_written = true;
        let mut cells: Vec<Cell<'_>> = Vec::with_capacity(self.columns.len());
        cells.push(Cell::Owned(flow.flow_id()));
        cells.push(Cell::Owned(flow.src_ip.to_string()));
        cells.push(Cell::Integer(u64::from(flow.src_port)));
        cells.push(Cell::Owned(flow.dst_ip.to_string()));
        cells.push(Cell::Integer(u64::from(flow.dst_port)));
        cells.push(Cell::Integer(u64::from(flow.protocol)));
        cells.push(Cell::Owned(rfc3339_utc(flow.first_seen_ns)));
        cells.extend(flow.features.iter().map(|(_, value)| Cell::Number(value)));
        cells.push(Cell::Integer(u64::from(flow.ip_version)));
        cells.push(Cell::Integer(flow.first_seen_ns / 1000));
        cells.push(Cell::Integer(flow.last_seen_ns / 1000));
        cells.push(Cell::Text(flow.end_reason.as_str()));
        cells.push(Cell::Integer(flow.fwd_ip_bytes));
        cells.push(Cell::Integer(flow.bwd_ip_bytes));
        cells.push(Cell::Integer(u64::from(flow.ifindex)));
        for window in &flow.source_windows {
            cells.push(Cell::Integer(u64::from(window.distinct_dst_addrs)));
            cells.push(Cell::Integer(u64::from(window.distinct_dst_ports)));
            cells.push(Cell::Number(window.new_flows_per_sec));
            cells.push(Cell::Number(window.syn_without_ack_ratio));
            cells.push(Cell::Number(window.rst_ratio));
            cells.push(Cell::Bool(window.saturated));
        }
        // A source evicted from the window aggregator has no snapshot: empty cells.
        let expected = self.columns.len();
        self.line.clear();
        match self.format {
            OutputFormat::Csv => {
                for index in 0..expected {
                    if index > 0 {
                        self.line.push(',');
                    }
                    if let Some(cell) = cells.get(index) {
                        push_cell(&mut self.line, cell, false);
                    }
                }
            }
            OutputFormat::Jsonl => {
                self.line.push('{');
                for (index, column) in self.columns.iter().enumerate() {
                    if index > 0 {
                        self.line.push(',');
                    }
                    push_json_string(&mut self.line, column);
                    self.line.push(':');
                    match cells.get(index) {
                        Some(cell) => push_cell(&mut self.line, cell, true),
                        None => self.line.push_str("null"),
                    }
                }
                self.line.push('}');
            }
        }
        self.line.push('\n');
        self.out.write_all(self.line.as_bytes())
    }

    pub fn finish(mut self) -> io::Result<W> {
        if self.format == OutputFormat::Csv && !self.header_written {
            let header = self.columns.join(",");
            writeln!(self.out, "{header}")?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

fn push_cell(line: &mut String, cell: &Cell<'_>, json: bool) {
    use std::fmt::Write as _;
    match cell {
        Cell::Text(text) => push_text(line, text, json),
        Cell::Owned(text) => push_text(line, text, json),
        Cell::Integer(value) => {
            let _ = write!(line, "{value}");
        }
        Cell::Number(value) => {
            if value.is_finite() {
                let _ = write!(line, "{value}");
            } else if json {
                line.push_str("null");
            }
        }
        Cell::Bool(value) => line.push_str(if *value { "true" } else { "false" }),
    }
}

fn push_text(line: &mut String, text: &str, json: bool) {
    if json {
        push_json_string(line, text);
    } else {
        // Our text cells are addresses, ids and reason names: no comma, quote or newline.
        line.push_str(text);
    }
}

fn push_json_string(line: &mut String, text: &str) {
    line.push_str(&serde_json::Value::String(text.to_string()).to_string());
}

/// `2017-07-07T12:00:01.123456Z` from ns since the Unix epoch.
pub fn rfc3339_utc(ts_ns: u64) -> String {
    let secs = ts_ns / 1_000_000_000;
    let micros = (ts_ns % 1_000_000_000) / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339_utc(1_499_428_801_123_456_789), "2017-07-07T12:00:01.123456Z");
        assert_eq!(rfc3339_utc(951_782_400_000_000_000), "2000-02-29T00:00:00.000000Z");
    }
}
