//! Link-layer frame → [`PacketRecord`].
//!
//! The same rules as the XDP program's parser (`ebpf/`): Ethernet with up to two VLAN
//! tags (802.1Q, 802.1ad), Linux cooked captures v1 and v2, raw IP and BSD loopback;
//! IPv4 and IPv6 with extension headers skipped; TCP, UDP, ICMP, ICMPv6 headers read.
//! Lengths come from the IP header, so a capture cut by its snap length still yields
//! the packet's true sizes, while a header that contradicts the frame is malformed.

use crate::record::{PacketRecord, PACKET_RECORD_FLAG_TRUNCATED};

/// The link-layer header types the decoder understands (pcap LINKTYPE_* values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1).
    Ethernet,
    /// LINKTYPE_RAW (101), LINKTYPE_IPV4 (228), LINKTYPE_IPV6 (229): no link header.
    RawIp,
    /// LINKTYPE_LINUX_SLL (113): `tcpdump -i any` before libpcap 1.10.
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276): `tcpdump -i any` with libpcap 1.10 and later.
    LinuxSll2,
    /// LINKTYPE_NULL (0) and LINKTYPE_LOOP (108): a 4-byte address family.
    Null,
}

impl LinkType {
    /// Maps a pcap LINKTYPE value; `None` for link types we do not decode.
    pub fn from_pcap(linktype: i32) -> Option<LinkType> {
        match linktype {
            1 => Some(LinkType::Ethernet),
            101 | 228 | 229 | 12 | 14 => Some(LinkType::RawIp),
            113 => Some(LinkType::LinuxSll),
            276 => Some(LinkType::LinuxSll2),
            0 | 108 => Some(LinkType::Null),
            _ => None,
        }
    }
}

/// What became of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeOutcome {
    /// An IP packet the flow table takes.
    Packet(PacketRecord),
    /// A well-formed frame that carries no flow packet (ARP, a later IP fragment, ...).
    NotIp(NotIpReason),
    /// A frame whose headers contradict themselves or the frame; counted and passed.
    Malformed(MalformedReason),
}

/// Why a well-formed frame carries no flow packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotIpReason {
    /// Neither IPv4 nor IPv6 (ARP, LLDP, 802.3 length frames, ...).
    OtherProtocol,
    /// An IP fragment after the first: it has no transport header to key a flow on.
    LaterFragment,
    /// More than two VLAN tags.
    TooManyVlanTags,
}

impl NotIpReason {
    pub const ALL: [NotIpReason; 3] = [NotIpReason::OtherProtocol, NotIpReason::LaterFragment, NotIpReason::TooManyVlanTags];

    pub fn as_str(self) -> &'static str {
        match self {
            NotIpReason::OtherProtocol => "other-protocol",
            NotIpReason::LaterFragment => "later-fragment",
            NotIpReason::TooManyVlanTags => "too-many-vlan-tags",
        }
    }
}

/// Why a frame is malformed. The XDP program counts the same reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MalformedReason {
    /// The frame ends inside the link-layer header or a VLAN tag.
    TruncatedLinkHeader,
    /// The frame ends inside the fixed IP header.
    TruncatedIpHeader,
    /// The IP version nibble disagrees with the link layer's protocol field.
    BadIpVersion,
    /// IPv4 header length field below 5 words, or beyond the packet.
    BadIpHeaderLength,
    /// The IP length field is shorter than the headers or longer than the frame on the wire.
    BadIpTotalLength,
    /// An IPv6 extension header runs past the packet, or there are more than 8.
    BadExtensionHeaders,
    /// The packet ends inside the TCP, UDP or ICMP header (or the capture does).
    TruncatedTransportHeader,
    /// TCP data offset below 5 words, or beyond the packet.
    BadTcpDataOffset,
    /// UDP length field below 8 or beyond the packet.
    BadUdpLength,
}

impl MalformedReason {
    pub const ALL: [MalformedReason; 9] = [
        MalformedReason::TruncatedLinkHeader,
        MalformedReason::TruncatedIpHeader,
        MalformedReason::BadIpVersion,
        MalformedReason::BadIpHeaderLength,
        MalformedReason::BadIpTotalLength,
        MalformedReason::BadExtensionHeaders,
        MalformedReason::TruncatedTransportHeader,
        MalformedReason::BadTcpDataOffset,
        MalformedReason::BadUdpLength,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MalformedReason::TruncatedLinkHeader => "truncated-link-header",
            MalformedReason::TruncatedIpHeader => "truncated-ip-header",
            MalformedReason::BadIpVersion => "bad-ip-version",
            MalformedReason::BadIpHeaderLength => "bad-ip-header-length",
            MalformedReason::BadIpTotalLength => "bad-ip-total-length",
            MalformedReason::BadExtensionHeaders => "bad-extension-headers",
            MalformedReason::TruncatedTransportHeader => "truncated-transport-header",
            MalformedReason::BadTcpDataOffset => "bad-tcp-data-offset",
            MalformedReason::BadUdpLength => "bad-udp-length",
        }
    }
}

/// Counts of decode outcomes, per reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeStats {
    pub frames: u64,
    pub packets: u64,
    pub not_ip: [u64; NotIpReason::ALL.len()],
    pub malformed: [u64; MalformedReason::ALL.len()],
}

impl DecodeStats {
    pub fn count(&mut self, outcome: &DecodeOutcome) {
        self.frames += 1;
        match outcome {
            DecodeOutcome::Packet(_) => self.packets += 1,
            DecodeOutcome::NotIp(reason) => self.not_ip[*reason as usize] += 1,
            DecodeOutcome::Malformed(reason) => self.malformed[*reason as usize] += 1,
        }
    }

    pub fn malformed_total(&self) -> u64 {
        self.malformed.iter().sum()
    }

    pub fn not_ip_total(&self) -> u64 {
        self.not_ip.iter().sum()
    }

    pub fn malformed_count(&self, reason: MalformedReason) -> u64 {
        self.malformed[reason as usize]
    }

    pub fn merge(&mut self, other: &DecodeStats) {
        self.frames += other.frames;
        self.packets += other.packets;
        for (mine, theirs) in self.not_ip.iter_mut().zip(other.not_ip.iter()) {
            *mine += theirs;
        }
        for (mine, theirs) in self.malformed.iter_mut().zip(other.malformed.iter()) {
            *mine += theirs;
        }
    }
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
const MAX_VLAN_TAGS: usize = 2;
const MAX_IPV6_EXTENSION_HEADERS: usize = 8;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_MH: u8 = 135;

/// Decodes one captured frame.
///
/// `frame` holds the captured bytes, `wire_len` the frame's length on the wire
/// (at least `frame.len()`), `ts_ns` the capture time.
pub fn decode_frame(link: LinkType, frame: &[u8], wire_len: u32, ts_ns: u64) -> DecodeOutcome {
    let wire_len = wire_len.max(frame.len() as u32);
    let (ethertype, l3_offset) = match link_header(link, frame) {
        Ok(found) => found,
        Err(outcome) => return outcome,
    };
    let l3 = &frame[l3_offset..];
    let wire_l3_len = wire_len as usize - l3_offset;
    let mut record = PacketRecord::zeroed_with(ts_ns, wire_len);
    if frame.len() < wire_len as usize {
        record.flags |= PACKET_RECORD_FLAG_TRUNCATED;
    }
    let transport = match ethertype {
        ETHERTYPE_IPV4 => decode_ipv4(l3, wire_l3_len, &mut record),
        ETHERTYPE_IPV6 => decode_ipv6(l3, wire_l3_len, &mut record),
        _ => return DecodeOutcome::NotIp(NotIpReason::OtherProtocol),
    };
    let (l4_offset, ip_payload_len) = match transport {
        Ok(found) => found,
        Err(outcome) => return outcome,
    };
    match decode_transport(&l3[l4_offset.min(l3.len())..], ip_payload_len, &mut record) {
        Ok(()) => DecodeOutcome::Packet(record),
        Err(reason) => DecodeOutcome::Malformed(reason),
    }
}

impl PacketRecord {
    fn zeroed_with(ts_ns: u64, wire_len: u32) -> PacketRecord {
        PacketRecord { ts_ns, wire_len, ..bytemuck::Zeroable::zeroed() }
    }
}

/// Returns the layer-3 protocol (as an ethertype) and where its header starts.
fn link_header(link: LinkType, frame: &[u8]) -> Result<(u16, usize), DecodeOutcome> {
    let truncated = DecodeOutcome::Malformed(MalformedReason::TruncatedLinkHeader);
    match link {
        LinkType::Ethernet => {
            let mut ethertype = be16(frame, 12).ok_or(truncated)?;
            let mut offset = 14;
            let mut tags = 0;
            while matches!(ethertype, ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD) {
                if tags == MAX_VLAN_TAGS {
                    return Err(DecodeOutcome::NotIp(NotIpReason::TooManyVlanTags));
                }
                ethertype = be16(frame, offset + 2).ok_or(truncated)?;
                offset += 4;
                tags += 1;
            }
            Ok((ethertype, offset))
        }
        LinkType::LinuxSll => Ok((be16(frame, 14).ok_or(truncated)?, 16)),
        LinkType::LinuxSll2 => {
            if frame.len() < 20 {
                return Err(truncated);
            }
            Ok((be16(frame, 0).ok_or(truncated)?, 20))
        }
        LinkType::RawIp => {
            let first = *frame.first().ok_or(DecodeOutcome::Malformed(MalformedReason::TruncatedIpHeader))?;
            match first >> 4 {
                4 => Ok((ETHERTYPE_IPV4, 0)),
                6 => Ok((ETHERTYPE_IPV6, 0)),
                _ => Err(DecodeOutcome::Malformed(MalformedReason::BadIpVersion)),
            }
        }
        LinkType::Null => {
            let family = frame.get(0..4).ok_or(truncated)?;
            // The family is in the capturing host's byte order; accept either.
            let family = u32::from_le_bytes([family[0], family[1], family[2], family[3]]).min(u32::from_be_bytes([family[0], family[1], family[2], family[3]]));
            match family {
                2 => Ok((ETHERTYPE_IPV4, 4)),
                24 | 28 | 30 => Ok((ETHERTYPE_IPV6, 4)),
                _ => Err(DecodeOutcome::NotIp(NotIpReason::OtherProtocol)),
            }
        }
    }
}

/// Fills the IPv4 fields; returns the transport header offset within `l3` and the
/// number of bytes after the IP header according to the IP length field.
fn decode_ipv4(l3: &[u8], wire_l3_len: usize, record: &mut PacketRecord) -> Result<(usize, usize), DecodeOutcome> {
    let malformed = DecodeOutcome::Malformed;
    if l3.len() < 20 {
        return Err(malformed(MalformedReason::TruncatedIpHeader));
    }
    if l3[0] >> 4 != 4 {
        return Err(malformed(MalformedReason::BadIpVersion));
    }
    let header_len = usize::from(l3[0] & 0x0f) * 4;
    if header_len < 20 || header_len > l3.len() {
        return Err(malformed(MalformedReason::BadIpHeaderLength));
    }
    let total_len = usize::from(u16::from_be_bytes([l3[2], l3[3]]));
    if total_len < header_len || total_len > wire_l3_len {
        return Err(malformed(MalformedReason::BadIpTotalLength));
    }
    let fragment_offset = u16::from_be_bytes([l3[6], l3[7]]) & 0x1fff;
    if fragment_offset != 0 {
        return Err(DecodeOutcome::NotIp(NotIpReason::LaterFragment));
    }
    record.ip_version = 4;
    record.ttl = l3[8];
    record.protocol = l3[9];
    record.src_addr[..4].copy_from_slice(&l3[12..16]);
    record.dst_addr[..4].copy_from_slice(&l3[16..20]);
    record.ip_len = total_len as u16;
    record.ip_header_len = header_len as u16;
    Ok((header_len, total_len - header_len))
}

/// Fills the IPv6 fields, skipping extension headers; same return as [`decode_ipv4`].
fn decode_ipv6(l3: &[u8], wire_l3_len: usize, record: &mut PacketRecord) -> Result<(usize, usize), DecodeOutcome> {
    let malformed = DecodeOutcome::Malformed;
    if l3.len() < 40 {
        return Err(malformed(MalformedReason::TruncatedIpHeader));
    }
    if l3[0] >> 4 != 6 {
        return Err(malformed(MalformedReason::BadIpVersion));
    }
    let payload_len = usize::from(u16::from_be_bytes([l3[4], l3[5]]));
    let total_len = 40 + payload_len;
    // A zero payload length means a jumbogram; at most 65535 + 40 fits no record.
    if payload_len == 0 && l3[6] == IPPROTO_HOPOPTS || total_len > wire_l3_len || total_len > usize::from(u16::MAX) {
        return Err(malformed(MalformedReason::BadIpTotalLength));
    }
    let mut next_header = l3[6];
    let mut offset = 40;
    let mut extension_headers = 0;
    loop {
        let header_len = match next_header {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_MH => {
                let len_byte = *l3.get(offset + 1).ok_or(malformed(MalformedReason::BadExtensionHeaders))?;
                (usize::from(len_byte) + 1) * 8
            }
            IPPROTO_AH => {
                let len_byte = *l3.get(offset + 1).ok_or(malformed(MalformedReason::BadExtensionHeaders))?;
                (usize::from(len_byte) + 2) * 4
            }
            IPPROTO_FRAGMENT => {
                let field = be16(l3, offset + 2).ok_or(malformed(MalformedReason::BadExtensionHeaders))?;
                if field >> 3 != 0 {
                    return Err(DecodeOutcome::NotIp(NotIpReason::LaterFragment));
                }
                8
            }
            _ => break,
        };
        extension_headers += 1;
        if extension_headers > MAX_IPV6_EXTENSION_HEADERS || offset + header_len > total_len {
            return Err(malformed(MalformedReason::BadExtensionHeaders));
        }
        next_header = l3[offset];
        offset += header_len;
    }
    record.ip_version = 6;
    record.ttl = l3[7];
    record.protocol = next_header;
    record.src_addr.copy_from_slice(&l3[8..24]);
    record.dst_addr.copy_from_slice(&l3[24..40]);
    record.ip_len = total_len as u16;
    record.ip_header_len = offset as u16;
    Ok((offset, total_len - offset))
}

/// Fills ports, flags, window and header/payload lengths. `l4` is the captured data
/// from the transport header on; `ip_payload_len` what the IP header says follows it.
fn decode_transport(l4: &[u8], ip_payload_len: usize, record: &mut PacketRecord) -> Result<(), MalformedReason> {
    let header_len = match record.protocol {
        IPPROTO_TCP => {
            if ip_payload_len < 20 || l4.len() < 20 {
                return Err(MalformedReason::TruncatedTransportHeader);
            }
            let header_len = usize::from(l4[12] >> 4) * 4;
            if header_len < 20 || header_len > ip_payload_len {
                return Err(MalformedReason::BadTcpDataOffset);
            }
            record.src_port = u16::from_be_bytes([l4[0], l4[1]]);
            record.dst_port = u16::from_be_bytes([l4[2], l4[3]]);
            record.tcp_flags = l4[13];
            record.tcp_window = u16::from_be_bytes([l4[14], l4[15]]);
            header_len
        }
        IPPROTO_UDP => {
            if ip_payload_len < 8 || l4.len() < 8 {
                return Err(MalformedReason::TruncatedTransportHeader);
            }
            let udp_len = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
            if udp_len < 8 || udp_len > ip_payload_len {
                return Err(MalformedReason::BadUdpLength);
            }
            record.src_port = u16::from_be_bytes([l4[0], l4[1]]);
            record.dst_port = u16::from_be_bytes([l4[2], l4[3]]);
            8
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            if ip_payload_len < 8 || l4.len() < 4 {
                return Err(MalformedReason::TruncatedTransportHeader);
            }
            8
        }
        _ => 0,
    };
    record.l4_header_len = header_len as u16;
    record.payload_len = (ip_payload_len - header_len) as u16;
    Ok(())
}

fn be16(bytes: &[u8], offset: usize) -> Option<u16> {
    let pair = bytes.get(offset..offset + 2)?;
    Some(u16::from_be_bytes([pair[0], pair[1]]))
}

#[cfg(test)]
mod tests;
