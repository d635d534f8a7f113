//! The sentence embedder (issue 19): a signed ONNX model of kind `text-embedding` that
//! maps short English text (event descriptions, an analyst's question) to a unit vector.
//!
//! A text model `<name>` is four files in one directory: `<name>.onnx`, its metadata
//! `<name>.json`, `<name>.json.sig` (Ed25519 over the metadata's exact bytes) and the
//! tokenizer the metadata names (`tokenizer.file`, the model's own `tokenizer.json`). The
//! signed metadata states the SHA-256 of both the graph and the tokenizer, so the signature
//! covers all three: a changed vocabulary changes every vector as surely as a changed
//! weight. [`TextModel::load`] checks, in order: the signature, the metadata, both hashes,
//! the tokenizer parses, the graph's inputs and output; it fails closed with the check
//! and the file named.
//!
//! Tokenisation is the `tokenizers` library reading the shipped `tokenizer.json` (no
//! hand-written WordPiece). Its stored truncation and padding (128 tokens, fixed padding)
//! are replaced: truncation at the metadata's `max_tokens` (sentence-transformers'
//! `max_seq_length`, 256), and a batch is padded to its longest text here, with mask 0.

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokenizers::{Tokenizer, TruncationParams};

use crate::model::{build_session, read_file, read_signed_metadata, ModelError, ModelFiles};
use crate::signing::ModelPublicKey;

/// The kind a text model's metadata must state.
pub const TEXT_KIND: &str = "text-embedding";
/// The graph's inputs, int64 [N, L] each, and its output, f32 [N, dimensions].
pub const TEXT_INPUTS: [&str; 2] = ["input_ids", "attention_mask"];
pub const TEXT_OUTPUT: &str = "sentence_embedding";
/// Text longer than this is refused before tokenising (a description is about 200 bytes;
/// 256 tokens of English never need more).
pub const MAX_TEXT_BYTES: usize = 4096;

const MAX_TOKENIZER_BYTES: u64 = 16 << 20;

/// A text model's signed metadata: the fields this crate uses.
#[derive(Clone, Debug)]
pub struct TextMetadata {
    pub name: String,
    pub version: String,
    pub dimensions: usize,
    pub max_tokens: usize,
    pub sha256: String,
    pub tokenizer_file: String,
    pub tokenizer_sha256: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokenizer {
    file: String,
    sha256: String,
}

#[derive(Deserialize)]
struct RawTextMetadata {
    name: String,
    version: String,
    kind: String,
    dimensions: usize,
    max_tokens: usize,
    sha256: String,
    tokenizer: RawTokenizer,
}

impl TextMetadata {
    /// Parses and checks the metadata (other fields are informative and kept in the file).
    pub fn from_json(bytes: &[u8]) -> Result<TextMetadata, String> {
        let raw: RawTextMetadata = serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
        if raw.kind != TEXT_KIND {
            return Err(format!("`kind` is {:?}, not {TEXT_KIND:?}", raw.kind));
        }
        if raw.name.is_empty() {
            return Err("`name` is empty".to_string());
        }
        if raw.dimensions == 0 || raw.dimensions > 4096 {
            return Err(format!("`dimensions` is {}; it must be 1..=4096", raw.dimensions));
        }
        if raw.max_tokens < 8 || raw.max_tokens > 512 {
            return Err(format!("`max_tokens` is {}; it must be 8..=512", raw.max_tokens));
        }
        for (field, hash) in [("sha256", &raw.sha256), ("tokenizer.sha256", &raw.tokenizer.sha256)] {
            if hash.len() != 64 || !hash.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(format!("`{field}` must be 64 lowercase hex digits, not {hash:?}"));
            }
        }
        let file = &raw.tokenizer.file;
        if file.is_empty() || file.starts_with('.') || file.contains('/') || file.contains('\0') {
            return Err(format!("`tokenizer.file` {file:?} must be a plain file name beside the model"));
        }
        Ok(TextMetadata {
            name: raw.name,
            version: raw.version,
            dimensions: raw.dimensions,
            max_tokens: raw.max_tokens,
            sha256: raw.sha256,
            tokenizer_file: raw.tokenizer.file,
            tokenizer_sha256: raw.tokenizer.sha256,
        })
    }
}

/// A text model that passed every check, with its buffers for batched inference.
pub struct TextModel {
    files: ModelFiles,
    metadata: TextMetadata,
    tokenizer: Tokenizer,
    session: Session,
    ids: Vec<i64>,
    mask: Vec<i64>,
    vectors: Vec<f32>,
}

impl std::fmt::Debug for TextModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextModel")
            .field("name", &self.metadata.name)
            .field("sha256", &self.metadata.sha256)
            .field("onnx", &self.files.onnx)
            .finish_non_exhaustive()
    }
}

impl TextModel {
    /// Loads `<dir>/<name>.{onnx,json,json.sig}` and the tokenizer beside them, checked
    /// against `public_key`. ONNX Runtime must be loaded first ([`crate::init_runtime`]).
    pub fn load(dir: &Path, name: &str, public_key: &ModelPublicKey) -> Result<TextModel, ModelError> {
        let files = ModelFiles::in_dir(dir, name)?;
        let metadata_bytes = read_signed_metadata(&files, public_key)?;
        // Parsed only once authenticated.
        let metadata = TextMetadata::from_json(&metadata_bytes).map_err(|reason| ModelError::Metadata { path: files.metadata.clone(), reason })?;

        let onnx_bytes = read_file("file", &files.onnx, None)?;
        check_sha256(&files.onnx, &files.metadata, &metadata.sha256, &onnx_bytes)?;
        let tokenizer_path: PathBuf = dir.join(&metadata.tokenizer_file);
        let tokenizer_bytes = read_file("tokenizer", &tokenizer_path, Some(MAX_TOKENIZER_BYTES))?;
        check_sha256(&tokenizer_path, &files.metadata, &metadata.tokenizer_sha256, &tokenizer_bytes)?;

        let tokenizer_error = |reason: String| ModelError::Metadata { path: tokenizer_path.clone(), reason };
        let mut tokenizer = Tokenizer::from_bytes(&tokenizer_bytes).map_err(|error| tokenizer_error(format!("not a tokenizer: {error}")))?;
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: metadata.max_tokens, ..TruncationParams::default() }))
            .map_err(|error| tokenizer_error(format!("cannot truncate at {} tokens: {error}", metadata.max_tokens)))?;
        tokenizer.with_padding(None);

        let session = build_session(&files.onnx, &onnx_bytes)?;
        check_graph(&session, &files, metadata.dimensions)?;
        Ok(TextModel { files, metadata, tokenizer, session, ids: Vec::new(), mask: Vec::new(), vectors: Vec::new() })
    }

    pub fn metadata(&self) -> &TextMetadata {
        &self.metadata
    }

    /// Dimensions of a vector.
    pub fn dims(&self) -> usize {
        self.metadata.dimensions
    }

    /// What makes the vectors, for an index manifest: `name vVERSION sha256:HASH`.
    pub fn source(&self) -> String {
        format!("{} v{} sha256:{}", self.metadata.name, self.metadata.version, self.metadata.sha256)
    }

    /// The token ids of one text, as the graph gets them (with `[CLS]`/`[SEP]`, truncated).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        Ok(self.encode(text)?.get_ids().to_vec())
    }

    /// Embeds a batch: `texts.len()` unit vectors of `dims()` values, row-major, in a buffer
    /// reused by the next call. The batch is padded to its longest text, so callers batch
    /// texts of similar length for speed; the vectors do not depend on the batch.
    pub fn embed(&mut self, texts: &[&str]) -> Result<&[f32], ModelError> {
        self.vectors.clear();
        if texts.is_empty() {
            return Ok(&self.vectors);
        }
        let encodings = texts.iter().map(|text| self.encode(text)).collect::<Result<Vec<_>, _>>()?;
        let length = encodings.iter().map(|encoding| encoding.get_ids().len()).max().unwrap_or(0).max(1);
        let n = texts.len();
        self.ids.clear();
        self.mask.clear();
        for encoding in &encodings {
            let ids = encoding.get_ids();
            self.ids.extend(ids.iter().map(|&id| i64::from(id)));
            self.mask.extend(encoding.get_attention_mask().iter().map(|&bit| i64::from(bit)));
            self.ids.resize(self.ids.len() + length - ids.len(), 0);
            self.mask.resize(self.mask.len() + length - ids.len(), 0);
        }
        let model = self.metadata.name.clone();
        let inference_error = |source| ModelError::Inference { model: model.clone(), flows: n, source };
        let ids = TensorRef::from_array_view(([n, length], &self.ids[..])).map_err(inference_error)?;
        let mask = TensorRef::from_array_view(([n, length], &self.mask[..])).map_err(inference_error)?;
        let outputs = self.session.run(ort::inputs![TEXT_INPUTS[0] => ids, TEXT_INPUTS[1] => mask]).map_err(inference_error)?;
        let output_error = |reason: String| ModelError::Output { model: model.clone(), reason };
        let output = outputs.get(TEXT_OUTPUT).ok_or_else(|| output_error(format!("no `{TEXT_OUTPUT}` output")))?;
        let (shape, values) = output.try_extract_tensor::<f32>().map_err(|error| output_error(format!("`{TEXT_OUTPUT}` that is not f32: {error}")))?;
        let expected = [n as i64, self.metadata.dimensions as i64];
        if **shape != expected {
            return Err(output_error(format!("`{TEXT_OUTPUT}` of shape {:?} for {n} texts; expected {expected:?}", &**shape)));
        }
        if let Some(bad) = values.iter().position(|value| !value.is_finite()) {
            return Err(output_error(format!("a value that is not finite for text {}", bad / self.metadata.dimensions)));
        }
        self.vectors.extend_from_slice(values);
        Ok(&self.vectors)
    }

    fn encode(&self, text: &str) -> Result<tokenizers::Encoding, ModelError> {
        let invalid = |reason: String| ModelError::Output { model: self.metadata.name.clone(), reason };
        if text.len() > MAX_TEXT_BYTES {
            return Err(invalid(format!("refused a text of {} bytes: at most {MAX_TEXT_BYTES}", text.len())));
        }
        self.tokenizer.encode_fast(text, true).map_err(|error| invalid(format!("cannot tokenise {:?}: {error}", truncated(text))))
    }
}

fn truncated(text: &str) -> &str {
    let mut end = text.len().min(60);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn check_sha256(file: &Path, metadata: &Path, expected: &str, bytes: &[u8]) -> Result<(), ModelError> {
    let actual = hex::encode(Sha256::digest(bytes));
    if actual != expected {
        return Err(ModelError::Sha256Mismatch { onnx: file.to_path_buf(), metadata: metadata.to_path_buf(), expected: expected.to_string(), actual });
    }
    Ok(())
}

/// Inputs `input_ids` and `attention_mask`, int64 [N, L] with both dynamic; output
/// `sentence_embedding`, f32 [N, dimensions].
fn check_graph(session: &Session, files: &ModelFiles, dimensions: usize) -> Result<(), ModelError> {
    let contract_error = |reason: String| ModelError::Contract { path: files.onnx.clone(), reason };
    let names: Vec<&str> = session.inputs().iter().map(|input| input.name()).collect();
    if names.len() != 2 || !TEXT_INPUTS.iter().all(|name| names.contains(name)) {
        return Err(contract_error(format!("it has inputs {names:?}; a text model has exactly {TEXT_INPUTS:?}")));
    }
    for input in session.inputs() {
        match input.dtype() {
            ValueType::Tensor { ty: TensorElementType::Int64, shape, .. } if shape.len() == 2 && shape[0] < 0 && shape[1] < 0 => {}
            other => return Err(contract_error(format!("input `{}` is {other}; it must be int64 [N, L] with both dynamic", input.name()))),
        }
    }
    let Some(output) = session.outputs().iter().find(|output| output.name() == TEXT_OUTPUT) else {
        return Err(contract_error(format!("it has no output `{TEXT_OUTPUT}`")));
    };
    match output.dtype() {
        ValueType::Tensor { ty: TensorElementType::Float32, shape, .. } if shape.len() == 2 && shape[1] == dimensions as i64 => Ok(()),
        other => Err(contract_error(format!("output `{TEXT_OUTPUT}` is {other}; it must be f32 [N, {dimensions}]"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METADATA: &str = r#"{"name": "t", "version": "1", "kind": "text-embedding", "dimensions": 384, "max_tokens": 256,
        "sha256": "57804f9047996545ca220a3f0345e17a08874a5f0fcfdac622ce74f977e6ed8f",
        "tokenizer": {"file": "tokenizer.json", "sha256": "57804f9047996545ca220a3f0345e17a08874a5f0fcfdac622ce74f977e6ed8f"},
        "source": {"anything": 1}}"#;

    #[test]
    fn text_metadata_is_checked() {
        let metadata = TextMetadata::from_json(METADATA.as_bytes()).expect("valid");
        assert_eq!((metadata.dimensions, metadata.max_tokens, metadata.tokenizer_file.as_str()), (384, 256, "tokenizer.json"));
        let with = |field: &str, value: &str| {
            let mut document: serde_json::Value = serde_json::from_str(METADATA).expect("parse");
            let (head, tail) = field.split_once('.').map_or((field, None), |(head, tail)| (head, Some(tail)));
            let value: serde_json::Value = serde_json::from_str(value).expect("value");
            match tail {
                Some(tail) => document[head][tail] = value,
                None => document[head] = value,
            }
            TextMetadata::from_json(document.to_string().as_bytes()).expect_err(field)
        };
        assert!(with("kind", "\"embedding\"").contains("not \"text-embedding\""));
        assert!(with("dimensions", "0").contains("1..=4096"));
        assert!(with("max_tokens", "100000").contains("8..=512"));
        assert!(with("tokenizer.sha256", "\"x\"").contains("tokenizer.sha256"));
        assert!(with("tokenizer.file", "\"../etc/passwd\"").contains("plain file name"));
        assert!(with("tokenizer.extra", "1").contains("unknown field"));
    }
}
