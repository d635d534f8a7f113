//! Detection as the detect task and `replay` run it: the detector with its scorer (the
//! signed models, or none when `detect.models = "off"`), and its events as signed-log
//! records.

use anyhow::Context;
use mld_config::{Config, ModelsMode};
use mld_detect::engine::{Detector, Event, Scorer};
use mld_detect::response::Responder;
use mld_detect::scorer::OnnxScorer;
use mld_eventlog::{build_event, EventContext, Verdict};

/// The `action` of a gap record.
pub const GAP_ACTION: &str = "gap";

/// `action` of the record of a configuration generation.
pub const CONFIG_ACTION: &str = "config";

#[allow(missing_debug_implementations)] // the detector holds ONNX sessions
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

    /// A configuration applied while running: what the detect task takes live (the
    /// policy and its thresholds, the heuristics, TTLs, protections and management
    /// prefixes, the allowlist, the circuit breaker, dry run). What needs a restart of the
    /// task (models, bounds, windows) the supervisor restarts it for. Records carry the new
    /// configuration's hash from now on.
    pub fn reconfigure(&mut self, config: &Config, config_sha256: &str, net: &mld_hostnet::HostNet) {
        self.detector.set_config(config.detect.clone());
        let protected = mld_hostnet::Protected::from_host(&config.response, &config.allowlist, net);
        self.detector.responder_mut().set_config(config.response.clone(), protected);
        self.config_sha256 = config_sha256.to_string();
    }

    /// The record of the configuration generation in force (`how`: "applied live",
    /// "in force at the detect task's start").
    pub fn config_record(&self, note: &mld_ipc::ConfigNote, how: &str, now_ns: u64) -> serde_json::Map<String, serde_json::Value> {
        let unspecified = std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
        let classes = if note.classes.is_empty() { "none".to_string() } else { note.classes.join(", ") };
        let provenance =
            format!("configuration generation {} (sha256 {}, from {}; change classes: {classes}) {how}", note.generation, note.sha256, note.source);
        let mut record = self.flowless_record(CONFIG_ACTION, unspecified, (now_ns, now_ns), provenance, &format!("config|{}|{now_ns}", note.generation));
        record.insert("config_generation".to_string(), note.generation.into());
        record
    }

    /// The record of a gap: events the detect task could not keep while the log task was
    /// away or behind (its bounded queue was full). A valid `event` record (the log seals
    /// nothing else) with `action` "gap": no flow (addresses unspecified, protocol 0,
    /// features 0), the span of the lost events in `flow_first_seen_us` ..
    /// `flow_last_seen_us`, and the counts by action in `provenance`
    /// (docs/event-log.md, "Gaps").
    pub fn gap_record(&self, gap: &mld_ipc::Gap, queue_max_events: usize, queue_max_bytes: usize) -> serde_json::Map<String, serde_json::Value> {
        let (first_ns, last_ns) = (gap.first_us.saturating_mul(1000), gap.last_us.saturating_mul(1000));
        let by_action: Vec<String> = gap.lost_by_kind.iter().map(|(action, count)| format!("{action} {count}")).collect();
        let provenance = format!(
            "gap: {} events lost ({}) from {} to {}: the log task was away or behind and the detect task's queue ({queue_max_events} events, {} MiB) was full; decisions were applied all the same",
            gap.lost(),
            by_action.join(", "),
            mld_flow::time::rfc3339_utc(first_ns),
            mld_flow::time::rfc3339_utc(last_ns),
            queue_max_bytes >> 20
        );
        let unspecified = std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
        self.flowless_record(GAP_ACTION, unspecified, (first_ns, last_ns), provenance, &format!("gap|{}|{}|{}", self.node, gap.first_us, gap.last_us))
    }

    /// A record about something other than a flow (a gap, an operator's release): a valid
    /// `event` record (the log seals nothing else) with this `action`, `source` as its
    /// source and the other end unspecified, protocol 0 and no features, `span` (ns) as
    /// its flow times, what happened in `provenance`, and an `event_id` from `id_text`.
    pub fn flowless_record(
        &self,
        action: &str,
        source: std::net::IpAddr,
        span: (u64, u64),
        provenance: String,
        id_text: &str,
    ) -> serde_json::Map<String, serde_json::Value> {
        let unspecified =
            if source.is_ipv4() { std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED) } else { std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) };
        let flow = mld_flow::FlowRecord::flowless(source, (unspecified, 0, 0), span, mld_flow::EndReason::EndOfInput);
        let event = Event::note(mld_detect::engine::Action::Observe, source, flow, mld_detect::heuristics::Category::Other, provenance);
        let mut record = self.record(&event, "standalone");
        record.insert("action".to_string(), action.into());
        // The id of a decision-like record: what happened and when, not the (empty) flow.
        let digest = {
            use sha2::Digest;
            sha2::Sha256::digest(id_text.as_bytes())
        };
        record.insert("event_id".to_string(), format!("ev-{}", hex::encode(&digest[..12])).into());
        record
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

/// The interfaces whose strict source check vouches for the addresses arriving there (a
/// strict check with prefixes to check against), by ifindex: the detect task lets a scan
/// or flood from them block on the fast path alone.
pub fn anchored_interfaces(config: &Config, net: &mld_hostnet::HostNet) -> Vec<u32> {
    config
        .capture
        .interfaces
        .iter()
        .filter(|interface| interface.source_check == mld_config::SourceCheck::Strict)
        .filter(|interface| !interface.source_prefixes.is_empty() || !net.prefixes_behind(&interface.name).is_empty())
        .filter_map(|interface| nix::net::if_::if_nametoindex(interface.name.as_str()).ok())
        .collect()
}
