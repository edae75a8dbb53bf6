//! The end of a run on stderr: a one-line summary, or the same figures and the per-worker
//! ones as one JSON object (`--stats json`) for scripts.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::Duration;

use crate::monitor::Slot;
use crate::progress::human_rate;

/// What one worker slot did, as the CLI saw its answers.
#[derive(Debug, Clone, Default)]
pub struct WorkerTally {
    pub tasks: u64,
    pub busy: Duration,
}

pub struct Summary {
    pub tasks: u64,
    pub failed: u64,
    pub retries: u64,
    pub wall: Duration,
    pub jobs: usize,
    pub tallies: Vec<WorkerTally>,
    pub slots: HashMap<u32, Slot>,
}

impl Summary {
    /// Worker processes started beyond the first one of each slot.
    pub fn restarts(&self) -> u64 {
        self.slots
            .values()
            .map(|s| s.starts.saturating_sub(1))
            .sum()
    }

    fn rate(&self) -> f64 {
        self.tasks as f64 / self.wall.as_secs_f64().max(1e-6)
    }

    /// `zerotasq: 1000 tasks, 0 failed, 0 worker restarts, 0 re-queued in 1.2s (833/s)`
    pub fn text(&self) -> String {
        format!(
            "zerotasq: {} tasks, {} failed, {} worker restarts, {} re-queued in {} ({}/s)",
            self.tasks,
            self.failed,
            self.restarts(),
            self.retries,
            crate::duration::show(self.wall),
            human_rate(self.rate())
        )
    }

    pub fn json(&self) -> String {
        let mut out = format!(
            "{{\"tasks\":{},\"ok\":{},\"failed\":{},\"restarts\":{},\"requeued\":{},\
             \"wall_s\":{:.3},\"rate\":{:.1},\"workers\":[",
            self.tasks,
            self.tasks - self.failed,
            self.failed,
            self.restarts(),
            self.retries,
            self.wall.as_secs_f64(),
            self.rate()
        );
        for index in 0..self.jobs {
            let number = index as u32 + 1;
            let tally = self.tallies.get(index).cloned().unwrap_or_default();
            let slot = self.slots.get(&number).cloned().unwrap_or_default();
            if index > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"worker\":{number},\"tasks\":{},\"busy_s\":{:.3},\"starts\":{},\
                 \"deaths\":{},\"start_failures\":{}}}",
                tally.tasks,
                tally.busy.as_secs_f64(),
                slot.starts,
                slot.deaths,
                slot.start_failures
            );
        }
        out.push_str("]}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_one_entry_per_worker() {
        let summary = Summary {
            tasks: 10,
            failed: 1,
            retries: 2,
            wall: Duration::from_secs(2),
            jobs: 2,
            tallies: vec![WorkerTally {
                tasks: 9,
                busy: Duration::from_millis(500),
            }],
            slots: HashMap::new(),
        };
        let json = summary.json();
        assert!(
            json.starts_with("{\"tasks\":10,\"ok\":9,\"failed\":1,"),
            "{json}"
        );
        assert!(json.contains("{\"worker\":2,\"tasks\":0,"), "{json}");
        assert!(summary.text().contains("10 tasks, 1 failed"));
    }
}
