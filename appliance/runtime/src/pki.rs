//! `[pki]` at supervisor start, while it runs, and for `mldefender pki renew`: what this
//! node's configuration asks of `mld-pki`.

use std::path::PathBuf;
use std::time::{Duration as StdDuration, Instant};

use mld_config::Config;
use mld_pki::store::{Outcome, Plan, Step};
use time::{Duration, OffsetDateTime};
use tracing::{error, info, warn};

/// How often the running supervisor checks the certificates again (renewal starts two
/// thirds into a leaf's lifetime: 60 of 90 days by default, so an hour is early enough).
pub const CHECK_EVERY: StdDuration = StdDuration::from_secs(3600);

/// The certificates this node's configuration asks for.
pub fn plan(config: &Config) -> Plan {
    let days = |lifetime: StdDuration| Duration::seconds(lifetime.as_secs() as i64);
    Plan {
        node: config.log.node.clone(),
        local_ca: config.pki.local_ca,
        ca_name: config.pki.ca_name.clone(),
        ca_lifetime: days(config.pki.ca_lifetime),
        leaf_lifetime: days(config.pki.leaf_lifetime),
        etcd_member_sans: config.pki.etcd_member_sans.clone(),
    }
}

/// Provisions (or, with `force`, reissues) the certificates and logs what was done to each
/// file.
pub fn provision(config: &Config, force: bool) -> Result<Vec<Outcome>, mld_pki::PkiError> {
    provision_plan(&config.pki.dir, &plan(config), force)
}

fn provision_plan(dir: &std::path::Path, plan: &Plan, force: bool) -> Result<Vec<Outcome>, mld_pki::PkiError> {
    let now = OffsetDateTime::now_utc();
    let outcomes = if force { mld_pki::store::reissue(dir, plan, now)? } else { mld_pki::store::provision(dir, plan, now)? };
    for outcome in &outcomes {
        let file = outcome.file.display();
        match &outcome.step {
            Step::Kept => {}
            Step::Created => info!(file = %file, "certificate created"),
            Step::Renewed(why) => info!(file = %file, why = %why, "certificate renewed"),
            Step::DueWithoutCa(why) => {
                warn!(file = %file, why = %why, "certificate due for renewal, and the CA's key is not on this node: install a new bundle (mldefender pki issue)")
            }
        }
    }
    Ok(outcomes)
}

/// The running supervisor's check of `[pki]`: every [`CHECK_EVERY`], provisioning again,
/// so that a leaf is renewed (local CA) or warned about (external CA) without a restart.
#[derive(Debug)]
pub struct Watch {
    dir: PathBuf,
    plan: Plan,
    every: StdDuration,
    next: Instant,
}

impl Watch {
    /// `None` when `[pki]` is off.
    pub fn new(config: &Config, now: Instant, every: StdDuration) -> Option<Watch> {
        config.pki.enabled.then(|| Watch { dir: config.pki.dir.clone(), plan: plan(config), every, next: now + every })
    }

    /// Provisions when the check is due; returns whether it ran.
    pub fn poll(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + self.every;
        if let Err(failure) = provision_plan(&self.dir, &self.plan, false) {
            error!(error = %failure, "certificates not provisioned ([pki]); `mldefender pki status` shows what is there");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_check_provisions_when_due_and_not_before() {
        let dir = tempfile::tempdir().expect("dir");
        let pki = dir.path().join("pki");
        let config = Config::from_toml(&format!("[log]\nnode = \"box-1\"\n[pki]\nenabled = true\ndir = \"{}\"\n", pki.display()), "test").expect("config");
        assert!(Watch::new(&Config::default(), Instant::now(), CHECK_EVERY).is_none(), "off by default");
        let start = Instant::now();
        let mut watch = Watch::new(&config, start, StdDuration::from_secs(60)).expect("on");
        assert!(!watch.poll(start + StdDuration::from_secs(59)), "not yet due");
        assert!(!pki.join("etcd-client.pem").exists());
        assert!(watch.poll(start + StdDuration::from_secs(60)), "due");
        assert!(pki.join("etcd-client.pem").exists() && pki.join("ca.pem").exists(), "provisioned");
        assert!(!watch.poll(start + StdDuration::from_secs(61)), "the next check is a period later");
    }
}
