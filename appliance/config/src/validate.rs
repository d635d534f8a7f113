//! Raw → validated. Every check runs; all failures come back together.

use std::time::Duration;

use mld_flow::features::FeatureParams;
use mld_flow::window::WindowConfig;
use mld_flow::FlowTableConfig;

use std::path::{Path, PathBuf};

use crate::error::ConfigError;
use crate::raw::{RawAllowlist, RawCapture, RawConfig, RawFlow, RawLog, RawOutput, RawSupervisor, RawSystem, RawTask, RawWindows};
use mld_types::IpPrefix;

/// A validated configuration: every value is in range and consistent.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub flow: FlowConfig,
    pub windows: WindowsConfig,
    pub output: OutputConfig,
    pub capture: CaptureConfig,
    /// Prefixes that are never dropped and never blocked.
    pub allowlist: Vec<IpPrefix>,
    pub supervisor: SupervisorConfig,
    /// Tasks in start order (capture first: shutdown stops it first).
    pub tasks: Vec<TaskConfig>,
    pub system: SystemConfig,
    pub log: LogConfig,
    pub detect: crate::detect::DetectConfig,
    pub response: crate::detect::ResponseConfig,
    pub ingest: IngestConfig,
    /// The per-destination guard against random-source floods.
    pub guard: crate::guard::GuardConfig,
    /// This node's certificates.
    pub pki: crate::pki::PkiConfig,
    /// Sharing blocks with other appliances.
    pub fleet: crate::fleet::FleetConfig,
    /// The appliance image: updates, boot counting, blessing.
    pub image: crate::image::ImageConfig,
    /// Metrics and the status page on the management network.
    pub metrics: crate::metrics::MetricsConfig,
}

/// The ingest task: verified tailing of the signed log.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestConfig {
    pub state_dir: PathBuf,
    pub poll_interval: Duration,
    pub max_age: Duration,
    pub recent_seqs: usize,
    pub max_quarantine_bytes: u64,
    /// `None`: verify only, no similarity index.
    pub index: Option<IndexConfig>,
}

/// The similarity index the ingest task builds.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexConfig {
    /// `<state-dir>/index`.
    pub dir: PathBuf,
    pub factory: String,
    /// FAISS search parameters by name (`nprobe`, `efSearch`), set at every open.
    pub search_parameters: Vec<(String, f64)>,
    pub embedder: String,
    pub save_interval: Duration,
    pub max_events: usize,
    /// The text index (`ingest.text-index`); `None`: off.
    pub text: Option<TextIndexConfig>,
}

/// The text index the ingest task builds beside the similarity index (issue 19).
#[derive(Debug, Clone, PartialEq)]
pub struct TextIndexConfig {
    /// `<state-dir>/text-index`.
    pub dir: PathBuf,
    /// Where `text-embedder.{onnx,json,json.sig}` and `tokenizer.json` are.
    pub model_dir: PathBuf,
    pub max_events: usize,
    pub observations: bool,
}

fn validate_index(raw: &crate::raw::RawIngest, errors: &mut Vec<ConfigError>) -> Option<IndexConfig> {
    let save_interval = Duration::from_secs(in_range(raw.save_interval_secs, 1, 3600, "ingest.save-interval-secs", errors));
    let factory = raw.index_factory.trim();
    if factory.is_empty() || factory.contains("IDMap") || factory.contains('"') {
        errors.push(ConfigError::new(
            "ingest.index-factory",
            format!("must be a FAISS index-factory string without IDMap (ids are always mapped), e.g. \"Flat\" or \"HNSW32\"; got \"{}\"", raw.index_factory),
        ));
    }
    if raw.embedder.is_empty() || raw.embedder.starts_with('.') || raw.embedder.contains('/') {
        errors
            .push(ConfigError::new("ingest.embedder", format!("must be a model name in detect.models-dir (no `/`, no leading `.`), got \"{}\"", raw.embedder)));
    }
    let mut search_parameters = Vec::new();
    for item in raw.index_search_parameters.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        match item.split_once('=').map(|(name, value)| (name.trim(), value.trim().parse::<f64>())) {
            Some((name, Ok(value))) if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && value.is_finite() => {
                search_parameters.push((name.to_string(), value));
            }
            _ => errors.push(ConfigError::new("ingest.index-search-parameters", format!("`{item}` is not name=number (e.g. \"nprobe=8\" or \"efSearch=64\")"))),
        }
    }
    let max_events = in_range(raw.index_max_events, 1000, 100_000_000, "ingest.index-max-events", errors) as usize;
    let text_max_events = in_range(raw.text_index_max_events, 1000, 10_000_000, "ingest.text-index-max-events", errors) as usize;
    if raw.text_index && !Path::new(&raw.text_model_dir).is_absolute() {
        errors.push(ConfigError::new("ingest.text-model-dir", format!("must be an absolute path, got \"{}\"", raw.text_model_dir)));
    }
    let text = raw.text_index.then(|| TextIndexConfig {
        dir: PathBuf::from(&raw.state_dir).join("text-index"),
        model_dir: PathBuf::from(&raw.text_model_dir),
        max_events: text_max_events,
        observations: raw.text_observations,
    });
    raw.index.then(|| IndexConfig {
        max_events,
        dir: PathBuf::from(&raw.state_dir).join("index"),
        factory: factory.to_string(),
        search_parameters,
        embedder: raw.embedder.clone(),
        save_interval,
        text,
    })
}

/// The signed event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub dir: PathBuf,
    pub node: String,
    /// False when `log.node` was left empty (the node id is the host name, or `mldefender`).
    pub node_configured: bool,
    pub key_file: PathBuf,
    pub create_key: bool,
    /// The checkpoint signing key (ADR 0007): `log.signing-key-file`, or
    /// `log-signing.key` next to `key_file`.
    pub signing_key_file: PathBuf,
    pub checkpoint_every_records: u32,
    pub checkpoint_interval: Duration,
    pub max_file_bytes: u64,
    pub rotate_daily: bool,
    pub sync_every_records: u32,
    pub sync_interval: Duration,
    /// Retention: the disk budget of the node's log files, bytes.
    pub max_disk_bytes: u64,
    /// Retention: the age limit of a file (since it was last written); `None`: none.
    pub max_age: Option<Duration>,
}

/// What the supervisor sets up on the machine before the data plane (init duties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemConfig {
    pub modules_dir: PathBuf,
    pub modules: Vec<String>,
    pub interfaces_up: Vec<String>,
    /// IPv4 addresses to set: interface, address, prefix length.
    pub addresses: Vec<(String, std::net::Ipv4Addr, u8)>,
    pub ip_forward: bool,
    /// The persistent data device (mounted before anything else); `None`: everything
    /// stays where the root file system keeps it.
    pub data: Option<DataMount>,
}

/// A block device the supervisor mounts at start for persistent state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataMount {
    /// A device path, or `PARTLABEL=NAME` (found through sysfs).
    pub device: PathBuf,
    /// Format it (with `data_label`) when it is blank.
    pub format_if_blank: bool,
    /// The label it must carry; empty: any.
    pub label: String,
    pub fstype: String,
    pub mount: PathBuf,
    pub wait: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorConfig {
    pub shutdown_deadline: Duration,
    pub watchdog_interval: Duration,
    pub cgroup_root: PathBuf,
    /// Use cgroup v2 memory limits where the cgroup root is writable.
    pub use_cgroup: bool,
    /// The supervisor's own state: the configuration generations (`generations/`) and the
    /// fleet configuration document in force (`fleet-document.json`).
    pub state_dir: PathBuf,
    pub generations_max: usize,
    pub ready_timeout: Duration,
}

/// The tasks the supervisor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskKind {
    /// Reads the XDP ring buffer into the flow table; sends flows on.
    Capture,
    /// Scores flows and active-source reports, decides, sends blocks to the capture task
    /// and hands every event to the log task with acknowledgement.
    Detect,
    /// The only writer of the signed event log.
    Log,
    /// Follows the signed log and verifies every record (the similarity index comes next).
    Ingest,
    /// Shares blocks with the other appliances of a fleet over etcd (only with `[fleet]` on).
    Fleet,
}

impl TaskKind {
    pub const ALL: [TaskKind; 5] = [TaskKind::Capture, TaskKind::Detect, TaskKind::Log, TaskKind::Ingest, TaskKind::Fleet];

    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Capture => "capture",
            TaskKind::Detect => "detect",
            TaskKind::Log => "log",
            TaskKind::Ingest => "ingest",
            TaskKind::Fleet => "fleet",
        }
    }

    pub fn parse(name: &str) -> Option<TaskKind> {
        TaskKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartPolicy {
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskConfig {
    pub kind: TaskKind,
    pub enabled: bool,
    pub user: String,
    pub group: Option<String>,
    pub memory_high_bytes: u64,
    pub memory_max_bytes: u64,
    pub restart: RestartPolicy,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub min_run: Duration,
    pub hold_after_restarts: u32,
    pub hold_window: Duration,
    pub test_allocate_bytes: u64,
    pub test_exit_at_start: bool,
}

/// The XDP data plane: where it attaches and its resources.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureConfig {
    pub interfaces: Vec<InterfaceConfig>,
    pub bpffs_dir: PathBuf,
    pub runtime_dir: PathBuf,
    pub ring_size_bytes: u32,
    /// `None`: no periodic counters.
    pub counters_interval: Option<Duration>,
    pub sweep_interval: Duration,
    /// blocks.json: the blocks in force, kept across reboots.
    pub state_dir: PathBuf,
    /// Detach the program at exit (false: it keeps enforcing until `capture detach`).
    pub detach_on_exit: bool,
    pub network_refresh: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub name: String,
    pub role: InterfaceRole,
    pub xdp_mode: XdpMode,
    pub source_check: SourceCheck,
    /// Strict check: the permitted sources; empty: derived from the routes.
    pub source_prefixes: Vec<IpPrefix>,
}

/// Which sources may arrive on an interface (reverse-path filtering in XDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceCheck {
    /// Only the interface's source prefixes (and link-local/unspecified sources).
    Strict,
    /// Anything but the LAN interfaces' prefixes and the gateway's own addresses.
    Loose,
    Off,
}

/// Which side of the gateway an interface faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterfaceRole {
    Lan,
    Wan,
}

/// How the XDP program attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic mode where the driver has none.
    Auto,
    Native,
    Generic,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlowConfig {
    pub idle_timeout: Duration,
    pub active_timeout: Duration,
    pub tcp_close_linger: Duration,
    pub max_flows: usize,
    pub activity_timeout: Duration,
    pub subflow_gap: Duration,
    pub bulk_gap: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WindowsConfig {
    pub lengths: Vec<Duration>,
    pub max_sources: usize,
    pub max_distinct: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Jsonl,
    Csv,
    /// One human-readable line per flow.
    Text,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutputConfig {
    pub format: OutputFormat,
}

impl Default for Config {
    fn default() -> Config {
        Config::try_from(RawConfig::default()).expect("the default configuration is valid")
    }
}

impl Config {
    /// The flow table's parameters.
    pub fn flow_table(&self) -> FlowTableConfig {
        let ns = |duration: Duration| duration.as_nanos() as u64;
        FlowTableConfig {
            idle_timeout_ns: ns(self.flow.idle_timeout),
            active_timeout_ns: ns(self.flow.active_timeout),
            tcp_close_linger_ns: ns(self.flow.tcp_close_linger),
            max_flows: self.flow.max_flows,
            features: FeatureParams {
                activity_timeout_ns: ns(self.flow.activity_timeout),
                subflow_gap_ns: ns(self.flow.subflow_gap),
                bulk_gap_ns: ns(self.flow.bulk_gap),
            },
            windows: WindowConfig {
                windows_ns: self.windows.lengths.iter().map(|length| ns(*length)).collect(),
                max_sources: self.windows.max_sources,
                max_distinct: self.windows.max_distinct,
            },
        }
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = Vec<ConfigError>;

    fn try_from(raw: RawConfig) -> Result<Config, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let flow = validate_flow(&raw.flow, &mut errors);
        let windows = validate_windows(&raw.windows, &mut errors);
        let output = validate_output(&raw.output, &mut errors);
        let capture = validate_capture(&raw.capture, &mut errors);
        let allowlist = validate_allowlist(&raw.allowlist, &mut errors);
        let supervisor = validate_supervisor(&raw.supervisor, &mut errors);
        let tasks = vec![
            validate_task(TaskKind::Capture, &raw.tasks.capture, &mut errors),
            validate_task(TaskKind::Detect, &raw.tasks.detect, &mut errors),
            validate_task(TaskKind::Log, &raw.tasks.log, &mut errors),
            validate_task(TaskKind::Ingest, &raw.tasks.ingest, &mut errors),
            validate_task(TaskKind::Fleet, &raw.tasks.fleet, &mut errors),
        ];
        let system = validate_system(&raw.system, &mut errors);
        let log = validate_log(&raw.log, &mut errors);
        let windows_secs: Vec<u64> = windows.lengths.iter().map(Duration::as_secs).collect();
        let detect = crate::detect::validate_detect(&raw.detect, &windows_secs, &mut errors);
        let response = crate::detect::validate_response(&raw.response, &mut errors);
        if !raw.ingest.state_dir.starts_with('/') {
            errors.push(ConfigError::new("ingest.state-dir", format!("must be an absolute path, got \"{}\"", raw.ingest.state_dir)));
        }
        let ingest = IngestConfig {
            state_dir: PathBuf::from(&raw.ingest.state_dir),
            poll_interval: Duration::from_millis(in_range(raw.ingest.poll_interval_ms, 10, 60_000, "ingest.poll-interval-ms", &mut errors)),
            max_age: Duration::from_secs(in_range(raw.ingest.max_age_secs, 1, 31_536_000, "ingest.max-age-secs", &mut errors)),
            recent_seqs: in_range(raw.ingest.recent_seqs, 1, 1_000_000, "ingest.recent-seqs", &mut errors) as usize,
            max_quarantine_bytes: in_range(raw.ingest.max_quarantine_mib, 1, 65_536, "ingest.max-quarantine-mib", &mut errors) << 20,
            index: validate_index(&raw.ingest, &mut errors),
        };
        let guard = crate::guard::validate_guard(&raw.guard, &mut errors);
        let pki = crate::pki::validate_pki(&raw.pki, &mut errors);
        let fleet = crate::fleet::validate_fleet(&raw.fleet, &log.node, log.node_configured, pki.enabled, &mut errors);
        let image = crate::image::validate_image(&raw.image, &mut errors);
        let metrics = crate::metrics::validate_metrics(&raw.metrics, &mut errors);
        // The clients allowed to the metrics are management hosts: a scraper's regular
        // connections must never get it blocked.
        let mut response = response;
        for prefix in &metrics.allow_from {
            if !response.management_prefixes.contains(prefix) {
                response.management_prefixes.push(*prefix);
            }
        }
        let mut tasks = tasks;
        for task in tasks.iter_mut().filter(|task| task.kind == TaskKind::Fleet) {
            task.enabled &= fleet.enabled;
        }
        if errors.is_empty() {
            Ok(Config {
                flow,
                windows,
                output,
                capture,
                allowlist,
                supervisor,
                tasks,
                system,
                log,
                detect,
                response,
                ingest,
                guard,
                pki,
                fleet,
                image,
                metrics,
            })
        } else {
            Err(errors)
        }
    }
}

/// Checks `value` against an inclusive range, recording an error with `path` otherwise.
pub(crate) fn in_range(value: i64, min: i64, max: i64, path: &str, errors: &mut Vec<ConfigError>) -> u64 {
    if value < min || value > max {
        errors.push(ConfigError::new(path, format!("must be between {min} and {max}, got {value}")));
        min.max(0) as u64
    } else {
        value as u64
    }
}

fn validate_flow(raw: &RawFlow, errors: &mut Vec<ConfigError>) -> FlowConfig {
    let secs = |value, path, errors: &mut Vec<ConfigError>| Duration::from_secs(in_range(value, 1, 86_400, path, errors));
    let millis = |value, min, path, errors: &mut Vec<ConfigError>| Duration::from_millis(in_range(value, min, 3_600_000, path, errors));
    let idle_timeout = secs(raw.idle_timeout_secs, "flow.idle-timeout-secs", errors);
    let active_timeout = secs(raw.active_timeout_secs, "flow.active-timeout-secs", errors);
    if raw.active_timeout_secs < raw.idle_timeout_secs {
        errors.push(ConfigError::new(
            "flow.active-timeout-secs",
            format!("must be at least flow.idle-timeout-secs ({}), got {}", raw.idle_timeout_secs, raw.active_timeout_secs),
        ));
    }
    let tcp_close_linger = Duration::from_millis(in_range(raw.tcp_close_linger_ms, 0, 60_000, "flow.tcp-close-linger-ms", errors));
    let max_flows = in_range(raw.max_flows, 1, 16_777_216, "flow.max-flows", errors) as usize;
    FlowConfig {
        idle_timeout,
        active_timeout,
        tcp_close_linger,
        max_flows,
        activity_timeout: millis(raw.activity_timeout_ms, 1, "flow.activity-timeout-ms", errors),
        subflow_gap: millis(raw.subflow_gap_ms, 1, "flow.subflow-gap-ms", errors),
        bulk_gap: millis(raw.bulk_gap_ms, 1, "flow.bulk-gap-ms", errors),
    }
}

fn validate_windows(raw: &RawWindows, errors: &mut Vec<ConfigError>) -> WindowsConfig {
    if raw.lengths_secs.len() > 4 {
        errors.push(ConfigError::new("windows.lengths-secs", format!("at most 4 windows, got {}", raw.lengths_secs.len())));
    }
    let mut lengths = Vec::new();
    for (index, length) in raw.lengths_secs.iter().enumerate() {
        let path = format!("windows.lengths-secs[{index}]");
        let secs = in_range(*length, 1, 3600, &path, errors);
        let length = Duration::from_secs(secs);
        if lengths.contains(&length) {
            errors.push(ConfigError::new(path, format!("duplicate window length {secs}")));
        }
        lengths.push(length);
    }
    WindowsConfig {
        lengths,
        max_sources: in_range(raw.max_sources, 1, 1_048_576, "windows.max-sources", errors) as usize,
        max_distinct: in_range(raw.max_distinct, 1, 65_536, "windows.max-distinct", errors) as usize,
    }
}

fn validate_output(raw: &RawOutput, errors: &mut Vec<ConfigError>) -> OutputConfig {
    let format = match raw.format.as_str() {
        "jsonl" => OutputFormat::Jsonl,
        "csv" => OutputFormat::Csv,
        "text" => OutputFormat::Text,
        other => {
            errors.push(ConfigError::new("output.format", format!("must be \"jsonl\", \"csv\" or \"text\", got \"{other}\"")));
            OutputFormat::Jsonl
        }
    };
    OutputConfig { format }
}

fn validate_capture(raw: &RawCapture, errors: &mut Vec<ConfigError>) -> CaptureConfig {
    let mut interfaces: Vec<InterfaceConfig> = Vec::new();
    for (index, interface) in raw.interfaces.iter().enumerate() {
        let path = format!("capture.interfaces[{index}]");
        let name = interface.name.clone();
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            errors.push(ConfigError::new(
                format!("{path}.name"),
                format!("must be an interface name of 1 to 15 characters without `/` or spaces, got \"{name}\""),
            ));
        } else if interfaces.iter().any(|existing| existing.name == name) {
            errors.push(ConfigError::new(format!("{path}.name"), format!("interface `{name}` is listed twice")));
        }
        let role = match interface.role.as_str() {
            "lan" => InterfaceRole::Lan,
            "wan" => InterfaceRole::Wan,
            other => {
                errors.push(ConfigError::new(format!("{path}.role"), format!("must be \"lan\" or \"wan\", got \"{other}\"")));
                InterfaceRole::Lan
            }
        };
        let xdp_mode = match interface.xdp_mode.as_str() {
            "auto" => XdpMode::Auto,
            "native" => XdpMode::Native,
            "generic" => XdpMode::Generic,
            other => {
                errors.push(ConfigError::new(format!("{path}.xdp-mode"), format!("must be \"auto\", \"native\" or \"generic\", got \"{other}\"")));
                XdpMode::Auto
            }
        };
        let source_check = match interface.source_check.as_str() {
            "auto" if role == InterfaceRole::Lan => SourceCheck::Strict,
            "auto" => SourceCheck::Loose,
            "strict" => SourceCheck::Strict,
            "loose" => SourceCheck::Loose,
            "off" => SourceCheck::Off,
            other => {
                errors.push(ConfigError::new(format!("{path}.source-check"), format!("must be \"auto\", \"strict\", \"loose\" or \"off\", got \"{other}\"")));
                SourceCheck::Off
            }
        };
        let mut source_prefixes = Vec::new();
        for (prefix_index, text) in interface.source_prefixes.iter().enumerate() {
            match text.parse::<IpPrefix>() {
                Ok(prefix) => source_prefixes.push(prefix),
                Err(reason) => errors.push(ConfigError::new(format!("{path}.source-prefixes[{prefix_index}]"), reason)),
            }
        }
        if !source_prefixes.is_empty() && source_check != SourceCheck::Strict {
            errors.push(ConfigError::new(
                format!("{path}.source-prefixes"),
                "only a strict source check uses source prefixes (set source-check = \"strict\", or \"auto\" on a LAN)",
            ));
        }
        interfaces.push(InterfaceConfig { name, role, xdp_mode, source_check, source_prefixes });
    }
    let ring = raw.ring_size_bytes;
    if !(4096..=1 << 30).contains(&ring) || (ring as u64).count_ones() != 1 {
        errors.push(ConfigError::new("capture.ring-size-bytes", format!("must be a power of two between 4096 and 1073741824, got {ring}")));
    }
    for (key, value) in [("capture.bpffs-dir", &raw.bpffs_dir), ("capture.runtime-dir", &raw.runtime_dir), ("capture.state-dir", &raw.state_dir)] {
        if !value.starts_with('/') {
            errors.push(ConfigError::new(key, format!("must be an absolute path, got \"{value}\"")));
        }
    }
    let counters = in_range(raw.counters_interval_secs, 0, 3600, "capture.counters-interval-secs", errors);
    CaptureConfig {
        interfaces,
        bpffs_dir: PathBuf::from(&raw.bpffs_dir),
        runtime_dir: PathBuf::from(&raw.runtime_dir),
        ring_size_bytes: ring.clamp(4096, 1 << 30) as u32,
        counters_interval: (counters > 0).then(|| Duration::from_secs(counters)),
        sweep_interval: Duration::from_millis(in_range(raw.sweep_interval_ms, 10, 60_000, "capture.sweep-interval-ms", errors)),
        state_dir: PathBuf::from(&raw.state_dir),
        detach_on_exit: raw.detach_on_exit,
        network_refresh: Duration::from_secs(in_range(raw.network_refresh_secs, 1, 3600, "capture.network-refresh-secs", errors)),
    }
}

fn validate_allowlist(raw: &RawAllowlist, errors: &mut Vec<ConfigError>) -> Vec<IpPrefix> {
    let mut prefixes = Vec::new();
    for (index, text) in raw.prefixes.iter().enumerate() {
        match text.parse::<IpPrefix>() {
            Ok(prefix) => prefixes.push(prefix),
            Err(reason) => errors.push(ConfigError::new(format!("allowlist.prefixes[{index}]"), reason)),
        }
    }
    prefixes
}

fn validate_supervisor(raw: &RawSupervisor, errors: &mut Vec<ConfigError>) -> SupervisorConfig {
    let use_cgroup = match raw.memory_enforcement.as_str() {
        "auto" => true,
        "rss" => false,
        other => {
            errors.push(ConfigError::new("supervisor.memory-enforcement", format!("must be \"auto\" or \"rss\", got \"{other}\"")));
            true
        }
    };
    if !raw.cgroup_root.starts_with('/') {
        errors.push(ConfigError::new("supervisor.cgroup-root", format!("must be an absolute path, got \"{}\"", raw.cgroup_root)));
    }
    if !raw.state_dir.starts_with('/') {
        errors.push(ConfigError::new("supervisor.state-dir", format!("must be an absolute path, got \"{}\"", raw.state_dir)));
    }
    SupervisorConfig {
        state_dir: PathBuf::from(&raw.state_dir),
        generations_max: in_range(raw.generations_max, 1, 1000, "supervisor.generations-max", errors) as usize,
        ready_timeout: Duration::from_secs(in_range(raw.ready_timeout_secs, 5, 3600, "supervisor.ready-timeout-secs", errors)),
        shutdown_deadline: Duration::from_millis(in_range(raw.shutdown_deadline_ms, 100, 600_000, "supervisor.shutdown-deadline-ms", errors)),
        watchdog_interval: Duration::from_millis(in_range(raw.watchdog_interval_ms, 10, 60_000, "supervisor.watchdog-interval-ms", errors)),
        cgroup_root: PathBuf::from(&raw.cgroup_root),
        use_cgroup,
    }
}

fn validate_task(kind: TaskKind, raw: &RawTask, errors: &mut Vec<ConfigError>) -> TaskConfig {
    let path = |key: &str| format!("tasks.{}.{key}", kind.name());
    let user = if raw.user.is_empty() { format!("mld-{}", kind.name()) } else { raw.user.clone() };
    if crate::ids::names_root(&user) {
        errors.push(ConfigError::new(path("user"), format!("must not be root: tasks run unprivileged (got \"{user}\", which is uid 0)")));
    }
    if crate::ids::names_root(&raw.group) {
        errors.push(ConfigError::new(path("group"), format!("must not be root's group: tasks run unprivileged (got \"{}\", which is gid 0)", raw.group)));
    }
    let mib = 1024 * 1024;
    let high = in_range(raw.memory_high_mib, 1, 1 << 20, &path("memory-high-mib"), errors);
    let max = in_range(raw.memory_max_mib, 1, 1 << 20, &path("memory-max-mib"), errors);
    if raw.memory_high_mib > raw.memory_max_mib {
        errors.push(ConfigError::new(path("memory-high-mib"), format!("must not exceed memory-max-mib ({}), got {}", raw.memory_max_mib, raw.memory_high_mib)));
    }
    let restart = match raw.restart.as_str() {
        "on-failure" => RestartPolicy::OnFailure,
        "never" => RestartPolicy::Never,
        other => {
            errors.push(ConfigError::new(path("restart"), format!("must be \"on-failure\" or \"never\", got \"{other}\"")));
            RestartPolicy::OnFailure
        }
    };
    let backoff_initial = in_range(raw.backoff_initial_ms, 1, 600_000, &path("backoff-initial-ms"), errors);
    let backoff_max = in_range(raw.backoff_max_ms, 1, 3_600_000, &path("backoff-max-ms"), errors);
    if raw.backoff_max_ms < raw.backoff_initial_ms {
        errors.push(ConfigError::new(path("backoff-max-ms"), "must be at least backoff-initial-ms"));
    }
    TaskConfig {
        kind,
        enabled: raw.enabled,
        user,
        group: (!raw.group.is_empty()).then(|| raw.group.clone()),
        memory_high_bytes: high * mib,
        memory_max_bytes: max * mib,
        restart,
        backoff_initial: Duration::from_millis(backoff_initial),
        backoff_max: Duration::from_millis(backoff_max),
        min_run: Duration::from_millis(in_range(raw.min_run_ms, 0, 3_600_000, &path("min-run-ms"), errors)),
        hold_after_restarts: in_range(raw.hold_after_restarts, 1, 1000, &path("hold-after-restarts"), errors) as u32,
        hold_window: Duration::from_secs(in_range(raw.hold_window_secs, 1, 86_400, &path("hold-window-secs"), errors)),
        test_allocate_bytes: in_range(raw.test_allocate_mib, 0, 1 << 16, &path("test-allocate-mib"), errors) * mib,
        test_exit_at_start: raw.test_exit_at_start,
    }
}

impl Config {
    /// Checks what depends on the machine rather than the file: that task users and
    /// groups exist, that none of them is root (a name or number that resolves to uid or
    /// gid 0), and that no two enabled tasks share a user or a group (every peer check
    /// tells the tasks apart by uid). `config check` and `supervise` run it; offline
    /// commands do not.
    pub fn check_environment(&self, origin: &str) -> Result<(), crate::ConfigErrors> {
        let mut errors = Vec::new();
        // (task, uid, gid) of the enabled tasks whose identity resolved, in start order.
        let mut identities: Vec<(TaskKind, u32, u32)> = Vec::new();
        for task in self.tasks.iter().filter(|task| task.enabled) {
            let path = format!("tasks.{}", task.kind.name());
            let Some((uid, primary_gid)) = crate::ids::resolve_user(&task.user) else {
                errors.push(ConfigError::new(format!("{path}.user"), format!("user `{}` does not exist (scripts/setup creates the default users)", task.user)));
                continue;
            };
            let gid = match &task.group {
                Some(group) => match crate::ids::resolve_group(group) {
                    Some(gid) => gid,
                    None => {
                        errors.push(ConfigError::new(format!("{path}.group"), format!("group `{group}` does not exist")));
                        continue;
                    }
                },
                None => primary_gid,
            };
            let group_name = || match &task.group {
                Some(group) => format!("group `{group}`"),
                None => format!("the primary group of user `{}`", task.user),
            };
            if uid == 0 {
                errors.push(ConfigError::new(format!("{path}.user"), format!("must not be root: user `{}` is uid 0; tasks run unprivileged", task.user)));
            }
            if gid == 0 {
                errors.push(ConfigError::new(format!("{path}.group"), format!("must not be root's group: {} is gid 0; tasks run unprivileged", group_name())));
            }
            for (other, other_uid, other_gid) in &identities {
                if uid == *other_uid {
                    errors.push(ConfigError::new(
                        format!("{path}.user"),
                        format!(
                            "user `{}` (uid {uid}) is also the user of task {}; every task needs its own user (peers are told apart by uid)",
                            task.user,
                            other.name()
                        ),
                    ));
                } else if gid == *other_gid {
                    errors.push(ConfigError::new(
                        format!("{path}.group"),
                        format!("{} (gid {gid}) is also the group of task {}; every task needs its own group", group_name(), other.name()),
                    ));
                }
            }
            identities.push((task.kind, uid, gid));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(crate::ConfigErrors { origin: origin.to_string(), errors })
        }
    }
}

fn validate_system(raw: &RawSystem, errors: &mut Vec<ConfigError>) -> SystemConfig {
    if !raw.modules_dir.starts_with('/') {
        errors.push(ConfigError::new("system.modules-dir", format!("must be an absolute path, got \"{}\"", raw.modules_dir)));
    }
    for (index, module) in raw.modules.iter().enumerate() {
        if module.is_empty() || module.contains('/') {
            errors.push(ConfigError::new(format!("system.modules[{index}]"), format!("must be a module name, got \"{module}\"")));
        }
    }
    for (index, name) in raw.interfaces_up.iter().enumerate() {
        if name.is_empty() || name.len() > 15 {
            errors.push(ConfigError::new(format!("system.interfaces-up[{index}]"), format!("must be an interface name, got \"{name}\"")));
        }
    }
    let wait = Duration::from_millis(in_range(raw.data_wait_ms, 0, 60_000, "system.data-wait-ms", errors));
    let data = if raw.data_device.is_empty() {
        None
    } else {
        for (key, value) in [("system.data-device", &raw.data_device), ("system.data-mount", &raw.data_mount)] {
            let labelled = key == "system.data-device" && value.strip_prefix("PARTLABEL=").is_some_and(|label| !label.is_empty());
            if !value.starts_with('/') && !labelled {
                errors.push(ConfigError::new(key, format!("must be an absolute path, got \"{value}\"")));
            }
        }
        if !["ext4", "ext2", "ext3", "xfs", "btrfs", "vfat"].contains(&raw.data_fstype.as_str()) {
            errors.push(ConfigError::new("system.data-fstype", format!("must be ext4, ext2, ext3, xfs, btrfs or vfat, got \"{}\"", raw.data_fstype)));
        }
        let format_if_blank = match raw.data_format.as_str() {
            "never" => false,
            "if-blank" => true,
            other => {
                errors.push(ConfigError::new("system.data-format", format!("must be \"never\" or \"if-blank\", got \"{other}\"")));
                false
            }
        };
        if format_if_blank && raw.data_fstype != "ext4" {
            errors.push(ConfigError::new("system.data-format", "\"if-blank\" formats ext4 only: set system.data-fstype = \"ext4\""));
        }
        if raw.data_label.len() > 16 || raw.data_label.chars().any(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')) {
            errors.push(ConfigError::new("system.data-label", format!("must be at most 16 letters, digits, `-` or `_`, got \"{}\"", raw.data_label)));
        }
        if format_if_blank && raw.data_label.is_empty() {
            errors.push(ConfigError::new(
                "system.data-label",
                "must be set with system.data-format = \"if-blank\" (it tells this appliance's partition from anything else)",
            ));
        }
        Some(DataMount {
            device: PathBuf::from(&raw.data_device),
            format_if_blank,
            label: raw.data_label.clone(),
            fstype: raw.data_fstype.clone(),
            mount: PathBuf::from(&raw.data_mount),
            wait,
        })
    };
    let mut addresses = Vec::new();
    for (index, entry) in raw.addresses.iter().enumerate() {
        let parsed = entry.split_once('=').and_then(|(interface, address)| {
            let (address, prefix) = address.split_once('/')?;
            let prefix: u8 = prefix.parse().ok().filter(|prefix| (1..=32).contains(prefix))?;
            (!interface.is_empty() && interface.len() <= 15).then_some((interface.to_string(), address.parse().ok()?, prefix))
        });
        match parsed {
            Some(address) => addresses.push(address),
            None => errors
                .push(ConfigError::new(format!("system.addresses[{index}]"), format!("must be INTERFACE=IPV4/PREFIX (eth0=192.0.2.1/24), got \"{entry}\""))),
        }
    }
    SystemConfig {
        modules_dir: PathBuf::from(&raw.modules_dir),
        modules: raw.modules.clone(),
        interfaces_up: raw.interfaces_up.clone(),
        addresses,
        ip_forward: raw.ip_forward,
        data,
    }
}

fn validate_log(raw: &RawLog, errors: &mut Vec<ConfigError>) -> LogConfig {
    for (key, value) in [("log.dir", &raw.dir), ("log.key-file", &raw.key_file), ("log.signing-key-file", &raw.signing_key_file)] {
        // An empty signing-key-file means "none": the only path allowed to be empty.
        let optional_and_unset = key == "log.signing-key-file" && value.is_empty();
        if !value.starts_with('/') && !optional_and_unset {
            errors.push(ConfigError::new(key, format!("must be an absolute path, got \"{value}\"")));
        }
    }
    let valid = |node: &str| !node.is_empty() && node.len() <= 64 && node.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    let node = if raw.node.is_empty() {
        // The host name, when it is a usable id (a bare initramfs has "(none)").
        nix::unistd::gethostname()
            .map(|name| name.to_string_lossy().into_owned())
            .ok()
            .filter(|name| valid(name))
            .unwrap_or_else(|| crate::FALLBACK_NODE.to_string())
    } else {
        raw.node.clone()
    };
    if !valid(&node) {
        errors.push(ConfigError::new("log.node", format!("must be 1 to 64 letters, digits, `-`, `_` or `.`, got \"{node}\"")));
    }
    let max_file_bytes = in_range(raw.max_file_bytes, 4096, 1 << 40, "log.max-file-bytes", errors);
    let errors_before = errors.len();
    let max_disk_bytes = in_range(raw.max_disk_mib, 1, 1 << 20, "log.max-disk-mib", errors) << 20;
    // The file being written is never removed: the budget must hold it and one more.
    if errors.len() == errors_before && max_disk_bytes < 2 * max_file_bytes {
        errors.push(ConfigError::new(
            "log.max-disk-mib",
            format!("must hold at least two files of log.max-file-bytes ({max_file_bytes} bytes), got {} MiB", max_disk_bytes >> 20),
        ));
    }
    let max_age_days = in_range(raw.max_age_days, 0, 36_500, "log.max-age-days", errors);
    LogConfig {
        dir: PathBuf::from(&raw.dir),
        node,
        node_configured: !raw.node.is_empty(),
        key_file: PathBuf::from(&raw.key_file),
        create_key: raw.create_key,
        signing_key_file: if raw.signing_key_file.is_empty() {
            PathBuf::from(&raw.key_file).with_file_name("log-signing.key")
        } else {
            PathBuf::from(&raw.signing_key_file)
        },
        checkpoint_every_records: in_range(raw.checkpoint_every_records, 1, 1_000_000, "log.checkpoint-every-records", errors) as u32,
        checkpoint_interval: Duration::from_millis(in_range(raw.checkpoint_interval_ms, 10, 3_600_000, "log.checkpoint-interval-ms", errors)),
        max_file_bytes,
        rotate_daily: raw.rotate_daily,
        sync_every_records: in_range(raw.sync_every_records, 1, 1_000_000, "log.sync-every-records", errors) as u32,
        sync_interval: Duration::from_millis(in_range(raw.sync_interval_ms, 1, 60_000, "log.sync-interval-ms", errors)),
        max_disk_bytes,
        max_age: (max_age_days > 0).then(|| Duration::from_secs(max_age_days * 86_400)),
    }
}
