//! The source checks (reverse-path filtering in XDP): which sources may arrive on which
//! interface, planned from the configuration and the host's routes and addresses.

use std::net::IpAddr;

use mld_config::{CaptureConfig, IpPrefix, SourceCheck};
use mld_hostnet::{link_local_sources, HostNet};

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
    let mut notes = Vec::new();
    let mut resolved = Vec::new();
    for interface in &config.interfaces {
        let Ok(ifindex) = nix::net::if_::if_nametoindex(interface.name.as_str()) else { continue };
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
