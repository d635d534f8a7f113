//! Restart policy: exponential back-off with jitter, minimum run time, and hold after
//! too many restarts in a window. Pure: time comes in as arguments.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mld_config::{RestartPolicy, TaskConfig};

/// What to do after a task exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after this delay.
    RestartAfter(Duration),
    /// Leave it down: too many restarts in the window (or the policy says never).
    Hold,
}

/// A task's restart history.
#[derive(Debug, Clone)]
pub struct RestartHistory {
    restarts_in_window: VecDeque<Instant>,
    /// Consecutive short runs, for the back-off exponent.
    consecutive_failures: u32,
    total_restarts: u32,
}

impl RestartHistory {
    pub fn new() -> RestartHistory {
        RestartHistory { restarts_in_window: VecDeque::new(), consecutive_failures: 0, total_restarts: 0 }
    }

    pub fn total_restarts(&self) -> u32 {
        self.total_restarts
    }

    /// Decides after an exit at `now` of a run that lasted `ran`. `jitter` in [0, 1)
    /// spreads restarts (up to +25% of the delay).
    pub fn on_exit(&mut self, config: &TaskConfig, now: Instant, ran: Duration, jitter: f64) -> Decision {
        if config.restart == RestartPolicy::Never {
            return Decision::Hold;
        }
        while self.restarts_in_window.front().is_some_and(|at| now.duration_since(*at) > config.hold_window) {
            self.restarts_in_window.pop_front();
        }
        if self.restarts_in_window.len() as u32 >= config.hold_after_restarts {
            return Decision::Hold;
        }
        if ran >= config.min_run {
            self.consecutive_failures = 0;
        }
        let exponent = self.consecutive_failures.min(20);
        let delay = config.backoff_initial.saturating_mul(1u32 << exponent).min(config.backoff_max);
        let delay = delay + delay.mul_f64(0.25 * jitter.clamp(0.0, 1.0));
        self.consecutive_failures += 1;
        self.restarts_in_window.push_back(now);
        self.total_restarts += 1;
        Decision::RestartAfter(delay)
    }
}

impl Default for RestartHistory {
    fn default() -> RestartHistory {
        RestartHistory::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TaskConfig {
        mld_config::Config::default().tasks[0].clone()
    }

    #[test]
    fn back_off_doubles_for_short_runs_and_resets_after_a_long_one() {
        let config = TaskConfig {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(350),
            min_run: Duration::from_secs(1),
            hold_after_restarts: 100,
            ..task()
        };
        let mut history = RestartHistory::new();
        let now = Instant::now();
        let short = Duration::from_millis(10);
        assert_eq!(history.on_exit(&config, now, short, 0.0), Decision::RestartAfter(Duration::from_millis(100)));
        assert_eq!(history.on_exit(&config, now, short, 0.0), Decision::RestartAfter(Duration::from_millis(200)));
        assert_eq!(history.on_exit(&config, now, short, 0.0), Decision::RestartAfter(Duration::from_millis(350)), "capped");
        assert_eq!(history.on_exit(&config, now, Duration::from_secs(5), 0.0), Decision::RestartAfter(Duration::from_millis(100)), "a long run resets");
        assert_eq!(history.on_exit(&config, now, short, 1.0), Decision::RestartAfter(Duration::from_millis(250)), "jitter adds up to 25%");
    }

    #[test]
    fn too_many_restarts_in_the_window_hold_the_task() {
        let config = TaskConfig { hold_after_restarts: 3, hold_window: Duration::from_secs(60), ..task() };
        let mut history = RestartHistory::new();
        let start = Instant::now();
        for _ in 0..3 {
            assert!(matches!(history.on_exit(&config, start, Duration::ZERO, 0.0), Decision::RestartAfter(_)));
        }
        assert_eq!(history.on_exit(&config, start, Duration::ZERO, 0.0), Decision::Hold);
        // Outside the window the count starts again.
        let later = start + Duration::from_secs(61);
        assert!(matches!(history.on_exit(&config, later, Duration::ZERO, 0.0), Decision::RestartAfter(_)));
    }

    #[test]
    fn never_means_hold() {
        let config = TaskConfig { restart: RestartPolicy::Never, ..task() };
        assert_eq!(RestartHistory::new().on_exit(&config, Instant::now(), Duration::ZERO, 0.0), Decision::Hold);
    }
}
