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

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use mld_flow::features::Feature;
use mld_index::HitFields;
use mld_model::features::is_known_feature;
use mld_model::signing::ModelPublicKey;
use mld_model::{init_runtime, LoadedModel, ModelFiles, ModelKind};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::HistoryError;

/// What [`Embedder::embed_lines`] made of a batch.
#[derive(Debug, Default)]
pub struct Embedded {
    /// The seqs embedded, in order; `vectors` has `dims()` values for each.
    pub ids: Vec<u64>,
    pub vectors: Vec<f32>,
    pub fields: Vec<HitFields>,
    /// Lines left out, with why.
    pub unreadable: Vec<(u64, String)>,
}

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
    /// Column index by either of its names, for reading lines in one pass.
    by_name: HashMap<String, usize, ahash::RandomState>,
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
        let columns: Vec<Column> = model.features().iter().map(|name| Column { name: name.clone(), event_field: event_field_name(name) }).collect();
        let missing = model.metadata().missing();
        let mut by_name = HashMap::with_hasher(ahash::RandomState::new());
        for (index, column) in columns.iter().enumerate() {
            let column: &Column = column;
            by_name.insert(column.name.clone(), index);
            if let Some(field) = &column.event_field {
                by_name.insert(field.clone(), index);
            }
        }
        Ok(Embedder { model, columns, by_name, missing, rows: Vec::new() })
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
    /// flows` writes them); returns `objects.len() * dims()` values, row-major. They are
    /// read exactly as verified lines are (the same reader), so an event and its object
    /// embed alike.
    pub fn embed(&mut self, objects: &[&Map<String, Value>]) -> Result<Vec<f32>, HistoryError> {
        let texts: Vec<String> = objects.iter().map(|object| serde_json::to_string(object).unwrap_or_default()).collect();
        let lines: Vec<(u64, &str)> = texts.iter().enumerate().map(|(at, text)| (at as u64, text.as_str())).collect();
        let embedded = self.embed_lines(&lines)?;
        if let Some((at, why)) = embedded.unreadable.first() {
            return Err(HistoryError::Invalid(format!("object {at} cannot be embedded: {why}")));
        }
        Ok(embedded.vectors)
    }

    /// Embeds verified event lines, reading each line once without building the record:
    /// the features go into the row, the display fields into the hit's [`HitFields`].
    /// A line whose fields cannot be read (a wrong type: a record of another schema
    /// version) is left out and named in [`Embedded::unreadable`]; one bad record never
    /// stops the others.
    pub fn embed_lines(&mut self, lines: &[(u64, &str)]) -> Result<Embedded, HistoryError> {
        let width = self.columns.len();
        self.rows.clear();
        let mut embedded = Embedded::default();
        let mut row = vec![self.missing; width];
        for (seq, line) in lines {
            row.fill(self.missing);
            let mut hit = empty_fields(*seq);
            let reader = LineReader { by_name: &self.by_name, row: &mut row, fields: &mut hit };
            let mut deserializer = serde_json::Deserializer::from_str(line);
            match reader.deserialize(&mut deserializer) {
                Ok(()) => {
                    self.rows.extend_from_slice(&row);
                    embedded.ids.push(*seq);
                    embedded.fields.push(hit);
                }
                Err(error) => embedded.unreadable.push((*seq, error.to_string())),
            }
        }
        let dims = self.dims().max(1);
        let vectors = self.model.predict(&self.rows, embedded.ids.len())?;
        if vectors.iter().all(|value| value.is_finite()) {
            embedded.vectors = vectors.to_vec();
            return Ok(embedded);
        }
        // A row the model turned into NaN or infinity is that event's problem alone.
        let (ids, fields) = (std::mem::take(&mut embedded.ids), std::mem::take(&mut embedded.fields));
        for ((id, hit), vector) in ids.into_iter().zip(fields).zip(vectors.chunks(dims)) {
            if vector.iter().all(|value| value.is_finite()) {
                embedded.ids.push(id);
                embedded.fields.push(hit);
                embedded.vectors.extend_from_slice(vector);
            } else {
                embedded.unreadable.push((id, "the embedder returned a non-finite value".to_string()));
            }
        }
        Ok(embedded)
    }

    /// The model's input rows of the last [`Embedder::embed_lines`] (one per embedded
    /// event, the metadata's features in order), for measuring the model alone.
    pub fn last_rows(&self) -> &[f32] {
        &self.rows
    }

    /// How many values a row has (the metadata's features).
    pub fn row_width(&self) -> usize {
        self.columns.len()
    }

    /// Embeds rows already built (`n` rows of the metadata's features, row-major): the
    /// model alone, for measuring it.
    pub fn embed_rows(&mut self, rows: &[f32], n: usize) -> Result<Vec<f32>, HistoryError> {
        Ok(self.model.predict(rows, n)?.to_vec())
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

fn empty_fields(seq: u64) -> HitFields {
    HitFields {
        seq,
        event_id: String::new(),
        ts_us: 0,
        src_ip: String::new(),
        dst_ip: String::new(),
        dst_port: 0,
        protocol: String::new(),
        action: String::new(),
        category: String::new(),
        score_fast: 0.0,
        score_model: None,
        score_final: 0.0,
        description: None,
    }
}

/// Reads one event line: feature values into `row` (by column), display fields into
/// `fields`, everything else skipped. [`Embedder::embed`] reads objects through it too.
struct LineReader<'a> {
    by_name: &'a HashMap<String, usize, ahash::RandomState>,
    row: &'a mut [f32],
    fields: &'a mut HitFields,
}

impl<'de> DeserializeSeed<'de> for LineReader<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LineReader<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an event record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let key = key.as_str();
            if let Some(&column) = self.by_name.get(key) {
                if let Some(value) = map.next_value::<Scalar>()?.0 {
                    self.row[column] = value;
                }
                continue;
            }
            let fields = &mut *self.fields;
            match key {
                "event_id" => fields.event_id = map.next_value()?,
                "ts_us" => fields.ts_us = map.next_value()?,
                "src_ip" => fields.src_ip = map.next_value()?,
                "dst_ip" => fields.dst_ip = map.next_value()?,
                "dst_port" => fields.dst_port = map.next_value()?,
                "protocol_name" => fields.protocol = map.next_value()?,
                "action" => fields.action = map.next_value()?,
                "category" => fields.category = map.next_value()?,
                "score_fast" => fields.score_fast = map.next_value::<Option<f64>>()?.unwrap_or_default(),
                "score_model" => fields.score_model = map.next_value()?,
                "score_final" => fields.score_final = map.next_value::<Option<f64>>()?.unwrap_or_default(),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A key, borrowed from the line when it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(text) => text,
            Key::Owned(text) => text,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key<'de>, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a field name")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, text: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(text))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(text.to_string()))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A feature value: a finite number, or a boolean as 1/0; `None` (the model's missing
/// value) for null, non-finite numbers and anything else.
struct Scalar(Option<f32>);

impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Scalar, D::Error> {
        struct ScalarVisitor;
        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a number, a boolean or null")
            }
            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Scalar, E> {
                // Finite as f32 too (1e300 is a finite f64 and an infinite f32).
                let value = value as f32;
                Ok(Scalar(value.is_finite().then_some(value)))
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Scalar, E> {
                Ok(Scalar(Some(value as f64 as f32)))
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Scalar, E> {
                Ok(Scalar(Some(value as f64 as f32)))
            }
            fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Scalar, E> {
                Ok(Scalar(Some(if value { 1.0 } else { 0.0 })))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar(None))
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar(None))
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Scalar, E> {
                Ok(Scalar(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}
