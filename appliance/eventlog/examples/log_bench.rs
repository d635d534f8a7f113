//! Event-log benchmarks (numbers, not tests; see docs/benchmarks.md).
//!
//!   log_bench throughput N SYNC_EVERY [wait]
//!       records/s: serialize; serialize + HMAC; + write with group commit every SYNC_EVERY
//!       records (the fsync runs beside the writer, as the writer does by default), or with
//!       `wait`, the writer waiting for each fsync (every SYNC_EVERY records durable before
//!       the next is written)
//!   log_bench memory N                  resident memory every N/20 records while writing N records
//!
//! The record is a realistic event: a TCP flow's 127 fields.

use std::time::{Duration, Instant};

use mld_eventlog::{build_event, EventContext, LogKey, LogWriter, Sealer, Verdict, WriterConfig, GENESIS_TAG};
use mld_flow::{FlowRecord, FlowTable, FlowTableConfig};
use mld_packet::PacketRecord;

fn sample_flow() -> FlowRecord {
    let mut table = FlowTable::new(FlowTableConfig::default());
    let mut finished = Vec::new();
    for (index, (from_client, payload, flags)) in [
        (true, 0u16, 0x02u8),
        (false, 0, 0x12),
        (true, 0, 0x10),
        (true, 120, 0x18),
        (false, 1400, 0x18),
        (false, 600, 0x18),
        (true, 0, 0x11),
        (false, 0, 0x11),
        (true, 0, 0x10),
    ]
    .iter()
    .enumerate()
    {
        let mut packet: PacketRecord = bytemuck::Zeroable::zeroed();
        let (src, dst, sport, dport) =
            if *from_client { ([10, 66, 1, 2], [10, 66, 9, 2], 40312u16, 8080u16) } else { ([10, 66, 9, 2], [10, 66, 1, 2], 8080, 40312) };
        packet.ts_ns = 1_790_000_000_000_000_000 + index as u64 * 350_000;
        packet.src_addr[..4].copy_from_slice(&src);
        packet.dst_addr[..4].copy_from_slice(&dst);
        packet.src_port = sport;
        packet.dst_port = dport;
        packet.ip_version = 4;
        packet.protocol = 6;
        packet.tcp_flags = *flags;
        packet.tcp_window = 502;
        packet.ip_header_len = 20;
        packet.l4_header_len = 32;
        packet.payload_len = *payload;
        packet.ip_len = 52 + payload;
        table.process(&packet, &mut finished);
    }
    table.flush(&mut finished);
    finished.remove(0)
}

fn resident_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|pages| pages.parse::<f64>().ok()).unwrap_or(0.0) * 4096.0 / 1048576.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("throughput");
    let count: u64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let sync_every: u32 = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(64);
    let wait = args.get(4).is_some_and(|mode| mode == "wait");
    let flow = sample_flow();
    let windows = [10u64, 60];
    let context =
        EventContext { node: "bench", deployment: "bench", software_version: "0.1.0", config_sha256: "00", model_sha256: None, windows_secs: &windows };
    let verdict = Verdict::placeholder();
    let record = build_event(&flow, &verdict, &context);
    let dir = tempfile::tempdir().expect("temp dir");
    match mode {
        "throughput" => {
            let started = Instant::now();
            let mut bytes = 0usize;
            let mut buffer = Vec::with_capacity(8192);
            for _ in 0..count {
                buffer.clear();
                serde_json::to_writer(&mut buffer, std::hint::black_box(&record)).expect("serialize");
                bytes += buffer.len();
            }
            let serialize = count as f64 / started.elapsed().as_secs_f64();
            let mut sealer = Sealer::new("bench", LogKey::from_bytes([5; 32]), 0, GENESIS_TAG);
            let mut line = Vec::with_capacity(8192);
            let started = Instant::now();
            for _ in 0..count {
                line.clear();
                sealer.seal(std::hint::black_box(&record), &mut line).expect("seal");
            }
            let sealed = count as f64 / started.elapsed().as_secs_f64();
            let config = WriterConfig {
                max_file_bytes: 1 << 30,
                sync_every_records: sync_every,
                sync_interval: Duration::from_secs(3600),
                ..WriterConfig::new(dir.path().to_path_buf(), "bench".to_string())
            };
            let mut writer = LogWriter::open(config, LogKey::from_bytes([5; 32])).expect("writer");
            let started = Instant::now();
            for index in 1..=count {
                writer.append(&record).expect("append");
                if wait && index % u64::from(sync_every) == 0 {
                    writer.sync().expect("sync");
                }
            }
            writer.sync().expect("sync");
            let written = count as f64 / started.elapsed().as_secs_f64();
            println!("record bytes {}", bytes / count as usize);
            println!("serialize only          {serialize:>12.0} records/s");
            println!("serialize + HMAC chain  {sealed:>12.0} records/s");
            let how = if wait { "waiting for" } else { "group commit," };
            println!("+ write, {how} fsync every {sync_every} records: {written:.0} records/s");
        }
        "memory" => {
            let config =
                WriterConfig { max_file_bytes: 256 << 20, sync_every_records: 1024, ..WriterConfig::new(dir.path().to_path_buf(), "bench".to_string()) };
            let mut writer = LogWriter::open(config, LogKey::from_bytes([5; 32])).expect("writer");
            let step = (count / 20).max(1);
            println!("records,resident_mib");
            for index in 1..=count {
                writer.append(&record).expect("append");
                if index % step == 0 {
                    println!("{index},{:.2}", resident_mib());
                    // Keep the disk bounded: remove every rotated file but the newest.
                    let mut files: Vec<_> = std::fs::read_dir(dir.path()).expect("list").flatten().map(|entry| entry.path()).collect();
                    files.sort();
                    files.pop();
                    for file in files {
                        let _ = std::fs::remove_file(file);
                    }
                }
            }
        }
        other => panic!("unknown mode {other}"),
    }
}
