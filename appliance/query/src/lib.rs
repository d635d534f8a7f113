//! The query language of `mldefender query`: the questions an analyst (or the detect
//! task) asks the history, their filters, and the time syntax of the command line.
//!
//! A [`Query`] travels as one JSON frame (`mld-ipc`) to the ingest task's query socket,
//! or is answered offline; `mld-history` answers it. This crate is the parsing half only:
//! pure code with no index and no model, so that it can be tested and fuzzed without
//! building FAISS or loading ONNX Runtime. `mld-history` re-exports every item.
//!
//! Invariant: parsing never panics, whatever the bytes (fuzzed: `fuzz/`).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The largest `k` / `limit` a query may ask for.
pub const MAX_RESULTS: usize = 1000;

/// An event named by its log seq (the index id) or its `event_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventRef {
    Seq(u64),
    EventId(String),
}

impl EventRef {
    /// A number is a seq; anything else an `event_id` (`ev-...`).
    pub fn parse(text: &str) -> EventRef {
        match text.parse::<u64>() {
            Ok(seq) => EventRef::Seq(seq),
            Err(_) => EventRef::EventId(text.to_string()),
        }
    }
}

/// Which events a query keeps (every set condition must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    /// At or after this time, µs since the epoch.
    pub from_ts_us: Option<i64>,
    /// Before this time (exclusive).
    pub to_ts_us: Option<i64>,
    /// The action is one of these (`block`, `alert`, `observe`, `would-block`).
    pub actions: Vec<String>,
    /// The category is one of these (`scan`, `flood`, `benign`, ...).
    pub categories: Vec<String>,
}

/// A question to the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "query", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Query {
    /// The `k` events nearest to an indexed event (the event itself is left out).
    SimilarToEvent { event: EventRef, k: usize, filter: Filter },
    /// The `k` events nearest to a flow or event given as a JSON object (`mldefender flows`
    /// output, or a record of the signed log).
    SimilarToObject { object: Map<String, Value>, k: usize, filter: Filter },
    /// The newest `limit` events with this address as source or destination.
    Ip { ip: IpAddr, limit: usize, filter: Filter },
    /// The `k` decisions whose descriptions are nearest to a question in words (the text
    /// index). Time words and an address in the question become filters when `filter`
    /// and `ip` leave them open.
    Ask {
        question: String,
        k: usize,
        filter: Filter,
        #[serde(default)]
        ip: Option<IpAddr>,
    },
}

/// The longest question, in bytes (a sentence or two; the embedder reads 256 tokens).
pub const MAX_QUESTION_BYTES: usize = 1000;

/// The question if it is not empty and at most [`MAX_QUESTION_BYTES`]; otherwise a
/// message for the asker.
pub fn check_question(question: &str) -> Result<&str, String> {
    let trimmed = question.trim();
    if trimmed.is_empty() {
        return Err("the question is empty".to_string());
    }
    if question.len() > MAX_QUESTION_BYTES {
        return Err(format!("the question has {} bytes; at most {MAX_QUESTION_BYTES}", question.len()));
    }
    Ok(trimmed)
}

/// `count` (a query's `k` or `limit`, named `name` in the message) if it is between 1 and
/// [`MAX_RESULTS`]; otherwise a message for the asker.
pub fn check_count(count: usize, name: &str) -> Result<usize, String> {
    if count == 0 || count > MAX_RESULTS {
        return Err(format!("{name} must be between 1 and {MAX_RESULTS}, got {count}"));
    }
    Ok(count)
}

/// `2026-11-25T10:00:00Z`, `2026-11-25T10:00:00.5Z`, `2026-11-25` (midnight UTC), or
/// µs since the epoch. Dates outside 1970..=9999, days a month does not have, and
/// fields that are not plain digits are refused.
pub fn parse_time_us(text: &str) -> Option<i64> {
    if let Ok(micros) = text.parse::<i64>() {
        return Some(micros);
    }
    let (date, time) = match text.split_once('T') {
        Some((date, time)) => (date, Some(time.strip_suffix('Z').or_else(|| time.strip_suffix("+00:00"))?)),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let year = digits(parts.next()?)?;
    let month = digits(parts.next()?)?;
    let day = digits(parts.next()?)?;
    if parts.next().is_some() || !(1970..=9999).contains(&year) || !(1..=12).contains(&month) || !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }
    let mut micros = days_from_civil(year, month, day) * 86_400_000_000;
    if let Some(time) = time {
        let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
        let mut fields = clock.split(':');
        let hours = digits(fields.next()?)?;
        let minutes = digits(fields.next()?)?;
        let seconds = digits(fields.next()?)?;
        if fields.next().is_some() || hours > 23 || minutes > 59 || seconds > 60 || fraction.len() > 9 || !fraction.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        let fraction_us: i64 = if fraction.is_empty() { 0 } else { format!("{fraction:0<6}")[..6].parse().ok()? };
        micros += ((hours * 60 + minutes) * 60 + seconds) * 1_000_000 + fraction_us;
    }
    Some(micros)
}

/// A field of a date or time: ASCII digits only (`str::parse` would take a sign, so
/// `T-1:00:00Z` was an hour before midnight), at most 4 of them.
fn digits(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 4 || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests;
