//! Files the supervisor makes and gives to tasks, without ever following a link.
//!
//! The supervisor runs with umask 077 ([`SUPERVISOR_UMASK`]): whatever it creates is
//! private unless a mode is set on purpose. Ownership and modes are changed only through
//! fds opened with `O_NOFOLLOW` (`fchown`, `fchmod`; `fchownat(AT_EMPTY_PATH)` on an
//! `O_PATH` fd for sockets), so a symbolic link put in the place of a path is refused
//! instead of redirecting a chown or chmod to another file.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::fcntl::AtFlags;
use nix::unistd::{Gid, Uid};

/// The supervisor's umask: what it creates is its own unless given on purpose.
pub const SUPERVISOR_UMASK: u32 = 0o077;

/// Mode of the directories [`create_dirs`] makes above the one asked for: others must be
/// able to pass through them to reach a task's directory or socket.
pub const PASS_THROUGH_MODE: u32 = 0o755;

/// Replaces `path` with `bytes` whole: written to a new file beside it with `mode`
/// (`O_NOFOLLOW`, `O_EXCL`), synced, renamed into place, and the directory synced. A
/// reader sees the old file or the new one, never a part; a crash leaves one of them.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write;
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).custom_flags(libc::O_NOFOLLOW).open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Sets the process umask; returns the previous one.
pub fn set_umask(mask: u32) -> u32 {
    // mode_t is u32 on Linux, the only target.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask)).bits()
}

/// Creates `path` and its missing parents. Each directory made here gets an explicit mode
/// whatever the umask: `mode` for `path` itself, [`PASS_THROUGH_MODE`] for the parents.
/// Directories that already exist are left as they are.
pub fn create_dirs(path: &Path, mode: u32) -> io::Result<()> {
    let mut missing: Vec<&Path> = path.ancestors().take_while(|ancestor| !ancestor.as_os_str().is_empty() && !ancestor.exists()).collect();
    missing.reverse();
    for dir in missing {
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(annotate(error, "create directory", dir)),
        }
        let wanted = if dir == path { mode } else { PASS_THROUGH_MODE };
        open_dir(dir)?.set_permissions(Permissions::from_mode(wanted)).map_err(|error| annotate(error, "set the mode of", dir))?;
    }
    Ok(())
}

/// Gives a directory to a user: owner, group and mode, set through an fd opened with
/// `O_DIRECTORY | O_NOFOLLOW` (a link in its place is refused).
pub fn give_dir(path: &Path, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    let dir = open_dir(path)?;
    nix::unistd::fchown(&dir, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(|errno| annotate(errno.into(), "change the owner of", path))?;
    dir.set_permissions(Permissions::from_mode(mode)).map_err(|error| annotate(error, "set the mode of", path))
}

/// Gives a Unix socket's path to a group, through an `O_PATH | O_NOFOLLOW` fd that must be
/// a socket (a link or another file in its place is refused). Its mode is set at bind time
/// (see [`with_umask`]).
pub fn give_socket_to_group(path: &Path, gid: u32) -> io::Result<()> {
    let socket = OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_NOFOLLOW).open(path).map_err(|error| annotate(error, "open", path))?;
    let file_type = socket.metadata().map_err(|error| annotate(error, "stat", path))?.file_type();
    if !file_type.is_socket() {
        return Err(annotate(io::Error::new(io::ErrorKind::InvalidInput, "not a socket"), "change the group of", path));
    }
    nix::unistd::fchownat(&socket, "", None, Some(Gid::from_raw(gid)), AtFlags::AT_EMPTY_PATH)
        .map_err(|errno| annotate(errno.into(), "change the group of", path))
}

/// Runs `make` with the umask that gives files it creates exactly `mode` (a socket's mode
/// is set by `bind` from the umask), then restores the previous umask. The supervisor's
/// start-up is single-threaded, so nothing else creates files meanwhile.
pub fn with_umask<T>(mode: u32, make: impl FnOnce() -> T) -> T {
    let previous = set_umask(!mode & 0o777);
    let made = make();
    set_umask(previous);
    made
}

fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW).open(path).map_err(|error| annotate(error, "open directory", path))
}

/// The io::Error with the operation and path in its message (io::Error has no context).
fn annotate(error: io::Error, operation: &str, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("failed to {operation} `{}`: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// The umask is the process's: tests that change it take turns.
    static UMASK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).expect("stat").mode() & 0o7777
    }

    #[test]
    fn created_directories_get_their_modes_whatever_the_umask() {
        let dir = tempfile::tempdir().expect("temp dir");
        let leaf = dir.path().join("a/b/c");
        let _umask = UMASK.lock().expect("umask lock");
        let previous = set_umask(0o077);
        let created = create_dirs(&leaf, 0o750);
        set_umask(previous);
        created.expect("create");
        assert_eq!(mode_of(&dir.path().join("a")), 0o755);
        assert_eq!(mode_of(&dir.path().join("a/b")), 0o755);
        assert_eq!(mode_of(&leaf), 0o750);
        // Existing directories are left alone.
        std::fs::set_permissions(&leaf, Permissions::from_mode(0o711)).expect("chmod");
        create_dirs(&leaf, 0o700).expect("again");
        assert_eq!(mode_of(&leaf), 0o711);
    }

    #[test]
    fn links_are_never_followed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("target");
        std::fs::create_dir(&target).expect("mkdir");
        std::fs::set_permissions(&target, Permissions::from_mode(0o700)).expect("chmod");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let own = nix::unistd::getuid().as_raw();
        let group = nix::unistd::getgid().as_raw();
        let error = give_dir(&link, own, group, 0o777).expect_err("a link");
        assert!(error.to_string().contains("link"), "{error}");
        assert_eq!(mode_of(&target), 0o700, "the link's target was changed");
        give_dir(&target, own, group, 0o750).expect("the directory itself");
        assert_eq!(mode_of(&target), 0o750);

        // A socket's group: a link to a socket, or a plain file, is refused.
        let socket_path = dir.path().join("s.sock");
        let _umask = UMASK.lock().expect("umask lock");
        let _listener = with_umask(0o660, || std::os::unix::net::UnixListener::bind(&socket_path)).expect("bind");
        assert_eq!(mode_of(&socket_path), 0o660);
        give_socket_to_group(&socket_path, group).expect("a socket");
        let socket_link = dir.path().join("l.sock");
        std::os::unix::fs::symlink(&socket_path, &socket_link).expect("symlink");
        assert!(give_socket_to_group(&socket_link, group).is_err());
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"").expect("write");
        assert!(give_socket_to_group(&plain, group).is_err());
    }
}
