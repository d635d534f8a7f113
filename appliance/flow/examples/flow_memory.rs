//! Memory per concurrent flow: holds N flows open in the table and reports the growth
//! of the process's resident set. A benchmark, not a test (see docs/benchmarks.md).
//!
//! usage: cargo run --release -p mld-flow --example flow_memory [FLOWS]

use mld_flow::{FlowTable, FlowTableConfig};
use mld_packet::PacketRecord;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|field| field.parse().ok()).expect("statm resident");
    pages * 4096
}

fn main() {
    let flows: u32 = std::env::args().nth(1).and_then(|arg| arg.parse().ok()).unwrap_or(100_000);
    let mut table = FlowTable::new(FlowTableConfig { max_flows: flows as usize, ..FlowTableConfig::default() });
    let mut finished = Vec::new();
    let before = resident_bytes();
    for index in 0..flows {
        let mut packet: PacketRecord = bytemuck::Zeroable::zeroed();
        packet.ts_ns = 1_000_000_000 + u64::from(index) * 1000;
        packet.src_addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        packet.dst_addr[..4].copy_from_slice(&(0x0a00_0000 | index).to_be_bytes());
        packet.src_port = 40000;
        packet.dst_port = 443;
        packet.ip_version = 4;
        packet.protocol = 6;
        packet.tcp_flags = 0x02;
        packet.ip_header_len = 20;
        packet.l4_header_len = 40;
        packet.ip_len = 60;
        table.process(&packet, &mut finished);
    }
    let after = resident_bytes();
    assert!(finished.is_empty(), "no flow may end during the measurement");
    assert_eq!(table.stats().active_flows, u64::from(flows));
    let per_flow = (after - before) as f64 / f64::from(flows);
    println!(
        "{flows} concurrent flows: resident set grew {:.1} MiB, {:.0} bytes per flow, {:.1} MiB per 100k flows",
        (after - before) as f64 / 1048576.0,
        per_flow,
        per_flow * 100_000.0 / 1048576.0
    );
}
