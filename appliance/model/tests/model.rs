//! Loading signed models and scoring with them, on the committed fixture model
//! (tests/fixtures/make-fixture.py) and the ONNX Runtime library that scripts/setup installs.

mod common;

use common::{fixture_features, fixtures_dir, onnxruntime_library, SignedModel, FIXTURE_NAME};
use mld_model::signing::{self, SigningError};
use mld_model::{init_runtime, LoadedModel, ModelError, ModelKind};

/// Rows and the probabilities onnxruntime 1.31.1 (Python) gave for them.
struct Expected {
    rows: Vec<Vec<f32>>,
    labels: Vec<usize>,
    probabilities: Vec<Vec<f32>>,
}

fn expected() -> Expected {
    let path = fixtures_dir().join(format!("{FIXTURE_NAME}.expected.json"));
    let document: serde_json::Value = serde_json::from_slice(&std::fs::read(path).expect("read expected")).expect("parse expected");
    let field = |name: &str| document[name].clone();
    Expected {
        rows: serde_json::from_value(field("rows")).expect("rows"),
        labels: serde_json::from_value(field("labels")).expect("labels"),
        probabilities: serde_json::from_value(field("probabilities")).expect("probabilities"),
    }
}

fn load(model: &SignedModel) -> Result<LoadedModel, ModelError> {
    init_runtime(&onnxruntime_library()).expect("load ONNX Runtime");
    LoadedModel::load(model.files.clone(), &model.public_key, SignedModel::is_known_feature())
}

fn assert_close(actual: &[f32], expected: &[f32], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (index, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= 1e-6, "{what}: value {index} is {a}, Python gave {e}");
    }
}

#[test]
fn a_signed_model_loads_and_scores_as_python_did() {
    let signed = SignedModel::from_fixture();
    let mut model = load(&signed).expect("load the signed fixture");
    assert_eq!(model.metadata().name(), FIXTURE_NAME);
    assert_eq!(model.metadata().kind(), ModelKind::Multiclass);
    assert_eq!(model.classes(), ["benign", "scan", "flood"]);
    assert_eq!(model.features(), fixture_features().as_slice());
    let onnx = std::fs::read(&signed.files.onnx).expect("read onnx");
    assert_eq!(model.sha256(), hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&onnx)));
    assert_eq!(model.metadata().document()["heldout"]["samples"], 200, "unread fields are kept");

    let expected = expected();
    let n = expected.rows.len();
    let rows: Vec<f32> = expected.rows.concat();
    let probabilities = model.predict(&rows, n).expect("predict a batch");
    assert_close(probabilities, &expected.probabilities.concat(), "batch");
    for (flow, label) in expected.labels.iter().enumerate() {
        let row = &probabilities[flow * 3..flow * 3 + 3];
        let best = (0..3).max_by(|&a, &b| row[a].total_cmp(&row[b])).expect("three classes");
        assert_eq!(best, *label, "flow {flow}: the most probable class is the label Python gave");
    }

    // One flow at a time gives the same numbers, and the buffer is reused, not regrown.
    let capacity_pointer = model.predict(&rows, n).expect("predict again").as_ptr();
    for (row, probabilities) in expected.rows.iter().zip(&expected.probabilities) {
        let single = model.predict(row, 1).expect("predict one");
        assert_close(single, probabilities, "single flow");
        assert_eq!(single.as_ptr(), capacity_pointer, "the output buffer is reused");
    }
    assert!(model.predict(&[], 0).expect("empty batch").is_empty());
}

#[test]
fn a_batch_of_the_wrong_size_is_refused() {
    let signed = SignedModel::from_fixture();
    let mut model = load(&signed).expect("load");
    let error = model.predict(&[0.0; 11], 2).expect_err("11 values for 2 flows");
    assert!(matches!(error, ModelError::BatchShape { values: 11, flows: 2, features: 6, expected: 12, .. }), "{error}");
    assert!(error.to_string().contains("2 flows of 6 features need 12"), "{error}");
    assert!(model.predict(&[0.0; 6], usize::MAX).is_err(), "no overflow");
}

#[test]
fn a_loaded_model_scores_on_a_thread_of_its_own() {
    let signed = SignedModel::from_fixture();
    let mut model = load(&signed).expect("load");
    let expected = expected();
    let row = expected.rows[0].clone();
    let scored = std::thread::spawn(move || model.predict(&row, 1).map(<[f32]>::to_vec)).join().expect("thread").expect("predict");
    assert_close(&scored, &expected.probabilities[0], "on another thread");
}

#[test]
fn a_changed_onnx_file_is_refused_as_tampered() {
    let signed = SignedModel::from_fixture();
    let mut onnx = std::fs::read(&signed.files.onnx).expect("read onnx");
    let middle = onnx.len() / 2;
    onnx[middle] ^= 0x01;
    std::fs::write(&signed.files.onnx, onnx).expect("write onnx");

    let error = load(&signed).expect_err("tampered model");
    assert!(matches!(error, ModelError::Sha256Mismatch { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains(&signed.files.onnx.display().to_string()), "names the model file: {message}");
    assert!(message.contains("changed after signing"), "{message}");
}

#[test]
fn a_signature_by_another_key_is_refused() {
    let signed = SignedModel::from_fixture();
    let other_dir = tempfile::tempdir().expect("temp dir");
    let other_private = other_dir.path().join("other.key");
    signing::generate_key_pair(&other_private, &other_dir.path().join("other.pub")).expect("other key pair");
    signing::sign(&other_private, &signed.files.metadata).expect("sign with the other key");

    let error = load(&signed).expect_err("signed by another key");
    assert!(matches!(error, ModelError::Signature { source: SigningError::BadSignature { .. }, .. }), "{error}");
    assert!(error.to_string().contains(&signed.files.signature.display().to_string()), "names the signature: {error}");
}

#[test]
fn metadata_changed_after_signing_is_refused() {
    let signed = SignedModel::from_fixture();
    let text = std::fs::read_to_string(&signed.files.metadata).expect("read metadata");
    std::fs::write(&signed.files.metadata, text.replace("\"flood\"", "\"benign2\"")).expect("write metadata");
    let error = load(&signed).expect_err("changed metadata");
    assert!(matches!(error, ModelError::Signature { source: SigningError::BadSignature { .. }, .. }), "{error}");
}

#[test]
fn a_missing_signature_is_refused_naming_the_file() {
    let signed = SignedModel::from_fixture();
    std::fs::remove_file(&signed.files.signature).expect("remove signature");
    let error = load(&signed).expect_err("no signature");
    assert!(matches!(error, ModelError::Missing { what: "signature", .. }), "{error}");
    let expected = format!("model signature `{}` does not exist", signed.files.signature.display());
    assert_eq!(error.to_string(), expected);
}

#[test]
fn a_missing_model_file_is_refused_naming_the_file() {
    let signed = SignedModel::from_fixture();
    std::fs::remove_file(&signed.files.onnx).expect("remove onnx");
    let error = load(&signed).expect_err("no onnx");
    assert!(error.to_string().contains(&signed.files.onnx.display().to_string()), "{error}");
}

#[test]
fn a_wrong_feature_count_is_refused_naming_both_counts() {
    let signed = SignedModel::from_fixture();
    signed.change_metadata(|document| {
        document["features"].as_array_mut().expect("features").pop();
    });
    let error = load(&signed).expect_err("5 features for a 6-feature model");
    assert!(matches!(error, ModelError::FeatureCountMismatch { model_features: 6, metadata_features: 5, .. }), "{error}");
    let message = error.to_string();
    assert!(message.starts_with("feature count mismatch"), "{message}");
    assert!(message.contains("takes 6 features") && message.contains("lists 5"), "{message}");
}

#[test]
fn a_wrong_class_count_is_refused_naming_both_counts() {
    let signed = SignedModel::from_fixture();
    signed.change_metadata(|document| {
        document["kind"] = "binary".into();
        document["classes"] = serde_json::json!(["benign", "attack"]);
    });
    let error = load(&signed).expect_err("2 classes for a 3-class model");
    assert!(matches!(error, ModelError::ClassCountMismatch { model_classes: 3, metadata_classes: 2, .. }), "{error}");
}

#[test]
fn an_unknown_feature_is_refused_naming_it() {
    let signed = SignedModel::from_fixture();
    signed.change_metadata(|document| {
        document["features"][2] = "fixture_not_computed".into();
    });
    let error = load(&signed).expect_err("unknown feature");
    assert!(matches!(&error, ModelError::UnknownFeature { name, .. } if name == "fixture_not_computed"), "{error}");
    assert!(error.to_string().contains("`fixture_not_computed`"), "{error}");
}

#[test]
fn duplicate_or_no_features_are_refused() {
    let signed = SignedModel::from_fixture();
    signed.change_metadata(|document| {
        document["features"][5] = document["features"][0].clone();
    });
    let error = load(&signed).expect_err("duplicate feature");
    assert!(matches!(&error, ModelError::DuplicateFeature { name, .. } if name == "fixture_duration_s"), "{error}");

    signed.change_metadata(|document| {
        document["features"] = serde_json::json!([]);
    });
    assert!(matches!(load(&signed), Err(ModelError::NoFeatures { .. })));
}

#[test]
fn malformed_metadata_is_refused_even_when_signed() {
    let signed = SignedModel::from_fixture();
    signed.change_metadata(|document| {
        document.as_object_mut().expect("object").remove("sha256");
    });
    let error = load(&signed).expect_err("no sha256");
    assert!(matches!(error, ModelError::Metadata { .. }), "{error}");
    assert!(error.to_string().contains("missing field `sha256`"), "{error}");
}

#[test]
fn the_repository_models_load_under_the_release_key_and_the_embedder_embeds() {
    use mld_model::features::is_known_feature;
    use mld_model::ModelFiles;
    init_runtime(&onnxruntime_library()).expect("load ONNX Runtime");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let key = signing::ModelPublicKey::from_base64(&mld_config::Config::default().detect.model_public_key).expect("the release key");
    let windows = [10, 60];
    for name in ["attack", "category"] {
        let model = LoadedModel::load(ModelFiles::in_dir(&dir, name).expect("files"), &key, |feature| is_known_feature(feature, &windows));
        assert!(model.is_ok(), "{name}: {:?}", model.err());
    }
    let mut embedder = LoadedModel::load(ModelFiles::in_dir(&dir, "embedder").expect("files"), &key, |feature| is_known_feature(feature, &windows))
        .expect("the signed embedder");
    assert_eq!((embedder.metadata().kind(), embedder.width(), embedder.classes().len()), (ModelKind::Embedding, 16, 0));
    let features = embedder.features().len();
    let mut rows = vec![0.0f32; features];
    rows.extend((0..features).map(|index| index as f32 * 10.0));
    rows.extend(vec![0.0f32; features]);
    let vectors = embedder.predict(&rows, 3).expect("embed").to_vec();
    assert_eq!(vectors.len(), 3 * 16);
    assert!(vectors.iter().all(|value| value.is_finite()));
    assert_eq!(vectors[..16], vectors[32..], "the same flow, the same vector");
    assert_ne!(vectors[..16], vectors[16..32], "different flows, different vectors");
}
