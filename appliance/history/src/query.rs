//! Queries over the history: the request and answer of `mldefender query`, answered the
//! same way by the running ingest task (over its socket) and offline (an index directory
//! opened read-only).

use mld_index::{EventIndex, HitFields, SearchFilter, MAX_CANDIDATES};
use serde::{Deserialize, Serialize};

use crate::embed::Embedder;
use crate::text::{AskFilter, Summary, TextIndex};
use crate::HistoryError;

/// The query language lives in `mld-query` (no FAISS, no model: fuzzed there); this
/// module answers it.
pub use mld_query::{EventRef, Filter, Query, MAX_RESULTS};

/// The index's filter for a query's [`Filter`].
fn to_search(filter: &Filter) -> SearchFilter {
    SearchFilter { from_ts_us: filter.from_ts_us, to_ts_us: filter.to_ts_us, actions: filter.actions.clone(), categories: filter.categories.clone() }
}

/// One event of an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerHit {
    /// Squared L2 distance to the query's vector (similarity queries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance: Option<f32>,
    #[serde(flatten)]
    pub fields: HitFields,
}

/// The answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// Events in the index when the query ran.
    pub indexed: u64,
    /// The newest indexed seq.
    pub last_seq: Option<u64>,
    /// From the running ingest task: whether it had read the log to its end when it
    /// answered. `false` while it catches up (after downtime, a rebuild): the answer holds
    /// only what is indexed so far. Absent offline (`--index`: the last saved snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caught_up: Option<bool>,
    /// The event the query started from (`SimilarToEvent`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_event: Option<HitFields>,
    pub hits: Vec<AnswerHit>,
    /// A question in words (`Query::Ask`): the time range its words set, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_filter: Option<String>,
    /// A question in words: the address it named, applied as a filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_filter: Option<String>,
    /// A question in words: exact counts over the hits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
}

/// Answers `query` from `index`; `embedder` is needed only for `SimilarToObject`.
/// Errors name what was not found or not valid; they are the asker's, not the index's.
pub fn answer(index: &EventIndex, embedder: Option<&mut Embedder>, query: &Query) -> Result<Answer, HistoryError> {
    let mut answer = empty_answer(index);
    match query {
        Query::SimilarToEvent { event, k, filter } => {
            let k = check_count(*k, "k")?;
            let seq = match event {
                EventRef::Seq(seq) => *seq,
                EventRef::EventId(id) => index.find_event_id(id)?.ok_or_else(|| HistoryError::NotFound(format!("no indexed event has event_id `{id}`")))?,
            };
            let newest = index.last_id().map_or_else(|| "none".to_string(), |last| last.to_string());
            let stored = index.get(seq)?.ok_or_else(|| {
                HistoryError::NotFound(format!("event seq {seq} is not in the index ({} events indexed, the newest seq {newest})", index.len()))
            })?;
            // One more, to leave the event itself out.
            let hits = index.search(&stored.vector, (k + 1).min(MAX_CANDIDATES), &to_search(filter))?;
            answer.hits =
                hits.into_iter().filter(|hit| hit.id != seq).take(k).map(|hit| AnswerHit { distance: Some(hit.distance), fields: hit.fields }).collect();
            answer.query_event = Some(stored.fields);
        }
        Query::SimilarToObject { object, k, filter } => {
            let k = check_count(*k, "k")?;
            let embedder = embedder.ok_or_else(|| HistoryError::Invalid("a query by flow needs the embedder (give the configuration)".to_string()))?;
            if embedder.known_features(object) == 0 {
                return Err(HistoryError::Invalid(
                    "the object carries none of the embedder's features: give a flow as `mldefender flows` writes it, or an event record".to_string(),
                ));
            }
            let vector = embedder.embed(&[object])?;
            let hits = index.search(&vector, k, &to_search(filter))?;
            answer.hits = hits.into_iter().map(|hit| AnswerHit { distance: Some(hit.distance), fields: hit.fields }).collect();
        }
        Query::Ask { .. } => {
            return Err(HistoryError::Invalid(
                "a question in words is answered by the text index (ingest.text-index = true; offline: --index <state-dir>/text-index)".to_string(),
            ))
        }
        Query::Ip { ip, limit, filter } => {
            let limit = check_count(*limit, "limit")?;
            answer.hits = index.events_with_ip(*ip, &to_search(filter), limit)?.into_iter().map(|fields| AnswerHit { distance: None, fields }).collect();
        }
    }
    Ok(answer)
}

fn empty_answer(index: &EventIndex) -> Answer {
    Answer {
        indexed: index.len() as u64,
        last_seq: index.last_id(),
        caught_up: None,
        query_event: None,
        hits: Vec::new(),
        time_filter: None,
        address_filter: None,
        summary: None,
    }
}

/// Answers a question in words ([`Query::Ask`]) from the text index; `now_us` and the
/// local zone's `utc_offset_secs` place the question's time words. Other queries are
/// refused (they are the flow index's).
pub fn answer_ask(text: &mut TextIndex, query: &Query, now_us: i64, utc_offset_secs: i64) -> Result<Answer, HistoryError> {
    let Query::Ask { question, k, filter, ip } = query else {
        return Err(HistoryError::Invalid("the text index answers questions in words only".to_string()));
    };
    let k = check_count(*k, "k")?;
    let question = mld_query::check_question(question).map_err(HistoryError::Invalid)?;
    let asked = text.ask(question, k, &AskFilter { search: to_search(filter), ip: *ip }, now_us, utc_offset_secs)?;
    let mut answer = empty_answer(text.index());
    answer.hits = asked.hits.into_iter().map(|hit| AnswerHit { distance: Some(hit.distance), fields: hit.fields }).collect();
    answer.time_filter = asked.time_filter;
    answer.address_filter = asked.address_filter;
    answer.summary = Some(asked.summary);
    Ok(answer)
}

fn check_count(count: usize, name: &str) -> Result<usize, HistoryError> {
    mld_query::check_count(count, name).map_err(HistoryError::Invalid)
}

/// What the ingest task sends back for a [`Query`] on its socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reply {
    Answer(Box<Answer>),
    /// The query could not be answered; the message says why.
    Error(String),
}
