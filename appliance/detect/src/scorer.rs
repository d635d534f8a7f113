//! The model side of the dual score over ONNX: the signed `attack` model (required) and
//! the `category` model (used when present), each with the feature extractor its
//! metadata asks for.

use std::path::Path;

use mld_flow::FlowRecord;
use mld_model::features::{is_known_feature, FeatureExtractor};
use mld_model::signing::ModelPublicKey;
use mld_model::{init_runtime, LoadedModel, ModelError, ModelFiles};

use crate::engine::Scorer;
use crate::heuristics::Category;

/// Why the models could not be used; the detect task stops with this (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum ScorerError {
    #[error("detect.model-public-key is not a valid Ed25519 public key: {0}")]
    PublicKey(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("model `{name}`: {detail}")]
    Contract { name: String, detail: String },
}

struct Scored {
    model: LoadedModel,
    extractor: FeatureExtractor,
    rows: Vec<f32>,
    /// Index of the "attack" class (binary model).
    positive: usize,
}

impl Scored {
    fn load(dir: &Path, name: &str, key: &ModelPublicKey, windows_secs: &[u64]) -> Result<Scored, ScorerError> {
        let model = LoadedModel::load(ModelFiles::in_dir(dir, name)?, key, |feature| is_known_feature(feature, windows_secs))?;
        let extractor = FeatureExtractor::new(model.features(), windows_secs).map_err(|detail| ScorerError::Contract { name: name.to_string(), detail })?;
        let positive = model.classes().iter().position(|class| class == "attack").unwrap_or(model.classes().len().saturating_sub(1));
        Ok(Scored { model, extractor, rows: Vec::new(), positive })
    }

    fn probabilities(&mut self, flows: &[&FlowRecord]) -> Result<&[f32], String> {
        self.rows.clear();
        for flow in flows {
            self.extractor.push_row(flow, &mut self.rows);
        }
        self.model.predict(&self.rows, flows.len()).map_err(|error| error.to_string())
    }
}

/// The ONNX scorer.
pub struct OnnxScorer {
    attack: Scored,
    category: Option<Scored>,
    /// The attack model's most important features (from its metadata), for explanations.
    top_features: Vec<String>,
}

impl std::fmt::Debug for OnnxScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxScorer").field("attack", &self.attack.model).field("category", &self.category.as_ref().map(|scored| &scored.model)).finish()
    }
}

impl OnnxScorer {
    /// Loads ONNX Runtime from `runtime`, then `attack` (required) and `category` (when
    /// its files exist) from `dir`, each checked against `public_key_base64`.
    pub fn load(runtime: &Path, dir: &Path, public_key_base64: &str, windows_secs: &[u64]) -> Result<OnnxScorer, ScorerError> {
        init_runtime(runtime)?;
        let key = ModelPublicKey::from_base64(public_key_base64).map_err(|error| ScorerError::PublicKey(error.to_string()))?;
        let attack = Scored::load(dir, "attack", &key, windows_secs)?;
        let category = if dir.join("category.json").exists() { Some(Scored::load(dir, "category", &key, windows_secs)?) } else { None };
        let top_features = attack.model.metadata().document()["training"]["feature_importance_top10"]
            .as_array()
            .map(|items| items.iter().filter_map(|item| item["feature"].as_str().map(str::to_string)).take(3).collect())
            .unwrap_or_default();
        Ok(OnnxScorer { attack, category, top_features })
    }

    /// SHA-256 of the attack model (in every event).
    pub fn sha256(&self) -> &str {
        self.attack.model.sha256()
    }

    pub fn describe(&self) -> String {
        let meta = self.attack.model.metadata();
        let mut text = format!("attack model v{} ({} features, sha256 {})", meta.version(), meta.features().len(), &meta.sha256()[..12]);
        if let Some(category) = &self.category {
            text.push_str(&format!(", category model v{} ({} classes)", category.model.metadata().version(), category.model.classes().len()));
        }
        text
    }
}

impl Scorer for OnnxScorer {
    fn attack(&mut self, flows: &[&FlowRecord]) -> Result<Vec<f64>, String> {
        let classes = self.attack.model.classes().len();
        let positive = self.attack.positive;
        let probabilities = self.attack.probabilities(flows)?;
        Ok(probabilities.chunks(classes).map(|row| f64::from(row[positive])).collect())
    }

    fn category(&mut self, flows: &[&FlowRecord]) -> Result<Vec<(Category, f64)>, String> {
        let Some(scored) = self.category.as_mut() else {
            return Ok(flows.iter().map(|_| (Category::Other, 0.0)).collect());
        };
        let classes: Vec<Category> = scored.model.classes().iter().map(|class| Category::from_class(class)).collect();
        let probabilities = scored.probabilities(flows)?;
        Ok(probabilities
            .chunks(classes.len())
            .map(|row| {
                let (best, p) = row.iter().enumerate().fold((0, f32::MIN), |best, (index, p)| if *p > best.1 { (index, *p) } else { best });
                (classes[best], f64::from(p))
            })
            .collect())
    }

    fn explain(&self, flow: &FlowRecord) -> String {
        self.top_features
            .iter()
            .filter_map(|name| self.attack.extractor.value_of(flow, name).map(|value| format!("{name}={value:.4}")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
