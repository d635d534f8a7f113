//! `[image]`: the appliance image (image/build.sh, docs/image.md): its disk layout, the
//! kernel command line, the release key updates must be signed with, and how a new slot
//! earns its place (boot counting, blessing). Raw (as written) and validated forms.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::validate::in_range;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawImage {
    /// The Ed25519 public key (base64) that must have signed an update's UKI
    /// (`mldefender update apply`). Empty: every update is refused.
    pub release_public_key: String,
    /// Boots a newly written slot gets before the boot loader falls back to the other
    /// one (systemd-boot's boot counting).
    pub boot_tries: i64,
    /// A slot on trial is blessed once every task is ready and has stayed up this long.
    /// Seconds.
    pub bless_after_secs: i64,
    /// The EFI system partition (both slots and the boot loader): a device path or
    /// `PARTLABEL=NAME`.
    pub esp_device: String,
    /// Where the supervisor mounts the ESP while it blesses a slot or writes an update.
    pub esp_mount: String,
    /// Size of the ESP the build makes: room for two slots and an update. MiB.
    pub esp_mib: i64,
    /// Size of the data partition the build makes (formatted at first boot). MiB.
    pub data_mib: i64,
    /// The kernel command line before the supervisor's own arguments.
    pub kernel_cmdline: String,
}

impl Default for RawImage {
    fn default() -> RawImage {
        RawImage {
            release_public_key: String::new(),
            boot_tries: 3,
            bless_after_secs: 60,
            esp_device: "PARTLABEL=mld-esp".to_string(),
            esp_mount: "/run/mldefender-esp".to_string(),
            esp_mib: 256,
            data_mib: 512,
            kernel_cmdline: "console=tty0 console=ttyS0,115200 panic=10 quiet".to_string(),
        }
    }
}

/// The validated `[image]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// `None`: updates are refused.
    pub release_public_key: Option<String>,
    pub boot_tries: u32,
    pub bless_after: Duration,
    pub esp_device: String,
    pub esp_mount: std::path::PathBuf,
    pub esp_mib: u64,
    pub data_mib: u64,
    pub kernel_cmdline: String,
}

pub(crate) fn validate_image(raw: &RawImage, errors: &mut Vec<ConfigError>) -> ImageConfig {
    let release_public_key = match raw.release_public_key.trim() {
        "" => None,
        key if crate::fleet::is_public_key(key) => Some(key.to_string()),
        key => {
            errors.push(ConfigError::new("image.release-public-key", format!("must be the base64 of a 32-byte Ed25519 public key, got \"{key}\"")));
            None
        }
    };
    if raw.esp_device.strip_prefix("PARTLABEL=").map_or(!raw.esp_device.starts_with('/'), str::is_empty) {
        errors.push(ConfigError::new("image.esp-device", format!("must be an absolute device path or PARTLABEL=NAME, got \"{}\"", raw.esp_device)));
    }
    if !raw.esp_mount.starts_with('/') {
        errors.push(ConfigError::new("image.esp-mount", format!("must be an absolute path, got \"{}\"", raw.esp_mount)));
    }
    if raw.kernel_cmdline.split_whitespace().any(|word| word == "--" || word.starts_with("init=")) {
        errors.push(ConfigError::new("image.kernel-cmdline", "must not contain `--` or `init=`: the build adds the supervisor's own arguments"));
    }
    ImageConfig {
        release_public_key,
        boot_tries: in_range(raw.boot_tries, 1, 9, "image.boot-tries", errors) as u32,
        bless_after: Duration::from_secs(in_range(raw.bless_after_secs, 0, 86_400, "image.bless-after-secs", errors)),
        esp_device: raw.esp_device.clone(),
        esp_mount: raw.esp_mount.clone().into(),
        esp_mib: in_range(raw.esp_mib, 64, 4096, "image.esp-mib", errors),
        data_mib: in_range(raw.data_mib, 64, 16_777_216, "image.data-mib", errors),
        kernel_cmdline: raw.kernel_cmdline.trim().to_string(),
    }
}
