//! The appliance image's two boot slots on the EFI system partition (ADR 0009,
//! docs/image.md).
//!
//! Each slot is one unified kernel image in `EFI/Linux/`, named
//! `mldefender-SEQUENCE-SLOT[+LEFT[-DONE]].efi`: SEQUENCE grows with every update, so that
//! systemd-boot (which sorts type #2 entries by name, newest first, and puts entries with
//! no tries left last) boots the newest image while it has tries left and the other slot
//! once it has none. `+LEFT-DONE` is systemd-boot's boot counter: it is present while the
//! slot is on trial; blessing the slot removes it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The slots' directory on the ESP.
pub const SLOT_DIR: &str = "EFI/Linux";
/// Where an update is written before it gets its slot name (ignored by the boot loader).
const INCOMING: &str = ".mldefender-update.tmp";
/// systemd-boot's vendor GUID for its EFI variables.
pub const LOADER_VENDOR: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
/// What an update's signature covers: this prefix, then the image's SHA-256 (hex). A
/// model signature (over JSON) can never be taken for one.
pub const SIGNED_STATEMENT_PREFIX: &str = "mldefender-uki sha256=";

/// One slot's image file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotFile {
    /// `a` or `b`.
    pub slot: char,
    pub sequence: u64,
    /// `None`: blessed (no boot counter). `Some(0)`: every try failed.
    pub tries_left: Option<u32>,
    pub tries_done: u32,
    pub file: String,
    /// VERSION from the image's os-release (`.osrel`).
    pub version: Option<String>,
    pub bytes: u64,
}

impl SlotFile {
    /// Parses a slot file name; anything else is `None`.
    pub fn parse_name(name: &str) -> Option<SlotFile> {
        let stem = name.strip_prefix("mldefender-")?.strip_suffix(".efi")?;
        let (base, counter) = match stem.split_once('+') {
            Some((base, counter)) => (base, Some(counter)),
            None => (stem, None),
        };
        let (sequence, slot) = base.split_once('-')?;
        let slot = match slot {
            "a" => 'a',
            "b" => 'b',
            _ => return None,
        };
        if sequence.len() != 6 || !sequence.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        let (tries_left, tries_done) = match counter {
            None => (None, 0),
            Some(counter) => {
                let (left, done) = counter.split_once('-').unwrap_or((counter, "0"));
                (Some(left.parse().ok()?), done.parse().ok()?)
            }
        };
        Some(SlotFile { slot, sequence: sequence.parse().ok()?, tries_left, tries_done, file: name.to_string(), version: None, bytes: 0 })
    }

    pub fn blessed(&self) -> bool {
        self.tries_left.is_none()
    }

    /// The name once blessed: without the boot counter.
    pub fn blessed_name(&self) -> String {
        format!("mldefender-{:06}-{}.efi", self.sequence, self.slot)
    }

    /// What `update status` says about it.
    pub fn state(&self) -> String {
        match self.tries_left {
            None => "blessed".to_string(),
            Some(0) => format!("failed: no tries left ({} boots did not get ready)", self.tries_done),
            Some(left) => format!("on trial: {left} tries left, {} done", self.tries_done),
        }
    }
}

/// The slot files on the ESP mounted at `esp`, by slot, each with its version.
pub fn list(esp: &Path) -> Result<Vec<SlotFile>, String> {
    let dir = esp.join(SLOT_DIR);
    let entries = std::fs::read_dir(&dir).map_err(|error| format!("failed to list `{}`: {error}", dir.display()))?;
    let mut slots = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| format!("failed to list `{}`: {error}", dir.display()))?;
        let Some(mut slot) = entry.file_name().to_str().and_then(SlotFile::parse_name) else { continue };
        slot.bytes = entry.metadata().map(|metadata| metadata.len()).unwrap_or(0);
        slot.version =
            std::fs::File::open(entry.path()).ok().and_then(|mut file| read_osrel(&mut file).ok()).and_then(|osrel| os_release_value(&osrel, "VERSION"));
        slots.push(slot);
    }
    slots.sort_by_key(|slot| (slot.slot, slot.sequence));
    Ok(slots)
}

/// The `.osrel` section of a PE image (a UKI's os-release).
pub fn read_osrel(file: &mut (impl Read + std::io::Seek)) -> Result<String, String> {
    section(file, ".osrel").map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// The bytes of section `name` of a PE image, at most 1 MiB.
fn section(file: &mut (impl Read + std::io::Seek), name: &str) -> Result<Vec<u8>, String> {
    use std::io::SeekFrom;
    let mut read_at = |offset: u64, length: usize| -> Result<Vec<u8>, String> {
        let mut bytes = vec![0u8; length];
        file.seek(SeekFrom::Start(offset)).and_then(|_| file.read_exact(&mut bytes)).map_err(|error| format!("not a PE image: {error}"))?;
        Ok(bytes)
    };
    let dos = read_at(0, 64)?;
    if &dos[..2] != b"MZ" {
        return Err("not a PE image (no MZ header)".to_string());
    }
    let pe = u64::from(u32::from_le_bytes(dos[0x3c..0x40].try_into().expect("4 bytes")));
    let header = read_at(pe, 24)?;
    if &header[..4] != b"PE\0\0" {
        return Err("not a PE image (no PE signature)".to_string());
    }
    let sections = u16::from_le_bytes([header[6], header[7]]);
    let optional = u64::from(u16::from_le_bytes([header[20], header[21]]));
    let table = read_at(pe + 24 + optional, usize::from(sections) * 40)?;
    for entry in table.chunks_exact(40) {
        let entry_name = entry[..8].split(|&byte| byte == 0).next().unwrap_or(&[]);
        if entry_name == name.as_bytes() {
            let virtual_size = u32::from_le_bytes(entry[8..12].try_into().expect("4 bytes"));
            let raw_size = u32::from_le_bytes(entry[16..20].try_into().expect("4 bytes"));
            let offset = u32::from_le_bytes(entry[20..24].try_into().expect("4 bytes"));
            let length = virtual_size.min(raw_size).min(1 << 20) as usize;
            return read_at(u64::from(offset), length);
        }
    }
    Err(format!("the image has no {name} section"))
}

/// KEY's value in os-release text, unquoted.
pub fn os_release_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| line.strip_prefix(key)?.strip_prefix('=')).map(|value| value.trim().trim_matches('"').to_string())
}

/// Checks that `image` is an update this appliance may boot: a UKI of ml-defender (its
/// os-release says ID=mldefender; it has a kernel and an initramfs), with the SHA-256 the
/// operator expects (when given) and a valid signature by the release key. Returns its
/// version and SHA-256 (hex).
pub fn verify_update(image: &[u8], expected_sha256: Option<&str>, signature: &str, release_key: Option<&str>) -> Result<(String, String), String> {
    let sha256 = hex::encode(Sha256::digest(image));
    if let Some(expected) = expected_sha256 {
        if !expected.eq_ignore_ascii_case(&sha256) {
            return Err(format!("the image's SHA-256 is {sha256}, not the {expected} expected: it was damaged or replaced on the way"));
        }
    }
    let Some(release_key) = release_key else {
        return Err("image.release-public-key is not set: this appliance accepts no update".to_string());
    };
    let key = mld_model::signing::ModelPublicKey::from_base64(release_key).map_err(|error| format!("image.release-public-key: {error}"))?;
    let statement = format!("{SIGNED_STATEMENT_PREFIX}{sha256}");
    mld_model::signing::verify(&key, statement.as_bytes(), signature)
        .map_err(|error| format!("the signature is not the release key's ({}): {error}", key.id()))?;
    let mut cursor = std::io::Cursor::new(image);
    let osrel = read_osrel(&mut cursor).map_err(|error| format!("not a unified kernel image: {error}"))?;
    if os_release_value(&osrel, "ID").as_deref() != Some("mldefender") {
        return Err("not an ml-defender image: its os-release does not say ID=mldefender".to_string());
    }
    for name in [".linux", ".initrd"] {
        section(&mut cursor, name).map_err(|error| format!("not a unified kernel image: {error}"))?;
    }
    Ok((os_release_value(&osrel, "VERSION").unwrap_or_else(|| "unknown".to_string()), sha256))
}

/// Writes a verified update into the slot that is not `booted`, on trial with `tries`
/// boots: the slot's old image is removed, the new one written beside, synced, and
/// renamed to `mldefender-NEXT-SLOT+TRIES-0.efi`, where NEXT is one more than any sequence
/// on the ESP (so the boot loader tries it first). The booted slot is never touched.
pub fn stage(esp: &Path, image: &[u8], booted: char, tries: u32) -> Result<SlotFile, String> {
    let slots = list(esp)?;
    let target = if booted == 'a' { 'b' } else { 'a' };
    let Some(running) = slots.iter().find(|slot| slot.slot == booted) else {
        return Err(format!("slot {booted}, which is running, has no image on the ESP"));
    };
    if !running.blessed() {
        return Err(format!("slot {booted} is still on trial ({}): wait until it is blessed, or it falls back", running.state()));
    }
    let dir = esp.join(SLOT_DIR);
    let sequence = slots.iter().map(|slot| slot.sequence).max().unwrap_or(0) + 1;
    for old in slots.iter().filter(|slot| slot.slot == target) {
        std::fs::remove_file(dir.join(&old.file)).map_err(|error| format!("failed to remove the old image of slot {target} `{}`: {error}", old.file))?;
    }
    let incoming = dir.join(INCOMING);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&incoming)?;
        file.write_all(image)?;
        file.sync_all()
    };
    if let Err(error) = write() {
        let _ = std::fs::remove_file(&incoming);
        return Err(format!("failed to write the update to `{}`: {error}", incoming.display()));
    }
    let name = format!("mldefender-{sequence:06}-{target}+{tries}-0.efi");
    std::fs::rename(&incoming, dir.join(&name)).map_err(|error| format!("failed to rename the update to `{name}`: {error}"))?;
    sync_dir(&dir)?;
    let mut slot = SlotFile::parse_name(&name).expect("a slot name");
    slot.bytes = image.len() as u64;
    Ok(slot)
}

/// Blesses the slot file `file` (removes its boot counter). Returns the new name.
pub fn bless(esp: &Path, file: &str) -> Result<String, String> {
    let slot = SlotFile::parse_name(file).ok_or_else(|| format!("`{file}` is not a slot file"))?;
    let dir = esp.join(SLOT_DIR);
    let name = slot.blessed_name();
    std::fs::rename(dir.join(file), dir.join(&name)).map_err(|error| format!("failed to bless `{file}` (rename to `{name}`): {error}"))?;
    sync_dir(&dir)?;
    Ok(name)
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir).and_then(|dir| dir.sync_all()).map_err(|error| format!("failed to sync `{}`: {error}", dir.display()))?;
    nix::unistd::sync();
    Ok(())
}

/// The slot systemd-boot booted, from its `LoaderEntrySelected` EFI variable (the entry's
/// id: the slot file's name). `None` without EFI variables (a direct kernel boot) or
/// when the entry is not a slot file.
pub fn booted_slot(efivars: &Path) -> Option<char> {
    let entry = read_loader_variable(efivars, "LoaderEntrySelected")?;
    let name = entry.rsplit('\\').next().unwrap_or(&entry);
    let name = if name.ends_with(".efi") { name.to_string() } else { format!("{name}.efi") };
    SlotFile::parse_name(&name).map(|slot| slot.slot)
}

/// A systemd-boot EFI variable as text: efivarfs gives 4 bytes of attributes, then the
/// value, UTF-16LE with a NUL at the end.
pub fn read_loader_variable(efivars: &Path, name: &str) -> Option<String> {
    let bytes = std::fs::read(efivars.join(format!("{name}-{LOADER_VENDOR}"))).ok()?;
    let units: Vec<u16> = bytes.get(4..)?.chunks_exact(2).map(|pair| u16::from_le_bytes([pair[0], pair[1]])).take_while(|&unit| unit != 0).collect();
    String::from_utf16(&units).ok()
}

/// Where efivarfs is mounted.
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";

/// The slots as `update status` shows them, and which one runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotsReport {
    pub booted: Option<char>,
    pub slots: Vec<SlotFile>,
    /// What the appliance noticed at this boot: a fallback from a failed slot.
    pub notes: Vec<String>,
}

/// What the boot says about the slots: the booted slot on trial (to bless once healthy),
/// and a fallback (a newer slot whose tries ran out).
pub fn boot_notes(slots: &[SlotFile], booted: char) -> Vec<String> {
    let Some(running) = slots.iter().find(|slot| slot.slot == booted) else { return Vec::new() };
    slots
        .iter()
        .filter(|slot| slot.slot != booted && slot.sequence > running.sequence && slot.tries_left == Some(0))
        .map(|failed| {
            format!(
                "fell back: slot {} ({}) failed {} boots without getting ready; slot {} ({}) runs",
                failed.slot,
                failed.version.as_deref().unwrap_or("unknown version"),
                failed.tries_done,
                running.slot,
                running.version.as_deref().unwrap_or("unknown version")
            )
        })
        .collect()
}

/// The ESP's device: a path, or `PARTLABEL=NAME` found through sysfs.
pub fn esp_device(config: &mld_config::ImageConfig) -> Option<PathBuf> {
    mld_supervisor::init::resolve_device(Path::new(&config.esp_device))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_carry_the_sequence_the_slot_and_the_boot_counter() {
        let trial = SlotFile::parse_name("mldefender-000002-b+2-1.efi").expect("parsed");
        assert_eq!((trial.slot, trial.sequence, trial.tries_left, trial.tries_done), ('b', 2, Some(2), 1));
        assert_eq!(trial.blessed_name(), "mldefender-000002-b.efi");
        assert!(SlotFile::parse_name("mldefender-000001-a.efi").expect("parsed").blessed());
        assert_eq!(SlotFile::parse_name("mldefender-000003-a+0-3.efi").expect("parsed").tries_left, Some(0));
        for other in ["mldefender-1-a.efi", "mldefender-000001-c.efi", "other.efi", ".mldefender-update.tmp", "mldefender-000001-a+x.efi"] {
            assert_eq!(SlotFile::parse_name(other), None, "{other}");
        }
    }

    fn esp_with(files: &[&str]) -> tempfile::TempDir {
        let esp = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(esp.path().join(SLOT_DIR)).expect("slot dir");
        for file in files {
            std::fs::write(esp.path().join(SLOT_DIR).join(file), b"old image").expect("write");
        }
        esp
    }

    #[test]
    fn an_update_goes_into_the_other_slot_on_trial_and_newest_and_is_blessed_by_a_rename() {
        let esp = esp_with(&["mldefender-000001-a.efi", "mldefender-000002-b+0-3.efi"]);
        let staged = stage(esp.path(), b"new image", 'a', 3).expect("staged");
        assert_eq!(staged.file, "mldefender-000003-b+3-0.efi");
        let names: Vec<String> = list(esp.path()).expect("list").into_iter().map(|slot| slot.file).collect();
        assert_eq!(names, ["mldefender-000001-a.efi", "mldefender-000003-b+3-0.efi"], "the failed image of slot b is replaced, slot a untouched");
        assert_eq!(std::fs::read(esp.path().join(SLOT_DIR).join("mldefender-000001-a.efi")).expect("read"), b"old image");
        // A second update while b is on trial and a runs still goes to b.
        assert_eq!(bless(esp.path(), "mldefender-000003-b+3-0.efi").expect("blessed"), "mldefender-000003-b.efi");
        // Booted from b (blessed), the next update goes to a, with a higher sequence.
        assert_eq!(stage(esp.path(), b"newer", 'b', 2).expect("staged").file, "mldefender-000004-a+2-0.efi");
    }

    #[test]
    fn no_update_while_the_running_slot_is_on_trial() {
        let esp = esp_with(&["mldefender-000001-a.efi", "mldefender-000002-b+2-1.efi"]);
        let refused = stage(esp.path(), b"new image", 'b', 3).expect_err("refused");
        assert!(refused.contains("still on trial"), "{refused}");
        assert_eq!(list(esp.path()).expect("list").len(), 2, "nothing removed");
    }

    #[test]
    fn a_fallback_is_noticed_from_the_names() {
        let esp = esp_with(&["mldefender-000001-a.efi", "mldefender-000002-b+0-3.efi"]);
        let slots = list(esp.path()).expect("list");
        let notes = boot_notes(&slots, 'a');
        assert_eq!(notes.len(), 1);
        assert!(notes[0].starts_with("fell back: slot b"), "{notes:?}");
        assert!(notes[0].contains("failed 3 boots"), "{notes:?}");
        assert!(boot_notes(&slots, 'b').is_empty());
    }

    #[test]
    fn loader_variables_are_utf16_after_four_bytes_of_attributes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut bytes = vec![6, 0, 0, 0];
        for unit in "mldefender-000002-b+2-1.efi".encode_utf16().chain([0]) {
            bytes.extend_from_slice(&unit.to_le_bytes());
        }
        std::fs::write(dir.path().join(format!("LoaderEntrySelected-{LOADER_VENDOR}")), bytes).expect("write");
        assert_eq!(booted_slot(dir.path()), Some('b'));
        assert_eq!(booted_slot(&dir.path().join("none")), None);
    }
}

/// One mount of the ESP at a time (blessing in the loop, an update in its thread).
static ESP_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The running appliance image's slots: found at start when the ESP is there (the image;
/// `None` elsewhere), blessed once healthy, updated on request.
#[derive(Debug, Clone)]
pub struct ImageSlots {
    pub config: mld_config::ImageConfig,
    device: PathBuf,
    /// The slot systemd-boot booted (`None`: not known, no updates).
    pub booted: Option<char>,
    /// The booted slot's file while it is on trial (to bless).
    trial: Option<String>,
    pub notes: Vec<String>,
}

impl ImageSlots {
    /// Looks at the ESP once: which slot runs, whether it is on trial, whether the boot
    /// fell back from a newer slot. Mounts efivarfs first where the firmware is UEFI.
    pub fn at_start(config: &mld_config::ImageConfig) -> Option<ImageSlots> {
        let device = esp_device(config)?;
        mount_efivars();
        let booted = booted_slot(Path::new(EFIVARS));
        let mut slots = ImageSlots { config: config.clone(), device, booted, trial: None, notes: Vec::new() };
        match slots.with_esp(list) {
            Ok(files) => {
                if let Some(booted) = booted {
                    slots.trial = files.iter().find(|file| file.slot == booted && !file.blessed()).map(|file| file.file.clone());
                    slots.notes = boot_notes(&files, booted);
                }
                let running = files.iter().find(|file| Some(file.slot) == booted);
                tracing::info!(
                    slot = %booted.map_or("unknown (no EFI variables)".to_string(), String::from),
                    version = %running.and_then(|file| file.version.clone()).unwrap_or_default(),
                    state = %running.map_or("unknown".to_string(), SlotFile::state),
                    "image slot booted"
                );
            }
            Err(error) => tracing::error!(error = %error, "cannot read the image slots on the ESP"),
        }
        Some(slots)
    }

    /// Runs `work` on the ESP mounted at `image.esp-mount`, then unmounts it (the ESP is
    /// FAT: it stays mounted only while it is written).
    pub fn with_esp<T>(&self, work: impl FnOnce(&Path) -> Result<T, String>) -> Result<T, String> {
        use nix::mount::{mount, umount2, MntFlags, MsFlags};
        let _guard = ESP_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let target = &self.config.esp_mount;
        // Parents pass-through (0755) whatever the umask: a parent made 0700 here would
        // shut the tasks out of a runtime directory created after it.
        mld_supervisor::files::create_dirs(target, 0o700).map_err(|error| format!("failed to create `{}`: {error}", target.display()))?;
        mount(Some(&self.device), target, Some("vfat"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, Some("umask=0077"))
            .map_err(|error| format!("failed to mount the ESP `{}` on `{}`: {error}", self.device.display(), target.display()))?;
        let outcome = work(target);
        nix::unistd::sync();
        if let Err(error) = umount2(target, MntFlags::empty()) {
            tracing::warn!(error = %error, mount = %target.display(), "failed to unmount the ESP");
        }
        outcome
    }

    /// Blesses the booted slot if it is on trial and the appliance has been healthy for
    /// `image.bless-after-secs` (`healthy_for`). Returns what it did, once.
    pub fn bless_if_due(&mut self, healthy_for: Option<std::time::Duration>) -> Option<Result<String, String>> {
        let file = self.trial.clone()?;
        if healthy_for? < self.config.bless_after {
            return None;
        }
        self.trial = None;
        Some(self.with_esp(|esp| bless(esp, &file)))
    }

    /// True while the booted slot is on trial (not blessed yet).
    pub fn on_trial(&self) -> bool {
        self.trial.is_some()
    }

    /// `update status`.
    pub fn report(&self) -> Result<SlotsReport, String> {
        Ok(SlotsReport { booted: self.booted, slots: self.with_esp(list)?, notes: self.notes.clone() })
    }

    /// `update apply`: verifies the image (before anything is written), then writes it
    /// into the other slot on trial.
    pub fn apply(&self, image: &[u8], expected_sha256: Option<&str>, signature: &str) -> Result<String, String> {
        let (version, sha256) = verify_update(image, expected_sha256, signature, self.config.release_public_key.as_deref())?;
        let Some(booted) = self.booted else {
            return Err("cannot tell which slot runs (no LoaderEntrySelected EFI variable): nothing written".to_string());
        };
        let staged = self.with_esp(|esp| stage(esp, image, booted, self.config.boot_tries))?;
        Ok(format!(
            "version {version} (sha256 {sha256}, signed by the release key) written to slot {} as {}: it boots next, on trial for {} boots",
            staged.slot, staged.file, self.config.boot_tries
        ))
    }

    /// The largest update accepted: half the ESP.
    pub fn max_update_bytes(&self) -> u64 {
        self.config.esp_mib << 19
    }
}

fn mount_efivars() {
    use nix::mount::{mount, MsFlags};
    if !Path::new("/sys/firmware/efi").exists() || Path::new(EFIVARS).join(format!("LoaderEntrySelected-{LOADER_VENDOR}")).exists() {
        return;
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY;
    if let Err(error) = mount(Some("efivarfs"), EFIVARS, Some("efivarfs"), flags, None::<&str>) {
        tracing::warn!(error = %error, "failed to mount efivarfs: the booted slot is unknown");
    }
}
