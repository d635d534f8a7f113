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
//!
//! The task runs the supervisor's own binary, from a descriptor ([`Executable`]): the
//! supervisor opens `/proc/self/exe` once at start (`O_PATH | O_CLOEXEC`), and the very
//! last step of `pre_exec` is `execveat(fd, "", argv, envp, AT_EMPTY_PATH)`, with argv
//! and envp prepared as NUL-terminated C arrays before the fork (nothing is allocated in
//! the child); when it returns, its errno is the spawn's error. So a task runs exactly
//! the binary the supervisor runs, wherever it is installed: no path is looked up as
//! the task's user (a binary in a directory only root can enter, such as `/root` or a
//! `mktemp -d` directory, still starts), and replacing or removing the file on disk
//! cannot swap what tasks run. The task's user still needs execute permission on the
//! file itself (0755 binaries are fine), and its mount must not be `noexec`.
//! (`Command`'s own exec is never reached: `pre_exec` either replaces the process or
//! fails.)

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
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

/// The supervisor's own binary, opened once; tasks are started from this descriptor.
#[derive(Debug)]
pub struct Executable {
    fd: OwnedFd,
    /// Where it was when opened: the tasks' argv[0], for `ps` and messages only.
    path: PathBuf,
}

impl Executable {
    /// Opens the running binary (`/proc/self/exe`, `O_PATH | O_CLOEXEC`). Call it first
    /// thing: the descriptor holds the file the supervisor was started from even when it
    /// is replaced or removed afterwards.
    pub fn open_self() -> io::Result<Executable> {
        let fd = Executable::open_fd(Path::new("/proc/self/exe"))?;
        let path = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::from("mldefender"));
        Ok(Executable { fd, path })
    }

    /// Opens another binary the same way (tools that play the supervisor).
    pub fn open(path: &Path) -> io::Result<Executable> {
        Ok(Executable { fd: Executable::open_fd(path)?, path: path.to_path_buf() })
    }

    fn open_fd(path: &Path) -> io::Result<OwnedFd> {
        Ok(std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_CLOEXEC).open(path)?.into())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces this process with a new run of the same binary (from the descriptor), with
    /// the same arguments and environment: the supervisor's restart in place (same pid, so
    /// an init system or PID 1 duty is not disturbed). Returns only on failure.
    pub fn reexec(&self) -> io::Error {
        let args: Vec<OsString> = std::env::args_os().collect();
        let argv: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        let envp: Vec<Vec<u8>> = std::env::vars_os()
            .map(|(key, value)| {
                let mut entry = key.as_bytes().to_vec();
                entry.push(b'=');
                entry.extend_from_slice(value.as_bytes());
                entry
            })
            .collect();
        let exec = match ExecArgs::new(&argv, &envp) {
            Ok(exec) => exec,
            Err(error) => return error,
        };
        #[allow(unsafe_code)]
        // SAFETY: execveat with the binary's open fd, an empty path and AT_EMPTY_PATH, and
        // NUL-terminated argv/envp arrays owned by `exec`, alive for the call.
        unsafe {
            libc::syscall(libc::SYS_execveat, self.fd.as_raw_fd(), c"".as_ptr(), exec.argv.as_ptr(), exec.envp.as_ptr(), libc::AT_EMPTY_PATH);
        }
        io::Error::last_os_error()
    }
}

/// argv and envp as NUL-terminated arrays of pointers into `strings`, made before the
/// fork so that the child only reads them.
struct ExecArgs {
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

#[allow(unsafe_code)]
// SAFETY: the pointers point into the heap buffers of `_strings`, owned by the same value
// and never changed: moving the value or sharing it between threads moves no byte they
// point to. Only the forked child (one thread) reads them.
unsafe impl Send for ExecArgs {}
#[allow(unsafe_code)]
// SAFETY: see `Send`: nothing is ever written through the pointers.
unsafe impl Sync for ExecArgs {}

impl ExecArgs {
    fn new(argv: &[&[u8]], envp: &[Vec<u8>]) -> io::Result<ExecArgs> {
        let c_string =
            |bytes: &[u8]| CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in an argument or the environment"));
        let argv_strings = argv.iter().map(|arg| c_string(arg)).collect::<io::Result<Vec<CString>>>()?;
        let envp_strings = envp.iter().map(|entry| c_string(entry)).collect::<io::Result<Vec<CString>>>()?;
        let pointers = |strings: &[CString]| strings.iter().map(|string| string.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
        let (argv, envp) = (pointers(&argv_strings), pointers(&envp_strings));
        Ok(ExecArgs { _strings: argv_strings.into_iter().chain(envp_strings).collect(), argv, envp })
    }
}

/// Everything needed to start one task process.
#[derive(Debug)]
pub struct TaskSpawn<'a> {
    /// The binary the task runs ([`Executable::open_self`]).
    pub exe: &'a Executable,
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
    // The environment: exactly `env`, and from the supervisor's only these.
    let mut envp: Vec<Vec<u8>> = task.env.iter().map(|(key, value)| format!("{key}={value}").into_bytes()).collect();
    for key in ["PATH", "RUST_BACKTRACE", "RUST_LOG"] {
        if let Some(value) = std::env::var_os(key) {
            envp.push([key.as_bytes(), b"=", value.as_bytes()].concat());
        }
    }
    let argv: Vec<&[u8]> = std::iter::once(task.exe.path.as_os_str().as_bytes()).chain(task.args.iter().map(|arg| arg.as_bytes())).collect();
    let exec = ExecArgs::new(&argv, &envp)?;
    // Never executed by `Command` (see the module doc); named for its messages.
    let mut command = Command::new(&task.exe.path);
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
    command.current_dir(&task.working_dir);
    // Prepared before the fork: plain integers and `exec`'s arrays only.
    let exe_fd = task.exe.fd.as_raw_fd();
    let sources: Vec<RawFd> = task.fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let cgroup_procs: Option<RawFd> = task.cgroup_procs.as_ref().map(|fd| fd.as_raw_fd());
    let (uid, gid, keep_cap_bpf) = (task.uid, task.gid, task.keep_cap_bpf);
    // The supervisor's pid, read before the fork: the child compares its parent with it.
    let supervisor_pid = std::process::id() as libc::pid_t;
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked child before exec. It calls only
    // async-signal-safe system calls (write, fcntl, dup, dup2, umask, prctl, setgroups,
    // setresgid, setresuid, capset, getppid, _exit, execveat) on integers captured by
    // copy and on `exec`'s arrays, made before the fork, and allocates nothing.
    unsafe {
        command.pre_exec(move || child_setup(exe_fd, &exec, &sources, cgroup_procs, uid, gid, keep_cap_bpf, supervisor_pid));
    }
    let child = command.spawn();
    drop(task.cgroup_procs);
    child
}

/// The child side; see [`spawn`]. Runs between fork and exec.
#[allow(clippy::too_many_arguments)]
fn child_setup(
    exe_fd: RawFd,
    exec: &ExecArgs,
    sources: &[RawFd],
    cgroup_procs: Option<RawFd>,
    uid: u32,
    gid: u32,
    keep_cap_bpf: bool,
    supervisor_pid: libc::pid_t,
) -> io::Result<()> {
    let check = |result: libc::c_int| if result < 0 { Err(io::Error::last_os_error()) } else { Ok(()) };
    #[allow(unsafe_code)]
    // SAFETY: plain system calls on integers; buffers are stack arrays that outlive the
    // calls, and execveat's arrays (`exec`) are NUL-terminated and outlive the child's use.
    unsafe {
        if let Some(fd) = cgroup_procs {
            // "0" moves the writing process into the group.
            if libc::write(fd, b"0".as_ptr().cast(), 1) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // The binary's fd out of the target range first: the fds placed below may take
        // its number.
        let exe_high = libc::fcntl(exe_fd, libc::F_DUPFD_CLOEXEC, 64);
        check(exe_high)?;
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
        // Last: run the supervisor's binary from its fd (see the module doc). It returns
        // only on failure; the errno is the spawn's error.
        libc::syscall(libc::SYS_execveat, exe_high, c"".as_ptr(), exec.argv.as_ptr(), exec.envp.as_ptr(), libc::AT_EMPTY_PATH);
    }
    Err(io::Error::last_os_error())
}
