//! The capture task's part of the per-destination guard (random-source floods): feeds
//! the tracker (`mld_capture::guard`), writes what it decides into the XDP program's
//! guard and known-good maps, and hands each change of state to the detect task, which
//! logs it.

use mld_capture::guard::GUARD_LEASE;
use mld_capture::{boot_time_ns, boot_to_realtime_offset_ns, GuardAction, GuardChange, GuardMaps, GuardSettings, GuardTracker};
use mld_ipc::{FlowMessage, GuardReport, ResponseMessage};
use mld_types::IpPrefix;
use tracing::{info, warn};

/// The guard's state in the capture task.
#[derive(Debug)]
pub struct Guard {
    pub tracker: GuardTracker,
    maps: GuardMaps,
    offset_ns: u64,
    actions: Vec<GuardAction>,
    map_errors: u64,
}

impl Guard {
    /// Starts with no service guarded: entries a previous capture task left are removed
    /// (its tracker is gone; a flood that goes on is guarded again within a second).
    pub fn new(settings: GuardSettings, mut maps: GuardMaps) -> Guard {
        match maps.list() {
            Ok(entries) => {
                for (key, _) in entries {
                    let _ = maps.remove(&key);
                }
            }
            Err(error) => warn!(error = %error, "cannot read the guard map"),
        }
        if let Err(error) = maps.set_active(0) {
            warn!(error = %error, "cannot write the guard count");
        }
        Guard { tracker: GuardTracker::new(settings), maps, offset_ns: boot_to_realtime_offset_ns(), actions: Vec::new(), map_errors: 0 }
    }

    /// Writes newly known-good sources, closes the second when it is over, applies what
    /// the tracker decided and returns the changes as messages for the detect task.
    pub fn step(&mut self) -> Vec<FlowMessage> {
        let now_boot = boot_time_ns();
        for source in self.tracker.take_good() {
            if let Err(error) = self.maps.set_good(source, now_boot) {
                self.map_error("write a known-good source", &error);
            }
        }
        let maps = &self.maps;
        let changes = self.tracker.tick(now_boot + self.offset_ns, |key| maps.get(key).ok().flatten(), &mut self.actions);
        for action in std::mem::take(&mut self.actions) {
            let result = match action {
                GuardAction::Guard(key) => self.maps.set(&key, self.tracker.settings().entry(now_boot)),
                GuardAction::Renew(key) => match self.maps.get(&key) {
                    // Read and written back: XDP counts made in between are lost (a few
                    // packets every 30 s at most; docs/detection.md).
                    Ok(Some(mut value)) => {
                        value.expires_ns = now_boot + GUARD_LEASE.as_nanos() as u64;
                        self.maps.set(&key, value)
                    }
                    Ok(None) => self.maps.set(&key, self.tracker.settings().entry(now_boot)),
                    Err(error) => Err(error),
                },
                GuardAction::Unguard(key) => self.maps.remove(&key).map(|_| ()),
            };
            if let Err(error) = result {
                self.map_error("update the guard map", &error);
            }
            // After every change: the XDP program looks guards up only while it is not 0.
            let active = self.tracker.guarded_count() as u32;
            if let Err(error) = self.maps.set_active(active) {
                self.map_error("write the guard count", &error);
            }
        }
        let settings = *self.tracker.settings();
        changes
            .into_iter()
            .map(|change| {
                let mut report = GuardReport {
                    on: false,
                    dst: std::net::IpAddr::from([0, 0, 0, 0]),
                    port: 0,
                    protocol: 0,
                    at_ns: now_boot + self.offset_ns,
                    new_per_sec: 0,
                    completed_per_sec: 0,
                    offered_per_sec: 0,
                    peak_offered_per_sec: 0,
                    guarded_secs: 0,
                    passed: 0,
                    dropped: 0,
                    known_passed: 0,
                    rate_per_sec: settings.rate_per_sec,
                    burst: settings.burst,
                };
                match change {
                    GuardChange::On { key, new_per_sec, completed_per_sec } => {
                        info!(dst = %key.addr(), port = key.port, protocol = key.protocol, new_per_sec, completed_per_sec, "under attack: guarded");
                        report = GuardReport { on: true, dst: key.addr(), port: key.port, protocol: key.protocol, new_per_sec, completed_per_sec, ..report };
                    }
                    GuardChange::Off { key, guarded_secs, offered_per_sec, peak_offered_per_sec, passed, dropped, known_passed } => {
                        info!(dst = %key.addr(), port = key.port, protocol = key.protocol, guarded_secs, dropped, passed, known_passed, "recovered: guard lapsed");
                        report = GuardReport {
                            dst: key.addr(),
                            port: key.port,
                            protocol: key.protocol,
                            offered_per_sec,
                            peak_offered_per_sec,
                            guarded_secs,
                            passed,
                            dropped,
                            known_passed,
                            ..report
                        };
                    }
                }
                FlowMessage::Guard { report: Box::new(report) }
            })
            .collect()
    }

    /// Refuses block commands that cover a flood's victim (a service guarded now or
    /// recently: `mld_capture::guard::VICTIM_HOLD_NS`), answering each with why.
    pub fn refuse_victims(&self, commands: &mut Vec<ResponseMessage>, results: &mut Vec<FlowMessage>) {
        let victims = self.tracker.victims(boot_time_ns() + self.offset_ns);
        if victims.is_empty() {
            return;
        }
        commands.retain(|command| {
            let ResponseMessage::Block { id, prefix, .. } = command else { return true };
            let Some(victim) = victims.iter().find(|victim| prefix.covers(&IpPrefix::host(**victim))) else { return true };
            warn!(prefix = %prefix, victim = %victim, "refused to block the victim of a random-source flood");
            results.push(FlowMessage::BlockResult {
                id: *id,
                prefix: *prefix,
                error: Some(format!(
                    "refused: {victim} is the destination of a random-source flood (guarded); its answers to forged sources are not an attack"
                )),
                applied_boot_ns: boot_time_ns(),
            });
            false
        });
    }

    fn map_error(&mut self, what: &str, error: &mld_capture::CaptureError) {
        self.map_errors += 1;
        if self.map_errors.is_power_of_two() {
            warn!(error = %error, errors = self.map_errors, "guard: cannot {what}");
        }
    }
}

/// The signed-log event of a guard's change: a decision about a service, not a source
/// (the source is the unspecified address: a random-source flood has none), with the
/// rates measured and the drop counts in its provenance.
pub fn event(report: &GuardReport) -> mld_detect::engine::Event {
    use mld_detect::engine::{Action, Event};
    let protocol = match report.protocol {
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        other => format!("ip-{other}"),
    };
    let service = match report.dst {
        std::net::IpAddr::V4(addr) => format!("{addr}:{}/{protocol}", report.port),
        std::net::IpAddr::V6(addr) => format!("[{addr}]:{}/{protocol}", report.port),
    };
    let (action, first_seen_ns, provenance) = if report.on {
        (
            Action::GuardOn,
            report.at_ns.saturating_sub(1_000_000_000),
            format!(
                "guard-on: random-source flood to {service}: {} new sources/s not known good started flows, {} of them completed a handshake; \
                 first packets of unknown sources now limited to {}/s (burst {}); known-good and allowlisted sources pass",
                report.new_per_sec, report.completed_per_sec, report.rate_per_sec, report.burst
            ),
        )
    } else {
        (
            Action::GuardOff,
            report.at_ns.saturating_sub(report.guarded_secs.saturating_mul(1_000_000_000)),
            format!(
                "guard-off: the flood to {service} ended after {} s: first packets of unknown sources offered {}/s (peak {}/s); \
                 dropped {}, passed {} (bucket), passed {} from known-good sources",
                report.guarded_secs, report.offered_per_sec, report.peak_offered_per_sec, report.dropped, report.passed, report.known_passed
            ),
        )
    };
    let unspecified = match report.dst {
        std::net::IpAddr::V4(_) => std::net::IpAddr::from([0u8; 4]),
        std::net::IpAddr::V6(_) => std::net::IpAddr::from([0u8; 16]),
    };
    let flow =
        mld_flow::FlowRecord::flowless(unspecified, (report.dst, report.port, report.protocol), (first_seen_ns, report.at_ns), mld_flow::EndReason::Active);
    Event::note(action, unspecified, flow, mld_detect::heuristics::Category::Flood, provenance)
}
