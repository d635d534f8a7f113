//! Model signatures: Ed25519 over the exact bytes of a model's metadata file.
//!
//! The metadata holds the SHA-256 of the `.onnx` file, so one signature covers both. Files:
//! - private key: base64 of the 32-byte Ed25519 seed, one line, owned by root or its reader,
//!   no group or other access, never a symbolic link (the log key's rule: the one reader is
//!   `mld_secret::open_secret_file`);
//! - public key: base64 of the 32-byte Ed25519 public key, one line (the configuration holds the
//!   same text);
//! - signature: `<metadata>.sig`, base64 of the 64-byte signature, one line.
//!
//! Verification is strict (`verify_strict`): weak public keys and malleable signatures are refused.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey, PUBLIC_KEY_LENGTH, SECRET_KEY_LENGTH, SIGNATURE_LENGTH};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Key files and signatures are one short line; anything longer is not ours.
const MAX_KEY_FILE_BYTES: u64 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("failed to {operation} `{path}`")]
    Io { operation: &'static str, path: PathBuf, source: std::io::Error },
    /// The private key file was refused (a link, another owner, group or other access).
    #[error(transparent)]
    KeyFile(#[from] mld_secret::SecretFileError),
    #[error("model signing key `{path}` is not the base64 of a {SECRET_KEY_LENGTH}-byte Ed25519 seed")]
    PrivateKeyFormat { path: PathBuf },
    #[error("model public key {origin} is not the base64 of a valid {PUBLIC_KEY_LENGTH}-byte Ed25519 public key: {reason}")]
    PublicKeyFormat { origin: String, reason: String },
    #[error("model signature is not the base64 of a {SIGNATURE_LENGTH}-byte Ed25519 signature: {reason}")]
    SignatureFormat { reason: String },
    #[error("model signature does not match the metadata under public key {key_id} (signed by another key, or the metadata was changed)")]
    BadSignature { key_id: String },
}

/// An Ed25519 public key that model signatures are checked against.
#[derive(Clone, PartialEq, Eq)]
pub struct ModelPublicKey {
    key: VerifyingKey,
    id: String,
}

impl std::fmt::Debug for ModelPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelPublicKey").field("id", &self.id).finish()
    }
}

impl ModelPublicKey {
    /// Parses the base64 text of a public key (as written in the configuration).
    pub fn from_base64(text: &str) -> Result<ModelPublicKey, SigningError> {
        Self::parse(text, "(base64 text)")
    }

    /// Reads a public key file written by [`generate_key_pair`].
    pub fn load(path: &Path) -> Result<ModelPublicKey, SigningError> {
        let text = read_short_text(path, "read model public key")?;
        Self::parse(&text, &format!("`{}`", path.display()))
    }

    /// The key's base64 text, as the configuration holds it.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.key.as_bytes())
    }

    /// A short name for the key in messages: the first 8 bytes of its SHA-256, hex.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn parse(text: &str, origin: &str) -> Result<ModelPublicKey, SigningError> {
        let format_error = |reason: String| SigningError::PublicKeyFormat { origin: origin.to_string(), reason };
        let bytes = BASE64.decode(text.trim()).map_err(|error| format_error(error.to_string()))?;
        let bytes: [u8; PUBLIC_KEY_LENGTH] = bytes.as_slice().try_into().map_err(|_| format_error(format!("it decodes to {} bytes", bytes.len())))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| format_error("not a point on the curve".to_string()))?;
        if key.is_weak() {
            return Err(format_error("a weak (small-order) key".to_string()));
        }
        Ok(ModelPublicKey::from_verifying_key(key))
    }

    fn from_verifying_key(key: VerifyingKey) -> ModelPublicKey {
        let id = hex::encode(&Sha256::digest(key.as_bytes())[..8]);
        ModelPublicKey { key, id }
    }
}

/// Creates a new key pair: the private key file (0600, never overwriting) and the public key
/// file (0644, never overwriting). Returns the public key. If the public key file cannot be
/// created, the private key file just made is removed again, so no half pair is left.
pub fn generate_key_pair(private_key_path: &Path, public_key_path: &Path) -> Result<ModelPublicKey, SigningError> {
    let mut seed = Zeroizing::new([0u8; SECRET_KEY_LENGTH]);
    File::open("/dev/urandom").and_then(|mut random| random.read_exact(seed.as_mut_slice())).map_err(|source| SigningError::Io {
        operation: "generate model signing key",
        path: PathBuf::from("/dev/urandom"),
        source,
    })?;
    let signing_key = SigningKey::from_bytes(&seed);
    let public_key = ModelPublicKey::from_verifying_key(signing_key.verifying_key());

    let private_text = Zeroizing::new(format!("{}\n", BASE64.encode(seed.as_slice())));
    write_new_file(private_key_path, 0o600, private_text.as_bytes(), "create model signing key")?;
    let public_text = format!("{}\n", public_key.to_base64());
    if let Err(error) = write_new_file(public_key_path, 0o644, public_text.as_bytes(), "create model public key") {
        let _ = std::fs::remove_file(private_key_path);
        return Err(error);
    }
    Ok(public_key)
}

/// Signs the exact bytes of a metadata file with the private key file and writes the signature
/// to `<metadata_path>.sig` (replacing an older one). Returns the signature's path.
pub fn sign(private_key_path: &Path, metadata_path: &Path) -> Result<PathBuf, SigningError> {
    let signing_key = load_signing_key(private_key_path)?;
    let metadata =
        std::fs::read(metadata_path).map_err(|source| SigningError::Io { operation: "read model metadata", path: metadata_path.to_path_buf(), source })?;
    let signature = ed25519_dalek::Signer::sign(&signing_key, &metadata);

    let signature_path = signature_path(metadata_path);
    // Written beside and renamed over, so a reader never sees half a signature.
    let temporary = append_to_file_name(&signature_path, ".tmp");
    let text = format!("{}\n", BASE64.encode(signature.to_bytes()));
    let _ = std::fs::remove_file(&temporary);
    write_new_file(&temporary, 0o644, text.as_bytes(), "write model signature")?;
    std::fs::rename(&temporary, &signature_path).map_err(|source| {
        let _ = std::fs::remove_file(&temporary);
        SigningError::Io { operation: "write model signature", path: signature_path.clone(), source }
    })?;
    Ok(signature_path)
}

/// Signs `message` with the private key file: the signature's base64 text (a `.sig`
/// file's content without the newline).
pub fn sign_bytes(private_key_path: &Path, message: &[u8]) -> Result<String, SigningError> {
    let signing_key = load_signing_key(private_key_path)?;
    Ok(BASE64.encode(ed25519_dalek::Signer::sign(&signing_key, message).to_bytes()))
}

/// Checks a signature (the base64 text of a `.sig` file) over the exact metadata bytes.
pub fn verify(public_key: &ModelPublicKey, metadata_bytes: &[u8], signature_text: &str) -> Result<(), SigningError> {
    let bytes = BASE64.decode(signature_text.trim()).map_err(|error| SigningError::SignatureFormat { reason: error.to_string() })?;
    let bytes: [u8; SIGNATURE_LENGTH] =
        bytes.as_slice().try_into().map_err(|_| SigningError::SignatureFormat { reason: format!("it decodes to {} bytes", bytes.len()) })?;
    let signature = Signature::from_bytes(&bytes);
    public_key.key.verify_strict(metadata_bytes, &signature).map_err(|_| SigningError::BadSignature { key_id: public_key.id.clone() })
}

/// The signature file of a metadata file: `<metadata>.sig`.
pub fn signature_path(metadata_path: &Path) -> PathBuf {
    append_to_file_name(metadata_path, ".sig")
}

/// Reads a private key file (opened once; see `mld_secret::open_secret_file`).
fn load_signing_key(path: &Path) -> Result<SigningKey, SigningError> {
    let io = |operation, source| SigningError::Io { operation, path: path.to_path_buf(), source };
    let file = mld_secret::open_secret_file(path, "model signing key")?;
    let mut text = Zeroizing::new(String::with_capacity(MAX_KEY_FILE_BYTES as usize));
    file.take(MAX_KEY_FILE_BYTES).read_to_string(&mut text).map_err(|error| io("read model signing key", error))?;
    let format_error = || SigningError::PrivateKeyFormat { path: path.to_path_buf() };
    let decoded = Zeroizing::new(BASE64.decode(text.trim()).map_err(|_| format_error())?);
    let mut seed = Zeroizing::new([0u8; SECRET_KEY_LENGTH]);
    if decoded.len() != SECRET_KEY_LENGTH {
        return Err(format_error());
    }
    seed.copy_from_slice(&decoded);
    // SigningKey zeroizes itself on drop (ed25519-dalek's `zeroize` feature).
    Ok(SigningKey::from_bytes(&seed))
}

fn read_short_text(path: &Path, operation: &'static str) -> Result<String, SigningError> {
    let io = |source| SigningError::Io { operation, path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io)?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE_BYTES).read_to_string(&mut text).map_err(io)?;
    Ok(text)
}

fn write_new_file(path: &Path, mode: u32, contents: &[u8], operation: &'static str) -> Result<(), SigningError> {
    let io = |source| SigningError::Io { operation, path: path.to_path_buf(), source };
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(io)?;
    file.write_all(contents).and_then(|()| file.sync_all()).map_err(io)
}

fn append_to_file_name(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    fn key_pair(dir: &Path) -> (PathBuf, ModelPublicKey) {
        let private = dir.join("model.key");
        let public = generate_key_pair(&private, &dir.join("model.pub")).expect("generate key pair");
        (private, public)
    }

    #[test]
    fn a_signed_file_verifies_and_any_change_does_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (private, public) = key_pair(dir.path());
        let metadata = dir.path().join("m.json");
        std::fs::write(&metadata, b"{\"name\": \"m\"}\n").expect("write");
        let signature = sign(&private, &metadata).expect("sign");
        assert_eq!(signature, dir.path().join("m.json.sig"));
        let text = std::fs::read_to_string(&signature).expect("read signature");
        assert_eq!(text.lines().count(), 1);

        verify(&public, b"{\"name\": \"m\"}\n", &text).expect("verifies");
        let changed = verify(&public, b"{\"name\": \"n\"}\n", &text).expect_err("changed metadata");
        assert!(matches!(changed, SigningError::BadSignature { .. }), "{changed}");
        assert!(changed.to_string().contains(public.id()), "{changed}");

        let other = generate_key_pair(&dir.path().join("other.key"), &dir.path().join("other.pub")).expect("other");
        assert!(matches!(verify(&other, b"{\"name\": \"m\"}\n", &text), Err(SigningError::BadSignature { .. })));
        assert!(matches!(verify(&public, b"x", "not base64!"), Err(SigningError::SignatureFormat { .. })));
        assert!(matches!(verify(&public, b"x", "AAAA"), Err(SigningError::SignatureFormat { .. })));

        // Signing again replaces the signature.
        std::fs::write(&metadata, b"{\"name\": \"n\"}\n").expect("write");
        sign(&private, &metadata).expect("sign again");
        let text = std::fs::read_to_string(&signature).expect("read signature");
        verify(&public, b"{\"name\": \"n\"}\n", &text).expect("verifies");
    }

    #[test]
    fn key_files_round_trip_and_are_never_overwritten() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (private, public) = key_pair(dir.path());
        assert_eq!(std::fs::metadata(&private).expect("stat").mode() & 0o777, 0o600);
        let loaded = ModelPublicKey::load(&dir.path().join("model.pub")).expect("load public key");
        assert_eq!(loaded, public);
        assert_eq!(ModelPublicKey::from_base64(&public.to_base64()).expect("parse"), public);
        assert_eq!(public.id().len(), 16);
        assert!(!format!("{public:?}").contains(&public.to_base64()));

        let again = generate_key_pair(&private, &dir.path().join("new.pub")).expect_err("exists");
        assert!(again.to_string().contains("model.key"), "{again}");
        // The public key file exists: the private key just made is removed again.
        let half = generate_key_pair(&dir.path().join("new.key"), &dir.path().join("model.pub")).expect_err("exists");
        assert!(half.to_string().contains("model.pub"), "{half}");
        assert!(!dir.path().join("new.key").exists());
    }

    #[test]
    fn private_keys_must_be_0600_files_holding_a_seed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (private, _) = key_pair(dir.path());
        let metadata = dir.path().join("m.json");
        std::fs::write(&metadata, b"{}").expect("write");

        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let error = sign(&private, &metadata).expect_err("0640");
        assert!(error.to_string().contains("model signing key"), "{error}");
        assert!(error.to_string().contains("mode 0640; group and others must have no access"), "{error}");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).expect("chmod");

        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&private, &link).expect("symlink");
        let error = sign(&link, &metadata).expect_err("a link");
        assert!(matches!(error, SigningError::KeyFile(mld_secret::SecretFileError::Symlink { .. })), "{error}");

        let short = dir.path().join("short.key");
        write_new_file(&short, 0o600, b"AAAA\n", "write").expect("write");
        let error = sign(&short, &metadata).expect_err("short seed");
        assert!(matches!(error, SigningError::PrivateKeyFormat { .. }), "{error}");

        let missing = sign(&private, &dir.path().join("absent.json")).expect_err("no metadata");
        assert!(missing.to_string().contains("absent.json"), "{missing}");
    }

    #[test]
    fn public_keys_are_checked() {
        assert!(matches!(ModelPublicKey::from_base64("%%"), Err(SigningError::PublicKeyFormat { .. })));
        let short = ModelPublicKey::from_base64("AAAA").expect_err("3 bytes");
        assert!(short.to_string().contains("decodes to 3 bytes"), "{short}");
        // The identity point is a small-order (weak) key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = ModelPublicKey::from_base64(&BASE64.encode(identity)).expect_err("weak");
        assert!(weak.to_string().contains("weak"), "{weak}");
    }
}
