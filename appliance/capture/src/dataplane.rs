//! Loading, attaching, pinning and detaching the XDP program; the ring-buffer reader.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use aya::programs::{Xdp, XdpMode as AyaXdpMode};
use aya::{Ebpf, EbpfLoader};
use mld_config::{CaptureConfig, InterfaceRole, IpPrefix, XdpMode};
use mld_packet::{Direction, PacketRecord};
use nix::fcntl::{Flock, FlockArg};

use crate::error::CaptureError;
use crate::maps::{self, PinnedMaps, EVENTS_MAP, IFACES_MAP, PINNED_MAPS};
use crate::{PROGRAM_NAME, XDP_OBJECT};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// An interface the program is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedInterface {
    pub name: String,
    pub ifindex: u32,
    /// "native" or "generic".
    pub mode: &'static str,
}

/// The loaded and attached XDP program. Dropping it (or [`Dataplane::shutdown`])
/// detaches the program from every interface and removes the pins.
pub struct Dataplane {
    ebpf: Option<Ebpf>,
    maps: PinnedMaps,
    attached: Vec<AttachedInterface>,
    bpffs_dir: PathBuf,
    _lock: Flock<File>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane").field("attached", &self.attached).field("bpffs_dir", &self.bpffs_dir).finish_non_exhaustive()
    }
}

impl Dataplane {
    /// Loads the program, attaches it to every configured interface, pins its maps and
    /// fills the allowlist. Fails without side effects left behind.
    pub fn start(config: &CaptureConfig, allowlist: &[IpPrefix]) -> Result<Dataplane, CaptureError> {
        check_capabilities()?;
        let interfaces = resolve_interfaces(config)?;
        let lock = lock_runtime(config)?;
        prepare_bpffs(&config.bpffs_dir)?;

        let mut ebpf = EbpfLoader::new()
            .map_max_entries(EVENTS_MAP, config.ring_size_bytes)
            .load(XDP_OBJECT)
            .map_err(|error| CaptureError::Load(Box::new(error)))?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| CaptureError::Load(format!("program `{PROGRAM_NAME}` missing from the object").into()))?
            .try_into()
            .map_err(|error| CaptureError::Load(Box::new(error)))?;
        program.load().map_err(|error| CaptureError::Load(Box::new(error)))?;

        let mut attached = Vec::new();
        for (interface, ifindex) in &interfaces {
            let mode = attach(program, &interface.name, interface.xdp_mode)?;
            attached.push(AttachedInterface { name: interface.name.clone(), ifindex: *ifindex, mode });
        }
        {
            let ifaces = ebpf.map_mut(IFACES_MAP).ok_or_else(|| CaptureError::Load(format!("map `{IFACES_MAP}` missing").into()))?;
            for (interface, ifindex) in &interfaces {
                let direction = match interface.role {
                    InterfaceRole::Lan => Direction::FromLan,
                    InterfaceRole::Wan => Direction::FromWan,
                };
                maps::set_interface_direction(ifaces, *ifindex, u32::from(direction.as_u8()))?;
            }
        }
        for name in PINNED_MAPS {
            let path = config.bpffs_dir.join(name);
            let map = ebpf.map(name).ok_or_else(|| CaptureError::Load(format!("map `{name}` missing").into()))?;
            map.pin(&path).map_err(|error| CaptureError::map("pin", name, error))?;
        }
        let mut pinned = PinnedMaps::open(&config.bpffs_dir)?;
        for prefix in allowlist {
            pinned.allow_add(prefix)?;
        }
        Ok(Dataplane { ebpf: Some(ebpf), maps: pinned, attached, bpffs_dir: config.bpffs_dir.clone(), _lock: lock })
    }

    pub fn attached(&self) -> &[AttachedInterface] {
        &self.attached
    }

    pub fn maps(&mut self) -> &mut PinnedMaps {
        &mut self.maps
    }

    /// The maps a capture task needs, as fds to hand to its process.
    pub fn task_fds(&self) -> Result<TaskFds<'_>, CaptureError> {
        let ebpf = self.ebpf.as_ref().ok_or_else(|| CaptureError::Load("the program was shut down".into()))?;
        let fd = |name: &'static str| -> Result<BorrowedFd<'_>, CaptureError> {
            let map = ebpf.map(name).ok_or_else(|| CaptureError::Load(format!("map `{name}` missing").into()))?;
            let data = match map {
                aya::maps::Map::RingBuf(data)
                | aya::maps::Map::LpmTrie(data)
                | aya::maps::Map::PerCpuArray(data)
                | aya::maps::Map::HashMap(data) => data,
                _ => return Err(CaptureError::Load(format!("map `{name}` has an unexpected type").into())),
            };
            Ok(data.fd().as_fd())
        };
        Ok(TaskFds { ring: fd(EVENTS_MAP)?, allow: fd(maps::ALLOW_MAP)?, deny: fd(maps::DENY_MAP)?, counters: fd(maps::COUNTERS_MAP)? })
    }

    /// Takes the ring buffer (once).
    pub fn ring_reader(&mut self) -> Result<RingReader, CaptureError> {
        let map = self
            .ebpf
            .as_mut()
            .and_then(|ebpf| ebpf.take_map(EVENTS_MAP))
            .ok_or_else(|| CaptureError::Load(format!("map `{EVENTS_MAP}` already taken").into()))?;
        let ring = RingBuf::try_from(map).map_err(|error| CaptureError::map("use", EVENTS_MAP, error))?;
        Ok(RingReader { ring, malformed_samples: 0 })
    }

    /// Detaches from every interface and removes the pins.
    pub fn shutdown(mut self) {
        self.teardown();
    }

    fn teardown(&mut self) {
        // Dropping the program's links detaches it from every interface.
        self.ebpf.take();
        for name in PINNED_MAPS {
            let _ = std::fs::remove_file(self.bpffs_dir.join(name));
        }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Borrowed fds of the maps a capture task uses.
#[derive(Debug, Clone, Copy)]
pub struct TaskFds<'a> {
    pub ring: BorrowedFd<'a>,
    pub allow: BorrowedFd<'a>,
    pub deny: BorrowedFd<'a>,
    pub counters: BorrowedFd<'a>,
}

/// Reads packet records from the XDP program's ring buffer.
pub struct RingReader {
    ring: RingBuf<MapData>,
    malformed_samples: u64,
}

impl std::fmt::Debug for RingReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingReader").field("malformed_samples", &self.malformed_samples).finish_non_exhaustive()
    }
}

impl RingReader {
    /// The ring buffer behind an fd handed over by the supervisor.
    pub fn from_fd(fd: OwnedFd) -> Result<RingReader, CaptureError> {
        let data = MapData::from_fd(fd).map_err(|error| CaptureError::map("open", EVENTS_MAP, error))?;
        let ring = RingBuf::try_from(aya::maps::Map::RingBuf(data)).map_err(|error| CaptureError::map("use", EVENTS_MAP, error))?;
        Ok(RingReader { ring, malformed_samples: 0 })
    }

    /// Waits up to `timeout` for records, then hands each available one (at most
    /// `max_records`) to `on_record`. Returns how many were read.
    pub fn read(&mut self, timeout: Duration, max_records: usize, on_record: impl FnMut(PacketRecord)) -> Result<usize, CaptureError> {
        self.read_or_wake(timeout, max_records, None, on_record)
    }

    /// Like [`RingReader::read`], but the wait also ends when `wake` becomes readable
    /// (a command waiting on another socket is not delayed by the ring's timeout).
    pub fn read_or_wake(
        &mut self,
        timeout: Duration,
        max_records: usize,
        wake: Option<std::os::fd::BorrowedFd<'_>>,
        mut on_record: impl FnMut(PacketRecord),
    ) -> Result<usize, CaptureError> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut read = self.drain(max_records, &mut on_record);
        if read == 0 {
            let millis = timeout.as_millis().min(u128::from(u16::MAX)) as u16;
            let ring = PollFd::new(self.ring.as_fd(), PollFlags::POLLIN);
            let polled = match wake {
                Some(wake) => poll(&mut [ring, PollFd::new(wake, PollFlags::POLLIN)], PollTimeout::from(millis)),
                None => poll(&mut [ring], PollTimeout::from(millis)),
            };
            match polled {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(error) => return Err(CaptureError::io("poll the ring buffer", PathBuf::from(EVENTS_MAP), error.into())),
            }
            read = self.drain(max_records, &mut on_record);
        }
        Ok(read)
    }

    /// Samples of the wrong size (never expected: the layout is shared and tested).
    pub fn malformed_samples(&self) -> u64 {
        self.malformed_samples
    }

    fn drain(&mut self, max_records: usize, on_record: &mut impl FnMut(PacketRecord)) -> usize {
        let mut read = 0;
        while read < max_records {
            let Some(item) = self.ring.next() else { break };
            match PacketRecord::from_bytes(&item) {
                Some(record) => on_record(record),
                None => self.malformed_samples += 1,
            }
            read += 1;
        }
        read
    }
}

fn attach(program: &mut Xdp, interface: &str, mode: XdpMode) -> Result<&'static str, CaptureError> {
    let try_mode = |program: &mut Xdp, aya_mode: AyaXdpMode, name: &'static str| {
        program.attach(interface, aya_mode).map(|_| name).map_err(|error| CaptureError::Attach {
            interface: interface.to_string(),
            mode: name,
            source: Box::new(error),
        })
    };
    match mode {
        XdpMode::Native => try_mode(program, AyaXdpMode::Driver, "native"),
        XdpMode::Generic => try_mode(program, AyaXdpMode::Skb, "generic"),
        XdpMode::Auto => try_mode(program, AyaXdpMode::Driver, "native").or_else(|_| try_mode(program, AyaXdpMode::Skb, "generic")),
    }
}

/// Effective capabilities of this process, from /proc/self/status.
fn effective_capabilities() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| line.strip_prefix("CapEff:").and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok()))
        })
        .unwrap_or(0)
}

fn check_capabilities() -> Result<(), CaptureError> {
    let caps = effective_capabilities();
    let has = |cap: u32| caps & (1 << cap) != 0;
    if !has(CAP_NET_ADMIN) {
        return Err(CaptureError::Privilege { operation: "attaching XDP programs", capability: "CAP_NET_ADMIN" });
    }
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        return Err(CaptureError::Privilege { operation: "loading eBPF programs and maps", capability: "CAP_BPF" });
    }
    Ok(())
}

fn resolve_interfaces(config: &CaptureConfig) -> Result<Vec<(mld_config::InterfaceConfig, u32)>, CaptureError> {
    if config.interfaces.is_empty() {
        return Err(CaptureError::Refused("no interfaces configured: add [[capture.interfaces]] tables".to_string()));
    }
    let mut resolved = Vec::new();
    let mut unknown = Vec::new();
    for interface in &config.interfaces {
        match nix::net::if_::if_nametoindex(interface.name.as_str()) {
            Ok(index) => resolved.push((interface.clone(), index)),
            Err(_) => unknown.push(interface.name.clone()),
        }
    }
    if !unknown.is_empty() {
        let hint = if unknown.len() > 1 { format!(" (nor do {})", unknown[1..].join(", ")) } else { String::new() };
        return Err(CaptureError::UnknownInterface { name: unknown[0].clone(), hint });
    }
    Ok(resolved)
}

fn lock_runtime(config: &CaptureConfig) -> Result<Flock<File>, CaptureError> {
    std::fs::create_dir_all(&config.runtime_dir).map_err(|error| CaptureError::io("create directory", &config.runtime_dir, error))?;
    let name: String =
        config.bpffs_dir.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let path = config.runtime_dir.join(format!("capture{name}.lock"));
    let file = File::create(&path).map_err(|error| CaptureError::io("create lock file", &path, error))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|_| CaptureError::AlreadyRunning { bpffs_dir: config.bpffs_dir.clone(), lock: path })
}

/// Makes `dir` a directory on a bpffs (mounting one there if needed) with no stale pins.
/// Only called with the lock held, so any pins found are left over from a capture that
/// died.
fn prepare_bpffs(dir: &Path) -> Result<(), CaptureError> {
    let on_bpffs = |path: &Path| {
        nix::sys::statfs::statfs(path).map(|fs| fs.filesystem_type().0 == BPF_FS_MAGIC).unwrap_or(false)
    };
    let mount_bpffs = |path: &Path| {
        nix::mount::mount(Some("bpf"), path, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
            .map_err(|error| CaptureError::io("mount bpffs on", path, error.into()))
    };
    // The usual place is a directory under /sys/fs/bpf; where nothing mounted bpffs
    // there (no systemd), mount it first: sysfs refuses new directories.
    if let Some(parent) = dir.parent() {
        if parent.is_dir() && !on_bpffs(parent) && parent == Path::new("/sys/fs/bpf") {
            mount_bpffs(parent)?;
        }
    }
    std::fs::create_dir_all(dir).map_err(|error| CaptureError::io("create directory", dir, error))?;
    if !on_bpffs(dir) {
        mount_bpffs(dir)?;
    }
    for name in PINNED_MAPS {
        let path = dir.join(name);
        if path.exists() {
            std::fs::remove_file(&path).map_err(|error| CaptureError::io("remove stale pin", &path, error))?;
        }
    }
    Ok(())
}
