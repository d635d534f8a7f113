//! What the ingest task remembers across restarts: the checkpoint (where reading and the
//! chain stand) and the nonce store (which sequence numbers were already accepted), kept
//! in one file that is replaced atomically, so the two never disagree after a crash.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use mld_eventlog::CheckpointAnchor;
use serde::{Deserialize, Serialize};

use crate::IngestError;

/// The state file's name in the ingest state directory.
pub const STATE_FILE: &str = "state.json";
/// 2: verification by signed checkpoints (ADR 0007). A version 1 state (HMAC-verified
/// chain position) is not carried over: the log is verified again from its first file.
const STATE_VERSION: u32 = 2;

/// Where ingest stands in a node's log.
///
/// Invariant: every line before (`read_file_index`, `offset`) has been either delivered
/// or quarantined, and nothing after it has been delivered: lines still waiting for
/// their signed checkpoint are read again after a restart (the position is the oldest
/// of them). The anchor is the last accepted log checkpoint record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub node: String,
    /// The file being read and the byte offset of the next line to read in it.
    pub read_file_index: u64,
    pub offset: u64,
    /// The last log checkpoint record accepted (`None` before the first).
    pub anchor: Option<CheckpointAnchor>,
    /// Its seq: every record up to it has been delivered or quarantined.
    pub last_seq: Option<u64>,
}

/// Why the nonce store refused a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceRejection {
    /// Accepted before and still in the recent set: a duplicate or replayed line.
    Replay { seq: u64 },
    /// At or below the high-water mark, older than the recent set: a replay of an old
    /// record or a reordering.
    Stale { seq: u64, high_water: u64 },
}

/// Replay protection per node: the highest accepted seq (high-water mark) and the most
/// recent accepted seqs (a bounded set, oldest evicted first), plus the newest event time
/// accepted, for the age window.
///
/// Invariant: a seq is accepted at most once per node, and only above the high-water mark,
/// so what is delivered is strictly increasing per node, also across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonceStore {
    nodes: BTreeMap<String, NodeNonces>,
    /// At most this many recent seqs are kept per node.
    recent_capacity: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeNonces {
    high_water: u64,
    recent: VecDeque<u64>,
    newest_ts_us: Option<u64>,
}

impl NonceStore {
    pub fn new(recent_capacity: usize) -> NonceStore {
        NonceStore { nodes: BTreeMap::new(), recent_capacity }
    }

    /// Refuses a seq that is not above the node's high-water mark. Changes nothing.
    pub fn check(&self, node: &str, seq: u64) -> Result<(), NonceRejection> {
        let Some(nonces) = self.nodes.get(node) else {
            return Ok(());
        };
        if seq > nonces.high_water {
            return Ok(());
        }
        // Only refused seqs are looked up, so a linear scan of the bounded set is fine.
        if nonces.recent.contains(&seq) {
            Err(NonceRejection::Replay { seq })
        } else {
            Err(NonceRejection::Stale { seq, high_water: nonces.high_water })
        }
    }

    /// Records an accepted seq (which [`NonceStore::check`] allowed) and its event time.
    pub fn accept(&mut self, node: &str, seq: u64, ts_us: Option<u64>) {
        let nonces = self.nodes.entry(node.to_string()).or_default();
        nonces.high_water = nonces.high_water.max(seq);
        nonces.recent.push_back(seq);
        while nonces.recent.len() > self.recent_capacity {
            nonces.recent.pop_front();
        }
        if let Some(ts_us) = ts_us {
            nonces.newest_ts_us = Some(nonces.newest_ts_us.map_or(ts_us, |newest| newest.max(ts_us)));
        }
    }

    /// The highest accepted seq of `node`.
    pub fn high_water(&self, node: &str) -> Option<u64> {
        self.nodes.get(node).map(|nonces| nonces.high_water)
    }

    /// The newest event time (`ts_us`) accepted from `node`.
    pub fn newest_ts_us(&self, node: &str) -> Option<u64> {
        self.nodes.get(node).and_then(|nonces| nonces.newest_ts_us)
    }

    /// Applies a (possibly changed) capacity, evicting the oldest seqs beyond it.
    pub(crate) fn set_capacity(&mut self, recent_capacity: usize) {
        self.recent_capacity = recent_capacity;
        for nonces in self.nodes.values_mut() {
            while nonces.recent.len() > recent_capacity {
                nonces.recent.pop_front();
            }
        }
    }
}

/// Everything in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct State {
    pub version: u32,
    pub checkpoint: Option<Checkpoint>,
    pub nonces: NonceStore,
}

impl State {
    pub fn new(recent_capacity: usize) -> State {
        State { version: STATE_VERSION, checkpoint: None, nonces: NonceStore::new(recent_capacity) }
    }

    /// Reads the state file; `None` if there is none yet (a first start).
    pub fn load(path: &Path) -> Result<Option<State>, IngestError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(IngestError::Io { operation: "read state file", path: path.to_path_buf(), source }),
        };
        if serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|value| value["version"] == 1) {
            // Written before checkpoints (HMAC chain position): start again from the first
            // file, as after `Ingest::forget_state`.
            return Ok(None);
        }
        let state: State = serde_json::from_str(&text).map_err(|error| IngestError::State { path: path.to_path_buf(), detail: error.to_string() })?;
        if state.version != STATE_VERSION {
            return Err(IngestError::State { path: path.to_path_buf(), detail: format!("version {} (this build reads {STATE_VERSION})", state.version) });
        }
        Ok(Some(state))
    }

    /// Replaces the state file atomically: a temporary file, fsynced, renamed over it,
    /// then the directory fsynced. A crash leaves the old state or the new, never a mix.
    pub fn save(&self, path: &Path) -> Result<(), IngestError> {
        let text = serde_json::to_vec(self).map_err(|error| IngestError::State { path: path.to_path_buf(), detail: error.to_string() })?;
        write_atomically(path, &text)
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, with the fsyncs that
/// make the new content and the directory entry durable.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), IngestError> {
    let io = |operation, path: &Path, source| IngestError::Io { operation, path: path.to_path_buf(), source };
    let temporary = temporary_path(path);
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&temporary).map_err(|error| io("create", &temporary, error))?;
    file.write_all(bytes).map_err(|error| io("write", &temporary, error))?;
    file.sync_all().map_err(|error| io("fsync", &temporary, error))?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(|error| io("rename into place", path, error))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(|error| io("fsync directory", dir, error))
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|name| name.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nonce_store_refuses_replays_and_old_seqs_and_stays_bounded() {
        let mut store = NonceStore::new(3);
        for seq in 1..=5 {
            assert_eq!(store.check("a", seq), Ok(()));
            store.accept("a", seq, Some(seq * 10));
        }
        assert_eq!(store.check("a", 5), Err(NonceRejection::Replay { seq: 5 }));
        assert_eq!(store.check("a", 3), Err(NonceRejection::Replay { seq: 3 }));
        assert_eq!(store.check("a", 2), Err(NonceRejection::Stale { seq: 2, high_water: 5 }), "evicted from the recent set, still below the mark");
        assert_eq!(store.check("a", 6), Ok(()));
        assert_eq!(store.check("b", 1), Ok(()), "per node");
        assert_eq!(store.newest_ts_us("a"), Some(50));
    }

    #[test]
    fn state_survives_a_save_and_load_and_a_leftover_temporary_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(STATE_FILE);
        assert_eq!(State::load(&path).expect("load"), None);
        let mut state = State::new(8);
        state.nonces.accept("a", 7, None);
        let anchor = CheckpointAnchor { file_index: 2, seq: 7, digest: "cd".to_string(), tag: "ab".to_string() };
        state.checkpoint = Some(Checkpoint { node: "a".to_string(), read_file_index: 2, offset: 99, anchor: Some(anchor), last_seq: Some(7) });
        std::fs::write(temporary_path(&path), b"{half a write").expect("write");
        state.save(&path).expect("save");
        assert_eq!(State::load(&path).expect("load"), Some(state));
        std::fs::write(&path, b"{not json").expect("write");
        assert!(matches!(State::load(&path), Err(IngestError::State { .. })));
    }
}
