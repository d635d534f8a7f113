//! The maps of the XDP program, as pinned in bpffs, with typed operations.
//!
//! Layouts mirror `ebpf/include/mld_shared.h` (checked by `tests/shared_header.rs`).
//! Every address is stored as IPv6 (IPv4 as ::ffff:a.b.c.d), so one trie serves both
//! families.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray};
use mld_types::{DenyReason, IpPrefix};

use crate::clock::boot_time_ns;
use crate::error::CaptureError;

pub const ALLOW_MAP: &str = "mld_allow";
/// The allowlist's second trie, and the selector of the one in force (`mld_allow_sel[0]`:
/// 0 `mld_allow`, 1 `mld_allow_next`): a new allowlist is written into the trie not in
/// force, then the selector flipped with one write ([`PinnedMaps::allow_replace`]).
pub const ALLOW_NEXT_MAP: &str = "mld_allow_next";
pub const ALLOW_SEL_MAP: &str = "mld_allow_sel";
pub const DENY_MAP: &str = "mld_deny";
pub const COUNTERS_MAP: &str = "mld_counters";
pub const IFACES_MAP: &str = "mld_ifaces";
pub const EVENTS_MAP: &str = "mld_events";
pub const SOURCES_MAP: &str = "mld_sources";
pub const GUARD_MAP: &str = "mld_guard";
pub const GOOD_MAP: &str = "mld_good";
pub const GUARD_ON_MAP: &str = "mld_guard_on";

/// Maps whose contents outlive a supervisor: adopted from their pins by the next one.
pub const ADOPTED_MAPS: [&str; 2] = [DENY_MAP, COUNTERS_MAP];
/// Maps made anew from the configuration at every start, then pinned for other commands
/// (the ring buffer is read by the capture only and is not pinned).
/// The guard and known-good maps start empty too: the capture task that fills them
/// starts afresh with every start.
pub const FRESH_MAPS: [&str; 8] = [ALLOW_MAP, ALLOW_NEXT_MAP, ALLOW_SEL_MAP, IFACES_MAP, SOURCES_MAP, GUARD_MAP, GOOD_MAP, GUARD_ON_MAP];

/// Counter indices (`MLD_CTR_*`).
pub mod counter {
    pub const PASSED: u32 = 0;
    pub const ALLOWED: u32 = 1;
    pub const DROPPED: u32 = 2;
    pub const MALFORMED: u32 = 3;
    pub const RING_FULL: u32 = 4;
    pub const NOT_IP: u32 = 5;
    pub const EXPIRED: u32 = 6;
    pub const SPOOFED: u32 = 7;
    pub const DROP_REASON: u32 = 8;
    pub const REASONS: u32 = 8;
    /// First packets dropped by a destination's guard (`MLD_CTR_GUARD`).
    pub const GUARD: u32 = DROP_REASON + REASONS;
    pub const COUNT: u32 = GUARD + 1;
}

/// `MLD_GUARD_ENTRIES`: destinations guarded at once.
pub const GUARD_ENTRIES: u32 = 1024;
/// `MLD_GOOD_ENTRIES`: known-good sources remembered (least recently used forgotten).
pub const GOOD_ENTRIES: u32 = 65_536;

/// `struct mld_guard_key`: one service (destination address IPv4-mapped, port, protocol).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GuardKey {
    pub addr: [u8; 16],
    /// Host byte order.
    pub port: u16,
    pub protocol: u8,
    pub _pad: u8,
}

// SAFETY: #[repr(C)], 16 bytes, a u16 and two u8: 20 bytes, no implicit padding, any bit
// pattern valid.
#[allow(unsafe_code)]
unsafe impl aya::Pod for GuardKey {}

impl GuardKey {
    pub fn new(addr: std::net::IpAddr, port: u16, protocol: u8) -> GuardKey {
        GuardKey { addr: mapped(addr), port, protocol, _pad: 0 }
    }

    /// The destination address (IPv4 when mapped).
    pub fn addr(&self) -> std::net::IpAddr {
        let v6 = std::net::Ipv6Addr::from(self.addr);
        v6.to_ipv4_mapped().map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4)
    }
}

/// An address as the maps store it: IPv6, IPv4 as ::ffff:a.b.c.d.
pub fn mapped(addr: std::net::IpAddr) -> [u8; 16] {
    match addr {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

/// `struct mld_guard_value`: the destination's token bucket (as its theoretical arrival
/// time) and the XDP program's counts of the first packets it judged.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardValue {
    pub interval_ns: u64,
    pub burst_ns: u64,
    pub tat_ns: u64,
    pub expires_ns: u64,
    pub good_within_ns: u64,
    pub passed: u64,
    pub dropped: u64,
    pub known_passed: u64,
}

// SAFETY: #[repr(C)], eight u64: no padding, any bit pattern valid.
#[allow(unsafe_code)]
unsafe impl aya::Pod for GuardValue {}

/// `struct mld_deny_value`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenyValue {
    /// CLOCK_BOOTTIME ns after which the entry no longer drops; 0: never expires.
    pub expires_ns: u64,
    pub reason: u32,
    pub _pad: u32,
}

// SAFETY: DenyValue is #[repr(C)], made only of integers, with explicit padding: every
// bit pattern is a valid value and there are no implicit padding bytes.
#[allow(unsafe_code)]
unsafe impl aya::Pod for DenyValue {}

/// `struct mld_iface_value`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfaceValue {
    /// `MLD_DIR_*`.
    pub direction: u32,
    /// `MLD_SRC_CHECK_*`.
    pub source_check: u32,
}

// SAFETY: #[repr(C)], two u32, no padding: every bit pattern is valid.
#[allow(unsafe_code)]
unsafe impl aya::Pod for IfaceValue {}

/// `MLD_SRC_CHECK_*`: which sources may arrive on an interface.
pub mod source_check {
    pub const OFF: u32 = 0;
    pub const STRICT: u32 = 1;
    pub const LOOSE: u32 = 2;
}

/// `MLD_SRC_PERMIT` / `MLD_SRC_FORBID`: values of the source-check trie.
pub mod source_verdict {
    pub const PERMIT: u32 = 1;
    pub const FORBID: u32 = 2;
}

/// The data of `struct mld_src_key` after its prefixlen: the interface, then the
/// IPv4-mapped address.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceKeyData {
    pub ifindex: u32,
    pub addr: [u8; 16],
}

// SAFETY: #[repr(C)], a u32 then 16 bytes: 20 bytes, no padding, any bit pattern valid.
#[allow(unsafe_code)]
unsafe impl aya::Pod for SourceKeyData {}

/// One rule of the source check: on `ifindex`, sources in `prefix` are permitted or
/// forbidden (`source_verdict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRule {
    pub ifindex: u32,
    pub prefix: IpPrefix,
    pub verdict: u32,
}

impl SourceRule {
    fn key(&self) -> Key<SourceKeyData> {
        let (addr, len) = self.prefix.to_mapped_v6();
        Key::new(32 + u32::from(len), SourceKeyData { ifindex: self.ifindex, addr })
    }
}

/// One deny entry as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenyEntry {
    pub prefix: IpPrefix,
    pub reason: DenyReason,
    /// `None`: never expires.
    pub expires_boot_ns: Option<u64>,
}

impl DenyEntry {
    /// Time left, `None` when permanent; zero when expired (not yet swept).
    pub fn remaining(&self, now_boot_ns: u64) -> Option<Duration> {
        self.expires_boot_ns.map(|expires| Duration::from_nanos(expires.saturating_sub(now_boot_ns)))
    }
}

/// Sums of the per-CPU counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub passed: u64,
    pub allowed: u64,
    pub dropped: u64,
    pub malformed: u64,
    pub ring_full: u64,
    pub not_ip: u64,
    pub expired: u64,
    /// Packets dropped because their source cannot be behind their ingress interface.
    pub spoofed: u64,
    pub dropped_by_reason: [u64; counter::REASONS as usize],
    /// First packets dropped by a destination's guard (random-source floods).
    pub guard_dropped: u64,
}

impl Counters {
    pub fn dropped_for(&self, reason: DenyReason) -> u64 {
        self.dropped_by_reason[reason.code() as usize]
    }
}

fn key_of(prefix: &IpPrefix) -> Key<[u8; 16]> {
    let (addr, len) = prefix.to_mapped_v6();
    Key::new(u32::from(len), addr)
}

fn prefix_of(key: &Key<[u8; 16]>) -> Option<IpPrefix> {
    IpPrefix::from_mapped_v6(key.data(), key.prefix_len() as u8)
}

/// The allowlist's two tries and the selector of the one in force.
struct AllowTries {
    slots: [LpmTrie<MapData, [u8; 16], u32>; 2],
    selector: Array<MapData, u32>,
}

impl AllowTries {
    fn open(maps: [MapData; 3]) -> Result<AllowTries, CaptureError> {
        let [first, next, selector] = maps;
        let trie = |data, name| LpmTrie::try_from(Map::LpmTrie(data)).map_err(|error| CaptureError::map("use", name, error));
        Ok(AllowTries {
            slots: [trie(first, ALLOW_MAP)?, trie(next, ALLOW_NEXT_MAP)?],
            selector: Array::try_from(Map::Array(selector)).map_err(|error| CaptureError::map("use", ALLOW_SEL_MAP, error))?,
        })
    }

    /// The index of the trie in force.
    fn active(&self) -> Result<usize, CaptureError> {
        let selected = self.selector.get(&0, 0).map_err(|error| CaptureError::map("read", ALLOW_SEL_MAP, error))?;
        Ok(usize::from(selected != 0))
    }

    fn name(slot: usize) -> &'static str {
        if slot == 0 {
            ALLOW_MAP
        } else {
            ALLOW_NEXT_MAP
        }
    }
}

/// The XDP program's maps, opened from their pins.
pub struct PinnedMaps {
    dir: PathBuf,
    allow: AllowTries,
    deny: LpmTrie<MapData, [u8; 16], DenyValue>,
    counters: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for PinnedMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedMaps").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl PinnedMaps {
    /// Opens the maps a running capture pinned under `dir`.
    pub fn open(dir: &Path) -> Result<PinnedMaps, CaptureError> {
        let open = |name: &'static str| -> Result<MapData, CaptureError> {
            let path = dir.join(name);
            if !path.exists() {
                return Err(CaptureError::NotRunning { dir: dir.to_path_buf() });
            }
            MapData::from_pin(&path).map_err(|error| match &error {
                aya::maps::MapError::SyscallError(syscall) if syscall.io_error.raw_os_error() == Some(libc_eperm()) => {
                    CaptureError::Privilege { operation: "opening the pinned maps", capability: "CAP_BPF (or root)" }
                }
                _ => CaptureError::map("open the pinned", name, error),
            })
        };
        let allow = AllowTries::open([open(ALLOW_MAP)?, open(ALLOW_NEXT_MAP)?, open(ALLOW_SEL_MAP)?])?;
        let deny = LpmTrie::try_from(Map::LpmTrie(open(DENY_MAP)?)).map_err(|error| CaptureError::map("use", DENY_MAP, error))?;
        let counters = PerCpuArray::try_from(Map::PerCpuArray(open(COUNTERS_MAP)?)).map_err(|error| CaptureError::map("use", COUNTERS_MAP, error))?;
        Ok(PinnedMaps { dir: dir.to_path_buf(), allow, deny, counters })
    }

    /// The maps behind fds handed over by the supervisor.
    pub fn from_fds(allow: [std::os::fd::OwnedFd; 3], deny: std::os::fd::OwnedFd, counters: std::os::fd::OwnedFd) -> Result<PinnedMaps, CaptureError> {
        let open = |fd, name: &'static str| MapData::from_fd(fd).map_err(|error| CaptureError::map("open", name, error));
        let [first, next, selector] = allow;
        let allow = AllowTries::open([open(first, ALLOW_MAP)?, open(next, ALLOW_NEXT_MAP)?, open(selector, ALLOW_SEL_MAP)?])?;
        let deny = LpmTrie::try_from(Map::LpmTrie(open(deny, DENY_MAP)?)).map_err(|error| CaptureError::map("use", DENY_MAP, error))?;
        let counters = PerCpuArray::try_from(Map::PerCpuArray(open(counters, COUNTERS_MAP)?)).map_err(|error| CaptureError::map("use", COUNTERS_MAP, error))?;
        Ok(PinnedMaps { dir: PathBuf::from("(fds from the supervisor)"), allow, deny, counters })
    }

    /// Adds an entry to the allowlist in force.
    pub fn allow_add(&mut self, prefix: &IpPrefix) -> Result<(), CaptureError> {
        let slot = self.allow.active()?;
        self.allow.slots[slot].insert(&key_of(prefix), 1, 0).map_err(|error| CaptureError::map("insert into", AllowTries::name(slot), error))
    }

    /// Removes an exact entry of the allowlist in force; false when there was none.
    pub fn allow_del(&mut self, prefix: &IpPrefix) -> Result<bool, CaptureError> {
        let slot = self.allow.active()?;
        remove_exact(&mut self.allow.slots[slot], prefix, AllowTries::name(slot))
    }

    /// The allowlist in force.
    pub fn allow_list(&self) -> Result<Vec<IpPrefix>, CaptureError> {
        let slot = self.allow.active()?;
        list_trie(&self.allow.slots[slot], AllowTries::name(slot))
    }

    /// Replaces the allowlist in force with `allowlist` in one step: written whole into
    /// the trie not in force (emptied first), then the selector flipped with one write.
    /// Packets see the old allowlist or the new one, never a mix. The trie left behind is
    /// emptied at the next replacement, long after any packet still reading it.
    pub fn allow_replace(&mut self, allowlist: &[IpPrefix]) -> Result<(), CaptureError> {
        let active = self.allow.active()?;
        let spare = 1 - active;
        let name = AllowTries::name(spare);
        for prefix in list_trie(&self.allow.slots[spare], name)? {
            remove_exact(&mut self.allow.slots[spare], &prefix, name)?;
        }
        for prefix in allowlist {
            self.allow.slots[spare].insert(&key_of(prefix), 1, 0).map_err(|error| CaptureError::map("insert into", name, error))?;
        }
        self.allow.selector.set(0, spare as u32, 0).map_err(|error| CaptureError::map("write", ALLOW_SEL_MAP, error))
    }

    /// Adds (or replaces) a deny entry. Refused when an allow entry covers the prefix:
    /// the allowlist always wins.
    pub fn deny_add(&mut self, prefix: &IpPrefix, ttl: Option<Duration>, reason: DenyReason) -> Result<(), CaptureError> {
        if let Some(allowed) = self.allow_list()?.into_iter().find(|allowed| allowed.covers(prefix)) {
            return Err(CaptureError::Refused(format!("{prefix} is covered by allowlist entry {allowed}; allowlisted sources are never blocked")));
        }
        let expires_ns = match ttl {
            Some(ttl) => boot_time_ns().saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX)).max(1),
            None => 0,
        };
        let value = DenyValue { expires_ns, reason: reason.code(), _pad: 0 };
        self.deny.insert(&key_of(prefix), value, 0).map_err(|error| CaptureError::map("insert into", DENY_MAP, error))
    }

    /// Removes an exact deny entry; false when there was none.
    pub fn deny_del(&mut self, prefix: &IpPrefix) -> Result<bool, CaptureError> {
        remove_exact(&mut self.deny, prefix, DENY_MAP)
    }

    pub fn deny_list(&self) -> Result<Vec<DenyEntry>, CaptureError> {
        let mut entries = Vec::new();
        for entry in self.deny.iter() {
            let (key, value) = entry.map_err(|error| CaptureError::map("read", DENY_MAP, error))?;
            if let Some(prefix) = prefix_of(&key) {
                entries.push(DenyEntry {
                    prefix,
                    reason: DenyReason::from_code(value.reason),
                    expires_boot_ns: (value.expires_ns != 0).then_some(value.expires_ns),
                });
            }
        }
        entries.sort_by_key(|entry| entry.prefix);
        Ok(entries)
    }

    /// Deletes deny entries whose expiry has passed; returns the prefixes removed.
    /// Idempotent: run it on an interval.
    pub fn sweep_expired(&mut self, now_boot_ns: u64) -> Result<Vec<IpPrefix>, CaptureError> {
        let expired: Vec<IpPrefix> = self
            .deny_list()?
            .into_iter()
            .filter(|entry| entry.expires_boot_ns.is_some_and(|expires| expires <= now_boot_ns))
            .map(|entry| entry.prefix)
            .collect();
        for prefix in &expired {
            self.deny_del(prefix)?;
        }
        Ok(expired)
    }

    pub fn counters(&self) -> Result<Counters, CaptureError> {
        let read = |index: u32| -> Result<u64, CaptureError> {
            let values = self.counters.get(&index, 0).map_err(|error| CaptureError::map("read", COUNTERS_MAP, error))?;
            Ok(values.iter().sum())
        };
        let mut counters = Counters {
            passed: read(counter::PASSED)?,
            allowed: read(counter::ALLOWED)?,
            dropped: read(counter::DROPPED)?,
            malformed: read(counter::MALFORMED)?,
            ring_full: read(counter::RING_FULL)?,
            not_ip: read(counter::NOT_IP)?,
            expired: read(counter::EXPIRED)?,
            spoofed: read(counter::SPOOFED)?,
            dropped_by_reason: [0; counter::REASONS as usize],
            guard_dropped: read(counter::GUARD)?,
        };
        for reason in 0..counter::REASONS {
            counters.dropped_by_reason[reason as usize] = read(counter::DROP_REASON + reason)?;
        }
        Ok(counters)
    }
}

/// The guard and known-good maps, behind fds handed over by the supervisor (the capture
/// task writes both).
pub struct GuardMaps {
    guard: BpfHashMap<MapData, GuardKey, GuardValue>,
    good: BpfHashMap<MapData, [u8; 16], u64>,
    /// How many services are guarded: 0 lets the XDP program skip the guard lookup.
    active: Array<MapData, u32>,
}

impl std::fmt::Debug for GuardMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardMaps").finish_non_exhaustive()
    }
}

impl GuardMaps {
    pub fn from_fds(guard: std::os::fd::OwnedFd, good: std::os::fd::OwnedFd, active: std::os::fd::OwnedFd) -> Result<GuardMaps, CaptureError> {
        let open = |fd, name: &'static str| MapData::from_fd(fd).map_err(|error| CaptureError::map("open", name, error));
        let guard = BpfHashMap::try_from(Map::HashMap(open(guard, GUARD_MAP)?)).map_err(|error| CaptureError::map("use", GUARD_MAP, error))?;
        let good = BpfHashMap::try_from(Map::LruHashMap(open(good, GOOD_MAP)?)).map_err(|error| CaptureError::map("use", GOOD_MAP, error))?;
        let active = Array::try_from(Map::Array(open(active, GUARD_ON_MAP)?)).map_err(|error| CaptureError::map("use", GUARD_ON_MAP, error))?;
        Ok(GuardMaps { guard, good, active })
    }

    /// Writes (or replaces) a destination's guard.
    pub fn set(&mut self, key: &GuardKey, value: GuardValue) -> Result<(), CaptureError> {
        self.guard.insert(key, value, 0).map_err(|error| CaptureError::map("insert into", GUARD_MAP, error))
    }

    pub fn get(&self, key: &GuardKey) -> Result<Option<GuardValue>, CaptureError> {
        match self.guard.get(key, 0) {
            Ok(value) => Ok(Some(value)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(error) => Err(CaptureError::map("read", GUARD_MAP, error)),
        }
    }

    /// Removes a destination's guard; false when there was none.
    pub fn remove(&mut self, key: &GuardKey) -> Result<bool, CaptureError> {
        match self.guard.remove(key) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(aya::maps::MapError::SyscallError(syscall)) if syscall.io_error.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(CaptureError::map("delete from", GUARD_MAP, error)),
        }
    }

    /// Every guard in force.
    pub fn list(&self) -> Result<Vec<(GuardKey, GuardValue)>, CaptureError> {
        self.guard.iter().map(|entry| entry.map_err(|error| CaptureError::map("read", GUARD_MAP, error))).collect()
    }

    /// Tells the XDP program how many services are guarded (0: it skips the lookup).
    pub fn set_active(&mut self, count: u32) -> Result<(), CaptureError> {
        self.active.set(0, count, 0).map_err(|error| CaptureError::map("write", GUARD_ON_MAP, error))
    }

    /// Records that `source` was seen good (two-way evidence) at `boot_ns`.
    pub fn set_good(&mut self, source: std::net::IpAddr, boot_ns: u64) -> Result<(), CaptureError> {
        self.good.insert(mapped(source), boot_ns, 0).map_err(|error| CaptureError::map("insert into", GOOD_MAP, error))
    }
}

fn list_trie(trie: &LpmTrie<MapData, [u8; 16], u32>, name: &'static str) -> Result<Vec<IpPrefix>, CaptureError> {
    let mut prefixes = Vec::new();
    for entry in trie.iter() {
        let (key, _) = entry.map_err(|error| CaptureError::map("read", name, error))?;
        prefixes.extend(prefix_of(&key));
    }
    prefixes.sort();
    Ok(prefixes)
}

fn remove_exact<V: aya::Pod>(trie: &mut LpmTrie<MapData, [u8; 16], V>, prefix: &IpPrefix, map: &'static str) -> Result<bool, CaptureError> {
    match trie.remove(&key_of(prefix)) {
        Ok(()) => Ok(true),
        Err(aya::maps::MapError::KeyNotFound) => Ok(false),
        Err(aya::maps::MapError::SyscallError(syscall)) if syscall.io_error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(CaptureError::map("delete from", map, error)),
    }
}

/// Writes an interface's role: the direction the XDP program stamps on its packets, and
/// its source check.
pub(crate) fn set_interface(map: &mut Map, ifindex: u32, value: IfaceValue) -> Result<(), CaptureError> {
    let mut ifaces: BpfHashMap<&mut MapData, u32, IfaceValue> = BpfHashMap::try_from(map).map_err(|error| CaptureError::map("use", IFACES_MAP, error))?;
    ifaces.insert(ifindex, value, 0).map_err(|error| CaptureError::map("insert into", IFACES_MAP, error))
}

/// Makes the source-check trie hold exactly `rules` (an idempotent reconcile: entries
/// not in `rules` are removed, missing or changed ones written). Returns how many
/// entries changed.
pub(crate) fn reconcile_sources(map: &mut Map, rules: &[SourceRule]) -> Result<usize, CaptureError> {
    let mut trie: LpmTrie<&mut MapData, SourceKeyData, u32> = LpmTrie::try_from(map).map_err(|error| CaptureError::map("use", SOURCES_MAP, error))?;
    let mut present = Vec::new();
    for entry in trie.iter() {
        let (key, value) = entry.map_err(|error| CaptureError::map("read", SOURCES_MAP, error))?;
        present.push((key.prefix_len(), key.data(), value));
    }
    let wanted: Vec<(u32, SourceKeyData, u32)> = rules
        .iter()
        .map(|rule| {
            let key = rule.key();
            (key.prefix_len(), key.data(), rule.verdict)
        })
        .collect();
    let mut changed = 0;
    for (len, data, _) in &present {
        if !wanted.iter().any(|(wanted_len, wanted_data, _)| wanted_len == len && wanted_data == data) {
            trie.remove(&Key::new(*len, *data)).map_err(|error| CaptureError::map("delete from", SOURCES_MAP, error))?;
            changed += 1;
        }
    }
    for (len, data, value) in &wanted {
        if !present.contains(&(*len, *data, *value)) {
            trie.insert(&Key::new(*len, *data), *value, 0).map_err(|error| CaptureError::map("insert into", SOURCES_MAP, error))?;
            changed += 1;
        }
    }
    Ok(changed)
}

fn libc_eperm() -> i32 {
    nix::errno::Errno::EPERM as i32
}

/// Checks that a pinned map is one this program can adopt: its name, type, key and value
/// sizes and capacity are the ones the program declares. Returns why not.
pub(crate) fn check_pinned_layout(path: &Path, name: &'static str) -> Result<(), String> {
    let info = aya::maps::MapInfo::from_pin(path).map_err(|error| format!("cannot read its info: {error}"))?;
    let (map_type, key_size, value_size, max_entries) = match name {
        DENY_MAP => (aya::maps::MapType::LpmTrie, std::mem::size_of::<Key<[u8; 16]>>() as u32, std::mem::size_of::<DenyValue>() as u32, DENY_MAX_ENTRIES),
        COUNTERS_MAP => (aya::maps::MapType::PerCpuArray, 4, 8, counter::COUNT),
        _ => return Err("not a map that is adopted".to_string()),
    };
    let found = (info.map_type().ok(), info.key_size(), info.value_size(), info.max_entries());
    if info.name_as_str() != Some(name) || found != (Some(map_type), key_size, value_size, max_entries) {
        return Err(format!("layout {found:?} named {:?}, this program needs {:?}", info.name_as_str(), (Some(map_type), key_size, value_size, max_entries)));
    }
    Ok(())
}

/// Capacity of the deny trie (`mld_deny`'s max_entries in the program).
pub const DENY_MAX_ENTRIES: u32 = 262_144;

/// Adds an allow entry to the program's own (not yet pinned) allow map.
pub(crate) fn allow_insert(map: &mut Map, prefix: &IpPrefix) -> Result<(), CaptureError> {
    let mut allow: LpmTrie<&mut MapData, [u8; 16], u32> = LpmTrie::try_from(map).map_err(|error| CaptureError::map("use", ALLOW_MAP, error))?;
    allow.insert(&key_of(prefix), 1, 0).map_err(|error| CaptureError::map("insert into", ALLOW_MAP, error))
}

/// The direction an interface's packets are stamped with (0 when it has no entry).
pub(crate) fn interface_direction(map: &mut Map, ifindex: u32) -> Result<u32, CaptureError> {
    let ifaces: BpfHashMap<&mut MapData, u32, IfaceValue> = BpfHashMap::try_from(map).map_err(|error| CaptureError::map("use", IFACES_MAP, error))?;
    match ifaces.get(&ifindex, 0) {
        Ok(value) => Ok(value.direction),
        Err(aya::maps::MapError::KeyNotFound) => Ok(0),
        Err(error) => Err(CaptureError::map("read", IFACES_MAP, error)),
    }
}

/// Opens a pinned map read-only (`BPF_OBJ_GET` with `BPF_F_RDONLY`): an fd through which
/// lookups work and updates are refused by the kernel. For tasks that only read a map.
pub(crate) fn open_pin_read_only(pin: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    const BPF_OBJ_GET: nix::libc::c_long = 7;
    const BPF_F_RDONLY: u32 = 1 << 3;
    #[repr(C)]
    struct GetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let path = std::ffi::CString::new(pin.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let get = GetAttr { pathname: path.as_ptr() as u64, bpf_fd: 0, file_flags: BPF_F_RDONLY };
    // SAFETY: BPF_OBJ_GET reads the NUL-terminated path, alive for the call, and returns
    // a new fd (or -1), which is owned below.
    #[allow(unsafe_code)]
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_bpf, BPF_OBJ_GET, std::ptr::addr_of!(get), std::mem::size_of::<GetAttr>()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    #[allow(unsafe_code)]
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// The interface the XDP link pinned at `pin` is attached to; `None` when there is no
/// such pin, it is not an XDP link, or it is detached (its interface was removed: the
/// kernel reports ifindex 0).
pub(crate) fn xdp_link_ifindex(pin: &Path) -> Option<u32> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    const BPF_OBJ_GET: nix::libc::c_long = 7;
    #[repr(C)]
    struct GetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let path = std::ffi::CString::new(pin.as_os_str().as_bytes()).ok()?;
    let get = GetAttr { pathname: path.as_ptr() as u64, bpf_fd: 0, file_flags: 0 };
    // SAFETY: BPF_OBJ_GET reads the NUL-terminated path, alive for the call, and returns
    // a new fd (or -1), which is owned below.
    #[allow(unsafe_code)]
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_bpf, BPF_OBJ_GET, std::ptr::addr_of!(get), std::mem::size_of::<GetAttr>()) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    #[allow(unsafe_code)]
    let link = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    const BPF_OBJ_GET_INFO_BY_FD: nix::libc::c_long = 15;
    const BPF_LINK_TYPE_XDP: u32 = 6;
    // struct bpf_link_info: type, id, prog_id, then a union 8-byte aligned (offset 16),
    // whose xdp member starts with the ifindex.
    #[repr(C)]
    struct LinkInfo {
        link_type: u32,
        id: u32,
        prog_id: u32,
        _pad: u32,
        union: [u64; 8],
    }
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = LinkInfo { link_type: 0, id: 0, prog_id: 0, _pad: 0, union: [0; 8] };
    let attr = InfoAttr { bpf_fd: link.as_raw_fd() as u32, info_len: std::mem::size_of::<LinkInfo>() as u32, info: std::ptr::addr_of_mut!(info) as u64 };
    // SAFETY: BPF_OBJ_GET_INFO_BY_FD writes at most info_len bytes into `info`, which
    // lives until the call returns; `attr` is a valid bpf_attr prefix for this command.
    #[allow(unsafe_code)]
    let result = unsafe { nix::libc::syscall(nix::libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, std::ptr::addr_of!(attr), std::mem::size_of::<InfoAttr>()) };
    if result != 0 || info.link_type != BPF_LINK_TYPE_XDP {
        return None;
    }
    let ifindex = (info.union[0] & 0xffff_ffff) as u32;
    (ifindex != 0).then_some(ifindex)
}
