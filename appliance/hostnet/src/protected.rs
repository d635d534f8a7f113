//! The sources that are never blocked, and why: the allowlist, the management prefixes
//! and critical servers of the configuration, and the infrastructure the site depends
//! on, read from the host (its own addresses, its resolvers, the next hops of its
//! default routes). The detect task refuses to decide a block on them; the capture task
//! refuses to write one that covers them, whatever it is told.

use std::net::IpAddr;

use mld_config::ResponseConfig;
use mld_types::IpPrefix;

use crate::HostNet;

/// Why a source may never be blocked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protection {
    /// Unspecified, multicast or broadcast: not an address a sender can be blocked by.
    NotUnicast,
    Allowlisted(IpPrefix),
    Management(IpPrefix),
    CriticalServer(IpPrefix),
    GatewayAddress,
    Resolver(IpAddr),
    DefaultGateway(IpAddr),
    /// Released by the operator and marked benign (`mldefender block del --benign`): the
    /// detect task's learned exemption, described (who, when, why, until when). Only the
    /// detect task knows these; [`Protected`] never returns it.
    MarkedBenign(String),
    /// The victim of a random-source flood (its service guarded now or lately), described;
    /// only the detect task knows these, from the capture task's guard reports.
    FloodVictim(String),
}

impl Protection {
    pub fn describe(&self) -> String {
        match self {
            Protection::NotUnicast => "not a unicast address (unspecified, multicast or broadcast)".to_string(),
            Protection::Allowlisted(prefix) => format!("allowlisted ({prefix})"),
            Protection::Management(prefix) => format!("management prefix ({prefix})"),
            Protection::CriticalServer(prefix) => format!("critical server ({prefix})"),
            Protection::GatewayAddress => "one of the gateway's own addresses".to_string(),
            Protection::Resolver(address) => format!("a resolver in use ({address})"),
            Protection::DefaultGateway(address) => format!("the next hop of a default route ({address})"),
            Protection::MarkedBenign(description) | Protection::FloodVictim(description) => description.clone(),
        }
    }
}

/// The protected sources. The configured part is fixed; the host's part follows
/// [`Protected::refresh`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protected {
    allowlist: Vec<IpPrefix>,
    management: Vec<IpPrefix>,
    critical: Vec<IpPrefix>,
    configured_resolvers: Vec<IpAddr>,
    protect_resolvers: bool,
    protect_gateways: bool,
    own: Vec<IpAddr>,
    resolvers: Vec<IpAddr>,
    gateways: Vec<IpAddr>,
}

impl Protected {
    /// The configured part, with nothing from the host yet.
    pub fn new(response: &ResponseConfig, allowlist: &[IpPrefix]) -> Protected {
        Protected {
            allowlist: allowlist.to_vec(),
            management: response.management_prefixes.clone(),
            critical: response.critical_servers.clone(),
            configured_resolvers: response.resolvers.clone(),
            protect_resolvers: response.protect_resolvers,
            protect_gateways: response.protect_default_gateways,
            ..Protected::default()
        }
    }

    /// The configured part and the host's facts now.
    pub fn from_host(response: &ResponseConfig, allowlist: &[IpPrefix], net: &HostNet) -> Protected {
        let mut protected = Protected::new(response, allowlist);
        protected.refresh(net);
        protected
    }

    /// Takes the host's facts again (addresses, resolvers, default gateways). Returns
    /// true when anything changed.
    pub fn refresh(&mut self, net: &HostNet) -> bool {
        let own = net.own_addresses();
        let resolvers = if !self.protect_resolvers {
            Vec::new()
        } else if self.configured_resolvers.is_empty() {
            net.resolvers.clone()
        } else {
            self.configured_resolvers.clone()
        };
        let gateways = if self.protect_gateways { net.default_gateways() } else { Vec::new() };
        let changed = own != self.own || resolvers != self.resolvers || gateways != self.gateways;
        self.own = own;
        self.resolvers = resolvers;
        self.gateways = gateways;
        changed
    }

    /// Sets the host's part directly (tests, replay).
    pub fn set_host_part(&mut self, own: Vec<IpAddr>, resolvers: Vec<IpAddr>, gateways: Vec<IpAddr>) {
        self.own = own;
        self.resolvers = if self.protect_resolvers { resolvers } else { Vec::new() };
        self.gateways = if self.protect_gateways { gateways } else { Vec::new() };
    }

    /// Why `source` may never be blocked, if it may not.
    pub fn of_address(&self, source: IpAddr) -> Option<Protection> {
        if !is_unicast(source) {
            return Some(Protection::NotUnicast);
        }
        if self.own.contains(&source) {
            return Some(Protection::GatewayAddress);
        }
        if let Some(resolver) = self.resolvers.iter().find(|resolver| **resolver == source) {
            return Some(Protection::Resolver(*resolver));
        }
        if let Some(gateway) = self.gateways.iter().find(|gateway| **gateway == source) {
            return Some(Protection::DefaultGateway(*gateway));
        }
        self.of_prefix(&IpPrefix::host(source))
    }

    /// Why a deny entry for `prefix` must not be written: it covers a protected address,
    /// or lies inside a protected prefix (or overlaps one).
    pub fn of_prefix(&self, prefix: &IpPrefix) -> Option<Protection> {
        let overlaps = |protected: &IpPrefix| protected.covers(prefix) || prefix.covers(protected);
        if let Some(found) = self.allowlist.iter().find(|protected| overlaps(protected)) {
            return Some(Protection::Allowlisted(*found));
        }
        if let Some(found) = self.management.iter().find(|protected| overlaps(protected)) {
            return Some(Protection::Management(*found));
        }
        if let Some(found) = self.critical.iter().find(|protected| overlaps(protected)) {
            return Some(Protection::CriticalServer(*found));
        }
        if prefix.len() < host_len(prefix.addr()) {
            if self.own.iter().any(|address| prefix.covers(&IpPrefix::host(*address))) {
                return Some(Protection::GatewayAddress);
            }
            if let Some(resolver) = self.resolvers.iter().find(|address| prefix.covers(&IpPrefix::host(**address))) {
                return Some(Protection::Resolver(*resolver));
            }
            if let Some(gateway) = self.gateways.iter().find(|address| prefix.covers(&IpPrefix::host(**address))) {
                return Some(Protection::DefaultGateway(*gateway));
            }
        } else if !is_unicast(prefix.addr()) {
            return Some(Protection::NotUnicast);
        } else if self.own.contains(&prefix.addr()) {
            return Some(Protection::GatewayAddress);
        } else if let Some(resolver) = self.resolvers.iter().find(|address| **address == prefix.addr()) {
            return Some(Protection::Resolver(*resolver));
        } else if let Some(gateway) = self.gateways.iter().find(|address| **address == prefix.addr()) {
            return Some(Protection::DefaultGateway(*gateway));
        }
        None
    }

    pub fn resolvers(&self) -> &[IpAddr] {
        &self.resolvers
    }

    pub fn default_gateways(&self) -> &[IpAddr] {
        &self.gateways
    }
}

fn host_len(address: IpAddr) -> u8 {
    if address.is_ipv4() {
        32
    } else {
        128
    }
}

/// An address a packet can come from: not unspecified, multicast or broadcast.
pub fn is_unicast(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    fn prefix(text: &str) -> IpPrefix {
        text.parse().expect("prefix")
    }

    fn protected() -> Protected {
        let mut response = mld_config::Config::from_toml("", "test").expect("defaults").response;
        response.management_prefixes = vec![prefix("192.0.2.0/24")];
        response.critical_servers = vec![prefix("10.66.3.80")];
        let mut protected = Protected::new(&response, &[prefix("10.66.1.0/24")]);
        protected.set_host_part(vec![ip("10.66.9.1")], vec![ip("10.66.3.2")], vec![ip("10.66.0.1")]);
        protected
    }

    #[test]
    fn every_kind_of_infrastructure_is_named() {
        let protected = protected();
        assert_eq!(protected.of_address(ip("10.66.3.2")), Some(Protection::Resolver(ip("10.66.3.2"))));
        assert_eq!(protected.of_address(ip("10.66.0.1")), Some(Protection::DefaultGateway(ip("10.66.0.1"))));
        assert_eq!(protected.of_address(ip("10.66.9.1")), Some(Protection::GatewayAddress));
        assert_eq!(protected.of_address(ip("10.66.3.80")), Some(Protection::CriticalServer(prefix("10.66.3.80"))));
        assert_eq!(protected.of_address(ip("10.66.1.7")), Some(Protection::Allowlisted(prefix("10.66.1.0/24"))));
        assert_eq!(protected.of_address(ip("192.0.2.9")), Some(Protection::Management(prefix("192.0.2.0/24"))));
        assert_eq!(protected.of_address(ip("255.255.255.255")), Some(Protection::NotUnicast));
        assert_eq!(protected.of_address(ip("10.66.2.2")), None);
    }

    #[test]
    fn a_prefix_that_covers_a_protected_address_is_refused() {
        let protected = protected();
        assert_eq!(protected.of_prefix(&prefix("10.66.3.0/24")), Some(Protection::CriticalServer(prefix("10.66.3.80"))));
        assert_eq!(protected.of_prefix(&prefix("0.0.0.0/0")), Some(Protection::Allowlisted(prefix("10.66.1.0/24"))));
        assert_eq!(protected.of_prefix(&prefix("10.66.0.0/24")), Some(Protection::DefaultGateway(ip("10.66.0.1"))));
        assert_eq!(protected.of_prefix(&prefix("10.66.1.0/28")), Some(Protection::Allowlisted(prefix("10.66.1.0/24"))));
        assert_eq!(protected.of_prefix(&prefix("10.66.2.0/24")), None);
    }

    #[test]
    fn switches_off_leave_resolvers_and_gateways_blockable() {
        let mut response = mld_config::Config::from_toml("", "test").expect("defaults").response;
        response.protect_resolvers = false;
        response.protect_default_gateways = false;
        let mut protected = Protected::new(&response, &[]);
        protected.set_host_part(Vec::new(), vec![ip("10.66.3.2")], vec![ip("10.66.0.1")]);
        assert_eq!(protected.of_address(ip("10.66.3.2")), None);
        assert_eq!(protected.of_address(ip("10.66.0.1")), None);
    }
}
