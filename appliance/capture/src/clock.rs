//! Kernel clocks. The XDP program stamps packets and deny expiries with CLOCK_BOOTTIME;
//! flows and logs use wall-clock time.

use nix::time::{clock_gettime, ClockId};

fn now_ns(clock: ClockId) -> u64 {
    let time = clock_gettime(clock).expect("clock_gettime on a standard clock cannot fail");
    time.tv_sec() as u64 * 1_000_000_000 + time.tv_nsec() as u64
}

/// CLOCK_BOOTTIME now, ns (what `bpf_ktime_get_boot_ns` returns).
pub fn boot_time_ns() -> u64 {
    now_ns(ClockId::CLOCK_BOOTTIME)
}

/// Add this to a CLOCK_BOOTTIME stamp to get ns since the Unix epoch.
pub fn boot_to_realtime_offset_ns() -> u64 {
    let boot = boot_time_ns();
    let real = now_ns(ClockId::CLOCK_REALTIME);
    real.saturating_sub(boot)
}
