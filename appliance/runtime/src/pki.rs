//! `[pki]` at supervisor start and for `mldefender pki renew`: what this node's
//! configuration asks of `mld-pki`.

use mld_config::Config;
use mld_pki::store::{Outcome, Plan, Step};
use time::{Duration, OffsetDateTime};
use tracing::{info, warn};

/// The certificates this node's configuration asks for.
pub fn plan(config: &Config) -> Plan {
    let days = |lifetime: std::time::Duration| Duration::seconds(lifetime.as_secs() as i64);
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
    let plan = plan(config);
    let now = OffsetDateTime::now_utc();
    let outcomes = if force { mld_pki::store::reissue(&config.pki.dir, &plan, now)? } else { mld_pki::store::provision(&config.pki.dir, &plan, now)? };
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
