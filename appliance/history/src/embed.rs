//! The embedder: a signed ONNX model of kind `embedding` that maps an event's features to
//! a vector, read from a JSON object by name.
//!
//! The model's metadata lists its features by the CSV column names of `mldefender flows`
//! ("Flow Duration", `src_10s_packets_per_sec`, ...). A signed event record carries the
//! same values under its own names (`cic_flow_duration`, the same `src_*` names). So one
//! row is read from either kind of object: each feature is looked up by its column name
//! first and by its event-field name second. Both hold the same f64 the flow table
//! computed, so an event and the flow it came from embed to the same vector bit for bit.
//! A value that is absent or null (a source dropped from the bounded window aggregator)
//! is the model's `missing` value, as in training; `true`/`false` are 1 and 0.

use std::path::Path;

use mld_detect::features::is_known_feature;
use mld_detect::model::{init_runtime, LoadedModel, ModelFiles, ModelKind};
use mld_detect::signing::ModelPublicKey;
use mld_flow::features::Feature;
use serde_json::{Map, Value};

use crate::HistoryError;

/// Where one feature is found in a JSON object.
#[derive(Debug, Clone)]
struct Column {
    /// The model's name for it (the flows output's column).
    name: String,
    /// The signed event's field name, when it differs.
    event_field: Option<String>,
}

/// The loaded embedder with its row buffer.
#[derive(Debug)]
pub struct Embedder {
    model: LoadedModel,
    columns: Vec<Column>,
    missing: f32,
    rows: Vec<f32>,
}

impl Embedder {
    /// Loads ONNX Runtime from `runtime` (once per process) and the model `name` from
    /// `models_dir`, checked against the release key; refuses a model that is not an
    /// embedding or asks for a feature this configuration does not compute.
    pub fn load(runtime: &Path, models_dir: &Path, name: &str, public_key_base64: &str, windows_secs: &[u64]) -> Result<Embedder, HistoryError> {
        init_runtime(runtime)?;
        let key = ModelPublicKey::from_base64(public_key_base64).map_err(|error| HistoryError::PublicKey(error.to_string()))?;
        let files = ModelFiles::in_dir(models_dir, name)?;
        let metadata_path = files.metadata.clone();
        let model = LoadedModel::load(files, &key, |feature| is_known_feature(feature, windows_secs))?;
        if model.metadata().kind() != ModelKind::Embedding {
            return Err(HistoryError::NotAnEmbedder { path: metadata_path, kind: format!("{:?}", model.metadata().kind()).to_lowercase() });
        }
        let columns = model
            .features()
            .iter()
            .map(|name| Column { name: name.clone(), event_field: event_field_name(name) })
            .collect();
        let missing = model.metadata().missing();
        Ok(Embedder { model, columns, missing, rows: Vec::new() })
    }

    /// Dimensions of a vector.
    pub fn dims(&self) -> usize {
        self.model.width()
    }

    /// What makes the vectors, for the index manifest: vectors of another embedder are
    /// not comparable, so an index made by one is rebuilt when the other is loaded.
    pub fn source(&self) -> String {
        let metadata = self.model.metadata();
        format!("{} v{} sha256:{}", metadata.name(), metadata.version(), metadata.sha256())
    }

    /// Embeds a batch of JSON objects (event records, or flow records as `mldefender
    /// flows` writes them); returns `objects.len() * dims()` values, row-major.
    pub fn embed(&mut self, objects: &[&Map<String, Value>]) -> Result<Vec<f32>, HistoryError> {
        self.rows.clear();
        for object in objects {
            for column in &self.columns {
                let value = object.get(&column.name).or_else(|| column.event_field.as_ref().and_then(|field| object.get(field)));
                self.rows.push(value_of(value).unwrap_or(self.missing));
            }
        }
        let vectors = self.model.predict(&self.rows, objects.len())?;
        if let Some(at) = vectors.iter().position(|value| !value.is_finite()) {
            return Err(HistoryError::Embedding(format!("the embedder returned a non-finite value for object {}", at / self.dims().max(1))));
        }
        Ok(vectors.to_vec())
    }

    /// How many of the embedder's features `object` carries (a query built from an
    /// object that carries none is refused: it would embed to the vector of nothing).
    pub fn known_features(&self, object: &Map<String, Value>) -> usize {
        self.columns
            .iter()
            .filter(|column| object.contains_key(&column.name) || column.event_field.as_ref().is_some_and(|field| object.contains_key(field)))
            .count()
    }
}

/// The event field that carries the feature called `name` by the flows output.
fn event_field_name(name: &str) -> Option<String> {
    if name == "Protocol" {
        return Some("protocol".to_string());
    }
    Feature::ALL.iter().find(|feature| feature.cic_name() == name).map(|feature| mld_eventlog::cic_field_name(*feature))
}

fn value_of(value: Option<&Value>) -> Option<f32> {
    match value? {
        Value::Number(number) => number.as_f64().filter(|value| value.is_finite()).map(|value| value as f32),
        Value::Bool(flag) => Some(if *flag { 1.0 } else { 0.0 }),
        _ => None,
    }
}
