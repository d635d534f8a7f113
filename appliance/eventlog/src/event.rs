//! The event record: one detection decision about one flow, with everything an analyst
//! and the similarity index need. Fields are flat, snake_case, units in names; the
//! list below is the schema (`mldefender log schema` prints it as JSON Schema, kept in
//! `docs/event-schema.json`).

use mld_flow::features::Feature;
use mld_flow::time::rfc3339_utc;
use mld_flow::FlowRecord;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::community_id::community_id;

/// Version of the event field set (not of the file format, which is in the header).
pub const EVENT_SCHEMA_VERSION: u32 = 1;

/// One field of the event record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventField {
    pub name: String,
    /// JSON type: "string", "integer", "number" or "boolean".
    pub kind: &'static str,
    pub unit: &'static str,
    /// When the field may be null, and why; `None`: never null.
    pub null_when: Option<&'static str>,
    pub description: String,
}

/// The decision about a flow. Until detection exists, [`Verdict::placeholder`].
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub score_fast: f64,
    pub score_model: Option<f64>,
    pub score_final: f64,
    pub score_divergence: Option<f64>,
    pub category: String,
    pub authoritative_source: String,
    pub provenance: String,
    pub action: String,
    pub block_ttl_secs: Option<u64>,
    pub escalation_step: u32,
    pub allowlisted: bool,
}

impl Verdict {
    /// "No detection yet": every flow is logged as observed, nothing is blocked.
    pub fn placeholder() -> Verdict {
        Verdict {
            score_fast: 0.0,
            score_model: None,
            score_final: 0.0,
            score_divergence: None,
            category: "unclassified".to_string(),
            authoritative_source: "none".to_string(),
            provenance: "placeholder: no detection engine yet".to_string(),
            action: "observe".to_string(),
            block_ttl_secs: None,
            escalation_step: 0,
            allowlisted: false,
        }
    }
}

/// What every event of a run shares.
#[derive(Debug, Clone)]
pub struct EventContext<'a> {
    pub node: &'a str,
    pub deployment: &'a str,
    pub software_version: &'a str,
    pub config_sha256: &'a str,
    pub model_sha256: Option<&'a str>,
    pub windows_secs: &'a [u64],
}

fn field(name: impl Into<String>, kind: &'static str, unit: &'static str, null_when: Option<&'static str>, description: impl Into<String>) -> EventField {
    EventField { name: name.into(), kind, unit, null_when, description: description.into() }
}

/// `cic_` + the CIC column name in snake_case.
pub fn cic_field_name(feature: Feature) -> String {
    let mut name = String::from("cic_");
    let mut last_underscore = true;
    for character in feature.cic_name().chars() {
        if character.is_ascii_alphanumeric() {
            name.push(character.to_ascii_lowercase());
            last_underscore = false;
        } else if !last_underscore {
            name.push('_');
            last_underscore = true;
        }
    }
    name.trim_end_matches('_').to_string()
}

/// Every field, in the order records carry them (before the four integrity fields).
pub fn event_fields(windows_secs: &[u64]) -> Vec<EventField> {
    let mut fields = vec![
        field("type", "string", "", None, "Always \"event\"."),
        field(
            "event_id",
            "string",
            "",
            None,
            "Deterministic id of the event: derived from the flow's Community ID and times (and, for a decision, its action).",
        ),
        field("schema_version", "integer", "", None, "Version of this field set."),
        field("node", "string", "", None, "The appliance that made the decision."),
        field("deployment", "string", "", None, "Deployment or fleet name."),
        field("ts", "string", "RFC 3339, UTC", None, "Event time: the flow's last packet."),
        field("ts_us", "integer", "µs since the Unix epoch", None, "Event time."),
        field("flow_first_seen_us", "integer", "µs since the Unix epoch", None, "The flow's first packet."),
        field("flow_last_seen_us", "integer", "µs since the Unix epoch", None, "The flow's last packet."),
        field("src_ip", "string", "", None, "Flow initiator's address."),
        field("src_port", "integer", "", None, "Initiator's port; 0 for protocols without ports."),
        field("dst_ip", "string", "", None, "Responder's address."),
        field("dst_port", "integer", "", None, "Responder's port; 0 for protocols without ports."),
        field("protocol", "integer", "", None, "IP protocol number."),
        field("protocol_name", "string", "", None, "tcp, udp, icmp, icmpv6 or ip-<number>."),
        field("ip_version", "integer", "", None, "4 or 6."),
        field("community_id", "string", "", None, "Community ID v1 (seed 0); ICMP flows hash without type/code."),
        field("ifindex", "integer", "", None, "Interface of the flow's first packet; 0 for replay."),
        field(
            "flow_end_reason",
            "string",
            "",
            None,
            "idle-timeout, active-timeout, tcp-fin, tcp-rst, evicted, end-of-input, or active (an interim record of a flow still open).",
        ),
        field("fwd_ip_bytes", "integer", "bytes", None, "IP bytes sent by the initiator."),
        field("bwd_ip_bytes", "integer", "bytes", None, "IP bytes sent by the responder."),
    ];
    for feature in Feature::ALL {
        fields.push(field(cic_field_name(*feature), "number", feature.unit(), None, format!("CIC-IDS2017 \"{}\" (docs/features.md).", feature.cic_name())));
    }
    for secs in windows_secs {
        let missing = Some("the source was dropped from the window aggregator (bounded)");
        fields.push(field(
            format!("src_{secs}s_distinct_dst_addrs"),
            "integer",
            "addresses",
            missing,
            format!("Distinct destinations of flows the source started in the last {secs} s."),
        ));
        fields.push(field(
            format!("src_{secs}s_distinct_dst_ports"),
            "integer",
            "ports",
            missing,
            format!("Distinct destination ports of those flows ({secs} s)."),
        ));
        fields.push(field(format!("src_{secs}s_new_flows_per_sec"), "number", "flows/s", missing, format!("Flows the source started per second ({secs} s).")));
        fields.push(field(
            format!("src_{secs}s_packets_per_sec"),
            "number",
            "packets/s",
            missing,
            format!("Packets of those flows, both directions, per second ({secs} s)."),
        ));
        fields.push(field(
            format!("src_{secs}s_bytes_per_sec"),
            "number",
            "bytes/s",
            missing,
            format!("IP bytes of those flows, both directions, per second ({secs} s)."),
        ));
        fields.push(field(
            format!("src_{secs}s_syn_without_ack_ratio"),
            "number",
            "ratio",
            missing,
            format!("Share of TCP packets with SYN and not ACK in those flows ({secs} s)."),
        ));
        fields.push(field(format!("src_{secs}s_rst_ratio"), "number", "ratio", missing, format!("Share of TCP packets with RST in those flows ({secs} s).")));
        fields.push(field(format!("src_{secs}s_saturated"), "boolean", "", missing, format!("A distinct count hit its bound ({secs} s).")));
    }
    fields.extend([
        field("score_fast", "number", "0..1", None, "Fast-heuristics score."),
        field("score_model", "number", "0..1", Some("no model scored the flow"), "Model score."),
        field("score_final", "number", "0..1", None, "Combined score."),
        field("score_divergence", "number", "0..1", Some("fewer than two engines scored the flow"), "|fast - model|."),
        field("category", "string", "", None, "flood, scan, brute-force, slow, other, benign or unclassified."),
        field("authoritative_source", "string", "", None, "Which engine decided: fast, model, both or none."),
        field("provenance", "string", "", None, "Why: the rules and models that fired."),
        field(
            "action",
            "string",
            "",
            None,
            "observe, alert, block or would-block (dry run); refused, breaker-open, expire, gap; release-benign (the operator marked the source benign); guard-on and guard-off: a service under a random-source flood is guarded, or its guard lapsed (src_ip is then the unspecified address, the rates and drop counts are in provenance).",
        ),
        field("block_ttl_secs", "integer", "s", Some("the action is not a block"), "How long the block lasts."),
        field("escalation_step", "integer", "", None, "0 for a first block; n for the n-th repeat (TTL doubles)."),
        field("allowlisted", "boolean", "", None, "The source is allowlisted: never blocked."),
        field("model_sha256", "string", "", Some("no model is loaded"), "SHA-256 of the model file that scored the flow."),
        field("config_sha256", "string", "", None, "SHA-256 of the configuration text in force."),
        field("software_version", "string", "", None, "mldefender version."),
    ]);
    fields
}

/// The record for one flow and its verdict (without the integrity fields, which the
/// [`crate::Sealer`] appends).
pub fn build_event(flow: &FlowRecord, verdict: &Verdict, context: &EventContext<'_>) -> Map<String, Value> {
    let mut record = Map::new();
    let mut put = |name: &str, value: Value| {
        record.insert(name.to_string(), value);
    };
    let id = community_id(0, flow.src_ip, flow.src_port, flow.dst_ip, flow.dst_port, flow.protocol);
    // A decision about a flow is its own event, apart from the flow's observation.
    let digest = if verdict.action == "observe" {
        Sha256::digest(format!("{id}|{}|{}", flow.first_seen_ns, flow.last_seen_ns).as_bytes())
    } else {
        Sha256::digest(format!("{id}|{}|{}|{}", flow.first_seen_ns, flow.last_seen_ns, verdict.action).as_bytes())
    };
    put("type", "event".into());
    put("event_id", format!("ev-{}", hex::encode(&digest[..12])).into());
    put("schema_version", EVENT_SCHEMA_VERSION.into());
    put("node", context.node.into());
    put("deployment", context.deployment.into());
    put("ts", rfc3339_utc(flow.last_seen_ns).into());
    put("ts_us", (flow.last_seen_ns / 1000).into());
    put("flow_first_seen_us", (flow.first_seen_ns / 1000).into());
    put("flow_last_seen_us", (flow.last_seen_ns / 1000).into());
    put("src_ip", flow.src_ip.to_string().into());
    put("src_port", flow.src_port.into());
    put("dst_ip", flow.dst_ip.to_string().into());
    put("dst_port", flow.dst_port.into());
    put("protocol", flow.protocol.into());
    put(
        "protocol_name",
        match flow.protocol {
            1 => "icmp".to_string(),
            6 => "tcp".to_string(),
            17 => "udp".to_string(),
            58 => "icmpv6".to_string(),
            other => format!("ip-{other}"),
        }
        .into(),
    );
    put("ip_version", flow.ip_version.into());
    put("community_id", id.into());
    put("ifindex", flow.ifindex.into());
    put("flow_end_reason", flow.end_reason.as_str().into());
    put("fwd_ip_bytes", flow.fwd_ip_bytes.into());
    put("bwd_ip_bytes", flow.bwd_ip_bytes.into());
    for (feature, value) in flow.features.iter() {
        put(&cic_field_name(feature), number(value));
    }
    for (index, secs) in context.windows_secs.iter().enumerate() {
        let window = flow.source_windows.get(index);
        put(&format!("src_{secs}s_distinct_dst_addrs"), window.map_or(Value::Null, |w| w.distinct_dst_addrs.into()));
        put(&format!("src_{secs}s_distinct_dst_ports"), window.map_or(Value::Null, |w| w.distinct_dst_ports.into()));
        put(&format!("src_{secs}s_new_flows_per_sec"), window.map_or(Value::Null, |w| number(w.new_flows_per_sec)));
        put(&format!("src_{secs}s_packets_per_sec"), window.map_or(Value::Null, |w| number(w.packets_per_sec)));
        put(&format!("src_{secs}s_bytes_per_sec"), window.map_or(Value::Null, |w| number(w.bytes_per_sec)));
        put(&format!("src_{secs}s_syn_without_ack_ratio"), window.map_or(Value::Null, |w| number(w.syn_without_ack_ratio)));
        put(&format!("src_{secs}s_rst_ratio"), window.map_or(Value::Null, |w| number(w.rst_ratio)));
        put(&format!("src_{secs}s_saturated"), window.map_or(Value::Null, |w| w.saturated.into()));
    }
    put("score_fast", number(verdict.score_fast));
    put("score_model", verdict.score_model.map_or(Value::Null, number));
    put("score_final", number(verdict.score_final));
    put("score_divergence", verdict.score_divergence.map_or(Value::Null, number));
    put("category", verdict.category.clone().into());
    put("authoritative_source", verdict.authoritative_source.clone().into());
    put("provenance", verdict.provenance.clone().into());
    put("action", verdict.action.clone().into());
    put("block_ttl_secs", verdict.block_ttl_secs.map_or(Value::Null, Value::from));
    put("escalation_step", verdict.escalation_step.into());
    put("allowlisted", verdict.allowlisted.into());
    put("model_sha256", context.model_sha256.map_or(Value::Null, Value::from));
    put("config_sha256", context.config_sha256.into());
    put("software_version", context.software_version.into());
    record
}

/// A finite number as JSON; NaN and infinity become null (never produced by the feature
/// code, never trusted either), so the line is always valid JSON.
fn number(value: f64) -> Value {
    serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// The field list as a JSON Schema (draft 2020-12) document.
pub fn json_schema(windows_secs: &[u64]) -> Value {
    let fields = event_fields(windows_secs);
    let mut properties = Map::new();
    for field in &fields {
        let mut property = Map::new();
        let kind: Value = if field.null_when.is_some() { serde_json::json!([field.kind, "null"]) } else { field.kind.into() };
        property.insert("type".to_string(), kind);
        let mut description = field.description.clone();
        if !field.unit.is_empty() {
            description.push_str(&format!(" Unit: {}.", field.unit));
        }
        if let Some(when) = field.null_when {
            description.push_str(&format!(" Null when {when}."));
        }
        property.insert("description".to_string(), description.into());
        properties.insert(field.name.clone(), Value::Object(property));
    }
    for (name, description) in [
        ("seq", "Sequence number: strictly increasing per node, across files."),
        ("prev_tag", "The previous record's hmac (64 zeros for the node's first record)."),
        ("key_id", "Id of the HMAC key: first 8 bytes of SHA-256 of the key, hex."),
        ("hmac", "HMAC-SHA256(key, node, NUL, the line up to ,\"hmac\":), hex."),
    ] {
        let kind = if name == "seq" { "integer" } else { "string" };
        properties.insert(name.to_string(), serde_json::json!({ "type": kind, "description": description }));
    }
    let required: Vec<Value> = properties.keys().map(|name| Value::from(name.as_str())).collect();
    // Written by the log task only (not by `replay`): where the event came from.
    properties.insert("delivery_stream".to_string(), serde_json::json!({ "type": "string", "description": "Present on events the log task wrote: random id (16 hex digits) of the pipeline run that delivered the event. Absent in `replay` output." }));
    properties.insert("delivery_seq".to_string(), serde_json::json!({ "type": "integer", "description": "Present on events the log task wrote: the event's sequence number in that delivery stream; lets the log task resume after a restart without duplicating or losing events. Absent in `replay` output." }));
    properties.insert(
        "nearest_past_events".to_string(),
        serde_json::json!({
            "type": "object",
            "description": "Present on decisions (not observations) when detect.nearest-past-events is set: the most similar earlier events in the similarity index, asked of the ingest task within detect.nearest-past-events-budget-ms. status: ok (events holds them, nearest first), timeout (no answer within the budget), busy (too many decisions waiting; not asked), unavailable (the ingest task could not answer; detail says why).",
            "additionalProperties": false,
            "required": ["status", "events"],
            "properties": {
                "status": { "enum": ["ok", "timeout", "busy", "unavailable"] },
                "detail": { "type": "string" },
                "events": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["seq", "event_id", "distance", "ts_us", "src_ip", "dst_ip", "dst_port", "action", "category"],
                        "properties": {
                            "seq": { "type": "integer" },
                            "event_id": { "type": "string" },
                            "distance": { "type": "number", "description": "Squared L2 distance between the embeddings." },
                            "ts_us": { "type": "integer" },
                            "src_ip": { "type": "string" },
                            "dst_ip": { "type": "string" },
                            "dst_port": { "type": "integer" },
                            "action": { "type": "string" },
                            "category": { "type": "string" }
                        }
                    }
                }
            }
        }),
    );
    let event = serde_json::json!({
        "type": "object",
        "additionalProperties": false,
        "required": required,
        "properties": properties,
    });
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ml-defender event log record",
        "description": "One line of the signed event log: an event (type \"event\", $defs/event) or a signed checkpoint (type \"checkpoint\", $defs/checkpoint). Header, recovery, retention and rejected_event records share the four integrity fields.",
        "oneOf": [{ "$ref": "#/$defs/event" }, { "$ref": "#/$defs/checkpoint" }],
        "$defs": { "event": event, "checkpoint": checkpoint_schema() },
    })
}

/// The JSON Schema of a `checkpoint` record (ADR 0007, docs/event-log.md).
fn checkpoint_schema() -> Value {
    let hex =
        |digits: usize, description: &str| serde_json::json!({ "type": "string", "pattern": format!("^[0-9a-f]{{{digits}}}$"), "description": description });
    serde_json::json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["type", "node", "covered_first_seq", "covered_last_seq", "covered_last_tag", "prev_checkpoint_sha256", "covered_sha256", "signing_key_id", "signature", "seq", "prev_tag", "key_id", "hmac"],
        "properties": {
            "type": { "const": "checkpoint" },
            "node": { "type": "string", "description": "The node whose records it covers (in the signed message)." },
            "covered_first_seq": { "type": "integer", "description": "The first record covered: the one after the previous checkpoint." },
            "covered_last_seq": { "type": "integer", "description": "The last record covered: the one right before this checkpoint (seq = covered_last_seq + 1)." },
            "covered_last_tag": hex(64, "The hmac of the last record covered (this record's prev_tag)."),
            "prev_checkpoint_sha256": hex(64, "covered_sha256 of the previous checkpoint; 64 zeros for the node's first (or the first after a new anchor)."),
            "covered_sha256": hex(64, "SHA-256 of prev_checkpoint_sha256 (32 bytes) followed by the exact bytes of every covered line, each with its newline, in seq order."),
            "signing_key_id": hex(16, "Id of the Ed25519 signing key: first 8 bytes of SHA-256 of the public key, hex."),
            "signature": hex(128, "Ed25519 signature over \"mld-log-checkpoint-v1\\0\", node, NUL, covered_first_seq and covered_last_seq (8 bytes big-endian each), covered_last_tag (ASCII), prev_checkpoint_sha256 and covered_sha256 (32 bytes each), signing_key_id (ASCII)."),
            "seq": { "type": "integer", "description": "Sequence number: strictly increasing per node, across files." },
            "prev_tag": hex(64, "The previous record's hmac."),
            "key_id": hex(16, "Id of the HMAC key."),
            "hmac": hex(64, "HMAC-SHA256(key, node, NUL, the line up to ,\"hmac\":), hex.")
        }
    })
}
