//! `mldefender block explain ADDR`: why a source is (or was) blocked, from the signed log:
//! the newest block decision about it whose record authenticates with the log key, its
//! scores and reasons, the source's window aggregates at the time, its nearest past
//! events, and what the running data plane holds for it now.

use std::net::IpAddr;
use std::path::Path;

use mld_capture::{boot_time_ns, PinnedMaps};
use mld_config::Config;
use mld_eventlog::{newest_authenticated, LogKey};
use mld_runtime::Exit;
use mld_types::IpPrefix;
use serde_json::{Map, Value};

/// Bytes of log read, newest first, at most: the search stops there and says so.
const MAX_BYTES_READ: u64 = 2 << 30;

/// Explains the newest block of `address` found in the log of `config`; `maps_dir`: the
/// running data plane's pinned maps, when reachable.
pub fn explain(config: &Config, maps_dir: &Path, address: IpAddr) -> anyhow::Result<Exit> {
    let key = match LogKey::load(&config.log.key_file) {
        Ok(key) => key,
        Err(error) => {
            eprintln!("mldefender: error: {error}");
            return Ok(Exit::Config);
        }
    };
    let wanted = address.to_string();
    let is_block_of = |record: &Map<String, Value>| {
        matches!(record.get("action").and_then(Value::as_str), Some("block" | "would-block")) && record.get("src_ip").and_then(Value::as_str) == Some(&wanted)
    };
    let search = newest_authenticated(&config.log.dir, &config.log.node, key, MAX_BYTES_READ, &wanted, is_block_of)
        .map_err(|error| anyhow::anyhow!("failed to read the log under `{}`: {error}", config.log.dir.display()))?;
    for (path, reason) in &search.rejected {
        eprintln!("mldefender: a block record of {address} in `{}` fails authentication ({reason}); skipped", path.display());
    }
    print_in_force(maps_dir, address);
    println!("{}", mld_runtime::benign::explain_line(&config.detect.state_dir, address));
    let skipped = match search.rejected.len() {
        0 => String::new(),
        n => format!("; {n} newer record(s) about it failed authentication and were skipped (`mldefender log verify`)"),
    };
    let Some((path, record)) = search.found else {
        let searched = if search.cut_short { format!(" (the newest {} MiB; older files not read)", search.bytes_read >> 20) } else { String::new() };
        println!("no block decision about {address} in the log under `{}`{searched}{skipped}", config.log.dir.display());
        return Ok(Exit::Failure);
    };
    print_decision(config, &path, &record);
    if !skipped.is_empty() {
        println!("note{skipped}");
    }
    Ok(Exit::Success)
}

/// What the running data plane holds for the address now, if it can be read.
fn print_in_force(maps_dir: &Path, address: IpAddr) {
    let Ok(maps) = PinnedMaps::open(maps_dir) else {
        println!("in force: unknown (no running data plane under `{}`)", maps_dir.display());
        return;
    };
    let host = IpPrefix::host(address);
    match maps.deny_list() {
        Ok(entries) => match entries.iter().find(|entry| entry.prefix.covers(&host)) {
            Some(entry) => match entry.remaining(boot_time_ns()) {
                Some(left) => println!("in force: {} denied for {} s more ({})", entry.prefix, left.as_secs(), entry.reason.as_str()),
                None => println!("in force: {} denied permanently ({})", entry.prefix, entry.reason.as_str()),
            },
            None => println!("in force: not blocked now"),
        },
        Err(error) => println!("in force: unknown ({error})"),
    }
}

fn print_decision(config: &Config, path: &Path, record: &Map<String, Value>) {
    let text = |key: &str| match record.get(key) {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(text)) => text.clone(),
        // Rates and shares: two decimals are what a person reads.
        Some(Value::Number(number)) if number.is_f64() => number.as_f64().map_or_else(|| number.to_string(), |value| format!("{value:.2}")),
        Some(other) => other.to_string(),
    };
    println!(
        "decision: {} at {} (seq {}, event {}, in `{}`; authenticated with the log key)",
        text("action"),
        text("ts"),
        text("seq"),
        text("event_id"),
        path.display()
    );
    println!("  category {}, TTL {} s, escalation step {}", text("category"), text("block_ttl_secs"), text("escalation_step"));
    println!(
        "  scores: final {} (authoritative: {}), fast {}, model {}, divergence {}",
        text("score_final"),
        text("authoritative_source"),
        text("score_fast"),
        text("score_model"),
        text("score_divergence")
    );
    println!("  why: {}", text("provenance"));
    println!(
        "  the flow: {}:{} → {}:{} {} ({} bytes out, {} back)",
        text("src_ip"),
        text("src_port"),
        text("dst_ip"),
        text("dst_port"),
        text("protocol_name"),
        text("fwd_ip_bytes"),
        text("bwd_ip_bytes")
    );
    for length in &config.windows.lengths {
        let secs = length.as_secs();
        let window = |name: &str| text(&format!("src_{secs}s_{name}"));
        println!(
            "  the source over {secs} s: {} destinations, {} ports, {} new flows/s, {} packets/s, {} bytes/s, SYN-without-ACK {}, RST {}",
            window("distinct_dst_addrs"),
            window("distinct_dst_ports"),
            window("new_flows_per_sec"),
            window("packets_per_sec"),
            window("bytes_per_sec"),
            window("syn_without_ack_ratio"),
            window("rst_ratio")
        );
    }
    match record.get("nearest_past_events") {
        Some(Value::Object(neighbours)) => println!("  nearest past events: {}", Value::Object(neighbours.clone())),
        Some(other) => println!("  nearest past events: {other}"),
        None => println!("  nearest past events: not asked (detect.nearest-past-events = 0)"),
    }
}
