//! `[detect]`, `[detect.heuristics]` and `[response]`: how flows are scored and what a
//! decision does. Raw (as written) and validated forms side by side.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::validate::in_range;
use mld_types::IpPrefix;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawDetect {
    /// "required": the signed models must load or the task stops; "off": heuristics only.
    pub models: String,
    /// Directory holding attack.onnx / attack.json / attack.json.sig (and category.*).
    pub models_dir: String,
    /// Ed25519 public key (base64) that signs the models' metadata.
    pub model_public_key: String,
    /// The ONNX Runtime shared library (1.31.x).
    pub onnxruntime: String,
    /// "agree", "tiered", "either", "fast" or "model".
    pub policy: String,
    /// The fast path fires at or above this score (0..1).
    pub fast_threshold: f64,
    /// The attack model fires at or above this score (0..1).
    pub model_threshold: f64,
    /// Policy "tiered": the fast path blocks alone at or above this; at least fast-threshold.
    pub fast_alone_threshold: f64,
    /// Policy "tiered": the model blocks alone when model-alone-min-flows of the source's flows
    /// within evidence-secs score at or above this; at least model-threshold.
    pub model_alone_threshold: f64,
    /// Flows the model must flag for it to block alone.
    pub model_alone_min_flows: i64,
    /// How long a source's model evidence counts. Seconds.
    pub evidence_secs: i64,
    /// How often the task decides. Milliseconds.
    pub tick_ms: i64,
    /// Flows scored per model call at most.
    pub batch_max: i64,
    /// Flows waiting to be scored at most; beyond, flows are dropped and counted.
    pub queue_max: i64,
    /// Sources with detection state at most (least recently active forgotten).
    pub max_sources: i64,
    /// Flow events written per second at most (blocks are always written).
    pub max_flow_events_per_sec: i64,
    /// Alert, refusal and breaker-open events written per second at most.
    pub max_alert_events_per_sec: i64,
    /// Decisions carry this many most similar past events (asked of the ingest task); 0: off.
    pub nearest_past_events: i64,
    /// How long a decision's record waits for them at most. Milliseconds.
    pub nearest_past_events_budget_ms: i64,
    /// The detect task's own directory: the operator's exemptions (`benign.json`).
    pub state_dir: String,
    /// The fast path: thresholds on the source's window aggregates.
    pub heuristics: RawHeuristics,
}

impl Default for RawDetect {
    fn default() -> RawDetect {
        RawDetect {
            models: "required".to_string(),
            models_dir: "/usr/share/mldefender/models".to_string(),
            // The project's release key: it signs the models in models/.
            model_public_key: "viO2lPvEO07YVapWMGqPadpKkt4VNsnwQftl4CPiHns=".to_string(),
            onnxruntime: "/usr/local/lib/mldefender/libonnxruntime.so.1.31.1".to_string(),
            policy: "tiered".to_string(),
            fast_threshold: 0.5,
            model_threshold: 0.5,
            fast_alone_threshold: 0.9,
            model_alone_threshold: 0.97,
            model_alone_min_flows: 3,
            evidence_secs: 60,
            tick_ms: 100,
            batch_max: 1024,
            queue_max: 65_536,
            max_sources: 65_536,
            max_flow_events_per_sec: 2000,
            max_alert_events_per_sec: 100,
            nearest_past_events: 0,
            nearest_past_events_budget_ms: 50,
            state_dir: "/var/lib/mldefender/detect".to_string(),
            heuristics: RawHeuristics::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawHeuristics {
    /// Which window (seconds, one of windows.lengths-secs) the heuristics read.
    pub window_secs: i64,
    /// Scan: distinct destination ports of flows the source started within the window.
    pub scan_ports: i64,
    /// Sweep: distinct destination addresses within the window.
    pub scan_addrs: i64,
    /// Scan: distinct destination ports that refused the source's TCP connections (a RST).
    pub scan_refused_ports: i64,
    /// Flood or scan: flows the source started that got no answer within the window.
    pub flood_new_flows: i64,
    /// Flood: flows of the source answered over the last second, per second.
    pub flood_answered_flows_per_sec: i64,
    /// Flood: traffic in flows nobody answered over the last second. Mbit/s.
    pub flood_one_way_mbit_per_sec: i64,
    /// Flood: ICMP packets the source sent over the last second, per second.
    pub flood_icmp_packets_per_sec: i64,
    /// Flood of small packets in few flows: packets within the window.
    pub flood_packets: i64,
    /// ... whose mean size is at most this. Bytes.
    pub flood_max_mean_packet_bytes: i64,
    /// ... and at least this many packets per flow.
    pub flood_min_packets_per_flow: i64,
    /// SYN flood: share of TCP packets with SYN and not ACK (0..1) ...
    pub syn_ratio: f64,
    /// ... among at least this many TCP packets.
    pub syn_min_packets: i64,
    /// Share of TCP packets with RST (scans of closed ports, 0..1) ...
    pub rst_ratio: f64,
    /// ... among at least this many TCP packets.
    pub rst_min_packets: i64,
    /// Repeated sessions to at most two destination ports (never decisive alone).
    pub repeat_sessions: i64,
    /// Slow attack: concurrent open flows to one service, each old and slow (never decisive alone).
    pub slow_connections: i64,
    /// A slow flow is at least this old. Seconds.
    pub slow_min_age_secs: i64,
    /// A slow flow sends at most this. Bytes per second, above 0.
    pub slow_max_bytes_per_sec: f64,
    /// Authentication services whose short sessions count as password guessing. Ports.
    pub auth_ports: Vec<i64>,
    /// Password guessing: short answered sessions to one service within auth-window-secs.
    pub auth_sessions: i64,
    /// The window of auth-sessions. Seconds.
    pub auth_window_secs: i64,
    /// A session counts when it closes within this. Seconds.
    pub auth_max_session_secs: i64,
}

/// Services where a remote user logs in interactively: ssh (22, and 2222, its usual
/// alternative), telnet, RDP, VNC: where password guessing happens, and where many short
/// sessions from one host are not the normal. Left out on purpose, as services that
/// applications and scripts hit with a session per request: databases and LDAP (no
/// connection pooling), SMTP and mail submission (a connection per message), IMAP and
/// POP (webmail opens one per page), FTP (scripted transfers).
pub const DEFAULT_AUTH_PORTS: [u16; 5] = [22, 23, 2222, 3389, 5900];

impl Default for RawHeuristics {
    fn default() -> RawHeuristics {
        RawHeuristics {
            window_secs: 10,
            scan_ports: 20,
            scan_addrs: 20,
            scan_refused_ports: 8,
            flood_new_flows: 150,
            flood_answered_flows_per_sec: 150,
            flood_one_way_mbit_per_sec: 50,
            flood_icmp_packets_per_sec: 200,
            flood_packets: 600,
            flood_max_mean_packet_bytes: 200,
            flood_min_packets_per_flow: 50,
            syn_ratio: 0.8,
            syn_min_packets: 300,
            rst_ratio: 0.6,
            rst_min_packets: 300,
            repeat_sessions: 60,
            slow_connections: 20,
            slow_min_age_secs: 5,
            slow_max_bytes_per_sec: 200.0,
            auth_ports: DEFAULT_AUTH_PORTS.iter().map(|port| i64::from(*port)).collect(),
            auth_sessions: 5,
            auth_window_secs: 60,
            auth_max_session_secs: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawResponse {
    /// "block" writes the deny map; "dry-run" only logs "would-block".
    pub mode: String,
    /// A flood's first block lasts this long (doubled per repeat). Seconds.
    pub ttl_flood_secs: i64,
    /// A scan's first block. Seconds.
    pub ttl_scan_secs: i64,
    /// Password guessing's block (after first-block-unsure-secs). Seconds.
    pub ttl_bruteforce_secs: i64,
    /// A slow attack's block (after first-block-unsure-secs). Seconds.
    pub ttl_slow_secs: i64,
    /// Any other category's first block. Seconds.
    pub ttl_other_secs: i64,
    /// No block lasts longer, however often repeated. Seconds.
    pub ttl_max_secs: i64,
    /// A repeat within this long doubles the TTL. Seconds.
    pub repeat_window_secs: i64,
    /// The circuit breaker: new blocks a minute at most.
    pub max_new_blocks_per_minute: i64,
    /// Blocks in force at most.
    pub max_active_blocks: i64,
    /// Never blocked besides the allowlist and the gateway's own addresses.
    pub management_prefixes: Vec<String>,
    /// Servers the site depends on, never blocked: prefixes or addresses.
    pub critical_servers: Vec<String>,
    /// Never block the resolvers in use.
    pub protect_resolvers: bool,
    /// The resolvers; empty: those of /etc/resolv.conf, read again as it changes.
    pub resolvers: Vec<String>,
    /// Never block the next hops of the default routes.
    pub protect_default_gateways: bool,
    /// The share of max-new-blocks-per-minute kept for sources with two-way evidence.
    /// Percent.
    pub breaker_reserved_percent: i64,
    /// The first block of a source for an unsure category (brute force, slow) lasts this
    /// long; 0: as long as the category's TTL. Seconds.
    pub first_block_unsure_secs: i64,
}

impl Default for RawResponse {
    fn default() -> RawResponse {
        RawResponse {
            mode: "block".to_string(),
            ttl_flood_secs: 600,
            ttl_scan_secs: 3600,
            ttl_bruteforce_secs: 3600,
            ttl_slow_secs: 1800,
            ttl_other_secs: 600,
            ttl_max_secs: 86_400,
            repeat_window_secs: 86_400,
            max_new_blocks_per_minute: 120,
            max_active_blocks: 10_000,
            management_prefixes: Vec::new(),
            critical_servers: Vec::new(),
            protect_resolvers: true,
            resolvers: Vec::new(),
            protect_default_gateways: true,
            breaker_reserved_percent: 25,
            first_block_unsure_secs: 60,
        }
    }
}

/// Whether the models must load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelsMode {
    Required,
    /// Development: heuristics only, stated in every event's provenance.
    Off,
}

/// When a source is blocked, given the fast-path and model scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockPolicy {
    /// Both engines fire. Either alone only alerts.
    Agree,
    /// Both fire, or one is at or above its "alone" threshold (overwhelming evidence).
    Tiered,
    /// Either fires.
    Either,
    /// The fast path decides; the model annotates.
    Fast,
    /// The model decides; the fast path annotates.
    Model,
}

impl BlockPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockPolicy::Agree => "agree",
            BlockPolicy::Tiered => "tiered",
            BlockPolicy::Either => "either",
            BlockPolicy::Fast => "fast",
            BlockPolicy::Model => "model",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DetectConfig {
    pub models: ModelsMode,
    pub models_dir: PathBuf,
    pub model_public_key: String,
    pub onnxruntime: PathBuf,
    pub policy: BlockPolicy,
    pub fast_threshold: f64,
    pub model_threshold: f64,
    pub fast_alone_threshold: f64,
    pub model_alone_threshold: f64,
    pub model_alone_min_flows: u32,
    pub evidence: Duration,
    pub tick: Duration,
    pub batch_max: usize,
    pub queue_max: usize,
    pub max_sources: usize,
    pub max_flow_events_per_sec: u32,
    pub max_alert_events_per_sec: u32,
    /// 0: off.
    pub nearest_past_events: usize,
    pub nearest_past_events_budget: Duration,
    /// The detect task's own directory (written by it alone).
    pub state_dir: PathBuf,
    pub heuristics: HeuristicsConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeuristicsConfig {
    /// Index of the window the heuristics read, in `windows.lengths`; `None` when no
    /// windows are configured (then only the slow-connection heuristic runs).
    pub window_index: Option<usize>,
    /// That window's length (zero without windows).
    pub window: Duration,
    pub scan_ports: u32,
    pub scan_addrs: u32,
    pub scan_refused_ports: u32,
    pub flood_new_flows: u32,
    pub flood_answered_flows_per_sec: u32,
    pub flood_one_way_bytes_per_sec: f64,
    pub flood_icmp_packets_per_sec: u32,
    pub flood_packets: u32,
    pub flood_max_mean_packet_bytes: u32,
    pub flood_min_packets_per_flow: u32,
    pub syn_ratio: f64,
    pub syn_min_packets: u32,
    pub rst_ratio: f64,
    pub rst_min_packets: u32,
    pub repeat_sessions: u32,
    pub slow_connections: u32,
    pub slow_min_age: Duration,
    pub slow_max_bytes_per_sec: f64,
    /// Destination ports of authentication services (sorted, unique).
    pub auth_ports: Vec<u16>,
    pub auth_sessions: u32,
    pub auth_window: Duration,
    pub auth_max_session: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMode {
    Block,
    DryRun,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResponseConfig {
    pub mode: ResponseMode,
    pub ttl_flood: Duration,
    pub ttl_scan: Duration,
    pub ttl_bruteforce: Duration,
    pub ttl_slow: Duration,
    pub ttl_other: Duration,
    pub ttl_max: Duration,
    pub repeat_window: Duration,
    /// The first block for brute force or slow (categories whose evidence is fuzzy:
    /// busy-but-normal hosts can look like them); `None`: the category's TTL. A repeat
    /// within `repeat_window` (the behaviour went on after the block expired) gets the
    /// category's TTL, doubling from there.
    pub first_block_unsure: Option<Duration>,
    pub max_new_blocks_per_minute: u32,
    pub max_active_blocks: u32,
    pub management_prefixes: Vec<IpPrefix>,
    pub critical_servers: Vec<IpPrefix>,
    pub protect_resolvers: bool,
    /// Configured resolvers; empty: read from /etc/resolv.conf.
    pub resolvers: Vec<std::net::IpAddr>,
    pub protect_default_gateways: bool,
    /// New blocks per minute kept for sources with two-way evidence.
    pub breaker_reserved_per_minute: u32,
}

fn unit(value: f64, path: &str, errors: &mut Vec<ConfigError>) -> f64 {
    if !(0.0..=1.0).contains(&value) {
        errors.push(ConfigError::new(path, format!("must be between 0 and 1, got {value}")));
        return 0.5;
    }
    value
}

pub(crate) fn validate_detect(raw: &RawDetect, windows_secs: &[u64], errors: &mut Vec<ConfigError>) -> DetectConfig {
    let models = match raw.models.as_str() {
        "required" => ModelsMode::Required,
        "off" => ModelsMode::Off,
        other => {
            errors.push(ConfigError::new("detect.models", format!("must be \"required\" or \"off\", got \"{other}\"")));
            ModelsMode::Required
        }
    };
    let policy = match raw.policy.as_str() {
        "agree" => BlockPolicy::Agree,
        "tiered" => BlockPolicy::Tiered,
        "either" => BlockPolicy::Either,
        "fast" => BlockPolicy::Fast,
        "model" => BlockPolicy::Model,
        other => {
            errors.push(ConfigError::new("detect.policy", format!("must be \"agree\", \"tiered\", \"either\", \"fast\" or \"model\", got \"{other}\"")));
            BlockPolicy::Tiered
        }
    };
    if models == ModelsMode::Required && raw.model_public_key.is_empty() {
        errors.push(ConfigError::new("detect.model-public-key", "must be set when detect.models = \"required\" (the models' signing key, base64)"));
    }
    if models == ModelsMode::Off && matches!(policy, BlockPolicy::Agree | BlockPolicy::Model) {
        errors.push(ConfigError::new("detect.policy", format!("\"{}\" needs the models, but detect.models = \"off\"", policy.as_str())));
    }
    let fast_threshold = unit(raw.fast_threshold, "detect.fast-threshold", errors);
    let model_threshold = unit(raw.model_threshold, "detect.model-threshold", errors);
    let fast_alone_threshold = unit(raw.fast_alone_threshold, "detect.fast-alone-threshold", errors);
    let model_alone_threshold = unit(raw.model_alone_threshold, "detect.model-alone-threshold", errors);
    if fast_alone_threshold < fast_threshold {
        errors.push(ConfigError::new(
            "detect.fast-alone-threshold",
            format!("must be at least detect.fast-threshold ({fast_threshold}), got {fast_alone_threshold}"),
        ));
    }
    if model_alone_threshold < model_threshold {
        errors.push(ConfigError::new(
            "detect.model-alone-threshold",
            format!("must be at least detect.model-threshold ({model_threshold}), got {model_alone_threshold}"),
        ));
    }
    let h = &raw.heuristics;
    let window_index = windows_secs.iter().position(|secs| i64::try_from(*secs) == Ok(h.window_secs));
    if window_index.is_none() && !windows_secs.is_empty() {
        errors.push(ConfigError::new("detect.heuristics.window-secs", format!("must be one of windows.lengths-secs {windows_secs:?}, got {}", h.window_secs)));
    }
    let count = |value: i64, key: &str, errors: &mut Vec<ConfigError>| in_range(value, 1, 100_000_000, &format!("detect.heuristics.{key}"), errors) as u32;
    let heuristics = HeuristicsConfig {
        window_index,
        window: Duration::from_secs(window_index.map_or(0, |_| h.window_secs.max(0) as u64)),
        scan_ports: count(h.scan_ports, "scan-ports", errors),
        scan_addrs: count(h.scan_addrs, "scan-addrs", errors),
        scan_refused_ports: count(h.scan_refused_ports, "scan-refused-ports", errors),
        flood_new_flows: count(h.flood_new_flows, "flood-new-flows", errors),
        flood_answered_flows_per_sec: count(h.flood_answered_flows_per_sec, "flood-answered-flows-per-sec", errors),
        flood_icmp_packets_per_sec: count(h.flood_icmp_packets_per_sec, "flood-icmp-packets-per-sec", errors),
        flood_one_way_bytes_per_sec: in_range(h.flood_one_way_mbit_per_sec, 1, 400_000, "detect.heuristics.flood-one-way-mbit-per-sec", errors) as f64 * 1e6
            / 8.0,
        flood_packets: count(h.flood_packets, "flood-packets", errors),
        flood_max_mean_packet_bytes: count(h.flood_max_mean_packet_bytes, "flood-max-mean-packet-bytes", errors),
        flood_min_packets_per_flow: count(h.flood_min_packets_per_flow, "flood-min-packets-per-flow", errors),
        syn_ratio: unit(h.syn_ratio, "detect.heuristics.syn-ratio", errors),
        syn_min_packets: count(h.syn_min_packets, "syn-min-packets", errors),
        rst_ratio: unit(h.rst_ratio, "detect.heuristics.rst-ratio", errors),
        rst_min_packets: count(h.rst_min_packets, "rst-min-packets", errors),
        repeat_sessions: count(h.repeat_sessions, "repeat-sessions", errors),
        slow_connections: count(h.slow_connections, "slow-connections", errors),
        slow_min_age: Duration::from_secs(in_range(h.slow_min_age_secs, 1, 3600, "detect.heuristics.slow-min-age-secs", errors)),
        slow_max_bytes_per_sec: if h.slow_max_bytes_per_sec > 0.0 {
            h.slow_max_bytes_per_sec
        } else {
            errors.push(ConfigError::new("detect.heuristics.slow-max-bytes-per-sec", format!("must be above 0, got {}", h.slow_max_bytes_per_sec)));
            1.0
        },
        auth_ports: {
            let mut ports: Vec<u16> = Vec::new();
            for (index, port) in h.auth_ports.iter().enumerate() {
                match u16::try_from(*port) {
                    Ok(port) if port != 0 => ports.push(port),
                    _ => errors.push(ConfigError::new(format!("detect.heuristics.auth-ports[{index}]"), format!("must be a port from 1 to 65535, got {port}"))),
                }
            }
            ports.sort_unstable();
            ports.dedup();
            ports
        },
        auth_sessions: count(h.auth_sessions, "auth-sessions", errors),
        auth_window: Duration::from_secs(in_range(h.auth_window_secs, 1, 3600, "detect.heuristics.auth-window-secs", errors)),
        auth_max_session: Duration::from_secs(in_range(h.auth_max_session_secs, 1, 3600, "detect.heuristics.auth-max-session-secs", errors)),
    };
    DetectConfig {
        models,
        models_dir: PathBuf::from(&raw.models_dir),
        model_public_key: raw.model_public_key.clone(),
        onnxruntime: PathBuf::from(&raw.onnxruntime),
        policy,
        fast_threshold,
        model_threshold,
        fast_alone_threshold,
        model_alone_threshold,
        model_alone_min_flows: in_range(raw.model_alone_min_flows, 1, 1000, "detect.model-alone-min-flows", errors) as u32,
        evidence: Duration::from_secs(in_range(raw.evidence_secs, 1, 3600, "detect.evidence-secs", errors)),
        tick: Duration::from_millis(in_range(raw.tick_ms, 10, 10_000, "detect.tick-ms", errors)),
        batch_max: in_range(raw.batch_max, 1, 65_536, "detect.batch-max", errors) as usize,
        queue_max: in_range(raw.queue_max, 1, 10_000_000, "detect.queue-max", errors) as usize,
        max_sources: in_range(raw.max_sources, 16, 10_000_000, "detect.max-sources", errors) as usize,
        max_flow_events_per_sec: in_range(raw.max_flow_events_per_sec, 0, 1_000_000, "detect.max-flow-events-per-sec", errors) as u32,
        max_alert_events_per_sec: in_range(raw.max_alert_events_per_sec, 1, 1_000_000, "detect.max-alert-events-per-sec", errors) as u32,
        nearest_past_events: in_range(raw.nearest_past_events, 0, 20, "detect.nearest-past-events", errors) as usize,
        nearest_past_events_budget: Duration::from_millis(in_range(raw.nearest_past_events_budget_ms, 1, 1000, "detect.nearest-past-events-budget-ms", errors)),
        state_dir: if raw.state_dir.starts_with('/') {
            PathBuf::from(&raw.state_dir)
        } else {
            errors.push(ConfigError::new("detect.state-dir", format!("must be an absolute path, got \"{}\"", raw.state_dir)));
            PathBuf::from("/var/lib/mldefender/detect")
        },
        heuristics,
    }
}

pub(crate) fn validate_response(raw: &RawResponse, errors: &mut Vec<ConfigError>) -> ResponseConfig {
    let mode = match raw.mode.as_str() {
        "block" => ResponseMode::Block,
        "dry-run" => ResponseMode::DryRun,
        other => {
            errors.push(ConfigError::new("response.mode", format!("must be \"block\" or \"dry-run\", got \"{other}\"")));
            ResponseMode::DryRun
        }
    };
    let secs = |value: i64, key: &str, errors: &mut Vec<ConfigError>| Duration::from_secs(in_range(value, 1, 31_536_000, &format!("response.{key}"), errors));
    let ttl_max = secs(raw.ttl_max_secs, "ttl-max-secs", errors);
    let ttls = [
        ("ttl-flood-secs", raw.ttl_flood_secs),
        ("ttl-scan-secs", raw.ttl_scan_secs),
        ("ttl-bruteforce-secs", raw.ttl_bruteforce_secs),
        ("ttl-slow-secs", raw.ttl_slow_secs),
        ("ttl-other-secs", raw.ttl_other_secs),
    ];
    for (key, value) in ttls {
        if value > raw.ttl_max_secs {
            errors.push(ConfigError::new(format!("response.{key}"), format!("must not exceed response.ttl-max-secs ({}), got {value}", raw.ttl_max_secs)));
        }
    }
    let mut management_prefixes = Vec::new();
    for (index, text) in raw.management_prefixes.iter().enumerate() {
        match text.parse::<IpPrefix>() {
            Ok(prefix) => management_prefixes.push(prefix),
            Err(reason) => errors.push(ConfigError::new(format!("response.management-prefixes[{index}]"), reason)),
        }
    }
    let mut critical_servers = Vec::new();
    for (index, text) in raw.critical_servers.iter().enumerate() {
        match text.parse::<IpPrefix>() {
            Ok(prefix) => critical_servers.push(prefix),
            Err(reason) => errors.push(ConfigError::new(format!("response.critical-servers[{index}]"), reason)),
        }
    }
    let mut resolvers = Vec::new();
    for (index, text) in raw.resolvers.iter().enumerate() {
        match text.parse::<std::net::IpAddr>() {
            Ok(address) => resolvers.push(address),
            Err(_) => errors.push(ConfigError::new(format!("response.resolvers[{index}]"), format!("not an IP address: \"{text}\""))),
        }
    }
    let max_new_blocks_per_minute = in_range(raw.max_new_blocks_per_minute, 1, 1_000_000, "response.max-new-blocks-per-minute", errors) as u32;
    let reserved_percent = in_range(raw.breaker_reserved_percent, 0, 100, "response.breaker-reserved-percent", errors) as u32;
    let first_block_unsure = in_range(raw.first_block_unsure_secs, 0, raw.ttl_max_secs.max(0), "response.first-block-unsure-secs", errors);
    ResponseConfig {
        mode,
        ttl_flood: secs(raw.ttl_flood_secs, "ttl-flood-secs", errors),
        ttl_scan: secs(raw.ttl_scan_secs, "ttl-scan-secs", errors),
        ttl_bruteforce: secs(raw.ttl_bruteforce_secs, "ttl-bruteforce-secs", errors),
        ttl_slow: secs(raw.ttl_slow_secs, "ttl-slow-secs", errors),
        ttl_other: secs(raw.ttl_other_secs, "ttl-other-secs", errors),
        ttl_max,
        repeat_window: secs(raw.repeat_window_secs, "repeat-window-secs", errors),
        first_block_unsure: (first_block_unsure > 0).then(|| Duration::from_secs(first_block_unsure)),
        max_new_blocks_per_minute,
        max_active_blocks: in_range(raw.max_active_blocks, 1, 262_144, "response.max-active-blocks", errors) as u32,
        management_prefixes,
        critical_servers,
        protect_resolvers: raw.protect_resolvers,
        resolvers,
        protect_default_gateways: raw.protect_default_gateways,
        breaker_reserved_per_minute: (u64::from(max_new_blocks_per_minute) * u64::from(reserved_percent) / 100) as u32,
    }
}
