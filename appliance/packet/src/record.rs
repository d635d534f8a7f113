//! The packet record: Rust mirror of `struct mld_packet_record` in
//! `ebpf/include/mld_shared.h`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytemuck::{Pod, Zeroable};

/// TCP flag bits, as in byte 13 of the TCP header.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// `flags` bit: fewer bytes were captured than were on the wire (snap length).
pub const PACKET_RECORD_FLAG_TRUNCATED: u8 = 0x01;

/// Where a packet came from, relative to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Unknown,
    FromLan,
    FromWan,
}

impl Direction {
    pub fn from_u8(value: u8) -> Direction {
        match value {
            1 => Direction::FromLan,
            2 => Direction::FromWan,
            _ => Direction::Unknown,
        }
    }

    pub fn as_u8(self) -> u8 {
        match self {
            Direction::Unknown => 0,
            Direction::FromLan => 1,
            Direction::FromWan => 2,
        }
    }
}

/// One packet, as the flow table needs it (72 bytes).
///
/// Invariant: the layout equals `struct mld_packet_record` in `ebpf/include/mld_shared.h`
/// byte for byte; `tests/shared_header.rs` compiles the header and checks it.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct PacketRecord {
    /// Capture time in nanoseconds (pcap: since the Unix epoch; XDP: CLOCK_BOOTTIME).
    pub ts_ns: u64,
    /// Source address in network byte order; IPv4 uses the first 4 bytes.
    pub src_addr: [u8; 16],
    /// Destination address in network byte order; IPv4 uses the first 4 bytes.
    pub dst_addr: [u8; 16],
    /// Interface index the packet arrived on, 0 when unknown (pcap).
    pub ifindex: u32,
    /// Frame length on the wire, link-layer header included, in bytes.
    pub wire_len: u32,
    /// TCP/UDP source port, 0 for other protocols.
    pub src_port: u16,
    /// TCP/UDP destination port, 0 for other protocols.
    pub dst_port: u16,
    /// IP packet length in bytes as the IP header states it.
    pub ip_len: u16,
    /// IP header bytes, IPv6 extension headers included.
    pub ip_header_len: u16,
    /// Transport header bytes: TCP data offset * 4, UDP 8, ICMP/ICMPv6 8, else 0.
    pub l4_header_len: u16,
    /// Transport payload bytes: `ip_len - ip_header_len - l4_header_len`.
    pub payload_len: u16,
    /// TCP window field (unscaled), 0 for other protocols.
    pub tcp_window: u16,
    /// 4 or 6.
    pub ip_version: u8,
    /// IP protocol number of the transport header.
    pub protocol: u8,
    /// [`tcp_flags`] bits, 0 for other protocols.
    pub tcp_flags: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// [`Direction`] as a byte.
    pub direction: u8,
    /// `PACKET_RECORD_FLAG_*` bits.
    pub flags: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 4],
}

impl PacketRecord {
    pub const SIZE: usize = std::mem::size_of::<PacketRecord>();

    pub fn src_ip(&self) -> IpAddr {
        addr_from_bytes(self.ip_version, &self.src_addr)
    }

    pub fn dst_ip(&self) -> IpAddr {
        addr_from_bytes(self.ip_version, &self.dst_addr)
    }

    pub fn has_tcp_flag(&self, flag: u8) -> bool {
        self.tcp_flags & flag != 0
    }

    pub fn direction(&self) -> Direction {
        Direction::from_u8(self.direction)
    }

    /// Views a ring-buffer sample as a record; `None` when the size is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Option<PacketRecord> {
        bytemuck::try_pod_read_unaligned(bytes).ok()
    }
}

impl std::fmt::Debug for PacketRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketRecord")
            .field("ts_ns", &self.ts_ns)
            .field("src", &self.src_ip())
            .field("dst", &self.dst_ip())
            .field("src_port", &self.src_port)
            .field("dst_port", &self.dst_port)
            .field("protocol", &self.protocol)
            .field("ip_len", &self.ip_len)
            .field("payload_len", &self.payload_len)
            .field("tcp_flags", &format_args!("{:#04x}", self.tcp_flags))
            .finish_non_exhaustive()
    }
}

fn addr_from_bytes(ip_version: u8, bytes: &[u8; 16]) -> IpAddr {
    if ip_version == 6 {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_is_72_bytes_and_8_aligned() {
        assert_eq!(PacketRecord::SIZE, 72);
        assert_eq!(std::mem::align_of::<PacketRecord>(), 8);
    }

    #[test]
    fn from_bytes_rejects_wrong_size() {
        assert!(PacketRecord::from_bytes(&[0u8; 71]).is_none());
        assert!(PacketRecord::from_bytes(&[0u8; 72]).is_some());
    }
}
