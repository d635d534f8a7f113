//! The maps of the XDP program, as pinned in bpffs, with typed operations.
//!
//! Layouts mirror `ebpf/include/mld_shared.h` (checked by `tests/shared_header.rs`).
//! Every address is stored as IPv6 (IPv4 as ::ffff:a.b.c.d), so one trie serves both
//! families.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray};
use mld_config::IpPrefix;

use crate::clock::boot_time_ns;
use crate::error::CaptureError;

pub const ALLOW_MAP: &str = "mld_allow";
pub const DENY_MAP: &str = "mld_deny";
pub const COUNTERS_MAP: &str = "mld_counters";
pub const IFACES_MAP: &str = "mld_ifaces";
pub const EVENTS_MAP: &str = "mld_events";

/// Maps pinned for other commands (the ring buffer is read by the capture only).
pub const PINNED_MAPS: [&str; 4] = [ALLOW_MAP, DENY_MAP, COUNTERS_MAP, IFACES_MAP];

/// Counter indices (`MLD_CTR_*`).
pub mod counter {
    pub const PASSED: u32 = 0;
    pub const ALLOWED: u32 = 1;
    pub const DROPPED: u32 = 2;
    pub const MALFORMED: u32 = 3;
    pub const RING_FULL: u32 = 4;
    pub const NOT_IP: u32 = 5;
    pub const EXPIRED: u32 = 6;
    pub const DROP_REASON: u32 = 8;
    pub const REASONS: u32 = 8;
    pub const COUNT: u32 = DROP_REASON + REASONS;
}

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

/// Why a source is denied (`MLD_REASON_*`): which drop counter its packets bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    Manual,
    Scan,
    Flood,
    BruteForce,
    Slow,
    Other,
}

impl DenyReason {
    pub const ALL: [DenyReason; 6] =
        [DenyReason::Manual, DenyReason::Scan, DenyReason::Flood, DenyReason::BruteForce, DenyReason::Slow, DenyReason::Other];

    pub fn code(self) -> u32 {
        match self {
            DenyReason::Manual => 0,
            DenyReason::Scan => 1,
            DenyReason::Flood => 2,
            DenyReason::BruteForce => 3,
            DenyReason::Slow => 4,
            DenyReason::Other => 5,
        }
    }

    pub fn from_code(code: u32) -> DenyReason {
        DenyReason::ALL.into_iter().find(|reason| reason.code() == code).unwrap_or(DenyReason::Other)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::Manual => "manual",
            DenyReason::Scan => "scan",
            DenyReason::Flood => "flood",
            DenyReason::BruteForce => "brute-force",
            DenyReason::Slow => "slow",
            DenyReason::Other => "other",
        }
    }

    pub fn parse(text: &str) -> Option<DenyReason> {
        DenyReason::ALL.into_iter().find(|reason| reason.as_str() == text)
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
    pub dropped_by_reason: [u64; counter::REASONS as usize],
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

/// The XDP program's maps, opened from their pins.
pub struct PinnedMaps {
    dir: PathBuf,
    allow: LpmTrie<MapData, [u8; 16], u32>,
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
        let allow = LpmTrie::try_from(Map::LpmTrie(open(ALLOW_MAP)?)).map_err(|error| CaptureError::map("use", ALLOW_MAP, error))?;
        let deny = LpmTrie::try_from(Map::LpmTrie(open(DENY_MAP)?)).map_err(|error| CaptureError::map("use", DENY_MAP, error))?;
        let counters = PerCpuArray::try_from(Map::PerCpuArray(open(COUNTERS_MAP)?))
            .map_err(|error| CaptureError::map("use", COUNTERS_MAP, error))?;
        Ok(PinnedMaps { dir: dir.to_path_buf(), allow, deny, counters })
    }

    /// The maps behind fds handed over by the supervisor.
    pub fn from_fds(allow: std::os::fd::OwnedFd, deny: std::os::fd::OwnedFd, counters: std::os::fd::OwnedFd) -> Result<PinnedMaps, CaptureError> {
        let open = |fd, name: &'static str| MapData::from_fd(fd).map_err(|error| CaptureError::map("open", name, error));
        let allow = LpmTrie::try_from(Map::LpmTrie(open(allow, ALLOW_MAP)?)).map_err(|error| CaptureError::map("use", ALLOW_MAP, error))?;
        let deny = LpmTrie::try_from(Map::LpmTrie(open(deny, DENY_MAP)?)).map_err(|error| CaptureError::map("use", DENY_MAP, error))?;
        let counters = PerCpuArray::try_from(Map::PerCpuArray(open(counters, COUNTERS_MAP)?))
            .map_err(|error| CaptureError::map("use", COUNTERS_MAP, error))?;
        Ok(PinnedMaps { dir: PathBuf::from("(fds from the supervisor)"), allow, deny, counters })
    }

    pub fn allow_add(&mut self, prefix: &IpPrefix) -> Result<(), CaptureError> {
        self.allow.insert(&key_of(prefix), 1, 0).map_err(|error| CaptureError::map("insert into", ALLOW_MAP, error))
    }

    /// Removes an exact allow entry; false when there was none.
    pub fn allow_del(&mut self, prefix: &IpPrefix) -> Result<bool, CaptureError> {
        remove_exact(&mut self.allow, prefix, ALLOW_MAP)
    }

    pub fn allow_list(&self) -> Result<Vec<IpPrefix>, CaptureError> {
        let mut prefixes = Vec::new();
        for entry in self.allow.iter() {
            let (key, _) = entry.map_err(|error| CaptureError::map("read", ALLOW_MAP, error))?;
            prefixes.extend(prefix_of(&key));
        }
        prefixes.sort();
        Ok(prefixes)
    }

    /// Adds (or replaces) a deny entry. Refused when an allow entry covers the prefix:
    /// the allowlist always wins.
    pub fn deny_add(&mut self, prefix: &IpPrefix, ttl: Option<Duration>, reason: DenyReason) -> Result<(), CaptureError> {
        if let Some(allowed) = self.allow_list()?.into_iter().find(|allowed| allowed.covers(prefix)) {
            return Err(CaptureError::Refused(format!("{prefix} is covered by allowlist entry {allowed}; allowlisted sources are never blocked")));
        }
        let expires_ns = match ttl {
            Some(ttl) => boot_time_ns().saturating_add(ttl.as_nanos() as u64).max(1),
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
            dropped_by_reason: [0; counter::REASONS as usize],
        };
        for reason in 0..counter::REASONS {
            counters.dropped_by_reason[reason as usize] = read(counter::DROP_REASON + reason)?;
        }
        Ok(counters)
    }
}

fn remove_exact<V: aya::Pod>(trie: &mut LpmTrie<MapData, [u8; 16], V>, prefix: &IpPrefix, map: &'static str) -> Result<bool, CaptureError> {
    match trie.remove(&key_of(prefix)) {
        Ok(()) => Ok(true),
        Err(aya::maps::MapError::KeyNotFound) => Ok(false),
        Err(aya::maps::MapError::SyscallError(syscall)) if syscall.io_error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(CaptureError::map("delete from", map, error)),
    }
}

/// Writes the interface roles the XDP program stamps as packet direction.
pub(crate) fn set_interface_direction(map: &mut Map, ifindex: u32, direction: u32) -> Result<(), CaptureError> {
    let mut ifaces: BpfHashMap<&mut MapData, u32, u32> =
        BpfHashMap::try_from(map).map_err(|error| CaptureError::map("use", IFACES_MAP, error))?;
    ifaces.insert(ifindex, direction, 0).map_err(|error| CaptureError::map("insert into", IFACES_MAP, error))
}

fn libc_eperm() -> i32 {
    nix::errno::Errno::EPERM as i32
}
