//! `mldefender status`: asks the running supervisor and prints its report.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use mld_ipc::{ControlRequest, StatusReport};
use mld_runtime::supervise::STATUS_SOCKET;
use mld_runtime::Exit;

/// The running supervisor's report, or the exit to take (the error printed).
pub fn fetch(runtime_dir: &Path) -> anyhow::Result<Result<StatusReport, Exit>> {
    ask(runtime_dir, &ControlRequest::Status, Duration::from_secs(3))
}

/// Sends one request on the supervisor's socket under `runtime_dir` and reads its answer
/// (waiting at most `timeout`); `Err(exit)` when no supervisor answers there (said).
pub fn ask<T: serde::de::DeserializeOwned>(runtime_dir: &Path, request: &ControlRequest, timeout: Duration) -> anyhow::Result<Result<T, Exit>> {
    let path = runtime_dir.join(STATUS_SOCKET);
    let mut stream = match UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(error) => {
            eprintln!("mldefender: error: no supervisor answers on `{}`: {error}", path.display());
            return Ok(Err(Exit::Failure));
        }
    };
    stream.set_read_timeout(Some(timeout))?;
    mld_ipc::write_frame(&mut stream, request).context("failed to ask the supervisor")?;
    let answer = mld_ipc::read_frame(&mut stream).context("failed to read the supervisor's answer")?.context("the supervisor closed the connection")?;
    Ok(Ok(answer))
}

/// `mldefender status`: asks the running supervisor.
pub fn status(runtime_dir: &Path, json: bool) -> anyhow::Result<Exit> {
    let report = match fetch(runtime_dir)? {
        Ok(report) => report,
        Err(exit) => return Ok(exit),
    };
    if json {
        println!("{}", serde_json::to_string(&report).context("failed to encode the status")?);
        return Ok(Exit::Success);
    }
    println!(
        "supervisor pid {}  up {:.0} s  {}  memory {:.1} MiB",
        report.supervisor_pid,
        report.uptime_secs,
        if report.ready { "ready" } else { "NOT READY" },
        report.supervisor_memory_bytes as f64 / 1048576.0
    );
    println!(
        "{:<10} {:<11} {:>8} {:>9} {:>8} {:>6} {:>18} {:<11} last exit",
        "task", "state", "pid", "uptime", "restarts", "floods", "memory / budget", "user"
    );
    for task in &report.tasks {
        println!(
            "{:<10} {:<11} {:>8} {:>8.0}s {:>8} {:>6} {:>8.1}/{:<5} MiB {:<11} {}",
            task.name,
            format!("{:?}", task.state).to_lowercase(),
            task.pid.map_or("-".to_string(), |pid| pid.to_string()),
            task.uptime_secs,
            task.restarts,
            task.control_floods,
            task.memory_bytes as f64 / 1048576.0,
            task.memory_budget_bytes >> 20,
            task.user,
            task.last_exit.as_deref().unwrap_or("-")
        );
    }
    println!("{}", report.pipeline);
    Ok(Exit::Success)
}
