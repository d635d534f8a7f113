//! Secret files: the one reader of the files that hold keys (the log's HMAC key and its
//! checkpoint signing key in `mld-eventlog`, the model signing key in `mld-model`).
//!
//! [`open_secret_file`] opens a secret file once with `O_NOFOLLOW`, then checks the open fd
//! (fstat): a regular file, owned by root or by the user reading it, with no group or other
//! access. Nothing can be swapped in between the check and the read.
//!
//! Invariant: this is the only code in the workspace that opens a secret file for reading.
//! It is a crate of its own, below both of its users, so that neither needs the other: the
//! event log has no business with ONNX models, and a model crate none with the event log.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a secret file was refused. `what` names the file's role ("log key").
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("failed to {operation} {what} `{path}`")]
    Io { what: &'static str, operation: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{what} `{path}` is a symbolic link; refusing it (point the configuration at the file itself)")]
    Symlink { what: &'static str, path: PathBuf },
    #[error("{what} `{path}` is not a regular file")]
    NotAFile { what: &'static str, path: PathBuf },
    #[error("{what} `{path}` is owned by uid {owner}; it must be owned by root or by the user reading it (uid {reader})")]
    Owner { what: &'static str, path: PathBuf, owner: u32, reader: u32 },
    #[error("{what} `{path}` has mode {mode:04o}; group and others must have no access (chmod 600 {path})")]
    Mode { what: &'static str, path: PathBuf, mode: u32 },
}

/// Opens a secret file for reading, once: `O_NOFOLLOW` (a symbolic link is refused by the
/// kernel, whenever it was swapped in), then checks the open file itself (fstat): a
/// regular file, owned by root or by the effective uid, with no group or other access.
/// Read the returned file with positioned reads (`read_exact_at`) when it is shared.
pub fn open_secret_file(path: &Path, what: &'static str) -> Result<File, SecretFileError> {
    let io = |operation, source| SecretFileError::Io { what, operation, path: path.to_path_buf(), source };
    // O_NONBLOCK: a FIFO put in the key's place cannot hold the open (it is refused below).
    let file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY).open(path).map_err(|error| {
        match error.raw_os_error() {
            Some(libc::ELOOP) => SecretFileError::Symlink { what, path: path.to_path_buf() },
            _ => io("open", error),
        }
    })?;
    let metadata = file.metadata().map_err(|error| io("stat", error))?;
    if !metadata.file_type().is_file() {
        return Err(SecretFileError::NotAFile { what, path: path.to_path_buf() });
    }
    let reader = nix::unistd::geteuid().as_raw();
    if metadata.uid() != 0 && metadata.uid() != reader {
        return Err(SecretFileError::Owner { what, path: path.to_path_buf(), owner: metadata.uid(), reader });
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::Mode { what, path: path.to_path_buf(), mode });
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn private_file(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, b"secret").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn a_private_regular_file_opens_and_anything_else_is_refused_naming_its_role() {
        let dir = tempfile::tempdir().expect("temp dir");
        open_secret_file(&private_file(dir.path(), "a.key", 0o600), "test key").expect("0600");
        open_secret_file(&private_file(dir.path(), "b.key", 0o400), "test key").expect("0400");

        let open = private_file(dir.path(), "c.key", 0o604);
        let error = open_secret_file(&open, "test key").expect_err("0604");
        assert!(matches!(error, SecretFileError::Mode { mode: 0o604, .. }), "{error}");
        assert!(error.to_string().starts_with("test key `"), "{error}");

        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(dir.path().join("a.key"), &link).expect("symlink");
        assert!(matches!(open_secret_file(&link, "test key"), Err(SecretFileError::Symlink { .. })));

        let missing = open_secret_file(&dir.path().join("absent.key"), "test key").expect_err("absent");
        assert!(matches!(&missing, SecretFileError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound), "{missing}");
    }
}
