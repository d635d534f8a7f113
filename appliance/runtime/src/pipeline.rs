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
