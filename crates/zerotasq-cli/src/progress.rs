//! The progress bar on stderr (indicatif): tasks done, rate, workers alive, retries, and an
//! ETA when the input is a file of known size. Without a bar, lines go straight to stderr.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Figures the bar shows.
pub struct Figures {
    pub done: u64,
    pub failed: u64,
    pub bytes_read: u64,
    pub workers_alive: usize,
    pub retries: u64,
}

#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    last_update: Arc<Mutex<Instant>>,
}

impl Progress {
    /// A bar if `enabled`; `total_bytes` (the input file's size) gives it a length and an ETA.
    pub fn new(enabled: bool, total_bytes: Option<u64>) -> Progress {
        let bar = enabled.then(|| {
            let bar = match total_bytes {
                Some(total) => ProgressBar::with_draw_target(
                    Some(total),
                    ProgressDrawTarget::stderr_with_hz(10),
                )
                .with_style(
                    ProgressStyle::with_template("{wide_bar} {percent:>3}% ETA {eta:<4} {msg}")
                        .expect("valid template"),
                ),
                None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10))
                    .with_style(
                        ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                            .expect("valid template"),
                    ),
            };
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            started: Instant::now(),
            last_update: Arc::new(Mutex::new(Instant::now() - Duration::from_secs(1))),
        }
    }

    /// Whether it is time for [`Progress::update`] (cheap; at most 10 updates a second).
    pub fn due(&self) -> bool {
        let Some(_) = &self.bar else { return false };
        let mut last = self.last_update.lock().expect("progress lock");
        if last.elapsed() < Duration::from_millis(100) {
            return false;
        }
        *last = Instant::now();
        true
    }

    pub fn update(&self, f: &Figures) {
        let Some(bar) = &self.bar else { return };
        if bar.length().is_some() {
            bar.set_position(f.bytes_read);
        }
        let rate = f.done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        bar.set_message(format!(
            "{} done ({}/s), {} failed, {} workers, {} retries",
            f.done,
            human_rate(rate),
            f.failed,
            f.workers_alive,
            f.retries
        ));
    }

    /// Prints a line on stderr above the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| crate::run::say(line)),
            None => crate::run::say(line),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `950`, `12.3k`, `1.2M`.
pub fn human_rate(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.1}M", rate / 1e6)
    } else if rate >= 1e4 {
        format!("{:.1}k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}
