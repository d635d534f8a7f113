//! Warnings: settings that are valid but probably not what an operator wants. They do
//! not stop anything; `config check` prints them (and still exits 0).

use crate::{Config, ConfigError};

/// The node id used where the host name is not a usable one (a bare initramfs has
/// "(none)"): the same on every such appliance.
pub const FALLBACK_NODE: &str = "mldefender";

impl Config {
    /// Every warning, each with its key path.
    pub fn warnings(&self) -> Vec<ConfigError> {
        let mut warnings = Vec::new();
        // The node id is inside every record's tag: it is what tells one appliance's log
        // from another's when they share a key. Left as the default, two appliances can
        // have the same id, and then one's log verifies as the other's.
        if !self.log.node_configured {
            warnings.push(ConfigError::new(
                "log.node",
                format!(
                    "not set, so the node id is {}; set a unique id on every appliance that shares a log key, or one appliance's log verifies as another's",
                    if self.log.node == FALLBACK_NODE {
                        format!("the fallback `{FALLBACK_NODE}` (the host name is not a usable id)")
                    } else {
                        format!("the host name `{}`", self.log.node)
                    }
                ),
            ));
        } else if self.log.node == FALLBACK_NODE {
            warnings.push(ConfigError::new(
                "log.node",
                format!("`{FALLBACK_NODE}` is the default node id; set a unique id on every appliance that shares a log key, or one appliance's log verifies as another's"),
            ));
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    #[test]
    fn the_node_left_as_the_default_is_a_warning_not_an_error() {
        let default = Config::from_toml("", "x").expect("valid");
        let warnings = default.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].path, "log.node");
        assert!(warnings[0].message.contains("unique id"), "{}", warnings[0]);
        let fallback = Config::from_toml("[log]\nnode = \"mldefender\"\n", "x").expect("valid");
        assert_eq!(fallback.warnings()[0].path, "log.node");
        let set = Config::from_toml("[log]\nnode = \"gw-berlin-1\"\n", "x").expect("valid");
        assert!(set.warnings().is_empty());
    }

    #[test]
    fn retention_keys_are_checked() {
        let config = Config::from_toml("[log]\nmax-disk-mib = 10\nmax-age-days = 0\nmax-file-bytes = 1048576\n", "x").expect("valid");
        assert_eq!((config.log.max_disk_bytes, config.log.max_age), (10 << 20, None));
        let default = Config::default();
        assert_eq!((default.log.max_disk_bytes, default.log.max_age.map(|age| age.as_secs())), (1 << 30, Some(90 * 86_400)));
        let errors = Config::from_toml("[log]\nmax-disk-mib = 0\nmax-age-days = -1\n", "x").expect_err("invalid");
        let paths: Vec<&str> = errors.errors.iter().map(|error| error.path.as_str()).collect();
        assert_eq!(paths, vec!["log.max-disk-mib", "log.max-age-days"], "{errors}");
        let errors = Config::from_toml("[log]\nmax-disk-mib = 100\nmax-file-bytes = 67108864\n", "x").expect_err("budget below two files");
        assert!(errors.errors[0].message.contains("at least two files"), "{errors}");
    }
}
