//! The data plane as the supervisor and `mldefender capture` hold it: started with the
//! source checks planned from the host's routes, blocks restored after a reboot, then
//! kept up by an idempotent tick (source checks follow the routes; the blocks in force
//! are saved to `capture.state-dir`), and left enforcing at exit unless
//! `capture.detach-on-exit` says otherwise.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mld_capture::{boot_to_realtime_offset_ns, CaptureError, Dataplane, DenyEntry, TaskFds};
use mld_config::CaptureConfig;
use mld_hostnet::HostNet;
use tracing::{info, warn};

#[derive(Debug)]
pub struct Enforcement {
    dataplane: Dataplane,
    config: CaptureConfig,
    last_refresh: Instant,
    last_save: Instant,
    saved: Option<Vec<DenyEntry>>,
    notes: Vec<String>,
}

impl Enforcement {
    /// Starts (or adopts) the data plane and says what it did.
    pub fn start(config: &CaptureConfig, allowlist: &[mld_types::IpPrefix]) -> Result<Enforcement, CaptureError> {
        let net = HostNet::read();
        let (plan, notes) = mld_capture::source_plan(config, &net);
        for note in &notes {
            warn!(note = %note, "source check");
        }
        let mut dataplane = Dataplane::start(config, allowlist, &plan)?;
        for interface in dataplane.attached() {
            info!(interface = %interface.name, mode = interface.mode, pinned = interface.pinned, "XDP program attached");
            if !interface.pinned {
                warn!(interface = %interface.name, "the kernel attached without a bpf link: enforcement on this interface stops when this process exits");
            }
        }
        let report = dataplane.report().clone();
        for (map, why) in &report.replaced_maps {
            warn!(map = map, why = %why, "a pinned map of an earlier run did not match this program and was replaced");
        }
        for interface in &report.detached_stale {
            info!(interface = %interface, "XDP program detached from an interface no longer configured");
        }
        if report.adopted_maps {
            let blocks = dataplane.maps().deny_list()?.len();
            info!(blocks, "adopted the running data plane: blocks in force kept");
        } else {
            let restored = restore_saved_blocks(&mut dataplane, config)?;
            if restored > 0 {
                info!(blocks = restored, file = %config.state_dir.join(mld_capture::BLOCKS_FILE).display(), "restored the blocks in force from before the reboot");
            }
        }
        Ok(Enforcement { dataplane, config: config.clone(), last_refresh: Instant::now(), last_save: Instant::now(), saved: None, notes })
    }

    pub fn dataplane(&mut self) -> &mut Dataplane {
        &mut self.dataplane
    }

    pub fn task_fds(&self) -> Result<TaskFds<'_>, CaptureError> {
        self.dataplane.task_fds()
    }

    /// The periodic work; cheap when there is nothing to do. Errors are logged, never
    /// fatal: the program keeps enforcing what it has.
    pub fn tick(&mut self) {
        if self.last_refresh.elapsed() >= self.config.network_refresh {
            self.last_refresh = Instant::now();
            let (plan, notes) = mld_capture::source_plan(&self.config, &HostNet::read());
            if notes != self.notes {
                for note in &notes {
                    warn!(note = %note, "source check");
                }
                self.notes = notes;
            }
            match self.dataplane.reconcile_sources(&plan) {
                Ok(0) => {}
                Ok(changed) => info!(changed, "source checks follow the host's routes"),
                Err(error) => warn!(error = %crate::error_chain(&error), "failed to update the source checks"),
            }
        }
        if self.last_save.elapsed() >= self.config.sweep_interval.max(Duration::from_secs(1)) {
            self.last_save = Instant::now();
            self.save_blocks();
        }
    }

    /// Saves the blocks in force when they changed since the last save.
    fn save_blocks(&mut self) {
        let entries = match self.dataplane.maps().deny_list() {
            Ok(entries) => entries,
            Err(error) => {
                warn!(error = %crate::error_chain(&error), "failed to read the deny map to save it");
                return;
            }
        };
        if self.saved.as_ref() == Some(&entries) {
            return;
        }
        match mld_capture::save_blocks(&self.config.state_dir, &entries, boot_to_realtime_offset_ns(), unix_ms()) {
            Ok(_) => self.saved = Some(entries),
            Err(error) => warn!(error = %crate::error_chain(&error), "failed to save the blocks in force"),
        }
    }

    /// Saves the blocks one last time, then lets go of the program: it keeps enforcing
    /// (pinned) unless detach-on-exit is set. Returns true when it was detached.
    /// Makes the XDP program's allowlist exactly `allowlist` (a configuration change), in
    /// one step ([`mld_capture::PinnedMaps::allow_replace`]): no packet sees a mix of the
    /// two, so a newly allowlisted source passes and a removed one is judged from the same
    /// instant. Entries added by `mldefender allow add` go too: the configuration is the
    /// allowlist.
    pub fn replace_allowlist(&mut self, allowlist: &[mld_types::IpPrefix]) -> Result<(), CaptureError> {
        self.dataplane.maps().allow_replace(allowlist)
    }

    /// Leaves the data plane to the next run of the supervisor in this process (a restart
    /// in place): the blocks saved, the program and its maps left pinned whatever
    /// `capture.detach-on-exit` says. False when an interface has no bpf link (its
    /// enforcement pauses until the next run attaches again).
    pub fn hand_over(mut self) -> bool {
        self.save_blocks();
        self.dataplane.hand_over()
    }

    pub fn shutdown(mut self) -> bool {
        self.save_blocks();
        let detached = self.dataplane.shutdown();
        if detached {
            info!("XDP program detached");
        } else {
            info!(bpffs_dir = %self.config.bpffs_dir.display(), "XDP program left enforcing (pinned); `mldefender capture detach` removes it");
        }
        detached
    }
}

fn restore_saved_blocks(dataplane: &mut Dataplane, config: &CaptureConfig) -> Result<usize, CaptureError> {
    let saved = match mld_capture::load_blocks(&config.state_dir, unix_ms()) {
        Ok(saved) => saved,
        Err(error) => {
            warn!(error = %crate::error_chain(&error), "the saved blocks cannot be read; starting without them");
            return Ok(0);
        }
    };
    let mut restored = 0;
    for entry in saved {
        match dataplane.maps().deny_add(&entry.prefix, entry.ttl, entry.reason) {
            Ok(()) => {
                restored += 1;
                // The first few by name, with the time they have left.
                if restored <= 10 {
                    info!(prefix = %entry.prefix, reason = entry.reason.as_str(), ttl_secs = entry.ttl.map_or(0, |ttl| ttl.as_secs()), permanent = entry.ttl.is_none(), "restored a saved block");
                }
            }
            Err(CaptureError::Refused(why)) => warn!(prefix = %entry.prefix, why = %why, "a saved block was not restored"),
            Err(error) => return Err(error),
        }
    }
    Ok(restored)
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}
