//! Shared by the model tests: the ONNX Runtime library and a signed copy of the fixture model.

#![allow(dead_code)] // each test binary uses part of this

use std::path::{Path, PathBuf};

use mld_model::signing::{self, ModelPublicKey};
use mld_model::ModelFiles;

pub const FIXTURE_NAME: &str = "fixture-rf";
const DEFAULT_ONNXRUNTIME: &str = "/usr/local/lib/mldefender/libonnxruntime.so.1.31.1";

/// The ONNX Runtime library: `MLD_ONNXRUNTIME`, or where scripts/setup installs it. Missing is a
/// failure, not a skip: CI runs scripts/setup first.
pub fn onnxruntime_library() -> PathBuf {
    let path = std::env::var_os("MLD_ONNXRUNTIME").map_or_else(|| PathBuf::from(DEFAULT_ONNXRUNTIME), PathBuf::from);
    assert!(
        path.is_file(),
        "ONNX Runtime library {} not found: run scripts/setup (as root), or set MLD_ONNXRUNTIME to libonnxruntime.so.1.31.1",
        path.display()
    );
    path
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The fixture's metadata document, as committed.
pub fn fixture_metadata() -> serde_json::Value {
    let path = fixtures_dir().join(format!("{FIXTURE_NAME}.json"));
    serde_json::from_slice(&std::fs::read(&path).expect("read fixture metadata")).expect("parse fixture metadata")
}

/// The feature names the fixture lists: what a build that computes them would know.
pub fn fixture_features() -> Vec<String> {
    serde_json::from_value(fixture_metadata()["features"].clone()).expect("fixture features")
}

/// A copy of the fixture model in its own temp dir, signed with a key pair made for the test.
pub struct SignedModel {
    pub dir: tempfile::TempDir,
    pub files: ModelFiles,
    pub private_key: PathBuf,
    pub public_key: ModelPublicKey,
}

impl SignedModel {
    pub fn from_fixture() -> SignedModel {
        let dir = tempfile::tempdir().expect("temp dir");
        for extension in ["onnx", "json"] {
            let name = format!("{FIXTURE_NAME}.{extension}");
            std::fs::copy(fixtures_dir().join(&name), dir.path().join(&name)).expect("copy fixture");
        }
        let private_key = dir.path().join("model-signing.key");
        let public_key = signing::generate_key_pair(&private_key, &dir.path().join("model-signing.pub")).expect("generate key pair");
        let files = ModelFiles::in_dir(dir.path(), FIXTURE_NAME).expect("model files");
        let model = SignedModel { dir, files, private_key, public_key };
        model.sign();
        model
    }

    pub fn sign(&self) {
        signing::sign(&self.private_key, &self.files.metadata).expect("sign fixture metadata");
    }

    /// Rewrites the metadata with `change` applied, and signs it again.
    pub fn change_metadata(&self, change: impl FnOnce(&mut serde_json::Value)) {
        let mut document = fixture_metadata();
        change(&mut document);
        let text = serde_json::to_string_pretty(&document).expect("serialize metadata") + "\n";
        std::fs::write(&self.files.metadata, text).expect("write metadata");
        self.sign();
    }

    /// Knows exactly the fixture's features.
    pub fn is_known_feature() -> impl Fn(&str) -> bool {
        let known = fixture_features();
        move |name: &str| known.iter().any(|feature| feature == name)
    }
}
