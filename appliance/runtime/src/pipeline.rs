//! The capture side of live detection, shared by the capture task and `replay`: when to
//! report active sources and interim records of long flows, by the flow table's clock
//! (the packets' time), so a replay sees what the live pipeline would.

use std::time::Duration;

use mld_config::{Config, HeuristicsConfig};
use mld_detect::heuristics::assess_window;
use mld_flow::{FlowRecord, FlowTable, SourceReport};

/// Active-source reports per poll at most (the rest wait for the next poll).
const REPORTS_MAX: usize = 1024;
/// Interim records per scan at most.
const INTERIM_MAX: usize = 4096;
/// A source is reported once some rule reaches this share of its score at the limit
/// (0.5): far below any decision, so nothing that could fire is filtered out.
const PREFILTER_SCORE: f64 = 0.25;

/// What the capture side hands to detection.
#[derive(Debug)]
pub enum Emitted {
    Flow(FlowRecord),
    Source(SourceReport),
}

#[derive(Debug)]
pub struct CaptureSide {
    report_every_ns: u64,
    interim_every_ns: u64,
    interim_min_age_ns: u64,
    next_report_ns: u64,
    next_interim_ns: u64,
    heuristics: HeuristicsConfig,
}

impl CaptureSide {
    /// Reports every detection tick; interim records of flows older than the slow rule's
    /// minimum age, each at most every such age, scanned every second.
    pub fn new(config: &Config, table: &mut FlowTable) -> CaptureSide {
        table.track_active_sources();
        let ns = |duration: Duration| duration.as_nanos() as u64;
        CaptureSide {
            report_every_ns: ns(config.detect.tick),
            interim_every_ns: ns(config.detect.heuristics.slow_min_age),
            interim_min_age_ns: ns(config.detect.heuristics.slow_min_age),
            next_report_ns: 0,
            next_interim_ns: 0,
            heuristics: config.detect.heuristics.clone(),
        }
    }

    /// Emits what is due at the table's clock: ended flows (`finished`, drained), then
    /// active-source reports and interim records when their time has come.
    pub fn poll(&mut self, table: &mut FlowTable, finished: &mut Vec<FlowRecord>, out: &mut Vec<Emitted>) {
        out.extend(finished.drain(..).map(Emitted::Flow));
        let now = table.now_ns();
        if now >= self.next_report_ns {
            self.next_report_ns = now + self.report_every_ns;
            let heuristics = &self.heuristics;
            let keep = |windows: &[mld_flow::window::WindowSnapshot]| {
                heuristics.window_index.and_then(|index| windows.get(index)).is_some_and(|window| assess_window(window, heuristics).score >= PREFILTER_SCORE)
            };
            out.extend(table.active_sources(REPORTS_MAX, keep).into_iter().map(Emitted::Source));
        }
        if now >= self.next_interim_ns {
            self.next_interim_ns = now + 1_000_000_000;
            let mut interim = Vec::new();
            table.interim(self.interim_min_age_ns, self.interim_every_ns, INTERIM_MAX, &mut interim);
            out.extend(interim.into_iter().map(Emitted::Flow));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mld_packet::PacketRecord;

    /// A UDP packet from 10.0.0.66 to 10.0.0.2:`port` at `ts_us`.
    fn probe(ts_us: u64, port: u16) -> PacketRecord {
        let mut packet: PacketRecord = bytemuck::Zeroable::zeroed();
        packet.ts_ns = ts_us * 1000;
        packet.src_addr[..4].copy_from_slice(&[10, 0, 0, 66]);
        packet.dst_addr[..4].copy_from_slice(&[10, 0, 0, 2]);
        packet.src_port = 40000;
        packet.dst_port = port;
        packet.ip_version = 4;
        packet.protocol = 17;
        packet.ip_header_len = 20;
        packet.l4_header_len = 8;
        packet.ip_len = 28;
        packet
    }

    #[test]
    fn an_active_source_is_reported_once_per_detection_tick_by_the_packets_clock() {
        let config = Config::default();
        let mut table = FlowTable::new(config.flow_table());
        let mut side = CaptureSide::new(&config, &mut table);
        let (mut finished, mut out) = (Vec::new(), Vec::new());
        let mut reported_at = Vec::new();
        // A scanner: one port every 2 ms for 3 s of packet time.
        for probe_index in 0..1500u64 {
            table.process(&probe(1_000_000 + probe_index * 2_000, 1 + probe_index as u16), &mut finished);
            side.poll(&mut table, &mut finished, &mut out);
            for emitted in out.drain(..) {
                if let Emitted::Source(report) = emitted {
                    assert_eq!(report.src_ip.to_string(), "10.0.0.66");
                    reported_at.push(table.now_ns());
                }
            }
        }
        let tick_ns = config.detect.tick.as_nanos() as u64;
        let expected = 3_000_000_000 / tick_ns;
        assert!(
            reported_at.len() as u64 >= expected - 1 && reported_at.len() as u64 <= expected + 1,
            "{} reports in 3 s at a {tick_ns} ns tick",
            reported_at.len()
        );
        assert!(reported_at.windows(2).all(|pair| pair[1] - pair[0] >= tick_ns), "two reports within one tick: {reported_at:?}");
    }

    #[test]
    fn a_quiet_source_is_not_reported() {
        let config = Config::default();
        let mut table = FlowTable::new(config.flow_table());
        let mut side = CaptureSide::new(&config, &mut table);
        let (mut finished, mut out) = (Vec::new(), Vec::new());
        // One packet a second to one port: nothing any rule would look at.
        for second in 0..5u64 {
            table.process(&probe(1_000_000 + second * 1_000_000, 53), &mut finished);
            side.poll(&mut table, &mut finished, &mut out);
        }
        assert!(!out.iter().any(|emitted| matches!(emitted, Emitted::Source(_))), "{out:?}");
    }
}
