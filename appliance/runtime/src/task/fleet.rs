//! The fleet task (ADR 0008): this node's member of the fleet's etcd cluster, over mutual
//! TLS with the identity the supervisor handed it as fds.
//!
//! - It registers the node under `/mld/nodes/NODE/member` with a lease kept alive.
//! - It publishes the blocks the detect task decides under `/mld/blocks/NODE/`, in
//!   batches (one transaction and one lease per batch: etcd deletes them as they lapse).
//! - It watches `/mld/` from the revision it has applied, and hands other nodes' blocks
//!   (checked by `mld_fleet::receiver`) to the detect task, whose responder judges them.
//! - When etcd is away it reconnects with a back-off; on reconnect it reads the blocks
//!   anew at one revision and watches from there (`Receiver::resync`: nothing applied
//!   twice, nothing expired resurrected). Local detection never waits for any of it.
//!
//! It is the only task that runs an async runtime (tokio, current-thread); the detect
//! task and the supervisor talk to it over the same framed sockets as every task.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, LeaseKeepAliveStream, LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
    WatchStream,
};
use mld_fleet::block::SharedBlock;
use mld_fleet::receiver::{Action, Receiver, ReceiverConfig, WatchEvent};
use mld_fleet::schema::{self, NodeName};
use mld_ipc::{Connection, FleetCounters, FleetMember, FleetMessage, FleetView, TaskCounters, TaskMessage};
use mld_types::IpPrefix;
use tracing::{info, warn};
use zeroize::Zeroizing;

use super::{Control, Start};
use crate::exit::Exit;

/// Blocks waiting to be published while etcd is away, at most; beyond, the oldest are
/// dropped and counted (they are enforced here all the same).
const PENDING_MAX: usize = 8192;
/// The operator's withdrawals waiting while etcd is away, at most (beyond, the blocks end
/// with their expiry).
const WITHDRAWALS_MAX: usize = 1024;
/// Puts in one transaction (etcd's default `--max-txn-ops` is 128).
const BATCH_MAX: usize = 100;
/// Shared blocks held at once, at most (`mld_fleet::receiver`).
const SHARED_MAX: usize = 65_536;
/// The loop's tick while nothing arrives (the control channel, counters, expiry); the
/// detect task's socket wakes the loop as soon as it is readable.
const TICK: Duration = Duration::from_millis(100);
/// The reconnect back-off: from the first to the longest.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The detect task's socket: a few thousand shared blocks in flight.
const LINK_OUT_BYTES: usize = 4 << 20;

/// The identity read from the fds the supervisor opened (the key zeroized when dropped).
struct Credentials {
    cert: String,
    key: Zeroizing<String>,
    ca: String,
}

/// The most a PEM file handed to the task may hold.
const PEM_MAX_BYTES: usize = 64 * 1024;

impl Credentials {
    /// Reads each file from its start with `read_at`: the supervisor hands every run of the
    /// task the same open file descriptions, whose shared offset a plain read would leave
    /// at the end for the next run.
    fn read(cert: OwnedFd, key: OwnedFd, ca: OwnedFd) -> anyhow::Result<Credentials> {
        use std::os::unix::fs::FileExt;
        let read = |fd: OwnedFd, what: &str| -> anyhow::Result<Zeroizing<String>> {
            let file = std::fs::File::from(fd);
            let mut bytes = Zeroizing::new(vec![0u8; PEM_MAX_BYTES]);
            let mut len = 0;
            loop {
                let n = file.read_at(&mut bytes[len..], len as u64).with_context(|| format!("failed to read the {what} handed by the supervisor"))?;
                if n == 0 {
                    break;
                }
                len += n;
                anyhow::ensure!(len < PEM_MAX_BYTES, "the {what} handed by the supervisor is larger than {PEM_MAX_BYTES} bytes");
            }
            let text = std::str::from_utf8(&bytes[..len]).with_context(|| format!("the {what} is not PEM text"))?;
            anyhow::ensure!(text.contains("-----BEGIN "), "the {what} handed by the supervisor holds no PEM block");
            Ok(Zeroizing::new(text.to_string()))
        };
        Ok(Credentials {
            cert: read(cert, "etcd client certificate")?.to_string(),
            key: read(key, "etcd client key")?,
            ca: read(ca, "trust bundle")?.to_string(),
        })
    }
}

/// The key of a [`mld_ipc::SupervisorMessage::FleetIdentity`]: base64 of PEM text, decoded
/// into wiped buffers.
fn decode_key(base64_text: &str) -> Result<Zeroizing<String>, &'static str> {
    use base64::Engine;
    let bytes = Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(base64_text).map_err(|_| "not base64")?);
    let text = std::str::from_utf8(&bytes).map_err(|_| "not PEM text")?;
    if !text.contains("-----BEGIN ") {
        return Err("no PEM block");
    }
    Ok(Zeroizing::new(text.to_string()))
}

/// An open session with the cluster.
struct Session {
    client: Client,
    /// The membership lease.
    lease: i64,
    watch: WatchStream,
    keeper: LeaseKeeper,
    keep_alive: LeaseKeepAliveStream,
    next_keep_alive: Instant,
}

/// Connections on the fleet socket kept at once.
const LINK_CONNECTIONS_MAX: usize = 4;
/// Messages for the detect task held while it is away (restarting), at most.
const OUTBOX_MAX: usize = 16_384;

/// The detect task's connection (it connects; only its user is admitted), and what waits
/// for it while it is away: bounded, the oldest dropped first and counted.
struct Link {
    /// Registered with the runtime: the loop wakes when the socket is readable. Declared
    /// before what it watches, so it is deregistered before the fd closes.
    listener_ready: tokio::io::unix::AsyncFd<RawFd>,
    listener: UnixListener,
    detect_uid: u32,
    /// Every open connection is read (a restarted detect task's overlaps the old one's);
    /// messages go to the newest. At most [`LINK_CONNECTIONS_MAX`], the oldest closed.
    connections: Vec<Watched>,
    outbox: VecDeque<FleetMessage>,
    dropped: u64,
}

/// Registers `fd` with the runtime's reactor for readability.
fn watch(fd: RawFd) -> std::io::Result<tokio::io::unix::AsyncFd<RawFd>> {
    #[allow(unsafe_code)]
    // SAFETY: every caller keeps the registration in a struct field declared before the
    // field that owns `fd` (`Link::listener`, `Watched::connection`), so the registration is
    // dropped, and deregistered, before the fd is closed.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE).map_err(std::io::Error::from)
    }
}

/// A connection and its registration with the runtime (dropped first).
struct Watched {
    ready: tokio::io::unix::AsyncFd<RawFd>,
    connection: Connection,
}

impl Watched {
    fn new(connection: Connection) -> std::io::Result<Watched> {
        use std::os::fd::{AsFd, AsRawFd};
        let ready = watch(connection.as_fd().as_raw_fd())?;
        Ok(Watched { ready, connection })
    }
}

impl Link {
    fn new(listener: UnixListener, detect_uid: u32) -> std::io::Result<Link> {
        use std::os::fd::AsRawFd;
        let listener_ready = watch(listener.as_raw_fd())?;
        Ok(Link { listener_ready, listener, detect_uid, connections: Vec::new(), outbox: VecDeque::new(), dropped: 0 })
    }

    /// Waits until the socket or the newest connection is readable (the caller then reads
    /// until nothing is left: readiness is cleared first, so nothing arriving is missed).
    async fn readable(&self) {
        let newest = async {
            match self.connections.last() {
                Some(watched) => {
                    if let Ok(mut guard) = watched.ready.readable().await {
                        guard.clear_ready();
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            guard = self.listener_ready.readable() => {
                if let Ok(mut guard) = guard {
                    guard.clear_ready();
                }
            }
            () = newest => {}
        }
    }

    /// Admits the detect task (the newest connection wins) and returns what it sent.
    fn receive(&mut self) -> Vec<FleetMessage> {
        while let Some(accepted) = mld_ipc::accept(&self.listener, &[self.detect_uid]) {
            match accepted.map_err(anyhow::Error::from).and_then(|peer| Ok(Watched::new(Connection::new(peer.stream, LINK_OUT_BYTES)?)?)) {
                Ok(connection) => {
                    info!("the detect task connected");
                    if self.connections.len() >= LINK_CONNECTIONS_MAX {
                        self.connections.remove(0);
                    }
                    self.connections.push(connection);
                }
                Err(error) => warn!(error = %error, "refused a connection on the fleet socket"),
            }
        }
        let mut messages = Vec::new();
        let mut bad = Vec::new();
        for (index, Watched { connection, .. }) in self.connections.iter_mut().enumerate() {
            connection.receive();
            loop {
                match connection.next_message::<FleetMessage>() {
                    Ok(Some(message)) => messages.push(message),
                    Ok(None) => break,
                    Err(error) => {
                        warn!(error = %error, "bad frame on the fleet socket; dropping that connection");
                        bad.push(index);
                        break;
                    }
                }
            }
        }
        let mut index = 0;
        self.connections.retain(|watched| {
            index += 1;
            watched.connection.is_open() && !bad.contains(&(index - 1))
        });
        self.flush();
        messages
    }

    /// Hands a message to the detect task, or keeps it until the task is back.
    fn send(&mut self, message: FleetMessage) {
        if self.outbox.len() >= OUTBOX_MAX {
            self.outbox.pop_front();
            self.dropped += 1;
        }
        self.outbox.push_back(message);
        self.flush();
    }

    /// Writes what waits, as far as the connection takes it.
    fn flush(&mut self) {
        let Some(Watched { connection, .. }) = self.connections.last_mut() else { return };
        while let Some(message) = self.outbox.front() {
            match connection.queue(message) {
                Ok(()) => {
                    self.outbox.pop_front();
                }
                Err(mld_ipc::SendError::Full { .. }) => break,
                Err(error) => {
                    warn!(error = %error, "a message cannot be sent to the detect task");
                    self.outbox.pop_front();
                    self.dropped += 1;
                }
            }
        }
        connection.flush();
    }
}

struct Fleet {
    node: NodeName,
    config: mld_config::FleetConfig,
    credentials: Credentials,
    link: Link,
    receiver: Receiver,
    /// This node's blocks not yet in etcd, oldest first.
    pending: VecDeque<SharedBlock>,
    /// The operator's withdrawals (`block del` here) waiting to be written.
    withdrawals: Vec<IpPrefix>,
    /// Members with a live lease, by name, as their records say (this node included).
    members: BTreeMap<String, FleetMember>,
    /// This node's member record.
    own: FleetMember,
    /// This node's configuration text (fleet documents are laid over it), the last
    /// document generation taken, and the verdict on the newest to report under
    /// `/mld/nodes/NODE/config`.
    local_toml: String,
    config_generation: u64,
    config_status: Option<serde_json::Value>,
    /// Messages for the supervisor (a document taken), sent at the next turn.
    to_supervisor: Vec<TaskMessage>,
    /// The log's durable head to publish as this node's anchor, once it changed.
    anchor: Option<(u64, String)>,
    anchor_published: u64,
    /// The last view sent to the supervisor, and when.
    view_sent: Option<(FleetView, Instant)>,
    /// The endpoint the next connection goes to: one member at a time, the next one after
    /// a failure (a client balanced over all members keeps sending to a dead one).
    endpoint: usize,
    counters: FleetCounters,
}

/// What the fleet task is handed beside its control channel.
#[derive(Debug)]
pub struct Fds {
    pub link: OwnedFd,
    pub cert: OwnedFd,
    pub key: OwnedFd,
    pub ca: OwnedFd,
}

/// Runs the fleet task until shutdown.
pub fn run(start: &Start, control: &mut Control, stop: &AtomicBool, fds: Fds) -> anyhow::Result<Exit> {
    let node: NodeName = start.config.log.node.parse().context("log.node is not a fleet node name")?;
    let credentials = Credentials::read(fds.cert, fds.key, fds.ca)?;
    let listener = UnixListener::from(fds.link);
    listener.set_nonblocking(true).context("failed to configure the fleet socket")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("failed to start the async runtime")?;
    // Registered with the runtime's reactor: made inside it.
    let link = {
        let _entered = runtime.enter();
        Link::new(listener, start.settings.detect_uid).context("failed to watch the fleet socket")?
    };
    let receiver = Receiver::new(ReceiverConfig {
        own: node.clone(),
        enabled: start.config.fleet.receive,
        categories: start.config.fleet.accept.clone(),
        max_entries: SHARED_MAX,
    });
    let mut fleet = Fleet {
        node,
        config: start.config.fleet.clone(),
        credentials,
        link,
        receiver,
        pending: VecDeque::new(),
        withdrawals: Vec::new(),
        members: BTreeMap::new(),
        own: FleetMember {
            node: start.config.log.node.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            config_sha256: {
                use sha2::Digest;
                hex::encode(sha2::Sha256::digest(start.config_toml.as_bytes()))
            },
            config_generation: start.settings.fleet_generation,
            started_unix_ms: unix_ms(),
            heartbeat_unix_ms: 0,
        },
        view_sent: None,
        local_toml: start.settings.fleet_base_toml.clone().unwrap_or_else(|| start.config_toml.clone()),
        config_generation: start.settings.fleet_generation,
        config_status: None,
        to_supervisor: Vec::new(),
        anchor: None,
        anchor_published: 0,
        endpoint: 0,
        counters: FleetCounters::default(),
    };
    // Nodes spread over the members from the start.
    fleet.endpoint = fleet.node.as_str().bytes().map(usize::from).sum::<usize>() % fleet.config.endpoints.len().max(1);
    if fleet.config_generation > 0 {
        // The supervisor runs with the document in force: on record once per start, and
        // under the node's prefix.
        let (generation, digest) = (fleet.config_generation, fleet.own.config_sha256.clone());
        fleet.note("config-applied", format!("running with configuration document generation {generation} (configuration sha256 {digest})"));
        fleet.config_status = Some(serde_json::json!({ "generation": generation, "state": "applied", "merged_sha256": digest, "at_unix_ms": unix_ms() }));
    }
    control.ready();
    info!(node = %fleet.node, endpoints = ?fleet.config.endpoints, "fleet task ready");
    runtime.block_on(fleet.run(control, stop));
    control.finish(TaskCounters::Fleet(fleet.counters));
    info!(published = fleet.counters.fleet_published, received = fleet.counters.fleet_received, "fleet task stopped");
    Ok(Exit::Success)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

impl Fleet {
    async fn run(&mut self, control: &mut Control, stop: &AtomicBool) {
        let mut session: Option<Session> = None;
        let mut next_connect = Instant::now();
        let mut backoff = BACKOFF_FIRST;
        loop {
            if stop.load(Ordering::Relaxed) || control.shutdown_requested() {
                break;
            }
            self.take_decisions();
            for message in self.to_supervisor.drain(..) {
                control.send(&message);
            }
            for request in control.take_requests() {
                match request {
                    mld_ipc::SupervisorMessage::LogHead { seq, hmac } => self.anchor = Some((seq, hmac)),
                    // A new generation: the next document is laid over it.
                    mld_ipc::SupervisorMessage::Reconfigure { base_toml, .. } => self.local_toml = base_toml,
                    mld_ipc::SupervisorMessage::FleetDocumentRefused { generation, errors } => {
                        warn!(generation, errors = ?errors, "the supervisor refused the configuration document");
                        self.note("config-refused", format!("configuration document generation {generation} refused by the supervisor: {}", errors.join("; ")));
                        self.config_status =
                            Some(serde_json::json!({ "generation": generation, "state": "refused", "errors": errors, "at_unix_ms": unix_ms() }));
                    }
                    mld_ipc::SupervisorMessage::FleetIdentity { cert_pem, key_pem_base64, ca_pem } => {
                        let key_pem_base64 = Zeroizing::new(key_pem_base64);
                        let key = match decode_key(&key_pem_base64) {
                            Ok(key) => key,
                            Err(why) => {
                                warn!(why, "the supervisor handed an unusable etcd client key; keeping the current identity");
                                continue;
                            }
                        };
                        self.credentials = Credentials { cert: cert_pem, key, ca: ca_pem };
                        // One reconnect with the new identity; what waits to be published
                        // stays queued.
                        if session.take().is_some() {
                            self.counters.fleet_connected = 0;
                            next_connect = Instant::now();
                        }
                        self.note("certificate-renewed", "the etcd client certificate changed; reconnected with it".to_string());
                    }
                    _ => {}
                }
            }
            if session.is_none() && Instant::now() >= next_connect {
                match tokio::time::timeout(self.config.request_timeout * 3, self.open()).await.unwrap_or_else(|_| Err(anyhow::anyhow!("timed out"))) {
                    Ok(opened) => {
                        session = Some(opened);
                        backoff = BACKOFF_FIRST;
                        self.counters.fleet_connects += 1;
                        self.counters.fleet_connected = 1;
                        let endpoint = &self.config.endpoints[self.endpoint % self.config.endpoints.len()];
                        info!(endpoint, revision = self.receiver.revision(), members = self.members.len(), "connected to the fleet's etcd");
                        self.note("connected", format!("connected to etcd at revision {}; {} members", self.receiver.revision(), self.members.len()));
                    }
                    Err(error) => {
                        let endpoint = &self.config.endpoints[self.endpoint % self.config.endpoints.len()];
                        warn!(endpoint, error = %format!("{error:#}"), retry_ms = backoff.as_millis() as u64, "cannot reach the fleet's etcd; local protection goes on");
                        self.endpoint += 1;
                        self.counters.fleet_connected = 0;
                        next_connect = Instant::now() + backoff;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            if let Some(open) = session.as_mut() {
                let turn = tokio::time::timeout(self.config.request_timeout * 2, self.serve(open)).await;
                if let Err(error) = turn.unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {:?}", self.config.request_timeout * 2))) {
                    warn!(error = %format!("{error:#}"), "lost the fleet's etcd; local protection goes on, shared blocks stay until they expire");
                    self.note("disconnected", format!("lost etcd: {error:#}"));
                    session = None;
                    self.counters.fleet_connected = 0;
                    self.endpoint += 1;
                    next_connect = Instant::now() + BACKOFF_FIRST;
                }
            } else {
                tokio::select! {
                    () = tokio::time::sleep(TICK) => {}
                    () = self.link.readable() => {}
                }
            }
            self.receiver.expire(unix_ms());
            self.counters.fleet_members = self.members.len() as u64;
            self.counters.fleet_handoff_dropped = self.link.dropped;
            self.counters.fleet_revision = self.receiver.revision().max(0) as u64;
            let counters = self.counters;
            control.report_due(|| TaskCounters::Fleet(counters));
            self.send_view(control, session.is_some());
        }
        if let Some(mut open) = session {
            // Publish what is left within a short bound; the member key goes with its lease.
            let _ = tokio::time::timeout(Duration::from_millis(500), self.publish(&mut open.client)).await;
        }
    }

    /// The detect task's decisions, queued for publishing (bounded).
    fn take_decisions(&mut self) {
        for message in self.link.receive() {
            let (prefix, reason, expires_unix_ms, decided_unix_ms, event_id) = match message {
                FleetMessage::Decided { prefix, reason, expires_unix_ms, decided_unix_ms, event_id } => {
                    (prefix, reason, expires_unix_ms, decided_unix_ms, event_id)
                }
                FleetMessage::Withdraw { prefix } => {
                    // What waits unpublished is simply dropped; what is out goes at the next turn.
                    self.pending.retain(|block| !prefix.covers(&block.prefix));
                    if self.config.publish && self.withdrawals.len() < WITHDRAWALS_MAX && !self.withdrawals.contains(&prefix) {
                        self.withdrawals.push(prefix);
                    }
                    continue;
                }
                _ => continue,
            };
            if !self.config.publish {
                continue;
            }
            if self.pending.len() >= PENDING_MAX {
                self.pending.pop_front();
                self.counters.fleet_publish_failed += 1;
            }
            let event_id: String = event_id.chars().filter(char::is_ascii_graphic).take(mld_fleet::block::MAX_EVENT_ID).collect();
            let expires_at_ms = expires_unix_ms.min(decided_unix_ms + mld_fleet::block::MAX_TTL_MS);
            self.pending.push_back(SharedBlock {
                prefix,
                category: reason,
                expires_at_ms,
                decided_at_ms: decided_unix_ms,
                node: self.node.clone(),
                event_id: if event_id.is_empty() { "unknown".to_string() } else { event_id },
            });
        }
    }

    /// Connects, registers the node, reads the blocks and members at one revision, and
    /// watches `/mld/` from the next.
    async fn open(&mut self) -> anyhow::Result<Session> {
        let mut tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(self.credentials.ca.as_bytes()))
            .identity(Identity::from_pem(self.credentials.cert.as_bytes(), self.credentials.key.as_bytes()));
        if let Some(name) = &self.config.server_name {
            tls = tls.domain_name(name.clone());
        }
        let options = ConnectOptions::new()
            .with_tls(tls)
            .with_timeout(self.config.request_timeout)
            .with_connect_timeout(self.config.request_timeout)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        let endpoint = self.config.endpoints[self.endpoint % self.config.endpoints.len()].clone();
        let mut client = Client::connect([endpoint.as_str()], Some(options)).await.with_context(|| format!("connect to {endpoint}"))?;
        let lease_secs = self.config.lease.as_secs() as i64;
        let lease = client.lease_grant(lease_secs, None).await.context("grant the membership lease")?.id();
        self.heartbeat(&mut client, lease).await.context("register the member")?;
        let (keeper, keep_alive) = client.lease_keep_alive(lease).await.context("keep the membership lease alive")?;
        let blocks = client.get(schema::BLOCKS, Some(GetOptions::new().with_prefix())).await.context("read the shared blocks")?;
        let revision = blocks.header().map_or(0, |header| header.revision());
        let snapshot: Vec<(String, Vec<u8>)> = blocks.kvs().iter().filter_map(|kv| Some((kv.key_str().ok()?.to_string(), kv.value().to_vec()))).collect();
        self.counters.fleet_resyncs += 1;
        let actions = self.receiver.resync(snapshot, revision, unix_ms());
        for action in actions {
            self.act(action);
        }
        let nodes = client.get("/mld/nodes/", Some(GetOptions::new().with_prefix())).await.context("read the members")?;
        let now: BTreeMap<String, FleetMember> =
            nodes.kvs().iter().filter_map(|kv| member_record(kv.key_str().ok()?, kv.value())).take(FleetView::MEMBERS_MAX).collect();
        for gone in self.members.keys().filter(|name| !now.contains_key(*name)).cloned().collect::<Vec<_>>() {
            self.note("member-lost", format!("member {gone} left while this node was away"));
        }
        for joined in now.keys().filter(|name| !self.members.contains_key(*name) && name.as_str() != self.node.as_str()).cloned().collect::<Vec<_>>() {
            self.note("member-joined", format!("member {joined} is in the fleet"));
        }
        self.members = now;
        let document = client.get(crate::fleet_doc::KEY, None).await.context("read the fleet configuration document")?;
        if let Some(kv) = document.kvs().first() {
            self.judge_document(kv.value());
        }
        let watch = client.watch(schema::ROOT, Some(WatchOptions::new().with_prefix().with_start_revision(revision + 1))).await.context("watch /mld/")?;
        let interval = Duration::from_secs((lease_secs as u64 / 3).max(1));
        Ok(Session { client, lease, watch, keeper, keep_alive, next_keep_alive: Instant::now() + interval })
    }

    /// Deletes this node's published blocks covered by each withdrawn prefix (the
    /// operator's `block del` here): the receivers see the keys go before the blocks'
    /// expiry and remove what they applied from this node. A withdrawal waits while etcd
    /// is away; one that fails is tried again at the next turn.
    async fn withdraw(&mut self, client: &mut Client) -> anyhow::Result<()> {
        let own = schema::node_blocks(&self.node);
        let published = client.get(own.as_str(), Some(GetOptions::new().with_prefix().with_keys_only())).await.context("list this node's shared blocks")?;
        let keys: Vec<(String, IpPrefix)> = published
            .kvs()
            .iter()
            .filter_map(|kv| kv.key_str().ok().and_then(|key| schema::parse_block_key(key).ok().map(|(_, prefix)| (key.to_string(), prefix))))
            .collect();
        while let Some(prefix) = self.withdrawals.first().copied() {
            let covered: Vec<TxnOp> = keys.iter().filter(|(_, published)| prefix.covers(published)).map(|(key, _)| TxnOp::delete(key.as_str(), None)).collect();
            let count = covered.len();
            if count > 0 {
                client.txn(Txn::new().and_then(covered)).await.with_context(|| format!("withdraw the shared blocks covered by {prefix}"))?;
                self.note("block-withdrawn", format!("withdrew {count} shared block(s) covered by {prefix} from the fleet (the operator's block del)"));
            }
            self.withdrawals.remove(0);
        }
        Ok(())
    }

    /// One turn with an open session: publish what waits, keep the lease alive, and take
    /// what the watch brings (or the tick passes).
    async fn serve(&mut self, session: &mut Session) -> anyhow::Result<()> {
        // Withdrawals first: what waits to be published was decided after them (the
        // covered ones were dropped from the queue when the withdrawal came).
        if !self.withdrawals.is_empty() {
            self.withdraw(&mut session.client).await?;
        }
        if !self.pending.is_empty() {
            self.publish(&mut session.client).await?;
        }
        self.publish_anchor(&mut session.client).await?;
        if let Some(status) = self.config_status.take() {
            let key = format!("{}nodes/{}/config", schema::ROOT, self.node);
            session.client.put(key, status.to_string(), None).await.context("report the verdict on the configuration document")?;
        }
        if Instant::now() >= session.next_keep_alive {
            session.keeper.keep_alive().await.context("renew the membership lease")?;
            let lease = session.lease;
            self.heartbeat(&mut session.client, lease).await.context("write the heartbeat")?;
            session.next_keep_alive = Instant::now() + Duration::from_secs((self.config.lease.as_secs() / 3).max(1));
        }
        tokio::select! {
            message = session.watch.message() => {
                let response = message.context("the watch failed")?.context("the watch ended")?;
                if response.canceled() || response.compact_revision() > 0 {
                    // Compacted past our revision: read everything anew at one revision.
                    anyhow::bail!("the watch was cancelled (compacted at revision {}): resyncing", response.compact_revision());
                }
                let now = unix_ms();
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let Ok(key) = kv.key_str() else {
                        self.counters.fleet_invalid += 1;
                        continue;
                    };
                    if key == crate::fleet_doc::KEY {
                        if event.event_type() == EventType::Put {
                            self.judge_document(kv.value());
                        }
                        continue;
                    }
                    if let Some(member) = member_of(key) {
                        self.member_event(member, kv.value(), event.event_type());
                        continue;
                    }
                    if !key.starts_with(schema::BLOCKS) {
                        continue;
                    }
                    let revision = kv.mod_revision();
                    let watched = match event.event_type() {
                        EventType::Put => WatchEvent::Put { key: key.to_string(), value: kv.value().to_vec(), revision },
                        EventType::Delete => WatchEvent::Delete { key: key.to_string(), revision },
                    };
                    let action = self.receiver.on_event(watched, now);
                    self.act(action);
                }
            }
            answer = session.keep_alive.message() => {
                let answer = answer.context("the membership lease's keep-alive failed")?.context("the keep-alive stream ended")?;
                if answer.ttl() <= 0 {
                    anyhow::bail!("the membership lease expired (this node was silent for {} s)", self.config.lease.as_secs());
                }
            }
            () = tokio::time::sleep(TICK) => {}
            () = self.link.readable() => {}
        }
        Ok(())
    }

    /// Writes the waiting blocks, a batch per transaction under one lease that outlives
    /// the batch's longest block (etcd deletes the keys when it lapses; receivers apply
    /// only what is left of each block's own expiry).
    async fn publish(&mut self, client: &mut Client) -> anyhow::Result<()> {
        let now = unix_ms();
        self.pending.retain(|block| block.expires_at_ms > now);
        while !self.pending.is_empty() {
            let take = self.pending.len().min(BATCH_MAX);
            let longest_ms = self.pending.iter().take(take).map(|block| block.expires_at_ms.saturating_sub(now)).max().unwrap_or(1000);
            let lease = match client.lease_grant(longest_ms.div_ceil(1000) as i64 + 1, None).await {
                Ok(lease) => lease.id(),
                Err(error) => {
                    self.counters.fleet_publish_failed += take as u64;
                    return Err(anyhow::Error::from(error).context("grant a lease for shared blocks"));
                }
            };
            let operations: Vec<TxnOp> = self
                .pending
                .iter()
                .take(take)
                .map(|block| TxnOp::put(schema::block_key(&self.node, &block.prefix), block.to_value(), Some(PutOptions::new().with_lease(lease))))
                .collect();
            if let Err(error) = client.txn(Txn::new().and_then(operations)).await {
                self.counters.fleet_publish_failed += take as u64;
                return Err(anyhow::Error::from(error).context("publish shared blocks"));
            }
            self.pending.drain(..take);
            self.counters.fleet_published += take as u64;
        }
        Ok(())
    }

    /// Publishes the log's durable head as this node's anchor (`/mld/nodes/NODE/anchor`, no
    /// lease: it outlives the node), when it moved. `mldefender log verify --anchors`
    /// then finds a log cut back or rewritten after its head left the box.
    async fn publish_anchor(&mut self, client: &mut Client) -> anyhow::Result<()> {
        let Some((seq, hmac)) = &self.anchor else { return Ok(()) };
        if *seq == self.anchor_published {
            return Ok(());
        }
        let value = serde_json::json!({ "node": self.node.as_str(), "seq": seq, "hmac": hmac, "at_unix_ms": unix_ms() });
        client.put(schema::anchor_key(&self.node), value.to_string(), None).await.context("publish the log anchor")?;
        self.anchor_published = *seq;
        Ok(())
    }

    /// Judges a configuration document (`fleet_doc`), puts the verdict on record and
    /// queues it for `/mld/nodes/NODE/config`. A document taken is verified and valid here;
    /// applying it comes with `config apply` (issue 16).
    fn judge_document(&mut self, value: &[u8]) {
        let verdict = crate::fleet_doc::judge(value, self.config.operator_public_key.as_deref(), self.config_generation, &self.local_toml);
        let now = unix_ms();
        match verdict {
            crate::fleet_doc::Verdict::Accepted { generation, merged } => {
                self.config_generation = generation;
                let digest = {
                    use sha2::Digest;
                    hex::encode(sha2::Sha256::digest(merged.as_bytes()))
                };
                self.note(
                    "config-accepted",
                    format!("configuration document generation {generation}: signature and every check hold (merged configuration sha256 {digest}); the supervisor applies it"),
                );
                self.config_status = Some(serde_json::json!({ "generation": generation, "state": "accepted", "merged_sha256": digest, "at_unix_ms": now }));
                match std::str::from_utf8(value) {
                    Ok(document) => self.to_supervisor.push(TaskMessage::FleetDocument { document: document.to_string() }),
                    Err(_) => warn!("a configuration document that is not UTF-8 passed the checks; not passed on"),
                }
            }
            crate::fleet_doc::Verdict::InForce { .. } => {}
            crate::fleet_doc::Verdict::Refused { generation, errors } => {
                let which = generation.map_or("a configuration document".to_string(), |generation| format!("configuration document generation {generation}"));
                warn!(document = which, errors = ?errors, "refused a fleet configuration document");
                self.note("config-refused", format!("{which} refused: {}", errors.join("; ")));
                self.config_status = Some(serde_json::json!({ "generation": generation, "state": "refused", "errors": errors, "at_unix_ms": now }));
            }
        }
    }

    /// Hands a receiver's decision to the detect task.
    fn act(&mut self, action: Action) {
        match action {
            Action::Apply { block, ttl_secs: _ } => {
                self.counters.fleet_received += 1;
                let message = FleetMessage::Shared {
                    prefix: block.prefix,
                    reason: block.category,
                    expires_unix_ms: block.expires_at_ms,
                    decided_unix_ms: block.decided_at_ms,
                    node: block.node.to_string(),
                    event_id: block.event_id,
                };
                self.link.send(message);
            }
            // At its expiry the deny entry lapses by itself (the same absolute expiry); an
            // early withdrawal (`block del` on the deciding node) goes to the detect task,
            // which removes the entry if it applied that node's block.
            Action::Remove { prefix, node, expires_at_ms } => {
                if expires_at_ms > unix_ms() + 1000 {
                    self.link.send(FleetMessage::Withdrawn { prefix, node: node.to_string() });
                }
            }
            Action::Ignored { .. } => {}
            Action::Invalid { key, why } => {
                self.counters.fleet_invalid += 1;
                warn!(key, why, "refused a shared block record");
            }
        }
    }

    fn member_event(&mut self, member: String, value: &[u8], kind: EventType) {
        match kind {
            EventType::Put => {
                let Some((name, record)) = member_record(&format!("/mld/nodes/{member}/member"), value) else {
                    self.counters.fleet_invalid += 1;
                    return;
                };
                let new = !self.members.contains_key(&name);
                if new && self.members.len() >= FleetView::MEMBERS_MAX {
                    return;
                }
                self.members.insert(name, record);
                if new && member != self.node.as_str() {
                    self.note("member-joined", format!("member {member} joined the fleet"));
                }
            }
            EventType::Delete => {
                if self.members.remove(&member).is_some() && member != self.node.as_str() {
                    self.note("member-lost", format!("member {member} left the fleet (its lease lapsed or it stopped)"));
                }
            }
        }
    }

    /// Writes this node's member record under its lease, with the time as its heartbeat.
    async fn heartbeat(&mut self, client: &mut Client, lease: i64) -> Result<(), etcd_client::Error> {
        self.own.heartbeat_unix_ms = unix_ms();
        let value = serde_json::to_string(&self.own).expect("a member record serializes");
        client.put(schema::member_key(&self.node), value, Some(PutOptions::new().with_lease(lease))).await.map(|_| ())
    }

    /// Sends the supervisor this task's view of the fleet when it changed, or every 2 s.
    fn send_view(&mut self, control: &mut Control, connected: bool) {
        let view = FleetView {
            node: self.node.to_string(),
            connected,
            endpoint: self.config.endpoints[self.endpoint % self.config.endpoints.len()].clone(),
            revision: self.receiver.revision().max(0) as u64,
            at_unix_ms: 0,
            members: self.members.values().cloned().collect(),
        };
        let due = match &self.view_sent {
            Some((sent, at)) => *sent != view || at.elapsed() >= Duration::from_secs(2),
            None => true,
        };
        if due {
            control.send(&TaskMessage::Fleet { view: FleetView { at_unix_ms: unix_ms(), ..view.clone() } });
            self.view_sent = Some((view, Instant::now()));
        }
    }

    /// Puts a fleet happening on record (through the detect task, which logs it).
    fn note(&mut self, what: &str, detail: String) {
        info!(what, detail, "fleet");
        self.link.send(FleetMessage::Note { what: what.to_string(), detail });
    }
}

/// The name and record of a member key and its value (`None` when either is malformed).
fn member_record(key: &str, value: &[u8]) -> Option<(String, FleetMember)> {
    let name = member_of(key)?;
    if value.len() > 4096 {
        return None;
    }
    let mut record: FleetMember = serde_json::from_slice(value).ok()?;
    record.node = name.clone();
    record.version.truncate(64);
    record.config_sha256.truncate(64);
    Some((name, record))
}

/// The member name of a `/mld/nodes/NODE/member` key.
fn member_of(key: &str) -> Option<String> {
    let name = key.strip_prefix("/mld/nodes/")?.strip_suffix("/member")?;
    name.parse::<NodeName>().ok().map(|name| name.to_string())
}
