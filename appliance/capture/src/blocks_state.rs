//! The blocks in force, kept in a file so that a reboot (which empties bpffs and so the
//! pinned deny map) does not forget them: each with its expiry in wall-clock time, so
//! the time left survives the reboot's reset of CLOCK_BOOTTIME.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mld_types::IpPrefix;
use serde::{Deserialize, Serialize};

use crate::error::CaptureError;
use crate::maps::DenyEntry;
use mld_types::DenyReason;

/// The file's name in `capture.state-dir`.
pub const BLOCKS_FILE: &str = "blocks.json";
const FORMAT: u32 = 1;
/// A file larger than this is refused rather than read (the deny map holds 262,144
/// entries, about 100 bytes each in this file).
const MAX_FILE_BYTES: u64 = 64 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct SavedBlocks {
    format: u32,
    saved_unix_ms: u64,
    blocks: Vec<SavedBlock>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedBlock {
    prefix: String,
    reason: String,
    /// `None`: permanent.
    expires_unix_ms: Option<u64>,
}

/// A block read back: what to put in the deny map again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedEntry {
    pub prefix: IpPrefix,
    pub reason: DenyReason,
    /// Time left; `None`: permanent.
    pub ttl: Option<Duration>,
}

/// Writes the blocks in force to `dir/blocks.json` atomically (temporary file, fsync,
/// rename, fsync of the directory). `boot_to_realtime_ns` turns the deny map's
/// CLOCK_BOOTTIME expiries into wall-clock time.
pub fn save_blocks(dir: &Path, entries: &[DenyEntry], boot_to_realtime_ns: u64, now_unix_ms: u64) -> Result<PathBuf, CaptureError> {
    let blocks = entries
        .iter()
        .map(|entry| SavedBlock {
            prefix: entry.prefix.to_string(),
            reason: entry.reason.as_str().to_string(),
            expires_unix_ms: entry.expires_boot_ns.map(|expires| expires.saturating_add(boot_to_realtime_ns) / 1_000_000),
        })
        .collect();
    let saved = SavedBlocks { format: FORMAT, saved_unix_ms: now_unix_ms, blocks };
    let text = serde_json::to_vec(&saved).map_err(|error| CaptureError::io("encode", dir.join(BLOCKS_FILE), std::io::Error::other(error)))?;
    std::fs::create_dir_all(dir).map_err(|error| CaptureError::io("create directory", dir, error))?;
    let path = dir.join(BLOCKS_FILE);
    let temporary = dir.join(format!(".{BLOCKS_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).custom_flags(nix::libc::O_NOFOLLOW).open(&temporary)?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|error| CaptureError::io("write", &path, error))?;
    Ok(path)
}

/// Reads `dir/blocks.json`: the blocks with time left at `now_unix_ms` (expired ones are
/// left out). No file: nothing. A damaged file is an error naming it.
pub fn load_blocks(dir: &Path, now_unix_ms: u64) -> Result<Vec<SavedEntry>, CaptureError> {
    let path = dir.join(BLOCKS_FILE);
    let metadata = match std::fs::symlink_metadata(&path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(CaptureError::io("read", &path, error)),
    };
    if !metadata.is_file() || metadata.len() > MAX_FILE_BYTES {
        return Err(CaptureError::io("read", &path, std::io::Error::other(format!("not a regular file of at most {MAX_FILE_BYTES} bytes"))));
    }
    let text = std::fs::read(&path).map_err(|error| CaptureError::io("read", &path, error))?;
    let saved: SavedBlocks = serde_json::from_slice(&text).map_err(|error| CaptureError::io("parse", &path, std::io::Error::other(error)))?;
    if saved.format != FORMAT {
        return Err(CaptureError::io("read", &path, std::io::Error::other(format!("format {} (this version reads {FORMAT})", saved.format))));
    }
    let mut entries = Vec::new();
    for block in saved.blocks {
        let Ok(prefix) = block.prefix.parse::<IpPrefix>() else { continue };
        let reason = DenyReason::parse(&block.reason).unwrap_or(DenyReason::Other);
        let ttl = match block.expires_unix_ms {
            None => None,
            Some(expires) if expires > now_unix_ms => Some(Duration::from_millis(expires - now_unix_ms)),
            Some(_) => continue,
        };
        entries.push(SavedEntry { prefix, reason, ttl });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_come_back_with_the_wall_clock_time_they_had_left() {
        let dir = tempfile::tempdir().expect("temp dir");
        let offset_ns = 1_700_000_000_000_000_000; // boot time 0 = this Unix time
        let entries = [
            DenyEntry { prefix: "10.66.1.66/32".parse().expect("prefix"), reason: DenyReason::Scan, expires_boot_ns: Some(600_000_000_000) },
            DenyEntry { prefix: "2001:db8::/48".parse().expect("prefix"), reason: DenyReason::Manual, expires_boot_ns: None },
            DenyEntry { prefix: "10.66.1.67/32".parse().expect("prefix"), reason: DenyReason::Flood, expires_boot_ns: Some(60_000_000_000) },
        ];
        save_blocks(dir.path(), &entries, offset_ns, 1_700_000_000_000).expect("save");
        // 100 s later (as after a reboot): the scan block has 500 s left, the flood one is gone.
        let restored = load_blocks(dir.path(), 1_700_000_000_000 + 100_000).expect("load");
        assert_eq!(restored.len(), 2, "{restored:?}");
        assert_eq!(restored[0].ttl, Some(Duration::from_secs(500)));
        assert_eq!(restored[0].reason, DenyReason::Scan);
        assert_eq!(restored[1].ttl, None, "a permanent block stays permanent");
    }

    #[test]
    fn no_file_is_no_blocks_and_a_damaged_one_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(load_blocks(dir.path(), 0).expect("no file").is_empty());
        std::fs::write(dir.path().join(BLOCKS_FILE), b"{not json").expect("write");
        let error = load_blocks(dir.path(), 0).expect_err("damaged");
        assert!(error.to_string().contains("blocks.json"), "{error}");
    }
}
