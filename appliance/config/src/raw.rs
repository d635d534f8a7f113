//! The file as written: every key optional (defaults here, in one place), unknown keys
//! refused, kebab-case names, units in the names. Nothing here is validated yet.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    /// Flow tracking: timeouts and the flow table's bound.
    pub flow: RawFlow,
    /// Per-source aggregates over sliding windows, read by scan and flood detection.
    pub windows: RawWindows,
    /// How `mldefender flows` writes flow records.
    pub output: RawOutput,
    /// The XDP data plane: interfaces, pins, the ring buffer, the capture task's cadence.
    pub capture: RawCapture,
    /// Sources never dropped and never blockable.
    pub allowlist: RawAllowlist,
    /// The supervisor: shutdown, the memory watchdog, cgroups, its state.
    pub supervisor: RawSupervisor,
    /// Each task: its identity, memory budget and restart policy.
    pub tasks: RawTasks,
    /// PID 1 duties at boot (the appliance image): modules, interfaces, persistent storage.
    pub system: RawSystem,
    /// The signed event log.
    pub log: RawLog,
    /// Detection: the models, the policy combining them with the fast path, its bounds.
    pub detect: crate::detect::RawDetect,
    /// What a verdict does: block TTLs, protections, the circuit breaker.
    pub response: crate::detect::RawResponse,
    /// The ingest task: verifying the log, the similarity index.
    pub ingest: RawIngest,
    /// The per-destination guard against random-source floods (XDP).
    pub guard: crate::guard::RawGuard,
    /// This node's certificates (certs/README.md).
    pub pki: crate::pki::RawPki,
    /// Sharing blocks with other appliances over etcd with mutual TLS.
    pub fleet: crate::fleet::RawFleet,
    /// The appliance image: its disk, the release key updates are signed with, boot
    /// counting and blessing (docs/image.md).
    pub image: crate::image::RawImage,
    /// The operator interfaces on the management network: Prometheus metrics and the
    /// read-only status page (docs/operations.md).
    pub metrics: crate::metrics::RawMetrics,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawIngest {
    /// The ingest task's own directory: checkpoint, nonce store, quarantine.
    pub state_dir: String,
    /// How often the log is read for new records. Milliseconds.
    pub poll_interval_ms: i64,
    /// Records older than this relative to the newest accepted one are refused. Seconds.
    pub max_age_secs: i64,
    /// Recently accepted sequence numbers remembered per node (replay detection).
    pub recent_seqs: i64,
    /// The quarantine file's bound; beyond it, it is rotated (one previous file kept). MiB.
    pub max_quarantine_mib: i64,
    /// Build the similarity index from the verified events.
    pub index: bool,
    /// FAISS index-factory string of the similarity index.
    pub index_factory: String,
    /// FAISS search parameters, `name=value` separated by commas (`nprobe=8`, `efSearch=64`).
    pub index_search_parameters: String,
    /// The embedder model's name in detect.models-dir.
    pub embedder: String,
    /// The most events the index holds; full, it keeps the newest half.
    pub index_max_events: i64,
    /// Save the index (then the checkpoint) at least this often while events arrive. Seconds.
    pub save_interval_secs: i64,
    /// Build the text index beside the similarity index: decisions described in words and
    /// embedded by the sentence model, asked with `mldefender query ask`. Needs `index`.
    pub text_index: bool,
    /// The sentence model's directory: `text-embedder.onnx`, its signed metadata and
    /// `tokenizer.json` (scripts/setup installs them), checked against detect.model-public-key.
    pub text_model_dir: String,
    /// The most described events the text index holds; full, it keeps the newest half.
    pub text_index_max_events: i64,
    /// Describe and embed observations (every flow) too, not only decisions.
    pub text_observations: bool,
}

impl Default for RawIngest {
    fn default() -> RawIngest {
        RawIngest {
            state_dir: "/var/lib/mldefender/ingest".to_string(),
            poll_interval_ms: 500,
            max_age_secs: 86_400,
            recent_seqs: 4096,
            max_quarantine_mib: 64,
            index: true,
            index_factory: "Flat".to_string(),
            index_search_parameters: String::new(),
            embedder: "embedder".to_string(),
            index_max_events: 1_000_000,
            save_interval_secs: 10,
            text_index: true,
            text_model_dir: "/usr/local/share/mldefender/text".to_string(),
            text_index_max_events: 50_000,
            text_observations: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawLog {
    /// Directory of the signed event log.
    pub dir: String,
    /// This appliance's node id, in every record's tag; empty: the host name
    /// (`mldefender` where the host name is not a usable id). Set a unique id on every
    /// appliance that shares a log key: `config check` warns while it is left as the default.
    pub node: String,
    /// The 32-byte HMAC key file (0600, not a symbolic link).
    pub key_file: String,
    /// Create the key file if it is missing (and the signing key file).
    pub create_key: bool,
    /// The Ed25519 checkpoint signing key (base64 of a 32-byte seed, 0600, not a symbolic
    /// link); empty: `log-signing.key` in the directory of `key-file`.
    pub signing_key_file: String,
    /// A signed checkpoint after this many records since the last one...
    pub checkpoint_every_records: i64,
    /// ...or once the oldest record not yet covered is this old. Milliseconds.
    pub checkpoint_interval_ms: i64,
    /// Rotate when a file reaches this size. Bytes.
    pub max_file_bytes: i64,
    /// Also rotate when the local calendar day changes.
    pub rotate_daily: bool,
    /// Group commit: fsync after this many records...
    pub sync_every_records: i64,
    /// ...or when the oldest unsynced record is this old. Milliseconds.
    pub sync_interval_ms: i64,
    /// Retention: the node's log files may use at most this much disk. At every new file
    /// the oldest files are removed until the others and a full file being written fit.
    /// At least two files (`max-file-bytes`). MiB.
    pub max_disk_mib: i64,
    /// Retention: files last written longer ago than this are removed at the next new
    /// file; 0: no age limit. Days.
    pub max_age_days: i64,
}

impl Default for RawLog {
    fn default() -> RawLog {
        RawLog {
            dir: "/var/lib/mldefender/log".to_string(),
            node: String::new(),
            key_file: "/var/lib/mldefender/keys/log.key".to_string(),
            create_key: true,
            signing_key_file: String::new(),
            checkpoint_every_records: 256,
            checkpoint_interval_ms: 1000,
            max_file_bytes: 64 << 20,
            rotate_daily: true,
            sync_every_records: 64,
            sync_interval_ms: 200,
            max_disk_mib: 1024,
            max_age_days: 90,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSystem {
    /// Directory holding `<name>.ko` files.
    pub modules_dir: String,
    /// Kernel modules the supervisor loads at start, in order.
    pub modules: Vec<String>,
    /// Interfaces the supervisor brings up at start.
    pub interfaces_up: Vec<String>,
    /// IPv4 addresses to set at start, `INTERFACE=ADDRESS/PREFIX`.
    pub addresses: Vec<String>,
    /// Route between the interfaces (net.ipv4.ip_forward = 1): the appliance is the gateway.
    pub ip_forward: bool,
    /// Block device of the persistent data (state, keys, log), or `PARTLABEL=NAME`; empty: none.
    pub data_device: String,
    /// Format the data device when it is blank (all zeros at its start): "never" or
    /// "if-blank". A device holding anything else is never formatted.
    pub data_format: String,
    /// The file system label the data device must carry (written when formatting); empty:
    /// any.
    pub data_label: String,
    /// Its file system type.
    pub data_fstype: String,
    /// Where it is mounted.
    pub data_mount: String,
    /// How long to wait for the device to appear. Milliseconds.
    pub data_wait_ms: i64,
}

impl Default for RawSystem {
    fn default() -> RawSystem {
        RawSystem {
            modules_dir: "/lib/modules/mldefender".to_string(),
            modules: Vec::new(),
            interfaces_up: Vec::new(),
            addresses: Vec::new(),
            ip_forward: false,
            data_device: String::new(),
            data_format: "never".to_string(),
            data_label: String::new(),
            data_fstype: "ext4".to_string(),
            data_mount: "/var/lib/mldefender".to_string(),
            data_wait_ms: 5000,
        }
    }
}

impl RawConfig {
    /// The default with one example element in every array, so that the shape check
    /// knows the shape of array items (an empty default array has none).
    pub fn shape_example() -> RawConfig {
        let mut example = RawConfig::default();
        example.capture.interfaces = vec![RawInterface::default()];
        example.allowlist.prefixes = vec![String::new()];
        example.system.modules = vec![String::new()];
        example.system.interfaces_up = vec![String::new()];
        example.system.addresses = vec![String::new()];
        example.response.management_prefixes = vec![String::new()];
        example
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawCapture {
    /// Interfaces the XDP program attaches to.
    pub interfaces: Vec<RawInterface>,
    /// bpffs directory where the maps are pinned.
    pub bpffs_dir: String,
    /// Directory for the capture lock file.
    pub runtime_dir: String,
    /// Ring buffer size. Bytes.
    pub ring_size_bytes: i64,
    /// Live counters on stderr every this often; 0 = never. Seconds.
    pub counters_interval_secs: i64,
    /// Expired deny entries are removed this often. Milliseconds.
    pub sweep_interval_ms: i64,
    /// Where the blocks in force are kept across reboots (blocks.json).
    pub state_dir: String,
    /// Detach the XDP program when the supervisor or capture exits (default: keep it
    /// enforcing; `mldefender capture detach` removes it).
    pub detach_on_exit: bool,
    /// How often the host's routes, addresses and resolvers are read again (source
    /// checks, protected infrastructure). Seconds.
    pub network_refresh_secs: i64,
}

impl Default for RawCapture {
    fn default() -> RawCapture {
        RawCapture {
            interfaces: Vec::new(),
            bpffs_dir: "/sys/fs/bpf/mldefender".to_string(),
            runtime_dir: "/run/mldefender".to_string(),
            ring_size_bytes: 4 << 20,
            counters_interval_secs: 5,
            sweep_interval_ms: 1000,
            state_dir: "/var/lib/mldefender/capture".to_string(),
            detach_on_exit: false,
            network_refresh_secs: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawInterface {
    /// Interface name.
    pub name: String,
    /// "lan" or "wan".
    pub role: String,
    /// "auto", "native" or "generic".
    pub xdp_mode: String,
    /// "auto" (strict on a LAN, loose on a WAN), "strict", "loose" or "off".
    pub source_check: String,
    /// Strict check: the sources that may arrive here; empty: the routes through the
    /// interface.
    pub source_prefixes: Vec<String>,
}

impl Default for RawInterface {
    fn default() -> RawInterface {
        RawInterface {
            name: String::new(),
            role: "lan".to_string(),
            xdp_mode: "auto".to_string(),
            source_check: "auto".to_string(),
            source_prefixes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawAllowlist {
    /// Prefixes never dropped nor blocked: "10.0.0.0/8", "fd00::/8", "192.0.2.7".
    pub prefixes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawFlow {
    /// A flow with no packet for this long ends. Seconds.
    pub idle_timeout_secs: i64,
    /// A flow older than this ends at its next packet. Seconds.
    pub active_timeout_secs: i64,
    /// Close linger after FIN from both sides or RST. Milliseconds.
    pub tcp_close_linger_ms: i64,
    /// Flows held at once.
    pub max_flows: i64,
    /// CIC active/idle threshold. Milliseconds.
    pub activity_timeout_ms: i64,
    /// CIC subflow gap. Milliseconds.
    pub subflow_gap_ms: i64,
    /// CIC bulk gap. Milliseconds.
    pub bulk_gap_ms: i64,
}

impl Default for RawFlow {
    fn default() -> RawFlow {
        RawFlow {
            idle_timeout_secs: 120,
            active_timeout_secs: 1800,
            tcp_close_linger_ms: 1000,
            max_flows: 262_144,
            activity_timeout_ms: 5000,
            subflow_gap_ms: 1000,
            bulk_gap_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawWindows {
    /// Window lengths. Seconds.
    pub lengths_secs: Vec<i64>,
    /// Sources tracked at once.
    pub max_sources: i64,
    /// Distinct destinations remembered per source and window.
    pub max_distinct: i64,
}

impl Default for RawWindows {
    fn default() -> RawWindows {
        RawWindows { lengths_secs: vec![10, 60], max_sources: 16_384, max_distinct: 128 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawOutput {
    /// "jsonl" or "csv".
    pub format: String,
}

impl Default for RawOutput {
    fn default() -> RawOutput {
        RawOutput { format: "jsonl".to_string() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSupervisor {
    /// Deadline for an orderly shutdown. Milliseconds.
    pub shutdown_deadline_ms: i64,
    /// How often task memory is checked. Milliseconds.
    pub watchdog_interval_ms: i64,
    /// cgroup v2 directory for the tasks' groups.
    pub cgroup_root: String,
    /// "auto" (cgroup where writable, and the RSS watchdog always) or "rss" (RSS watchdog only).
    pub memory_enforcement: String,
    /// The supervisor's own state (root's, 0700): the configuration generations and the
    /// fleet configuration document in force. Read from the configuration file only.
    pub state_dir: String,
    /// Configuration generations kept (`mldefender config generations`).
    pub generations_max: i64,
    /// A start from an applied generation that does not reach ready within this falls
    /// back to the previous one. Seconds.
    pub ready_timeout_secs: i64,
}

impl Default for RawSupervisor {
    fn default() -> RawSupervisor {
        RawSupervisor {
            shutdown_deadline_ms: 5000,
            watchdog_interval_ms: 200,
            cgroup_root: "/sys/fs/cgroup/mldefender".to_string(),
            memory_enforcement: "auto".to_string(),
            state_dir: "/var/lib/mldefender/supervisor".to_string(),
            generations_max: 10,
            ready_timeout_secs: 120,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawTasks {
    /// The capture task.
    pub capture: RawTask,
    /// The detect task.
    pub detect: RawTask,
    /// The log task.
    pub log: RawTask,
    /// The ingest task.
    pub ingest: RawTask,
    /// Runs only when `[fleet]` is on.
    pub fleet: RawTask,
}

impl Default for RawTasks {
    fn default() -> RawTasks {
        RawTasks {
            capture: RawTask::default(),
            detect: RawTask::default(),
            log: RawTask::default(),
            // The flow index (about 370 MiB at its default million events), the sentence
            // model of the text index (about 150 MiB with ONNX Runtime's buffers) and its
            // default 50,000 decisions (about 100 MiB): docs/benchmarks.md.
            ingest: RawTask { memory_high_mib: 640, memory_max_mib: 768, ..RawTask::default() },
            // An etcd client and a few thousand shared blocks: tens of MiB (ADR 0008).
            fleet: RawTask { memory_high_mib: 96, memory_max_mib: 128, ..RawTask::default() },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawTask {
    /// Run the task.
    pub enabled: bool,
    /// Unprivileged user (name or number) the task runs as; empty: `mld-<task>`. Never
    /// root (uid 0, by any name or number) and never another task's user.
    pub user: String,
    /// Its group (name or number); empty: the user's primary group. Never gid 0 and
    /// never another task's group.
    pub group: String,
    /// Soft memory limit (cgroup memory.high). MiB.
    pub memory_high_mib: i64,
    /// Hard memory budget (cgroup memory.max and the RSS watchdog). MiB.
    pub memory_max_mib: i64,
    /// "on-failure" or "never".
    pub restart: String,
    /// First restart delay; doubles per restart. Milliseconds.
    pub backoff_initial_ms: i64,
    /// Longest restart delay. Milliseconds.
    pub backoff_max_ms: i64,
    /// A run shorter than this counts as a failed start. Milliseconds.
    pub min_run_ms: i64,
    /// Hold (stop restarting) after this many restarts within the window.
    pub hold_after_restarts: i64,
    /// The window for hold-after-restarts. Seconds.
    pub hold_window_secs: i64,
    /// Test only: allocate and touch this much memory after start. MiB.
    pub test_allocate_mib: i64,
    /// Test only: exit with status 3 at start.
    pub test_exit_at_start: bool,
}

impl Default for RawTask {
    fn default() -> RawTask {
        RawTask {
            enabled: true,
            user: String::new(),
            group: String::new(),
            memory_high_mib: 384,
            memory_max_mib: 512,
            restart: "on-failure".to_string(),
            backoff_initial_ms: 50,
            backoff_max_ms: 10_000,
            min_run_ms: 1000,
            hold_after_restarts: 5,
            hold_window_secs: 60,
            test_allocate_mib: 0,
            test_exit_at_start: false,
        }
    }
}
