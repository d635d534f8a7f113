//! What is kept beside each vector to display a hit, and the filters a query can apply.

use serde::{Deserialize, Serialize};

/// The most bytes one entry's fields may take as JSON. Keeps the side store and a query's
/// reads bounded whatever an event carries.
pub const MAX_FIELDS_BYTES: usize = 2048;

/// The key fields of a signed event, enough to show a hit without reading the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HitFields {
    /// The signed log's sequence number (the FAISS id of the event's vector).
    pub seq: u64,
    /// The event's id in the log.
    pub event_id: String,
    /// The event's time, microseconds since the Unix epoch.
    pub ts_us: i64,
    pub src_ip: String,
    pub dst_ip: String,
    pub dst_port: u16,
    pub protocol: String,
    /// The decision: `block`, `would-block`, `allow`, ...
    pub action: String,
    /// The category the detector named (`benign`, `scan`, `flood`, ...).
    pub category: String,
    pub score_fast: f64,
    pub score_model: Option<f64>,
    pub score_final: f64,
    /// The event in words (`mld_history::describe`), kept by the text index; absent in
    /// the flow index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One answer to a query: the event id (its seq), the squared L2 distance FAISS reports,
/// and the stored fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub id: u64,
    pub distance: f32,
    pub fields: HitFields,
}

/// Which hits a query keeps. Every set condition must hold; an empty list means "any".
///
/// Filters are applied after the nearest-neighbour search (see `EventIndex::search`): a
/// filter that keeps very few events may return fewer than `k` hits even though more
/// matching events exist farther away.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchFilter {
    /// Keep events at or after this time (microseconds since the epoch).
    pub from_ts_us: Option<i64>,
    /// Keep events before this time (exclusive).
    pub to_ts_us: Option<i64>,
    /// Keep events whose action is one of these.
    pub actions: Vec<String>,
    /// Keep events whose category is one of these.
    pub categories: Vec<String>,
}

impl SearchFilter {
    /// True when the filter keeps everything (then no over-fetch is needed).
    pub fn is_empty(&self) -> bool {
        self.from_ts_us.is_none() && self.to_ts_us.is_none() && self.actions.is_empty() && self.categories.is_empty()
    }
}
