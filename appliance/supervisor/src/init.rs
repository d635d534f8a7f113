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

/// Flushes file systems and powers the machine off. Only returns on failure.
pub fn power_off() -> String {
    nix::unistd::sync();
    match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF) {
        Ok(never) => match never {},
        Err(error) => format!("failed to power off: {error}"),
    }
}
