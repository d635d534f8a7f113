//! The evaluation of `mldefender query ask` (issue 19): the question set
//! `tests/ask/questions.json` over the decisions of real lab runs `tests/ask/decisions.jsonl`
//! (tests/ask/collect.sh), each question judged by the scenarios that produced the
//! decisions that answer it. Three ways to answer, in the same run:
//!
//! - **text**: the text index (the sentence embedder over the descriptions' words);
//! - **bm25**: keyword search over the full descriptions (BM25, k1 1.2, b 0.75; words are
//!   lower-case runs of letters, digits, `.` and `-`, so an address is one word);
//! - **flow**: what the flow index offers a question in words: the keyword search's best
//!   event, then its nearest events by flow features (query by example).
//!
//! recall@10 = relevant events in the first 10 / min(relevant, 10); MRR = 1 / the rank of
//! the first relevant event (0 when none is in the first 10). The numbers are printed (and
//! recorded in docs/benchmarks.md); the test fails if the embedder stops beating keyword
//! search on recall@10, the claim the docs make.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use mld_history::{describe, AskFilter, Embedder, TextIndex};
use mld_index::EventIndex;
use mld_model::signing::ModelPublicKey;
use mld_model::text::TextModel;
use serde_json::{Map, Value};

const RELEASE_KEY: &str = "viO2lPvEO07YVapWMGqPadpKkt4VNsnwQftl4CPiHns=";
const K: usize = 10;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn runtime() -> PathBuf {
    std::env::var_os("MLD_ONNXRUNTIME").map_or_else(|| PathBuf::from("/usr/local/lib/mldefender/libonnxruntime.so.1.31.1"), PathBuf::from)
}

struct Decision {
    seq: u64,
    line: String,
    record: Map<String, Value>,
    description: String,
}

struct Question {
    text: String,
    relevant: HashSet<u64>,
}

fn corpus() -> Vec<Decision> {
    let text = std::fs::read_to_string(repo().join("tests/ask/decisions.jsonl")).expect("read tests/ask/decisions.jsonl");
    text.lines()
        .map(|line| {
            let record: Map<String, Value> = serde_json::from_str(line).expect("a decision record");
            let description = describe(&record, false).expect("a decision is described");
            Decision { seq: record["seq"].as_u64().expect("seq"), line: line.to_string(), record, description }
        })
        .collect()
}

fn questions(corpus: &[Decision]) -> Vec<Question> {
    let document: Value = serde_json::from_str(&std::fs::read_to_string(repo().join("tests/ask/questions.json")).expect("read")).expect("JSON");
    let strings =
        |value: &Value| -> Option<Vec<String>> { value.as_array().map(|items| items.iter().filter_map(|item| item.as_str().map(str::to_string)).collect()) };
    document["questions"]
        .as_array()
        .expect("questions")
        .iter()
        .map(|item| {
            let scenarios = strings(&item["scenarios"]).expect("scenarios");
            let actions = strings(&item["actions"]);
            let relevant = corpus
                .iter()
                .filter(|decision| scenarios.iter().any(|scenario| decision.record["scenario"] == scenario.as_str()))
                .filter(|decision| actions.as_ref().is_none_or(|actions| actions.iter().any(|action| decision.record["action"] == action.as_str())))
                .map(|decision| decision.seq)
                .collect();
            Question { text: item["question"].as_str().expect("question").to_string(), relevant }
        })
        .collect()
}

fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '.' || c == '-'))
        .map(|word| word.trim_matches(|c| c == '.' || c == '-'))
        .filter(|word| !word.is_empty())
        .map(str::to_string)
        .collect()
}

/// BM25 over the descriptions.
struct Bm25 {
    documents: Vec<(u64, i64, HashMap<String, f64>, f64)>,
    document_frequency: HashMap<String, f64>,
    mean_length: f64,
}

impl Bm25 {
    fn new(corpus: &[Decision]) -> Bm25 {
        let mut document_frequency: HashMap<String, f64> = HashMap::new();
        let documents: Vec<(u64, i64, HashMap<String, f64>, f64)> = corpus
            .iter()
            .map(|decision| {
                let words = words(&decision.description);
                let mut counts: HashMap<String, f64> = HashMap::new();
                for word in &words {
                    *counts.entry(word.clone()).or_default() += 1.0;
                }
                for word in counts.keys() {
                    *document_frequency.entry(word.clone()).or_default() += 1.0;
                }
                (decision.seq, decision.record["ts_us"].as_i64().unwrap_or(0), counts, words.len() as f64)
            })
            .collect();
        let mean_length = documents.iter().map(|document| document.3).sum::<f64>() / documents.len().max(1) as f64;
        Bm25 { documents, document_frequency, mean_length }
    }

    /// The `k` best seqs with a positive score (ties: newest first).
    fn search(&self, question: &str, k: usize) -> Vec<u64> {
        let (k1, b, n) = (1.2, 0.75, self.documents.len() as f64);
        let terms = words(question);
        let mut scored: Vec<(f64, i64, u64)> = self
            .documents
            .iter()
            .map(|(seq, ts, counts, length)| {
                let score = terms
                    .iter()
                    .filter_map(|term| {
                        let tf = *counts.get(term)?;
                        let df = self.document_frequency[term];
                        let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
                        Some(idf * tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * length / self.mean_length)))
                    })
                    .sum::<f64>();
                (score, *ts, *seq)
            })
            .filter(|(score, _, _)| *score > 0.0)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
        scored.into_iter().take(k).map(|(_, _, seq)| seq).collect()
    }
}

fn recall_and_reciprocal_rank(answer: &[u64], relevant: &HashSet<u64>) -> (f64, f64) {
    let found = answer.iter().take(K).filter(|seq| relevant.contains(seq)).count();
    let recall = found as f64 / relevant.len().min(K) as f64;
    let rank = answer.iter().take(K).position(|seq| relevant.contains(seq)).map_or(0.0, |at| 1.0 / (at + 1) as f64);
    (recall, rank)
}

#[test]
fn the_embedder_beats_keyword_search_on_the_lab_questions() {
    let corpus = corpus();
    let questions = questions(&corpus);
    mld_model::init_runtime(&runtime()).expect("ONNX Runtime (scripts/setup installs it)");
    let key = ModelPublicKey::from_base64(RELEASE_KEY).expect("key");
    let text_dir = std::env::var_os("MLD_TEXT_MODEL_DIR").map_or_else(|| PathBuf::from("/usr/local/share/mldefender/text"), PathBuf::from);
    let model = TextModel::load(&text_dir, "text-embedder", &key).expect("the text model (scripts/setup installs it)");
    let work = tempfile::tempdir().expect("temp dir");
    let mut text = TextIndex::create(&work.path().join("text"), model, false).expect("text index");
    let lines: Vec<(u64, &str)> = corpus.iter().map(|decision| (decision.seq, decision.line.as_str())).collect();
    assert_eq!(text.add_lines(&lines).expect("index").indexed as usize, corpus.len());

    // The flow index over the same decisions.
    let mut embedder = Embedder::load(&runtime(), &repo().join("models"), "embedder", RELEASE_KEY, &[10, 60]).expect("the flow embedder");
    let embedded = embedder.embed_lines(&lines).expect("embed flows");
    let mut flows = EventIndex::create(work.path().join("flows"), embedder.dims() as u32, "Flat").expect("flow index");
    flows.add(&embedded.ids, &embedded.vectors, &embedded.fields).expect("add");

    let bm25 = Bm25::new(&corpus);
    let now = corpus.iter().filter_map(|decision| decision.record["ts_us"].as_i64()).max().unwrap_or(0) + 1;
    let mut scenarios: Vec<&str> = corpus.iter().filter_map(|decision| decision.record["scenario"].as_str()).collect();
    scenarios.sort_unstable();
    scenarios.dedup();
    eprintln!("{} decisions from {} scenarios; {} questions", corpus.len(), scenarios.len(), questions.len());
    let mut sums = [(0.0, 0.0); 3];
    let mut judged = 0;
    for question in &questions {
        if question.relevant.is_empty() {
            eprintln!("  (no decision answers {:?} in this corpus: left out)", question.text);
            continue;
        }
        judged += 1;
        let answer = text.ask(&question.text, K, &AskFilter::default(), now, 0).expect("ask");
        let by_text: Vec<u64> = answer.hits.iter().map(|hit| hit.id).collect();
        let by_keywords = bm25.search(&question.text, K);
        let by_flow: Vec<u64> = match by_keywords.first() {
            Some(&seed) => {
                let stored = flows.get(seed).expect("read").expect("the seed is indexed");
                flows.search(&stored.vector, K, &Default::default()).expect("search").into_iter().map(|hit| hit.id).collect()
            }
            None => Vec::new(),
        };
        let scores = [by_text, by_keywords, by_flow].map(|answer| recall_and_reciprocal_rank(&answer, &question.relevant));
        for (sum, (recall, rank)) in sums.iter_mut().zip(scores) {
            sum.0 += recall;
            sum.1 += rank;
        }
        eprintln!(
            "  {:<55} relevant {:>4}  text {:.2}/{:.2}  bm25 {:.2}/{:.2}  flow {:.2}/{:.2}",
            format!("{:?}", question.text),
            question.relevant.len(),
            scores[0].0,
            scores[0].1,
            scores[1].0,
            scores[1].1,
            scores[2].0,
            scores[2].1
        );
    }
    assert!(judged >= 40, "only {judged} questions have answers in the corpus");
    let mean = |(recall, rank): (f64, f64)| (recall / judged as f64, rank / judged as f64);
    let [text_mean, bm25_mean, flow_mean] = sums.map(mean);
    eprintln!(
        "{judged} questions: recall@10 / MRR: text {:.3} / {:.3}; bm25 {:.3} / {:.3}; flow (bm25's best, then its flow neighbours) {:.3} / {:.3}",
        text_mean.0, text_mean.1, bm25_mean.0, bm25_mean.1, flow_mean.0, flow_mean.1
    );
    assert!(text_mean.0 > bm25_mean.0, "the embedder's recall@10 {:.3} does not beat keyword search's {:.3}", text_mean.0, bm25_mean.0);
}
