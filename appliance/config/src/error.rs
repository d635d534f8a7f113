//! Configuration errors: each names its key path; a file's errors are reported together.

use std::fmt;

/// One problem with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path (`flow.idle-timeout-secs`); empty for whole-file problems.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError { path: path.into(), message: message.into() }
    }

    /// A TOML syntax error, with its line and column.
    pub(crate) fn syntax(text: &str, error: &toml::de::Error) -> ConfigError {
        let location = error
            .span()
            .map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
                format!("line {line}, column {column}: ")
            })
            .unwrap_or_default();
        ConfigError::new("", format!("TOML syntax error at {location}{}", error.message().trim()))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "`{}`: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    pub origin: String,
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub(crate) fn new(origin: &str, errors: Vec<ConfigError>) -> ConfigErrors {
        ConfigErrors { origin: origin.to_string(), errors }
    }

    pub fn single(origin: &str, error: ConfigError) -> ConfigErrors {
        ConfigErrors::new(origin, vec![error])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.errors.len();
        write!(f, "{}: {count} error{}", self.origin, if count == 1 { "" } else { "s" })?;
        for error in &self.errors {
            write!(f, "\n  {error}")?;
        }
        Ok(())
    }
}
