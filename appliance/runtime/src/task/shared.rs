//! The detect task's side of the fleet (ADR 0008): it tells the fleet task the blocks this
//! node decides, and judges the blocks other nodes decided with its own responder (the
//! allowlist, its own addresses, resolvers and gateways, exemptions, flood victims, the
//! circuit breaker) before any reaches the capture task. Every outcome is a record in the
//! signed log, naming the deciding node and its event id.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mld_detect::response::Outcome;
use mld_ipc::{Connection, FleetMessage, ResponseMessage};
use mld_types::{DenyReason, IpPrefix};
use tracing::{info, warn};

use super::RECONNECT_INTERVAL;
use crate::detection::Detection;

/// The fleet socket's output buffer: a burst of decisions.
const LINK_OUT_BYTES: usize = 4 << 20;

/// `action` of the records: a shared block applied here, refused here, and the fleet's
/// other happenings (members, connection).
pub const SHARED_BLOCK: &str = "shared-block";
pub const SHARED_REFUSED: &str = "shared-refused";
pub const SHARED_WITHDRAWN: &str = "shared-withdrawn";

/// Shared blocks remembered (to honour a withdrawal), at most: expired ones are forgotten
/// first; beyond, a withdrawal of one not remembered leaves it to its expiry.
const SHARED_MAX: usize = 65_536;
pub const FLEET_NOTE: &str = "fleet";

/// The connection to the fleet task (when one runs): reconnected when lost; what cannot
/// be sent is dropped and counted (local enforcement never waits for the fleet).
#[derive(Debug)]
pub struct FleetLink {
    path: PathBuf,
    connection: Option<Connection>,
    next_attempt: Instant,
    pub applied: u64,
    pub refused: u64,
    /// Decisions that could not be handed to the fleet task.
    pub unsent: u64,
    /// Shared blocks applied here: address → (deciding node, expiry in Unix ms).
    shared: std::collections::HashMap<std::net::IpAddr, (String, u64)>,
}

impl FleetLink {
    pub fn new(path: PathBuf) -> FleetLink {
        FleetLink { path, connection: None, next_attempt: Instant::now(), applied: 0, refused: 0, unsent: 0, shared: std::collections::HashMap::new() }
    }

    fn connection(&mut self) -> Option<&mut Connection> {
        if self.connection.is_none() && Instant::now() >= self.next_attempt {
            match Connection::connect(&self.path, LINK_OUT_BYTES) {
                Ok(connection) => {
                    info!("connected to the fleet task");
                    self.connection = Some(connection);
                }
                Err(_) => self.next_attempt = Instant::now() + RECONNECT_INTERVAL,
            }
        }
        self.connection.as_mut()
    }

    /// Tells the fleet task this node blocked `prefix` until `expires_unix_ms`.
    pub fn decided(&mut self, prefix: IpPrefix, reason: DenyReason, expires_unix_ms: u64, decided_unix_ms: u64, event_id: String) {
        self.send(FleetMessage::Decided { prefix, reason, expires_unix_ms, decided_unix_ms, event_id });
    }

    /// Tells the fleet task the operator removed this node's blocks covered by `prefix`,
    /// and forgets the shared blocks applied here that it covers (their entries went with
    /// the operator's `block del`: a later withdrawal by their node must not remove a block
    /// this node decides on its own meanwhile).
    pub fn withdraw(&mut self, prefix: IpPrefix) {
        self.shared.retain(|source, _| !prefix.covers(&IpPrefix::host(*source)));
        self.send(FleetMessage::Withdraw { prefix });
    }

    fn send(&mut self, message: FleetMessage) {
        let sent = self.connection().is_some_and(|connection| {
            let queued = connection.queue(&message).is_ok();
            connection.flush();
            queued
        });
        if !sent {
            self.unsent += 1;
        }
    }

    /// What the fleet task sent since the last call.
    pub fn receive(&mut self) -> Vec<FleetMessage> {
        let Some(connection) = self.connection() else { return Vec::new() };
        connection.flush();
        connection.receive();
        let mut messages = Vec::new();
        loop {
            match connection.next_message::<FleetMessage>() {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => break,
                Err(error) => {
                    warn!(error = %error, "bad frame from the fleet task; reconnecting");
                    self.connection = None;
                    return messages;
                }
            }
        }
        if !connection.is_open() {
            self.connection = None;
            self.next_attempt = Instant::now() + RECONNECT_INTERVAL;
        }
        messages
    }
}

/// What to do with one message from the fleet task: a block command for the capture task
/// (a shared block applied), and the record for the log.
#[derive(Debug)]
pub struct Judged {
    pub command: Option<ResponseMessage>,
    pub record: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Judges a message from the fleet task at `now_ns` (the detect clock: Unix ns).
pub fn judge(link: &mut FleetLink, detection: &mut Detection, message: FleetMessage, now_ns: u64, next_id: &mut u64, boot_ns: u64) -> Judged {
    let (prefix, reason, expires_unix_ms, decided_unix_ms, node, event_id) = match message {
        FleetMessage::Shared { prefix, reason, expires_unix_ms, decided_unix_ms, node, event_id } => {
            (prefix, reason, expires_unix_ms, decided_unix_ms, node, event_id)
        }
        FleetMessage::Note { what, detail } => {
            let unspecified = std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
            let record =
                detection.flowless_record(FLEET_NOTE, unspecified, (now_ns, now_ns), format!("fleet {what}: {detail}"), &format!("fleet|{what}|{now_ns}"));
            return Judged { command: None, record: Some(record) };
        }
        FleetMessage::Withdrawn { prefix, node } => return withdrawn(link, detection, prefix, &node, now_ns),
        FleetMessage::Decided { .. } | FleetMessage::Withdraw { .. } => return Judged { command: None, record: None },
    };
    let now_ms = now_ns / 1_000_000;
    let source = prefix.addr();
    let from = format!("shared block of {prefix} from fleet node {node} (its event {event_id}, {reason})");
    let host = IpPrefix::host(source);
    let outcome = if prefix != host {
        Err("only single addresses are taken from the fleet".to_string())
    } else if expires_unix_ms <= now_ms {
        Err("it had expired when it arrived".to_string())
    } else {
        let remaining = Duration::from_millis(expires_unix_ms - now_ms);
        match detection.detector.responder_mut().decide_shared(source, remaining, now_ns) {
            Outcome::Block { ttl, .. } | Outcome::WouldBlock { ttl, .. } => Ok(ttl),
            Outcome::AlreadyBlocked => return Judged { command: None, record: None },
            Outcome::Refused(protection) => Err(format!("refused here: {}", protection.describe())),
            Outcome::BreakerOpen(why) => Err(format!("the circuit breaker is open: {why}")),
        }
    };
    let id_text = format!("shared|{node}|{event_id}|{prefix}");
    match outcome {
        Ok(ttl) => {
            link.applied += 1;
            let dry_run = detection.detector.responder().config().mode == mld_config::ResponseMode::DryRun;
            let mut record = detection.flowless_record(
                SHARED_BLOCK,
                source,
                (now_ns, now_ns),
                format!(
                    "{from}: {} for {} s, what is left of it; it arrived {} ms after it was decided",
                    if dry_run { "would be applied (dry run)" } else { "applied" },
                    ttl.as_secs(),
                    now_ms.saturating_sub(decided_unix_ms)
                ),
                &id_text,
            );
            record.insert("category".to_string(), reason.as_str().into());
            record.insert("block_ttl_secs".to_string(), ttl.as_secs().into());
            let command = (!dry_run).then(|| {
                let id = *next_id;
                *next_id += 1;
                ResponseMessage::Block { id, prefix, ttl_secs: ttl.as_secs().max(1), reason, decided_boot_ns: boot_ns }
            });
            if command.is_some() {
                if link.shared.len() >= SHARED_MAX {
                    link.shared.retain(|_, (_, expires)| *expires > now_ms);
                }
                if link.shared.len() < SHARED_MAX {
                    link.shared.insert(source, (node.clone(), expires_unix_ms));
                }
            }
            info!(prefix = %prefix, node, ttl_secs = ttl.as_secs(), "shared block applied");
            Judged { command, record: Some(record) }
        }
        Err(why) => {
            link.refused += 1;
            info!(prefix = %prefix, node, why, "shared block refused");
            let mut record = detection.flowless_record(SHARED_REFUSED, source, (now_ns, now_ns), format!("{from}: {why}"), &id_text);
            record.insert("category".to_string(), reason.as_str().into());
            Judged { command: None, record: Some(record) }
        }
    }
}

/// `node` withdrew its block of `prefix` before its expiry (the operator's `block del`
/// there): when the block applied here is that node's, its deny entry goes (unless the
/// operator here made it a manual one) and the responder forgets it, so this node's own
/// evidence can block the source again. Anything else (refused here, never seen, another
/// node's block of the same address) is left alone.
fn withdrawn(link: &mut FleetLink, detection: &mut Detection, prefix: IpPrefix, node: &str, now_ns: u64) -> Judged {
    let source = prefix.addr();
    let now_ms = now_ns / 1_000_000;
    let applied_here = prefix == IpPrefix::host(source) && link.shared.get(&source).is_some_and(|(from, expires)| from == node && *expires > now_ms);
    if !applied_here {
        return Judged { command: None, record: None };
    }
    link.shared.remove(&source);
    detection.detector.responder_mut().expired(source);
    info!(prefix = %prefix, node, "shared block withdrawn");
    let record = detection.flowless_record(
        SHARED_WITHDRAWN,
        source,
        (now_ns, now_ns),
        format!("fleet node {node} withdrew its block of {prefix} before its expiry (its operator removed it): removed here"),
        &format!("withdrawn|{node}|{prefix}|{now_ns}"),
    );
    Judged { command: Some(ResponseMessage::Unblock { prefix }), record: Some(record) }
}
