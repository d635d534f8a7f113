//! Fleet configuration documents (ADR 0008): fleet-wide policy an operator publishes under
//! `/mld/config`, signed with an Ed25519 key whose public half is in every node's
//! `fleet.operator-public-key`. A node takes a document only when its signature holds, its
//! generation is newer than the last one taken, it sets only policy sections
//! (`mld_config::FLEET_SECTIONS`), and the node's configuration with it laid over passes
//! every check `config check` makes; otherwise it refuses it with every reason.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The key operators write documents under (etcd's root user, or a role for it).
pub const KEY: &str = "/mld/config";
/// The largest document taken.
pub const MAX_BYTES: usize = 64 * 1024;

/// A document as stored in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Increases with every document: an older one replayed is refused.
    pub generation: u64,
    /// TOML: the policy sections to lay over each node's configuration.
    pub toml: String,
    /// base64 Ed25519 signature over [`signed_bytes`].
    pub signature: String,
}

/// What the signature covers: a fixed label, the generation and the TOML.
pub fn signed_bytes(generation: u64, toml: &str) -> Vec<u8> {
    format!("mld-fleet-config\ngeneration {generation}\n{toml}").into_bytes()
}

/// Signs `toml` as document `generation` with the private key file (`mldefender model
/// keygen` makes the pair).
pub fn sign(private_key: &Path, generation: u64, toml: &str) -> anyhow::Result<Document> {
    let dir = tempfile::tempdir().context("failed to make a temporary directory")?;
    let body = dir.path().join("document");
    std::fs::write(&body, signed_bytes(generation, toml)).context("failed to write the bytes to sign")?;
    let signature_path = mld_model::signing::sign(private_key, &body).context("failed to sign the document")?;
    let signature = std::fs::read_to_string(&signature_path).context("failed to read the signature")?.trim().to_string();
    Ok(Document { generation, toml: toml.to_string(), signature })
}

/// A node's verdict on a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Taken: the merged configuration is valid.
    Accepted { generation: u64, merged: String },
    /// Refused, with every reason.
    Refused { generation: Option<u64>, errors: Vec<String> },
    /// The generation in force here, signed (read again after a reconnect or a restart):
    /// nothing to do.
    InForce { generation: u64 },
}

/// Judges the value found under [`KEY`] against the operator's key, the last generation
/// taken, and the node's own configuration text.
pub fn judge(value: &[u8], operator_key: Option<&str>, last_generation: u64, local_toml: &str) -> Verdict {
    let refused = |generation, errors: Vec<String>| Verdict::Refused { generation, errors };
    if value.len() > MAX_BYTES {
        return refused(None, vec![format!("the document is {} bytes, more than {MAX_BYTES}", value.len())]);
    }
    let document: Document = match serde_json::from_slice(value) {
        Ok(document) => document,
        Err(error) => return refused(None, vec![format!("not a fleet configuration document: {error}")]),
    };
    let generation = Some(document.generation);
    let Some(key_text) = operator_key else {
        return refused(generation, vec!["this node has no fleet.operator-public-key: it takes no configuration document".to_string()]);
    };
    let signature_holds = mld_model::signing::ModelPublicKey::from_base64(key_text)
        .and_then(|key| mld_model::signing::verify(&key, &signed_bytes(document.generation, &document.toml), &document.signature));
    if let Err(error) = signature_holds {
        return refused(generation, vec![format!("bad signature: {error}")]);
    }
    if document.generation == last_generation {
        return Verdict::InForce { generation: last_generation };
    }
    if document.generation < last_generation {
        return refused(generation, vec![format!("generation {} is not newer than generation {last_generation}, already taken", document.generation)]);
    }
    let merged = match mld_config::fleet_overlay(local_toml, &document.toml) {
        Ok(merged) => merged,
        Err(errors) => return refused(generation, errors),
    };
    match mld_config::Config::from_toml(&merged, "the node's configuration with the document") {
        Ok(_) => Verdict::Accepted { generation: document.generation, merged },
        Err(errors) => refused(generation, errors.errors.iter().map(ToString::to_string).collect()),
    }
}

/// The document in force, kept by the supervisor in `supervisor.state-dir` (root's, 0600).
pub const DOCUMENT_FILE: &str = "fleet-document.json";

/// The supervisor's side of configuration documents. A document is applied by restarting
/// the supervisor in place (it executes itself again, with the same pid): the tasks stop in
/// order and start with the new configuration, and the XDP program, its pinned links and
/// the blocks in force stay in the kernel throughout (the new run adopts them, and swaps
/// the new program, with the new allowlist, into the links atomically). At every start
/// the kept document is laid over the configuration file again.
#[derive(Debug, Clone)]
pub struct Documents {
    state_dir: std::path::PathBuf,
    operator_key: Option<String>,
    enabled: bool,
    /// The configuration file's text, before any document: a new document is laid over
    /// this, not over the one in force.
    pub base_toml: String,
    /// The generation in force (0: none).
    pub generation: u64,
    /// The TOML of the document in force.
    pub document_toml: Option<String>,
}

impl Documents {
    pub fn new(config: &mld_config::Config, base_toml: String) -> Documents {
        Documents {
            state_dir: config.supervisor.state_dir.clone(),
            operator_key: config.fleet.operator_public_key.clone(),
            enabled: config.fleet.enabled,
            base_toml,
            generation: 0,
            document_toml: None,
        }
    }

    fn path(&self) -> std::path::PathBuf {
        self.state_dir.join(DOCUMENT_FILE)
    }

    /// At start: the document kept by an earlier run laid over the file, when the fleet is
    /// on and the document still holds (its signature under the configured key, its
    /// sections, every check including the environment's); `Err` says why it does not, and
    /// the node then runs on its file alone. `Ok(None)`: no document kept.
    pub fn in_force(&mut self, origin: &str) -> Result<Option<(mld_config::Config, String)>, String> {
        if !self.enabled {
            return Ok(None);
        }
        let path = self.path();
        let value = match std::fs::read(&path) {
            Ok(value) => value,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(format!("failed to read `{}`: {error}", path.display())),
        };
        let (generation, merged) = match judge(&value, self.operator_key.as_deref(), 0, &self.base_toml) {
            Verdict::Accepted { generation, merged } => (generation, merged),
            Verdict::Refused { errors, .. } => return Err(format!("`{}` no longer holds: {}", path.display(), errors.join("; "))),
            Verdict::InForce { .. } => unreachable!("generation 0 is never a document's"),
        };
        let config = checked(&merged, origin).map_err(|errors| format!("`{}` no longer holds: {}", path.display(), errors.join("; ")))?;
        self.generation = generation;
        self.document_toml = serde_json::from_slice::<Document>(&value).ok().map(|document| document.toml);
        Ok(Some((config, merged)))
    }

    /// A document the fleet task took: judged again here (the fleet task faces the
    /// network; its word is not enough), checked against this machine, and kept when it
    /// holds. `Ok(generation)`: restart with it; `Err`: every reason, and nothing changed.
    pub fn adopt(&mut self, value: &str, origin: &str) -> Result<u64, (Option<u64>, Vec<String>)> {
        let (generation, merged) = match judge(value.as_bytes(), self.operator_key.as_deref(), self.generation, &self.base_toml) {
            Verdict::Accepted { generation, merged } => (generation, merged),
            Verdict::Refused { generation, errors } => return Err((generation, errors)),
            Verdict::InForce { generation } => return Err((Some(generation), vec![format!("generation {generation} is already in force")])),
        };
        checked(&merged, origin).map_err(|errors| (Some(generation), errors))?;
        let path = self.path();
        mld_supervisor::files::create_dirs(&self.state_dir, 0o700)
            .and_then(|()| mld_supervisor::files::write_atomically(&path, value.as_bytes(), 0o600))
            .map_err(|error| (Some(generation), vec![format!("failed to keep the document in `{}`: {error}", path.display())]))?;
        self.generation = generation;
        self.document_toml = serde_json::from_str::<Document>(value).ok().map(|document| document.toml);
        Ok(generation)
    }
}

/// The merged configuration parsed and checked against this machine (`config check`'s
/// environment checks: users, files, directories), or every error.
fn checked(merged: &str, origin: &str) -> Result<mld_config::Config, Vec<String>> {
    let config = mld_config::Config::from_toml(merged, origin).map_err(|errors| errors.errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    config.check_environment(origin).map_err(|errors| errors.errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_newer_document_signed_by_the_operator_that_keeps_the_configuration_valid_is_taken() {
        let dir = tempfile::tempdir().expect("dir");
        let (private, public) = (dir.path().join("operator.key"), dir.path().join("operator.pub"));
        let key = mld_model::signing::generate_key_pair(&private, &public).expect("keys").to_base64();
        let local = "[log]\nnode = \"gw-a\"\n";
        let good = sign(&private, 2, "[response]\nttl-scan-secs = 120\n").expect("sign");
        let value = serde_json::to_vec(&good).expect("json");
        assert!(matches!(judge(&value, Some(&key), 1, local), Verdict::Accepted { generation: 2, .. }));
        let errors = |verdict: Verdict| match verdict {
            Verdict::Refused { errors, .. } => errors,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(errors(judge(&value, None, 1, local))[0].contains("no fleet.operator-public-key"));
        assert!(errors(judge(&value, Some(&key), 3, local))[0].contains("not newer"), "a replay");
        assert_eq!(judge(&value, Some(&key), 2, local), Verdict::InForce { generation: 2 }, "the one in force, read again");
        let tampered = Document { toml: "[response]\nttl-scan-secs = 1\n".to_string(), ..good.clone() };
        assert!(errors(judge(&serde_json::to_vec(&tampered).expect("json"), Some(&key), 1, local))[0].starts_with("bad signature"));
        let other = dir.path().join("other");
        let other_key = mld_model::signing::generate_key_pair(&other, &dir.path().join("other.pub")).expect("keys").to_base64();
        assert!(errors(judge(&value, Some(&other_key), 1, local))[0].starts_with("bad signature"), "another operator's key");
        let invalid = sign(&private, 3, "[response]\nttl-scan-secs = 0\nmax-active-blocks = 0\n").expect("sign");
        let listed = errors(judge(&serde_json::to_vec(&invalid).expect("json"), Some(&key), 2, local));
        assert_eq!(listed.len(), 2, "every error: {listed:?}");
    }
}
