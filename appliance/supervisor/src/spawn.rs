//! Starting a task process with exactly its privileges.
//!
//! Between fork and exec (in `pre_exec`), the child: joins its cgroup, moves the fds it
//! is given to fixed numbers (3, 4, ...; every other fd is close-on-exec), sets its umask
//! (022, not the supervisor's 077), sets `no_new_privs`, drops supplementary groups,
//! switches to its gid and uid, keeps CAP_BPF only where the kernel needs it, and last
//! asks for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`), then checks that its
//! parent is still the supervisor that forked it: a task never outlives its supervisor
//! holding sockets or keys. uid 0 and gid 0 are refused before anything is forked. The supervisor's event loop is
//! single-threaded, so nothing in the child can inherit a held lock; the closure still
//! only makes system calls on values prepared before the fork.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// First fd number given to a task (0, 1, 2 are stdio).
pub const FIRST_TASK_FD: RawFd = 3;

/// A task's umask. The supervisor's own (077) would make the log task's files unreadable
/// to the ingest task, which reads them as "other" through the log directory's group;
/// the tasks' directories (0700, the log directory 0750) keep everyone else out.
pub const TASK_UMASK: libc::mode_t = 0o022;

const CAP_BPF: u32 = 39;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const PR_CAP_AMBIENT: libc::c_int = 47;
const PR_CAP_AMBIENT_RAISE: libc::c_ulong = 2;

/// Everything needed to start one task process.
#[derive(Debug)]
pub struct TaskSpawn<'a> {
    pub exe: &'a Path,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub uid: u32,
    pub gid: u32,
    /// Keep CAP_BPF (kernels before 6.5 need it for map operations through an fd).
    pub keep_cap_bpf: bool,
    /// fds to hand over, in order: the first becomes 3, the next 4, ...
    pub fds: Vec<BorrowedFd<'a>>,
    /// The task's cgroup.procs, opened for writing, when it has a cgroup.
    pub cgroup_procs: Option<OwnedFd>,
    pub working_dir: PathBuf,
}

/// True when this kernel needs CAP_BPF for map operations through an open fd (before 6.5).
pub fn kernel_needs_cap_bpf_for_map_fds() -> bool {
    let Ok(uname) = nix::sys::utsname::uname() else { return true };
    let release = uname.release().to_string_lossy().into_owned();
    let mut numbers = release.split(|c: char| !c.is_ascii_digit()).filter_map(|part| part.parse::<u32>().ok());
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (major, minor) < (6, 5)
}

/// Starts the task. The child's stdout is discarded; stderr is shared with the
/// supervisor (its log).
pub fn spawn(task: TaskSpawn<'_>) -> io::Result<Child> {
    // The configuration check refuses root already; this is the last line of defence.
    if task.uid == 0 || task.gid == 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("refusing to start a task as uid {} gid {}: tasks never run as root or with group root", task.uid, task.gid),
        ));
    }
    let mut command = Command::new(task.exe);
    command.args(&task.args).env_clear().stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
    command.current_dir(&task.working_dir);
    for (key, value) in &task.env {
        command.env(key, value);
    }
    for key in ["PATH", "RUST_BACKTRACE", "RUST_LOG"] {
        if let Some(value) = std::env::var_os(key) {
            command.env(key, value);
        }
    }
    // Prepared before the fork: plain integers only.
    let sources: Vec<RawFd> = task.fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let cgroup_procs: Option<RawFd> = task.cgroup_procs.as_ref().map(|fd| fd.as_raw_fd());
    let (uid, gid, keep_cap_bpf) = (task.uid, task.gid, task.keep_cap_bpf);
    // The supervisor's pid, read before the fork: the child compares its parent with it.
    let supervisor_pid = std::process::id() as libc::pid_t;
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked child before exec. It calls only
    // async-signal-safe system calls (write, fcntl, dup, dup2, umask, prctl, setgroups,
    // setresgid, setresuid, capset, getppid, _exit) on integers captured by copy, and
    // allocates nothing.
    unsafe {
        command.pre_exec(move || child_setup(&sources, cgroup_procs, uid, gid, keep_cap_bpf, supervisor_pid));
    }
    let child = command.spawn();
    drop(task.cgroup_procs);
    child
}

/// The child side; see [`spawn`]. Runs between fork and exec.
fn child_setup(sources: &[RawFd], cgroup_procs: Option<RawFd>, uid: u32, gid: u32, keep_cap_bpf: bool, supervisor_pid: libc::pid_t) -> io::Result<()> {
    let check = |result: libc::c_int| if result < 0 { Err(io::Error::last_os_error()) } else { Ok(()) };
    #[allow(unsafe_code)]
    // SAFETY: plain system calls on integers; buffers are stack arrays that outlive the calls.
    unsafe {
        if let Some(fd) = cgroup_procs {
            // "0" moves the writing process into the group.
            if libc::write(fd, b"0".as_ptr().cast(), 1) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // Move every source out of the target range first, so that no dup2 overwrites a
        // source still to be moved.
        let mut moved = [0 as RawFd; 16];
        if sources.len() > moved.len() {
            return Err(io::Error::from_raw_os_error(libc::E2BIG));
        }
        for (index, source) in sources.iter().enumerate() {
            let high = libc::fcntl(*source, libc::F_DUPFD_CLOEXEC, 64);
            check(high)?;
            moved[index] = high;
        }
        for (index, high) in moved.iter().take(sources.len()).enumerate() {
            // dup2 clears close-on-exec on the new fd: these, and stdio, are all the child keeps.
            check(libc::dup2(*high, FIRST_TASK_FD + index as RawFd))?;
        }
        libc::umask(TASK_UMASK);
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        if keep_cap_bpf {
            check(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0))?;
        }
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(gid, gid, gid))?;
        check(libc::setresuid(uid, uid, uid))?;
        if keep_cap_bpf {
            #[repr(C)]
            struct Header {
                version: u32,
                pid: libc::c_int,
            }
            #[repr(C)]
            #[derive(Clone, Copy)]
            struct Data {
                effective: u32,
                permitted: u32,
                inheritable: u32,
            }
            let bit = 1u32 << (CAP_BPF - 32);
            let header = Header { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
            let data = [Data { effective: 0, permitted: 0, inheritable: 0 }, Data { effective: bit, permitted: bit, inheritable: bit }];
            check(libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) as libc::c_int)?;
            // Ambient: survives exec of a binary without file capabilities.
            check(libc::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, libc::c_ulong::from(CAP_BPF), 0, 0))?;
        }
        // Die with the supervisor. Set after the uid and gid change, which clears it; it
        // survives the exec (no set-id bit, no file capabilities).
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0))?;
        // A supervisor that died before the line above sent no signal: the child has been
        // given to another parent already. Nobody is left to report to: leave at once.
        if libc::getppid() != supervisor_pid {
            libc::_exit(1);
        }
    }
    Ok(())
}
