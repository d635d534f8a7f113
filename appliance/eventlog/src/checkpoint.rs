//! Signed checkpoints: the verify-only credential of the log (ADR 0007).
//!
//! The log task, the only writer, holds an Ed25519 signing key besides the HMAC key.
//! Every so many records (and before a file is closed, and at shutdown) it appends a
//! `checkpoint` record, sealed into the HMAC chain like every record, that covers the
//! records since the previous checkpoint: their seq range, the tag of the last one, the
//! SHA-256 over their exact bytes (each line with its newline, in seq order, after the
//! previous checkpoint's digest) and an Ed25519 signature over a canonical byte string of
//! those fields ([`signed_message`]). A reader that holds only the public key (the ingest
//! task, `log verify --public-key`) verifies a record once a checkpoint covers it
//! ([`WindowVerifier`]); it cannot write a record that verifies.
//!
//! Key files: the signing key is the base64 of the 32-byte Ed25519 seed, one line, read
//! with [`open_secret_file`] (0600, owner root or the reader, no link), as the model
//! signing key; the public key is the base64 of the 32-byte public key, one line.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use mld_secret::{open_secret_file, SecretFileError};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::chain::HMAC_FIELD;
use crate::verify::RecordHead;

/// The record type of a checkpoint.
pub const CHECKPOINT_TYPE: &str = "checkpoint";
/// The domain separator that starts every signed checkpoint message.
pub const CHECKPOINT_DOMAIN: &[u8] = b"mld-log-checkpoint-v1\0";
/// `prev_checkpoint_sha256` of a node's first checkpoint (or the first after a new anchor).
pub const GENESIS_DIGEST: [u8; 32] = [0; 32];

/// The checkpoint's own fields, in the order they are written (before the integrity
/// fields). Reserved: an event body may not carry them.
pub const CHECKPOINT_FIELDS: [&str; 7] =
    ["covered_first_seq", "covered_last_seq", "covered_last_tag", "prev_checkpoint_sha256", "covered_sha256", "signing_key_id", "signature"];

const MAX_KEY_FILE_BYTES: u64 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("failed to {operation} log signing key `{path}`")]
    Io { operation: &'static str, path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    File(#[from] SecretFileError),
    #[error("log signing key `{path}` is not the base64 of a 32-byte Ed25519 seed")]
    Format { path: PathBuf },
    #[error("log public key {origin} is not the base64 of a valid 32-byte Ed25519 public key")]
    PublicFormat { origin: String },
}

/// The key id of a public key: the first 8 bytes of its SHA-256, hex.
fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// The checkpoint signing key (held by the log task only).
pub struct CheckpointSigningKey {
    key: SigningKey,
    id: String,
}

impl std::fmt::Debug for CheckpointSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigningKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl CheckpointSigningKey {
    pub fn from_seed(seed: [u8; 32]) -> CheckpointSigningKey {
        let key = SigningKey::from_bytes(&seed);
        let id = key_id(&key.verifying_key());
        CheckpointSigningKey { key, id }
    }

    /// The id of its public key (in every checkpoint as `signing_key_id`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public key: what readers are given.
    pub fn public_key(&self) -> CheckpointPublicKey {
        CheckpointPublicKey::from_verifying_key(self.key.verifying_key())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// Opens a signing key file once, checked on the fd ([`open_secret_file`]), and checks
    /// that it holds a key; returns the open file (the supervisor hands it to the log task).
    pub fn open(path: &Path) -> Result<File, SigningKeyError> {
        let file = open_secret_file(path, "log signing key")?;
        CheckpointSigningKey::read_from(&file, path)?;
        Ok(file)
    }

    /// Reads a key file (see [`open_secret_file`] for what is refused).
    pub fn load(path: &Path) -> Result<CheckpointSigningKey, SigningKeyError> {
        let file = CheckpointSigningKey::open(path)?;
        CheckpointSigningKey::read_from(&file, path)
    }

    /// Reads a key from an open file (handed over as an fd); positioned reads only.
    pub fn from_file(file: File, what: &Path) -> Result<CheckpointSigningKey, SigningKeyError> {
        CheckpointSigningKey::read_from(&file, what)
    }

    fn read_from(file: &File, what: &Path) -> Result<CheckpointSigningKey, SigningKeyError> {
        let mut bytes = Zeroizing::new(vec![0u8; MAX_KEY_FILE_BYTES as usize]);
        let mut len = 0;
        while len < bytes.len() {
            match file.read_at(&mut bytes[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => return Err(SigningKeyError::Io { operation: "read", path: what.to_path_buf(), source }),
            }
        }
        let format = || SigningKeyError::Format { path: what.to_path_buf() };
        let text = std::str::from_utf8(&bytes[..len]).map_err(|_| format())?;
        let decoded = Zeroizing::new(BASE64.decode(text.trim()).map_err(|_| format())?);
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(decoded.as_slice().try_into().map_err(|_| format())?);
        Ok(CheckpointSigningKey::from_seed(*seed))
    }

    /// Creates a new random key file (mode 0600, never overwriting) and returns the key.
    pub fn create(path: &Path) -> Result<CheckpointSigningKey, SigningKeyError> {
        let io = |operation, source| SigningKeyError::Io { operation, path: path.to_path_buf(), source };
        let mut seed = Zeroizing::new([0u8; 32]);
        File::open("/dev/urandom").and_then(|mut random| random.read_exact(&mut *seed)).map_err(|error| io("generate", error))?;
        let text = Zeroizing::new(format!("{}\n", BASE64.encode(*seed)));
        let mut file =
            OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(path).map_err(|error| io("create", error))?;
        file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(|error| io("write", error))?;
        Ok(CheckpointSigningKey::from_seed(*seed))
    }
}

/// A checkpoint public key: verifies, cannot sign.
#[derive(Clone, PartialEq, Eq)]
pub struct CheckpointPublicKey {
    key: VerifyingKey,
    id: String,
}

impl std::fmt::Debug for CheckpointPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointPublicKey").field("id", &self.id).finish()
    }
}

impl CheckpointPublicKey {
    fn from_verifying_key(key: VerifyingKey) -> CheckpointPublicKey {
        CheckpointPublicKey { id: key_id(&key), key }
    }

    /// Parses the base64 text of a public key (weak keys refused).
    pub fn from_base64(text: &str) -> Result<CheckpointPublicKey, SigningKeyError> {
        let format = || SigningKeyError::PublicFormat { origin: "(base64 text)".to_string() };
        let bytes: [u8; 32] = BASE64.decode(text.trim()).map_err(|_| format())?.as_slice().try_into().map_err(|_| format())?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| format())?;
        if key.is_weak() {
            return Err(format());
        }
        Ok(CheckpointPublicKey::from_verifying_key(key))
    }

    /// Reads a public key file (base64, one line).
    pub fn load(path: &Path) -> Result<CheckpointPublicKey, SigningKeyError> {
        let mut text = String::new();
        File::open(path).and_then(|file| file.take(MAX_KEY_FILE_BYTES).read_to_string(&mut text)).map_err(|source| SigningKeyError::Io {
            operation: "read",
            path: path.to_path_buf(),
            source,
        })?;
        CheckpointPublicKey::from_base64(&text).map_err(|_| SigningKeyError::PublicFormat { origin: format!("`{}`", path.display()) })
    }

    pub fn to_base64(&self) -> String {
        BASE64.encode(self.key.as_bytes())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.key.verify_strict(message, &Signature::from_bytes(signature)).is_ok()
    }
}

/// What a checkpoint says about the records it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointClaim {
    pub node: String,
    /// The checkpoint record's own seq (`last_seq` + 1) and HMAC key id: signed too, so
    /// that of the checkpoint line only its `hmac` is left to the HMAC key.
    pub seq: u64,
    pub hmac_key_id: String,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The `hmac` of the last covered record (the checkpoint's own `prev_tag`).
    pub last_tag: String,
    pub prev_digest: [u8; 32],
    pub digest: [u8; 32],
    pub signing_key_id: String,
}

/// The exact bytes signed: the domain separator, then the node and NUL, then the
/// checkpoint's seq and the covered seq range (three 8-byte big-endian integers), the
/// last covered tag (64 ASCII hex digits), the previous checkpoint's digest and this one
/// (32 bytes each), the HMAC key id and the signing key id (16 ASCII hex digits each).
pub fn signed_message(claim: &CheckpointClaim) -> Vec<u8> {
    let mut message = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + claim.node.len() + 1 + 16 + 64 + 64 + 16);
    message.extend_from_slice(CHECKPOINT_DOMAIN);
    message.extend_from_slice(claim.node.as_bytes());
    message.push(0);
    message.extend_from_slice(&claim.seq.to_be_bytes());
    message.extend_from_slice(&claim.first_seq.to_be_bytes());
    message.extend_from_slice(&claim.last_seq.to_be_bytes());
    message.extend_from_slice(claim.last_tag.as_bytes());
    message.extend_from_slice(&claim.prev_digest);
    message.extend_from_slice(&claim.digest);
    message.extend_from_slice(claim.hmac_key_id.as_bytes());
    message.extend_from_slice(claim.signing_key_id.as_bytes());
    message
}

/// The body of a checkpoint record (sealed by the writer).
pub(crate) fn checkpoint_body(claim: &CheckpointClaim, key: &CheckpointSigningKey) -> serde_json::Map<String, serde_json::Value> {
    let signature = key.sign(&signed_message(claim));
    let mut body = serde_json::Map::new();
    body.insert("type".to_string(), CHECKPOINT_TYPE.into());
    body.insert("node".to_string(), claim.node.clone().into());
    body.insert("covered_first_seq".to_string(), claim.first_seq.into());
    body.insert("covered_last_seq".to_string(), claim.last_seq.into());
    body.insert("covered_last_tag".to_string(), claim.last_tag.clone().into());
    body.insert("prev_checkpoint_sha256".to_string(), hex::encode(claim.prev_digest).into());
    body.insert("covered_sha256".to_string(), hex::encode(claim.digest).into());
    body.insert("signing_key_id".to_string(), claim.signing_key_id.clone().into());
    body.insert("signature".to_string(), hex::encode(signature).into());
    body
}

#[derive(serde::Deserialize)]
struct CheckpointFields {
    #[serde(default)]
    node: Option<String>,
    seq: u64,
    key_id: String,
    covered_first_seq: u64,
    covered_last_seq: u64,
    covered_last_tag: String,
    prev_checkpoint_sha256: String,
    covered_sha256: String,
    signing_key_id: String,
    signature: String,
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// The running digest of the records since the last checkpoint (the writer's side).
#[derive(Debug, Clone)]
pub(crate) struct Window {
    pub first_seq: u64,
    pub records: u32,
    pub since: std::time::Instant,
    hasher: Sha256,
}

impl Window {
    pub fn new(prev_digest: &[u8; 32], first_seq: u64) -> Window {
        let mut hasher = Sha256::new();
        hasher.update(prev_digest);
        Window { first_seq, records: 0, since: std::time::Instant::now(), hasher }
    }

    /// Adds one sealed line, with its newline.
    pub fn add(&mut self, line: &[u8]) {
        self.hasher.update(line);
        self.records += 1;
    }

    /// The newline of a line added without it (counted once, with its line).
    pub fn add_newline(&mut self) {
        self.hasher.update(b"\n");
    }

    pub fn digest(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }
}

/// Why a line was not verified by a checkpoint (the quarantine's `reason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowReason {
    /// Not a log record (no JSON object, no `hmac` last, no `seq`).
    NotARecord(String),
    /// No valid checkpoint covers the line (forged, inserted, or its checkpoint was bad).
    Unsigned,
    /// A checkpoint whose `signing_key_id` is not one of the public keys.
    UnknownSigningKey(String),
    /// A checkpoint whose signature does not verify (or that is not well formed).
    BadCheckpointSignature,
    /// A signed checkpoint of another node.
    NodeMismatch(String),
    /// A signed checkpoint whose own place does not match what it claims (its seq is not
    /// the last covered + 1, or its `prev_tag` is not the last covered tag).
    CheckpointMismatch,
    /// A signed checkpoint that does not cover records after the last one accepted.
    StaleCheckpoint,
    /// A covered record is not in the log (deleted, or its seq or tag altered).
    MissingLines,
    /// Two different lines claim the same seq and tag.
    AmbiguousLines,
    /// The covered lines' bytes do not hash to the signed digest (altered).
    DigestMismatch,
    /// The covered lines are not where the writer put them (a header not first in its
    /// file, a file renamed or moved).
    HeaderMismatch(String),
}

impl WindowReason {
    pub fn label(&self) -> &'static str {
        match self {
            WindowReason::NotARecord(_) => "not_a_record",
            WindowReason::Unsigned => "unsigned",
            WindowReason::UnknownSigningKey(_) => "unknown_signing_key",
            WindowReason::BadCheckpointSignature => "bad_checkpoint_signature",
            WindowReason::NodeMismatch(_) => "node_mismatch",
            WindowReason::CheckpointMismatch => "checkpoint_mismatch",
            WindowReason::StaleCheckpoint => "stale_checkpoint",
            WindowReason::MissingLines => "missing_lines",
            WindowReason::AmbiguousLines => "ambiguous_lines",
            WindowReason::DigestMismatch => "digest_mismatch",
            WindowReason::HeaderMismatch(_) => "header_mismatch",
        }
    }
}

impl std::fmt::Display for WindowReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WindowReason::NotARecord(detail) => write!(f, "not a log record: {detail}"),
            WindowReason::Unsigned => write!(f, "no valid signed checkpoint covers this line (forged or inserted)"),
            WindowReason::UnknownSigningKey(id) => write!(f, "checkpoint signed with unknown key id {id}"),
            WindowReason::BadCheckpointSignature => write!(f, "checkpoint signature does not verify under the public key"),
            WindowReason::NodeMismatch(node) => write!(f, "checkpoint of node `{node}`"),
            WindowReason::CheckpointMismatch => write!(f, "checkpoint is not right after the last record it covers"),
            WindowReason::StaleCheckpoint => write!(f, "checkpoint covers records at or before the last verified checkpoint (replayed)"),
            WindowReason::MissingLines => write!(f, "a record the signed checkpoint covers is missing (deleted or altered)"),
            WindowReason::AmbiguousLines => write!(f, "two different lines claim the same seq and tag"),
            WindowReason::DigestMismatch => write!(f, "the covered lines do not match the signed checkpoint's digest (altered)"),
            WindowReason::HeaderMismatch(detail) => write!(f, "covered records out of place: {detail}"),
        }
    }
}

/// The last accepted checkpoint: where a [`WindowVerifier`] resumes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointAnchor {
    /// The file that holds the checkpoint line.
    pub file_index: u64,
    /// The checkpoint record's own seq.
    pub seq: u64,
    /// Its `covered_sha256`, hex.
    pub digest: String,
    /// Its `hmac`: the next record's `prev_tag`.
    pub tag: String,
}

/// A line the verifier decided on.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided<T> {
    pub token: T,
    pub file_index: u64,
    pub line: String,
    pub verdict: Result<Covered, WindowReason>,
}

/// A record a valid checkpoint covers (or the accepted checkpoint itself).
#[derive(Debug, Clone, PartialEq)]
pub struct Covered {
    pub seq: u64,
    pub head: RecordHead,
    pub is_header: bool,
    pub is_checkpoint: bool,
}

/// What an accepted checkpoint skipped: records `from..=to` after the previous accepted
/// checkpoint that no accepted checkpoint covers (lost, or the writer started a new
/// anchor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub from: u64,
    pub to: u64,
}

/// What one line did to the verifier.
#[derive(Debug, Clone, PartialEq)]
pub struct Pushed<T> {
    /// Lines decided now: rejected ones, then (after an accepted checkpoint) the covered
    /// records in seq order, then the checkpoint.
    pub decided: Vec<Decided<T>>,
    /// The accepted checkpoint does not continue the previous one.
    pub gap: Option<Gap>,
}

struct Pending<T> {
    token: T,
    file_index: u64,
    line: String,
    seq: u64,
    prev_tag: String,
    tag: String,
    /// A refused checkpoint claimed this line: the reason, if it is never covered.
    refused: Option<WindowReason>,
}

/// Verifies lines with the public key only: each line waits until a checkpoint covers it.
///
/// Invariant: a line is accepted only when a checkpoint whose signature verifies under a
/// public key covers it (its seq, its tag, and its exact bytes through the digest), and
/// the checkpoint covers records after the last accepted one. A rejected line or
/// checkpoint moves nothing.
pub struct WindowVerifier<T> {
    keys: Vec<CheckpointPublicKey>,
    node: String,
    anchor: Option<CheckpointAnchor>,
    pending: VecDeque<Pending<T>>,
    pending_bytes: usize,
    max_pending_lines: usize,
    max_pending_bytes: usize,
}

impl<T> std::fmt::Debug for WindowVerifier<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowVerifier").field("node", &self.node).field("anchor", &self.anchor).field("pending", &self.pending.len()).finish_non_exhaustive()
    }
}

impl<T: Clone> WindowVerifier<T> {
    /// A verifier for `node`'s records, resuming after `anchor` (`None`: the first valid
    /// checkpoint is the start). At most `max_pending_lines` / `max_pending_bytes` wait
    /// for their checkpoint; beyond, the oldest is rejected as unsigned.
    pub fn new(
        keys: Vec<CheckpointPublicKey>,
        node: String,
        anchor: Option<CheckpointAnchor>,
        max_pending_lines: usize,
        max_pending_bytes: usize,
    ) -> WindowVerifier<T> {
        WindowVerifier { keys, node, anchor, pending: VecDeque::new(), pending_bytes: 0, max_pending_lines: max_pending_lines.max(1), max_pending_bytes }
    }

    pub fn anchor(&self) -> Option<&CheckpointAnchor> {
        self.anchor.as_ref()
    }

    /// The oldest line still waiting for its checkpoint.
    pub fn oldest_pending(&self) -> Option<&T> {
        self.pending.front().map(|pending| &pending.token)
    }

    pub fn pending_lines(&self) -> usize {
        self.pending.len()
    }

    /// Rejects every waiting line (end of a file set being verified).
    pub fn take_pending(&mut self) -> Vec<Decided<T>> {
        self.pending_bytes = 0;
        self.pending.drain(..).map(|pending| reject(pending, WindowReason::Unsigned)).collect()
    }

    /// Offers the next line (without its newline), read from file `file_index`.
    pub fn push(&mut self, file_index: u64, token: T, line: &str) -> Pushed<T> {
        let mut pushed = Pushed { decided: Vec::new(), gap: None };
        let parsed = match parse_line(line) {
            Ok(parsed) => parsed,
            Err(reason) => {
                pushed.decided.push(Decided { token, file_index, line: line.to_string(), verdict: Err(reason) });
                return pushed;
            }
        };
        if parsed.head.kind.as_deref() == Some(CHECKPOINT_TYPE) {
            self.checkpoint(file_index, token, line, parsed, &mut pushed);
            return pushed;
        }
        self.pending_bytes += line.len();
        self.pending.push_back(Pending {
            token,
            file_index,
            line: line.to_string(),
            seq: parsed.seq,
            prev_tag: parsed.prev_tag,
            tag: parsed.tag,
            refused: None,
        });
        while self.pending.len() > self.max_pending_lines || (self.pending_bytes > self.max_pending_bytes && self.pending.len() > 1) {
            let oldest = self.pending.pop_front().expect("not empty");
            self.pending_bytes -= oldest.line.len();
            let reason = oldest.refused.clone().unwrap_or(WindowReason::Unsigned);
            pushed.decided.push(reject(oldest, reason));
        }
        pushed
    }

    fn checkpoint(&mut self, file_index: u64, token: T, line: &str, parsed: ParsedLine, pushed: &mut Pushed<T>) {
        let refuse = |reason: WindowReason| Decided { token: token.clone(), file_index, line: line.to_string(), verdict: Err(reason) };
        let claim = match claim_of(line) {
            Some(claim) => claim,
            None => return pushed.decided.push(refuse(WindowReason::BadCheckpointSignature)),
        };
        let Some(key) = self.keys.iter().find(|key| key.id() == claim.0.signing_key_id) else {
            return pushed.decided.push(refuse(WindowReason::UnknownSigningKey(claim.0.signing_key_id.chars().take(64).collect())));
        };
        let (claim, signature) = claim;
        if !key.verify(&signed_message(&claim), &signature) {
            // Not the log task's: whatever it claims, the lines it names wait for a real one.
            for pending in self.pending.iter_mut().filter(|pending| (claim.first_seq..=claim.last_seq).contains(&pending.seq)) {
                pending.refused.get_or_insert(WindowReason::BadCheckpointSignature);
            }
            return pushed.decided.push(refuse(WindowReason::BadCheckpointSignature));
        }
        // Authentic from here: what it covers is decided now, one way or the other.
        let verdict = self.select(file_index, &parsed, &claim);
        let selected = match verdict {
            Ok(selected) => selected,
            Err(reason) => {
                // A checkpoint of another node says nothing about this node's lines; any
                // other refusal decides the lines in its range (a stale one: they are old
                // records copied in, as real new records are above the anchor).
                if !matches!(reason, WindowReason::NodeMismatch(_)) {
                    let (claimed, kept): (VecDeque<_>, VecDeque<_>) =
                        std::mem::take(&mut self.pending).into_iter().partition(|pending| (claim.first_seq..=claim.last_seq).contains(&pending.seq));
                    self.pending = kept;
                    self.pending_bytes = self.pending.iter().map(|pending| pending.line.len()).sum();
                    pushed.decided.extend(claimed.into_iter().map(|pending| reject(pending, reason.clone())));
                }
                return pushed.decided.push(refuse(reason));
            }
        };
        let continuous =
            self.anchor.as_ref().is_some_and(|anchor| claim.first_seq == anchor.seq.saturating_add(1) && hex::encode(claim.prev_digest) == anchor.digest);
        if let Some(anchor) = &self.anchor {
            if !continuous {
                pushed.gap = Some(Gap { from: anchor.seq.saturating_add(1), to: claim.first_seq.saturating_sub(1) });
            }
        }
        let mut chosen = vec![false; self.pending.len()];
        for index in &selected {
            chosen[*index] = true;
        }
        let pending: Vec<Pending<T>> = std::mem::take(&mut self.pending).into_iter().collect();
        self.pending_bytes = 0;
        let mut covered = Vec::with_capacity(selected.len());
        for (index, pending) in pending.into_iter().enumerate() {
            if chosen[index] {
                covered.push(pending);
            } else {
                let reason = pending.refused.clone().unwrap_or(WindowReason::Unsigned);
                pushed.decided.push(reject(pending, reason));
            }
        }
        covered.sort_by_key(|pending| pending.seq);
        for pending in covered {
            let head: RecordHead = serde_json::from_str(&pending.line).unwrap_or_default();
            let is_header = head.kind.as_deref() == Some("header");
            pushed.decided.push(Decided {
                token: pending.token,
                file_index: pending.file_index,
                line: pending.line,
                verdict: Ok(Covered { seq: pending.seq, head, is_header, is_checkpoint: false }),
            });
        }
        self.anchor = Some(CheckpointAnchor { file_index, seq: parsed.seq, digest: hex::encode(claim.digest), tag: parsed.tag });
        pushed.decided.push(Decided {
            token,
            file_index,
            line: line.to_string(),
            verdict: Ok(Covered { seq: parsed.seq, head: parsed.head, is_header: false, is_checkpoint: true }),
        });
    }

    /// The pending lines (indices) a signed checkpoint covers, checked.
    fn select(&self, file_index: u64, checkpoint: &ParsedLine, claim: &CheckpointClaim) -> Result<Vec<usize>, WindowReason> {
        if claim.node != self.node {
            return Err(WindowReason::NodeMismatch(claim.node.chars().take(64).collect()));
        }
        if claim.first_seq > claim.last_seq || checkpoint.seq != claim.last_seq.saturating_add(1) || checkpoint.prev_tag != claim.last_tag {
            return Err(WindowReason::CheckpointMismatch);
        }
        if let Some(anchor) = &self.anchor {
            if claim.first_seq <= anchor.seq {
                return Err(WindowReason::StaleCheckpoint);
            }
        }
        // Walk back from the last covered record along the tags. Lines inserted with the
        // same seq and tag as a real one (a copy with its body changed) make a fork: each
        // way is tried (boundedly), and the digest decides.
        let mut search = Search::new(&self.pending, claim);
        let selected = match search.walk(claim.last_seq, claim.last_tag.clone()) {
            Some(mut path) => {
                path.reverse();
                path
            }
            None if search.tried >= MAX_FORKS_TRIED => return Err(WindowReason::AmbiguousLines),
            None if search.complete > 0 => return Err(WindowReason::DigestMismatch),
            None => return Err(WindowReason::MissingLines),
        };
        if let Some(anchor) = self.anchor.as_ref().filter(|anchor| claim.first_seq == anchor.seq + 1) {
            // The first covered record follows the accepted checkpoint line itself.
            if self.pending[selected[0]].prev_tag != anchor.tag {
                return Err(WindowReason::CheckpointMismatch);
            }
        }
        // The bytes are the writer's; now their places: a header opens each file, named
        // by its own index, and nothing else does.
        let mut previous_file = self.anchor.as_ref().filter(|anchor| claim.first_seq == anchor.seq + 1).map(|anchor| anchor.file_index);
        for index in &selected {
            let pending = &self.pending[*index];
            let head: RecordHead = serde_json::from_str(&pending.line).unwrap_or_default();
            let is_header = head.kind.as_deref() == Some("header");
            if is_header {
                if head.file_index != Some(pending.file_index) || head.node.as_deref() != Some(self.node.as_str()) {
                    return Err(WindowReason::HeaderMismatch(format!(
                        "seq {} is the header of another file or node than file index {}",
                        pending.seq, pending.file_index
                    )));
                }
                if previous_file.is_some_and(|previous| pending.file_index <= previous) {
                    return Err(WindowReason::HeaderMismatch(format!("a header (seq {}) in the middle of file index {}", pending.seq, pending.file_index)));
                }
            } else if previous_file.is_some_and(|previous| previous != pending.file_index) {
                return Err(WindowReason::HeaderMismatch(format!("seq {} starts file index {} without a header", pending.seq, pending.file_index)));
            }
            previous_file = Some(pending.file_index);
        }
        if previous_file.is_some_and(|previous| previous != file_index) {
            return Err(WindowReason::HeaderMismatch(format!("the checkpoint (seq {}) is not in the file of the records it covers", checkpoint.seq)));
        }
        Ok(selected)
    }
}

/// At most this many complete ways through forks are hashed for one checkpoint.
const MAX_FORKS_TRIED: u32 = 64;

/// The walk back from a checkpoint's last covered record to its first.
struct Search<'a, T> {
    pending: &'a VecDeque<Pending<T>>,
    claim: &'a CheckpointClaim,
    /// Pending lines by seq, for the covered range.
    by_seq: std::collections::HashMap<u64, Vec<usize>>,
    /// Indices chosen so far, last covered first.
    path: Vec<usize>,
    /// Ways tried at forks and complete ways hashed.
    tried: u32,
    complete: u32,
}

impl<'a, T> Search<'a, T> {
    fn new(pending: &'a VecDeque<Pending<T>>, claim: &'a CheckpointClaim) -> Search<'a, T> {
        let mut by_seq: std::collections::HashMap<u64, Vec<usize>> = std::collections::HashMap::new();
        for (index, line) in pending.iter().enumerate() {
            if (claim.first_seq..=claim.last_seq).contains(&line.seq) {
                by_seq.entry(line.seq).or_default().push(index);
            }
        }
        Search { pending, claim, by_seq, path: Vec::new(), tried: 0, complete: 0 }
    }

    /// Lines with this seq and tag, each distinct line once (a line copied twice: the
    /// earlier copy is the record).
    fn candidates(&self, seq: u64, tag: &str) -> Vec<usize> {
        let mut candidates: Vec<usize> = Vec::new();
        for index in self.by_seq.get(&seq).map(Vec::as_slice).unwrap_or_default() {
            let line = &self.pending[*index];
            if line.tag == tag && !candidates.iter().any(|other| self.pending[*other].line == line.line) {
                candidates.push(*index);
            }
        }
        candidates
    }

    fn digest_matches(&mut self) -> bool {
        self.complete += 1;
        let mut hasher = Sha256::new();
        hasher.update(self.claim.prev_digest);
        for chosen in self.path.iter().rev() {
            hasher.update(self.pending[*chosen].line.as_bytes());
            hasher.update(b"\n");
        }
        <[u8; 32]>::from(hasher.finalize()) == self.claim.digest
    }

    /// The lines for `seq` down to the first covered (last first), if some choice hashes
    /// to the digest. Iterative along single candidates; recursive only at forks, whose
    /// ways are bounded by [`MAX_FORKS_TRIED`].
    fn walk(&mut self, mut seq: u64, mut tag: String) -> Option<Vec<usize>> {
        let depth = self.path.len();
        loop {
            let candidates = self.candidates(seq, &tag);
            if candidates.len() == 1 {
                self.path.push(candidates[0]);
                if seq == self.claim.first_seq {
                    if self.digest_matches() {
                        return Some(self.path.clone());
                    }
                    break;
                }
                tag = self.pending[candidates[0]].prev_tag.clone();
                seq -= 1;
                continue;
            }
            for index in candidates {
                if self.tried >= MAX_FORKS_TRIED {
                    break;
                }
                self.tried += 1;
                self.path.push(index);
                if seq == self.claim.first_seq {
                    if self.digest_matches() {
                        return Some(self.path.clone());
                    }
                } else if let Some(found) = self.walk(seq - 1, self.pending[index].prev_tag.clone()) {
                    return Some(found);
                }
                self.path.pop();
            }
            break;
        }
        self.path.truncate(depth);
        None
    }
}

fn reject<T>(pending: Pending<T>, reason: WindowReason) -> Decided<T> {
    Decided { token: pending.token, file_index: pending.file_index, line: pending.line, verdict: Err(reason) }
}

struct ParsedLine {
    head: RecordHead,
    seq: u64,
    prev_tag: String,
    tag: String,
}

/// The fields the window needs: seq, prev_tag and the tag (the `hmac`, last).
fn parse_line(line: &str) -> Result<ParsedLine, WindowReason> {
    if !line.trim_start().starts_with('{') {
        return Err(WindowReason::NotARecord("not a JSON object".to_string()));
    }
    let head: RecordHead = serde_json::from_str(line).map_err(|error| WindowReason::NotARecord(error.to_string()))?;
    let at = line.rfind(HMAC_FIELD).ok_or_else(|| WindowReason::NotARecord("no hmac field".to_string()))?;
    let tag = &line[at + HMAC_FIELD.len()..];
    if tag.len() != 66 || !tag.ends_with("\"}") {
        return Err(WindowReason::NotARecord("hmac is not the last field".to_string()));
    }
    let seq = head.seq.ok_or_else(|| WindowReason::NotARecord("no seq".to_string()))?;
    let prev_tag = head.prev_tag.clone().unwrap_or_default();
    Ok(ParsedLine { head, seq, prev_tag, tag: tag[..64].to_string() })
}

/// A checkpoint line's claim and signature, if well formed.
fn claim_of(line: &str) -> Option<(CheckpointClaim, [u8; 64])> {
    let fields: CheckpointFields = serde_json::from_str(line).ok()?;
    let mut signature = [0u8; 64];
    hex::decode_to_slice(&fields.signature, &mut signature).ok()?;
    if fields.covered_last_tag.len() != 64 || fields.signing_key_id.len() != 16 {
        return None;
    }
    let claim = CheckpointClaim {
        node: fields.node?,
        seq: fields.seq,
        hmac_key_id: fields.key_id,
        first_seq: fields.covered_first_seq,
        last_seq: fields.covered_last_seq,
        last_tag: fields.covered_last_tag,
        prev_digest: hex32(&fields.prev_checkpoint_sha256)?,
        digest: hex32(&fields.covered_sha256)?,
        signing_key_id: fields.signing_key_id,
    };
    Some((claim, signature))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn signing_keys_are_created_0600_loaded_and_give_their_public_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log-signing.key");
        let created = CheckpointSigningKey::create(&path).expect("create");
        assert_eq!(std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o600);
        let loaded = CheckpointSigningKey::load(&path).expect("load");
        assert_eq!(loaded.id(), created.id());
        assert_eq!(loaded.public_key(), created.public_key());
        assert_eq!(CheckpointPublicKey::from_base64(&created.public_key().to_base64()).expect("parse"), created.public_key());
        assert!(CheckpointSigningKey::create(&path).is_err(), "never overwrites");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(matches!(CheckpointSigningKey::load(&path), Err(SigningKeyError::File(SecretFileError::Mode { .. }))));
        assert!(format!("{created:?}").starts_with("CheckpointSigningKey { id:"), "Debug shows the id only");
    }

    #[test]
    fn the_signed_message_is_domain_separated_and_covers_every_field() {
        let claim = CheckpointClaim {
            node: "n".to_string(),
            seq: 3,
            hmac_key_id: "c".repeat(16),
            first_seq: 1,
            last_seq: 2,
            last_tag: "a".repeat(64),
            prev_digest: [1; 32],
            digest: [2; 32],
            signing_key_id: "b".repeat(16),
        };
        let message = signed_message(&claim);
        assert!(message.starts_with(b"mld-log-checkpoint-v1\0n\0"));
        let key = CheckpointSigningKey::from_seed([5; 32]);
        let signature = key.sign(&message);
        assert!(key.public_key().verify(&message, &signature));
        for changed in [
            CheckpointClaim { node: "m".to_string(), ..claim.clone() },
            CheckpointClaim { first_seq: 0, ..claim.clone() },
            CheckpointClaim { seq: 4, ..claim.clone() },
            CheckpointClaim { hmac_key_id: "d".repeat(16), ..claim.clone() },
            CheckpointClaim { last_seq: 3, ..claim.clone() },
            CheckpointClaim { digest: [3; 32], ..claim.clone() },
            CheckpointClaim { prev_digest: [0; 32], ..claim.clone() },
        ] {
            assert!(!key.public_key().verify(&signed_message(&changed), &signature), "{changed:?}");
        }
    }
}
