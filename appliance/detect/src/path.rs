//! Path history: where an address's packets really come from.
//!
//! A spoofer can write any source address into a packet, but not the gateway's interface
//! the packet arrives on. The real host's interface is learnt only from flows that prove
//! the host is who the address says ([`crate::evidence::two_way_evidence`]: a TCP
//! connection on which the destination sent data, which needs the answer to the SYN): its
//! **home**. Both ends of such a flow are learnt, so a server that only ever answers has a
//! home too. The remaining hop count (IPv4 TTL, IPv6 hop limit) of those packets is kept
//! beside it, for the explanation.
//!
//! A flow that claims an address with a home and arrives on another interface is
//! **stray**: its sender is suspected of forging the address. The engine then does not
//! block the address on scan or flood evidence, which a forger can make, when most of the
//! flows claiming it strayed.
//!
//! Why not the hop count as well: the sender chooses it. Tools randomize it (nmap's raw
//! probes carry a TTL from 37 to 59 by default: in the lab's capture, a scanner whose own
//! connections arrive with TTL 64), so a real attacker would look forged and escape its
//! blocks, while a forger can match it by trying a few values.
//!
//! Limits, stated: a forger on the *same* link as the real host is not told apart (the
//! link-layer address would be the next mark; the packet record does not carry it), nor
//! is one on the same uplink (every outside address arrives on the WAN interface).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

/// Where an address's proven packets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marks {
    /// The gateway's interface (ifindex; 0 when unknown, as in a pcap replay).
    pub ifindex: u32,
    /// Remaining hop count on arrival; 0 when unknown. Described, not compared (module
    /// documentation).
    pub ttl: u8,
}

impl Marks {
    fn agrees_with(self, home: Marks) -> bool {
        self.ifindex == home.ifindex
    }

    pub fn describe(self) -> String {
        format!("interface {} with TTL {}", self.ifindex, self.ttl)
    }
}

/// A flow whose marks disagree with its address's home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stray {
    pub home: Marks,
    pub seen: Marks,
}

/// The homes of recently proven addresses: at most `max` (least recently proven
/// forgotten first), each for `keep_ns` after it was last proven.
#[derive(Debug)]
pub struct PathHistory {
    homes: HashMap<IpAddr, (Marks, u64)>,
    by_age: BTreeSet<(u64, IpAddr)>,
    max: usize,
    keep_ns: u64,
}

impl PathHistory {
    pub fn new(max: usize, keep_ns: u64) -> PathHistory {
        PathHistory { homes: HashMap::new(), by_age: BTreeSet::new(), max: max.max(1), keep_ns }
    }

    pub fn len(&self) -> usize {
        self.homes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.homes.is_empty()
    }

    /// `address` was proven to send with `marks` at `now`.
    pub fn learn(&mut self, address: IpAddr, marks: Marks, now: u64) {
        if let Some((_, at)) = self.homes.get(&address) {
            self.by_age.remove(&(*at, address));
        } else if self.homes.len() >= self.max {
            if let Some((_, oldest)) = self.by_age.pop_first() {
                self.homes.remove(&oldest);
            }
        }
        self.homes.insert(address, (marks, now));
        self.by_age.insert((now, address));
    }

    /// The address's home, if proven within the keep period before `now`.
    pub fn home(&self, address: IpAddr, now: u64) -> Option<Marks> {
        self.homes.get(&address).filter(|(_, at)| now.saturating_sub(*at) <= self.keep_ns).map(|(marks, _)| *marks)
    }

    /// Whether a flow claiming `address` that arrived with `seen` disagrees with the
    /// address's home.
    pub fn check(&self, address: IpAddr, seen: Marks, now: u64) -> Option<Stray> {
        let home = self.home(address, now)?;
        (!seen.agrees_with(home)).then_some(Stray { home, seen })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn another_interface_is_stray_and_another_hop_count_is_not() {
        let mut history = PathHistory::new(16, 3600 * SECOND);
        let client = ip("10.66.1.2");
        let home = Marks { ifindex: 4, ttl: 64 };
        history.learn(client, home, SECOND);
        assert_eq!(history.check(client, home, 2 * SECOND), None);
        // nmap's raw probes from the same host: a random TTL from 37 to 59.
        assert_eq!(history.check(client, Marks { ttl: 41, ..home }, 2 * SECOND), None, "the sender chooses its TTL");
        let other_link = Marks { ifindex: 5, ttl: 64 };
        assert_eq!(history.check(client, other_link, 2 * SECOND), Some(Stray { home, seen: other_link }));
        // Unknown addresses say nothing.
        assert_eq!(history.check(ip("10.66.2.2"), other_link, 2 * SECOND), None);
        // A home is kept for its period after it was last proven, and then says nothing.
        assert_eq!(history.check(client, other_link, 3602 * SECOND), None);
        // A newly proven home replaces the old one (a host that moved, once its home lapsed).
        history.learn(client, other_link, 3700 * SECOND);
        assert_eq!(history.check(client, other_link, 3701 * SECOND), None);
        assert!(history.check(client, home, 3701 * SECOND).is_some());
    }

    #[test]
    fn the_history_is_bounded_and_forgets_the_least_recently_proven() {
        let mut history = PathHistory::new(2, 3600 * SECOND);
        let marks = Marks { ifindex: 1, ttl: 64 };
        history.learn(ip("10.0.0.1"), marks, SECOND);
        history.learn(ip("10.0.0.2"), marks, 2 * SECOND);
        history.learn(ip("10.0.0.1"), marks, 3 * SECOND);
        history.learn(ip("10.0.0.3"), marks, 4 * SECOND);
        assert_eq!(history.len(), 2);
        assert!(history.home(ip("10.0.0.2"), 5 * SECOND).is_none(), "the least recently proven went");
        assert!(history.home(ip("10.0.0.1"), 5 * SECOND).is_some() && history.home(ip("10.0.0.3"), 5 * SECOND).is_some());
    }
}
