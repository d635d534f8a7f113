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

/// Mounts the persistent data device at `target` once it appears (its driver probes
/// after the modules are loaded), waiting at most `wait`. `Ok(false)`: the device never
/// appeared (no persistent storage); an error names the device and the mount point.
/// Already mounted there: `Ok(true)`.
pub fn mount_data(device: &Path, fstype: &str, target: &Path, wait: std::time::Duration) -> Result<bool, String> {
    let deadline = std::time::Instant::now() + wait;
    while !device.exists() {
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if target.to_str().is_some_and(is_mountpoint) {
        return Ok(true);
    }
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
    Ok(true)
}

/// Flushes file systems and powers the machine off. Only returns on failure.
pub fn power_off() -> String {
    nix::unistd::sync();
    match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF) {
        Ok(never) => match never {},
        Err(error) => format!("failed to power off: {error}"),
    }
}

/// Makes Ctrl-Alt-Del send SIGINT to PID 1 (an orderly shutdown) instead of an
/// immediate reboot.
pub fn disable_ctrl_alt_del() -> Result<(), String> {
    nix::sys::reboot::set_cad_enabled(false).map_err(|error| format!("failed to disable Ctrl-Alt-Del: {error}"))
}

/// Loads kernel modules `names` from `dir/<name>.ko`, in order; a module already
/// loaded is fine. Returns the names loaded.
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
            if error.raw_os_error() != Some(libc::EEXIST) {
                return Err(format!("failed to load module `{}`: {error}", path.display()));
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
