//! The one way every command loads its configuration: every error printed, exit 64.

use std::path::Path;

use mld_config::Config;
use mld_runtime::Exit;

/// The configuration at `path`, or the embedded default when no path is given.
pub fn config(path: Option<&Path>) -> Result<Config, Exit> {
    match path {
        Some(path) => config_with_text(path).map(|(config, _)| config),
        None => Ok(Config::default()),
    }
}

/// The configuration at `path` with its text (`replay` hashes the text into every record).
pub fn config_with_text(path: &Path) -> Result<(Config, String), Exit> {
    Config::from_file_with_text(path).map_err(|errors| {
        eprintln!("{errors}");
        Exit::Config
    })
}
