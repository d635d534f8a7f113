//! Signed ONNX models: the files, the checks made before a model is used, batched inference.
//!
//! A model `<name>` is three files in one directory: `<name>.onnx`, its metadata `<name>.json`
//! and `<name>.json.sig`, an Ed25519 signature over the exact bytes of the metadata (which holds
//! the SHA-256 of the `.onnx`, so the signature covers both). [`LoadedModel::load`] fails closed:
//! a model is used only when every check passes, and the error names the check and the file.
//!
//! ONNX Runtime is a shared library loaded once per process by [`init_runtime`] (ort's
//! `load-dynamic`); nothing here touches ort before that, so a missing library is an error, not
//! ort's panic. A session runs on one intra-op thread, on whichever thread calls
//! [`LoadedModel::predict`]: callers give it an OS thread of its own, off any async worker.

use std::collections::HashSet;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::signing::{self, ModelPublicKey, SigningError};

/// The name of the model's single input, f32 [N, features].
pub const INPUT_NAME: &str = "input";
/// The name of the output read by [`LoadedModel::predict`], f32 [N, classes].
pub const PROBABILITIES_NAME: &str = "probabilities";
/// The output of an embedding model: f32 [N, dimensions].
pub const EMBEDDING_NAME: &str = "embedding";

/// Metadata and signature files are small; a larger one is not a model's.
const MAX_METADATA_BYTES: u64 = 1 << 20;
const MAX_SIGNATURE_BYTES: u64 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("ONNX Runtime library `{path}` does not exist (scripts/setup installs it)")]
    RuntimeMissing { path: PathBuf },
    #[error("failed to load ONNX Runtime library `{path}`: {message}")]
    RuntimeLoad { path: PathBuf, message: String },
    #[error("ONNX Runtime is already loaded from `{loaded}`; cannot load `{requested}` as well")]
    RuntimeAlreadyLoaded { loaded: PathBuf, requested: PathBuf },
    #[error("ONNX Runtime is not loaded; load it (init_runtime) before model `{path}`")]
    RuntimeNotLoaded { path: PathBuf },
    #[error("invalid model name {name:?}: it must be a plain file name without `/` or a leading `.`")]
    InvalidName { name: String },
    #[error("model {what} `{path}` does not exist")]
    Missing { what: &'static str, path: PathBuf },
    #[error("failed to read model {what} `{path}`")]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("model {what} `{path}` is larger than {limit} bytes")]
    TooLarge { what: &'static str, path: PathBuf, limit: u64 },
    #[error("bad model signature `{signature}` for metadata `{metadata}`")]
    Signature { signature: PathBuf, metadata: PathBuf, source: SigningError },
    #[error("invalid model metadata `{path}`: {reason}")]
    Metadata { path: PathBuf, reason: String },
    #[error("model `{onnx}` was changed after signing: its SHA-256 is {actual}, metadata `{metadata}` says {expected}")]
    Sha256Mismatch { onnx: PathBuf, metadata: PathBuf, expected: String, actual: String },
    #[error("model metadata `{path}` lists no features")]
    NoFeatures { path: PathBuf },
    #[error("model metadata `{path}` lists feature `{name}` twice")]
    DuplicateFeature { path: PathBuf, name: String },
    #[error("model metadata `{path}` lists feature `{name}`, which this build does not compute")]
    UnknownFeature { path: PathBuf, name: String },
    #[error("failed to load ONNX model `{path}`")]
    Session { path: PathBuf, source: ort::Error },
    #[error("ONNX model `{path}` breaks the model contract: {reason}")]
    Contract { path: PathBuf, reason: String },
    #[error("feature count mismatch: ONNX model `{onnx}` takes {model_features} features, metadata `{metadata}` lists {metadata_features}")]
    FeatureCountMismatch { onnx: PathBuf, metadata: PathBuf, model_features: i64, metadata_features: usize },
    #[error("class count mismatch: ONNX model `{onnx}` gives {model_classes} values per flow, metadata `{metadata}` lists {metadata_classes} (its classes, or an embedding's dimensions)")]
    ClassCountMismatch { onnx: PathBuf, metadata: PathBuf, model_classes: i64, metadata_classes: usize },
    #[error("batch for model `{model}` has {values} values; {flows} flows of {features} features need {expected}")]
    BatchShape { model: String, values: usize, flows: usize, features: usize, expected: usize },
    #[error("failed to run model `{model}` on a batch of {flows} flows")]
    Inference { model: String, flows: usize, source: ort::Error },
    #[error("model `{model}` returned {reason}")]
    Output { model: String, reason: String },
}

/// Loads the ONNX Runtime shared library (once per process) and creates the process's
/// environment. A second call with the same library is a no-op; with another one, an error
/// (ort can hold only one library per process). A relative path is taken from the working
/// directory.
pub fn init_runtime(dylib: &Path) -> Result<(), ModelError> {
    let mut runtime = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    let library = match std::fs::canonicalize(dylib) {
        Ok(library) if library.is_file() => library,
        Ok(_) => return Err(ModelError::RuntimeLoad { path: dylib.to_path_buf(), message: "not a file".to_string() }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Err(ModelError::RuntimeMissing { path: dylib.to_path_buf() }),
        Err(error) => return Err(ModelError::RuntimeLoad { path: dylib.to_path_buf(), message: error.to_string() }),
    };
    if let Some(loaded) = runtime.as_ref() {
        if loaded.library != library {
            return Err(ModelError::RuntimeAlreadyLoaded { loaded: loaded.library.clone(), requested: library });
        }
        if loaded.environment.is_some() {
            return Ok(());
        }
    }
    let load_error = |message: String| ModelError::RuntimeLoad { path: dylib.to_path_buf(), message };
    // ort reports a missing, foreign or too old library as an error, but asserts on a few
    // impossible-looking states; a panic there must not take the task down without a message.
    let builder = catch_unwind(AssertUnwindSafe(|| ort::init_from(&library)))
        .map_err(|panic| load_error(panic_message(panic.as_ref())))?
        .map_err(|error| load_error(error.to_string()))?;
    // From here ort holds the library for the life of the process, whatever happens next.
    let loaded = runtime.get_or_insert_with(|| Runtime { library: library.clone(), environment: None });
    let environment = catch_unwind(AssertUnwindSafe(|| builder.with_name("mldefender").with_telemetry(false).build()))
        .map_err(|panic| load_error(panic_message(panic.as_ref())))?
        .map_err(|error| load_error(error.to_string()))?;
    loaded.environment = Some(environment);
    Ok(())
}

/// The three files of a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFiles {
    pub onnx: PathBuf,
    pub metadata: PathBuf,
    pub signature: PathBuf,
}

impl ModelFiles {
    /// `<dir>/<name>.onnx`, `<dir>/<name>.json`, `<dir>/<name>.json.sig`.
    pub fn in_dir(dir: &Path, name: &str) -> Result<ModelFiles, ModelError> {
        if name.is_empty() || name.starts_with('.') || name.contains('/') || name.contains('\0') {
            return Err(ModelError::InvalidName { name: name.to_string() });
        }
        let metadata = dir.join(format!("{name}.json"));
        Ok(ModelFiles { onnx: dir.join(format!("{name}.onnx")), signature: signing::signature_path(&metadata), metadata })
    }
}

/// What a model's task is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Binary,
    Multiclass,
    /// Maps a flow to a vector (the similarity index's embedder): no classes.
    Embedding,
}

/// A model's metadata: the fields this crate uses, checked, and the whole document as JSON.
#[derive(Clone, Debug)]
pub struct ModelMetadata {
    name: String,
    version: String,
    kind: ModelKind,
    classes: Vec<String>,
    /// Values per flow in the output: the classes' count, or the embedding's dimensions.
    width: usize,
    features: Vec<String>,
    missing: f32,
    sha256: String,
    document: serde_json::Value,
}

impl ModelMetadata {
    /// Parses metadata JSON. Required fields must have their types; other fields are kept,
    /// unread, in [`ModelMetadata::document`]. Features are checked by [`LoadedModel::load`].
    pub fn from_json(bytes: &[u8]) -> Result<ModelMetadata, String> {
        let raw: RawMetadata = serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
        let document: serde_json::Value = serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
        if raw.name.is_empty() {
            return Err("`name` is empty".to_string());
        }
        let sha256 = raw.sha256;
        if sha256.len() != 64 || !sha256.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!("`sha256` must be 64 lowercase hex digits, not {sha256:?}"));
        }
        let mut seen = HashSet::new();
        if let Some(duplicate) = raw.classes.iter().find(|class| !seen.insert(class.as_str())) {
            return Err(format!("`classes` lists `{duplicate}` twice"));
        }
        match (raw.kind, raw.classes.len()) {
            (ModelKind::Binary, 2) => {}
            (ModelKind::Binary, n) => return Err(format!("`kind` is binary but `classes` lists {n} classes")),
            (ModelKind::Multiclass, n) if n < 2 => return Err(format!("`kind` is multiclass but `classes` lists {n} classes")),
            (ModelKind::Multiclass, _) => {}
            (ModelKind::Embedding, 0) => {}
            (ModelKind::Embedding, n) => return Err(format!("`kind` is embedding but `classes` lists {n} classes")),
        }
        let width = match (raw.kind, raw.dimensions) {
            (ModelKind::Embedding, Some(dimensions)) if dimensions > 0 => dimensions,
            (ModelKind::Embedding, _) => return Err("`kind` is embedding but `dimensions` is missing or 0".to_string()),
            _ => raw.classes.len(),
        };
        if raw.onnx.input != INPUT_NAME {
            return Err(format!("`onnx.input` is {:?}; the model contract's input is {INPUT_NAME:?}", raw.onnx.input));
        }
        let output = output_name(raw.kind);
        if !raw.onnx.outputs.iter().any(|listed| listed == output) {
            return Err(format!("`onnx.outputs` does not list {output:?}"));
        }
        Ok(ModelMetadata {
            name: raw.name,
            version: raw.version,
            kind: raw.kind,
            classes: raw.classes,
            width,
            features: raw.features,
            missing: raw.missing,
            sha256,
            document,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// Class names, in the order of the probabilities.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Feature names, in the order of the input columns.
    pub fn features(&self) -> &[String] {
        &self.features
    }

    /// The value the model was trained with for a feature that is absent.
    pub fn missing(&self) -> f32 {
        self.missing
    }

    /// SHA-256 of the `.onnx` file, lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The whole metadata document (training, held-out results and any other fields).
    pub fn document(&self) -> &serde_json::Value {
        &self.document
    }
}

/// A model that passed every check, ready for batched inference.
pub struct LoadedModel {
    files: ModelFiles,
    metadata: ModelMetadata,
    session: Session,
    n_features: usize,
    n_classes: usize,
    /// Reused between calls: grows to the largest batch, never shrinks.
    probabilities: Vec<f32>,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("name", &self.metadata.name)
            .field("version", &self.metadata.version)
            .field("sha256", &self.metadata.sha256)
            .field("onnx", &self.files.onnx)
            .finish_non_exhaustive()
    }
}

impl LoadedModel {
    /// Loads a model, checking in order: every file can be read; the signature verifies the
    /// metadata under `public_key`; the metadata is well formed; the `.onnx` has the SHA-256 the
    /// metadata states; the features are listed, distinct and all known (`is_known_feature`);
    /// the ONNX graph takes `input` f32 [N, features] and gives `probabilities` f32 [N, classes].
    /// The session is built from the bytes that were hashed, never from a second read.
    pub fn load(files: ModelFiles, public_key: &ModelPublicKey, is_known_feature: impl Fn(&str) -> bool) -> Result<LoadedModel, ModelError> {
        let onnx_bytes = read_file("file", &files.onnx, None)?;
        let metadata_bytes = read_signed_metadata(&files, public_key)?;

        // Parsed only once authenticated.
        let metadata = ModelMetadata::from_json(&metadata_bytes).map_err(|reason| ModelError::Metadata { path: files.metadata.clone(), reason })?;

        let actual = hex::encode(Sha256::digest(&onnx_bytes));
        if actual != metadata.sha256 {
            return Err(ModelError::Sha256Mismatch { onnx: files.onnx.clone(), metadata: files.metadata.clone(), expected: metadata.sha256.clone(), actual });
        }

        check_features(&metadata, &files.metadata, is_known_feature)?;

        let session = build_session(&files.onnx, &onnx_bytes)?;
        let n_features = check_input(&session, &files, metadata.features.len())?;
        let n_classes = check_output(&session, &files, output_name(metadata.kind), metadata.width)?;
        Ok(LoadedModel { files, metadata, session, n_features, n_classes, probabilities: Vec::new() })
    }

    pub fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    pub fn files(&self) -> &ModelFiles {
        &self.files
    }

    /// SHA-256 of the `.onnx` file (checked against the signed metadata), lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.metadata.sha256
    }

    /// Feature names, in the order of a row's columns.
    pub fn features(&self) -> &[String] {
        &self.metadata.features
    }

    /// Class names, in the order of a flow's probabilities (none for an embedding).
    pub fn classes(&self) -> &[String] {
        &self.metadata.classes
    }

    /// Values per flow in [`LoadedModel::predict`]'s result: classes, or dimensions.
    pub fn width(&self) -> usize {
        self.metadata.width
    }

    /// Scores a batch: `rows` holds `n` rows of `features().len()` values each, row-major.
    /// Returns the probabilities, `n` rows of `classes().len()` values each, row-major, in a
    /// buffer reused by the next call. The input is passed to ONNX Runtime without a copy.
    pub fn predict(&mut self, rows: &[f32], n: usize) -> Result<&[f32], ModelError> {
        let expected = n.checked_mul(self.n_features).filter(|&expected| expected == rows.len());
        let Some(expected) = expected else {
            return Err(ModelError::BatchShape {
                model: self.metadata.name.clone(),
                values: rows.len(),
                flows: n,
                features: self.n_features,
                expected: n.saturating_mul(self.n_features),
            });
        };
        self.probabilities.clear();
        if n == 0 {
            return Ok(&self.probabilities);
        }
        let inference_error = |source| ModelError::Inference { model: self.metadata.name.clone(), flows: n, source };
        let input = TensorRef::from_array_view(([n, self.n_features], &rows[..expected])).map_err(inference_error)?;
        let outputs = self.session.run(ort::inputs![input]).map_err(inference_error)?;
        let output_error = |reason: String| ModelError::Output { model: self.metadata.name.clone(), reason };
        let name = output_name(self.metadata.kind);
        let probabilities = outputs.get(name).ok_or_else(|| output_error(format!("no `{name}` output")))?;
        let (shape, values) = probabilities.try_extract_tensor::<f32>().map_err(|error| output_error(format!("`{name}` that is not f32: {error}")))?;
        let expected_shape = [n as i64, self.n_classes as i64];
        if **shape != expected_shape {
            return Err(output_error(format!("`{name}` of shape {:?} for a batch of {n}; expected {expected_shape:?}", &**shape)));
        }
        self.probabilities.extend_from_slice(values);
        Ok(&self.probabilities)
    }
}

/// The process's ONNX Runtime: the library ort loaded and, once built, the environment.
struct Runtime {
    library: PathBuf,
    environment: Option<Environment>,
}

static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

#[derive(Deserialize)]
struct RawMetadata {
    name: String,
    #[serde(deserialize_with = "version_text")]
    version: String,
    kind: ModelKind,
    #[serde(default)]
    classes: Vec<String>,
    #[serde(default)]
    dimensions: Option<usize>,
    features: Vec<String>,
    missing: f32,
    sha256: String,
    onnx: RawOnnx,
}

/// The output a model of `kind` gives.
fn output_name(kind: ModelKind) -> &'static str {
    match kind {
        ModelKind::Binary | ModelKind::Multiclass => PROBABILITIES_NAME,
        ModelKind::Embedding => EMBEDDING_NAME,
    }
}

/// `version` may be written as text ("3") or as a whole number (3).
fn version_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct VersionVisitor;
    impl serde::de::Visitor<'_> for VersionVisitor {
        type Value = String;
        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("a string or a whole number")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<String, E> {
            Ok(text.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<String, E> {
            Ok(number.to_string())
        }
    }
    deserializer.deserialize_any(VersionVisitor)
}

/// `onnx.opset` and the rest of `onnx` are informative: the session checks the graph itself.
#[derive(Deserialize)]
struct RawOnnx {
    input: String,
    outputs: Vec<String>,
}

/// The metadata's exact bytes, once its signature verified under `public_key`.
pub(crate) fn read_signed_metadata(files: &ModelFiles, public_key: &ModelPublicKey) -> Result<Vec<u8>, ModelError> {
    let metadata_bytes = read_file("metadata", &files.metadata, Some(MAX_METADATA_BYTES))?;
    let signature_bytes = read_file("signature", &files.signature, Some(MAX_SIGNATURE_BYTES))?;
    let signature_error = |source| ModelError::Signature { signature: files.signature.clone(), metadata: files.metadata.clone(), source };
    let signature_text =
        std::str::from_utf8(&signature_bytes).map_err(|_| signature_error(SigningError::SignatureFormat { reason: "not UTF-8 text".to_string() }))?;
    signing::verify(public_key, &metadata_bytes, signature_text).map_err(signature_error)?;
    Ok(metadata_bytes)
}

pub(crate) fn read_file(what: &'static str, path: &Path, limit: Option<u64>) -> Result<Vec<u8>, ModelError> {
    let read_error = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ModelError::Missing { what, path: path.to_path_buf() }
        } else {
            ModelError::Read { what, path: path.to_path_buf(), source }
        }
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    match limit {
        None => {
            let mut file = file;
            file.read_to_end(&mut bytes).map_err(read_error)?;
        }
        Some(limit) => {
            file.take(limit + 1).read_to_end(&mut bytes).map_err(read_error)?;
            if bytes.len() as u64 > limit {
                return Err(ModelError::TooLarge { what, path: path.to_path_buf(), limit });
            }
        }
    }
    Ok(bytes)
}

fn check_features(metadata: &ModelMetadata, path: &Path, is_known_feature: impl Fn(&str) -> bool) -> Result<(), ModelError> {
    if metadata.features.is_empty() {
        return Err(ModelError::NoFeatures { path: path.to_path_buf() });
    }
    let mut seen = HashSet::new();
    for name in &metadata.features {
        if !seen.insert(name.as_str()) {
            return Err(ModelError::DuplicateFeature { path: path.to_path_buf(), name: name.clone() });
        }
        if !is_known_feature(name) {
            return Err(ModelError::UnknownFeature { path: path.to_path_buf(), name: name.clone() });
        }
    }
    Ok(())
}

pub(crate) fn build_session(path: &Path, onnx_bytes: &[u8]) -> Result<Session, ModelError> {
    let environment = RUNTIME
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .and_then(|runtime| runtime.environment.clone())
        .ok_or_else(|| ModelError::RuntimeNotLoaded { path: path.to_path_buf() })?;
    let session_error = |source| ModelError::Session { path: path.to_path_buf(), source };
    // Builder errors carry the builder back for recovery; only the message is kept.
    let builder_error = |error: ort::Error<ort::session::builder::SessionBuilder>| session_error(ort::Error::new(error.message()));
    Session::builder(&environment)
        .map_err(session_error)?
        .with_intra_threads(1)
        .map_err(builder_error)?
        .with_inter_threads(1)
        .map_err(builder_error)?
        .commit_from_memory(onnx_bytes)
        .map_err(session_error)
}

/// The number of features the graph takes: one input, `input`, f32 [N, F], F fixed.
fn check_input(session: &Session, files: &ModelFiles, n_metadata_features: usize) -> Result<usize, ModelError> {
    let contract_error = |reason: String| ModelError::Contract { path: files.onnx.clone(), reason };
    let names: Vec<&str> = session.inputs().iter().map(|input| input.name()).collect();
    let [input] = session.inputs() else {
        return Err(contract_error(format!("it has inputs {names:?}; it must have exactly one, `{INPUT_NAME}`")));
    };
    if input.name() != INPUT_NAME {
        return Err(contract_error(format!("its input is `{}`, not `{INPUT_NAME}`", input.name())));
    }
    let shape = f32_matrix_shape(input.dtype()).map_err(|reason| contract_error(format!("input `{INPUT_NAME}` {reason}")))?;
    if shape[0] >= 0 {
        return Err(contract_error(format!("input `{INPUT_NAME}` has a fixed batch size {}; the first dimension must be dynamic", shape[0])));
    }
    if shape[1] < 0 || shape[1] as u64 != n_metadata_features as u64 {
        return Err(ModelError::FeatureCountMismatch {
            onnx: files.onnx.clone(),
            metadata: files.metadata.clone(),
            model_features: shape[1],
            metadata_features: n_metadata_features,
        });
    }
    Ok(n_metadata_features)
}

/// The values per flow the graph gives: output `name` (`probabilities` or `embedding`),
/// f32 [N, W], W fixed and equal to what the metadata says.
fn check_output(session: &Session, files: &ModelFiles, name: &str, n_metadata_classes: usize) -> Result<usize, ModelError> {
    let contract_error = |reason: String| ModelError::Contract { path: files.onnx.clone(), reason };
    let Some(output) = session.outputs().iter().find(|output| output.name() == name) else {
        let names: Vec<&str> = session.outputs().iter().map(|output| output.name()).collect();
        return Err(contract_error(format!("it has outputs {names:?}, none named `{name}`")));
    };
    let shape = f32_matrix_shape(output.dtype()).map_err(|reason| contract_error(format!("output `{name}` {reason}")))?;
    if shape[1] < 0 || shape[1] as u64 != n_metadata_classes as u64 {
        return Err(ModelError::ClassCountMismatch {
            onnx: files.onnx.clone(),
            metadata: files.metadata.clone(),
            model_classes: shape[1],
            metadata_classes: n_metadata_classes,
        });
    }
    Ok(n_metadata_classes)
}

/// The two dimensions of an f32 matrix (-1 for a dynamic one), or why the type is not one.
fn f32_matrix_shape(dtype: &ValueType) -> Result<[i64; 2], String> {
    match dtype {
        ValueType::Tensor { ty: TensorElementType::Float32, shape, .. } => match **shape {
            [rows, columns] => Ok([rows, columns]),
            ref other => Err(format!("has {} dimensions; it must have 2 (flows, values)", other.len())),
        },
        other => Err(format!("is {other}; it must be an f32 tensor")),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let message = panic
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    format!("ONNX Runtime panicked: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const METADATA: &str = r#"{
        "name": "m", "version": "2", "kind": "binary", "classes": ["benign", "attack"],
        "features": ["a", "b"], "missing": 0.0,
        "sha256": "57804f9047996545ca220a3f0345e17a08874a5f0fcfdac622ce74f977e6ed8f",
        "onnx": {"input": "input", "outputs": ["label", "probabilities"], "opset": {"": 17, "ai.onnx.ml": 3}},
        "training": {"rows": 10}, "heldout": {"f1": 0.9}, "extra": [1, 2]
    }"#;

    fn with(field: &str, value: &str) -> String {
        let mut document: serde_json::Value = serde_json::from_str(METADATA).expect("parse");
        document[field] = serde_json::from_str(value).expect("value");
        document.to_string()
    }

    #[test]
    fn metadata_keeps_unread_fields_and_checks_the_ones_it_uses() {
        let metadata = ModelMetadata::from_json(METADATA.as_bytes()).expect("valid");
        assert_eq!(metadata.kind(), ModelKind::Binary);
        assert_eq!(metadata.classes(), ["benign", "attack"]);
        assert_eq!(metadata.document()["training"]["rows"], 10);
        assert_eq!(metadata.document()["extra"][1], 2);
        assert_eq!(ModelMetadata::from_json(with("version", "3").as_bytes()).expect("number").version(), "3");

        let error = |field: &str, value: &str| ModelMetadata::from_json(with(field, value).as_bytes()).expect_err(field);
        assert!(error("version", "-1").contains("expected a string or a whole number"));
        assert!(error("kind", "\"regression\"").contains("unknown variant `regression`"));
        assert!(error("classes", r#"["a","b","c"]"#).contains("binary but `classes` lists 3"));
        assert!(error("classes", r#"["a","a"]"#).contains("`a` twice"));
        assert!(error("sha256", "\"ABC\"").contains("64 lowercase hex"));
        assert!(error("features", "\"a\"").contains("invalid type"));
        assert!(error("onnx", r#"{"input": "x", "outputs": ["probabilities"]}"#).contains("`onnx.input`"));
        assert!(error("onnx", r#"{"input": "input", "outputs": ["label"]}"#).contains("probabilities"));
        let mut without: serde_json::Value = serde_json::from_str(METADATA).expect("parse");
        without.as_object_mut().expect("object").remove("sha256");
        let missing = ModelMetadata::from_json(without.to_string().as_bytes()).expect_err("no sha256");
        assert!(missing.contains("missing field `sha256`"), "{missing}");
    }

    #[test]
    fn model_file_names_come_from_the_name() {
        let files = ModelFiles::in_dir(Path::new("/m"), "attack").expect("valid");
        assert_eq!(files.onnx, Path::new("/m/attack.onnx"));
        assert_eq!(files.metadata, Path::new("/m/attack.json"));
        assert_eq!(files.signature, Path::new("/m/attack.json.sig"));
        for bad in ["", "../x", ".hidden", "a/b"] {
            assert!(matches!(ModelFiles::in_dir(Path::new("/m"), bad), Err(ModelError::InvalidName { .. })), "{bad}");
        }
    }
}
