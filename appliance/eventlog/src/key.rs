//! The HMAC key: 32 random bytes in a file that must be 0600 and not a symbolic link.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub const KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("failed to {operation} log key `{path}`")]
    Io { operation: &'static str, path: PathBuf, source: std::io::Error },
    #[error("log key `{path}` is a symbolic link; refusing it (point the configuration at the file itself)")]
    Symlink { path: PathBuf },
    #[error("log key `{path}` has mode {mode:04o}; it must be 0600 (chmod 600 {path})")]
    Mode { path: PathBuf, mode: u32 },
    #[error("log key `{path}` holds {len} bytes; it must hold exactly {KEY_BYTES}")]
    Length { path: PathBuf, len: usize },
}

/// An HMAC key with its id (the first 8 bytes of SHA-256 of the key, hex).
pub struct LogKey {
    bytes: Zeroizing<[u8; KEY_BYTES]>,
    id: String,
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl LogKey {
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> LogKey {
        let id = hex::encode(&Sha256::digest(bytes)[..8]);
        LogKey { bytes: Zeroizing::new(bytes), id }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// Reads a key file, refusing symbolic links and any mode but 0600.
    pub fn load(path: &Path) -> Result<LogKey, KeyError> {
        let io = |operation, source| KeyError::Io { operation, path: path.to_path_buf(), source };
        let metadata = std::fs::symlink_metadata(path).map_err(|error| io("read", error))?;
        if metadata.file_type().is_symlink() {
            return Err(KeyError::Symlink { path: path.to_path_buf() });
        }
        // O_NOFOLLOW: a link swapped in after the check is refused by the kernel.
        let mut file = OpenOptions::new().read(true).custom_flags(nix_o_nofollow()).open(path).map_err(|error| io("open", error))?;
        let mode = file.metadata().map_err(|error| io("stat", error))?.mode() & 0o7777;
        if mode != 0o600 {
            return Err(KeyError::Mode { path: path.to_path_buf(), mode });
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(KEY_BYTES));
        file.read_to_end(&mut bytes).map_err(|error| io("read", error))?;
        if bytes.len() != KEY_BYTES {
            return Err(KeyError::Length { path: path.to_path_buf(), len: bytes.len() });
        }
        let mut key = [0u8; KEY_BYTES];
        key.copy_from_slice(&bytes);
        let loaded = LogKey::from_bytes(key);
        zeroize::Zeroize::zeroize(&mut key);
        Ok(loaded)
    }

    /// Reads a key from an open file (the supervisor hands the log task the key file as
    /// an fd: the task's user cannot open it).
    pub fn from_file(mut file: File, what: &Path) -> Result<LogKey, KeyError> {
        use std::io::{Seek, SeekFrom};
        let mut bytes = Zeroizing::new(Vec::with_capacity(KEY_BYTES));
        // The fd may have been read before (the same open file serves every restart).
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_end(&mut bytes))
            .map_err(|source| KeyError::Io { operation: "read", path: what.to_path_buf(), source })?;
        if bytes.len() != KEY_BYTES {
            return Err(KeyError::Length { path: what.to_path_buf(), len: bytes.len() });
        }
        let mut key = [0u8; KEY_BYTES];
        key.copy_from_slice(&bytes);
        let loaded = LogKey::from_bytes(key);
        zeroize::Zeroize::zeroize(&mut key);
        Ok(loaded)
    }

    /// Creates a new random key file (mode 0600, never overwriting) and returns the key.
    pub fn create(path: &Path) -> Result<LogKey, KeyError> {
        let io = |operation, source| KeyError::Io { operation, path: path.to_path_buf(), source };
        let mut key = [0u8; KEY_BYTES];
        File::open("/dev/urandom").and_then(|mut random| random.read_exact(&mut key)).map_err(|error| io("generate", error))?;
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|error| io("create", error))?;
        file.write_all(&key).and_then(|()| file.sync_all()).map_err(|error| io("write", error))?;
        let created = LogKey::from_bytes(key);
        zeroize::Zeroize::zeroize(&mut key);
        Ok(created)
    }
}

fn nix_o_nofollow() -> i32 {
    // O_NOFOLLOW on Linux (all architectures this project targets).
    0o400000
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn created_keys_load_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log.key");
        let created = LogKey::create(&path).expect("create");
        assert_eq!(std::fs::metadata(&path).expect("stat").mode() & 0o777, 0o600);
        assert_eq!(LogKey::load(&path).expect("load").id(), created.id());
        assert!(LogKey::create(&path).is_err(), "never overwrites");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = LogKey::load(&path).expect_err("0644");
        assert!(error.to_string().contains("mode 0644; it must be 0600"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");

        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        assert!(matches!(LogKey::load(&link), Err(KeyError::Symlink { .. })));

        let short = dir.path().join("short.key");
        std::fs::write(&short, [1u8; 5]).expect("write");
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(LogKey::load(&short), Err(KeyError::Length { len: 5, .. })));
    }

    #[test]
    fn key_ids_differ_per_key_and_debug_hides_the_key() {
        let first = LogKey::from_bytes([1; 32]);
        let second = LogKey::from_bytes([2; 32]);
        assert_ne!(first.id(), second.id());
        assert_eq!(first.id().len(), 16);
        assert!(!format!("{first:?}").contains("[1, 1"));
    }
}
