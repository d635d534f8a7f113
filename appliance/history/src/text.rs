//! The text index (issue 19): decision events described in words ([`crate::describe`]),
//! embedded by the signed sentence embedder ([`mld_model::text::TextModel`]) into a second
//! FAISS index beside the flow index, and asked in words.
//!
//! - [`TextIndex`]: the index with its model; [`TextIndex::add_lines`] takes verified
//!   lines (the same the flow index takes) and keeps the decisions; [`TextIndex::ask`]
//!   answers a question.
//! - [`time_words`]: "since midnight", "last hour", "yesterday" in a question become a
//!   time range when no flag gives one.
//! - [`Summary`]: exact counts over the answer (sources, blocks, alerts, span, categories);
//!   no language model writes anything.
//!
//! The vectors are unit length, so the squared L2 distance is `2 - 2 cos`: the ranking is
//! the cosine's. Hits whose distances are equal to 1e-4 are shown newest first.
//!
//! A question is not searched over every event's vector. Descriptions without their
//! addresses and numbers repeat (a scan block reads the same whoever scanned whom: 2,048
//! decisions of the benchmark are 18 texts), so the index keeps its events grouped by the
//! text embedded for them ([`Groups`]) and compares the question with each distinct text
//! once. Every event of a group is equally near, so the answer is exact: the nearest
//! texts first, and within equal distances the newest events that pass the filters,
//! however many older ones there are. The FAISS index and its side store remain what is
//! saved, reopened and rolled over with the flow index.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use mld_index::{EventIndex, Hit, HitFields, SearchFilter, MAX_CANDIDATES};
use mld_model::text::TextModel;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::describe::{describe, semantic_text, DESCRIPTION_VERSION};
use crate::HistoryError;

/// Most descriptions embedded in one model call (they are of similar length, so padding
/// costs little).
pub const TEXT_BATCH: usize = 64;
/// Embedded texts remembered (the words of a description without its addresses and
/// numbers repeat: a scan block reads the same whoever scanned whom). About 1.6 KB each;
/// when full the cache starts again.
pub const TEXT_CACHE_ENTRIES: usize = 4096;

/// What [`TextIndex::add_lines`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TextStats {
    /// Events described and added.
    pub indexed: u64,
    /// Verified lines that are not described (observations, other records).
    pub skipped: u64,
    /// Event lines that could not be parsed (left out).
    pub unreadable: u64,
}

/// The filters of a question: flags first; time words fill the time range when no flag
/// gave one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AskFilter {
    pub search: SearchFilter,
    /// Keep events whose source or destination is this address.
    pub ip: Option<IpAddr>,
}

/// One answer to a question.
#[derive(Debug, Clone, Serialize)]
pub struct AskAnswer {
    pub question: String,
    /// The time range taken from the question's words, in words, when one was applied.
    pub time_filter: Option<String>,
    /// The address taken from the question, in words, when one was applied.
    pub address_filter: Option<String>,
    pub hits: Vec<Hit>,
    pub summary: Summary,
}

/// An opened index this configuration cannot use: the model back, and why.
pub type Refused = Box<(TextModel, String)>;

/// The description index and its model.
pub struct TextIndex {
    index: EventIndex,
    model: TextModel,
    observations: bool,
    /// Vectors of embedded texts, bounded by [`TEXT_CACHE_ENTRIES`].
    cache: HashMap<String, Vec<f32>>,
    /// The indexed events by the text embedded for them: what a question is compared with.
    groups: Groups,
}

/// The index's events grouped by their embedded text (the description without addresses
/// and numbers), with one vector per text. Bounded by the index: at most one group per
/// event, and an event's id is in one group.
#[derive(Default)]
struct Groups {
    by_text: HashMap<String, usize>,
    /// One vector per group, row-major.
    vectors: Vec<f32>,
    /// Each group's event ids, ascending.
    ids: Vec<Vec<u64>>,
    dims: usize,
}

impl Groups {
    fn new(dims: usize) -> Groups {
        Groups { dims, ..Groups::default() }
    }

    /// Groups the events stored in `index` (their description and vector are in its side
    /// store): what the index holds when it is opened.
    fn of(index: &EventIndex, dims: usize) -> Result<Groups, HistoryError> {
        let mut groups = Groups::new(dims);
        if index.is_empty() {
            return Ok(groups);
        }
        index.read_all(TEXT_BATCH * 16, &mut |ids, vectors, fields| {
            for (at, (id, fields)) in ids.iter().zip(fields).enumerate() {
                let text = semantic_text(fields.description.as_deref().unwrap_or(""));
                groups.insert(*id, text, &vectors[at * dims..(at + 1) * dims]);
            }
            Ok(())
        })?;
        Ok(groups)
    }

    fn insert(&mut self, id: u64, text: String, vector: &[f32]) {
        let group = match self.by_text.get(&text) {
            Some(&group) => group,
            None => {
                self.vectors.extend_from_slice(vector);
                self.ids.push(Vec::new());
                self.by_text.insert(text, self.ids.len() - 1);
                self.ids.len() - 1
            }
        };
        let ids = &mut self.ids[group];
        // Events come in seq order; place one that does not.
        match ids.last() {
            Some(&last) if last >= id => {
                if let Err(at) = ids.binary_search(&id) {
                    ids.insert(at, id);
                }
            }
            _ => ids.push(id),
        }
    }

    /// Keeps only the events `index` holds (after a roll-over), and the groups left with any.
    fn retain_indexed(&mut self, index: &EventIndex) {
        let dims = self.dims;
        let old = std::mem::replace(self, Groups::new(dims));
        for (text, group) in old.by_text {
            let ids: Vec<u64> = old.ids[group].iter().copied().filter(|id| index.contains(*id)).collect();
            if !ids.is_empty() {
                self.vectors.extend_from_slice(&old.vectors[group * dims..(group + 1) * dims]);
                self.ids.push(ids);
                self.by_text.insert(text, self.ids.len() - 1);
            }
        }
    }

    /// Every group's squared L2 distance to `vector`, nearest first.
    fn nearest(&self, vector: &[f32]) -> Vec<(f32, usize)> {
        let mut order: Vec<(f32, usize)> = self
            .vectors
            .chunks_exact(self.dims)
            .enumerate()
            .map(|(group, row)| (row.iter().zip(vector).map(|(a, b)| (a - b) * (a - b)).sum::<f32>(), group))
            .collect();
        order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        order
    }

    fn len(&self) -> usize {
        self.ids.len()
    }
}

impl fmt::Debug for TextIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TextIndex").field("dir", &self.index.dir()).field("events", &self.index.len()).finish_non_exhaustive()
    }
}

impl TextIndex {
    /// What makes this index's vectors: the model and the description wording. An index
    /// made by another is not comparable and is rebuilt from the log.
    pub fn source_of(model: &TextModel, observations: bool) -> String {
        format!("{} descriptions v{DESCRIPTION_VERSION}{}", model.source(), if observations { " with observations" } else { "" })
    }

    /// Creates an empty index in `dir` (FAISS `Flat`: exact inner-product ranking; at
    /// 100 K decisions a search reads their 150 MB of vectors: docs/benchmarks.md).
    pub fn create(dir: &Path, model: TextModel, observations: bool) -> Result<TextIndex, HistoryError> {
        let source = TextIndex::source_of(&model, observations);
        let index = EventIndex::create_with_source(dir, model.dims() as u32, "Flat", &source)?;
        let groups = Groups::new(model.dims());
        Ok(TextIndex { index, model, observations, cache: HashMap::new(), groups })
    }

    /// The text index over an opened `index`; `Ok(Err(refused))` when the index was made
    /// by another model, wording or dimension (the caller rebuilds it), `Err` when its
    /// events cannot be read back (an IO error is not the index's fault: nothing is rebuilt).
    pub fn from_index(index: EventIndex, model: TextModel, observations: bool) -> Result<Result<TextIndex, Refused>, HistoryError> {
        let source = TextIndex::source_of(&model, observations);
        if index.source() != source || index.dims() as usize != model.dims() {
            let reason = format!("made by `{}`, this configuration is `{source}`", index.source());
            return Ok(Err(Box::new((model, reason))));
        }
        let groups = Groups::of(&index, model.dims())?;
        Ok(Ok(TextIndex { index, model, observations, cache: HashMap::new(), groups }))
    }

    /// Puts `index` in place of the current one (a roll-over that keeps some of its
    /// events), returning the old one.
    pub fn replace_index(&mut self, index: EventIndex) -> EventIndex {
        let old = std::mem::replace(&mut self.index, index);
        self.groups.retain_indexed(&self.index);
        old
    }

    /// How many distinct texts the indexed events have (what a question is compared with).
    pub fn distinct_texts(&self) -> usize {
        self.groups.len()
    }

    pub fn index(&self) -> &EventIndex {
        &self.index
    }

    pub fn index_mut(&mut self) -> &mut EventIndex {
        &mut self.index
    }

    pub fn model_mut(&mut self) -> &mut TextModel {
        &mut self.model
    }

    /// Describes, embeds and adds the described events among verified `lines` (seq, line);
    /// seqs already in the index are skipped.
    pub fn add_lines(&mut self, lines: &[(u64, &str)]) -> Result<TextStats, HistoryError> {
        let mut stats = TextStats::default();
        let mut pending: Vec<HitFields> = Vec::new();
        for (seq, line) in lines {
            if self.index.contains(*seq) {
                continue;
            }
            let record: Map<String, Value> = match serde_json::from_str(line) {
                Ok(record) => record,
                Err(_) => {
                    stats.unreadable += 1;
                    continue;
                }
            };
            match describe(&record, self.observations) {
                Some(description) => pending.push(hit_fields(*seq, &record, description)),
                None => stats.skipped += 1,
            }
        }
        for chunk in pending.chunks(TEXT_BATCH) {
            let texts: Vec<String> = chunk.iter().map(|fields| semantic_text(fields.description.as_deref().unwrap_or(""))).collect();
            let vectors = self.embed_cached(&texts)?;
            let ids: Vec<u64> = chunk.iter().map(|fields| fields.seq).collect();
            stats.indexed += self.index.add(&ids, &vectors, chunk)? as u64;
            let dims = self.model.dims();
            for (at, (id, text)) in ids.iter().zip(texts).enumerate() {
                self.groups.insert(*id, text, &vectors[at * dims..(at + 1) * dims]);
            }
        }
        Ok(stats)
    }

    /// Vectors of `texts`, row-major: each distinct text not in the cache is embedded once
    /// (in batches), the rest come from the cache.
    fn embed_cached(&mut self, texts: &[String]) -> Result<Vec<f32>, HistoryError> {
        let mut missing: Vec<&str> = texts.iter().map(String::as_str).filter(|text| !self.cache.contains_key(*text)).collect();
        missing.sort_unstable();
        missing.dedup();
        let dims = self.model.dims();
        for chunk in missing.chunks(TEXT_BATCH) {
            let vectors = self.model.embed(chunk)?;
            if self.cache.len() + chunk.len() > TEXT_CACHE_ENTRIES {
                self.cache.clear();
            }
            for (at, text) in chunk.iter().enumerate() {
                self.cache.insert((*text).to_string(), vectors[at * dims..(at + 1) * dims].to_vec());
            }
        }
        let mut out = Vec::with_capacity(texts.len() * self.model.dims());
        for text in texts {
            match self.cache.get(text) {
                Some(vector) => out.extend_from_slice(vector),
                // Cleared while this batch was embedded (more distinct texts than the cache
                // holds): embed it alone.
                None => out.extend_from_slice(self.model.embed(&[text.as_str()])?),
            }
        }
        Ok(out)
    }

    /// The `k` described events nearest to `question` that pass `filter`; time words in the
    /// question set the time range when `filter` has none (`now_us` and the local time
    /// zone's `utc_offset_secs` place "midnight" and "yesterday").
    pub fn ask(&mut self, question: &str, k: usize, filter: &AskFilter, now_us: i64, utc_offset_secs: i64) -> Result<AskAnswer, HistoryError> {
        let question = question.trim();
        if question.is_empty() {
            return Err(HistoryError::Invalid("the question is empty".to_string()));
        }
        let mut search = filter.search.clone();
        let mut time_filter = None;
        if search.from_ts_us.is_none() && search.to_ts_us.is_none() {
            if let Some(range) = time_words(question, now_us, utc_offset_secs) {
                search.from_ts_us = Some(range.from_us);
                search.to_ts_us = range.to_us;
                time_filter = Some(range.words);
            }
        }
        // An address in the question is a filter, not words (descriptions are embedded
        // without theirs): "what did 10.66.2.2 do" asks about that host's events.
        let mut address_filter = None;
        let ip = filter.ip.or_else(|| {
            let found = question_address(question);
            address_filter = found.map(|ip| format!("events of {ip}"));
            found
        });
        let vector = self.model.embed(&[semantic_text(question).as_str()])?.to_vec();
        let k = k.clamp(1, MAX_CANDIDATES);
        let with_ip: Option<HashSet<u64>> = ip.map(|ip| self.index.ids_with_ip(ip).iter().copied().collect());
        let passes = |id: u64| with_ip.as_ref().is_none_or(|ids| ids.contains(&id));
        let order = self.groups.nearest(&vector);
        let mut hits: Vec<Hit> = Vec::with_capacity(k);
        // Texts at equal distance (to 1e-4) form one tier: the newest of the tier's events
        // that pass come first, whichever text they have.
        let mut at = 0;
        while at < order.len() && hits.len() < k {
            let tier = quantise(order[at].0);
            let mut tier_hits = Vec::new();
            while at < order.len() && quantise(order[at].0) == tier {
                let (distance, group) = order[at];
                let found = self.index.newest_of(&self.groups.ids[group], &search, passes, k - hits.len())?;
                tier_hits.extend(found.into_iter().map(|fields| Hit { id: fields.seq, distance, fields }));
                at += 1;
            }
            // Newest by log order (seq), as `newest_of` chose them: an event's time is its
            // flow's last packet, which can be before an earlier-logged decision's.
            tier_hits.sort_by_key(|hit| std::cmp::Reverse(hit.id));
            tier_hits.truncate(k - hits.len());
            hits.extend(tier_hits);
        }
        let summary = Summary::of(&hits);
        Ok(AskAnswer { question: question.to_string(), time_filter, address_filter, hits, summary })
    }
}

/// The first IP address written in a question.
fn question_address(question: &str) -> Option<IpAddr> {
    question
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '?' | '!' | '(' | ')' | '"' | '\''))
        .find_map(|word| word.trim_end_matches('.').parse::<IpAddr>().ok())
}

fn quantise(distance: f32) -> i64 {
    (f64::from(distance) * 1e4).round() as i64
}

/// The stored fields of a described event.
fn hit_fields(seq: u64, record: &Map<String, Value>, description: String) -> HitFields {
    let text = |name: &str| record.get(name).and_then(Value::as_str).unwrap_or("").to_string();
    let number = |name: &str| record.get(name).and_then(Value::as_f64);
    HitFields {
        seq,
        event_id: text("event_id"),
        ts_us: record.get("ts_us").and_then(Value::as_i64).unwrap_or(0),
        src_ip: text("src_ip"),
        dst_ip: text("dst_ip"),
        dst_port: record.get("dst_port").and_then(Value::as_u64).and_then(|port| u16::try_from(port).ok()).unwrap_or(0),
        protocol: text("protocol_name"),
        action: text("action"),
        category: text("category"),
        score_fast: number("score_fast").unwrap_or(0.0),
        score_model: number("score_model"),
        score_final: number("score_final").unwrap_or(0.0),
        description: Some(description),
    }
}

/// A time range found in a question's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeRange {
    pub from_us: i64,
    /// Exclusive; `None`: up to now and on.
    pub to_us: Option<i64>,
    /// What was understood, for the answer ("since midnight (local time)").
    pub words: String,
}

/// The first time expression in `question`, as a range: "since midnight", "today",
/// "this morning", "yesterday", "last hour", "last/past N minutes|hours|days", "last
/// day", "last week". Numbers may be digits or words up to twelve.
pub fn time_words(question: &str, now_us: i64, utc_offset_secs: i64) -> Option<TimeRange> {
    const MINUTE: i64 = 60_000_000;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    let lower = question.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric()).filter(|word| !word.is_empty()).collect();
    let offset_us = utc_offset_secs * 1_000_000;
    let midnight = (now_us + offset_us).div_euclid(DAY) * DAY - offset_us;
    let range = |from_us: i64, to_us: Option<i64>, words: &str| Some(TimeRange { from_us, to_us, words: words.to_string() });
    let has = |phrase: &[&str]| words.windows(phrase.len()).any(|window| window == phrase);
    if has(&["since", "midnight"]) || has(&["today"]) || has(&["this", "day"]) {
        return range(midnight, None, "since midnight (local time)");
    }
    if has(&["this", "morning"]) {
        return range(midnight, Some(midnight + 12 * HOUR), "this morning (midnight to noon, local time)");
    }
    if has(&["yesterday"]) || has(&["last", "night"]) {
        return range(midnight - DAY, Some(midnight), "yesterday (local time)");
    }
    for (at, pair) in words.windows(2).enumerate() {
        if !matches!(pair[0], "last" | "past" | "previous") {
            continue;
        }
        let (amount, unit) = match number_word(pair[1]) {
            Some(amount) => (amount, words.get(at + 2).copied().unwrap_or("")),
            None => (1, pair[1]),
        };
        let unit_us = match unit.trim_end_matches('s') {
            "minute" | "min" => MINUTE,
            "hour" | "hr" => HOUR,
            "day" => DAY,
            "week" => 7 * DAY,
            _ => continue,
        };
        let span = amount.saturating_mul(unit_us);
        let unit_word = unit.trim_end_matches('s');
        let words = if amount == 1 { format!("the last {unit_word}") } else { format!("the last {amount} {unit_word}s") };
        return range(now_us.saturating_sub(span), None, &words);
    }
    None
}

fn number_word(word: &str) -> Option<i64> {
    const WORDS: [&str; 12] = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"];
    if let Some(position) = WORDS.iter().position(|candidate| *candidate == word) {
        return Some(position as i64 + 1);
    }
    word.parse::<i64>().ok().filter(|amount| (1..=100_000).contains(amount))
}

/// Exact counts over an answer's events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub events: usize,
    /// Sources and how many of the events each has, most first.
    pub sources: Vec<(String, usize)>,
    /// Events by action (`block`, `alert`, ...).
    pub actions: BTreeMap<String, usize>,
    pub categories: BTreeMap<String, usize>,
    pub first_ts_us: Option<i64>,
    pub last_ts_us: Option<i64>,
}

impl Summary {
    pub fn of(hits: &[Hit]) -> Summary {
        let mut sources: BTreeMap<String, usize> = BTreeMap::new();
        let mut summary = Summary { events: hits.len(), ..Summary::default() };
        for hit in hits {
            let fields = &hit.fields;
            *sources.entry(fields.src_ip.clone()).or_default() += 1;
            *summary.actions.entry(fields.action.clone()).or_default() += 1;
            *summary.categories.entry(fields.category.clone()).or_default() += 1;
            summary.first_ts_us = Some(summary.first_ts_us.map_or(fields.ts_us, |first| first.min(fields.ts_us)));
            summary.last_ts_us = Some(summary.last_ts_us.map_or(fields.ts_us, |last| last.max(fields.ts_us)));
        }
        let mut sources: Vec<(String, usize)> = sources.into_iter().collect();
        sources.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        summary.sources = sources;
        summary
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.events == 0 {
            return write!(f, "no matching events");
        }
        let list = |map: &BTreeMap<String, usize>| map.iter().map(|(name, n)| format!("{n} {name}")).collect::<Vec<_>>().join(", ");
        let sources: Vec<String> = self.sources.iter().take(5).map(|(source, n)| format!("{source} ({n})")).collect();
        let more = self.sources.len().saturating_sub(5);
        write!(f, "{} events from {} source{}: {}", self.events, self.sources.len(), if self.sources.len() == 1 { "" } else { "s" }, sources.join(", "))?;
        if more > 0 {
            write!(f, " and {more} more")?;
        }
        write!(f, "; {}; categories {}", list(&self.actions), list(&self.categories))?;
        if let (Some(first), Some(last)) = (self.first_ts_us, self.last_ts_us) {
            write!(f, "; from {} to {}", rfc3339(first), rfc3339(last))?;
        }
        Ok(())
    }
}

/// A time in microseconds as RFC 3339 UTC, to the second.
pub fn rfc3339(ts_us: i64) -> String {
    let full = mld_flow::time::rfc3339_utc(u64::try_from(ts_us).unwrap_or(0).saturating_mul(1000));
    format!("{}Z", &full[..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_855_000_000_000; // 2025-12-04T13:30:00Z

    #[test]
    fn time_words_become_ranges() {
        assert_eq!(rfc3339(NOW), "2025-12-04T13:30:00Z");
        let utc_midnight = 1_764_806_400_000_000;
        let since = time_words("password guessing since midnight", NOW, 0).expect("since midnight");
        assert_eq!((since.from_us, since.to_us), (utc_midnight, None));
        // Two hours east of UTC, local midnight was at 22:00 UTC the day before.
        assert_eq!(time_words("what happened today?", NOW, 7200).expect("today").from_us, utc_midnight - 2 * 3_600_000_000);
        let yesterday = time_words("scans yesterday", NOW, 0).expect("yesterday");
        assert_eq!((yesterday.from_us, yesterday.to_us), (utc_midnight - 86_400_000_000, Some(utc_midnight)));
        assert_eq!(time_words("blocks in the last hour", NOW, 0).expect("hour").from_us, NOW - 3_600_000_000);
        let three = time_words("floods over the past three days", NOW, 0).expect("three days");
        assert_eq!((three.from_us, three.words.as_str()), (NOW - 3 * 86_400_000_000, "the last 3 days"));
        assert_eq!(time_words("last 15 minutes", NOW, 0).expect("minutes").from_us, NOW - 15 * 60_000_000);
        assert_eq!(time_words("who scanned the server", NOW, 0), None);
        assert_eq!(time_words("the last scanner", NOW, 0), None, "`last` alone is not a time");
        assert_eq!(question_address("what did 10.66.2.2 do before?"), "10.66.2.2".parse().ok());
        assert_eq!(question_address("scans of fd00::9:2."), "fd00::9:2".parse().ok());
        assert_eq!(question_address("who scanned the server"), None);
    }

    fn hit(src: &str, action: &str, category: &str, ts_us: i64) -> Hit {
        let mut fields = hit_fields(1, &Map::new(), String::new());
        fields.src_ip = src.to_string();
        fields.action = action.to_string();
        fields.category = category.to_string();
        fields.ts_us = ts_us;
        Hit { id: 1, distance: 0.5, fields }
    }

    #[test]
    fn the_summary_counts_exactly() {
        let hits = [
            hit("10.66.2.2", "block", "scan", NOW),
            hit("10.66.2.2", "alert", "scan", NOW - 1_000_000),
            hit("10.66.1.2", "alert", "brute-force", NOW + 5_000_000),
        ];
        let summary = Summary::of(&hits);
        assert_eq!(summary.sources, [("10.66.2.2".to_string(), 2), ("10.66.1.2".to_string(), 1)]);
        assert_eq!(
            summary.to_string(),
            "3 events from 2 sources: 10.66.2.2 (2), 10.66.1.2 (1); 2 alert, 1 block; categories 1 brute-force, 2 scan; from 2025-12-04T13:29:59Z to 2025-12-04T13:30:05Z"
        );
        assert_eq!(Summary::of(&[]).to_string(), "no matching events");
    }
}
