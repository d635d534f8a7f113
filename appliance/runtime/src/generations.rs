//! Configuration generations (`mldefender config generations | rollback | diff`): every
//! configuration the supervisor ran from, numbered, kept in
//! `<supervisor.state-dir>/generations/` (root's, 0700): `N.toml` (the text, 0600) and
//! `index.json` (number, time, SHA-256, where it came from, the classes applied, the
//! configuration file's SHA-256 when it was recorded, and whether it failed to reach
//! ready). At most `supervisor.generations-max` are kept; the oldest go first, never the
//! one in force.
//!
//! Which generation a start runs (`Generations::starting_point`): the newest one that did
//! not fail, unless the configuration file changed since it was recorded: an edited file
//! (by hand, or by `nixos-rebuild`) is a deliberate new configuration and becomes a new
//! generation. A file already recorded and failed is not tried again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

pub const GENERATIONS_DIR: &str = "generations";
const INDEX: &str = "index.json";
/// The largest index read.
const INDEX_MAX_BYTES: u64 = 1 << 20;

/// Where a generation came from.
pub const FROM_FILE: &str = "file";
pub const FROM_APPLY: &str = "apply";
pub const FROM_ROLLBACK: &str = "rollback";
pub const FROM_SIGHUP: &str = "sighup";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub number: u64,
    pub at_unix_ms: u64,
    /// SHA-256 of the text, hex.
    pub sha256: String,
    /// `file`, `apply`, `rollback` or `sighup`.
    pub source: String,
    /// The classes of the change that made it (`config plan`), empty for the first.
    pub classes: Vec<String>,
    /// SHA-256 of the configuration file when this was recorded.
    pub file_sha256: String,
    /// It was started and did not reach ready in time: never started again.
    #[serde(default)]
    pub failed: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    generations: Vec<Generation>,
}

#[derive(Debug)]
pub struct Generations {
    dir: PathBuf,
    max: usize,
    index: Index,
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

impl Generations {
    /// The generations under `state_dir` (none yet: empty). Errors name the file.
    pub fn open(state_dir: &Path, max: usize) -> Result<Generations, String> {
        let dir = state_dir.join(GENERATIONS_DIR);
        let path = dir.join(INDEX);
        let index = match std::fs::File::open(&path) {
            Ok(file) => {
                use std::io::Read;
                let mut text = String::new();
                file.take(INDEX_MAX_BYTES).read_to_string(&mut text).map_err(|error| format!("failed to read `{}`: {error}", path.display()))?;
                serde_json::from_str(&text).map_err(|error| format!("`{}` is not a generations index: {error}", path.display()))?
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Index::default(),
            Err(error) => return Err(format!("failed to open `{}`: {error}", path.display())),
        };
        Ok(Generations { dir, max: max.max(1), index })
    }

    /// No generations (the directory unusable): records fail with the reason.
    pub fn empty(state_dir: &Path, max: usize) -> Generations {
        Generations { dir: state_dir.join(GENERATIONS_DIR), max: max.max(1), index: Index::default() }
    }

    pub fn list(&self) -> &[Generation] {
        &self.index.generations
    }

    pub fn get(&self, number: u64) -> Option<&Generation> {
        self.index.generations.iter().find(|generation| generation.number == number)
    }

    /// The newest generation that did not fail: the one in force once started.
    pub fn current(&self) -> Option<&Generation> {
        self.index.generations.iter().rev().find(|generation| !generation.failed)
    }

    /// The text of generation `number`, checked against its recorded hash.
    pub fn text(&self, number: u64) -> Result<String, String> {
        let generation = self.get(number).ok_or_else(|| format!("there is no generation {number} (`mldefender config generations` lists them)"))?;
        let path = self.dir.join(format!("{number}.toml"));
        let text = std::fs::read_to_string(&path).map_err(|error| format!("failed to read `{}`: {error}", path.display()))?;
        if sha256_hex(&text) != generation.sha256 {
            return Err(format!("`{}` does not match the SHA-256 recorded for generation {number}: it was changed", path.display()));
        }
        Ok(text)
    }

    /// What a start runs, given the configuration file's text: `(generation, text)`. The
    /// newest good generation, when the file is the one it was recorded with; else the file,
    /// recorded as a new generation (unless it was recorded before and failed: then the
    /// newest good one, or the file all the same when there is none).
    pub fn starting_point(&mut self, file_text: &str) -> Result<(u64, String), String> {
        let file_sha256 = sha256_hex(file_text);
        if let Some(current) = self.current().cloned() {
            // The file's text already ran and failed (recorded from the file, applied by
            // SIGHUP, or identical to a failed apply): not again.
            let file_failed = self.index.generations.iter().any(|generation| generation.failed && generation.sha256 == file_sha256);
            if current.file_sha256 == file_sha256 || file_failed {
                return Ok((current.number, self.text(current.number)?));
            }
        }
        let number = self.record(file_text, FROM_FILE, Vec::new(), &file_sha256)?.number;
        Ok((number, file_text.to_string()))
    }

    /// Keeps `text` as the next generation (its text first, then the index, each written
    /// whole), and forgets the oldest beyond the bound.
    pub fn record(&mut self, text: &str, source: &str, classes: Vec<String>, file_sha256: &str) -> Result<Generation, String> {
        mld_supervisor::files::create_dirs(&self.dir, 0o700).map_err(|error| format!("failed to create `{}`: {error}", self.dir.display()))?;
        let number = self.index.generations.last().map_or(1, |generation| generation.number + 1);
        let path = self.dir.join(format!("{number}.toml"));
        mld_supervisor::files::write_atomically(&path, text.as_bytes(), 0o600).map_err(|error| format!("failed to write `{}`: {error}", path.display()))?;
        let generation = Generation {
            number,
            at_unix_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64),
            sha256: sha256_hex(text),
            source: source.to_string(),
            classes,
            file_sha256: file_sha256.to_string(),
            failed: false,
        };
        self.index.generations.push(generation.clone());
        while self.index.generations.len() > self.max {
            let oldest = self.index.generations.remove(0);
            let _ = std::fs::remove_file(self.dir.join(format!("{}.toml", oldest.number)));
        }
        self.save()?;
        Ok(generation)
    }

    /// Generation `number` did not reach ready: never started again.
    pub fn mark_failed(&mut self, number: u64) -> Result<(), String> {
        if let Some(generation) = self.index.generations.iter_mut().find(|generation| generation.number == number) {
            generation.failed = true;
        }
        self.save()
    }

    fn save(&self) -> Result<(), String> {
        let path = self.dir.join(INDEX);
        let text = serde_json::to_string_pretty(&self.index).expect("the index serializes");
        mld_supervisor::files::write_atomically(&path, text.as_bytes(), 0o600).map_err(|error| format!("failed to write `{}`: {error}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_runs_the_newest_good_generation_unless_the_file_changed_and_a_failed_file_is_not_retried() {
        let dir = tempfile::tempdir().expect("dir");
        let mut generations = Generations::open(dir.path(), 5).expect("open");
        let file = "[response]\nttl-scan-secs = 60\n";
        assert_eq!(generations.starting_point(file).expect("start"), (1, file.to_string()), "the file is the first generation");
        assert_eq!(generations.starting_point(file).expect("start").0, 1, "recorded once");
        // `config apply`: a new generation from elsewhere; the file unchanged.
        let applied = "[response]\nttl-scan-secs = 120\n";
        generations.record(applied, FROM_APPLY, vec!["live".to_string()], &sha256_hex(file)).expect("record");
        let mut reopened = Generations::open(dir.path(), 5).expect("reopen");
        assert_eq!(reopened.starting_point(file).expect("start"), (2, applied.to_string()), "the applied one is in force");
        // It did not reach ready: the previous one.
        reopened.mark_failed(2).expect("mark");
        assert_eq!(reopened.starting_point(file).expect("start"), (1, file.to_string()));
        // The file edited: a new generation; failed, it is not tried again.
        let edited = "[response]\nttl-scan-secs = 30\n";
        assert_eq!(reopened.starting_point(edited).expect("start").0, 3);
        reopened.mark_failed(3).expect("mark");
        assert_eq!(reopened.starting_point(edited).expect("start"), (1, file.to_string()), "the newest good one, not the failed file again");
        // A file applied by SIGHUP that failed: the file is not recorded and run again.
        let reloaded = "[response]\nttl-scan-secs = 45\n";
        reopened.record(reloaded, FROM_SIGHUP, Vec::new(), &sha256_hex(reloaded)).expect("record");
        reopened.mark_failed(4).expect("mark");
        assert_eq!(reopened.starting_point(reloaded).expect("start"), (1, file.to_string()), "the failed reload is not retried as a file");
        // Bounded: the oldest go.
        reopened.record("[response]\nttl-scan-secs = 31\n", FROM_APPLY, Vec::new(), "x").expect("record");
        reopened.record("[response]\nttl-scan-secs = 32\n", FROM_APPLY, Vec::new(), "x").expect("record");
        assert_eq!(reopened.list().iter().map(|generation| generation.number).collect::<Vec<_>>(), vec![2, 3, 4, 5, 6]);
        assert!(reopened.text(1).is_err(), "gone with its file");
        // A text changed on disk is refused.
        std::fs::write(dir.path().join(GENERATIONS_DIR).join("6.toml"), "tampered").expect("write");
        assert!(reopened.text(6).expect_err("changed").contains("does not match"));
    }
}
