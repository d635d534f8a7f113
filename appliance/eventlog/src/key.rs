//! The HMAC key: 32 random bytes in a file that only its owner (root, or the user reading
//! it) can read, and that is not a symbolic link.
//!
//! The file is opened by `mld_secret::open_secret_file`, the one reader of secret files
//! (the log key here, the checkpoint signing key, the model signing key in `mld-model`):
//! opened once with `O_NOFOLLOW`, then checked on the open fd, so that nothing can be
//! swapped in between the check and the read.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use mld_secret::{open_secret_file, SecretFileError};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub const KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("failed to {operation} log key `{path}`")]
    Io { operation: &'static str, path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    File(#[from] SecretFileError),
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

    /// Reads a key file (see `mld_secret::open_secret_file` for what is refused).
    pub fn load(path: &Path) -> Result<LogKey, KeyError> {
        let file = LogKey::open(path)?;
        LogKey::read_from(&file, path)
    }

    /// Opens a key file as [`load`](LogKey::load) does and checks that it holds a key;
    /// returns the open file (the supervisor hands it to tasks as an fd).
    pub fn open(path: &Path) -> Result<File, KeyError> {
        let file = open_secret_file(path, "log key")?;
        LogKey::read_from(&file, path)?;
        Ok(file)
    }

    /// Reads a key from an open file (the supervisor hands the log task the key file as
    /// an fd: the task's user cannot open it).
    pub fn from_file(file: File, what: &Path) -> Result<LogKey, KeyError> {
        LogKey::read_from(&file, what)
    }

    /// Positioned reads only: the log and ingest tasks (and every restart of them) share
    /// one open file description, whose offset a `seek` + `read` would race on.
    fn read_from(file: &File, what: &Path) -> Result<LogKey, KeyError> {
        // One byte more than a key, to tell a longer file from a key.
        let mut bytes = Zeroizing::new([0u8; KEY_BYTES + 1]);
        let mut len = 0;
        while len < bytes.len() {
            match file.read_at(&mut bytes[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => return Err(KeyError::Io { operation: "read", path: what.to_path_buf(), source }),
            }
        }
        if len != KEY_BYTES {
            let len = if len > KEY_BYTES { file.metadata().map_or(len, |metadata| metadata.len() as usize) } else { len };
            return Err(KeyError::Length { path: what.to_path_buf(), len });
        }
        let mut key = [0u8; KEY_BYTES];
        key.copy_from_slice(&bytes[..KEY_BYTES]);
        let loaded = LogKey::from_bytes(key);
        zeroize::Zeroize::zeroize(&mut key);
        Ok(loaded)
    }

    /// Creates a new random key file (mode 0600, never overwriting) and returns the key.
    pub fn create(path: &Path) -> Result<LogKey, KeyError> {
        let io = |operation, source| KeyError::Io { operation, path: path.to_path_buf(), source };
        let mut key = [0u8; KEY_BYTES];
        File::open("/dev/urandom").and_then(|mut random| random.read_exact(&mut key)).map_err(|error| io("generate", error))?;
        let mut file =
            OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(path).map_err(|error| io("create", error))?;
        file.write_all(&key).and_then(|()| file.sync_all()).map_err(|error| io("write", error))?;
        let created = LogKey::from_bytes(key);
        zeroize::Zeroize::zeroize(&mut key);
        Ok(created)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

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
        assert!(error.to_string().contains("mode 0644; group and others must have no access"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(matches!(LogKey::load(&path), Err(KeyError::File(SecretFileError::Mode { mode: 0o640, .. }))));
        // Read-only for its owner is as good as 0600.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        assert_eq!(LogKey::load(&path).expect("0400").id(), created.id());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");

        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        let error = LogKey::load(&link).expect_err("a link");
        assert!(matches!(error, KeyError::File(SecretFileError::Symlink { .. })), "{error}");
        assert!(error.to_string().contains("is a symbolic link"), "{error}");

        let short = dir.path().join("short.key");
        std::fs::write(&short, [1u8; 5]).expect("write");
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(LogKey::load(&short), Err(KeyError::Length { len: 5, .. })));
        let long = dir.path().join("long.key");
        std::fs::write(&long, [1u8; 100]).expect("write");
        std::fs::set_permissions(&long, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(LogKey::load(&long), Err(KeyError::Length { len: 100, .. })));

        // Neither a directory nor a FIFO (whose open must not hang) is a key.
        let fifo = dir.path().join("fifo.key");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        assert!(matches!(LogKey::load(&fifo), Err(KeyError::File(SecretFileError::NotAFile { .. }))));
        let subdir = dir.path().join("dir.key");
        std::fs::create_dir(&subdir).expect("mkdir");
        std::fs::set_permissions(&subdir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        assert!(matches!(LogKey::load(&subdir), Err(KeyError::File(SecretFileError::NotAFile { .. }))));
    }

    /// Owned by another user (not root, not the reader): refused. Needs root to chown.
    #[test]
    fn a_key_owned_by_another_user_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: chown needs root");
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log.key");
        LogKey::create(&path).expect("create");
        std::os::unix::fs::chown(&path, Some(65534), None).expect("chown");
        let error = LogKey::load(&path).expect_err("owned by nobody");
        assert!(matches!(error, KeyError::File(SecretFileError::Owner { owner: 65534, reader: 0, .. })), "{error}");
        assert!(error.to_string().contains("owned by uid 65534"), "{error}");
        std::os::unix::fs::chown(&path, Some(0), None).expect("chown");
        LogKey::load(&path).expect("owned by root");
    }

    /// The log and ingest tasks share one open file description: a read must not depend
    /// on, or move, its offset.
    #[test]
    fn reading_a_shared_key_fd_ignores_and_keeps_its_offset() {
        use std::io::{Seek, SeekFrom};
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log.key");
        let created = LogKey::create(&path).expect("create");
        let mut file = LogKey::open(&path).expect("open");
        file.seek(SeekFrom::Start(7)).expect("seek");
        let shared = file.try_clone().expect("dup: the same open file description");
        assert_eq!(LogKey::from_file(shared, &path).expect("read").id(), created.id());
        assert_eq!(file.stream_position().expect("position"), 7, "the shared offset moved");
        let again = file.try_clone().expect("dup");
        assert_eq!(LogKey::from_file(again, &path).expect("read again").id(), created.id());
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
