//! Flow records as CSV or JSONL. Both formats carry the same columns in the same order:
//! identity (CIC names), the 76 CIC features (CIC names), then ours (snake_case, units
//! in names), then the initiator's window aggregates, one group per configured window.
//!
//! Records are formatted by hand into one reused line buffer (integers with itoa,
//! floats with ryu): at hundreds of thousands of flows per second the general-purpose
//! formatters were the bottleneck.

use std::io::{self, Write};

use mld_config::OutputFormat;
use mld_flow::features::Feature;
use mld_flow::time::rfc3339_utc;
use mld_flow::FlowRecord;

const IDENTITY: [&str; 7] = ["Flow ID", "Src IP", "Src Port", "Dst IP", "Dst Port", "Protocol", "Timestamp"];
const OURS: [&str; 7] = ["ip_version", "first_seen_us", "last_seen_us", "end_reason", "fwd_ip_bytes", "bwd_ip_bytes", "ifindex"];
const WINDOW: [&str; 8] =
    ["distinct_dst_addrs", "distinct_dst_ports", "new_flows_per_sec", "packets_per_sec", "bytes_per_sec", "syn_without_ack_ratio", "rst_ratio", "saturated"];

/// Writes flow records in one format.
#[allow(missing_debug_implementations)] // it holds the output stream, which need not be Debug
pub struct FlowWriter<W: Write> {
    out: W,
    format: OutputFormat,
    columns: Vec<String>,
    /// Per column: what precedes its value (`,` and, for JSONL, the quoted key and `:`).
    prefixes: Vec<String>,
    windows: usize,
    header_written: bool,
    line: Line,
}

/// One output line under construction.
struct Line {
    text: String,
    column: usize,
    json: bool,
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
        let json = format == OutputFormat::Jsonl;
        let prefixes = columns
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let mut prefix = String::new();
                if index > 0 {
                    prefix.push(',');
                }
                if json {
                    push_json_string(&mut prefix, name);
                    prefix.push(':');
                }
                prefix
            })
            .collect();
        FlowWriter {
            out,
            format,
            columns,
            prefixes,
            windows: windows_secs.len(),
            header_written: false,
            line: Line { text: String::with_capacity(4096), column: 0, json },
        }
    }

    pub fn write(&mut self, flow: &FlowRecord) -> io::Result<()> {
        if self.format == OutputFormat::Csv && !self.header_written {
            let header = self.columns.join(",");
            writeln!(self.out, "{header}")?;
        }
        self.header_written = true;
        if self.format == OutputFormat::Text {
            self.line.text.clear();
            push_text_line(&mut self.line.text, flow);
            return self.out.write_all(self.line.text.as_bytes());
        }
        let line = &mut self.line;
        let prefixes = &self.prefixes;
        line.text.clear();
        line.column = 0;
        if line.json {
            line.text.push('{');
        }
        line.text_value(prefixes, &flow.flow_id());
        line.display_value(prefixes, flow.src_ip);
        line.integer(prefixes, u64::from(flow.src_port));
        line.display_value(prefixes, flow.dst_ip);
        line.integer(prefixes, u64::from(flow.dst_port));
        line.integer(prefixes, u64::from(flow.protocol));
        line.text_value(prefixes, &rfc3339_utc(flow.first_seen_ns));
        for (_, value) in flow.features.iter() {
            line.number(prefixes, value);
        }
        line.integer(prefixes, u64::from(flow.ip_version));
        line.integer(prefixes, flow.first_seen_ns / 1000);
        line.integer(prefixes, flow.last_seen_ns / 1000);
        line.text_value(prefixes, flow.end_reason.as_str());
        line.integer(prefixes, flow.fwd_ip_bytes);
        line.integer(prefixes, flow.bwd_ip_bytes);
        line.integer(prefixes, u64::from(flow.ifindex));
        for index in 0..self.windows {
            match flow.source_windows.get(index) {
                Some(window) => {
                    line.integer(prefixes, u64::from(window.distinct_dst_addrs));
                    line.integer(prefixes, u64::from(window.distinct_dst_ports));
                    line.number(prefixes, window.new_flows_per_sec);
                    line.number(prefixes, window.packets_per_sec);
                    line.number(prefixes, window.bytes_per_sec);
                    line.number(prefixes, window.syn_without_ack_ratio);
                    line.number(prefixes, window.rst_ratio);
                    line.boolean(prefixes, window.saturated);
                }
                // A source dropped from the window aggregator has no aggregates.
                None => (0..WINDOW.len()).for_each(|_| line.missing(prefixes)),
            }
        }
        if line.json {
            line.text.push('}');
        }
        line.text.push('\n');
        self.out.write_all(line.text.as_bytes())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
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

impl Line {
    fn next(&mut self, prefixes: &[String]) {
        self.text.push_str(&prefixes[self.column]);
        self.column += 1;
    }

    fn integer(&mut self, prefixes: &[String], value: u64) {
        self.next(prefixes);
        self.text.push_str(itoa::Buffer::new().format(value));
    }

    /// Integral values print as integers; NaN and infinity (never produced by the
    /// feature code, but never trusted either) are null in JSONL and empty in CSV.
    fn number(&mut self, prefixes: &[String], value: f64) {
        self.next(prefixes);
        if !value.is_finite() {
            if self.json {
                self.text.push_str("null");
            }
        } else if value.fract() == 0.0 && value.abs() < 9.0e15 {
            self.text.push_str(itoa::Buffer::new().format(value as i64));
        } else {
            self.text.push_str(ryu::Buffer::new().format_finite(value));
        }
    }

    fn boolean(&mut self, prefixes: &[String], value: bool) {
        self.next(prefixes);
        self.text.push_str(if value { "true" } else { "false" });
    }

    fn missing(&mut self, prefixes: &[String]) {
        self.next(prefixes);
        if self.json {
            self.text.push_str("null");
        }
    }

    fn text_value(&mut self, prefixes: &[String], value: &str) {
        self.next(prefixes);
        if self.json {
            push_json_string(&mut self.text, value);
        } else {
            // Our text cells are addresses, ids, times and reason names: no comma,
            // quote or newline can occur in them.
            self.text.push_str(value);
        }
    }

    fn display_value(&mut self, prefixes: &[String], value: impl std::fmt::Display) {
        use std::fmt::Write as _;
        self.next(prefixes);
        if self.json {
            self.text.push('"');
        }
        let _ = write!(self.text, "{value}");
        if self.json {
            self.text.push('"');
        }
    }
}

/// `10.66.1.2:40312 -> 10.66.9.2:8080 TCP  7/6 packets  88/227 bytes  1.2 ms  tcp-fin`
fn push_text_line(out: &mut String, flow: &FlowRecord) {
    use std::fmt::Write as _;
    let protocol = match flow.protocol {
        1 => "ICMP".to_string(),
        6 => "TCP".to_string(),
        17 => "UDP".to_string(),
        58 => "ICMPv6".to_string(),
        other => format!("proto-{other}"),
    };
    let endpoint = |ip: std::net::IpAddr, port: u16| match (ip, flow.protocol) {
        (_, 1 | 58) => ip.to_string(),
        (std::net::IpAddr::V6(v6), _) => format!("[{v6}]:{port}"),
        (v4, _) => format!("{v4}:{port}"),
    };
    let get = |feature: Feature| flow.features.get(feature);
    let duration_ms = get(Feature::FlowDuration) / 1000.0;
    let mut window = String::new();
    if let Some(first) = flow.source_windows.first() {
        let _ = write!(
            window,
            "  src {:.0}s: {} hosts, {} ports, {:.1} flows/s",
            first.window_secs, first.distinct_dst_addrs, first.distinct_dst_ports, first.new_flows_per_sec
        );
    }
    let _ = writeln!(
        out,
        "{} -> {} {protocol}  {}/{} packets  {}/{} bytes  {duration_ms:.1} ms  {}{window}",
        endpoint(flow.src_ip, flow.src_port),
        endpoint(flow.dst_ip, flow.dst_port),
        get(Feature::TotalFwdPackets),
        get(Feature::TotalBwdPackets),
        flow.fwd_ip_bytes,
        flow.bwd_ip_bytes,
        flow.end_reason.as_str(),
    );
}

/// Appends `text` as a JSON string literal.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            control if (control as u32) < 0x20 => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{:04x}", control as u32);
            }
            other => out.push(other),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\nd\u{1}");
        assert_eq!(out, r#""a\"b\\c\nd\u0001""#);
        assert!(serde_json::from_str::<String>(&out).is_ok());
    }
}
