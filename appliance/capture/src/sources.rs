//! The source checks (reverse-path filtering in XDP): which sources may arrive on which
//! interface, planned from the configuration and the host's routes and addresses.

use std::net::IpAddr;

use mld_config::{CaptureConfig, SourceCheck};
use mld_hostnet::{link_local_sources, HostNet};
use mld_types::IpPrefix;

use crate::dataplane::SourcePlan;
use crate::maps::{source_check, source_verdict, SourceRule};

/// Plans the source checks of the configured interfaces:
/// - strict (a LAN by default): only the interface's `source-prefixes`, or, when none are
///   configured, the prefixes routed through it; plus the unspecified and link-local
///   sources every link needs (DHCP, neighbour discovery). A strict interface with no
///   prefix at all (no address yet) is checked loosely until it has some, and `notes`
///   says so;
/// - loose (a WAN by default): anything but the strict interfaces' prefixes;
/// - on every checked interface, the gateway's own addresses are forbidden as sources.
///
/// Interfaces that do not exist are left out (starting the data plane names them).
pub fn source_plan(config: &CaptureConfig, net: &HostNet) -> (SourcePlan, Vec<String>) {
    let ifindexes: Vec<(String, u32)> = config
        .interfaces
        .iter()
        .filter_map(|interface| nix::net::if_::if_nametoindex(interface.name.as_str()).ok().map(|index| (interface.name.clone(), index)))
        .collect();
    plan_sources(config, &ifindexes, net)
}

/// [`source_plan`] with the interfaces' indexes given (pure).
pub fn plan_sources(config: &CaptureConfig, ifindexes: &[(String, u32)], net: &HostNet) -> (SourcePlan, Vec<String>) {
    let mut notes = Vec::new();
    let mut resolved = Vec::new();
    for interface in &config.interfaces {
        let Some(ifindex) = ifindexes.iter().find(|(name, _)| *name == interface.name).map(|(_, index)| *index) else { continue };
        let mut mode = interface.source_check;
        let mut permitted = Vec::new();
        if mode == SourceCheck::Strict {
            permitted = if interface.source_prefixes.is_empty() { net.prefixes_behind(&interface.name) } else { interface.source_prefixes.clone() };
            if permitted.is_empty() {
                notes.push(format!("interface {} has no route yet: its sources are checked loosely until it has one", interface.name));
                mode = SourceCheck::Loose;
            }
        }
        resolved.push((interface.name.clone(), ifindex, mode, permitted));
    }
    let link_local = link_local_sources();
    let own: Vec<IpAddr> = net.own_addresses().into_iter().filter(|addr| !is_link_scoped(addr)).collect();
    let mut plan = SourcePlan::default();
    for (_, ifindex, mode, permitted) in &resolved {
        let code = match mode {
            SourceCheck::Strict => source_check::STRICT,
            SourceCheck::Loose => source_check::LOOSE,
            SourceCheck::Off => source_check::OFF,
        };
        plan.modes.push((*ifindex, code));
        let mut add = |prefix: IpPrefix, verdict: u32| {
            if !plan.rules.iter().any(|rule| rule.ifindex == *ifindex && rule.prefix == prefix) {
                plan.rules.push(SourceRule { ifindex: *ifindex, prefix, verdict });
            }
        };
        match mode {
            SourceCheck::Off => continue,
            SourceCheck::Strict => {
                for prefix in permitted.iter().chain(&link_local) {
                    add(*prefix, source_verdict::PERMIT);
                }
            }
            SourceCheck::Loose => {
                for (_, other_index, other_mode, other_permitted) in &resolved {
                    if other_index != ifindex && *other_mode == SourceCheck::Strict {
                        for prefix in other_permitted.iter().filter(|prefix| !link_local.iter().any(|local| local.covers(prefix))) {
                            add(*prefix, source_verdict::FORBID);
                        }
                    }
                }
            }
        }
        for addr in &own {
            add(IpPrefix::host(*addr), source_verdict::FORBID);
        }
    }
    (plan, notes)
}

/// Loopback and link-local addresses: meaningful on one link only, never forbidden as
/// another link's sources (a neighbour may use the same link-local address).
fn is_link_scoped(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mld_hostnet::{parse_ipv4_routes, parse_ipv6_routes};

    fn config(extra: &str) -> CaptureConfig {
        let text = format!(
            "[[capture.interfaces]]\nname = \"lan0\"\nrole = \"lan\"\n[[capture.interfaces]]\nname = \"lan1\"\nrole = \"lan\"\n{extra}\n[[capture.interfaces]]\nname = \"wan0\"\nrole = \"wan\"\n"
        );
        mld_config::Config::from_toml(&text, "test").expect("config").capture
    }

    fn net() -> HostNet {
        let v4 = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
                  lan0\t0002420A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                  wan0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  wan0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let v6 = "fd660002000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     lan0\n";
        let mut routes = parse_ipv4_routes(v4);
        routes.extend(parse_ipv6_routes(v6));
        HostNet {
            addresses: vec![("lan0".to_string(), "10.66.2.1".parse().expect("addr")), ("lan0".to_string(), "fe80::1".parse().expect("addr"))],
            routes,
            resolvers: Vec::new(),
        }
    }

    fn verdict(plan: &SourcePlan, ifindex: u32, prefix: &str) -> Option<u32> {
        let prefix: IpPrefix = prefix.parse().expect("prefix");
        plan.rules.iter().find(|rule| rule.ifindex == ifindex && rule.prefix == prefix).map(|rule| rule.verdict)
    }

    const INDEXES: [(&str, u32); 3] = [("lan0", 2), ("lan1", 3), ("wan0", 4)];

    fn indexes() -> Vec<(String, u32)> {
        INDEXES.iter().map(|(name, index)| ((*name).to_string(), *index)).collect()
    }

    #[test]
    fn a_lan_permits_its_routes_and_link_local_sources_and_a_wan_forbids_them() {
        let (plan, notes) = plan_sources(&config(""), &indexes(), &net());
        assert_eq!(plan.mode_of(2), source_check::STRICT);
        assert_eq!(verdict(&plan, 2, "10.66.2.0/24"), Some(source_verdict::PERMIT));
        assert_eq!(verdict(&plan, 2, "fd66:2::/64"), Some(source_verdict::PERMIT));
        assert_eq!(verdict(&plan, 2, "0.0.0.0/32"), Some(source_verdict::PERMIT), "DHCP");
        assert_eq!(verdict(&plan, 2, "fe80::/10"), Some(source_verdict::PERMIT), "neighbour discovery");
        assert_eq!(verdict(&plan, 2, "10.66.2.1/32"), Some(source_verdict::FORBID), "the gateway's own address");
        assert_eq!(plan.mode_of(4), source_check::LOOSE);
        assert_eq!(verdict(&plan, 4, "10.66.2.0/24"), Some(source_verdict::FORBID), "the LAN's prefix on the WAN");
        assert_eq!(verdict(&plan, 4, "fe80::/10"), None, "link-local is every link's");
        assert_eq!(verdict(&plan, 4, "fe80::1/128"), None, "an own link-local address is not forbidden elsewhere");
        assert_eq!(verdict(&plan, 4, "0.0.0.0/0"), None, "the default route is never a source prefix");
        // lan1 has no route yet: checked loosely until it has one, and said so.
        assert_eq!(plan.mode_of(3), source_check::LOOSE);
        assert!(notes.iter().any(|note| note.contains("lan1")), "{notes:?}");
    }

    #[test]
    fn configured_prefixes_replace_the_routes_and_off_means_no_rules() {
        let capture = config("source-prefixes = [\"192.0.2.0/24\"]\n");
        let (plan, notes) = plan_sources(&capture, &indexes(), &net());
        assert_eq!(plan.mode_of(3), source_check::STRICT);
        assert_eq!(verdict(&plan, 3, "192.0.2.0/24"), Some(source_verdict::PERMIT));
        assert!(notes.is_empty(), "{notes:?}");
        let off = config("source-check = \"off\"\n");
        let (plan, _) = plan_sources(&off, &indexes(), &net());
        assert_eq!(plan.mode_of(3), source_check::OFF);
        assert!(plan.rules.iter().all(|rule| rule.ifindex != 3));
    }
}
