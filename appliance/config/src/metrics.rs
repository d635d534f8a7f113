//! `[metrics]`: the operator interfaces the supervisor serves over HTTP on the management
//! network (docs/operations.md): Prometheus metrics at `/metrics`, the read-only status page
//! at `/` and its JSON at `/api/...`. Off by default. Raw (as written) and validated forms.

use std::net::SocketAddr;

use mld_types::IpPrefix;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// At most this many listening addresses.
const LISTEN_MAX: usize = 8;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawMetrics {
    /// Serve the metrics and the status page. Off by default.
    pub enabled: bool,
    /// The management addresses to listen on, each `ADDRESS:PORT` (`[::1]:9464` for IPv6).
    /// A wildcard (`0.0.0.0`, `::`) is refused: the listener answers on the management
    /// network only. Required when enabled.
    pub listen: Vec<String>,
    /// Clients answered, as addresses or CIDR prefixes; a connection from any other is
    /// closed unanswered. Required when a listen address is not loopback; empty (loopback
    /// only): every local client. These
    /// clients are management hosts: like `response.management-prefixes`, never blocked
    /// (a scraper's regular connections must not get it blocked).
    pub allow_from: Vec<String>,
}

/// The validated `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub listen: Vec<SocketAddr>,
    pub allow_from: Vec<IpPrefix>,
}

impl MetricsConfig {
    /// Whether `client` may be answered.
    pub fn admits(&self, client: std::net::IpAddr) -> bool {
        let client = IpPrefix::host(client.to_canonical());
        self.allow_from.is_empty() || self.allow_from.iter().any(|prefix| prefix.covers(&client))
    }
}

pub(crate) fn validate_metrics(raw: &RawMetrics, errors: &mut Vec<ConfigError>) -> MetricsConfig {
    let mut listen = Vec::new();
    for (index, text) in raw.listen.iter().enumerate() {
        let path = format!("metrics.listen[{index}]");
        match text.parse::<SocketAddr>() {
            // `[::ffff:0.0.0.0]` is the IPv4 wildcard too.
            Ok(address) if address.ip().to_canonical().is_unspecified() => errors.push(ConfigError::new(
                path,
                format!("\"{text}\" is a wildcard: name a management address (the listener must not answer on the protected networks)"),
            )),
            Ok(address) if address.ip().to_canonical().is_multicast() => errors.push(ConfigError::new(path, format!("\"{text}\" is a multicast address"))),
            Ok(address) if address.port() == 0 => errors.push(ConfigError::new(path, format!("\"{text}\" needs a port other than 0"))),
            Ok(address) if listen.contains(&address) => errors.push(ConfigError::new(path, format!("\"{text}\" is listed twice"))),
            Ok(address) => listen.push(address),
            Err(_) => errors.push(ConfigError::new(path, format!("must be ADDRESS:PORT (IPv6 as [ADDRESS]:PORT), got \"{text}\""))),
        }
    }
    if raw.listen.len() > LISTEN_MAX {
        errors.push(ConfigError::new("metrics.listen", format!("at most {LISTEN_MAX} addresses, got {}", raw.listen.len())));
    }
    if raw.enabled && raw.listen.is_empty() {
        errors.push(ConfigError::new("metrics.listen", "must name at least one management address when metrics.enabled is true"));
    }
    let mut allow_from = Vec::new();
    for (index, text) in raw.allow_from.iter().enumerate() {
        match text.parse::<IpPrefix>() {
            Ok(prefix) if prefix.is_empty() => errors.push(ConfigError::new(
                format!("metrics.allow-from[{index}]"),
                format!("\"{text}\" admits everyone and would protect every source from blocking (the clients are management hosts); leave the list empty to admit any client"),
            )),
            Ok(prefix) => allow_from.push(prefix),
            Err(reason) => errors.push(ConfigError::new(format!("metrics.allow-from[{index}]"), reason)),
        }
    }
    // The appliance cannot tell its management network from the networks it protects: a
    // listener beyond loopback must say who may use it.
    if raw.enabled && allow_from.is_empty() && raw.allow_from.is_empty() && listen.iter().any(|address| !address.ip().to_canonical().is_loopback()) {
        errors.push(ConfigError::new(
            "metrics.allow-from",
            "must name the management hosts (addresses or prefixes) when a listen address is not loopback: the appliance cannot tell its management network from the networks it protects",
        ));
    }
    MetricsConfig { enabled: raw.enabled, listen, allow_from }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: RawMetrics) -> Result<MetricsConfig, Vec<String>> {
        let mut errors = Vec::new();
        let config = validate_metrics(&raw, &mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors.iter().map(ToString::to_string).collect())
        }
    }

    #[test]
    fn a_wildcard_or_missing_listener_is_refused_with_every_reason() {
        let raw = RawMetrics {
            enabled: true,
            listen: vec!["0.0.0.0:9464".into(), "[::]:9464".into(), "10.0.0.1".into(), "10.0.0.1:0".into(), "[::ffff:0.0.0.0]:9464".into()],
            allow_from: vec!["10.0.0.0/33".into()],
        };
        let errors = check(raw).expect_err("refused");
        assert_eq!(errors.len(), 6, "{errors:?}");
        assert!(errors[4].contains("metrics.listen[4]") && errors[4].contains("wildcard"), "{errors:?}");
        assert!(errors[0].contains("metrics.listen[0]") && errors[0].contains("wildcard"), "{errors:?}");
        assert!(errors[2].contains("ADDRESS:PORT"), "{errors:?}");
        assert!(errors[5].contains("metrics.allow-from[0]"), "{errors:?}");
        let errors = check(RawMetrics { enabled: true, ..RawMetrics::default() }).expect_err("refused");
        assert!(errors[0].contains("at least one"), "{errors:?}");
    }

    #[test]
    fn only_the_listed_clients_are_admitted() {
        let config = check(RawMetrics { enabled: true, listen: vec!["127.0.0.1:9464".into()], allow_from: vec!["10.9.0.0/16".into()] }).expect("valid");
        assert!(config.admits("10.9.3.4".parse().expect("an address")));
        assert!(!config.admits("10.8.3.4".parse().expect("an address")));
        let local = check(RawMetrics { enabled: true, listen: vec!["[::1]:9464".into()], allow_from: vec![] }).expect("valid");
        assert!(local.admits("::1".parse().expect("an address")));
        // Beyond loopback, who may use it must be said.
        let errors = check(RawMetrics { enabled: true, listen: vec!["10.0.0.1:9464".into()], allow_from: vec![] }).expect_err("refused");
        assert!(errors[0].contains("metrics.allow-from") && errors[0].contains("not loopback"), "{errors:?}");
    }
}
