//! `[fleet]`: sharing blocks with other appliances over etcd with mutual TLS (ADR 0008).
//! Raw (as written) and validated forms side by side.

use std::time::Duration;

use mld_types::DenyReason;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::validate::in_range;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawFleet {
    /// Run the fleet task: join the fleet's etcd cluster as `log.node`.
    pub enabled: bool,
    /// The etcd cluster's client URLs, `https://HOST:PORT` (mutual TLS only).
    pub endpoints: Vec<String>,
    /// The name the etcd members' server certificates carry (checked by TLS); empty: the
    /// host of each endpoint.
    pub server_name: String,
    /// Publish the blocks this node decides.
    pub publish: bool,
    /// Apply the blocks other nodes publish (judged by this node's protections first).
    pub receive: bool,
    /// The categories accepted from other nodes (scan, flood, brute-force, slow, other,
    /// manual).
    pub accept: Vec<String>,
    /// The membership lease: a node silent this long leaves the member list. Seconds.
    pub lease_secs: i64,
    /// How long a connection attempt or a request may take. Milliseconds.
    pub request_timeout_ms: i64,
    /// The operator's Ed25519 public key (base64) that fleet configuration documents under
    /// `/mld/config` must be signed with; empty: documents are refused.
    pub operator_public_key: String,
}

impl Default for RawFleet {
    fn default() -> RawFleet {
        RawFleet {
            enabled: false,
            endpoints: Vec::new(),
            server_name: String::new(),
            publish: true,
            receive: true,
            accept: ["scan", "flood", "brute-force", "slow", "other"].map(String::from).to_vec(),
            lease_secs: 10,
            request_timeout_ms: 2000,
            operator_public_key: String::new(),
        }
    }
}

/// The validated `[fleet]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    pub enabled: bool,
    pub endpoints: Vec<String>,
    pub server_name: Option<String>,
    pub publish: bool,
    pub receive: bool,
    pub accept: Vec<DenyReason>,
    pub lease: Duration,
    pub request_timeout: Duration,
    /// `None`: configuration documents are refused.
    pub operator_public_key: Option<String>,
}

/// Checks `[fleet]`; `node_configured` and `pki_enabled` say whether `log.node` was set and
/// `[pki]` is on (a fleet needs both: the node name is the etcd user, the certificates its
/// identity).
pub(crate) fn validate_fleet(raw: &RawFleet, node: &str, node_configured: bool, pki_enabled: bool, errors: &mut Vec<ConfigError>) -> FleetConfig {
    for (index, endpoint) in raw.endpoints.iter().enumerate() {
        if let Err(why) = check_endpoint(endpoint) {
            errors.push(ConfigError::new(format!("fleet.endpoints[{index}]"), why));
        }
    }
    let mut accept = Vec::new();
    for (index, name) in raw.accept.iter().enumerate() {
        match DenyReason::parse(name) {
            Some(reason) if !accept.contains(&reason) => accept.push(reason),
            Some(_) => errors.push(ConfigError::new(format!("fleet.accept[{index}]"), format!("\"{name}\" is listed twice"))),
            None => errors.push(ConfigError::new(
                format!("fleet.accept[{index}]"),
                format!("must be one of scan, flood, brute-force, slow, other, manual, got \"{name}\""),
            )),
        }
    }
    if raw.enabled {
        if raw.endpoints.is_empty() {
            errors.push(ConfigError::new("fleet.endpoints", "must list at least one etcd client URL when fleet.enabled is true"));
        }
        if !node_configured {
            errors.push(ConfigError::new(
                "log.node",
                "must be set when fleet.enabled is true: the node name is this appliance's etcd user and the CN of its certificate, so it must be unique in the fleet",
            ));
        } else if node.parse::<mld_fleet::schema::NodeName>().is_err() {
            errors.push(ConfigError::new(
                "log.node",
                format!("must be 1 to 63 lowercase letters, digits or `-` when fleet.enabled is true (it is an etcd user and a key segment), got \"{node}\""),
            ));
        }
        if !pki_enabled {
            errors.push(ConfigError::new(
                "pki.enabled",
                "must be true when fleet.enabled is true: the fleet task proves who it is with the certificates [pki] provisions",
            ));
        }
    }
    FleetConfig {
        enabled: raw.enabled,
        endpoints: raw.endpoints.clone(),
        server_name: (!raw.server_name.is_empty()).then(|| raw.server_name.clone()),
        publish: raw.publish,
        receive: raw.receive,
        accept,
        lease: Duration::from_secs(in_range(raw.lease_secs, 2, 300, "fleet.lease-secs", errors)),
        request_timeout: Duration::from_millis(in_range(raw.request_timeout_ms, 100, 60_000, "fleet.request-timeout-ms", errors)),
        operator_public_key: match raw.operator_public_key.trim() {
            "" => None,
            key if is_public_key(key) => Some(key.to_string()),
            key => {
                errors.push(ConfigError::new("fleet.operator-public-key", format!("must be the base64 of a 32-byte Ed25519 public key, got \"{key}\"")));
                None
            }
        },
    }
}

/// Base64 (standard alphabet, padded) of 32 bytes: 44 characters ending in one `=`.
pub(crate) fn is_public_key(text: &str) -> bool {
    text.len() == 44 && text.ends_with('=') && !text[..43].contains('=') && text[..43].chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
}

/// The sections a fleet configuration document may set: fleet-wide policy. A node's
/// identity and plumbing (`[log]`, `[pki]`, `[fleet]`, `[capture]`, `[tasks]`,
/// `[supervisor]`, `[system]`, `[ingest]`, `[output]`) stay its own.
pub const FLEET_SECTIONS: &[&str] = &["allowlist", "response", "detect", "guard", "flow", "windows"];

/// `local` (a node's configuration) with a fleet document's TOML laid over it, table by
/// table (a key the document sets replaces the node's), or every reason it cannot be.
/// The result is then checked as `config check` checks a file.
pub fn overlay(local: &str, document: &str) -> Result<String, Vec<String>> {
    let mut base: toml::Table = local.parse().map_err(|error| vec![format!("the node's configuration: {error}")])?;
    let overlay: toml::Table = document.parse().map_err(|error| vec![format!("the document: {error}")])?;
    let refused: Vec<String> = overlay
        .keys()
        .filter(|section| !FLEET_SECTIONS.contains(&section.as_str()))
        .map(|section| format!("`{section}`: a fleet document may set only {}; this section stays each node's own", FLEET_SECTIONS.join(", ")))
        .collect();
    if !refused.is_empty() {
        return Err(refused);
    }
    fn merge(base: &mut toml::Table, overlay: toml::Table) {
        for (key, value) in overlay {
            match (base.get_mut(&key), value) {
                (Some(toml::Value::Table(existing)), toml::Value::Table(table)) => merge(existing, table),
                (_, value) => {
                    base.insert(key, value);
                }
            }
        }
    }
    merge(&mut base, overlay);
    toml::to_string(&base).map_err(|error| vec![format!("the merged configuration: {error}")])
}

/// An etcd client URL as the fleet accepts it: `https://HOST:PORT`, nothing after.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let Some(rest) = endpoint.strip_prefix("https://") else {
        return Err(format!("must start with https:// (the fleet speaks mutual TLS only), got \"{endpoint}\""));
    };
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| format!("must name a port (https://HOST:PORT), got \"{endpoint}\""))?;
    if host.is_empty() || host.contains('/') {
        return Err(format!("must be https://HOST:PORT with no path, got \"{endpoint}\""));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(()),
        _ => Err(format!("has no valid port (1-65535), got \"{endpoint}\"")),
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    #[test]
    fn a_fleet_document_sets_policy_over_the_nodes_own_configuration_and_nothing_else() {
        let local = "[log]\nnode = \"gw-a\"\n[response]\nttl-scan-secs = 600\nttl-flood-secs = 300\n";
        let merged = super::overlay(local, "[response]\nttl-scan-secs = 120\n").expect("policy");
        let config = Config::from_toml(&merged, "merged").expect("valid");
        assert_eq!(config.response.ttl_scan.as_secs(), 120, "the document's key");
        assert_eq!(config.response.ttl_flood.as_secs(), 300, "the node's other keys stay");
        assert_eq!(config.log.node, "gw-a", "its identity stays");
        let refused = super::overlay(local, "[log]\nnode = \"gw-b\"\n[pki]\nenabled = false\n[response]\nttl-scan-secs = 1\n").expect_err("identity");
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(refused[0].starts_with("`log`") && refused[1].starts_with("`pki`"), "{refused:?}");
    }

    #[test]
    fn a_fleet_needs_endpoints_a_node_name_and_the_pki_and_every_error_is_listed() {
        let defaults = Config::from_toml("", "x").expect("defaults");
        assert!(!defaults.fleet.enabled);
        assert_eq!(defaults.fleet.accept.len(), 5, "every detected category, not manual blocks");
        let fleet_task = defaults.tasks.iter().find(|task| task.kind == crate::TaskKind::Fleet).expect("a fleet task");
        assert!(!fleet_task.enabled, "the fleet task runs only with [fleet] on");
        let errors = Config::from_toml(
            "[fleet]\nenabled = true\nendpoints = [\"http://10.0.0.1:2379\", \"https://etcd-1\", \"https://etcd-2:0\"]\naccept = [\"scan\", \"worm\"]\n",
            "x",
        )
        .expect_err("invalid");
        let paths: Vec<&str> = errors.errors.iter().map(|error| error.path.as_str()).collect();
        assert_eq!(paths, vec!["fleet.endpoints[0]", "fleet.endpoints[1]", "fleet.endpoints[2]", "fleet.accept[1]", "log.node", "pki.enabled"], "{errors}");
        let on = Config::from_toml(
            "[log]\nnode = \"gw-1\"\n[pki]\nenabled = true\n[fleet]\nenabled = true\nendpoints = [\"https://10.77.0.1:2379\"]\naccept = [\"scan\"]\n",
            "x",
        )
        .expect("valid");
        assert_eq!(on.fleet.accept, vec![mld_types::DenyReason::Scan]);
        assert!(on.tasks.iter().any(|task| task.kind == crate::TaskKind::Fleet && task.enabled));
    }
}
