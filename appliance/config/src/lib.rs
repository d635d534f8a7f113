//! The appliance configuration: one TOML file, closed-world.
//!
//! Parsing has two layers. [`raw`] mirrors the file (kebab-case keys, every key
//! optional with its default, unknown keys refused); [`Config`] holds only validated
//! values, built by [`Config::from_toml`], which reports every problem at once, each
//! with its key path. `mldefender config check` and the daemon share this code path.
//!
//! The commented reference file `config/mldefender.toml` is embedded as [`EXAMPLE`];
//! tests hold it equal to the defaults here, key for key.

mod detect;
mod error;
mod fleet;
mod guard;
pub mod ids;
mod image;
pub mod json_schema;
mod metrics;
mod pki;
pub mod plan;
pub mod raw;
mod schema;
mod validate;
mod warnings;

pub use detect::{BlockPolicy, DetectConfig, HeuristicsConfig, ModelsMode, ResponseConfig, ResponseMode};
pub use error::{ConfigError, ConfigErrors};
pub use fleet::{overlay as fleet_overlay, FleetConfig, FLEET_SECTIONS};
pub use guard::GuardConfig;
pub use image::ImageConfig;
pub use json_schema::json_schema;
pub use metrics::MetricsConfig;
pub use pki::PkiConfig;
pub use validate::{
    CaptureConfig, Config, DataMount, FlowConfig, IndexConfig, IngestConfig, InterfaceConfig, InterfaceRole, LogConfig, OutputConfig, OutputFormat,
    RestartPolicy, SourceCheck, SupervisorConfig, SystemConfig, TaskConfig, TaskKind, TextIndexConfig, WindowsConfig, XdpMode,
};
pub use warnings::FALLBACK_NODE;

/// The complete default configuration, with a comment on every key.
pub const EXAMPLE: &str = include_str!("../../../config/mldefender.toml");

impl Config {
    /// Parses and validates a configuration file's text. `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
        let table: toml::Table = text.parse().map_err(|error: toml::de::Error| ConfigErrors::single(origin, ConfigError::syntax(text, &error)))?;
        let shape_errors = schema::check_shape(&table);
        if !shape_errors.is_empty() {
            return Err(ConfigErrors::new(origin, shape_errors));
        }
        let raw: raw::RawConfig =
            toml::Value::Table(table).try_into().map_err(|error: toml::de::Error| ConfigErrors::single(origin, ConfigError::new("", error.message())))?;
        Config::try_from(raw).map_err(|errors| ConfigErrors::new(origin, errors))
    }

    /// Reads, parses and validates a configuration file.
    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigErrors> {
        Config::from_file_with_text(path).map(|(config, _)| config)
    }

    /// Like [`from_file`](Config::from_file), with the file's text (what a record's
    /// configuration hash is taken of).
    pub fn from_file_with_text(path: &std::path::Path) -> Result<(Config, String), ConfigErrors> {
        let origin = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|error| ConfigErrors::single(&origin, ConfigError::new("", format!("failed to read the file: {error}"))))?;
        Config::from_toml(&text, &origin).map(|config| (config, text))
    }
}

#[cfg(test)]
mod tests;
