//! `mldefender model keygen|sign|check`.

use std::path::{Path, PathBuf};

use mld_detect::scorer::OnnxScorer;
use mld_model::signing;

use mld_runtime::Exit;

pub fn keygen(private_key: &Path, public_key: &Path) -> anyhow::Result<Exit> {
    match signing::generate_key_pair(private_key, public_key) {
        Ok(key) => {
            println!("{}", key.to_base64());
            eprintln!(
                "mldefender: created `{}` (0600) and `{}`; set detect.model-public-key = \"{}\" to trust models it signs",
                private_key.display(),
                public_key.display(),
                key.to_base64()
            );
            Ok(Exit::Success)
        }
        Err(error) => {
            eprintln!("mldefender: error: {error}");
            Ok(Exit::Failure)
        }
    }
}

pub fn sign(private_key: &Path, metadata: &[PathBuf]) -> anyhow::Result<Exit> {
    for path in metadata {
        match signing::sign(private_key, path) {
            Ok(signature) => eprintln!("mldefender: signed `{}` → `{}`", path.display(), signature.display()),
            Err(error) => {
                eprintln!("mldefender: error: {error}");
                return Ok(Exit::Failure);
            }
        }
    }
    Ok(Exit::Success)
}

pub fn check(config: Option<&Path>, dir: Option<&Path>) -> anyhow::Result<Exit> {
    let config = match crate::load::config(config) {
        Ok(config) => config,
        Err(exit) => return Ok(exit),
    };
    let dir = dir.unwrap_or(&config.detect.models_dir);
    let windows_secs: Vec<u64> = config.windows.lengths.iter().map(|length| length.as_secs()).collect();
    match OnnxScorer::load(&config.detect.onnxruntime, dir, &config.detect.model_public_key, &windows_secs) {
        Ok(scorer) => {
            println!("ok: {}: {}", dir.display(), scorer.describe());
            Ok(Exit::Success)
        }
        Err(error) => {
            println!("FAILED: {}: {error}", dir.display());
            Ok(Exit::Failure)
        }
    }
}
