//! `[pki]` at supervisor start, while it runs, and for `mldefender pki renew`: what this
//! node's configuration asks of `mld-pki`.

use std::path::PathBuf;
use std::time::{Duration as StdDuration, Instant};

use mld_config::Config;
use mld_pki::store::{Outcome, Plan, Step};
use time::{Duration, OffsetDateTime};
use tracing::{error, info, warn};

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

/// The running supervisor's check of `[pki]`: every `pki.check-interval-secs` (an hour by
/// default: renewal starts two thirds into a leaf's lifetime, 60 of 90 days), provisioning
/// again, so that a leaf is renewed (local CA) or warned about (external CA) without a
/// restart, and noticing when the client certificate changed (renewed here, or a new
/// bundle copied in), for the fleet task.
#[derive(Debug)]
pub struct Watch {
    dir: PathBuf,
    plan: Plan,
    every: StdDuration,
    next: Instant,
    /// The client certificate's SHA-256 at the last check.
    client: Option<[u8; 32]>,
}

/// What one check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checked {
    /// The check was due and ran.
    pub ran: bool,
    /// The client certificate differs from the last check's.
    pub client_changed: bool,
}

impl Watch {
    /// `None` when `[pki]` is off.
    pub fn new(config: &Config, now: Instant) -> Option<Watch> {
        config.pki.enabled.then(|| {
            let mut watch = Watch {
                dir: config.pki.dir.clone(),
                plan: plan(config),
                every: config.pki.check_interval,
                next: now + config.pki.check_interval,
                client: None,
            };
            watch.client = watch.client_digest();
            watch
        })
    }

    fn client_digest(&self) -> Option<[u8; 32]> {
        use sha2::Digest;
        let bytes = std::fs::read(self.dir.join(format!("{}.pem", mld_pki::store::CLIENT))).ok()?;
        Some(sha2::Sha256::digest(&bytes).into())
    }

    /// Provisions when the check is due.
    pub fn poll(&mut self, now: Instant) -> Checked {
        if now < self.next {
            return Checked::default();
        }
        self.next = now + self.every;
        if let Err(failure) = provision_plan(&self.dir, &self.plan, false) {
            error!(error = %failure, "certificates not provisioned ([pki]); `mldefender pki status` shows what is there");
        }
        let client = self.client_digest();
        let client_changed = client.is_some() && client != self.client;
        self.client = client;
        Checked { ran: true, client_changed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_check_provisions_when_due_and_not_before_and_sees_a_changed_client_certificate() {
        let dir = tempfile::tempdir().expect("dir");
        let pki = dir.path().join("pki");
        let text = format!("[log]\nnode = \"box-1\"\n[pki]\nenabled = true\ndir = \"{}\"\ncheck-interval-secs = 60\n", pki.display());
        let config = Config::from_toml(&text, "test").expect("config");
        assert!(Watch::new(&Config::default(), Instant::now()).is_none(), "off by default");
        let start = Instant::now();
        let mut watch = Watch::new(&config, start).expect("on");
        assert!(!watch.poll(start + StdDuration::from_secs(59)).ran, "not yet due");
        assert!(!pki.join("etcd-client.pem").exists());
        let first = watch.poll(start + StdDuration::from_secs(60));
        assert!(first.ran && first.client_changed, "due; the client certificate is new");
        assert!(pki.join("etcd-client.pem").exists() && pki.join("ca.pem").exists(), "provisioned");
        assert!(!watch.poll(start + StdDuration::from_secs(61)).ran, "the next check is a period later");
        let unchanged = watch.poll(start + StdDuration::from_secs(120));
        assert!(unchanged.ran && !unchanged.client_changed, "nothing changed");
        // A forced reissue (as `pki renew --force` does) is a new client certificate.
        provision_plan(&pki, &plan(&config), true).expect("reissue");
        assert!(watch.poll(start + StdDuration::from_secs(180)).client_changed, "the reissued certificate is seen");
    }
}
