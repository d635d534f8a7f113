//! The sentence embedder as the appliance runs it (the `tokenizers` crate and `ort`), on the
//! graph and tokenizer scripts/setup installs, against models/text/reference.py: the
//! Python tokenizer of the same `tokenizer.json` and an independent numpy forward pass of
//! the same weights (ADR 0010).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::onnxruntime_library;
use mld_model::signing::{self, ModelPublicKey};
use mld_model::text::TextModel;
use mld_model::{init_runtime, ModelError};

const TEXT_DIR: &str = "/usr/local/share/mldefender/text";
const CHECKPOINT_DIR: &str = "/var/cache/mldefender/text/all-MiniLM-L6-v2";
const NAME: &str = "text-embedder";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text_dir() -> PathBuf {
    let dir = std::env::var_os("MLD_TEXT_MODEL_DIR").map_or_else(|| PathBuf::from(TEXT_DIR), PathBuf::from);
    assert!(dir.join(format!("{NAME}.onnx")).is_file(), "the text model is not in {}: run scripts/setup (as root)", dir.display());
    dir
}

fn release_key() -> ModelPublicKey {
    ModelPublicKey::from_base64(&mld_config::Config::default().detect.model_public_key).expect("the default release key")
}

fn load(dir: &Path) -> Result<TextModel, ModelError> {
    init_runtime(&onnxruntime_library()).expect("load ONNX Runtime");
    TextModel::load(dir, NAME, &release_key())
}

/// Runs reference.py in `mode` with one JSON or text line per input; one JSON value per line out.
fn reference(mode: &str, lines: &[String]) -> Vec<serde_json::Value> {
    let python = std::env::var("MLD_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let mut child = Command::new(&python)
        .arg(repo().join("models/text/reference.py"))
        .args([CHECKPOINT_DIR, mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {python} (scripts/setup makes .venv; MLD_PYTHON names it): {error}"));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(lines.join("\n").as_bytes()).expect("write to reference.py");
    stdin.write_all(b"\n").expect("write to reference.py");
    drop(stdin);
    let output = child.wait_with_output().expect("reference.py");
    assert!(output.status.success(), "reference.py {mode} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8").lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect()
}

fn sentences() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("tests/reference/text-sentences.txt")).expect("read the sentences");
    text.lines().map(str::to_string).collect()
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| f64::from(x) * y).sum();
    let norm_a = a.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
    let norm_b = b.iter().map(|&y| y * y).sum::<f64>().sqrt();
    dot / (norm_a * norm_b)
}

#[test]
fn rust_tokens_and_vectors_match_the_python_tokenizer_and_the_numpy_pass() {
    let mut model = load(&text_dir()).expect("load the signed text model");
    assert_eq!(model.dims(), 384);
    // Every 5th sentence of the set (the numpy pass costs about 0.1 s a sentence), plus one
    // longer than the 256-token limit, which both sides must truncate alike.
    let mut texts: Vec<String> = sentences().into_iter().step_by(5).collect();
    texts.push(["port scan of the web server from 10.66.2.2;"; 60].join(" "));
    let ids: Vec<Vec<u32>> = texts.iter().map(|text| model.token_ids(text).expect("tokenise")).collect();
    let python_ids = reference("--tokenize", &texts);
    for ((text, ours), theirs) in texts.iter().zip(&ids).zip(&python_ids) {
        let theirs: Vec<u32> = serde_json::from_value(theirs.clone()).expect("ids");
        assert_eq!(ours, &theirs, "token ids of {text:?}");
    }
    assert_eq!(ids.last().map(Vec::len), Some(256), "truncated at max_tokens");

    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = model.embed(&refs).expect("embed the batch").to_vec();
    let id_lines: Vec<String> = ids.iter().map(|ids| serde_json::to_string(ids).expect("json")).collect();
    let expected = reference("--embed", &id_lines);
    let mut worst = 1.0f64;
    for (index, expected) in expected.iter().enumerate() {
        let expected: Vec<f64> = serde_json::from_value(expected.clone()).expect("vector");
        let ours = &vectors[index * 384..(index + 1) * 384];
        let norm: f32 = ours.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "vector {index} has norm {norm}, not 1");
        let similarity = cosine(ours, &expected);
        worst = worst.min(similarity);
        assert!(similarity >= 0.9999, "{:?}: cosine {similarity} with the numpy pass", texts[index]);
    }
    eprintln!("{} texts, min cosine with the numpy reference {worst:.8}", texts.len());

    // Padding must not move a vector: alone, and in a batch beside the longest text.
    let alone = model.embed(&refs[..1]).expect("embed one").to_vec();
    let expected_first: Vec<f64> = vectors[..384].iter().map(|&x| f64::from(x)).collect();
    assert!(cosine(&alone, &expected_first) > 0.99999, "the same text alone and in a padded batch");
}

#[test]
fn similar_sentences_are_nearer_than_unrelated_ones() {
    let mut model = load(&text_dir()).expect("load the signed text model");
    let triples = [
        ("A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse."),
        ("The new movie is awesome", "The new movie is so great", "The cat sits outside"),
        ("who scanned the server", "a port scan of the web server", "a large file was downloaded"),
    ];
    for (anchor, near, far) in triples {
        let vectors = model.embed(&[anchor, near, far]).expect("embed").to_vec();
        let dot = |a: usize, b: usize| -> f32 { (0..384).map(|i| vectors[a * 384 + i] * vectors[b * 384 + i]).sum() };
        assert!(dot(0, 1) > dot(0, 2) + 0.1, "{anchor:?}: near {} vs far {}", dot(0, 1), dot(0, 2));
    }
}

#[test]
fn a_changed_tokenizer_graph_or_signature_is_refused() {
    let source = text_dir();
    let copy = tempfile::tempdir().expect("temp dir");
    for file in [format!("{NAME}.json"), format!("{NAME}.json.sig"), "tokenizer.json".to_string()] {
        std::fs::copy(source.join(&file), copy.path().join(&file)).expect("copy");
    }
    std::os::unix::fs::symlink(source.join(format!("{NAME}.onnx")), copy.path().join(format!("{NAME}.onnx"))).expect("link the graph");
    load(copy.path()).expect("an exact copy loads");

    // One more vocabulary entry: every vector could change, so the signed hash must catch it.
    let tokenizer = copy.path().join("tokenizer.json");
    let original = std::fs::read(&tokenizer).expect("read");
    let mut changed = original.clone();
    changed.extend_from_slice(b" ");
    std::fs::write(&tokenizer, &changed).expect("write");
    match load(copy.path()) {
        Err(ModelError::Sha256Mismatch { onnx, .. }) => assert_eq!(onnx, tokenizer),
        other => panic!("a changed tokenizer must be refused, got {other:?}"),
    }
    std::fs::write(&tokenizer, &original).expect("restore");

    // Metadata signed by someone else.
    let key = copy.path().join("other.key");
    signing::generate_key_pair(&key, &copy.path().join("other.pub")).expect("key pair");
    signing::sign(&key, &copy.path().join(format!("{NAME}.json"))).expect("sign");
    assert!(matches!(load(copy.path()), Err(ModelError::Signature { .. })), "a signature by another key is refused");
}
