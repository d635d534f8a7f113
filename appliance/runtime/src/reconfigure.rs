//! The supervisor's side of configuration changes on a running appliance
//! (`mldefender config apply | rollback`, SIGHUP; docs/operations.md, "Changing the
//! configuration"): validate first (every error, nothing changed), plan
//! ([`mld_config::plan`]), refuse what needs a new image, keep the new generation
//! ([`crate::generations`]), then apply with the least disruption the plan allows. The
//! supervisor's loop does the applying (it owns the machine and the data plane); this
//! module decides.

use std::path::{Path, PathBuf};

use mld_config::plan::{Class, Plan};
use mld_config::Config;
use mld_ipc::ConfigNote;

use crate::fleet_doc::Documents;
use crate::generations::{sha256_hex, Generations};

/// What the supervisor runs, and where it came from.
#[derive(Debug)]
pub struct Running {
    /// The configuration file it was started with (`supervise --config`).
    pub file: PathBuf,
    pub generations: Generations,
    /// The generation in force and its text.
    pub generation: u64,
    pub base_toml: String,
    /// With the fleet document laid over: what the tasks run.
    pub effective_toml: String,
    pub config: Config,
    pub note: ConfigNote,
}

/// A change judged and ready to apply.
#[derive(Debug)]
pub struct Prepared {
    pub base_toml: String,
    pub effective_toml: String,
    pub config: Config,
    pub plan: Plan,
}

/// The configuration in force once the fleet document (if any) is laid over `base`.
pub fn effective(documents: &Documents, base: &str) -> Result<String, Vec<String>> {
    match &documents.document_toml {
        Some(document) => mld_config::fleet_overlay(base, document),
        None => Ok(base.to_string()),
    }
}

impl Running {
    /// Judges `new` (a whole configuration) against what runs: every error (the
    /// configuration check, this machine's, what a running appliance cannot change), or
    /// the plan. Nothing is changed here.
    pub fn prepare(&self, documents: &Documents, new: &str, origin: &str) -> Result<Prepared, Vec<String>> {
        let strings = |errors: mld_config::ConfigErrors| errors.errors.iter().map(|error| format!("{}: {error}", errors.origin)).collect::<Vec<_>>();
        Config::from_toml(new, origin).map_err(strings)?;
        let effective_toml = effective(documents, new)?;
        let config = Config::from_toml(&effective_toml, origin).map_err(strings)?;
        config.check_environment(origin).map_err(strings)?;
        if config.supervisor.state_dir != self.config.supervisor.state_dir {
            return Err(vec![format!(
                "{origin}: supervisor.state-dir: is read from the configuration file `{}` only (the generations live there); change it in that file and restart",
                self.file.display()
            )]);
        }
        let plan = Plan::between(&self.effective_toml, &effective_toml).map_err(|error| vec![error])?;
        let image: Vec<String> = plan.changes.iter().filter(|change| change.class == Class::NeedsImage).map(|change| change.key.clone()).collect();
        if !image.is_empty() {
            return Err(vec![format!(
                "{origin}: {} {} consumed at boot or by the image build: a running appliance cannot take {}; build and flash a new image (nothing was applied)",
                image.join(", "),
                if image.len() == 1 { "is" } else { "are" },
                if image.len() == 1 { "it" } else { "them" }
            )]);
        }
        Ok(Prepared { base_toml: new.to_string(), effective_toml, config, plan })
    }

    /// Keeps `prepared` as the next generation (from `source`) and makes it the one in
    /// force here; returns its note for the record.
    pub fn commit(&mut self, prepared: &Prepared, source: &str) -> Result<ConfigNote, String> {
        let file_sha256 = file_sha256(&self.file);
        let classes: Vec<String> = prepared.plan.classes().into_iter().map(str::to_string).collect();
        let generation = self.generations.record(&prepared.base_toml, source, classes.clone(), &file_sha256)?;
        self.generation = generation.number;
        self.base_toml = prepared.base_toml.clone();
        self.effective_toml = prepared.effective_toml.clone();
        self.config = prepared.config.clone();
        self.note = ConfigNote { generation: generation.number, sha256: sha256_hex(&prepared.effective_toml), source: source.to_string(), classes };
        Ok(self.note.clone())
    }
}

/// The SHA-256 of the configuration file as it is now (empty when it cannot be read).
pub fn file_sha256(file: &Path) -> String {
    std::fs::read_to_string(file).map(|text| sha256_hex(&text)).unwrap_or_default()
}

/// What the operator reads after an apply: which tasks took it live, which restart, or
/// whether the supervisor restarts.
pub fn describe(plan: &Plan, generation: u64) -> String {
    match plan.overall() {
        None => "no change: nothing applied".to_string(),
        Some(Class::Live) => format!("generation {generation} applied live: no task restarted"),
        Some(Class::RestartsTasks(tasks)) => format!(
            "generation {generation} applied: what is live taken at once; restarting {} one at a time, each waiting for ready",
            tasks.iter().map(|task| task.name()).collect::<Vec<_>>().join(", ")
        ),
        Some(Class::RestartsSupervisor) => {
            format!("generation {generation} kept: the supervisor restarts in place with it (same pid; XDP and the blocks stay in the kernel)")
        }
        Some(Class::NeedsImage) => "refused: needs a new image".to_string(),
    }
}

/// At the supervisor's start: which generation runs (`Generations::starting_point`), with
/// the fleet document in force laid over it. A generation that no longer passes the checks
/// (this machine changed) is marked failed and the previous one is tried; an unreadable
/// generations directory is moved aside (kept for the operator) and the file runs.
pub fn start(file: &Path, file_config: Config, file_text: String, origin: &str) -> (Running, Documents) {
    let state_dir = file_config.supervisor.state_dir.clone();
    let max = file_config.supervisor.generations_max;
    let mut generations = match Generations::open(&state_dir, max) {
        Ok(generations) => generations,
        Err(why) => {
            let dir = state_dir.join(crate::generations::GENERATIONS_DIR);
            let aside = state_dir.join(format!("{}.unreadable-{}", crate::generations::GENERATIONS_DIR, std::process::id()));
            tracing::error!(why = %why, aside = %aside.display(), "the configuration generations cannot be read: moved aside, starting from the configuration file");
            let _ = std::fs::rename(&dir, &aside);
            Generations::open(&state_dir, max).unwrap_or_else(|_| Generations::empty(&state_dir, max))
        }
    };
    let (mut generation, mut base_toml, mut config) = (0, file_text.clone(), file_config.clone());
    for _ in 0..=max {
        match generations.starting_point(&file_text) {
            Ok((number, text)) => {
                let checked = Config::from_toml(&text, origin).and_then(|config| config.check_environment(origin).map(|()| config));
                match checked {
                    Ok(checked) => {
                        (generation, base_toml, config) = (number, text, checked);
                        break;
                    }
                    Err(errors) if text != file_text => {
                        tracing::error!(generation = number, errors = %errors, "configuration generation no longer passes the checks: marked failed, trying the previous one");
                        if generations.mark_failed(number).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            Err(why) => {
                tracing::error!(why = %why, "the configuration generations cannot be kept: running the configuration file");
                break;
            }
        }
    }
    let mut documents = Documents::new(&config, base_toml.clone());
    let (config, effective_toml) = match documents.in_force(&format!("{origin} with the fleet document in force")) {
        Ok(Some((merged_config, merged))) => {
            tracing::info!(generation = documents.generation, "running with the fleet configuration document in force laid over the configuration");
            (merged_config, merged)
        }
        Ok(None) => (config, base_toml.clone()),
        Err(why) => {
            tracing::error!(why = %why, "the fleet configuration document kept here is not applied: running on the configuration alone");
            (config, base_toml.clone())
        }
    };
    let source = generations.get(generation).map_or(crate::generations::FROM_FILE.to_string(), |kept| kept.source.clone());
    let classes = generations.get(generation).map_or(Vec::new(), |kept| kept.classes.clone());
    let note = ConfigNote { generation, sha256: sha256_hex(&effective_toml), source, classes };
    tracing::info!(generation, sha256 = %note.sha256, source = %note.source, "configuration generation in force");
    (Running { file: file.to_path_buf(), generations, generation, base_toml, effective_toml, config, note }, documents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_a_running_appliance_cannot_take_is_applied_and_every_error_is_listed() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("mldefender.toml");
        let base = format!("[supervisor]\nstate-dir = \"{}\"\n[detect]\nmodels = \"off\"\n", dir.path().display());
        std::fs::write(&file, &base).expect("write");
        let config = Config::from_toml(&base, "test").expect("valid");
        let documents = Documents::new(&config, base.clone());
        let running = Running {
            file: file.clone(),
            generations: Generations::open(dir.path(), 5).expect("open"),
            generation: 1,
            base_toml: base.clone(),
            effective_toml: base.clone(),
            config,
            note: ConfigNote::default(),
        };
        let errors = running.prepare(&documents, &format!("{base}[response]\nttl-scan-secs = 0\nmax-active-blocks = 0\n"), "new").expect_err("invalid");
        assert_eq!(errors.len(), 2, "every error: {errors:?}");
        let image = running.prepare(&documents, &format!("{base}[system]\ndata-wait-ms = 100\n"), "new").expect_err("image");
        assert!(image[0].contains("system.data-wait-ms") && image[0].contains("new image"), "{image:?}");
        let moved = running.prepare(&documents, "[supervisor]\nstate-dir = \"/elsewhere\"\n[detect]\nmodels = \"off\"\n", "new").expect_err("state dir");
        assert!(moved.iter().any(|error| error.contains("supervisor.state-dir")), "{moved:?}");
    }
}
