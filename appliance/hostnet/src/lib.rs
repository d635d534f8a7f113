//! What the host's network looks like, as the appliance's defences need it: its own
//! addresses, its routes (which prefixes live behind which interface), the next hops of
//! its default routes, and the resolvers it uses.
//!
//! Reading is at the edge ([`HostNet::read`]: `/proc/self/net/route`,
//! `/proc/self/net/ipv6_route`, `getifaddrs`, `/etc/resolv.conf`); every format is parsed
//! by a pure function tested with plain text. The routes are those of the main table as
//! `/proc` shows them, in the reader's network namespace.
//!
//! This crate never changes anything: it only reads.

mod protected;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use mld_types::IpPrefix;

pub use protected::{is_unicast, Protected, Protection};

/// One route: traffic to `prefix` leaves through `iface` (via `gateway` when set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub iface: String,
    pub prefix: IpPrefix,
    pub gateway: Option<IpAddr>,
}

impl Route {
    pub fn is_default(&self) -> bool {
        self.prefix.is_empty()
    }
}

/// A snapshot of the host's network facts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostNet {
    /// Every address configured on an interface, with the interface's name.
    pub addresses: Vec<(String, IpAddr)>,
    pub routes: Vec<Route>,
    /// The `nameserver` lines of the resolver configuration files read.
    pub resolvers: Vec<IpAddr>,
}

/// Resolver configuration files read, in order; each that exists is parsed. The second
/// is where systemd-resolved keeps the real upstream servers when the first names its
/// stub (127.0.0.53).
pub const RESOLV_CONF_PATHS: [&str; 2] = ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"];

impl HostNet {
    /// Reads the facts of the network namespace this process is in. Files that do not
    /// exist (no IPv6, no resolver) give nothing; nothing here fails.
    pub fn read() -> HostNet {
        let text = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let mut routes = parse_ipv4_routes(&text("/proc/self/net/route"));
        routes.extend(parse_ipv6_routes(&text("/proc/self/net/ipv6_route")));
        let mut resolvers = Vec::new();
        for path in RESOLV_CONF_PATHS {
            if Path::new(path).exists() {
                for resolver in parse_resolv_conf(&text(path)) {
                    if !resolvers.contains(&resolver) {
                        resolvers.push(resolver);
                    }
                }
            }
        }
        HostNet { addresses: interface_addresses(), routes, resolvers }
    }

    /// The host's own addresses, of every interface.
    pub fn own_addresses(&self) -> Vec<IpAddr> {
        let mut own: Vec<IpAddr> = self.addresses.iter().map(|(_, addr)| *addr).collect();
        own.sort();
        own.dedup();
        own
    }

    /// The next hops of the default routes.
    pub fn default_gateways(&self) -> Vec<IpAddr> {
        let mut gateways: Vec<IpAddr> = self.routes.iter().filter(|route| route.is_default()).filter_map(|route| route.gateway).collect();
        gateways.sort();
        gateways.dedup();
        gateways
    }

    /// The prefixes routed out of `iface` (connected or through a router behind it),
    /// default routes left out: the sources that may arrive there under strict reverse
    /// path filtering.
    pub fn prefixes_behind(&self, iface: &str) -> Vec<IpPrefix> {
        let mut prefixes: Vec<IpPrefix> = self.routes.iter().filter(|route| route.iface == iface && !route.is_default()).map(|route| route.prefix).collect();
        prefixes.sort();
        prefixes.dedup();
        prefixes
    }
}

/// Sources that are legitimate on any link whatever its routes: DHCP's unspecified
/// IPv4 source, IPv6 duplicate address detection's unspecified source, and IPv6
/// link-local addresses (neighbour discovery, DHCPv6, router advertisements).
pub fn link_local_sources() -> Vec<IpPrefix> {
    [(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 32), (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 128), (IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)), 10)]
        .into_iter()
        .filter_map(|(addr, len)| IpPrefix::new(addr, len).ok())
        .collect()
}

/// Parses `/proc/net/route` (IPv4, main table): usable routes only (up, not rejected).
pub fn parse_ipv4_routes(text: &str) -> Vec<Route> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    const RTF_REJECT: u32 = 0x200;
    let hex_addr = |field: &str| u32::from_str_radix(field, 16).ok().map(|value| Ipv4Addr::from(value.to_ne_bytes()));
    let mut routes = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [iface, destination, gateway, flags, _refcnt, _use, _metric, mask, ..] = fields.as_slice() else { continue };
        let (Some(destination), Some(gateway), Ok(flags), Some(mask)) =
            (hex_addr(destination), hex_addr(gateway), u32::from_str_radix(flags, 16), hex_addr(mask))
        else {
            continue;
        };
        if flags & RTF_UP == 0 || flags & RTF_REJECT != 0 {
            continue;
        }
        let len = u32::from(mask).count_ones() as u8;
        let Ok(prefix) = IpPrefix::new(IpAddr::V4(destination), len) else { continue };
        let gateway = (flags & RTF_GATEWAY != 0 && !gateway.is_unspecified()).then_some(IpAddr::V4(gateway));
        routes.push(Route { iface: (*iface).to_string(), prefix, gateway });
    }
    routes
}

/// Parses `/proc/net/ipv6_route`: unicast routes only (local, anycast, rejected and
/// multicast routes left out).
pub fn parse_ipv6_routes(text: &str) -> Vec<Route> {
    const RTF_UP: u32 = 0x1;
    const RTF_REJECT: u32 = 0x200;
    const RTF_ANYCAST: u32 = 0x0010_0000;
    const RTF_LOCAL: u32 = 0x8000_0000;
    let hex_addr = |field: &str| u128::from_str_radix(field, 16).ok().filter(|_| field.len() == 32).map(Ipv6Addr::from);
    let mut routes = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [destination, length, _src, _src_len, next_hop, _metric, _refcnt, _use, flags, iface] = fields.as_slice() else { continue };
        let (Some(destination), Ok(length), Some(next_hop), Ok(flags)) =
            (hex_addr(destination), u8::from_str_radix(length, 16), hex_addr(next_hop), u32::from_str_radix(flags, 16))
        else {
            continue;
        };
        if flags & RTF_UP == 0 || flags & (RTF_REJECT | RTF_ANYCAST | RTF_LOCAL) != 0 || destination.is_multicast() || *iface == "lo" {
            continue;
        }
        let Ok(prefix) = IpPrefix::new(IpAddr::V6(destination), length) else { continue };
        let gateway = (!next_hop.is_unspecified()).then_some(IpAddr::V6(next_hop));
        routes.push(Route { iface: (*iface).to_string(), prefix, gateway });
    }
    routes
}

/// The `nameserver` addresses of a resolv.conf (a scope suffix like `%eth0` dropped).
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()).flatten()
        })
        .filter_map(|word| word.split('%').next().and_then(|addr| addr.parse().ok()))
        .collect()
}

fn interface_addresses() -> Vec<(String, IpAddr)> {
    let mut addresses = Vec::new();
    if let Ok(interfaces) = nix::ifaddrs::getifaddrs() {
        for interface in interfaces {
            let Some(address) = interface.address else { continue };
            if let Some(v4) = address.as_sockaddr_in() {
                addresses.push((interface.interface_name.clone(), IpAddr::V4(v4.ip())));
            } else if let Some(v6) = address.as_sockaddr_in6() {
                addresses.push((interface.interface_name.clone(), IpAddr::V6(v6.ip())));
            }
        }
    }
    addresses
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE_V4: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        wan0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
        wan0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
        lan0\t0002420A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
        lan0\t0000460A\tFE02420A\t0003\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
        lan0\t0000500A\t00000000\t0201\t0\t0\t0\t0000FFFF\t0\t0\t0\n";

    const ROUTE_V6: &str = "\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     lan0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     lan0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     wan0
fd000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001     lan0
ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     lan0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000001 00000000 80200001       lo
";

    fn prefix(text: &str) -> IpPrefix {
        text.parse().expect("prefix")
    }

    #[test]
    fn ipv4_routes_give_the_prefixes_behind_each_interface_and_the_default_gateway() {
        let net = HostNet { routes: parse_ipv4_routes(ROUTE_V4), ..HostNet::default() };
        assert_eq!(net.prefixes_behind("lan0"), vec![prefix("10.66.2.0/24"), prefix("10.70.0.0/16")], "a rejected route is not a path");
        assert_eq!(net.prefixes_behind("wan0"), vec![prefix("10.0.0.0/24")], "the default route is never a source prefix");
        assert_eq!(net.default_gateways(), vec!["10.0.0.1".parse::<IpAddr>().expect("addr")]);
    }

    #[test]
    fn ipv6_routes_leave_out_local_multicast_and_loopback_entries() {
        let net = HostNet { routes: parse_ipv6_routes(ROUTE_V6), ..HostNet::default() };
        assert_eq!(net.prefixes_behind("lan0"), vec![prefix("fd00::/64"), prefix("fe80::/64")]);
        assert_eq!(net.default_gateways(), vec!["fe80::1".parse::<IpAddr>().expect("addr")]);
        assert!(net.prefixes_behind("lo").is_empty());
    }

    #[test]
    fn resolv_conf_nameservers_are_read_with_scopes_dropped() {
        let text = "# generated\nsearch lab\nnameserver 10.66.3.2\nnameserver fe80::53%lan0\nnameserver not-an-address\noptions ndots:1\n";
        let expected: Vec<IpAddr> = vec!["10.66.3.2".parse().expect("addr"), "fe80::53".parse().expect("addr")];
        assert_eq!(parse_resolv_conf(text), expected);
    }

    #[test]
    fn garbage_lines_are_skipped_not_fatal() {
        assert!(parse_ipv4_routes("header\nshort line\nlan0 zz 00 0001 0 0 0 00\n").is_empty());
        assert!(parse_ipv6_routes("one two three\n").is_empty());
    }

    #[test]
    fn link_local_sources_cover_dhcp_and_neighbour_discovery() {
        let sources = link_local_sources();
        for host in ["0.0.0.0", "::", "fe80::1234"] {
            let host = IpPrefix::host(host.parse().expect("addr"));
            assert!(sources.iter().any(|source| source.covers(&host)), "{host}");
        }
        assert!(!sources.iter().any(|source| source.covers(&IpPrefix::host("10.0.0.1".parse().expect("addr")))));
    }
}
