//! Writes the seed corpus of the fuzz targets (`fuzz/seeds/<target>/`) from real inputs:
//! frames and a cut of `tests/pcap/lab-mix.pcap`, flow records and reports made from it
//! by the flow table, the eventlog's golden log, and queries as the CLI sends them.
//! The configuration seeds are copies of `config/*.toml` and `tests/config/*/*.toml`
//! (`scripts/fuzz --seeds` copies them).
//!
//! Run: `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds` (from the repo
//! root). Deterministic: running it again writes the same files.

use std::path::{Path, PathBuf};

use mld_flow::{FlowRecord, FlowTable, FlowTableConfig};
use mld_ipc::{
    write_frame, ControlRequest, EventAck, EventMessage, FlowMessage, PipelineCounters, ResponseMessage, StatusReport, SupervisorMessage, TaskMessage,
    TaskState, TaskStatus,
};
use mld_packet::{decode_frame, DecodeOutcome, LinkType, PcapReader};
use mld_query::{EventRef, Filter, Query};

/// Packets of the lab capture kept whole in the pcap seed (the file is 330 KiB).
const PCAP_SEED_PACKETS: usize = 12;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("fuzz/ is in the repository").to_path_buf();
    let seeds = root.join("fuzz/seeds");
    let capture = root.join("tests/pcap/lab-mix.pcap");

    // Every frame of the capture, and what the decoder makes of it.
    let mut frames: Vec<(Vec<u8>, u32, u64)> = Vec::new();
    PcapReader::read_file(&capture, |frame| frames.push((frame.data.to_vec(), frame.wire_len, frame.ts_ns))).expect("read the lab capture");

    decode_frame_seeds(&seeds.join("decode_frame"), &frames);
    pcap_seeds(&seeds.join("pcap_reader"), &std::fs::read(&capture).expect("read the lab capture"), &frames);
    ipc_seeds(&seeds.join("ipc_frame"), &frames);
    event_line_seeds(&seeds.join("event_line"), &root.join("appliance/eventlog/tests/golden/events-golden-000000.jsonl"));
    query_seeds(&seeds.join("query"));
    window_verifier_seeds(&seeds.join("window_verifier"));
}

/// A log written by the real writer with checkpoints (signing seed `[4; 32]`, node
/// `node-a`, a checkpoint every 8 records, small files so that it rotates), as the
/// ingest task reads it: lines in file order, `\x01` before each next file.
fn window_verifier_seeds(dir: &Path) {
    let dir = fresh_dir(dir);
    let scratch = std::env::temp_dir().join(format!("mld-window-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let config = mld_eventlog::WriterConfig {
        max_file_bytes: 4096,
        rotate_daily: false,
        checkpoint_every_records: 8,
        checkpoint_interval: std::time::Duration::from_secs(3600),
        ..mld_eventlog::WriterConfig::new(scratch.clone(), "node-a".to_string())
    };
    let mut writer =
        mld_eventlog::LogWriter::open_signed(config, mld_eventlog::LogKey::from_bytes([9; 32]), mld_eventlog::CheckpointSigningKey::from_seed([4; 32]))
            .expect("open the scratch log");
    for n in 0..30 {
        writer.append_json(&format!("{{\"type\":\"event\",\"event_id\":\"ev-{n}\",\"action\":\"observe\"}}"), None).expect("append");
    }
    writer.checkpoint().expect("checkpoint");
    writer.sync().expect("sync");
    drop(writer);
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&scratch).expect("list").flatten().map(|entry| entry.path()).filter(|path| path.to_string_lossy().contains("events-")).collect();
    files.sort();
    let mut input = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let text = std::fs::read(file).expect("read a log file");
        if index > 0 {
            input.push(1u8);
        }
        input.extend_from_slice(text.strip_suffix(b"\n").unwrap_or(&text));
        input.push(b'\n');
    }
    write(&dir, "signed-log", &input);
    // The first file alone: its last window waits for a checkpoint that never comes.
    let first = std::fs::read(&files[0]).expect("read the first file");
    write(&dir, "first-file", &first);
    let _ = std::fs::remove_dir_all(&scratch);
}

fn fresh_dir(dir: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("create the seed directory");
    dir.to_path_buf()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

/// Input of `decode_frame`: link selector, extra wire length (2 bytes), the frame.
fn frame_input(link: u8, extra_wire: u16, frame: &[u8]) -> Vec<u8> {
    let mut input = vec![link];
    input.extend_from_slice(&extra_wire.to_be_bytes());
    input.extend_from_slice(frame);
    input
}

/// One frame of each kind the decoder tells apart (first seen in the capture), and the
/// first TCP and UDP packets of each IP version under every other link type.
fn decode_frame_seeds(dir: &Path, frames: &[(Vec<u8>, u32, u64)]) {
    let dir = fresh_dir(dir);
    let mut kinds_seen = Vec::new();
    for (data, wire_len, _) in frames {
        let outcome = decode_frame(LinkType::Ethernet, data, *wire_len, 0);
        let kind = match outcome {
            DecodeOutcome::Packet(record) => format!("ip{}-proto{}-flags{:02x}", record.ip_version, record.protocol, record.tcp_flags),
            DecodeOutcome::NotIp(reason) => format!("not-ip-{}", reason.as_str()),
            DecodeOutcome::Malformed(reason) => format!("malformed-{}", reason.as_str()),
        };
        if kinds_seen.contains(&kind) || kinds_seen.len() >= 24 {
            continue;
        }
        write(&dir, &format!("ethernet-{kind}"), &frame_input(0, 0, data));
        if matches!(outcome, DecodeOutcome::Packet(record) if record.protocol == 6 || record.protocol == 17) {
            let ip = &data[14..];
            let ethertype = &data[12..14];
            // Raw IP (selector 1), Linux cooked v1 (2), v2 (3), BSD loopback (4).
            write(&dir, &format!("raw-{kind}"), &frame_input(1, 0, ip));
            let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 0, 0, 1, 0, 0];
            sll[14..16].copy_from_slice(ethertype);
            sll.extend_from_slice(ip);
            write(&dir, &format!("sll-{kind}"), &frame_input(2, 0, &sll));
            let mut sll2 = ethertype.to_vec();
            sll2.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 0, 6, 2, 0, 0, 0, 0, 0, 0]);
            sll2.extend_from_slice(ip);
            write(&dir, &format!("sll2-{kind}"), &frame_input(3, 0, &sll2));
            let family: u32 = if ip[0] >> 4 == 6 { 30 } else { 2 };
            let mut null = family.to_le_bytes().to_vec();
            null.extend_from_slice(ip);
            write(&dir, &format!("null-{kind}"), &frame_input(4, 0, &null));
            // Cut by a snap length of 54 bytes: the wire had more.
            let cut = data.len().min(54);
            write(&dir, &format!("snapped-{kind}"), &frame_input(0, (data.len() - cut) as u16, &data[..cut]));
        }
        kinds_seen.push(kind);
    }
}

/// The first packets of the lab capture as pcap (its own bytes), and as pcapng with
/// microsecond and nanosecond interfaces, an offset, and a simple packet block.
fn pcap_seeds(dir: &Path, capture: &[u8], frames: &[(Vec<u8>, u32, u64)]) {
    let dir = fresh_dir(dir);
    // Legacy pcap: the 24-byte header, then records of 16 bytes + the captured bytes.
    let mut end = 24;
    for _ in 0..PCAP_SEED_PACKETS {
        let caplen = u32::from_le_bytes(capture[end + 8..end + 12].try_into().expect("4 bytes")) as usize;
        end += 16 + caplen;
    }
    write(&dir, "lab-mix-head.pcap", &capture[..end]);

    let first = &frames[..PCAP_SEED_PACKETS.min(frames.len())];
    let mut ng = section_header();
    ng.extend(block(1, &interface(1, &[(9, &[6])])));
    ng.extend(block(1, &interface(1, &[(9, &[9]), (14, &(-3600i64).to_le_bytes())])));
    for (number, (data, wire_len, ts_ns)) in first.iter().enumerate() {
        let interface = (number % 2) as u32;
        let ts = if interface == 0 { ts_ns / 1000 } else { ts_ns + 3_600_000_000_000 };
        ng.extend(block(6, &enhanced_packet(interface, ts, data, *wire_len)));
    }
    let (data, wire_len, _) = &first[0];
    let mut simple = wire_len.to_le_bytes().to_vec();
    simple.extend_from_slice(data);
    pad(&mut simple);
    ng.extend(block(3, &simple));
    write(&dir, "lab-mix-head.pcapng", &ng);

    // Two sections, the second with a Linux cooked v2 interface.
    let mut two = section_header();
    two.extend(block(1, &interface(1, &[])));
    two.extend(block(6, &enhanced_packet(0, first[0].2 / 1000, &first[0].0, first[0].1)));
    two.extend(section_header());
    two.extend(block(1, &interface(276, &[(9, &[0x80 | 20])])));
    let mut sll2 = first[1].0[12..14].to_vec();
    sll2.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 0, 6, 2, 0, 0, 0, 0, 0, 0]);
    sll2.extend_from_slice(&first[1].0[14..]);
    two.extend(block(6, &enhanced_packet(0, 1 << 40, &sll2, sll2.len() as u32)));
    write(&dir, "two-sections.pcapng", &two);
}

fn section_header() -> Vec<u8> {
    block(0x0a0d0d0a, &[0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
}

fn interface(linktype: u16, options: &[(u16, &[u8])]) -> Vec<u8> {
    let mut body = linktype.to_le_bytes().to_vec();
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    if !options.is_empty() {
        for (code, value) in options {
            body.extend_from_slice(&code.to_le_bytes());
            body.extend_from_slice(&(value.len() as u16).to_le_bytes());
            body.extend_from_slice(value);
            pad(&mut body);
        }
        body.extend_from_slice(&[0, 0, 0, 0]);
    }
    body
}

fn enhanced_packet(interface: u32, ts: u64, data: &[u8], wire_len: u32) -> Vec<u8> {
    let mut body = interface.to_le_bytes().to_vec();
    body.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
    body.extend_from_slice(&(ts as u32).to_le_bytes());
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(&wire_len.to_le_bytes());
    body.extend_from_slice(data);
    pad(&mut body);
    body
}

fn pad(bytes: &mut Vec<u8>) {
    bytes.resize(bytes.len().next_multiple_of(4), 0);
}

fn block(block_type: u32, body: &[u8]) -> Vec<u8> {
    let total = (12 + body.len()) as u32;
    let mut bytes = block_type.to_le_bytes().to_vec();
    bytes.extend_from_slice(&total.to_le_bytes());
    bytes.extend_from_slice(body);
    bytes.extend_from_slice(&total.to_le_bytes());
    bytes
}

/// Input of `ipc_frame`: the selector (message type, read size), then frames.
fn ipc_input<T: serde::Serialize>(type_number: u8, read_size: u8, messages: &[T]) -> Vec<u8> {
    let mut input = vec![type_number | (read_size << 3)];
    for message in messages {
        write_frame(&mut input, message).expect("encode a seed message");
    }
    input
}

/// Real messages of every type: flows and source reports the flow table makes from the
/// lab capture, and the control, response, event and status messages.
fn ipc_seeds(dir: &Path, frames: &[(Vec<u8>, u32, u64)]) {
    let dir = fresh_dir(dir);
    let mut table = FlowTable::new(FlowTableConfig::default());
    table.track_active_sources();
    let mut finished: Vec<FlowRecord> = Vec::new();
    let mut reports = Vec::new();
    for (data, wire_len, ts_ns) in frames {
        if let DecodeOutcome::Packet(record) = decode_frame(LinkType::Ethernet, data, *wire_len, *ts_ns) {
            table.process(&record, &mut finished);
        }
        if reports.is_empty() && finished.len() >= 2 {
            reports = table.active_sources(1, |_| true);
        }
    }
    table.flush(&mut finished);
    let flows: Vec<FlowMessage> = finished.iter().take(2).map(|flow| FlowMessage::Flow { flow: Box::new(flow.clone()) }).collect();
    write(
        &dir,
        "task",
        &ipc_input(
            0,
            0,
            &[
                TaskMessage::Ready,
                TaskMessage::Counters(PipelineCounters { flows_sent: 7, ..Default::default() }),
                TaskMessage::Stopping { reason: "shutdown".to_string() },
            ],
        ),
    );
    let config = SupervisorMessage::Configure { config_toml: "[capture]\ninterfaces = []\n".to_string() };
    write(&dir, "supervisor", &ipc_input(1, 3, &[config, SupervisorMessage::Shutdown]));
    write(&dir, "control", &ipc_input(2, 0, &[ControlRequest::Status]));
    write(&dir, "flows", &ipc_input(3, 0, &flows));
    let mut others: Vec<FlowMessage> = reports.into_iter().map(|report| FlowMessage::Source { report: Box::new(report) }).collect();
    others.push(FlowMessage::BlockResult { id: 1, prefix: "10.66.2.2/32".to_string(), error: None, applied_boot_ns: 5_000_000 });
    others.push(FlowMessage::BlockExpired { prefix: "2001:db8::1/128".to_string() });
    write(&dir, "flows-reports-blocks", &ipc_input(3, 7, &others));
    let block = ResponseMessage::Block { id: 1, prefix: "10.66.2.2/32".to_string(), ttl_secs: 600, reason: "scan".to_string(), decided_boot_ns: 4_000_000 };
    write(&dir, "response", &ipc_input(4, 0, &[block]));
    let event = EventMessage::Event { seq: 1, record: r#"{"type":"event","event_id":"ev-1","src_ip":"10.66.2.2","action":"block"}"#.to_string() };
    write(&dir, "events", &ipc_input(5, 5, &[EventMessage::Hello { stream: 0x1234 }, event]));
    write(&dir, "ack", &ipc_input(6, 0, &[EventAck { seq: 1 }]));
    let task = TaskStatus {
        name: "capture".to_string(),
        state: TaskState::Ready,
        pid: Some(42),
        uptime_secs: 12.5,
        restarts: 0,
        last_exit: None,
        memory_bytes: 1 << 20,
        memory_budget_bytes: 64 << 20,
        memory_enforcement: "cgroup+rss".to_string(),
        user: "mld-capture".to_string(),
        control_floods: 0,
    };
    let status = StatusReport {
        supervisor_pid: 1,
        uptime_secs: 13.0,
        ready: true,
        supervisor_memory_bytes: 4 << 20,
        tasks: vec![task],
        pipeline: PipelineCounters::default(),
    };
    write(&dir, "status", &ipc_input(7, 0, &[status]));
}

/// The eventlog's golden log (six records under the test key), as written, with the
/// node known, and to be signed again.
fn event_line_seeds(dir: &Path, golden: &Path) {
    let dir = fresh_dir(dir);
    let log = std::fs::read(golden).expect("read the golden log");
    for (flags, name) in [(0u8, "golden"), (2, "golden-node-known"), (1, "golden-signed-again")] {
        let mut input = vec![flags];
        input.extend_from_slice(&log);
        write(&dir, name, &input);
    }
    // Two files: the second starts with a header (`\x01` marks the next file) that says
    // where the first one ended; signed again so that only the chain rules decide.
    let lines: Vec<&[u8]> = log.split(|byte| *byte == b'\n').filter(|line| !line.is_empty()).collect();
    let mut input = vec![1u8];
    for line in &lines[..3] {
        input.extend_from_slice(line);
        input.push(b'\n');
    }
    let last: serde_json::Value = serde_json::from_slice(lines[2]).expect("a golden record");
    let header = format!(
        "\u{1}{{\"type\":\"header\",\"schema\":\"mldefender-log/1\",\"node\":\"golden\",\"file_index\":1,\"prev_file_last_seq\":3,\"prev_file_last_tag\":\"{tag}\",\"seq\":4,\"prev_tag\":\"{tag}\",\"key_id\":\"{key}\",\"hmac\":\"{zeros}\"}}\n",
        tag = last["hmac"].as_str().expect("hmac"),
        key = last["key_id"].as_str().expect("key_id"),
        zeros = "0".repeat(64)
    );
    input.extend_from_slice(header.as_bytes());
    write(&dir, "two-files-signed-again", &input);
}

/// Queries as `mldefender query` sends them, and the command line's time syntax.
fn query_seeds(dir: &Path) {
    let dir = fresh_dir(dir);
    let filter = Filter { from_ts_us: Some(1_795_564_800_000_000), to_ts_us: None, actions: vec!["block".to_string()], categories: vec!["scan".to_string()] };
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"src_ip":"10.66.2.2","dst_ip":"10.66.3.2","dst_port":22,"protocol":"tcp","flow_duration":1.5e6,"total_fwd_packets":12,"fwd_packet_length_mean":88.25}"#).expect("object");
    let queries = [
        ("similar-seq", Query::SimilarToEvent { event: EventRef::Seq(42), k: 10, filter: Filter::default() }),
        ("similar-event-id", Query::SimilarToEvent { event: EventRef::EventId("ev-00000000000000a1".to_string()), k: 5, filter: filter.clone() }),
        ("similar-object", Query::SimilarToObject { object, k: 3, filter: Filter::default() }),
        ("ip-v4", Query::Ip { ip: "10.66.2.2".parse().expect("ip"), limit: 100, filter }),
        ("ip-v6", Query::Ip { ip: "2001:db8::1".parse().expect("ip"), limit: 1000, filter: Filter::default() }),
    ];
    for (name, query) in queries {
        write(&dir, name, &serde_json::to_vec(&query).expect("encode a query"));
    }
    for (name, text) in [
        ("time-rfc3339", "2026-11-25T10:00:00.25Z"),
        ("time-offset", "2000-03-01T00:00:00+00:00"),
        ("time-date", "2026-11-25"),
        ("time-micros", "1795600800000000"),
    ] {
        write(&dir, name, text.as_bytes());
    }
}
