//! Helpers shared by the binary's integration tests.
#![allow(dead_code)]

pub mod cluster;
pub mod lab;
pub mod supervisor;

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn mldefender() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mldefender"))
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// The ONNX Runtime library the tests use (scripts/setup installs it).
pub fn onnxruntime() -> PathBuf {
    std::env::var_os("MLD_ONNXRUNTIME").map_or_else(|| PathBuf::from("/usr/local/lib/mldefender/libonnxruntime.so.1.31.1"), PathBuf::from)
}

/// A `[detect]` section that loads the repository's signed models.
pub fn detect_section() -> String {
    format!("[detect]\nmodels-dir = \"{}\"\nonnxruntime = \"{}\"\n", repo().join("models").display(), onnxruntime().display())
}

pub fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|error| panic!("failed to run {command:?}: {error}"))
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Flow records of `files` as parsed JSON objects.
pub fn flows_jsonl(files: &[PathBuf], extra_args: &[&str]) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let output = run(mldefender().arg("flows").args(files).args(["--format", "jsonl"]).args(extra_args));
    assert!(output.status.success(), "mldefender flows failed: {}", stderr(&output));
    stdout(&output)
        .lines()
        .map(|line| match serde_json::from_str(line) {
            Ok(serde_json::Value::Object(map)) => map,
            other => panic!("not a JSON object: {line} ({other:?})"),
        })
        .collect()
}

/// True when running as root (the lab needs network namespaces).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|status| status.lines().any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// Whether an environment switch is on (`1`, `true`, `yes`).
pub fn env_flag(name: &str) -> bool {
    matches!(std::env::var(name).as_deref(), Ok("1" | "true" | "yes"))
}

/// Stops a VM started under `timeout` (qemu/boot.sh execs it): SIGTERM to `timeout`, which
/// passes it on to QEMU (SIGKILL would orphan QEMU), then SIGKILL after 10 s; reaped.
pub fn stop_vm(qemu: &mut std::process::Child) {
    if let Ok(None) = qemu.try_wait() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(qemu.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline && matches!(qemu.try_wait(), Ok(None)) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = qemu.kill();
    }
    let _ = qemu.wait();
}

/// Runs `tests/reference/SCRIPT` (with `MLD_PYTHON`, default `python3`) on `input` and
/// reads its one line of JSON: the reference checkers the tests compare output against
/// (their packages come from scripts/setup).
pub fn reference_check(script: &str, input: &str) -> serde_json::Value {
    let python = std::env::var("MLD_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let mut child = Command::new(&python)
        .arg(repo().join("tests/reference").join(script))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {python}: {error}"));
    // A checker that failed at its imports closes its stdin: its stderr says why.
    let _ = std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), input.as_bytes());
    let output = child.wait_with_output().expect(script);
    assert!(output.status.success(), "{script} failed (scripts/setup installs its packages): {}", stderr(&output));
    serde_json::from_str(&stdout(&output)).expect("the checker's JSON")
}
