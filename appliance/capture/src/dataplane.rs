//! Loading, attaching, pinning and detaching the XDP program; the ring-buffer reader.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{Xdp, XdpMode as AyaXdpMode};
use aya::{Ebpf, EbpfLoader};
use mld_config::{CaptureConfig, InterfaceRole, XdpMode};
use mld_packet::{Direction, PacketRecord};
use mld_types::IpPrefix;
use nix::fcntl::{Flock, FlockArg};

use crate::error::CaptureError;
use crate::maps::{self, IfaceValue, PinnedMaps, SourceRule, ADOPTED_MAPS, COUNTERS_MAP, DENY_MAP, EVENTS_MAP, FRESH_MAPS, IFACES_MAP, SOURCES_MAP};
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
    /// "native", "generic", or "adopted" (a pinned link left by an earlier run, whose
    /// program was replaced in place).
    pub mode: &'static str,
    /// The link is pinned: the program keeps enforcing when this process exits.
    pub pinned: bool,
}

/// What starting the data plane found and did, for the caller to report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartReport {
    /// The deny map (and counters) of an earlier run were adopted with their entries.
    pub adopted_maps: bool,
    /// Pinned maps that did not match this program's layout and were replaced:
    /// (map, why).
    pub replaced_maps: Vec<(&'static str, String)>,
    /// Pinned links of interfaces no longer configured, detached.
    pub detached_stale: Vec<String>,
}

/// The loaded and attached XDP program.
///
/// Its links and the deny and counters maps are pinned under `capture.bpffs-dir`, so the
/// program keeps dropping what is blocked when this process exits or dies; the next
/// [`Dataplane::start`] adopts them (replacing the program in place, atomically) instead
/// of starting empty. Only [`Dataplane::detach`] (or `capture.detach-on-exit`) removes the
/// program.
pub struct Dataplane {
    ebpf: Option<Ebpf>,
    maps: PinnedMaps,
    attached: Vec<AttachedInterface>,
    /// Links that could not be pinned (a kernel without bpf_link for XDP): they detach
    /// when this process exits.
    unpinned_links: Vec<aya::programs::xdp::XdpLink>,
    bpffs_dir: PathBuf,
    detach_on_exit: bool,
    report: StartReport,
    _lock: Flock<File>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane").field("attached", &self.attached).field("bpffs_dir", &self.bpffs_dir).finish_non_exhaustive()
    }
}

/// The pin of the link attaching the program to `interface`.
fn link_pin(dir: &Path, interface: &str) -> PathBuf {
    dir.join(format!("{LINK_PIN_PREFIX}{interface}"))
}

const LINK_PIN_PREFIX: &str = "link_";

impl Dataplane {
    /// Loads the program, fills its maps (interfaces, source checks, allowlist), and
    /// attaches it to every configured interface: an interface whose pinned link an
    /// earlier run left gets the new program swapped into that link atomically (no
    /// moment without a program); others get a new link, pinned. The deny and counters
    /// maps of an earlier run are adopted when their layout matches.
    pub fn start(config: &CaptureConfig, allowlist: &[IpPrefix], source_rules: &SourcePlan) -> Result<Dataplane, CaptureError> {
        check_capabilities()?;
        let interfaces = resolve_interfaces(config)?;
        let lock = lock_runtime(config)?;
        prepare_bpffs(&config.bpffs_dir)?;
        let mut report = StartReport::default();

        let mut adopted_maps = true;
        for name in ADOPTED_MAPS {
            let path = config.bpffs_dir.join(name);
            if !path.exists() {
                adopted_maps = false;
                continue;
            }
            if let Err(why) = maps::check_pinned_layout(&path, name) {
                std::fs::remove_file(&path).map_err(|error| CaptureError::io("remove incompatible pin", &path, error))?;
                report.replaced_maps.push((name, why));
                adopted_maps = false;
            }
        }
        report.adopted_maps = adopted_maps;

        let deny_pin = config.bpffs_dir.join(DENY_MAP);
        let counters_pin = config.bpffs_dir.join(COUNTERS_MAP);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(EVENTS_MAP, config.ring_size_bytes)
            .map_pin_path(DENY_MAP, deny_pin.as_path())
            .map_pin_path(COUNTERS_MAP, counters_pin.as_path())
            .load(XDP_OBJECT)
            .map_err(|error| CaptureError::Load(Box::new(error)))?;
        {
            let ifaces = ebpf.map_mut(IFACES_MAP).ok_or_else(|| CaptureError::Load(format!("map `{IFACES_MAP}` missing").into()))?;
            for (interface, ifindex) in &interfaces {
                let direction = match interface.role {
                    InterfaceRole::Lan => Direction::FromLan,
                    InterfaceRole::Wan => Direction::FromWan,
                };
                let value = IfaceValue { direction: u32::from(direction.as_u8()), source_check: source_rules.mode_of(*ifindex) };
                maps::set_interface(ifaces, *ifindex, value)?;
            }
        }
        {
            let sources = ebpf.map_mut(SOURCES_MAP).ok_or_else(|| CaptureError::Load(format!("map `{SOURCES_MAP}` missing").into()))?;
            maps::reconcile_sources(sources, &source_rules.rules)?;
        }
        {
            let allow = ebpf.map_mut(maps::ALLOW_MAP).ok_or_else(|| CaptureError::Load(format!("map `{}` missing", maps::ALLOW_MAP).into()))?;
            for prefix in allowlist {
                maps::allow_insert(allow, prefix)?;
            }
        }

        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| CaptureError::Load(format!("program `{PROGRAM_NAME}` missing from the object").into()))?
            .try_into()
            .map_err(|error| CaptureError::Load(Box::new(error)))?;
        program.load().map_err(|error| CaptureError::Load(Box::new(error)))?;

        let mut attached = Vec::new();
        let mut unpinned_links = Vec::new();
        for (interface, ifindex) in &interfaces {
            let pin = link_pin(&config.bpffs_dir, &interface.name);
            if let Some(link) = adoptable_link(&pin, *ifindex) {
                // The earlier run's link stays; only its program is replaced, atomically.
                program.attach_to_link(link).map_err(|error| CaptureError::Attach {
                    interface: interface.name.clone(),
                    mode: "adopted",
                    source: Box::new(error),
                })?;
                attached.push(AttachedInterface { name: interface.name.clone(), ifindex: *ifindex, mode: "adopted", pinned: true });
                continue;
            }
            if pin.exists() {
                // A link of an interface that is gone (or was recreated): dead, drop its pin.
                std::fs::remove_file(&pin).map_err(|error| CaptureError::io("remove dead link pin", &pin, error))?;
            }
            let (link_id, mode) = attach(program, &interface.name, interface.xdp_mode)?;
            let link = program.take_link(link_id).map_err(|error| CaptureError::Load(Box::new(error)))?;
            let pinned = match FdLink::try_from(link) {
                Ok(fd_link) => {
                    fd_link.pin(&pin).map_err(|error| CaptureError::io("pin the XDP link at", &pin, std::io::Error::other(error)))?;
                    true
                }
                Err(_) => false,
            };
            if !pinned {
                // The kernel attached through netlink: re-attach to hold a link we own.
                let (link_id, _) = attach(program, &interface.name, interface.xdp_mode)?;
                unpinned_links.push(program.take_link(link_id).map_err(|error| CaptureError::Load(Box::new(error)))?);
            }
            attached.push(AttachedInterface { name: interface.name.clone(), ifindex: *ifindex, mode, pinned });
        }

        // Interfaces an earlier configuration had and this one does not: detach.
        let configured: Vec<PathBuf> = interfaces.iter().map(|(interface, _)| link_pin(&config.bpffs_dir, &interface.name)).collect();
        if let Ok(entries) = std::fs::read_dir(&config.bpffs_dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().to_string();
                if let Some(interface) = name.strip_prefix(LINK_PIN_PREFIX) {
                    if !configured.contains(&path) {
                        std::fs::remove_file(&path).map_err(|error| CaptureError::io("remove the link pin", &path, error))?;
                        report.detached_stale.push(interface.to_string());
                    }
                }
            }
        }

        for name in FRESH_MAPS {
            let path = config.bpffs_dir.join(name);
            if path.exists() {
                std::fs::remove_file(&path).map_err(|error| CaptureError::io("replace pin", &path, error))?;
            }
            let map = ebpf.map(name).ok_or_else(|| CaptureError::Load(format!("map `{name}` missing").into()))?;
            map.pin(&path).map_err(|error| CaptureError::map("pin", name, error))?;
        }
        let maps = PinnedMaps::open(&config.bpffs_dir)?;
        Ok(Dataplane {
            ebpf: Some(ebpf),
            maps,
            attached,
            unpinned_links,
            bpffs_dir: config.bpffs_dir.clone(),
            detach_on_exit: config.detach_on_exit,
            report,
            _lock: lock,
        })
    }

    /// Removes the program from every interface and every pin, when no capture or
    /// supervisor holds the directory: `mldefender capture detach`. Returns the
    /// interfaces detached.
    pub fn detach(config: &CaptureConfig) -> Result<Vec<String>, CaptureError> {
        let _lock = lock_runtime(config)?;
        let mut detached = Vec::new();
        let Ok(entries) = std::fs::read_dir(&config.bpffs_dir) else { return Ok(detached) };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let is_ours = name.starts_with(LINK_PIN_PREFIX) || ADOPTED_MAPS.contains(&name.as_str()) || FRESH_MAPS.contains(&name.as_str());
            if is_ours {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(|error| CaptureError::io("remove the pin", &path, error))?;
                if let Some(interface) = name.strip_prefix(LINK_PIN_PREFIX) {
                    detached.push(interface.to_string());
                }
            }
        }
        detached.sort();
        Ok(detached)
    }

    pub fn attached(&self) -> &[AttachedInterface] {
        &self.attached
    }

    pub fn report(&self) -> &StartReport {
        &self.report
    }

    pub fn maps(&mut self) -> &mut PinnedMaps {
        &mut self.maps
    }

    /// Makes the interfaces' source checks follow `plan` (idempotent: run it whenever
    /// the host's routes may have changed). Returns how many trie entries changed.
    pub fn reconcile_sources(&mut self, plan: &SourcePlan) -> Result<usize, CaptureError> {
        let ebpf = self.ebpf.as_mut().ok_or_else(|| CaptureError::Load("the program was shut down".into()))?;
        {
            let ifaces = ebpf.map_mut(IFACES_MAP).ok_or_else(|| CaptureError::Load(format!("map `{IFACES_MAP}` missing").into()))?;
            for attached in &self.attached {
                let direction = maps::interface_direction(ifaces, attached.ifindex)?;
                maps::set_interface(ifaces, attached.ifindex, IfaceValue { direction, source_check: plan.mode_of(attached.ifindex) })?;
            }
        }
        let sources = ebpf.map_mut(SOURCES_MAP).ok_or_else(|| CaptureError::Load(format!("map `{SOURCES_MAP}` missing").into()))?;
        maps::reconcile_sources(sources, &plan.rules)
    }

    /// The maps a capture task needs, as fds to hand to its process: the ring buffer and
    /// the deny map read-write; the allow and counters maps read-only (the kernel
    /// refuses writes through those fds).
    pub fn task_fds(&self) -> Result<TaskFds<'_>, CaptureError> {
        let ebpf = self.ebpf.as_ref().ok_or_else(|| CaptureError::Load("the program was shut down".into()))?;
        let fd = |name: &'static str| -> Result<BorrowedFd<'_>, CaptureError> {
            let map = ebpf.map(name).ok_or_else(|| CaptureError::Load(format!("map `{name}` missing").into()))?;
            let data = match map {
                aya::maps::Map::RingBuf(data)
                | aya::maps::Map::LpmTrie(data)
                | aya::maps::Map::PerCpuArray(data)
                | aya::maps::Map::HashMap(data)
                | aya::maps::Map::LruHashMap(data)
                | aya::maps::Map::Array(data) => data,
                _ => return Err(CaptureError::Load(format!("map `{name}` has an unexpected type").into())),
            };
            Ok(data.fd().as_fd())
        };
        let read_only = |name: &'static str| {
            let pin = self.bpffs_dir.join(name);
            maps::open_pin_read_only(&pin).map_err(|error| CaptureError::io("open read-only", pin, error))
        };
        Ok(TaskFds {
            ring: fd(EVENTS_MAP)?,
            allow: [read_only(maps::ALLOW_MAP)?, read_only(maps::ALLOW_NEXT_MAP)?, read_only(maps::ALLOW_SEL_MAP)?],
            deny: fd(maps::DENY_MAP)?,
            counters: read_only(COUNTERS_MAP)?,
            guard: fd(maps::GUARD_MAP)?,
            good: fd(maps::GOOD_MAP)?,
            guard_on: fd(maps::GUARD_ON_MAP)?,
        })
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

    /// Ends this process's hold on the program. With `detach-on-exit` the program is
    /// detached and the pins removed; otherwise it keeps enforcing, pinned, for the next
    /// start to adopt. Returns true when the program was detached.
    pub fn shutdown(mut self) -> bool {
        self.teardown()
    }

    /// Closes this process's hold on the data plane and leaves it enforcing for the next
    /// run (`detach_on_exit` ignored): true when every interface's link is pinned.
    pub fn hand_over(mut self) -> bool {
        self.detach_on_exit = false;
        self.teardown();
        self.attached.iter().all(|attached| attached.pinned)
    }

    fn teardown(&mut self) -> bool {
        if self.detach_on_exit {
            for attached in &self.attached {
                let _ = std::fs::remove_file(link_pin(&self.bpffs_dir, &attached.name));
            }
            for name in ADOPTED_MAPS.into_iter().chain(FRESH_MAPS) {
                let _ = std::fs::remove_file(self.bpffs_dir.join(name));
            }
        }
        // Closing the program's fds: unpinned links detach, pinned ones stay.
        self.ebpf.take();
        self.unpinned_links.clear();
        self.detach_on_exit || self.attached.iter().all(|attached| !attached.pinned)
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        if self.ebpf.is_some() {
            self.teardown();
        }
    }
}

/// The source checks of the attached interfaces: each interface's mode
/// (`MLD_SRC_CHECK_*`) and the trie's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourcePlan {
    pub modes: Vec<(u32, u32)>,
    pub rules: Vec<SourceRule>,
}

impl SourcePlan {
    pub fn mode_of(&self, ifindex: u32) -> u32 {
        self.modes.iter().find(|(index, _)| *index == ifindex).map_or(maps::source_check::OFF, |(_, mode)| *mode)
    }
}

/// A pinned link that is ours to adopt: an XDP link still attached to `ifindex`.
fn adoptable_link(pin: &Path, ifindex: u32) -> Option<aya::programs::xdp::XdpLink> {
    if !pin.exists() {
        return None;
    }
    if maps::xdp_link_ifindex(pin) != Some(ifindex) {
        return None;
    }
    let link: FdLink = PinnedLink::from_pin(pin).ok()?.into();
    aya::programs::xdp::XdpLink::try_from(link).ok()
}

/// Fds of the maps a capture task uses: read-write where it writes (ring consumer
/// position, deny, guard, known good), read-only where it only reads (allow, counters).
#[derive(Debug)]
pub struct TaskFds<'a> {
    pub ring: BorrowedFd<'a>,
    /// The allowlist's two tries and its selector.
    pub allow: [OwnedFd; 3],
    pub deny: BorrowedFd<'a>,
    pub counters: OwnedFd,
    /// The per-destination guard and the known-good sources (read-write: the capture
    /// task decides both).
    pub guard: BorrowedFd<'a>,
    pub good: BorrowedFd<'a>,
    pub guard_on: BorrowedFd<'a>,
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

fn attach(program: &mut Xdp, interface: &str, mode: XdpMode) -> Result<(aya::programs::xdp::XdpLinkId, &'static str), CaptureError> {
    let try_mode = |program: &mut Xdp, aya_mode: AyaXdpMode, name: &'static str| {
        program.attach(interface, aya_mode).map(|id| (id, name)).map_err(|error| CaptureError::Attach {
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
        .and_then(|status| status.lines().find_map(|line| line.strip_prefix("CapEff:").and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())))
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
    let name: String = config.bpffs_dir.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let path = config.runtime_dir.join(format!("capture{name}.lock"));
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&path)
    }
    .map_err(|error| CaptureError::io("open lock file", &path, error))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| CaptureError::AlreadyRunning { bpffs_dir: config.bpffs_dir.clone(), lock: path })
}

/// Makes `dir` a directory on a bpffs, mounting one there if needed. Pins found there
/// were left by an earlier run (the lock is held): they are adopted, not removed.
fn prepare_bpffs(dir: &Path) -> Result<(), CaptureError> {
    let on_bpffs = |path: &Path| nix::sys::statfs::statfs(path).map(|fs| fs.filesystem_type().0 == BPF_FS_MAGIC).unwrap_or(false);
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
    // Only root may reach the pins (the maps are the enforcement); set through an
    // O_NOFOLLOW fd, never through a link.
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
            .open(dir)
            .and_then(|handle| handle.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700)))
            .map_err(|error| CaptureError::io("restrict the mode of", dir, error))?;
    }
    Ok(())
}
