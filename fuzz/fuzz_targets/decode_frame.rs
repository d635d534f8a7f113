//! The frame decoder (`mld_packet::decode_frame`): every frame the capture path or a
//! replayed file hands it. Input: one byte choosing the link type, two bytes of extra
//! wire length (a frame cut by the snap length), then the captured frame.
//!
//! Checks beyond "never panics": the decoder is deterministic, and a packet's lengths
//! add up as `PacketRecord` documents.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mld_packet::{decode_frame, DecodeOutcome, LinkType};

const LINKS: [LinkType; 5] = [LinkType::Ethernet, LinkType::RawIp, LinkType::LinuxSll, LinkType::LinuxSll2, LinkType::Null];

fuzz_target!(|input: &[u8]| {
    let [selector, extra_high, extra_low, frame @ ..] = input else {
        return;
    };
    let link = LINKS[usize::from(*selector) % LINKS.len()];
    let wire_len = (frame.len() as u32).saturating_add(u32::from(u16::from_be_bytes([*extra_high, *extra_low])));
    let outcome = decode_frame(link, frame, wire_len, 1);
    assert_eq!(outcome, decode_frame(link, frame, wire_len, 1), "the decoder is deterministic");
    if let DecodeOutcome::Packet(record) = outcome {
        assert_eq!(record.wire_len, wire_len);
        let headers = u32::from(record.ip_header_len) + u32::from(record.l4_header_len);
        assert!(headers <= u32::from(record.ip_len), "headers longer than the IP packet: {record:?}");
        assert_eq!(u32::from(record.payload_len), u32::from(record.ip_len) - headers, "payload = ip_len - headers");
    }
});
