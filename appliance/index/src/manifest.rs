//! The manifest: what a snapshot holds, and the atomic file writes that commit it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{IndexError, Result};

/// The manifest's file name inside an index directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The manifest format this crate writes and reads.
/// 2: side-store records carry the vector; the manifest names the vectors' source.
pub const FORMAT_VERSION: u32 = 2;

/// A snapshot's description. Renaming a new manifest into place is the commit point of
/// `save`: until then the previous manifest and the index file it names stay valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    pub format: u32,
    /// Vector dimensions.
    pub dims: u32,
    /// The index-factory string given at creation (the stored index is `IDMap,<factory>`).
    pub factory: String,
    /// Vectors in the snapshot (and committed side-store records).
    pub count: u64,
    /// The largest event id in the snapshot; the ingest task resumes after it.
    pub last_id: Option<u64>,
    /// Increases at every save; names the index file.
    pub generation: u64,
    /// The index file's name, relative to the directory.
    pub index_file: String,
    pub index_bytes: u64,
    /// Hex SHA-256 of the index file.
    pub index_sha256: String,
    /// Length of the side store's committed prefix.
    pub fields_bytes: u64,
    /// What made the vectors (the embedder's name and SHA-256), as given at creation:
    /// vectors from another embedder are not comparable, so a reader checks it.
    #[serde(default)]
    pub source: String,
}

impl Manifest {
    /// Reads the manifest of `dir`; a missing or unreadable one is refused.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(IndexError::Missing { path });
            }
            Err(err) => return Err(IndexError::io("read", &path, err)),
        };
        let manifest: Manifest = serde_json::from_slice(&text).map_err(|err| IndexError::corrupt(&path, format!("not a valid manifest: {err}")))?;
        if manifest.format != FORMAT_VERSION {
            return Err(IndexError::corrupt(&path, format!("format {} (this build reads {FORMAT_VERSION})", manifest.format)));
        }
        if manifest.index_file.contains('/') || manifest.index_file.starts_with('.') {
            return Err(IndexError::corrupt(&path, "index file name is not a plain file name"));
        }
        Ok(manifest)
    }

    /// Checks that the index file exists and has the recorded size and SHA-256.
    pub fn verify_index_file(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join(&self.index_file);
        let (bytes, sha256) = match file_sha256(&path) {
            Ok(found) => found,
            Err(IndexError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(IndexError::Missing { path });
            }
            Err(err) => return Err(err),
        };
        if bytes != self.index_bytes {
            return Err(IndexError::corrupt(&path, format!("{bytes} bytes, the manifest records {}", self.index_bytes)));
        }
        if sha256 != self.index_sha256 {
            return Err(IndexError::corrupt(&path, "SHA-256 differs from the manifest's"));
        }
        Ok(path)
    }

    /// Writes the manifest atomically (temp file, fsync, rename, fsync the directory).
    pub fn store(&self, dir: &Path) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(self).map_err(|err| IndexError::invalid(format!("manifest: {err}")))?;
        text.push(b'\n');
        let path = dir.join(MANIFEST_FILE);
        let temp = dir.join(format!("{MANIFEST_FILE}.tmp"));
        let mut file = File::create(&temp).map_err(|err| IndexError::io("create", &temp, err))?;
        file.write_all(&text).map_err(|err| IndexError::io("write", &temp, err))?;
        file.sync_all().map_err(|err| IndexError::io("fsync", &temp, err))?;
        drop(file);
        fs::rename(&temp, &path).map_err(|err| IndexError::io("rename into", &path, err))?;
        sync_dir(dir)
    }
}

/// Size and hex SHA-256 of a file, read in blocks.
pub(crate) fn file_sha256(path: &Path) -> Result<(u64, String)> {
    let mut file = File::open(path).map_err(|err| IndexError::io("open", path, err))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(|err| IndexError::io("read", path, err))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        total += n as u64;
    }
    Ok((total, hex::encode(hasher.finalize())))
}

/// Makes a file durable by path (FAISS writes its files itself).
pub(crate) fn sync_file(path: &Path) -> Result<()> {
    OpenOptions::new().read(true).open(path).and_then(|file| file.sync_all()).map_err(|err| IndexError::io("fsync", path, err))
}

/// Makes renames and creations in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|file| file.sync_all()).map_err(|err| IndexError::io("fsync directory", dir, err))
}
