//! What changing a running appliance's configuration takes (`mldefender config plan`,
//! `config apply`): every key whose value differs between two configurations (each with
//! its defaults filled in, so that writing a default out changes nothing), with the least
//! disruptive way to apply it:
//!
//! - [`Class::Live`]: the running tasks take it without a restart (thresholds, TTLs, the
//!   allowlist, management prefixes, heuristics, dry run, the circuit breaker);
//! - [`Class::RestartsTasks`]: the named tasks restart, one at a time, each waiting for
//!   ready (memory budgets, models, the index, flow and window shapes);
//! - [`Class::RestartsSupervisor`]: the supervisor restarts in place (interfaces, XDP
//!   mode, users, directories and keys it opens, the fleet's identity); the XDP program
//!   and the blocks stay in the kernel;
//! - [`Class::NeedsImage`]: what PID 1 or the image build consumes (`[system]`): refused
//!   on a running appliance.
//!
//! A key no rule names restarts the supervisor: the safe default.

use std::collections::BTreeMap;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::raw::RawConfig;
use crate::TaskKind;

/// How a change is applied, from the least disruptive.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Live,
    /// The tasks that restart, in start order.
    RestartsTasks(Vec<TaskKind>),
    RestartsSupervisor,
    NeedsImage,
}

impl Class {
    /// Its name in `plan`'s output.
    pub fn name(&self) -> &'static str {
        match self {
            Class::Live => "live",
            Class::RestartsTasks(_) => "restarts-tasks",
            Class::RestartsSupervisor => "restarts-supervisor",
            Class::NeedsImage => "needs-image",
        }
    }

    /// What the operator reads.
    pub fn describe(&self) -> String {
        match self {
            Class::Live => "live".to_string(),
            Class::RestartsTasks(tasks) => format!("restarts task {}", tasks.iter().map(|task| task.name()).collect::<Vec<_>>().join(", ")),
            Class::RestartsSupervisor => "restarts the supervisor".to_string(),
            Class::NeedsImage => "needs a new image".to_string(),
        }
    }
}

/// One changed key: its dotted path, its value before and after (TOML text; `None` when
/// absent, as in an array that grew), and its class.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: String,
    pub old: Option<String>,
    pub new: Option<String>,
    pub class: Class,
}

/// `{"key", "old", "new", "class", "tasks"}`: `tasks` lists what restarts (empty unless
/// the class is `restarts-tasks`).
impl Serialize for Change {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let tasks: Vec<&str> = match &self.class {
            Class::RestartsTasks(tasks) => tasks.iter().map(|task| task.name()).collect(),
            _ => Vec::new(),
        };
        let mut map = serializer.serialize_map(Some(5))?;
        map.serialize_entry("key", &self.key)?;
        map.serialize_entry("old", &self.old)?;
        map.serialize_entry("new", &self.new)?;
        map.serialize_entry("class", self.class.name())?;
        map.serialize_entry("tasks", &tasks)?;
        map.end()
    }
}

/// Every change from `old` to `new`, in key order.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
}

impl Plan {
    /// Compares two configurations' texts (both already valid: the caller validated them),
    /// each with its defaults filled in.
    pub fn between(old: &str, new: &str) -> Result<Plan, String> {
        let (old, new) = (normalized(old)?, normalized(new)?);
        let mut changes = Vec::new();
        let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        for key in keys {
            let (before, after) = (old.get(key), new.get(key));
            if before != after {
                changes.push(Change { key: key.clone(), old: before.cloned(), new: after.cloned(), class: classify(key) });
            }
        }
        Ok(Plan { changes })
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The most disruptive class among the changes (`None`: nothing changed), with every
    /// task to restart when that is the class.
    pub fn overall(&self) -> Option<Class> {
        let mut overall: Option<Class> = None;
        for change in &self.changes {
            overall = Some(match (overall, &change.class) {
                (None, class) => class.clone(),
                (Some(Class::RestartsTasks(mut tasks)), Class::RestartsTasks(more)) => {
                    tasks.extend(more.iter().copied());
                    tasks.sort();
                    tasks.dedup();
                    Class::RestartsTasks(tasks)
                }
                (Some(current), class) => current.max(class.clone()),
            });
        }
        overall
    }

    /// The tasks to restart (when the plan restarts tasks and nothing more).
    pub fn tasks_to_restart(&self) -> Vec<TaskKind> {
        match self.overall() {
            Some(Class::RestartsTasks(tasks)) => tasks,
            _ => Vec::new(),
        }
    }

    /// The classes present, in order of disruption (for the record of an apply).
    pub fn classes(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Vec::new();
        let mut classes: Vec<&Class> = self.changes.iter().map(|change| &change.class).collect();
        classes.sort();
        for class in classes {
            if !names.contains(&class.name()) {
                names.push(class.name());
            }
        }
        names
    }

    /// The plan as the operator reads it: one line per change, then the overall verdict.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        if self.changes.is_empty() {
            text.push_str("no change\n");
            return text;
        }
        let width = self.changes.iter().map(|change| change.key.len()).max().unwrap_or(0);
        for change in &self.changes {
            let show = |value: &Option<String>| value.clone().unwrap_or_else(|| "(none)".to_string());
            text.push_str(&format!("{:<width$}  {} -> {}  [{}]\n", change.key, show(&change.old), show(&change.new), change.class.describe()));
        }
        if let Some(overall) = self.overall() {
            text.push_str(&format!("overall: {}\n", overall.describe()));
        }
        text
    }
}

/// A configuration's every leaf key (dotted; arrays of tables by index, other arrays whole)
/// with its value as TOML text, defaults filled in.
/// Every leaf of a configuration's text with its defaults filled in, by dotted key
/// (`detect.models-dir`), each value as TOML writes it.
pub fn values(text: &str) -> Result<BTreeMap<String, String>, String> {
    normalized(text)
}

fn normalized(text: &str) -> Result<BTreeMap<String, String>, String> {
    let raw: RawConfig = toml::from_str(text).map_err(|error| format!("not a configuration: {}", error.message()))?;
    let value = toml::Value::try_from(&raw).map_err(|error| format!("the configuration does not serialize: {error}"))?;
    let mut leaves = BTreeMap::new();
    flatten("", &value, &mut leaves);
    Ok(leaves)
}

fn flatten(prefix: &str, value: &toml::Value, leaves: &mut BTreeMap<String, String>) {
    let join = |key: &str| if prefix.is_empty() { key.to_string() } else { format!("{prefix}.{key}") };
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table {
                flatten(&join(key), value, leaves);
            }
        }
        toml::Value::Array(items) if items.iter().any(toml::Value::is_table) => {
            leaves.insert(format!("{prefix}.length"), items.len().to_string());
            for (index, item) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{index}]"), item, leaves);
            }
        }
        other => {
            leaves.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// The class of a change of `key` (see the module doc); the first rule that matches.
pub fn classify(key: &str) -> Class {
    use TaskKind::{Capture, Detect, Fleet, Ingest};
    let restarts = |tasks: &[TaskKind]| Class::RestartsTasks(tasks.to_vec());
    let (section, rest) = key.split_once(['.', '[']).unwrap_or((key, ""));
    let field = rest.rsplit(['.', ']']).next().unwrap_or(rest);
    match section {
        // PID 1's duties at boot, and what the image build takes from the file.
        "system" => Class::NeedsImage,
        // Built into the image (its disk, its command line), or read by the supervisor at
        // start (blessing) and by `update apply`, which the image's own file drives.
        "image" => Class::NeedsImage,
        // The listener is bound by the supervisor at its start.
        "metrics" => Class::RestartsSupervisor,
        // Written into the XDP program's allow map atomically, and into every task's
        // protected set.
        "allowlist" => Class::Live,
        // The responder's policy and protections: the detect task takes them live.
        "response" => Class::Live,
        // Only `mldefender flows` reads it.
        "output" => Class::Live,
        "detect" => match field {
            "models"
            | "models-dir"
            | "model-public-key"
            | "onnxruntime"
            | "tick-ms"
            | "batch-max"
            | "queue-max"
            | "max-sources"
            | "nearest-past-events"
            | "nearest-past-events-budget-ms" => restarts(&[Detect]),
            // Given to the detect task by the supervisor at start.
            "state-dir" => Class::RestartsSupervisor,
            // Which window the heuristics read: shapes what the capture task reports.
            "window-secs" => restarts(&[Capture, Detect]),
            _ => Class::Live,
        },
        // The flow table and the windows live in the capture task; the detect task reads
        // the windows by index.
        "flow" => restarts(&[Capture]),
        "windows" => restarts(&[Capture, Detect]),
        // The guard's maps are written by the capture task at its start.
        "guard" => restarts(&[Capture]),
        "capture" => match field {
            "counters-interval-secs" | "sweep-interval-ms" => restarts(&[Capture]),
            _ => Class::RestartsSupervisor,
        },
        "log" => match field {
            // Opened or created by the supervisor, or naming the node.
            "dir" | "node" | "key-file" | "create-key" | "signing-key-file" => Class::RestartsSupervisor,
            // Rotation, group commit, retention, checkpoints: the log task takes them.
            _ => Class::Live,
        },
        "ingest" => match field {
            "state-dir" => Class::RestartsSupervisor,
            "poll-interval-ms" | "save-interval-secs" => Class::Live,
            _ => restarts(&[Ingest]),
        },
        "fleet" => match field {
            // Whether the fleet task runs at all, and the key the supervisor judges
            // documents with.
            "enabled" | "operator-public-key" => Class::RestartsSupervisor,
            _ => restarts(&[Fleet]),
        },
        "tasks" => {
            let kind = rest.split('.').next().and_then(TaskKind::parse);
            match (kind, field) {
                // Who the task runs as, and whether it runs: fds, directories and
                // sockets are given at the supervisor's start.
                (_, "enabled" | "user" | "group") | (None, _) => Class::RestartsSupervisor,
                (Some(kind), _) => restarts(&[kind]),
            }
        }
        _ => Class::RestartsSupervisor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writing_a_default_out_changes_nothing_and_each_change_is_named_with_its_class() {
        assert!(Plan::between("", crate::EXAMPLE).expect("plan").is_empty(), "the reference file holds the defaults");
        let plan = Plan::between("", "[response]\nmode = \"dry-run\"\n[tasks.detect]\nmemory-max-mib = 700\n").expect("plan");
        let keys: Vec<(&str, &str)> = plan.changes.iter().map(|change| (change.key.as_str(), change.class.name())).collect();
        assert_eq!(keys, vec![("response.mode", "live"), ("tasks.detect.memory-max-mib", "restarts-tasks")]);
        assert_eq!(plan.overall(), Some(Class::RestartsTasks(vec![TaskKind::Detect])));
    }
}
