//! Detection as the detect task and `replay` run it: the detector with its scorer (the
//! signed models, or none when `detect.models = "off"`), and its events as signed-log
//! records.


use anyhow::Context;
use mld_config::{Config, ModelsMode};
use mld_detect::engine::{Detector, Event, Scorer};
use mld_detect::response::Responder;
use mld_detect::scorer::OnnxScorer;
use mld_eventlog::{build_event, EventContext, Verdict};

pub struct Detection {
    pub detector: Detector,
    model_sha256: Option<String>,
    config_sha256: String,
    node: String,
    windows_secs: Vec<u64>,
    pub model_description: String,
}

impl Detection {
    /// Loads the models as configured: with `detect.models = "required"`, a missing file,
    /// a bad signature or a feature mismatch is an error naming the cause (fail closed).
    pub fn new(config: &Config, config_sha256: &str, protected: mld_hostnet::Protected) -> anyhow::Result<Detection> {
        let windows_secs: Vec<u64> = config.windows.lengths.iter().map(|length| length.as_secs()).collect();
        let (scorer, model_sha256, model_description): (Option<Box<dyn Scorer>>, Option<String>, String) = match config.detect.models {
            ModelsMode::Required => {
                let scorer = OnnxScorer::load(&config.detect.onnxruntime, &config.detect.models_dir, &config.detect.model_public_key, &windows_secs)
                    .with_context(|| format!("failed to load the detection models from `{}`", config.detect.models_dir.display()))?;
                let sha = scorer.sha256().to_string();
                let description = scorer.describe();
                (Some(Box::new(scorer)), Some(sha), description)
            }
            ModelsMode::Off => (None, None, "models off (detect.models = \"off\": heuristics only)".to_string()),
        };
        let responder = Responder::new(config.response.clone(), protected);
        Ok(Detection {
            detector: Detector::new(config.detect.clone(), responder, scorer),
            model_sha256,
            config_sha256: config_sha256.to_string(),
            node: config.log.node.clone(),
            windows_secs,
            model_description,
        })
    }

    /// The event's signed-log record.
    pub fn record(&self, event: &Event, deployment: &str) -> serde_json::Map<String, serde_json::Value> {
        let verdict = Verdict {
            score_fast: event.score_fast,
            score_model: event.score_model,
            score_final: event.score_final,
            score_divergence: event.score_divergence,
            category: event.category.as_str().to_string(),
            authoritative_source: event.authoritative.to_string(),
            provenance: event.provenance.clone(),
            action: event.action.as_str().to_string(),
            block_ttl_secs: event.ttl.map(|ttl| ttl.as_secs()),
            escalation_step: event.escalation_step,
            allowlisted: event.protected,
        };
        let context = EventContext {
            node: &self.node,
            deployment,
            software_version: env!("CARGO_PKG_VERSION"),
            config_sha256: &self.config_sha256,
            model_sha256: self.model_sha256.as_deref(),
            windows_secs: &self.windows_secs,
        };
        build_event(&event.flow, &verdict, &context)
    }
}
