//! `mldefender`: the one binary of the appliance.
//!
//! `main` reads as the start-up story: parse the command line, run the subcommand,
//! map the outcome to one exit code. Only this crate prints to the terminal and
//! decides exit codes.

mod capture;
mod config;
mod explain;
mod export;
mod fleet;
mod flows;
mod load;
mod log;
mod model;
mod pki;
mod progress;
mod query;
mod status;
mod top;
mod update;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use mld_runtime::Exit;

/// ml-defender: a network-security gateway appliance.
#[derive(Debug, Parser)]
#[command(name = "mldefender", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum CaptureCommand {
    /// Remove the XDP program from every interface and its pinned maps (the only way,
    /// besides capture.detach-on-exit, to open the gate). Refused while a supervisor or
    /// capture holds the directory.
    Detach {
        /// Configuration file (capture.bpffs-dir, capture.runtime-dir).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Extract bidirectional flows and CIC-IDS2017 features from pcap/pcapng files.
    ///
    /// The files are read in the order given, as one capture. One record per flow goes
    /// to stdout (or --output); a one-line summary goes to stderr.
    Flows(FlowsArgs),
    /// Check or print the appliance configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Attach the XDP program to the configured interfaces and stream live flows.
    ///
    /// Finished flows go to stdout (JSONL by default), live counters to stderr, until
    /// SIGINT or SIGTERM; then every open flow is written. The program keeps enforcing
    /// the blocks after exit (pinned) unless capture.detach-on-exit is set; `mldefender
    /// capture detach` removes it. Needs CAP_BPF and CAP_NET_ADMIN (root).
    #[command(args_conflicts_with_subcommands = true)]
    Capture {
        #[command(subcommand)]
        action: Option<CaptureCommand>,
        /// Configuration file ([capture] interfaces, bpffs directory, allowlist, flows).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Record format.
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
    },
    /// Deny sources in the running capture's XDP program (takes effect at once).
    Block {
        #[command(subcommand)]
        action: BlockCommand,
        #[command(flatten)]
        maps: MapsArgs,
    },
    /// Allowlist sources in the running capture (never dropped, never blockable).
    Allow {
        #[command(subcommand)]
        action: AllowCommand,
        #[command(flatten)]
        maps: MapsArgs,
    },
    /// Run the appliance: the supervisor and its tasks (capture, detect, log, ingest).
    ///
    /// Validates the configuration (exit 64 with every error), loads and attaches XDP (the
    /// only privileged step), starts each task as an unprivileged child process with a
    /// memory budget and a restart policy, prints `mldefender: ready` (and tells systemd)
    /// when all are ready, and on SIGTERM stops them in order and detaches XDP. As PID 1
    /// it also mounts the system and powers off at the end.
    Supervise {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Ask the running supervisor for each task's state, memory and restarts.
    Status {
        #[command(flatten)]
        supervisor: SupervisorArgs,
    },
    /// Stop the running appliance in order (tasks stopped, XDP left enforcing). The
    /// appliance image then powers off, or reboots with --reboot.
    Stop {
        /// Reboot instead of powering off (the image only).
        #[arg(long)]
        reboot: bool,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Run the offline pipeline on captures: flows → detection (as [detect] configures
    /// it; nothing is blocked offline) → the signed event log of [log].
    Replay {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(required = true, value_name = "PCAP")]
        files: Vec<PathBuf>,
    },
    /// The signed event log.
    #[command(subcommand)]
    Log(LogCommand),
    /// Detection models: signing keys, signatures, checks.
    #[command(subcommand)]
    Model(ModelCommand),
    /// The fleet this node shares blocks with ([fleet], docs/operations.md "Fleet").
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Certificates: a fleet CA, node bundles, status, renewal ([pki], certs/README.md).
    #[command(subcommand)]
    Pki(pki::PkiCommand),
    /// A/B updates of the appliance image: sign, apply, status ([image], docs/image.md).
    #[command(subcommand)]
    Update(update::UpdateCommand),
    /// Search past events: like this one, or with this address (JSON on stdout).
    ///
    /// Asks the running ingest task (its socket in the runtime directory; root only), or,
    /// with --index DIR, reads an index directory directly (read-only, safe beside the task).
    #[command(subcommand)]
    Query(QueryCommand),
    /// A live view of the running appliance, redrawn every second: tasks, rates, blocks in
    /// force (release one with a key), top sources, recent decisions. q quits.
    Top(top::TopArgs),
    /// A task process (started by `supervise`, not by people).
    #[command(hide = true)]
    Task { name: String },
    /// Print the running capture's XDP counters.
    Counters {
        #[command(flatten)]
        maps: MapsArgs,
        /// One JSON object instead of a line of text.
        #[arg(long)]
        json: bool,
    },
}

/// Where to find the running capture's maps.
#[derive(Debug, clap::Args)]
pub(crate) struct MapsArgs {
    /// The capture's bpffs directory (default: `capture.bpffs-dir` of --config, else /sys/fs/bpf/mldefender).
    #[arg(long, value_name = "DIR", global = true)]
    bpffs_dir: Option<PathBuf>,
    /// Configuration file to read `capture.bpffs-dir` from.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum BlockCommand {
    /// Drop packets from PREFIX (an address or CIDR prefix, IPv4 or IPv6).
    Add {
        prefix: mld_types::IpPrefix,
        /// How long the block lasts, in seconds.
        #[arg(long, value_name = "SECS", required_unless_present = "permanent", value_parser = clap::value_parser!(u64).range(1..))]
        ttl: Option<u64>,
        /// Never expire (remove with `block del`).
        #[arg(long, conflicts_with = "ttl")]
        permanent: bool,
        /// Reason, counted separately: manual, scan, flood, brute-force, slow, other.
        #[arg(long, default_value = "manual", value_parser = parse_reason)]
        reason: mld_types::DenyReason,
    },
    /// Remove the deny entry for exactly PREFIX. A running supervisor is told: its detect task logs the
    /// release, forgets the blocks PREFIX covers, and withdraws them from the fleet. --benign: also mark it
    /// benign: the detect task refuses, and logs, any block of PREFIX until the exemption expires.
    Del {
        prefix: mld_types::IpPrefix,
        /// Also mark PREFIX benign: a learned exemption, logged (needs the running supervisor).
        #[arg(long)]
        benign: bool,
        /// Why, for the signed log (at most 256 characters).
        #[arg(long, requires = "benign", default_value = "")]
        reason: String,
        /// How long the exemption lasts, in seconds: 7 days unless given, at most 365 days.
        #[arg(long = "for", value_name = "SECS", requires = "benign", default_value_t = 604_800, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
        for_secs: u64,
        /// The supervisor's runtime directory (default: capture.runtime-dir of --config).
        #[arg(long, value_name = "DIR")]
        runtime_dir: Option<PathBuf>,
    },
    /// List deny entries with reason and time left.
    List,
    /// Why ADDRESS is (or was) blocked: the newest block decision about it in the signed
    /// log (authenticated with the log key), its scores, reasons and windows, its nearest
    /// past events, and what the data plane holds for it now. Needs --config for the log.
    Explain { address: std::net::IpAddr },
}

/// Where a query goes, and which events it keeps.
#[derive(Debug, clap::Args)]
struct QueryArgs {
    /// Read this index directory (`<ingest.state-dir>/index`) instead of asking the running task.
    #[arg(long, value_name = "DIR")]
    index: Option<PathBuf>,
    /// The ingest task's query socket (default: `<capture.runtime-dir>/query.sock` of --config).
    #[arg(long, value_name = "PATH", conflicts_with = "index")]
    socket: Option<PathBuf>,
    /// Configuration: the runtime directory, and the embedder for --flow-json with --index.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Only events at or after this time (RFC 3339 UTC, a date, or µs since the epoch).
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// Only events before this time.
    #[arg(long, value_name = "TIME")]
    to: Option<String>,
    /// Only events with this action (block, alert, observe, would-block); repeat for several.
    #[arg(long = "action", value_name = "ACTION")]
    actions: Vec<String>,
    /// Only events of this category (scan, flood, brute-force, slow, other, benign); repeat for several.
    #[arg(long = "category", value_name = "CATEGORY")]
    categories: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum QueryCommand {
    /// The K past events nearest to an event (by seq or event_id) or to a flow.
    Similar {
        /// The event: its seq in the log, or its event_id (`ev-...`).
        #[arg(long, value_name = "ID", required_unless_present = "flow_json", conflicts_with = "flow_json")]
        event: Option<String>,
        /// A file (or `-`) with one JSON object: a flow as `mldefender flows` writes it, or a log record.
        #[arg(long, value_name = "FILE")]
        flow_json: Option<PathBuf>,
        /// How many events (1..=1000).
        #[arg(short, long, default_value_t = 10)]
        k: usize,
        #[command(flatten)]
        args: QueryArgs,
    },
    /// The decisions whose descriptions answer a question in words, nearest first, with
    /// an exact summary. Time words ("since midnight", "last hour", "yesterday") and an
    /// address in the question filter the events when no flag does; the answer says so.
    /// Offline: --index <ingest.state-dir>/text-index (and --config for its model).
    Ask {
        question: String,
        /// How many events (1..=1000).
        #[arg(short, long, default_value_t = 10)]
        k: usize,
        /// Only events with this address as source or destination.
        #[arg(long, value_name = "ADDR")]
        ip: Option<String>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        args: QueryArgs,
    },
    /// The newest events with ADDR as source or destination.
    Ip {
        address: String,
        /// How many events (1..=1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        args: QueryArgs,
    },
}

impl QueryArgs {
    fn split(self) -> (query::Target, query::FilterArgs) {
        (
            query::Target { index: self.index, socket: self.socket, config: self.config },
            query::FilterArgs { from: self.from, to: self.to, actions: self.actions, categories: self.categories },
        )
    }
}

#[derive(Debug, Subcommand)]
enum LogCommand {
    /// Check headers, chain, sequence and HMACs of a node's log files (or directory), or,
    /// with --public-key, the signed checkpoints (no secret needed).
    ///
    /// Prints a summary; on failure the file, line and reason, and exits 1.
    Verify {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// HMAC key file(s): the current key and any earlier epoch's.
        #[arg(long = "key", value_name = "FILE", required_unless_present = "public_keys", conflicts_with = "public_keys")]
        keys: Vec<PathBuf>,
        /// Checkpoint public key file(s) (base64, one line; `mldefender log public-key`
        /// prints it): every record must be covered by a validly signed checkpoint.
        #[arg(long = "public-key", value_name = "FILE")]
        public_keys: Vec<PathBuf>,
        /// The heads the node published to its fleet (`etcdctl get --prefix
        /// --print-value-only /mld/nodes/NODE/` saved to a file): fails when the log was cut
        /// back or rewritten after one of them.
        #[arg(long, value_name = "FILE")]
        anchors: Option<PathBuf>,
    },
    /// Print the public key of the checkpoint signing key (log.signing-key-file), base64:
    /// what `log verify --public-key` takes.
    PublicKey {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The signing key file itself, instead of the configuration's.
        #[arg(long = "signing-key", value_name = "FILE", conflicts_with = "config")]
        signing_key: Option<PathBuf>,
    },
    /// Export the verified records as Suricata EVE JSON on stdout (for SIEMs), with
    /// --follow as they are written. Only records that verify by the signed checkpoints;
    /// a summary on stderr; exit 65 when a line was quarantined.
    Export(export::ExportArgs),
    /// Print the event record's JSON Schema (with the configured windows).
    Schema {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// Where the running supervisor answers, and how to print its answer.
#[derive(Debug, clap::Args)]
pub(crate) struct SupervisorArgs {
    /// One JSON object instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) target: TargetArgs,
}

impl SupervisorArgs {
    /// The runtime directory given, or the configuration's (its errors printed).
    pub(crate) fn runtime_dir(&self) -> Result<PathBuf, Exit> {
        self.target.runtime_dir()
    }
}

/// Where the running supervisor answers.
#[derive(Debug, clap::Args)]
pub(crate) struct TargetArgs {
    /// The supervisor's runtime directory (default: capture.runtime-dir of --config).
    #[arg(long, value_name = "DIR")]
    runtime_dir: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl TargetArgs {
    /// The runtime directory given, or the configuration's (its errors printed).
    pub(crate) fn runtime_dir(&self) -> Result<PathBuf, Exit> {
        match &self.runtime_dir {
            Some(dir) => Ok(dir.clone()),
            None => load::config(self.config.as_deref()).map(|config| config.capture.runtime_dir),
        }
    }
}

#[derive(Debug, Subcommand)]
enum FleetCommand {
    /// Sign FILE (TOML: fleet-wide policy sections) as configuration document GENERATION
    /// with the operator's PRIVATE key; prints the document (JSON) to put under
    /// /mld/config (docs/operations.md, "Fleet configuration documents").
    SignConfig {
        #[arg(long = "key", value_name = "PRIVATE")]
        private_key: PathBuf,
        #[arg(long, value_name = "GENERATION")]
        generation: u64,
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// The members (version, configuration, start, last heartbeat) and this node's
    /// connection, from the running supervisor. Exit 1 when not connected.
    Status {
        #[command(flatten)]
        supervisor: SupervisorArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Create an Ed25519 signing key pair: PRIVATE (0600, never overwritten) and PUBLIC
    /// (its base64 goes into detect.model-public-key).
    Keygen {
        #[arg(value_name = "PRIVATE")]
        private_key: PathBuf,
        #[arg(value_name = "PUBLIC")]
        public_key: PathBuf,
    },
    /// Sign a model's metadata file (NAME.json) with PRIVATE: writes NAME.json.sig.
    Sign {
        #[arg(long = "key", value_name = "PRIVATE")]
        private_key: PathBuf,
        #[arg(required = true, value_name = "METADATA")]
        metadata: Vec<PathBuf>,
    },
    /// Check the models of a directory as the detect task would (signature, SHA-256,
    /// features, shapes) and print what they are.
    Check {
        /// Configuration whose [detect] (models-dir, model-public-key, onnxruntime) to use.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Models directory instead of detect.models-dir.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AllowCommand {
    /// Allowlist PREFIX (until the capture stops; persist it in [allowlist]).
    Add { prefix: mld_types::IpPrefix },
    /// Remove the allowlist entry for exactly PREFIX.
    Del { prefix: mld_types::IpPrefix },
    /// List allowlist entries.
    List,
}

fn parse_reason(text: &str) -> Result<mld_types::DenyReason, String> {
    mld_types::DenyReason::parse(text).ok_or_else(|| {
        let names: Vec<&str> = mld_types::DenyReason::ALL.iter().map(|reason| reason.as_str()).collect();
        format!("unknown reason `{text}` (one of: {})", names.join(", "))
    })
}

#[derive(Debug, clap::Args)]
struct FlowsArgs {
    /// Capture files (pcap or pcapng: Ethernet, VLAN, Linux cooked, raw IP).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Record format; defaults to `output.format` of the configuration.
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Configuration file for flow timeouts, table size and windows (default: built in).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Write records to this file instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print a human-readable summary to stdout instead of one record per flow.
    #[arg(long)]
    summary: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Csv,
    Jsonl,
    /// One short human-readable line per flow.
    Text,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate configuration files with the daemon's own code path; list every error.
    ///
    /// Exit status 0 when all files are valid, 64 otherwise.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// The files are JSON with the TOML's structure (what the NixOS module renders).
        #[arg(long)]
        json: bool,
    },
    /// Print the complete default configuration, with a comment on every key.
    Example {
        /// As JSON, without comments (every key with its default).
        #[arg(long)]
        json: bool,
    },
    /// Print the values of KEYs (`detect.models-dir`, `system.modules`) in FILE, defaults
    /// filled in: a string bare, a list one item per line. For scripts (image/build.sh).
    ///
    /// Exit status 64 when FILE is invalid or a key is not a key of the file.
    Get {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// Print the JSON Schema of the whole file: every key with its description, default
    /// and bounds (docs/config.schema.json).
    Schema,
    /// List every key NEW changes, with how it would be applied: live, restarting a task
    /// (named), restarting the supervisor, or needing a new image. Against the running
    /// supervisor's configuration unless --from OLD. Invalid NEW: every error, exit 64.
    Plan {
        #[arg(value_name = "NEW")]
        new: PathBuf,
        /// Compare with this file instead of the running configuration.
        #[arg(long, value_name = "OLD", conflicts_with = "running")]
        from: Option<PathBuf>,
        /// Compare with the running supervisor's configuration (the default).
        #[arg(long)]
        running: bool,
        #[command(flatten)]
        supervisor: SupervisorArgs,
    },
    /// Apply NEW to the running appliance with the least disruption its plan allows, as a
    /// new generation: live changes without a restart, task restarts one at a time, the
    /// supervisor restarted in place when needed; XDP keeps enforcing. Refused (nothing
    /// changed, exit 64) when invalid or when it needs a new image.
    Apply {
        #[arg(value_name = "NEW")]
        new: PathBuf,
        #[command(flatten)]
        supervisor: SupervisorArgs,
    },
    /// List the configuration generations kept (supervisor.state-dir of --config).
    Generations {
        #[command(flatten)]
        supervisor: SupervisorArgs,
    },
    /// Apply generation N again (default: the one before the generation in force).
    Rollback {
        #[arg(value_name = "N")]
        generation: Option<u64>,
        #[command(flatten)]
        supervisor: SupervisorArgs,
    },
    /// The plan from generation A to generation B.
    Diff {
        #[arg(value_name = "A")]
        from: u64,
        #[arg(value_name = "B")]
        to: u64,
        #[command(flatten)]
        supervisor: SupervisorArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Flows(args) => flows::run(flows::FlowsOptions {
            files: args.files,
            format: args.format.map(output_format),
            config: args.config,
            output: args.output,
            summary: args.summary,
        }),
        Command::Config(ConfigCommand::Check { files, json }) => config::check(&files, json),
        Command::Config(ConfigCommand::Schema) => config::schema(),
        Command::Config(ConfigCommand::Get { file, keys }) => config::get(&file, &keys),
        Command::Config(ConfigCommand::Plan { new, from, running: _, supervisor }) => match from {
            Some(old) => config::plan(&new, config::Baseline::File(old), supervisor.json),
            None => match supervisor.runtime_dir() {
                Ok(dir) => config::plan(&new, config::Baseline::Running(dir), supervisor.json),
                Err(exit) => Ok(exit),
            },
        },
        Command::Config(ConfigCommand::Apply { new, supervisor }) => match supervisor.runtime_dir() {
            Ok(dir) => config::apply(&new, &dir),
            Err(exit) => Ok(exit),
        },
        Command::Config(ConfigCommand::Generations { supervisor }) => config::generations(supervisor.target.config.as_deref(), supervisor.json),
        Command::Config(ConfigCommand::Rollback { generation, supervisor }) => match supervisor.runtime_dir() {
            Ok(dir) => config::rollback(supervisor.target.config.as_deref(), generation, &dir),
            Err(exit) => Ok(exit),
        },
        Command::Config(ConfigCommand::Diff { from, to, supervisor }) => config::diff(supervisor.target.config.as_deref(), from, to, supervisor.json),
        Command::Config(ConfigCommand::Example { json: false }) => {
            print!("{}", mld_config::EXAMPLE);
            Ok(Exit::Success)
        }
        Command::Config(ConfigCommand::Example { json: true }) => config::example_json(),
        Command::Capture { action: Some(CaptureCommand::Detach { config }), .. } => capture::run_detach(&config),
        Command::Capture { action: None, config: Some(config), format } => capture::run_capture(&config, format.map(output_format)),
        Command::Capture { action: None, config: None, .. } => {
            eprintln!("mldefender: error: capture needs --config FILE");
            Ok(Exit::Config)
        }
        Command::Block { action: BlockCommand::Explain { address }, maps } => block_explain(&maps, address),
        Command::Block { action: BlockCommand::Del { prefix, benign: true, reason, for_secs, runtime_dir }, maps } => {
            capture::release_benign(maps, runtime_dir, prefix, &reason, for_secs)
        }
        Command::Block { action: BlockCommand::Del { prefix, runtime_dir, .. }, maps } => capture::unblock(maps, runtime_dir, prefix),
        Command::Block { action, maps } => with_maps_dir(maps, |dir| {
            let action = match action {
                BlockCommand::Add { prefix, ttl, permanent: _, reason } => {
                    capture::ListAction::Add { prefix, ttl: ttl.map(std::time::Duration::from_secs), reason }
                }
                // (Del and Explain are answered above.)
                BlockCommand::List | BlockCommand::Del { .. } | BlockCommand::Explain { .. } => capture::ListAction::List,
            };
            capture::block(dir, action)
        }),
        Command::Allow { action, maps } => with_maps_dir(maps, |dir| {
            let action = match action {
                AllowCommand::Add { prefix } => capture::ListAction::Add { prefix, ttl: None, reason: mld_types::DenyReason::Manual },
                AllowCommand::Del { prefix } => capture::ListAction::Del { prefix },
                AllowCommand::List => capture::ListAction::List,
            };
            capture::allow(dir, action)
        }),
        Command::Counters { maps, json } => with_maps_dir(maps, |dir| capture::counters(dir, json)),
        Command::Supervise { config } => mld_runtime::supervise::run(&config),
        Command::Top(args) => top::top(&args),
        Command::Status { supervisor } => match supervisor.runtime_dir() {
            Ok(dir) => status::status(&dir, supervisor.json),
            Err(exit) => Ok(exit),
        },
        Command::Stop { reboot, target } => match target.runtime_dir() {
            Ok(dir) => update::stop(&dir, reboot),
            Err(exit) => Ok(exit),
        },
        Command::Fleet(FleetCommand::SignConfig { private_key, generation, file }) => fleet::sign_config(&private_key, generation, &file),
        Command::Fleet(FleetCommand::Status { supervisor }) => match supervisor.runtime_dir() {
            Ok(dir) => fleet::status(&dir, supervisor.json),
            Err(exit) => Ok(exit),
        },
        Command::Task { name } => mld_runtime::task::run(&name),
        Command::Replay { config, files } => log::replay(&config, &files),
        Command::Log(LogCommand::Verify { paths, public_keys, anchors, .. }) if !public_keys.is_empty() => {
            log::verify_signed(&paths, &public_keys, anchors.as_deref())
        }
        Command::Log(LogCommand::Verify { paths, keys, anchors, .. }) => log::verify(&paths, &keys, anchors.as_deref()),
        Command::Log(LogCommand::PublicKey { config, signing_key }) => log::public_key(config.as_deref(), signing_key.as_deref()),
        Command::Log(LogCommand::Schema { config }) => log::schema(config.as_deref()),
        Command::Log(LogCommand::Export(args)) => export::export(&args),
        Command::Pki(command) => pki::run(command),
        Command::Update(command) => update::run(command),
        Command::Model(ModelCommand::Keygen { private_key, public_key }) => model::keygen(&private_key, &public_key),
        Command::Model(ModelCommand::Sign { private_key, metadata }) => model::sign(&private_key, &metadata),
        Command::Model(ModelCommand::Check { config, dir }) => model::check(config.as_deref(), dir.as_deref()),
        Command::Query(QueryCommand::Similar { event, flow_json, k, args }) => {
            let (target, filters) = args.split();
            query::similar(&target, event.as_deref(), flow_json.as_deref(), k, &filters)
        }
        Command::Query(QueryCommand::Ask { question, k, ip, json, args }) => {
            let (target, filters) = args.split();
            query::ask_words(&target, &question, k, ip.as_deref(), &filters, json)
        }
        Command::Query(QueryCommand::Ip { address, limit, args }) => {
            let (target, filters) = args.split();
            query::ip(&target, &address, limit, &filters)
        }
    };
    match outcome {
        Ok(exit) => exit.into(),
        Err(error) => {
            eprintln!("mldefender: error: {error:#}");
            Exit::Failure.into()
        }
    }
}

fn output_format(format: FormatArg) -> mld_config::OutputFormat {
    match format {
        FormatArg::Csv => mld_config::OutputFormat::Csv,
        FormatArg::Jsonl => mld_config::OutputFormat::Jsonl,
        FormatArg::Text => mld_config::OutputFormat::Text,
    }
}

/// `block explain`: the log comes from --config, the data plane from --bpffs-dir or the
/// configuration.
fn block_explain(maps: &MapsArgs, address: std::net::IpAddr) -> anyhow::Result<Exit> {
    let config = match load::config(maps.config.as_deref()) {
        Ok(config) => config,
        Err(exit) => return Ok(exit),
    };
    let dir = maps.bpffs_dir.clone().unwrap_or_else(|| config.capture.bpffs_dir.clone());
    explain::explain(&config, &dir, address)
}

fn with_maps_dir(maps: MapsArgs, action: impl FnOnce(&std::path::Path) -> anyhow::Result<Exit>) -> anyhow::Result<Exit> {
    match capture::maps_dir(maps.bpffs_dir, maps.config.as_deref()) {
        Ok(dir) => action(&dir),
        Err(exit) => Ok(exit),
    }
}
