//! `mldefender config check | schema | plan | apply | generations | rollback | diff`
//! (docs/operations.md, "Changing the configuration").

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use mld_config::plan::Plan;
use mld_config::Config;
use mld_ipc::{ApplyAnswer, ControlRequest, RunningConfig};
use mld_runtime::generations::Generations;
use mld_runtime::Exit;

/// Where a plan's old configuration comes from.
#[derive(Debug)]
pub enum Baseline {
    /// The running supervisor's (under this runtime directory).
    Running(PathBuf),
    File(PathBuf),
}

/// A JSON file with the TOML's structure (the NixOS module's rendering) as TOML text.
fn json_as_toml(file: &Path) -> Result<String, mld_config::ConfigErrors> {
    let origin = file.display().to_string();
    let fail = |why: String| mld_config::ConfigErrors::single(&origin, mld_config::ConfigError::new("", why));
    let text = std::fs::read_to_string(file).map_err(|error| fail(format!("failed to read the file: {error}")))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|error| fail(format!("not JSON: {error}")))?;
    let table = toml::Value::try_from(value).map_err(|error| fail(format!("not a configuration's shape: {error}")))?;
    toml::to_string(&table).map_err(|error| fail(format!("does not make TOML: {error}")))
}

/// `config example --json`: every key with its default, as JSON.
pub fn example_json() -> anyhow::Result<Exit> {
    println!("{}", serde_json::to_string_pretty(&mld_config::raw::RawConfig::default()).context("failed to encode the defaults")?);
    Ok(Exit::Success)
}

/// `config check`: every file validated with the daemon's own code path (`--json`: JSON
/// files with the TOML's structure).
pub fn check(files: &[PathBuf], json: bool) -> anyhow::Result<Exit> {
    let mut exit = Exit::Success;
    for file in files {
        let origin = file.display().to_string();
        let parsed = if json { json_as_toml(file).and_then(|text| Config::from_toml(&text, &origin)) } else { Config::from_file(file) };
        let checked = parsed.and_then(|config| config.check_environment(&origin).map(|()| config));
        match checked {
            Ok(config) => {
                // Warnings do not fail the check: valid, but probably not what is wanted.
                for warning in config.warnings() {
                    eprintln!("{}: warning: {warning}", file.display());
                }
                println!("{}: ok", file.display());
            }
            Err(errors) => {
                eprintln!("{errors}");
                exit = Exit::Config;
            }
        }
    }
    Ok(exit)
}

/// `config schema`: the JSON Schema of the whole file (docs/config.schema.json).
/// `config get FILE KEY...`: each key's value, validated first.
pub fn get(file: &Path, keys: &[String]) -> anyhow::Result<Exit> {
    let text = match Config::from_file_with_text(file) {
        Ok((_, text)) => text,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(Exit::Config);
        }
    };
    let values = mld_config::plan::values(&text).map_err(anyhow::Error::msg)?;
    let mut out = String::new();
    for key in keys {
        let Some(value) = values.get(key) else {
            eprintln!("error: `{key}` is not a key of {} (keys are dotted: detect.models-dir)", file.display());
            return Ok(Exit::Config);
        };
        // A leaf as TOML writes it: read back as the value of a one-key table.
        match toml::from_str::<toml::Table>(&format!("v = {value}")).map(|mut table| table.remove("v")) {
            Ok(Some(toml::Value::String(text))) => out.push_str(&format!("{text}\n")),
            Ok(Some(toml::Value::Array(items))) => {
                for item in items {
                    match item {
                        toml::Value::String(text) => out.push_str(&format!("{text}\n")),
                        other => out.push_str(&format!("{other}\n")),
                    }
                }
            }
            _ => out.push_str(&format!("{value}\n")),
        }
    }
    print!("{out}");
    Ok(Exit::Success)
}

pub fn schema() -> anyhow::Result<Exit> {
    println!("{}", serde_json::to_string_pretty(&mld_config::json_schema()).context("failed to encode the schema")?);
    Ok(Exit::Success)
}

/// NEW read and checked as `config check` does: its text, or every error printed (exit 64).
fn checked_text(file: &Path) -> Result<String, Exit> {
    let origin = file.display().to_string();
    match Config::from_file_with_text(file).and_then(|(config, text)| config.check_environment(&origin).map(|()| text)) {
        Ok(text) => Ok(text),
        Err(errors) => {
            eprintln!("{errors}");
            Err(Exit::Config)
        }
    }
}

/// One configuration request to the supervisor: an apply judges the configuration
/// against the machine and keeps a generation before it answers.
fn ask<T: serde::de::DeserializeOwned>(runtime_dir: &Path, request: &ControlRequest) -> anyhow::Result<Result<T, Exit>> {
    crate::status::ask(runtime_dir, request, Duration::from_secs(30))
}

/// `config plan NEW [--from OLD | --running]`: every changed key with its class.
pub fn plan(new: &Path, baseline: Baseline, json: bool) -> anyhow::Result<Exit> {
    let new_text = match checked_text(new) {
        Ok(text) => text,
        Err(exit) => return Ok(exit),
    };
    let (old_text, new_text) = match baseline {
        Baseline::File(old) => match std::fs::read_to_string(&old) {
            Ok(old_text) => (old_text, new_text),
            Err(error) => {
                eprintln!("mldefender: error: failed to read `{}`: {error}", old.display());
                return Ok(Exit::Failure);
            }
        },
        Baseline::Running(runtime_dir) => {
            let running: RunningConfig = match ask(&runtime_dir, &ControlRequest::RunningConfig)? {
                Ok(running) => running,
                Err(exit) => return Ok(exit),
            };
            // What would run: NEW with the fleet document in force laid over it.
            let effective = match &running.document_toml {
                Some(document) => match mld_config::fleet_overlay(&new_text, document) {
                    Ok(merged) => merged,
                    Err(errors) => {
                        errors.iter().for_each(|error| eprintln!("mldefender: error: {error}"));
                        return Ok(Exit::Config);
                    }
                },
                None => new_text,
            };
            (running.effective_toml, effective)
        }
    };
    let plan = match Plan::between(&old_text, &new_text) {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("mldefender: error: {error}");
            return Ok(Exit::Config);
        }
    };
    print_plan(&plan, json);
    Ok(Exit::Success)
}

fn print_plan(plan: &Plan, json: bool) {
    if json {
        let overall = plan.overall();
        let value = serde_json::json!({
            "changes": plan.changes,
            "overall": overall.as_ref().map(|class| class.name()),
            "restarts": plan.tasks_to_restart().iter().map(|task| task.name()).collect::<Vec<_>>(),
        });
        println!("{value}");
    } else {
        print!("{}", plan.to_text());
    }
}

/// `config apply NEW` (and `rollback`): validated here (exit 64, nothing sent), then by the
/// supervisor, which applies it with the least disruption its plan allows.
pub fn apply(new: &Path, runtime_dir: &Path) -> anyhow::Result<Exit> {
    let text = match checked_text(new) {
        Ok(text) => text,
        Err(exit) => return Ok(exit),
    };
    send_apply(runtime_dir, text, mld_runtime::generations::FROM_APPLY)
}

fn send_apply(runtime_dir: &Path, toml: String, source: &str) -> anyhow::Result<Exit> {
    let answer: ApplyAnswer = match ask(runtime_dir, &ControlRequest::Apply { toml, source: source.to_string() })? {
        Ok(answer) => answer,
        Err(exit) => return Ok(exit),
    };
    match answer.result {
        Ok(applied) => {
            print!("{}", applied.plan);
            println!("{}", applied.done);
            Ok(Exit::Success)
        }
        Err(errors) => {
            for error in &errors {
                eprintln!("mldefender: error: {error}");
            }
            eprintln!("mldefender: nothing was applied");
            Ok(Exit::Config)
        }
    }
}

/// The generations of the configuration at `config` (`supervisor.state-dir`).
fn open_generations(config: Option<&Path>) -> Result<Generations, Exit> {
    let config = crate::load::config(config)?;
    Generations::open(&config.supervisor.state_dir, config.supervisor.generations_max).map_err(|why| {
        eprintln!("mldefender: error: {why}");
        Exit::Failure
    })
}

/// `config generations`: every generation kept, the one in force marked.
pub fn generations(config: Option<&Path>, json: bool) -> anyhow::Result<Exit> {
    let generations = match open_generations(config) {
        Ok(generations) => generations,
        Err(exit) => return Ok(exit),
    };
    let current = generations.current().map(|generation| generation.number);
    if json {
        println!("{}", serde_json::json!({ "current": current, "generations": generations.list() }));
        return Ok(Exit::Success);
    }
    println!("{:<4} {:<24} {:<9} {:<14} {:<34} state", "gen", "time", "source", "sha256", "classes");
    for generation in generations.list() {
        let state = if Some(generation.number) == current {
            "in force"
        } else if generation.failed {
            "failed (did not reach ready)"
        } else {
            ""
        };
        println!(
            "{:<4} {:<24} {:<9} {:<14} {:<34} {state}",
            generation.number,
            mld_flow::time::rfc3339_utc(generation.at_unix_ms.saturating_mul(1_000_000)),
            generation.source,
            generation.sha256.get(..12).unwrap_or(&generation.sha256),
            if generation.classes.is_empty() { "-".to_string() } else { generation.classes.join(",") },
        );
    }
    Ok(Exit::Success)
}

/// `config diff A B`: the plan from generation A to generation B.
pub fn diff(config: Option<&Path>, from: u64, to: u64, json: bool) -> anyhow::Result<Exit> {
    let generations = match open_generations(config) {
        Ok(generations) => generations,
        Err(exit) => return Ok(exit),
    };
    let texts = generations.text(from).and_then(|old| generations.text(to).map(|new| (old, new)));
    let plan = texts.and_then(|(old, new)| Plan::between(&old, &new));
    match plan {
        Ok(plan) => {
            print_plan(&plan, json);
            Ok(Exit::Success)
        }
        Err(why) => {
            eprintln!("mldefender: error: {why}");
            Ok(Exit::Failure)
        }
    }
}

/// `config rollback [N]`: generation N (default: the one before the generation in force)
/// applied again, as a new generation, through the running supervisor.
pub fn rollback(config: Option<&Path>, number: Option<u64>, runtime_dir: &Path) -> anyhow::Result<Exit> {
    let generations = match open_generations(config) {
        Ok(generations) => generations,
        Err(exit) => return Ok(exit),
    };
    let Some(current) = generations.current().map(|generation| generation.number) else {
        eprintln!("mldefender: error: no configuration generation is kept yet");
        return Ok(Exit::Failure);
    };
    let target = match number {
        Some(number) => number,
        None => match generations.list().iter().rev().find(|generation| generation.number < current && !generation.failed) {
            Some(previous) => previous.number,
            None => {
                eprintln!("mldefender: error: no generation before {current} to roll back to (`mldefender config generations`)");
                return Ok(Exit::Failure);
            }
        },
    };
    let text = match generations.text(target) {
        Ok(text) => text,
        Err(why) => {
            eprintln!("mldefender: error: {why}");
            return Ok(Exit::Failure);
        }
    };
    println!("rolling back to generation {target}");
    send_apply(runtime_dir, text, mld_runtime::generations::FROM_ROLLBACK)
}
