//! `[pki]`: this node's certificates (the `mld-pki` crate, certs/README.md), provisioned
//! at supervisor start. Raw (as written) and validated forms side by side.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::validate::in_range;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawPki {
    /// Provision this node's certificates when the supervisor starts.
    pub enabled: bool,
    /// Directory of the CA bundle, the certificates and their keys.
    pub dir: String,
    /// Where the CA lives: "local" (created here when missing) or "external" (the
    /// operator machine; certificates arrive as a bundle).
    pub ca: String,
    /// The CA's common name, when it is created here.
    pub ca_name: String,
    /// Lifetime of a CA created here. Days.
    pub ca_days: i64,
    /// Lifetime of the leaves; renewed at two thirds of it. Days.
    pub leaf_days: i64,
    /// Issue an etcd member's server and peer certificates for this node.
    pub etcd_member: bool,
    /// SANs of the member certificates: DNS names or IP addresses.
    pub etcd_sans: Vec<String>,
    /// How often the running supervisor checks the certificates again. Seconds.
    pub check_interval_secs: i64,
}

impl Default for RawPki {
    fn default() -> RawPki {
        RawPki {
            enabled: false,
            dir: "/var/lib/mldefender/pki".to_string(),
            ca: "local".to_string(),
            ca_name: "ml-defender CA".to_string(),
            ca_days: 3650,
            leaf_days: 90,
            etcd_member: false,
            etcd_sans: vec!["localhost".to_string(), "127.0.0.1".to_string()],
            check_interval_secs: 3600,
        }
    }
}

/// The validated `[pki]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiConfig {
    pub enabled: bool,
    pub dir: PathBuf,
    pub local_ca: bool,
    pub ca_name: String,
    pub ca_lifetime: Duration,
    pub leaf_lifetime: Duration,
    /// SANs of the etcd member certificates; `None` when the node runs no member.
    pub etcd_member_sans: Option<Vec<String>>,
    /// How often the running supervisor checks (and renews) the certificates, and hands a
    /// changed client certificate to the fleet task.
    pub check_interval: Duration,
}

pub(crate) fn validate_pki(raw: &RawPki, errors: &mut Vec<ConfigError>) -> PkiConfig {
    if !raw.dir.starts_with('/') {
        errors.push(ConfigError::new("pki.dir", format!("must be an absolute path, got \"{}\"", raw.dir)));
    }
    let local_ca = match raw.ca.as_str() {
        "local" => true,
        "external" => false,
        other => {
            errors.push(ConfigError::new("pki.ca", format!("must be \"local\" or \"external\", got \"{other}\"")));
            true
        }
    };
    if raw.ca_name.trim().is_empty() || raw.ca_name.len() > 64 {
        errors.push(ConfigError::new("pki.ca-name", format!("must be 1 to 64 characters, got \"{}\"", raw.ca_name)));
    }
    let ca_days = in_range(raw.ca_days, 2, 36_500, "pki.ca-days", errors);
    let leaf_days = in_range(raw.leaf_days, 1, 3650, "pki.leaf-days", errors);
    if raw.leaf_days >= raw.ca_days && raw.ca_days >= 2 {
        errors.push(ConfigError::new(
            "pki.leaf-days",
            format!("must be below pki.ca-days ({}), got {}: a leaf cannot outlive its CA", raw.ca_days, raw.leaf_days),
        ));
    }
    for (index, san) in raw.etcd_sans.iter().enumerate() {
        if san.parse::<IpAddr>().is_err() && !is_dns_name(san) {
            errors.push(ConfigError::new(format!("pki.etcd-sans[{index}]"), format!("must be a DNS name or an IP address, got \"{san}\"")));
        }
    }
    if raw.etcd_member && raw.etcd_sans.is_empty() {
        errors.push(ConfigError::new("pki.etcd-sans", "must name at least one DNS name or address when pki.etcd-member is true"));
    }
    PkiConfig {
        enabled: raw.enabled,
        dir: PathBuf::from(&raw.dir),
        local_ca,
        ca_name: raw.ca_name.clone(),
        ca_lifetime: Duration::from_secs(ca_days * 86_400),
        leaf_lifetime: Duration::from_secs(leaf_days * 86_400),
        etcd_member_sans: raw.etcd_member.then(|| raw.etcd_sans.clone()),
        check_interval: Duration::from_secs(in_range(raw.check_interval_secs, 1, 86_400, "pki.check-interval-secs", errors)),
    }
}

/// A host name as a certificate carries it: labels of letters, digits and hyphens, not
/// starting or ending with a hyphen, up to 253 characters.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use crate::Config;

    #[test]
    fn pki_keys_are_checked_and_every_error_is_listed() {
        let config = Config::from_toml("", "x").expect("defaults");
        assert!(!config.pki.enabled && config.pki.local_ca);
        assert_eq!(config.pki.leaf_lifetime.as_secs(), 90 * 86_400);
        assert_eq!(config.pki.etcd_member_sans, None);
        let member = Config::from_toml("[pki]\nenabled = true\netcd-member = true\netcd-sans = [\"etcd-1.lab\", \"10.77.0.1\"]\n", "x").expect("member");
        assert_eq!(member.pki.etcd_member_sans, Some(vec!["etcd-1.lab".to_string(), "10.77.0.1".to_string()]));
        let errors =
            Config::from_toml("[pki]\ndir = \"pki\"\nca = \"remote\"\nca-days = 30\nleaf-days = 30\netcd-sans = [\"bad name!\"]\n", "x").expect_err("invalid");
        let paths: Vec<&str> = errors.errors.iter().map(|error| error.path.as_str()).collect();
        assert_eq!(paths, vec!["pki.dir", "pki.ca", "pki.leaf-days", "pki.etcd-sans[0]"], "{errors}");
    }
}
