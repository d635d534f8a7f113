//! The NixOS module and flake (docs/nixos.md), evaluated with Debian's `nix-instantiate`
//! against the vendored nixpkgs lib (`../shared/vendor/nixpkgs-lib.tar.gz`, or
//! `MLD_NIXPKGS_LIB`): every `.nix` file parses; the module's settings are typed from the
//! JSON Schema, so their defaults are the Rust defaults, a value out of bounds or of the
//! wrong type is an evaluation error naming the option, and what it renders passes
//! `mldefender config check`; its unit is the one process, notify-typed, reloaded by
//! SIGHUP. Without nix-instantiate or the lib it says so, and fails under CI=true.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// The unpacked nixpkgs lib (`…/lib`), or why there is none.
fn nixpkgs_lib(dir: &Path) -> Result<PathBuf, String> {
    if Command::new("nix-instantiate").arg("--version").output().map_or(true, |output| !output.status.success()) {
        return Err("nix-instantiate is missing (scripts/setup installs nix-bin)".to_string());
    }
    // MLD_NIXPKGS_LIB, else beside the repository (`../shared/vendor`), else the machines'
    // shared directory (a clone elsewhere, as CI makes).
    let candidates: Vec<PathBuf> = match std::env::var_os("MLD_NIXPKGS_LIB") {
        Some(path) => vec![PathBuf::from(path)],
        None => vec![repo().join("../shared/vendor/nixpkgs-lib.tar.gz"), PathBuf::from("/work/shared/vendor/nixpkgs-lib.tar.gz")],
    };
    let Some(tarball) = candidates.iter().find(|path| path.exists()).cloned() else {
        let looked: Vec<String> = candidates.iter().map(|path| path.display().to_string()).collect();
        return Err(format!("the vendored nixpkgs lib is missing (looked at {}; set MLD_NIXPKGS_LIB)", looked.join(", ")));
    };
    let unpacked = run(Command::new("tar").arg("-xzf").arg(&tarball).arg("-C").arg(dir));
    if !unpacked.status.success() {
        return Err(format!("failed to unpack {}: {}", tarball.display(), stderr(&unpacked)));
    }
    Ok(dir.join("nixpkgs-lib/lib"))
}

/// The lib, or `None` (skipped, said loudly) outside CI; under CI=true a missing lib fails.
fn lib_or_skip(dir: &Path) -> Option<PathBuf> {
    match nixpkgs_lib(dir) {
        Ok(lib) => Some(lib),
        Err(why) if env_flag("CI") => panic!("the NixOS module cannot be evaluated: {why}"),
        Err(why) => {
            eprintln!("SKIPPED: the NixOS module was NOT evaluated: {why}");
            None
        }
    }
}

/// `nixos/tests/eval.nix`'s attribute `attr` with `settings` (a Nix expression).
fn evaluate(lib: &Path, settings: &str, appliance: bool, attr: &str) -> Result<Value, String> {
    let output = run(Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json"])
        .arg(repo().join("nixos/tests/eval.nix"))
        .args(["--arg", "lib"])
        .arg(format!("import {}", lib.display()))
        .args(["--arg", "settings", settings, "--arg", "appliance", if appliance { "true" } else { "false" }, "-A", attr]));
    if !output.status.success() {
        return Err(stderr(&output));
    }
    serde_json::from_str(stdout(&output).trim()).map_err(|error| format!("not JSON: {error}"))
}

/// Two JSON values equal as configuration values (Nix writes 200.0 as 200).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Value::Object(x), Value::Object(y)) => x.len() == y.len() && x.iter().all(|(key, value)| y.get(key).is_some_and(|other| same(value, other))),
        _ => a == b,
    }
}

/// What the module renders, checked as `config check --json` does.
fn check_rendered(lib: &Path, settings: &str, appliance: bool, dir: &Path) -> (bool, String, Value) {
    let rendered = evaluate(lib, settings, appliance, "rendered").expect("renders");
    let text = rendered.as_str().expect("the rendering is JSON text").to_string();
    let file = dir.join("rendered.json");
    std::fs::write(&file, &text).expect("write");
    let check = run(mldefender().args(["config", "check", "--json"]).arg(&file));
    (check.status.success(), format!("{}{}", stdout(&check), stderr(&check)), serde_json::from_str(&text).expect("JSON"))
}

#[test]
fn the_nixos_module_is_typed_from_the_schema_renders_a_valid_configuration_and_runs_the_supervisor_as_the_one_process() {
    let dir = tempfile::tempdir().expect("dir");
    let Some(lib) = lib_or_skip(dir.path()) else { return };

    // Every .nix file parses (the flake cannot be evaluated here: nixpkgs is not fetchable).
    let mut files = vec![repo().join("flake.nix")];
    for sub in ["nixos", "nixos/tests"] {
        for entry in std::fs::read_dir(repo().join(sub)).expect("nixos/").flatten() {
            if entry.path().extension().is_some_and(|extension| extension == "nix") {
                files.push(entry.path());
            }
        }
    }
    assert!(files.len() >= 6, "{files:?}");
    for file in &files {
        let parsed = run(Command::new("nix-instantiate").arg("--parse").arg(file));
        assert!(parsed.status.success(), "{} does not parse: {}", file.display(), stderr(&parsed));
    }

    // Every default is the Rust default, key for key.
    let defaults = evaluate(&lib, "{ }", false, "settings").expect("defaults evaluate");
    let rust = run(mldefender().args(["config", "example", "--json"]));
    let rust: Value = serde_json::from_str(&stdout(&rust)).expect("config example --json");
    assert!(same(&defaults, &rust), "the module's defaults differ from the Rust defaults:\nmodule {defaults}\nrust   {rust}");

    // What it renders passes `config check`, with a setting in force.
    let (ok, said, rendered) =
        check_rendered(&lib, r#"{ detect.models = "off"; response.ttl-scan-secs = 90; allowlist.prefixes = [ "192.0.2.10" ]; }"#, false, dir.path());
    assert!(ok, "{said}");
    assert_eq!((rendered["response"]["ttl-scan-secs"].as_i64(), rendered["allowlist"]["prefixes"][0].as_str()), (Some(90), Some("192.0.2.10")));
    // So does the appliance's, with its interfaces.
    let (ok, said, rendered) = check_rendered(&lib, r#"{ detect.models = "off"; }"#, true, dir.path());
    assert!(ok, "{said}");
    assert_eq!(rendered["capture"]["interfaces"][1]["role"], "lan");

    // Out of bounds, or of the wrong type: an evaluation error naming the option.
    for (settings, says) in [
        ("{ response.ttl-scan-secs = 0; }", "at least 1 and at most 31536000"),
        (r#"{ response.ttl-scan-secs = "an hour"; }"#, "signed integer"),
        ("{ detect.heuristics.syn-ratio = 1.5; }", "at most 1"),
        ("{ tasks.detect.memory-max-mib = true; }", "signed integer"),
        ("{ response.no-such-key = 1; }", "does not exist"),
    ] {
        let error = evaluate(&lib, settings, false, "settings").expect_err(settings);
        let option = settings.trim_matches(['{', '}', ' ']).split(" =").next().unwrap_or("");
        assert!(error.contains(&format!("services.mldefender.settings.{option}")) && error.contains(says), "{settings}: {error}");
    }

    // The unit: the supervisor as the one process, notify, reloaded with SIGHUP, bounded.
    let unit = evaluate(&lib, "{ }", false, "unit").expect("unit");
    let service = &unit["serviceConfig"];
    assert_eq!(service["Type"], "notify");
    assert!(
        service["ExecStart"].as_str().is_some_and(|start| start.ends_with("/bin/mldefender supervise --config /etc/mldefender/mldefender.toml")),
        "{service}"
    );
    assert!(service["ExecReload"].as_str().is_some_and(|reload| reload.ends_with("kill -HUP $MAINPID")), "{service}");
    let capabilities: Vec<&str> = service["CapabilityBoundingSet"].as_array().expect("capabilities").iter().filter_map(Value::as_str).collect();
    assert!(capabilities.contains(&"CAP_BPF") && capabilities.contains(&"CAP_NET_ADMIN"), "the XDP attach: {capabilities:?}");
    // capture, detect and log 512 MiB each, ingest 768 (the flow index, the sentence model
    // and the text index), and 256 MiB for the supervisor.
    assert_eq!(service["MemoryMax"], "2560M", "the tasks' memory.max together and 256 MiB for the supervisor");
    assert_eq!((service["StateDirectory"].as_str(), service["RuntimeDirectory"].as_str()), (Some("mldefender"), Some("mldefender")));
    assert_eq!(unit["reloadTriggers"].as_array().map(Vec::len), Some(1), "a changed configuration reloads: {unit}");
    let users = evaluate(&lib, "{ }", false, "users").expect("users");
    assert_eq!(users, serde_json::json!(["mld-capture", "mld-detect", "mld-ingest", "mld-log"]), "the task users (no fleet task by default)");
}
