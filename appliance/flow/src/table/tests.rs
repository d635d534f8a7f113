//! Flow table behaviour: direction, timeouts, TCP termination, eviction, IPv6.

use mld_packet::tcp_flags::{ACK, FIN, PSH, RST, SYN};
use mld_packet::PacketRecord;

use super::*;
use crate::features::Feature;
use crate::testing::{tcp, udp, CLIENT, SERVER};

const SECOND_US: u64 = 1_000_000;

fn table(config: FlowTableConfig) -> FlowTable {
    FlowTable::new(config)
}

fn feed(table: &mut FlowTable, packets: &[PacketRecord]) -> Vec<FlowRecord> {
    let mut finished = Vec::new();
    for packet in packets {
        table.process(packet, &mut finished);
    }
    finished
}

fn feed_and_flush(table: &mut FlowTable, packets: &[PacketRecord]) -> Vec<FlowRecord> {
    let mut finished = feed(table, packets);
    table.flush(&mut finished);
    finished
}

#[test]
fn both_directions_form_one_flow_with_the_first_sender_as_source() {
    let mut flows = table(FlowTableConfig::default());
    // The capture starts mid-connection: the server speaks first.
    let finished = feed_and_flush(&mut flows, &[tcp(0, false, 500, PSH | ACK, 20, 1), tcp(10, true, 0, ACK, 20, 1), tcp(20, false, 700, PSH | ACK, 20, 1)]);
    assert_eq!(finished.len(), 1);
    let flow = &finished[0];
    assert_eq!(flow.src_ip.to_string(), "10.0.0.2");
    assert_eq!((flow.src_port, flow.dst_port), (80, 40000));
    assert_eq!(flow.features.get(Feature::TotalFwdPackets), 2.0);
    assert_eq!(flow.features.get(Feature::TotalLengthFwdPackets), 1200.0);
    assert_eq!(flow.features.get(Feature::TotalBwdPackets), 1.0);
    assert_eq!((flow.fwd_ip_bytes, flow.bwd_ip_bytes), (540 + 740, 40));
    assert_eq!(flow.end_reason, EndReason::EndOfInput);
    assert_eq!(flow.flow_id(), "10.0.0.2-10.0.0.1-80-40000-6");
}

#[test]
fn idle_timeout_splits_a_conversation() {
    let mut flows = table(FlowTableConfig { idle_timeout_ns: 120_000_000_000, ..FlowTableConfig::default() });
    let a = [10, 0, 0, 5];
    let b = [10, 0, 0, 6];
    let finished = feed(&mut flows, &[udp(0, a, 5000, b, 53, 10), udp(119 * SECOND_US, b, 53, a, 5000, 10)]);
    assert!(finished.is_empty(), "119 s is within the idle timeout");
    let finished = feed(&mut flows, &[udp(240 * SECOND_US, a, 5000, b, 53, 10)]);
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].end_reason, EndReason::IdleTimeout);
    assert_eq!(finished[0].features.get(Feature::TotalBwdPackets), 1.0);
    assert_eq!(flows.stats().active_flows, 1, "the late packet started a new flow");
}

#[test]
fn active_timeout_cuts_a_long_flow() {
    let config = FlowTableConfig { active_timeout_ns: 60_000_000_000, ..FlowTableConfig::default() };
    let mut flows = table(config);
    let packets: Vec<PacketRecord> = (0..10).map(|i| udp(i * 10 * SECOND_US, CLIENT, 1234, SERVER, 9999, 100)).collect();
    let finished = feed_and_flush(&mut flows, &packets);
    assert_eq!(finished.len(), 2);
    assert_eq!(finished[0].end_reason, EndReason::ActiveTimeout);
    assert_eq!(finished[0].features.get(Feature::TotalFwdPackets), 6.0, "packets at 0..50 s");
    assert_eq!(finished[1].features.get(Feature::TotalFwdPackets), 4.0, "packets at 60..90 s");
}

fn handshake_and_close() -> Vec<PacketRecord> {
    vec![
        tcp(0, true, 0, SYN, 40, 64240),
        tcp(100, false, 0, SYN | ACK, 40, 65160),
        tcp(200, true, 0, ACK, 32, 502),
        tcp(300, true, 0, FIN | ACK, 32, 502),
        tcp(400, false, 0, FIN | ACK, 32, 509),
        tcp(500, true, 0, ACK, 32, 502),
    ]
}

#[test]
fn fin_from_both_sides_ends_the_flow_after_the_linger_with_the_last_ack() {
    let mut flows = table(FlowTableConfig::default());
    let finished = feed(&mut flows, &handshake_and_close());
    assert!(finished.is_empty(), "still lingering");
    // Any later packet moves time past the 1 s linger.
    let finished = feed(&mut flows, &[udp(2 * SECOND_US, [1, 1, 1, 1], 1, [2, 2, 2, 2], 2, 0)]);
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].end_reason, EndReason::TcpFin);
    assert_eq!(finished[0].features.get(Feature::TotalFwdPackets), 4.0, "the last ACK belongs to the flow");
    assert_eq!(finished[0].features.get(Feature::FinFlagCount), 2.0);
}

#[test]
fn rst_ends_the_flow_and_a_new_syn_starts_another() {
    let mut flows = table(FlowTableConfig::default());
    let packets =
        [tcp(0, true, 0, SYN, 40, 1), tcp(100, false, 0, RST | ACK, 20, 0), tcp(300_000, true, 0, SYN, 40, 1), tcp(300_100, false, 0, SYN | ACK, 40, 1)];
    let finished = feed_and_flush(&mut flows, &packets);
    assert_eq!(finished.len(), 2);
    assert_eq!(finished[0].end_reason, EndReason::TcpRst);
    assert_eq!(finished[0].features.get(Feature::TotalFwdPackets), 1.0);
    assert_eq!(finished[0].features.get(Feature::RstFlagCount), 1.0);
    assert_eq!(finished[1].end_reason, EndReason::EndOfInput);
    assert_eq!(finished[1].features.get(Feature::TotalBwdPackets), 1.0);
}

#[test]
fn a_full_table_evicts_the_least_recently_active_flow_and_counts_it() {
    let mut flows = table(FlowTableConfig { max_flows: 2, ..FlowTableConfig::default() });
    let a = [10, 1, 0, 1];
    let finished = feed(
        &mut flows,
        &[
            udp(0, a, 1, SERVER, 53, 1),
            udp(1, a, 2, SERVER, 53, 1),
            udp(2, a, 1, SERVER, 53, 1), // flow 1 is now more recent than flow 2
            udp(3, a, 3, SERVER, 53, 1),
        ],
    );
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].end_reason, EndReason::Evicted);
    assert_eq!(finished[0].src_port, 2);
    let stats = flows.stats();
    assert_eq!((stats.flows_evicted, stats.active_flows, stats.flows_created), (1, 2, 3));
}

#[test]
fn ipv6_flows_keep_their_addresses() {
    let mut flows = table(FlowTableConfig::default());
    let mut packet = udp(0, [0; 4], 5353, [0; 4], 53, 30);
    packet.ip_version = 6;
    packet.src_addr = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    packet.dst_addr = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let mut reply = packet;
    reply.ts_ns += 1_000_000;
    std::mem::swap(&mut reply.src_addr, &mut reply.dst_addr);
    std::mem::swap(&mut reply.src_port, &mut reply.dst_port);
    let finished = feed_and_flush(&mut flows, &[packet, reply]);
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].src_ip.to_string(), "2001:db8::1");
    assert_eq!(finished[0].dst_ip.to_string(), "2001:db8::2");
    assert_eq!(finished[0].ip_version, 6);
    assert_eq!(finished[0].features.get(Feature::FlowIatMean), 1000.0);
}

#[test]
fn out_of_order_timestamps_are_counted_and_never_negative() {
    let mut flows = table(FlowTableConfig::default());
    let finished = feed_and_flush(&mut flows, &[tcp(1000, true, 1, ACK, 20, 1), tcp(500, false, 1, ACK, 20, 1)]);
    assert_eq!(flows.stats().out_of_order_packets, 1);
    assert_eq!(finished[0].features.get(Feature::FlowIatMin), 0.0);
    assert_eq!(finished[0].features.get(Feature::FlowDuration), 0.0);
}

#[test]
fn finished_flows_carry_the_initiators_window_aggregates() {
    let mut flows = table(FlowTableConfig::default());
    let scanner = [10, 9, 9, 9];
    let mut packets = Vec::new();
    for port in 1..=30u16 {
        let mut probe = udp(u64::from(port) * 1000, scanner, 40000, SERVER, port, 0);
        probe.protocol = 6;
        probe.tcp_flags = SYN;
        packets.push(probe);
    }
    let finished = feed_and_flush(&mut flows, &packets);
    assert_eq!(finished.len(), 30);
    let windows = &finished[29].source_windows;
    assert_eq!(windows.len(), 2, "10 s and 60 s by default");
    assert_eq!(windows[0].distinct_dst_ports, 30);
    assert_eq!(windows[0].distinct_dst_addrs, 1);
    assert_eq!(windows[0].syn_without_ack_ratio, 1.0);
    assert_eq!(windows[0].new_flows_per_sec, 3.0);
}

#[test]
fn replaying_the_same_packets_gives_identical_flows() {
    let packets = handshake_and_close();
    let first = feed_and_flush(&mut table(FlowTableConfig::default()), &packets);
    let second = feed_and_flush(&mut table(FlowTableConfig::default()), &packets);
    assert_eq!(first, second);
}

#[test]
fn active_sources_report_a_flood_before_any_flow_ends_with_its_latest_flow() {
    let mut table = table(FlowTableConfig::default());
    table.track_active_sources();
    // 500 one-packet UDP flows (ports change) from one source within half a second,
    // and one quiet source with a single flow.
    let mut packets: Vec<PacketRecord> = (0..500u16).map(|i| udp(u64::from(i) * 1000, [10, 0, 0, 66], 1000 + i, [10, 0, 0, 9], 53, 40)).collect();
    packets.push(udp(400_000, [10, 0, 0, 7], 5000, [10, 0, 0, 9], 53, 40));
    let finished = feed(&mut table, &packets);
    assert!(finished.is_empty(), "no flow has ended yet");
    let busy = |windows: &[WindowSnapshot]| windows.first().is_some_and(|w| w.new_flows_per_sec * w.window_secs >= 100.0);
    let reports = table.active_sources(16, busy);
    assert_eq!(reports.len(), 1, "only the flooding source passes the filter: {reports:?}");
    let report = &reports[0];
    assert_eq!(report.src_ip.to_string(), "10.0.0.66");
    let window = report.windows[0];
    assert_eq!(window.new_flows_per_sec * window.window_secs, 500.0);
    assert_eq!(window.packets_per_sec * window.window_secs, 500.0);
    assert_eq!(window.bytes_per_sec * window.window_secs, 500.0 * f64::from(packets[0].ip_len));
    let latest = report.latest_flow.as_ref().expect("the latest flow is still open");
    assert_eq!((latest.src_port, latest.end_reason), (1499, EndReason::Active));
    assert!(table.active_sources(16, busy).is_empty(), "each activity is reported once");
    feed(&mut table, &[udp(600_000, [10, 0, 0, 66], 7000, [10, 0, 0, 9], 53, 40)]);
    assert_eq!(table.active_sources(16, busy).len(), 1, "new packets list the source again");
}

#[test]
fn offline_tables_do_not_list_active_sources() {
    let mut table = table(FlowTableConfig::default());
    feed(&mut table, &[udp(0, [10, 0, 0, 66], 1000, [10, 0, 0, 9], 53, 40)]);
    assert!(table.active_sources(16, |_| true).is_empty());
}

#[test]
fn interim_records_show_long_flows_before_they_end_at_most_once_per_period() {
    let mut table = table(FlowTableConfig::default());
    // A slow client: a byte every 2 s for 30 s; and a short flow.
    let mut packets: Vec<PacketRecord> = (0..16).map(|i| tcp(i * 2 * SECOND_US, true, 1, PSH | ACK, 20, 512)).collect();
    packets.insert(13, udp(25 * SECOND_US, [10, 0, 0, 5], 4000, [10, 0, 0, 9], 53, 40));
    feed(&mut table, &packets);
    let mut interim = Vec::new();
    table.interim(10_000_000_000, 5_000_000_000, 100, &mut interim);
    assert_eq!(interim.len(), 1, "only the long flow is old enough: {interim:?}");
    assert_eq!(interim[0].end_reason, EndReason::Active);
    assert_eq!(interim[0].features.get(Feature::TotalFwdPackets), 16.0);
    let mut again = Vec::new();
    table.interim(10_000_000_000, 5_000_000_000, 100, &mut again);
    assert!(again.is_empty(), "not again within the period");
    let mut finished = Vec::new();
    table.flush(&mut finished);
    assert_eq!(finished.len(), 2, "interim records do not end flows");
}

#[test]
fn a_flow_answered_once_is_one_way_again_when_the_responder_falls_silent_and_multicast_never_counts() {
    let mut flows = table(FlowTableConfig::default());
    let client = (
        {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&CLIENT);
            a
        },
        4,
    );
    // A query and its answer, then 2 s later 100 large datagrams on the same 5-tuple.
    let mut packets = vec![udp(0, CLIENT, 5000, SERVER, 53, 40), udp(1_000, SERVER, 53, CLIENT, 5000, 100)];
    packets.extend((0..100).map(|n| udp(2 * SECOND_US + n * 1_000, CLIENT, 5000, SERVER, 53, 1400)));
    feed(&mut flows, &packets);
    let window = flows.windows().snapshot(client, (2 * SECOND_US + 100_000) * 1000)[0];
    assert!(window.recent_one_way_bytes_per_sec >= 100.0 * 1428.0, "the flood after a lone answer is one-way: {window:?}");
    assert_eq!(window.unanswered_flows_per_sec, 0.0, "the flow itself was answered");
    // The same datagrams to a multicast group are not one-way volume of anyone.
    let mut group = table(FlowTableConfig::default());
    let packets: Vec<PacketRecord> = (0..100).map(|n| udp(n * 1_000, CLIENT, 5000, [239, 1, 1, 1], 5004, 1400)).collect();
    feed(&mut group, &packets);
    assert_eq!(group.windows().snapshot(client, 100_000_000)[0].recent_one_way_bytes_per_sec, 0.0);
}
