//! Progress of long work (a replay of large captures): on a terminal, one line redrawn
//! in place with the rate and the time left (indicatif); otherwise a plain line every
//! [`PLAIN_EVERY`], and a last one at the end of work that took that long, so that a log
//! or a CI job shows it too.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a plain progress line is printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    what: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    bar: Option<indicatif::ProgressBar>,
    last_line: Instant,
}

impl Progress {
    /// Progress of `what` over `total` bytes, on stderr.
    pub fn bytes(what: &'static str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr_with_hz(4));
            let style = indicatif::ProgressStyle::with_template("{msg}: {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}, {eta} left")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message(what);
            bar
        });
        let now = Instant::now();
        Progress { what, total, done: 0, started: now, bar, last_line: now }
    }

    /// `done` bytes of the total are done.
    pub fn set(&mut self, done: u64) {
        self.done = done.min(self.total);
        match &self.bar {
            Some(bar) => bar.set_position(self.done),
            None if self.last_line.elapsed() >= PLAIN_EVERY => {
                self.last_line = Instant::now();
                eprintln!("{}", self.line());
            }
            None => {}
        }
    }

    /// The plain line: share, amounts, rate, time left.
    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.done as f64 / secs;
        let left = if rate > 0.0 { format!("{:.0} s left", (self.total - self.done) as f64 / rate) } else { "time left unknown".to_string() };
        let mib = |bytes: u64| bytes as f64 / f64::from(1u32 << 20);
        format!(
            "{}: {:.0}% ({:.1} of {:.1} MiB), {:.1} MiB/s, {left}",
            self.what,
            if self.total == 0 { 100.0 } else { self.done as f64 * 100.0 / self.total as f64 },
            mib(self.done),
            mib(self.total),
            mib(self.done) / secs
        )
    }

    /// The work is over: the bar is cleared (the caller prints its summary); without a
    /// terminal, a last plain line when a line was printed before.
    pub fn finish(self) {
        match self.bar {
            Some(bar) => bar.finish_and_clear(),
            None if self.last_line > self.started => eprintln!("{}", self.line()),
            None => {}
        }
    }
}
