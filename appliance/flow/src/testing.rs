//! Packet builders for the crate's tests.

use mld_packet::PacketRecord;

pub const CLIENT: [u8; 4] = [10, 0, 0, 1];
pub const SERVER: [u8; 4] = [10, 0, 0, 2];

/// A TCP packet between CLIENT:40000 and SERVER:80 at `ts_us`.
pub fn tcp(ts_us: u64, from_client: bool, payload: u16, flags: u8, l4_header: u16, window: u16) -> PacketRecord {
    let mut packet: PacketRecord = bytemuck::Zeroable::zeroed();
    let (src, dst, sport, dport) = if from_client { (CLIENT, SERVER, 40000, 80) } else { (SERVER, CLIENT, 80, 40000) };
    packet.ts_ns = ts_us * 1000;
    packet.src_addr[..4].copy_from_slice(&src);
    packet.dst_addr[..4].copy_from_slice(&dst);
    packet.src_port = sport;
    packet.dst_port = dport;
    packet.ip_version = 4;
    packet.protocol = 6;
    packet.tcp_flags = flags;
    packet.tcp_window = window;
    packet.ip_header_len = 20;
    packet.l4_header_len = l4_header;
    packet.payload_len = payload;
    packet.ip_len = 20 + l4_header + payload;
    packet
}

/// A UDP packet from `src:sport` to `dst:dport` at `ts_us`.
pub fn udp(ts_us: u64, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: u16) -> PacketRecord {
    let mut packet: PacketRecord = bytemuck::Zeroable::zeroed();
    packet.ts_ns = ts_us * 1000;
    packet.src_addr[..4].copy_from_slice(&src);
    packet.dst_addr[..4].copy_from_slice(&dst);
    packet.src_port = sport;
    packet.dst_port = dport;
    packet.ip_version = 4;
    packet.protocol = 17;
    packet.ip_header_len = 20;
    packet.l4_header_len = 8;
    packet.payload_len = payload;
    packet.ip_len = 28 + payload;
    packet
}
