//! The certificates' directory (`pki.dir`) and provisioning. Layout (certs/README.md):
//!
//! | file | what | mode |
//! |---|---|---|
//! | `ca.pem` | the trust bundle: every CA this node trusts (two during a CA rotation) | 0644 |
//! | `ca-key.pem` | the CA's key: only where the CA lives (a single box, or the operator machine) | 0600 |
//! | `etcd-client.pem`, `etcd-client-key.pem` | this node's etcd client identity, CN = `log.node` | 0644, 0600 |
//! | `etcd-server.pem`, `etcd-server-key.pem` | an etcd member's server certificate (`pki.etcd-member`) | 0644, 0600 |
//! | `etcd-peer.pem`, `etcd-peer-key.pem` | the same member's peer certificate | 0644, 0600 |
//!
//! Every file is written whole to a new temporary file and renamed into place: a reader
//! sees the old file or the new one, never half of one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rcgen::PublicKeyData;
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::{inspect, Ca, CertInfo, Health, LeafKind, LeafSpec, PkiError};

pub const TRUST_BUNDLE: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";

/// The leaves a node can hold, by file stem.
pub const CLIENT: &str = "etcd-client";
pub const SERVER: &str = "etcd-server";
pub const PEER: &str = "etcd-peer";

/// What a node needs (from `[pki]` and `log.node`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// This node's name: the etcd client certificate's CN.
    pub node: String,
    /// Create the CA here when there is none (a single box). Without it the trust bundle
    /// and the leaves come from a bundle issued on the operator machine.
    pub local_ca: bool,
    pub ca_name: String,
    pub ca_lifetime: Duration,
    pub leaf_lifetime: Duration,
    /// SANs of this node's etcd member certificates; `None`: the node runs no etcd member.
    pub etcd_member_sans: Option<Vec<String>>,
}

impl Plan {
    /// The leaves this node needs, by file stem.
    pub fn leaves(&self) -> Vec<(&'static str, LeafSpec)> {
        let mut leaves = vec![(CLIENT, LeafSpec { kind: LeafKind::Client, common_name: self.node.clone(), sans: Vec::new(), lifetime: self.leaf_lifetime })];
        if let Some(sans) = &self.etcd_member_sans {
            for (stem, kind) in [(SERVER, LeafKind::Server), (PEER, LeafKind::Peer)] {
                leaves.push((stem, LeafSpec { kind, common_name: self.node.clone(), sans: sans.clone(), lifetime: self.leaf_lifetime }));
            }
        }
        leaves
    }
}

/// What provisioning did with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Kept,
    Created,
    /// Issued again, with the reason (due for renewal, SANs changed, key mismatch...).
    Renewed(String),
    /// Due for renewal but the CA's key is not here: kept, and `pki status` fails until a
    /// new bundle is installed.
    DueWithoutCa(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub file: PathBuf,
    pub step: Step,
}

/// Makes the directory hold what `plan` needs: idempotent (what exists and is valid is
/// kept). Errors name the file and what to do.
pub fn provision(dir: &Path, plan: &Plan, now: OffsetDateTime) -> Result<Vec<Outcome>, PkiError> {
    provision_leaves(dir, plan, now, false)
}

/// Issues every leaf again, valid or not (`pki renew --force`; after a CA rotation).
pub fn reissue(dir: &Path, plan: &Plan, now: OffsetDateTime) -> Result<Vec<Outcome>, PkiError> {
    provision_leaves(dir, plan, now, true)
}

fn provision_leaves(dir: &Path, plan: &Plan, now: OffsetDateTime, force: bool) -> Result<Vec<Outcome>, PkiError> {
    ensure_dir(dir)?;
    let mut outcomes = Vec::new();
    let bundle_path = dir.join(TRUST_BUNDLE);
    if !bundle_path.exists() {
        if !plan.local_ca {
            return Err(PkiError::Refused(format!(
                "no trust bundle `{}`: this node's CA is external (pki.ca = \"external\"); install the bundle made on the operator machine with `mldefender pki issue --node {} --out DIR` (its files go into {})",
                bundle_path.display(),
                plan.node,
                dir.display()
            )));
        }
        let ca = Ca::create(&plan.ca_name, plan.ca_lifetime, now)?;
        write_file(&dir.join(CA_KEY), ca.key_pem().as_bytes(), 0o600)?;
        write_file(&bundle_path, ca.cert_pem().as_bytes(), 0o644)?;
        outcomes.push(Outcome { file: dir.join(CA_KEY), step: Step::Created });
        outcomes.push(Outcome { file: bundle_path.clone(), step: Step::Created });
    } else {
        outcomes.push(Outcome { file: bundle_path.clone(), step: Step::Kept });
    }
    let trusted = read_bundle(dir)?;
    if trusted.iter().all(|ca| ca.health(now) == Health::Expired) {
        return Err(PkiError::Refused(format!(
            "every CA in the trust bundle `{}` has expired; rotate the CA (certs/README.md, \"CA rotation\")",
            bundle_path.display()
        )));
    }
    let ca = load_ca(dir)?;
    for (stem, spec) in plan.leaves() {
        let cert_path = dir.join(format!("{stem}.pem"));
        let problem = if force { Some("renewal forced".to_string()) } else { check_leaf(dir, stem, &spec, &trusted, now)? };
        let Some(problem) = problem else {
            outcomes.push(Outcome { file: cert_path, step: Step::Kept });
            continue;
        };
        let missing = !cert_path.exists();
        let due_only = problem.starts_with("renewal due");
        match &ca {
            Some(ca) => {
                let identity = ca.issue(&spec, now)?;
                write_file(&dir.join(format!("{stem}-key.pem")), identity.key_pem.as_bytes(), 0o600)?;
                write_file(&cert_path, identity.cert_pem.as_bytes(), 0o644)?;
                outcomes.push(Outcome { file: cert_path, step: if missing { Step::Created } else { Step::Renewed(problem) } });
            }
            None if due_only => outcomes.push(Outcome { file: cert_path, step: Step::DueWithoutCa(problem) }),
            None => {
                return Err(PkiError::Refused(format!(
                    "`{}`: {problem}; the CA's key is not on this node, so it cannot be issued here: make a new bundle with `mldefender pki issue --node {}` on the operator machine and install it",
                    cert_path.display(),
                    plan.node
                )))
            }
        }
    }
    Ok(outcomes)
}

/// Why a leaf must be issued (again), or `None` when it is fine as it is.
fn check_leaf(dir: &Path, stem: &str, spec: &LeafSpec, trusted: &[CertInfo], now: OffsetDateTime) -> Result<Option<String>, PkiError> {
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}-key.pem"));
    if !cert_path.exists() {
        return Ok(Some("missing".to_string()));
    }
    let text = read_text(&cert_path)?;
    let info = inspect(&text, &cert_path.display().to_string())?.remove(0);
    if !trusted.iter().any(|ca| info.signed_by(ca)) {
        return Ok(Some("not signed by a CA in the trust bundle".to_string()));
    }
    if info.common_name != spec.common_name {
        return Ok(Some(format!("its CN is `{}`, the node is `{}`", info.common_name, spec.common_name)));
    }
    let (mut have, mut want) = (info.sans.clone(), spec.sans.clone());
    have.sort();
    want.sort();
    if have != want {
        return Ok(Some(format!("its SANs are [{}], the configuration says [{}]", info.sans.join(", "), spec.sans.join(", "))));
    }
    if !key_path.exists() {
        return Ok(Some(format!("its key `{}` is missing", key_path.display())));
    }
    let key = read_secret(&key_path, "certificate key")?;
    let key = rcgen::KeyPair::from_pem(&key).map_err(|error| PkiError::cert(key_path.display().to_string(), "parse", error))?;
    if key.subject_public_key_info() != info.public_key_der {
        return Ok(Some(format!("its key `{}` is not the certificate's", key_path.display())));
    }
    Ok(match info.health(now) {
        Health::Valid => None,
        Health::RenewalDue => Some(format!("renewal due since {} (two thirds of its lifetime)", info.renew_at())),
        Health::Expired => Some(format!("expired on {}", info.not_after)),
        Health::NotYetValid => Some(format!("not valid before {}", info.not_before)),
    })
}

/// The trust bundle's CAs.
pub fn read_bundle(dir: &Path) -> Result<Vec<CertInfo>, PkiError> {
    let path = dir.join(TRUST_BUNDLE);
    let infos = inspect(&read_text(&path)?, &path.display().to_string())?;
    if let Some(leaf) = infos.iter().find(|info| !info.is_ca) {
        return Err(PkiError::Refused(format!("the trust bundle `{}` holds `{}`, which is not a CA", path.display(), leaf.subject)));
    }
    Ok(infos)
}

/// The CA that can sign here: the bundle's certificate whose key is `ca-key.pem`, or
/// `None` when there is no key (a fleet node).
pub fn load_ca(dir: &Path) -> Result<Option<Ca>, PkiError> {
    let key_path = dir.join(CA_KEY);
    if !key_path.exists() {
        return Ok(None);
    }
    let key = read_secret(&key_path, "CA key")?;
    let public = rcgen::KeyPair::from_pem(&key).map_err(|error| PkiError::cert(key_path.display().to_string(), "parse", error))?.subject_public_key_info();
    let bundle = read_text(&dir.join(TRUST_BUNDLE))?;
    for block in pem_blocks(&bundle) {
        if inspect(&block, "the trust bundle")?.first().is_some_and(|info| info.public_key_der == public) {
            return Ca::from_pem(&block, key).map(Some);
        }
    }
    Err(PkiError::Refused(format!("the CA key `{}` belongs to no certificate in the trust bundle", key_path.display())))
}

/// Creates a CA in `dir` (the operator machine's `pki init`). Refuses to replace one.
pub fn init_ca(dir: &Path, name: &str, lifetime: Duration, now: OffsetDateTime) -> Result<CertInfo, PkiError> {
    ensure_dir(dir)?;
    for file in [TRUST_BUNDLE, CA_KEY] {
        if dir.join(file).exists() {
            return Err(PkiError::Refused(format!("`{}` exists; refusing to replace a CA (to rotate it: `mldefender pki rotate`)", dir.join(file).display())));
        }
    }
    let ca = Ca::create(name, lifetime, now)?;
    write_file(&dir.join(CA_KEY), ca.key_pem().as_bytes(), 0o600)?;
    write_file(&dir.join(TRUST_BUNDLE), ca.cert_pem().as_bytes(), 0o644)?;
    Ok(inspect(ca.cert_pem(), "the new CA")?.remove(0))
}

/// Starts a CA rotation in `dir`: a new CA signs from now on; the trust bundle holds the
/// new CA and every old one not yet expired, so that certificates of either verify
/// during the overlap. The old key is kept as `ca-key.<sha256 prefix>.pem`.
pub fn rotate_ca(dir: &Path, name: &str, lifetime: Duration, now: OffsetDateTime) -> Result<CertInfo, PkiError> {
    let old = load_ca(dir)?.ok_or_else(|| PkiError::Refused(format!("no CA key `{}` to rotate from", dir.join(CA_KEY).display())))?;
    let old_info = inspect(old.cert_pem(), "the old CA")?.remove(0);
    let new = Ca::create(name, lifetime, now)?;
    let mut bundle = new.cert_pem().to_string();
    for block in pem_blocks(&read_text(&dir.join(TRUST_BUNDLE))?) {
        if inspect(&block, "the trust bundle")?.first().is_some_and(|info| info.health(now) != Health::Expired) {
            bundle.push_str(&block);
        }
    }
    write_file(&dir.join(format!("ca-key.{}.pem", &old_info.sha256[..16])), old.key_pem().as_bytes(), 0o600)?;
    write_file(&dir.join(CA_KEY), new.key_pem().as_bytes(), 0o600)?;
    write_file(&dir.join(TRUST_BUNDLE), bundle.as_bytes(), 0o644)?;
    Ok(inspect(new.cert_pem(), "the new CA")?.remove(0))
}

/// Writes a node's bundle into `out` (a new or empty directory) from the CA in `ca_dir`:
/// the trust bundle and the node's leaves. The CA's key stays where it is.
pub fn issue_bundle(ca_dir: &Path, plan: &Plan, out: &Path, now: OffsetDateTime) -> Result<Vec<PathBuf>, PkiError> {
    let ca = load_ca(ca_dir)?.ok_or_else(|| PkiError::Refused(format!("no CA key `{}`: run `mldefender pki init` first", ca_dir.join(CA_KEY).display())))?;
    ensure_dir(out)?;
    let occupied = std::fs::read_dir(out).map_err(|source| PkiError::Io { operation: "list", path: out.to_path_buf(), source })?.next().is_some();
    if occupied {
        return Err(PkiError::Refused(format!("`{}` is not empty; a bundle goes into a new directory", out.display())));
    }
    let mut written = vec![out.join(TRUST_BUNDLE)];
    write_file(&out.join(TRUST_BUNDLE), read_text(&ca_dir.join(TRUST_BUNDLE))?.as_bytes(), 0o644)?;
    for (stem, spec) in plan.leaves() {
        let identity = ca.issue(&spec, now)?;
        write_file(&out.join(format!("{stem}-key.pem")), identity.key_pem.as_bytes(), 0o600)?;
        write_file(&out.join(format!("{stem}.pem")), identity.cert_pem.as_bytes(), 0o644)?;
        written.push(out.join(format!("{stem}.pem")));
        written.push(out.join(format!("{stem}-key.pem")));
    }
    Ok(written)
}

/// Every certificate file in `dir` (keys skipped), each certificate in it read back.
pub fn status(dir: &Path) -> Result<Vec<(PathBuf, CertInfo)>, PkiError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| PkiError::Io { operation: "list", path: dir.to_path_buf(), source })?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "pem") && !path.file_name().is_some_and(|name| name.to_string_lossy().contains("key")))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        for info in inspect(&read_text(&path)?, &path.display().to_string())? {
            out.push((path.clone(), info));
        }
    }
    Ok(out)
}

/// The PEM blocks of a text, each with its armour.
fn pem_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.starts_with("-----BEGIN ") {
            current.clear();
        }
        current.push_str(line);
        current.push('\n');
        if line.starts_with("-----END ") {
            blocks.push(std::mem::take(&mut current));
        }
    }
    blocks
}

fn ensure_dir(dir: &Path) -> Result<(), PkiError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|source| PkiError::Io {
        operation: "create the directory",
        path: dir.to_path_buf(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io { operation: "read", path: path.to_path_buf(), source })
}

/// Reads a key file through `mld-secret`: not a link, a regular file, owned by root or the
/// reader, no group or other access.
pub fn read_secret(path: &Path, what: &'static str) -> Result<Zeroizing<String>, PkiError> {
    let mut file: File = mld_secret::open_secret_file(path, what)?;
    let mut text = Zeroizing::new(String::new());
    file.read_to_string(&mut text).map_err(|source| PkiError::Io { operation: "read", path: path.to_path_buf(), source })?;
    Ok(text)
}

/// Writes `bytes` to a new temporary file with `mode` beside `path`, syncs it, and renames
/// it over `path`.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let io = |operation, source| PkiError::Io { operation, path: temp.clone(), source };
    let _ = std::fs::remove_file(&temp);
    let mut file =
        OpenOptions::new().write(true).create_new(true).mode(mode).custom_flags(libc::O_NOFOLLOW).open(&temp).map_err(|error| io("create", error))?;
    file.write_all(bytes).map_err(|error| io("write", error))?;
    file.sync_all().map_err(|error| io("sync", error))?;
    drop(file);
    std::fs::rename(&temp, path).map_err(|source| PkiError::Io { operation: "rename into place", path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time")
    }

    fn plan(local_ca: bool) -> Plan {
        Plan {
            node: "gw-1".to_string(),
            local_ca,
            ca_name: "ml-defender CA".to_string(),
            ca_lifetime: Duration::days(3650),
            leaf_lifetime: Duration::days(90),
            etcd_member_sans: Some(vec!["localhost".to_string(), "127.0.0.1".to_string()]),
        }
    }

    fn steps(outcomes: &[Outcome]) -> Vec<(String, Step)> {
        outcomes.iter().map(|outcome| (outcome.file.file_name().expect("name").to_string_lossy().into_owned(), outcome.step.clone())).collect()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn provisioning_creates_what_is_missing_then_keeps_it_and_renews_only_what_is_due() {
        let dir = tempfile::tempdir().expect("dir");
        let first = provision(dir.path(), &plan(true), now()).expect("first");
        assert!(first.iter().all(|outcome| outcome.step == Step::Created), "{:?}", steps(&first));
        assert_eq!(first.len(), 5, "CA key, bundle, three leaves");
        for key in [CA_KEY, "etcd-client-key.pem", "etcd-server-key.pem", "etcd-peer-key.pem"] {
            assert_eq!(mode(&dir.path().join(key)), 0o600, "{key}");
        }
        assert_eq!(mode(&dir.path().join("etcd-client.pem")), 0o644);
        let before = std::fs::read(dir.path().join("etcd-client.pem")).expect("read");
        let again = provision(dir.path(), &plan(true), now() + Duration::days(1)).expect("again");
        assert!(again.iter().all(|outcome| outcome.step == Step::Kept), "{:?}", steps(&again));
        assert_eq!(std::fs::read(dir.path().join("etcd-client.pem")).expect("read"), before, "kept means the same file");
        // 61 days in: two thirds of 90 are gone; every leaf is renewed, the CA kept.
        let later = provision(dir.path(), &plan(true), now() + Duration::days(61)).expect("later");
        let renewed: Vec<_> = later.iter().filter(|outcome| matches!(outcome.step, Step::Renewed(_))).collect();
        assert_eq!(renewed.len(), 3, "{:?}", steps(&later));
        let client = &status(dir.path()).expect("status").into_iter().find(|(path, _)| path.ends_with("etcd-client.pem")).expect("client").1;
        assert_eq!(client.health(now() + Duration::days(61)), Health::Valid, "a fresh certificate");
        assert_eq!(client.common_name, "gw-1");
    }

    #[test]
    fn a_changed_san_or_node_name_or_a_foreign_certificate_is_issued_again() {
        let dir = tempfile::tempdir().expect("dir");
        provision(dir.path(), &plan(true), now()).expect("first");
        let mut changed = plan(true);
        changed.etcd_member_sans = Some(vec!["localhost".to_string(), "10.77.0.3".to_string()]);
        changed.node = "gw-2".to_string();
        let outcomes = provision(dir.path(), &changed, now()).expect("changed");
        let reasons: Vec<String> =
            outcomes.iter().filter_map(|outcome| if let Step::Renewed(why) = &outcome.step { Some(why.clone()) } else { None }).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons.iter().any(|why| why.contains("CN is `gw-1`")), "{reasons:?}");
        // A certificate from another CA in a leaf's place.
        let other = Ca::create("other", Duration::days(10), now()).expect("other");
        let foreign = other.issue(&plan(true).leaves()[0].1, now()).expect("foreign");
        std::fs::write(dir.path().join("etcd-client.pem"), &foreign.cert_pem).expect("write");
        let outcomes = provision(dir.path(), &changed, now()).expect("foreign");
        assert!(outcomes.iter().any(|outcome| outcome.step == Step::Renewed("not signed by a CA in the trust bundle".to_string())), "{:?}", steps(&outcomes));
    }

    #[test]
    fn a_fleet_node_gets_its_bundle_from_the_operator_and_never_holds_the_ca_key() {
        let operator = tempfile::tempdir().expect("operator");
        let node = tempfile::tempdir().expect("node");
        let node_dir = node.path().join("pki");
        // Without a bundle, an external-CA node refuses to start, saying what to do.
        let error = provision(&node_dir, &plan(false), now()).expect_err("no bundle");
        assert!(error.to_string().contains("mldefender pki issue --node gw-1"), "{error}");
        init_ca(operator.path(), "fleet CA", Duration::days(3650), now()).expect("init");
        assert!(init_ca(operator.path(), "fleet CA", Duration::days(3650), now()).is_err(), "never replaces a CA");
        let bundle = operator.path().join("gw-1");
        issue_bundle(operator.path(), &plan(false), &bundle, now()).expect("issue");
        assert!(!bundle.join(CA_KEY).exists(), "the CA key stays on the operator machine");
        std::fs::create_dir_all(&node_dir).expect("mkdir");
        for entry in std::fs::read_dir(&bundle).expect("list") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), node_dir.join(entry.file_name())).expect("copy");
        }
        let outcomes = provision(&node_dir, &plan(false), now()).expect("installed");
        assert!(outcomes.iter().all(|outcome| outcome.step == Step::Kept), "{:?}", steps(&outcomes));
        // Due for renewal without the CA: kept, flagged.
        let outcomes = provision(&node_dir, &plan(false), now() + Duration::days(70)).expect("due");
        assert!(outcomes.iter().any(|outcome| matches!(outcome.step, Step::DueWithoutCa(_))), "{:?}", steps(&outcomes));
        // Expired without the CA: refused, naming the file and the remedy.
        let error = provision(&node_dir, &plan(false), now() + Duration::days(91)).expect_err("expired");
        assert!(error.to_string().contains("etcd-client.pem") && error.to_string().contains("expired"), "{error}");
    }

    #[test]
    fn during_a_ca_rotation_both_cas_are_trusted_and_new_leaves_come_from_the_new_one() {
        let dir = tempfile::tempdir().expect("dir");
        provision(dir.path(), &plan(true), now()).expect("first");
        let old_client = status(dir.path()).expect("status").into_iter().find(|(path, _)| path.ends_with("etcd-client.pem")).expect("client").1;
        let new_ca = rotate_ca(dir.path(), "ml-defender CA 2", Duration::days(3650), now() + Duration::days(1)).expect("rotate");
        let trusted = read_bundle(dir.path()).expect("bundle");
        assert_eq!(trusted.len(), 2, "old and new during the overlap");
        assert!(trusted.iter().any(|ca| old_client.signed_by(ca)), "old leaves still verify");
        let outcomes = reissue(dir.path(), &plan(true), now() + Duration::days(1)).expect("reissue");
        assert_eq!(outcomes.iter().filter(|outcome| matches!(outcome.step, Step::Renewed(_))).count(), 3);
        let new_client = status(dir.path()).expect("status").into_iter().find(|(path, _)| path.ends_with("etcd-client.pem")).expect("client").1;
        assert!(new_client.signed_by(&new_ca), "new leaves come from the new CA");
    }

    #[test]
    fn a_ca_key_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        provision(dir.path(), &plan(true), now()).expect("first");
        std::fs::set_permissions(dir.path().join(CA_KEY), std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = provision(dir.path(), &plan(true), now()).expect_err("open key");
        assert!(error.to_string().contains("chmod 600"), "{error}");
    }
}
