//! `mldefender fleet status`: the fleet as this node's fleet task sees it, from the running
//! supervisor (docs/operations.md, "Fleet").

use std::path::Path;

use mld_runtime::Exit;

/// Prints the members and this node's connection; exits 1 when the node has no fleet task
/// or it is not connected to etcd (a monitoring check).
pub fn status(runtime_dir: &Path, json: bool) -> anyhow::Result<Exit> {
    let report = match crate::status::fetch(runtime_dir)? {
        Ok(report) => report,
        Err(exit) => return Ok(exit),
    };
    let Some(view) = report.fleet else {
        eprintln!("mldefender: error: this node runs no fleet task (set [fleet] enabled, docs/operations.md \"Fleet\")");
        return Ok(Exit::Failure);
    };
    let counters = report.pipeline.fleet;
    if json {
        println!("{}", serde_json::json!({ "fleet": view, "counters": counters }));
        return Ok(if view.connected { Exit::Success } else { Exit::Failure });
    }
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64);
    let ago = |ms: u64| if ms == 0 { "-".to_string() } else { format!("{:.1} s ago", now_ms.saturating_sub(ms) as f64 / 1000.0) };
    println!(
        "node {}: {} {}; revision {}; view {}",
        view.node,
        if view.connected { "connected to" } else { "NOT CONNECTED, trying" },
        view.endpoint,
        view.revision,
        ago(view.at_unix_ms)
    );
    println!(
        "published {} (failed attempts {}); received {} (applied {}, refused {}); invalid records {}; resyncs {}; connects {}",
        counters.fleet_published,
        counters.fleet_publish_failed,
        counters.fleet_received,
        report.pipeline.detect.shared_applied,
        report.pipeline.detect.shared_refused,
        counters.fleet_invalid,
        counters.fleet_resyncs,
        counters.fleet_connects
    );
    println!("{:<24} {:<10} {:<14} {:<10} {:<26} last heartbeat", "member", "version", "config", "document", "started");
    for member in &view.members {
        println!(
            "{:<24} {:<10} {:<14} {:<10} {:<26} {}",
            member.node,
            member.version,
            member.config_sha256.get(..12).unwrap_or(&member.config_sha256),
            if member.config_generation == 0 { "-".to_string() } else { member.config_generation.to_string() },
            mld_flow::time::rfc3339_utc(member.started_unix_ms.saturating_mul(1_000_000)),
            ago(member.heartbeat_unix_ms)
        );
    }
    Ok(if view.connected { Exit::Success } else { Exit::Failure })
}

/// `fleet sign-config`: the signed document on stdout. Refuses a FILE that sets sections a
/// document may not set, before anything is signed.
pub fn sign_config(private_key: &Path, generation: u64, file: &Path) -> anyhow::Result<Exit> {
    use anyhow::Context;
    let toml = std::fs::read_to_string(file).with_context(|| format!("failed to read `{}`", file.display()))?;
    if let Err(errors) = mld_config::fleet_overlay("", &toml) {
        for error in errors {
            eprintln!("mldefender: error: {}: {error}", file.display());
        }
        return Ok(Exit::Config);
    }
    let document = mld_runtime::fleet_doc::sign(private_key, generation, &toml)?;
    println!("{}", serde_json::to_string(&document).context("failed to encode the document")?);
    Ok(Exit::Success)
}
