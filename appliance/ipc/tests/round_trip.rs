//! Frames carry values unchanged: what one process encodes, the other decodes to the
//! same message, however the bytes are cut into reads. A property test, and the inputs
//! the fuzz target `ipc_frame` (fuzz/) found, kept as regressions.

use std::io::Cursor;
use std::net::IpAddr;
use std::path::Path;

use mld_flow::features::{FlowFeatures, FEATURE_COUNT};
use mld_flow::window::WindowSnapshot;
use mld_flow::{EndReason, FlowRecord};
use mld_ipc::{read_frame, write_frame, FlowMessage, FrameDecoder};
use proptest::prelude::*;

/// The messages of a fuzz input (`fuzz/fuzz_targets/ipc_frame.rs`: a selector byte, then
/// the frames).
fn messages_of_fuzz_input(name: &str) -> Vec<FlowMessage> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/ipc_frame").join(name);
    let input = std::fs::read(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    let mut decoder = FrameDecoder::default();
    decoder.push(&input[1..]);
    let mut messages = Vec::new();
    while let Ok(Some(message)) = decoder.next_message::<FlowMessage>() {
        messages.push(message);
    }
    messages
}

fn encoded(message: &FlowMessage) -> Vec<u8> {
    let mut bytes = Vec::new();
    write_frame(&mut bytes, message).expect("encode");
    bytes
}

/// Found by the fuzzer: a flow feature written as `14.666633333333332` was read back as
/// the next float up, because serde_json's default float parser is not correctly
/// rounded. The detect task then scored features that differ from the capture task's
/// (and from `replay`'s). Fixed by serde_json's `float_roundtrip` (workspace Cargo.toml).
#[test]
fn a_flow_read_from_a_frame_is_sent_on_unchanged() {
    let messages = messages_of_fuzz_input("flow-float-changes-when-sent-again");
    assert!(!messages.is_empty(), "the regression input holds a flow message");
    for message in messages {
        let first = encoded(&message);
        let again = read_frame::<FlowMessage>(&mut Cursor::new(&first)).expect("decode").expect("a frame");
        assert_eq!(String::from_utf8_lossy(&encoded(&again)), String::from_utf8_lossy(&first));
    }
}

fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |value| value.is_finite()),
        (0u32..1_000_000, 1u32..1000).prop_map(|(numerator, denominator)| f64::from(numerator) / f64::from(denominator)),
    ]
}

fn window() -> impl Strategy<Value = WindowSnapshot> {
    (finite(), any::<u32>(), any::<u32>(), [finite(), finite(), finite(), finite(), finite(), finite(), finite()], any::<bool>()).prop_map(
        |(window_secs, addrs, ports, rates, saturated)| WindowSnapshot {
            window_secs,
            distinct_dst_addrs: addrs,
            distinct_dst_ports: ports,
            refused_dst_ports: addrs / 2,
            new_flows_per_sec: rates[0],
            new_tcp_flows_per_sec: rates[5],
            unanswered_flows_per_sec: rates[4],
            recent_answered_flows_per_sec: rates[3],
            recent_one_way_bytes_per_sec: rates[2],
            recent_icmp_packets_per_sec: rates[6],
            icmp_packets_per_sec: rates[6],
            packets_per_sec: rates[1],
            bytes_per_sec: rates[2],
            syn_without_ack_ratio: rates[3],
            rst_ratio: rates[4],
            saturated,
        },
    )
}

fn flow() -> impl Strategy<Value = FlowRecord> {
    (
        any::<IpAddr>(),
        any::<IpAddr>(),
        any::<(u16, u16, u8, u64, u64, u64, u64, u32)>(),
        prop::sample::select(EndReason::ALL.to_vec()),
        prop::collection::vec(finite(), FEATURE_COUNT),
        prop::collection::vec(window(), 0..3),
    )
        .prop_map(|(src_ip, dst_ip, (src_port, dst_port, protocol, first, last, fwd, bwd, ifindex), end_reason, features, source_windows)| FlowRecord {
            src_ip,
            src_port,
            dst_ip,
            dst_port,
            protocol,
            ip_version: if src_ip.is_ipv4() { 4 } else { 6 },
            first_seen_ns: first,
            last_seen_ns: last,
            end_reason,
            fwd_ip_bytes: fwd,
            bwd_ip_bytes: bwd,
            ifindex,
            path: mld_flow::PathMarks { fwd_ttl: (ifindex % 256) as u8, bwd_ifindex: ifindex / 3, bwd_ttl: (ifindex % 7) as u8 },
            features: FlowFeatures(features.try_into().expect("FEATURE_COUNT values")),
            source_windows,
        })
}

proptest! {
    /// Flows with any finite values, several frames in one stream cut into reads of any
    /// size: the non-blocking decoder and the blocking reader both give back exactly the
    /// flows that were sent, in order.
    #[test]
    fn flows_survive_frames_whole_and_in_pieces(flows in prop::collection::vec(flow(), 1..4), read_size in 1usize..200) {
        let sent: Vec<FlowMessage> = flows.into_iter().map(|flow| FlowMessage::Flow { flow: Box::new(flow) }).collect();
        let mut stream = Vec::new();
        for message in &sent {
            write_frame(&mut stream, message).expect("encode");
        }
        let mut decoder = FrameDecoder::default();
        let mut decoded = Vec::new();
        for piece in stream.chunks(read_size) {
            decoder.push(piece);
            while let Some(message) = decoder.next_message::<FlowMessage>().expect("decode") {
                decoded.push(message);
            }
        }
        prop_assert_eq!(&decoded, &sent);
        let mut cursor = Cursor::new(&stream);
        let mut read = Vec::new();
        while let Some(message) = read_frame::<FlowMessage>(&mut cursor).expect("read") {
            read.push(message);
        }
        prop_assert_eq!(&read, &sent);
    }
}
