//! The control-channel budget: how much of a task's control channel the supervisor
//! handles in one turn of its loop, and when a task counts as flooding it. Pure: the
//! caller passes the time in.
//!
//! The supervisor's loop is single-threaded (it forks the tasks), so a task that kept its
//! control socket full could hold it: nothing would be reaped, watched, restarted or shut
//! down on time. A legitimate task sends `Ready` once, `Counters` twice a second and
//! `Stopping` once: a few frames and a few kilobytes a second. The limits below are
//! hundreds of times that; a task over one of them for [`FLOOD_SECONDS`] seconds in a
//! row is killed and restarted under its restart policy.

use std::time::{Duration, Instant};

/// Bytes read from one task's control channel in one loop turn, at most.
pub const READ_BYTES_PER_TURN: usize = 64 * 1024;
/// Frames decoded from one task in one loop turn, at most (the rest wait for the next).
pub const FRAMES_PER_TURN: usize = 64;
/// Nothing more is read while this much waits to be decoded: one whole frame (its
/// length and the largest body `mld-ipc` accepts).
pub const MAX_BUFFERED_BYTES: usize = 4 + mld_ipc::MAX_FRAME_BYTES;
/// A second with more frames than this is over the limit.
pub const FLOOD_FRAMES_PER_SEC: u64 = 1_000;
/// A second with more bytes than this is over the limit.
pub const FLOOD_BYTES_PER_SEC: u64 = 1 << 20;
/// Seconds in a row over a limit that make a flood.
pub const FLOOD_SECONDS: u32 = 3;

/// A task found flooding its control channel: its rates over the last second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flood {
    pub frames_per_sec: u64,
    pub bytes_per_sec: u64,
}

impl std::fmt::Display for Flood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "control channel flood: {} frames/s, {} bytes/s for {FLOOD_SECONDS} s (limits {FLOOD_FRAMES_PER_SEC} frames/s, {FLOOD_BYTES_PER_SEC} bytes/s)",
            self.frames_per_sec, self.bytes_per_sec
        )
    }
}

/// What one task sent on its control channel, by one-second windows.
#[derive(Debug, Clone)]
pub struct ControlMeter {
    window_start: Instant,
    bytes: u64,
    frames: u64,
    seconds_over: u32,
}

impl ControlMeter {
    pub fn new(now: Instant) -> ControlMeter {
        ControlMeter { window_start: now, bytes: 0, frames: 0, seconds_over: 0 }
    }

    /// Counts what one turn read and decoded. Returns the flood once the task has been
    /// over a limit for [`FLOOD_SECONDS`] windows in a row.
    pub fn record(&mut self, now: Instant, bytes: usize, frames: usize) -> Option<Flood> {
        self.bytes += bytes as u64;
        self.frames += frames as u64;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < Duration::from_secs(1) {
            return None;
        }
        // Per second over the window (longer than a second when a turn came late).
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX).max(1);
        let rate = |count: u64| count.saturating_mul(1000) / elapsed_ms;
        let flood = Flood { frames_per_sec: rate(self.frames), bytes_per_sec: rate(self.bytes) };
        let over = flood.frames_per_sec > FLOOD_FRAMES_PER_SEC || flood.bytes_per_sec > FLOOD_BYTES_PER_SEC;
        self.seconds_over = if over { self.seconds_over + 1 } else { 0 };
        *self = ControlMeter { window_start: now, bytes: 0, frames: 0, seconds_over: self.seconds_over };
        (self.seconds_over >= FLOOD_SECONDS).then_some(flood)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `per_turn` (bytes, frames) every 10 ms for `seconds`; the first flood's time.
    fn run(meter: &mut ControlMeter, start: Instant, seconds: u64, per_turn: (usize, usize)) -> Option<(Duration, Flood)> {
        (1..=seconds * 100).find_map(|turn| {
            let at = Duration::from_millis(turn * 10);
            meter.record(start + at, per_turn.0, per_turn.1).map(|flood| (at, flood))
        })
    }

    #[test]
    fn a_legitimate_task_never_floods() {
        let start = Instant::now();
        let mut meter = ControlMeter::new(start);
        // Far more than a task sends (two 1 KiB frames a second): one frame every turn.
        assert_eq!(run(&mut meter, start, 60, (1024, 1)), None);
    }

    #[test]
    fn a_sustained_flood_is_found_after_its_seconds_and_a_burst_is_not() {
        let start = Instant::now();
        let mut meter = ControlMeter::new(start);
        let (at, flood) = run(&mut meter, start, 10, (700, FRAMES_PER_TURN)).expect("a flood of frames");
        assert_eq!(at, Duration::from_secs(u64::from(FLOOD_SECONDS)));
        assert_eq!(flood.frames_per_sec, 6400);
        assert!(flood.to_string().contains("6400 frames/s"), "{flood}");

        let mut meter = ControlMeter::new(start);
        assert!(run(&mut meter, start, 10, (READ_BYTES_PER_TURN, 1)).is_some(), "a flood of bytes");

        // Two seconds over, one quiet, two over: never three in a row.
        let mut meter = ControlMeter::new(start);
        let mut now = start;
        for (seconds, per_turn) in [(2, (700, 64)), (1, (0, 0)), (2, (700, 64)), (1, (0, 0))] {
            assert_eq!(run(&mut meter, now, seconds, per_turn), None);
            now += Duration::from_secs(seconds);
        }
    }
}
