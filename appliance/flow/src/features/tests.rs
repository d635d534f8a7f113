//! Feature values on hand-built flows, checked against values computed by hand
//! (the arithmetic is in the comments).

use mld_packet::tcp_flags::{ACK, FIN, PSH, SYN};

use super::*;
use crate::testing::tcp;

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= 1e-6 * expected.abs().max(1.0)
}

fn run(packets: &[(PacketRecord, bool)]) -> FlowFeatures {
    let params = FeatureParams::default();
    let mut flow = FlowAccumulator::new(&packets[0].0, &params);
    for (packet, forward) in &packets[1..] {
        flow.add(packet, *forward, &params);
    }
    flow.features()
}

/// A complete HTTP-like exchange: handshake, request (100 B), response (1000 B), close.
fn http_exchange() -> Vec<(PacketRecord, bool)> {
    vec![
        (tcp(0, true, 0, SYN, 40, 64240), true),
        (tcp(1000, false, 0, SYN | ACK, 40, 65160), false),
        (tcp(1500, true, 0, ACK, 32, 502), true),
        (tcp(2000, true, 100, PSH | ACK, 32, 502), true),
        (tcp(4000, false, 0, ACK, 32, 509), false),
        (tcp(5000, false, 1000, PSH | ACK, 32, 509), false),
        (tcp(9000, true, 0, FIN | ACK, 32, 502), true),
        (tcp(9500, false, 0, FIN | ACK, 32, 509), false),
        (tcp(10000, true, 0, ACK, 32, 502), true),
    ]
}

#[test]
fn http_exchange_features_match_hand_computation() {
    use Feature as F;
    let features = run(&http_exchange());
    let expected: &[(Feature, f64)] = &[
        (F::FlowDuration, 10000.0),
        (F::TotalFwdPackets, 5.0),
        (F::TotalBwdPackets, 4.0),
        (F::TotalLengthFwdPackets, 100.0),
        (F::TotalLengthBwdPackets, 1000.0),
        (F::FwdPacketLengthMax, 100.0),
        (F::FwdPacketLengthMin, 0.0),
        (F::FwdPacketLengthMean, 20.0),
        // Squared deviations from 20: 4 * 400 + 6400 = 8000; / (5 - 1) = 2000.
        (F::FwdPacketLengthStd, 2000f64.sqrt()),
        (F::BwdPacketLengthMax, 1000.0),
        (F::BwdPacketLengthMean, 250.0),
        // 3 * 62500 + 562500 = 750000; / 3 = 250000.
        (F::BwdPacketLengthStd, 500.0),
        (F::FlowBytesPerSec, 1100.0 / 0.01),
        (F::FlowPacketsPerSec, 900.0),
        // Gaps 1000 500 500 2000 1000 4000 500 500 µs.
        (F::FlowIatMean, 1250.0),
        (F::FlowIatStd, (10_500_000f64 / 7.0).sqrt()),
        (F::FlowIatMax, 4000.0),
        (F::FlowIatMin, 500.0),
        // Forward packets at 0 1500 2000 9000 10000.
        (F::FwdIatTotal, 10000.0),
        (F::FwdIatMean, 2500.0),
        (F::FwdIatStd, (27_500_000f64 / 3.0).sqrt()),
        (F::FwdIatMax, 7000.0),
        (F::FwdIatMin, 500.0),
        // Backward packets at 1000 4000 5000 9500.
        (F::BwdIatTotal, 8500.0),
        (F::BwdIatMean, 8500.0 / 3.0),
        (F::BwdIatMax, 4500.0),
        (F::BwdIatMin, 1000.0),
        (F::FwdPshFlags, 1.0),
        (F::BwdPshFlags, 1.0),
        (F::FwdUrgFlags, 0.0),
        (F::FwdHeaderLength, 40.0 + 4.0 * 32.0),
        (F::BwdHeaderLength, 40.0 + 3.0 * 32.0),
        (F::FwdPacketsPerSec, 500.0),
        (F::BwdPacketsPerSec, 400.0),
        (F::MinPacketLength, 0.0),
        (F::MaxPacketLength, 1000.0),
        (F::PacketLengthMean, 1100.0 / 9.0),
        (F::FinFlagCount, 2.0),
        (F::SynFlagCount, 2.0),
        (F::RstFlagCount, 0.0),
        (F::PshFlagCount, 2.0),
        (F::AckFlagCount, 8.0),
        (F::DownUpRatio, 0.8),
        (F::AveragePacketSize, 1100.0 / 9.0),
        (F::AvgFwdSegmentSize, 20.0),
        (F::AvgBwdSegmentSize, 250.0),
        (F::FwdAvgBytesPerBulk, 0.0),
        (F::SubflowFwdPackets, 5.0),
        (F::SubflowFwdBytes, 100.0),
        (F::SubflowBwdPackets, 4.0),
        (F::SubflowBwdBytes, 1000.0),
        (F::InitWinBytesForward, 64240.0),
        (F::InitWinBytesBackward, 65160.0),
        (F::ActDataPktFwd, 1.0),
        (F::MinSegSizeForward, 32.0),
        (F::ActiveMean, 10000.0),
        (F::ActiveStd, 0.0),
        (F::IdleMean, 0.0),
    ];
    for (feature, value) in expected {
        assert!(close(features.get(*feature), *value), "{}: {} != {}", feature.cic_name(), features.get(*feature), value);
    }
    // Variance is the square of the standard deviation.
    let std = features.get(F::PacketLengthStd);
    assert!(close(features.get(F::PacketLengthVariance), std * std));
}

#[test]
fn bulk_transfer_is_detected_in_one_direction() {
    use Feature as F;
    // Client request, then five response segments 100 ms apart, then an ACK.
    let mut packets = vec![(tcp(0, true, 50, PSH | ACK, 20, 100), true)];
    for i in 0..5u64 {
        packets.push((tcp(1000 + i * 100_000, false, 1000 + i as u16, ACK, 20, 200), false));
    }
    packets.push((tcp(600_000, true, 0, ACK, 20, 100), true));
    let features = run(&packets);
    // One bulk: 5 packets, 1000+1001+1002+1003+1004 = 5010 bytes, from 1000 µs to 401000 µs.
    assert_eq!(features.get(F::BwdAvgBytesPerBulk), 5010.0);
    assert_eq!(features.get(F::BwdAvgPacketsPerBulk), 5.0);
    assert!(close(features.get(F::BwdAvgBulkRate), 5010.0 / 0.4));
    assert_eq!(features.get(F::FwdAvgBytesPerBulk), 0.0);
    assert_eq!(features.get(F::FwdAvgBulkRate), 0.0);
}

#[test]
fn a_payload_from_the_other_side_breaks_a_bulk() {
    use Feature as F;
    let mut packets = vec![(tcp(0, true, 50, PSH | ACK, 20, 100), true)];
    for i in 0..3u64 {
        packets.push((tcp(1000 + i * 1000, false, 500, ACK, 20, 200), false));
    }
    packets.push((tcp(3500, true, 10, PSH | ACK, 20, 100), true));
    for i in 0..3u64 {
        packets.push((tcp(4000 + i * 1000, false, 500, ACK, 20, 200), false));
    }
    assert_eq!(run(&packets).get(F::BwdAvgPacketsPerBulk), 0.0, "two runs of three are no bulk");
}

#[test]
fn subflows_active_and_idle_periods() {
    use Feature as F;
    // Packets at 0, 0.5 s, 7 s, 7.2 s: gaps 0.5 s, 6.5 s, 0.2 s.
    let packets = vec![
        (tcp(0, true, 10, ACK, 20, 1), true),
        (tcp(500_000, false, 20, ACK, 20, 1), false),
        (tcp(7_000_000, true, 30, ACK, 20, 1), true),
        (tcp(7_200_000, false, 40, ACK, 20, 1), false),
    ];
    let features = run(&packets);
    // One gap over 1 s: two subflows.
    assert_eq!(features.get(F::SubflowFwdPackets), 1.0);
    assert_eq!(features.get(F::SubflowFwdBytes), 20.0);
    assert_eq!(features.get(F::SubflowBwdBytes), 30.0);
    // Active [0, 0.5 s] and [7 s, 7.2 s]; idle 6.5 s (over the 5 s activity timeout).
    assert_eq!(features.get(F::ActiveMean), 350_000.0);
    assert_eq!(features.get(F::ActiveMax), 500_000.0);
    assert_eq!(features.get(F::ActiveMin), 200_000.0);
    assert_eq!(features.get(F::IdleMean), 6_500_000.0);
    assert_eq!(features.get(F::IdleMax), 6_500_000.0);
}

#[test]
fn single_packet_flow_has_no_nan_or_infinity() {
    let features = run(&[(tcp(5, true, 0, SYN, 40, 1024), true)]);
    for (feature, value) in features.iter() {
        assert!(value.is_finite(), "{} is {value}", feature.cic_name());
    }
    assert_eq!(features.get(Feature::InitWinBytesBackward), -1.0, "no backward packet");
    assert_eq!(features.get(Feature::FlowBytesPerSec), 0.0);
}

#[test]
fn feature_names_are_unique_and_about_eighty() {
    let mut names: Vec<&str> = Feature::ALL.iter().map(|feature| feature.cic_name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), FEATURE_COUNT);
    assert_eq!(FEATURE_COUNT, 76);
}

#[test]
fn every_feature_is_documented_with_its_unit() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/features.md")).expect("docs/features.md");
    for (index, feature) in Feature::ALL.iter().enumerate() {
        let row_start = format!("| {} | {} |", index + 1, feature.cic_name());
        let row = doc.lines().find(|line| line.starts_with(&row_start));
        let row = row.unwrap_or_else(|| panic!("docs/features.md has no row `{row_start}`"));
        let unit = match feature.unit() {
            "us" => "µs",
            "bytes^2" => "bytes²",
            other => other,
        };
        assert!(row.contains(&format!("| {unit} |")), "row for {} lacks unit {unit}: {row}", feature.cic_name());
    }
}
