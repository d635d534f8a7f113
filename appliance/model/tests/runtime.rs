//! Loading the ONNX Runtime library: clear errors, never a panic. One test, in its own process,
//! because the library is loaded once per process and the steps depend on their order.

mod common;

use common::{onnxruntime_library, SignedModel};
use mld_model::{init_runtime, LoadedModel, ModelError};

#[test]
fn the_runtime_library_is_checked_before_any_model_is_loaded() {
    let signed = SignedModel::from_fixture();
    let load = || LoadedModel::load(signed.files.clone(), &signed.public_key, SignedModel::is_known_feature());

    // Before the library is loaded a model is refused with a message, not ort's panic.
    let error = load().expect_err("no runtime yet");
    assert!(matches!(error, ModelError::RuntimeNotLoaded { .. }), "{error}");

    let dir = tempfile::tempdir().expect("temp dir");
    let absent = dir.path().join("libonnxruntime.so.1.31.1");
    let error = init_runtime(&absent).expect_err("absent library");
    assert!(matches!(error, ModelError::RuntimeMissing { .. }), "{error}");
    assert!(error.to_string().contains(&absent.display().to_string()), "{error}");
    assert!(error.to_string().contains("scripts/setup"), "{error}");

    let not_a_library = dir.path().join("libonnxruntime.so.bogus");
    std::fs::write(&not_a_library, b"not an ELF file").expect("write");
    let error = init_runtime(&not_a_library).expect_err("not a library");
    assert!(matches!(error, ModelError::RuntimeLoad { .. }), "{error}");
    assert!(error.to_string().contains("libonnxruntime.so.bogus"), "{error}");

    let library = onnxruntime_library();
    init_runtime(&library).expect("load the real library");
    init_runtime(&library).expect("loading it again is a no-op");
    let error = init_runtime(&not_a_library).expect_err("a second, different library");
    assert!(matches!(error, ModelError::RuntimeAlreadyLoaded { .. }), "{error}");

    load().expect("the model loads once the runtime is there");
}
