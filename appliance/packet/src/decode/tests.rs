//! Decoder tests on frames built with etherparse (a decoder someone else wrote),
//! then corrupted by hand where the test needs a malformed frame.

use etherparse::{PacketBuilder, TcpOptionElement};

use super::*;
use crate::record::tcp_flags;

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn tcp_v4_frame(payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 61)
        .tcp(40000, 80, 1000, 29200)
        .syn()
        .ack(5)
        .options(&[TcpOptionElement::MaximumSegmentSize(1460), TcpOptionElement::Noop, TcpOptionElement::Noop])
        .expect("options fit");
    let mut frame = Vec::new();
    builder.write(&mut frame, payload).expect("write frame");
    frame
}

fn decode_eth(frame: &[u8]) -> DecodeOutcome {
    decode_frame(LinkType::Ethernet, frame, frame.len() as u32, 7)
}

fn packet(outcome: DecodeOutcome) -> PacketRecord {
    match outcome {
        DecodeOutcome::Packet(record) => record,
        other => panic!("expected a packet, got {other:?}"),
    }
}

#[test]
fn ipv4_tcp_fields_are_read() {
    let frame = tcp_v4_frame(b"hello");
    let record = packet(decode_eth(&frame));
    assert_eq!(record.ts_ns, 7);
    assert_eq!(record.ip_version, 4);
    assert_eq!(record.src_ip().to_string(), "10.0.0.1");
    assert_eq!(record.dst_ip().to_string(), "10.0.0.2");
    assert_eq!((record.src_port, record.dst_port), (40000, 80));
    assert_eq!(record.protocol, 6);
    assert_eq!(record.ttl, 61);
    assert_eq!(record.ip_header_len, 20);
    assert_eq!(record.l4_header_len, 28, "20 bytes + MSS (4) + two NOPs, padded to 4-byte words");
    assert_eq!(record.payload_len, 5);
    assert_eq!(record.ip_len, 20 + 28 + 5);
    assert_eq!(record.wire_len, frame.len() as u32);
    assert_eq!(record.tcp_window, 29200);
    assert_eq!(record.tcp_flags, tcp_flags::SYN | tcp_flags::ACK);
    assert_eq!(record.flags, 0);
}

#[test]
fn ethernet_padding_does_not_count_as_payload() {
    let mut frame = tcp_v4_frame(b"");
    frame.resize(60.max(frame.len()) + 6, 0);
    let record = packet(decode_eth(&frame));
    assert_eq!(record.payload_len, 0);
}

#[test]
fn two_vlan_tags_are_skipped_and_a_third_is_refused() {
    let builder = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .double_vlan(etherparse::VlanId::try_new(100).expect("vlan id"), etherparse::VlanId::try_new(200).expect("vlan id"))
        .ipv4([192, 168, 1, 1], [192, 168, 1, 2], 64)
        .udp(5353, 53);
    let mut frame = Vec::new();
    builder.write(&mut frame, b"query").expect("write");
    let record = packet(decode_eth(&frame));
    assert_eq!((record.src_port, record.dst_port, record.payload_len), (5353, 53, 5));
    assert_eq!(record.protocol, 17);

    // Insert a third 802.1Q tag after the MAC addresses.
    let mut triple = frame[..12].to_vec();
    triple.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
    triple.extend_from_slice(&frame[12..]);
    assert_eq!(decode_eth(&triple), DecodeOutcome::NotIp(NotIpReason::TooManyVlanTags));
}

#[test]
fn ipv6_extension_headers_are_skipped() {
    // IPv6 + hop-by-hop (8 bytes) + fragment header (first fragment) + UDP.
    let udp = [0x13, 0x88, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, b'a', b'b', b'c', b'd'];
    let hop_by_hop = [44u8, 0, 1, 4, 0, 0, 0, 0]; // next = fragment, len 0 => 8 bytes, PadN
    let fragment = [17u8, 0, 0x00, 0x01, 0, 0, 0, 42]; // next = UDP, offset 0, M=1
    let payload_len = hop_by_hop.len() + fragment.len() + udp.len();
    let mut l3 = vec![0x60, 0, 0, 0];
    l3.extend_from_slice(&(payload_len as u16).to_be_bytes());
    l3.push(0); // next header: hop-by-hop
    l3.push(33); // hop limit
    l3.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    l3.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    l3.extend_from_slice(&hop_by_hop);
    l3.extend_from_slice(&fragment);
    l3.extend_from_slice(&udp);
    let record = packet(decode_frame(LinkType::RawIp, &l3, l3.len() as u32, 0));
    assert_eq!(record.ip_version, 6);
    assert_eq!(record.ttl, 33);
    assert_eq!(record.protocol, 17);
    assert_eq!(record.ip_header_len, 56);
    assert_eq!(record.payload_len, 4);
    assert_eq!(record.src_ip().to_string(), "2001:db8::1");
    assert_eq!((record.src_port, record.dst_port), (5000, 53));

    // The same packet as a later fragment carries no transport header.
    let mut later = l3.clone();
    later[48 + 3] = 0x09; // fragment offset 1 (8 bytes), M=1
    assert_eq!(decode_frame(LinkType::RawIp, &later, later.len() as u32, 0), DecodeOutcome::NotIp(NotIpReason::LaterFragment));

    // A hop-by-hop header whose length runs past the packet is malformed.
    let mut bad = l3.clone();
    bad[41] = 200;
    assert_eq!(decode_frame(LinkType::RawIp, &bad, bad.len() as u32, 0), DecodeOutcome::Malformed(MalformedReason::BadExtensionHeaders));
}

#[test]
fn icmpv6_and_icmp_have_an_8_byte_header_and_no_ports() {
    let builder = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6([0xfe; 16], [0xfd; 16], 64).icmpv6_echo_request(1, 2);
    let mut frame = Vec::new();
    builder.write(&mut frame, &[0u8; 56]).expect("write");
    let record = packet(decode_eth(&frame));
    assert_eq!((record.protocol, record.l4_header_len, record.payload_len), (58, 8, 56));
    assert_eq!((record.src_port, record.dst_port), (0, 0));

    let builder = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64).icmpv4_echo_request(1, 2);
    let mut frame = Vec::new();
    builder.write(&mut frame, &[0u8; 56]).expect("write");
    let record = packet(decode_eth(&frame));
    assert_eq!((record.protocol, record.l4_header_len, record.payload_len, record.ip_len), (1, 8, 56, 84));
}

#[test]
fn linux_cooked_captures_v1_and_v2() {
    let eth = tcp_v4_frame(b"xyz");
    let l3 = &eth[14..];
    let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
    sll.extend_from_slice(l3);
    let record = packet(decode_frame(LinkType::LinuxSll, &sll, sll.len() as u32, 0));
    assert_eq!(record.payload_len, 3);
    let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    sll2.extend_from_slice(l3);
    let record = packet(decode_frame(LinkType::LinuxSll2, &sll2, sll2.len() as u32, 0));
    assert_eq!((record.src_port, record.payload_len), (40000, 3));
}

#[test]
fn snaplen_truncation_keeps_true_lengths_and_flags_the_record() {
    let frame = tcp_v4_frame(&[7u8; 1000]);
    let cut = &frame[..96];
    let record = packet(decode_frame(LinkType::Ethernet, cut, frame.len() as u32, 0));
    assert_eq!(record.payload_len, 1000);
    assert_eq!(record.flags & PACKET_RECORD_FLAG_TRUNCATED, PACKET_RECORD_FLAG_TRUNCATED);
}

#[test]
fn malformed_frames_are_classified() {
    let frame = tcp_v4_frame(b"data");
    let cases: Vec<(&str, Vec<u8>, MalformedReason)> = vec![
        ("short ethernet", frame[..10].to_vec(), MalformedReason::TruncatedLinkHeader),
        ("short ip", frame[..14 + 12].to_vec(), MalformedReason::TruncatedIpHeader),
        ("version 5 in an IPv4 frame", with_byte(&frame, 14, 0x55), MalformedReason::BadIpVersion),
        ("ihl 4", with_byte(&frame, 14, 0x44), MalformedReason::BadIpHeaderLength),
        ("ihl 15 past the frame", with_byte(&with_len(&frame, 20), 14, 0x4f), MalformedReason::BadIpHeaderLength),
        ("total length below the header", with_u16(&frame, 16, 12), MalformedReason::BadIpTotalLength),
        ("total length beyond the frame", with_u16(&frame, 16, 1500), MalformedReason::BadIpTotalLength),
        ("tcp header cut", with_u16(&frame[..14 + 20 + 10], 16, 30), MalformedReason::TruncatedTransportHeader),
        ("tcp data offset 2", with_byte(&frame, 14 + 20 + 12, 0x20), MalformedReason::BadTcpDataOffset),
        ("tcp data offset 15", with_byte(&frame, 14 + 20 + 12, 0xf0), MalformedReason::BadTcpDataOffset),
    ];
    for (name, bytes, expected) in cases {
        assert_eq!(decode_eth(&bytes), DecodeOutcome::Malformed(expected), "{name}");
    }

    let mut udp = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64).udp(1, 2).write(&mut udp, b"abc").expect("write");
    assert_eq!(decode_eth(&with_u16(&udp, 14 + 20 + 4, 0)), DecodeOutcome::Malformed(MalformedReason::BadUdpLength));
    assert_eq!(decode_eth(&with_u16(&udp, 14 + 20 + 4, 99)), DecodeOutcome::Malformed(MalformedReason::BadUdpLength));
}

#[test]
fn arp_is_not_ip_and_later_ipv4_fragments_are_skipped() {
    let mut arp = vec![0u8; 42];
    arp[12] = 0x08;
    arp[13] = 0x06;
    assert_eq!(decode_eth(&arp), DecodeOutcome::NotIp(NotIpReason::OtherProtocol));
    let frame = tcp_v4_frame(b"data");
    assert_eq!(decode_eth(&with_u16(&frame, 14 + 6, 0x0010)), DecodeOutcome::NotIp(NotIpReason::LaterFragment));
}

#[test]
fn stats_count_every_outcome() {
    let mut stats = DecodeStats::default();
    stats.count(&decode_eth(&tcp_v4_frame(b"")));
    stats.count(&decode_eth(&[0u8; 3]));
    stats.count(&decode_eth(&[0u8; 3]));
    assert_eq!((stats.frames, stats.packets, stats.malformed_total()), (3, 1, 2));
    assert_eq!(stats.malformed_count(MalformedReason::TruncatedLinkHeader), 2);
}

/// No byte string may panic the decoder, and every packet it returns is consistent.
#[test]
fn arbitrary_bytes_never_panic_and_records_are_consistent() {
    let seed_frames = [tcp_v4_frame(b"payload"), tcp_v4_frame(b"")];
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..200_000 {
        let mut frame = seed_frames[round % 2].clone();
        for _ in 0..(next() % 4 + 1) {
            let at = (next() as usize) % frame.len();
            frame[at] = next() as u8;
        }
        frame.truncate((next() as usize) % (frame.len() + 1));
        for link in [LinkType::Ethernet, LinkType::RawIp, LinkType::LinuxSll, LinkType::LinuxSll2, LinkType::Null] {
            if let DecodeOutcome::Packet(record) = decode_frame(link, &frame, frame.len() as u32, 0) {
                assert_eq!(usize::from(record.ip_len), usize::from(record.ip_header_len) + usize::from(record.l4_header_len) + usize::from(record.payload_len));
            }
        }
    }
}

fn with_byte(frame: &[u8], at: usize, value: u8) -> Vec<u8> {
    let mut copy = frame.to_vec();
    copy[at] = value;
    copy
}

fn with_u16(frame: &[u8], at: usize, value: u16) -> Vec<u8> {
    let mut copy = frame.to_vec();
    copy[at..at + 2].copy_from_slice(&value.to_be_bytes());
    copy
}

fn with_len(frame: &[u8], len: usize) -> Vec<u8> {
    frame[..14 + len].to_vec()
}
