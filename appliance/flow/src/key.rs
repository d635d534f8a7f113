//! The canonical flow key: both directions of a conversation map to one key.

use std::net::IpAddr;

use mld_packet::PacketRecord;

/// One end of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// Address bytes in network order; IPv4 uses the first 4.
    pub addr: [u8; 16],
    pub port: u16,
}

/// Canonical 5-tuple (plus IP version): `low` is the smaller endpoint, so that a packet
/// and its reply produce the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub low: Endpoint,
    pub high: Endpoint,
    pub protocol: u8,
    pub ip_version: u8,
}

/// Which endpoint of the key sent a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Low,
    High,
}

impl FlowKey {
    /// The key of the flow `packet` belongs to, and which side of it sent the packet.
    pub fn of(packet: &PacketRecord) -> (FlowKey, Side) {
        let src = Endpoint { addr: packet.src_addr, port: packet.src_port };
        let dst = Endpoint { addr: packet.dst_addr, port: packet.dst_port };
        let (low, high, side) = if src <= dst { (src, dst, Side::Low) } else { (dst, src, Side::High) };
        (FlowKey { low, high, protocol: packet.protocol, ip_version: packet.ip_version }, side)
    }

    pub fn endpoint(&self, side: Side) -> Endpoint {
        match side {
            Side::Low => self.low,
            Side::High => self.high,
        }
    }

    pub fn ip(&self, side: Side) -> IpAddr {
        ip_of(self.endpoint(side).addr, self.ip_version)
    }
}

/// The address in a key's 16 bytes (IPv4 in the first four).
pub(crate) fn ip_of(addr: [u8; 16], ip_version: u8) -> IpAddr {
    if ip_version == 6 {
        IpAddr::from(addr)
    } else {
        IpAddr::from([addr[0], addr[1], addr[2], addr[3]])
    }
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Low => Side::High,
            Side::High => Side::Low,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> PacketRecord {
        let mut record: PacketRecord = bytemuck::Zeroable::zeroed();
        record.src_addr[..4].copy_from_slice(&src);
        record.dst_addr[..4].copy_from_slice(&dst);
        record.src_port = sport;
        record.dst_port = dport;
        record.protocol = 6;
        record.ip_version = 4;
        record
    }

    #[test]
    fn both_directions_share_a_key() {
        let (forward, forward_side) = FlowKey::of(&packet([10, 0, 0, 9], 5000, [10, 0, 0, 1], 80));
        let (reply, reply_side) = FlowKey::of(&packet([10, 0, 0, 1], 80, [10, 0, 0, 9], 5000));
        assert_eq!(forward, reply);
        assert_ne!(forward_side, reply_side);
        assert_eq!(forward.ip(forward_side).to_string(), "10.0.0.9");
    }

    #[test]
    fn same_address_different_ports_order_by_port() {
        let (key, side) = FlowKey::of(&packet([127, 0, 0, 1], 9000, [127, 0, 0, 1], 80));
        assert_eq!(key.low.port, 80);
        assert_eq!(side, Side::High);
    }
}
