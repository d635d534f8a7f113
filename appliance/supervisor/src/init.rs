//! PID 1 duties: the supervisor as init of the appliance image mounts what the system
//! needs and, on shutdown, syncs and powers off.

use std::path::Path;

use nix::mount::{mount, MsFlags};

/// True when this process is PID 1.
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Mounts /proc, /sys, /dev, /run, /sys/fs/bpf and /sys/fs/cgroup where they are not
/// mounted yet. Returns what it mounted; errors name the mount point.
pub fn mount_system() -> Result<Vec<&'static str>, String> {
    let mounts: [(&str, &str, &str, MsFlags, Option<&str>); 6] = [
        ("proc", "/proc", "proc", MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None),
        ("sysfs", "/sys", "sysfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None),
        ("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, Some("mode=0755")),
        ("tmpfs", "/run", "tmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0755")),
        ("bpf", "/sys/fs/bpf", "bpf", MsFlags::empty(), None),
        ("cgroup2", "/sys/fs/cgroup", "cgroup2", MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None),
    ];
    let mut mounted = Vec::new();
    for (source, target, fstype, flags, data) in mounts {
        if is_mountpoint(target) {
            continue;
        }
        std::fs::create_dir_all(target).map_err(|error| format!("failed to create mount point `{target}`: {error}"))?;
        mount(Some(source), target, Some(fstype), flags, data).map_err(|error| format!("failed to mount {fstype} on `{target}`: {error}"))?;
        mounted.push(target);
    }
    Ok(mounted)
}

fn is_mountpoint(path: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(metadata) = std::fs::metadata(path) else { return false };
    let Some(parent) = Path::new(path).parent() else { return true };
    std::fs::metadata(parent).map(|parent| parent.dev() != metadata.dev()).unwrap_or(false)
}

/// What the data device holds, from its first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataContents {
    /// All zeros: never formatted (the image's first boot).
    Blank,
    /// An ext2/3/4 file system with this label.
    Ext { label: String },
    /// Anything else, described.
    Other(String),
}

/// Reads the start of `device` (the first 64 KiB) and says what it holds.
pub fn inspect_data(device: &Path) -> Result<DataContents, String> {
    use std::io::Read;
    let mut head = vec![0u8; 64 * 1024];
    let mut file = std::fs::File::open(device).map_err(|error| format!("failed to open `{}`: {error}", device.display()))?;
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) => return Err(format!("failed to read `{}`: {error}", device.display())),
        }
    }
    Ok(classify_data(&head[..filled]))
}

/// [`inspect_data`] on bytes already read.
pub fn classify_data(head: &[u8]) -> DataContents {
    if head.iter().all(|&byte| byte == 0) {
        return DataContents::Blank;
    }
    // The ext superblock starts at 1024: s_magic at +56, s_volume_name (16 bytes) at +120.
    if head.len() >= 1024 + 136 && head[1024 + 56..1024 + 58] == [0x53, 0xEF] {
        let name = &head[1024 + 120..1024 + 136];
        let end = name.iter().position(|&byte| byte == 0).unwrap_or(name.len());
        return DataContents::Ext { label: String::from_utf8_lossy(&name[..end]).into_owned() };
    }
    let signatures: [(usize, &[u8], &str); 5] = [
        (0x52, b"FAT32", "a FAT32 file system"),
        (0x36, b"FAT", "a FAT file system"),
        (0, b"XFSB", "an XFS file system"),
        (0x10040, b"_BHRfS_M", "a btrfs file system"),
        (0xff6, b"SWAPSPACE2", "swap space"),
    ];
    for (offset, magic, what) in signatures {
        if head.get(offset..offset + magic.len()) == Some(magic) {
            return DataContents::Other(what.to_string());
        }
    }
    if head.get(0x200..0x208) == Some(b"EFI PART") {
        return DataContents::Other("a partition table (a whole disk, not a partition)".to_string());
    }
    DataContents::Other("data that is not a file system this appliance knows".to_string())
}

/// `PARTLABEL=NAME`: the block device whose GPT partition name is NAME (sysfs `PARTNAME`);
/// a path: itself. `None`: no such partition (yet).
pub fn resolve_device(spec: &Path) -> Option<std::path::PathBuf> {
    let Some(label) = spec.to_str().and_then(|spec| spec.strip_prefix("PARTLABEL=")) else {
        return spec.exists().then(|| spec.to_path_buf());
    };
    let entries = std::fs::read_dir("/sys/class/block").ok()?;
    let mut names: Vec<String> = entries.filter_map(|entry| entry.ok()?.file_name().into_string().ok()).collect();
    names.sort();
    names.into_iter().find_map(|name| {
        let uevent = std::fs::read_to_string(format!("/sys/class/block/{name}/uevent")).ok()?;
        let matches = uevent.lines().any(|line| line.strip_prefix("PARTNAME=") == Some(label));
        let device = std::path::PathBuf::from(format!("/dev/{name}"));
        (matches && device.exists()).then_some(device)
    })
}

/// The persistent data device, as it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataOutcome {
    /// Mounted; `formatted` when this boot made its file system (the first boot).
    Mounted { device: std::path::PathBuf, formatted: bool },
    /// The device never appeared: no persistent storage.
    Absent,
}

/// Finds the persistent data device (waiting at most `data.wait` for its driver), formats
/// it when it is blank and `data.format_if_blank` says so, checks its label, and mounts it
/// at `data.mount`. A device that holds something else is refused and never formatted: an
/// error says what it holds. Already mounted there: fine.
pub fn prepare_data(data: &mld_config::DataMount) -> Result<DataOutcome, String> {
    let deadline = std::time::Instant::now() + data.wait;
    let device = loop {
        if let Some(device) = resolve_device(&data.device) {
            break device;
        }
        if std::time::Instant::now() >= deadline {
            return Ok(DataOutcome::Absent);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let target = data.mount.as_path();
    if target.to_str().is_some_and(is_mountpoint) {
        return Ok(DataOutcome::Mounted { device, formatted: false });
    }
    let mut formatted = false;
    match inspect_data(&device)? {
        DataContents::Blank if data.format_if_blank => {
            format_ext4(&device, &data.label)?;
            formatted = true;
        }
        DataContents::Blank => {
            return Err(format!("`{}` is blank and system.data-format = \"never\": nothing was formatted", device.display()));
        }
        DataContents::Ext { label } if data.label.is_empty() || label == data.label => {}
        DataContents::Ext { label } => {
            return Err(format!(
                "`{}` holds an ext file system labelled \"{label}\", not \"{}\": it is not this appliance's data partition, and nothing was formatted over it (wipe its first MiB to let the appliance format it)",
                device.display(),
                data.label
            ));
        }
        DataContents::Other(what) => {
            return Err(format!(
                "`{}` holds {what}: it is not this appliance's data partition, and nothing was formatted over it (wipe its first MiB to let the appliance format it)",
                device.display()
            ));
        }
    }
    mount_at(&device, &data.fstype, target)?;
    Ok(DataOutcome::Mounted { device, formatted })
}

/// mke2fs (shipped in the image) makes an ext4 file system labelled `label` on `device`.
fn format_ext4(device: &Path, label: &str) -> Result<(), String> {
    let mke2fs = ["/usr/sbin/mke2fs", "/sbin/mke2fs"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .ok_or_else(|| format!("cannot format `{}`: mke2fs is not in this image", device.display()))?;
    let output = std::process::Command::new(mke2fs)
        .args(["-q", "-F", "-t", "ext4", "-L", label, "-E", "root_owner=0:0"])
        .arg(device)
        .env("MKE2FS_CONFIG", "/etc/mke2fs.conf")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|error| format!("failed to run {mke2fs} on `{}`: {error}", device.display()))?;
    if !output.status.success() {
        return Err(format!("{mke2fs} failed on `{}` ({}): {}", device.display(), output.status, String::from_utf8_lossy(&output.stderr).trim()));
    }
    Ok(())
}

fn mount_at(device: &Path, fstype: &str, target: &Path) -> Result<(), String> {
    // Missing parents get the pass-through mode whatever the umask (077 here).
    crate::files::create_dirs(target, 0o755).map_err(|error| format!("failed to create mount point `{}`: {error}", target.display()))?;
    mount(Some(device), target, Some(fstype), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None::<&str>)
        .map_err(|error| format!("failed to mount {fstype} `{}` on `{}`: {error}", device.display(), target.display()))?;
    // The tasks pass through the data root to their own directories: root's, 0755,
    // whatever mode the file system was made with (set through an O_NOFOLLOW fd).
    let root = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW).open(target)
    }
    .map_err(|error| format!("failed to open `{}`: {error}", target.display()))?;
    nix::unistd::fchown(&root, Some(nix::unistd::Uid::from_raw(0)), Some(nix::unistd::Gid::from_raw(0)))
        .map_err(|error| format!("failed to change the owner of `{}`: {error}", target.display()))?;
    root.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(|error| format!("failed to set the mode of `{}`: {error}", target.display()))?;
    Ok(())
}

/// Flushes file systems and powers the machine off. Only returns on failure.
pub fn power_off() -> String {
    nix::unistd::sync();
    match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF) {
        Ok(never) => match never {},
        Err(error) => format!("failed to power off: {error}"),
    }
}

/// Flushes file systems and restarts the machine. Only returns on failure.
pub fn reboot() -> String {
    nix::unistd::sync();
    match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT) {
        Ok(never) => match never {},
        Err(error) => format!("failed to reboot: {error}"),
    }
}

/// Makes Ctrl-Alt-Del send SIGINT to PID 1 (an orderly shutdown) instead of an
/// immediate reboot.
pub fn disable_ctrl_alt_del() -> Result<(), String> {
    nix::sys::reboot::set_cad_enabled(false).map_err(|error| format!("failed to disable Ctrl-Alt-Del: {error}"))
}

/// Loads kernel modules `names` from `dir/<name>.ko`, in order; a module already
/// loaded is fine, and so is one that finds nothing to drive here (ENODEV: `efivarfs`
/// without UEFI, a NIC driver without its NIC), which is left out with a warning. Returns
/// the names loaded.
pub fn load_modules(dir: &Path, names: &[String]) -> Result<Vec<String>, String> {
    let mut loaded = Vec::new();
    for name in names {
        let path = dir.join(format!("{name}.ko"));
        let file = std::fs::File::open(&path).map_err(|error| format!("failed to open module `{}`: {error}", path.display()))?;
        let params = c"";
        #[allow(unsafe_code)]
        // SAFETY: finit_module(2) with an open fd and a NUL-terminated empty parameter string.
        let result = unsafe { libc::syscall(libc::SYS_finit_module, std::os::fd::AsRawFd::as_raw_fd(&file), params.as_ptr(), 0) };
        if result < 0 {
            let error = std::io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EEXIST) => {}
                Some(libc::ENODEV) => tracing::warn!(module = %name, "kernel module left out: nothing for it to drive on this machine"),
                _ => return Err(format!("failed to load module `{}`: {error}", path.display())),
            }
        } else {
            loaded.push(name.clone());
        }
    }
    Ok(loaded)
}

/// Sets network interface `name` up (like `ip link set NAME up`).
pub fn set_link_up(name: &str) -> Result<(), String> {
    let fail = |what: &str, error: std::io::Error| format!("failed to {what} interface `{name}`: {error}");
    if name.len() >= libc::IFNAMSIZ {
        return Err(format!("interface name `{name}` is too long"));
    }
    #[allow(unsafe_code)]
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS on a datagram socket with a zeroed, NUL-terminated
    // ifreq that outlives both calls.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if socket < 0 {
            return Err(fail("open a socket for", std::io::Error::last_os_error()));
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
            *slot = byte as libc::c_char;
        }
        let mut result = libc::ioctl(socket, libc::SIOCGIFFLAGS, &mut request);
        if result >= 0 {
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            result = libc::ioctl(socket, libc::SIOCSIFFLAGS, &request);
        }
        let error = std::io::Error::last_os_error();
        libc::close(socket);
        if result < 0 {
            return Err(fail("bring up", error));
        }
    }
    Ok(())
}

/// Sets IPv4 `address/prefix` on interface `name` (like `ip addr add`; replaces the
/// interface's primary address).
pub fn set_address(name: &str, address: std::net::Ipv4Addr, prefix: u8) -> Result<(), String> {
    let fail = |what: &str, error: std::io::Error| format!("failed to set {what} {address}/{prefix} on interface `{name}`: {error}");
    if name.len() >= libc::IFNAMSIZ {
        return Err(format!("interface name `{name}` is too long"));
    }
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
    #[allow(unsafe_code)]
    // SAFETY: SIOCSIFADDR/SIOCSIFNETMASK on a datagram socket with a zeroed ifreq whose name
    // is NUL-terminated and whose address is a sockaddr_in, both outliving the calls.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if socket < 0 {
            return Err(fail("the address", std::io::Error::last_os_error()));
        }
        let mut outcome = Ok(());
        for (request_code, value, what) in [(libc::SIOCSIFADDR, u32::from(address), "the address"), (libc::SIOCSIFNETMASK, mask, "the netmask of")] {
            let mut request: libc::ifreq = std::mem::zeroed();
            for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
                *slot = byte as libc::c_char;
            }
            let socket_address = &mut request.ifr_ifru.ifru_addr as *mut libc::sockaddr as *mut libc::sockaddr_in;
            (*socket_address).sin_family = libc::AF_INET as libc::sa_family_t;
            (*socket_address).sin_addr.s_addr = value.to_be();
            if libc::ioctl(socket, request_code, &request) < 0 {
                outcome = Err(fail(what, std::io::Error::last_os_error()));
                break;
            }
        }
        libc::close(socket);
        outcome
    }
}

/// Turns IPv4 forwarding on (the appliance routes between its interfaces).
pub fn enable_ip_forward() -> Result<(), String> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|error| format!("failed to turn on IPv4 forwarding (/proc/sys/net/ipv4/ip_forward): {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_of_a_device_says_whether_it_may_be_formatted() {
        assert_eq!(classify_data(&[0u8; 65536]), DataContents::Blank);
        let mut ext = vec![0u8; 65536];
        ext[1024 + 56] = 0x53;
        ext[1024 + 57] = 0xEF;
        ext[1024 + 120..1024 + 128].copy_from_slice(b"mld-data");
        assert_eq!(classify_data(&ext), DataContents::Ext { label: "mld-data".to_string() });
        let mut fat = vec![0u8; 65536];
        fat[0x52..0x57].copy_from_slice(b"FAT32");
        assert_eq!(classify_data(&fat), DataContents::Other("a FAT32 file system".to_string()));
        // One stray byte anywhere in the first 64 KiB: not blank, never formatted.
        let mut stray = vec![0u8; 65536];
        stray[40_000] = 1;
        assert!(matches!(classify_data(&stray), DataContents::Other(_)));
    }

    fn data(device: &Path, format_if_blank: bool) -> mld_config::DataMount {
        mld_config::DataMount {
            device: device.to_path_buf(),
            format_if_blank,
            label: "mld-data".to_string(),
            fstype: "ext4".to_string(),
            mount: device.with_extension("mnt"),
            wait: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn a_partition_that_is_not_ours_is_refused_and_never_formatted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let device = dir.path().join("partition");
        let mut foreign = vec![0u8; 1 << 20];
        foreign[0x52..0x57].copy_from_slice(b"FAT32");
        std::fs::write(&device, &foreign).expect("write");
        let refused = prepare_data(&data(&device, true)).expect_err("refused");
        assert!(refused.contains("holds a FAT32 file system") && refused.contains("nothing was formatted"), "{refused}");
        assert_eq!(std::fs::read(&device).expect("read"), foreign, "not a byte changed");
        let mut ext = vec![0u8; 1 << 20];
        ext[1024 + 56..1024 + 58].copy_from_slice(&[0x53, 0xEF]);
        ext[1024 + 120..1024 + 124].copy_from_slice(b"home");
        std::fs::write(&device, &ext).expect("write");
        let refused = prepare_data(&data(&device, true)).expect_err("refused");
        assert!(refused.contains("labelled \"home\", not \"mld-data\""), "{refused}");
        // Blank, but formatting is not allowed: refused too.
        std::fs::write(&device, vec![0u8; 1 << 20]).expect("write");
        assert!(prepare_data(&data(&device, false)).expect_err("refused").contains("system.data-format = \"never\""));
        // A device that never appears: no persistent storage, not an error.
        assert_eq!(prepare_data(&data(&dir.path().join("absent"), true)), Ok(DataOutcome::Absent));
    }
}
