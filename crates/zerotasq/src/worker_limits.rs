//! The limits a worker keeps on itself, the same in every face: a time limit per task, and
//! recycling — leaving to be replaced by a fresh worker after so many tasks, so much
//! resident memory, or so long — for models that leak or fragment memory.
//!
//! A worker enforces them itself (the broker cannot see inside a process, and a remote
//! worker's host is the one that can kill it): a task past its limit is reported with
//! `TimedOut` and the worker dies and is restarted; a worker due for recycling hands back what
//! it has not started, says `Recycling`, and exits to be replaced at once. Each worker's
//! task-count and age limits are spread by up to ±10 % from the configured value, so workers
//! started together do not all leave together.

use std::time::{Duration, Instant};

/// When a worker leaves to be replaced; `None` fields never trigger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recycling {
    /// Tasks a worker runs before it is replaced.
    pub max_tasks: Option<u64>,
    /// Resident memory (bytes) past which a worker is replaced, checked between tasks.
    pub max_memory: Option<u64>,
    /// How long a worker serves before it is replaced.
    pub max_age: Option<Duration>,
}

impl Recycling {
    /// Whether any limit is set.
    pub fn is_set(&self) -> bool {
        self.max_tasks.is_some() || self.max_memory.is_some() || self.max_age.is_some()
    }
}

/// Why a worker is being recycled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecycleReason {
    /// It ran its share of tasks.
    Tasks(u64),
    /// Its resident memory passed the limit (bytes seen).
    Memory(u64),
    /// It served for its share of time.
    Age(Duration),
}

impl std::fmt::Display for RecycleReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecycleReason::Tasks(n) => write!(f, "ran {n} tasks"),
            RecycleReason::Memory(bytes) => write!(f, "resident memory {} MiB", bytes >> 20),
            RecycleReason::Age(age) => write!(f, "served for {age:.1?}"),
        }
    }
}

/// One worker's progress towards recycling.
#[derive(Debug)]
pub struct RecycleCheck {
    limits: Recycling,
    started: Instant,
    tasks: u64,
    /// Whose resident memory counts (this process, or the command an adapter runs).
    pid: u32,
    /// When memory was last read.
    memory_read: Option<Instant>,
}

/// Memory is read from `/proc` between tasks, but not more often than this: a read costs
/// microseconds, and tiny tasks come by the thousand.
const MEMORY_EVERY: Duration = Duration::from_millis(2);

impl RecycleCheck {
    /// Starts counting for a worker whose memory is process `pid`'s; `seed` (e.g. its routing
    /// id) spreads the task-count and age limits.
    pub fn new(limits: Recycling, pid: u32, seed: &[u8]) -> RecycleCheck {
        let spread = spread(seed);
        RecycleCheck {
            limits: Recycling {
                max_tasks: limits
                    .max_tasks
                    .map(|n| ((n as f64 * spread).round() as u64).max(1)),
                max_age: limits.max_age.map(|age| age.mul_f64(spread)),
                max_memory: limits.max_memory,
            },
            started: Instant::now(),
            tasks: 0,
            pid,
            memory_read: None,
        }
    }

    /// The limits in force for this worker (spread).
    pub fn limits(&self) -> &Recycling {
        &self.limits
    }

    /// Counts `n` finished tasks; the reason to leave now, if one is due.
    pub fn tasks_done(&mut self, n: u64) -> Option<RecycleReason> {
        self.tasks += n;
        if let Some(max) = self.limits.max_tasks {
            if self.tasks >= max {
                return Some(RecycleReason::Tasks(self.tasks));
            }
        }
        let now = Instant::now();
        if let Some(max) = self.limits.max_memory {
            if self.memory_read.is_none_or(|at| now >= at + MEMORY_EVERY) {
                self.memory_read = Some(now);
                let rss = resident_memory(self.pid).unwrap_or(0);
                if rss > max {
                    return Some(RecycleReason::Memory(rss));
                }
            }
        }
        self.aged(now)
    }

    /// The reason to leave because of age, if it is due at `now`.
    pub fn aged(&self, now: Instant) -> Option<RecycleReason> {
        let age = now.duration_since(self.started);
        let max = self.limits.max_age?;
        (age >= max).then_some(RecycleReason::Age(age))
    }

    /// When the age limit falls due, if one is set.
    pub fn deadline(&self) -> Option<Instant> {
        self.limits.max_age.map(|age| self.started + age)
    }
}

/// A factor in [0.9, 1.1] drawn from `seed` (FNV-1a), the same for the same seed.
fn spread(seed: &[u8]) -> f64 {
    let hash = seed.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    });
    0.9 + 0.2 * (hash % 10_001) as f64 / 10_000.0
}

/// The resident memory of process `pid`, in bytes (`/proc/PID/statm`, resident pages).
pub fn resident_memory(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).unwrap_or(4096))
}

/// The task a worker is running and since when, for the time limit.
#[derive(Debug)]
pub struct TaskTimer {
    limit: Option<Duration>,
    running: Option<(u64, Instant)>,
}

impl TaskTimer {
    /// A timer for tasks of at most `limit` (none: never expires).
    pub fn new(limit: Option<Duration>) -> TaskTimer {
        TaskTimer {
            limit,
            running: None,
        }
    }

    /// Task `id` started at `at`.
    pub fn start(&mut self, id: u64, at: Instant) {
        self.running = Some((id, at));
    }

    /// No task runs now.
    pub fn stop(&mut self) {
        self.running = None;
    }

    /// When the running task passes its limit.
    pub fn deadline(&self) -> Option<Instant> {
        Some(self.running?.1 + self.limit?)
    }

    /// The running task and the limit, if it has passed it at `now`.
    pub fn expired(&self, now: Instant) -> Option<(u64, Duration)> {
        let (id, _) = self.running?;
        (now >= self.deadline()?).then(|| (id, self.limit.expect("a deadline has a limit")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_counts_are_spread_around_the_limit_and_trigger_once_reached() {
        let limits = Recycling {
            max_tasks: Some(100),
            ..Recycling::default()
        };
        let shares: Vec<u64> = (0..50)
            .map(|i| {
                let check =
                    RecycleCheck::new(limits, std::process::id(), format!("w-{i}").as_bytes());
                check.limits().max_tasks.unwrap()
            })
            .collect();
        assert!(
            shares.iter().all(|&n| (90..=110).contains(&n)),
            "{shares:?}"
        );
        assert!(
            shares.iter().any(|&n| n != shares[0]),
            "not all the same: {shares:?}"
        );

        let mut check = RecycleCheck::new(limits, std::process::id(), b"w-1");
        let max = check.limits().max_tasks.unwrap();
        assert_eq!(check.tasks_done(max - 1), None);
        assert_eq!(check.tasks_done(1), Some(RecycleReason::Tasks(max)));
    }

    #[test]
    fn memory_over_the_limit_is_seen_and_under_it_is_not() {
        let rss = resident_memory(std::process::id()).expect("our own statm");
        assert!(rss > 1 << 20, "{rss}");
        let high = Recycling {
            max_memory: Some(rss * 100),
            ..Recycling::default()
        };
        assert_eq!(
            RecycleCheck::new(high, std::process::id(), b"a").tasks_done(1),
            None
        );
        let low = Recycling {
            max_memory: Some(1 << 10),
            ..Recycling::default()
        };
        let reason = RecycleCheck::new(low, std::process::id(), b"a").tasks_done(1);
        assert!(
            matches!(reason, Some(RecycleReason::Memory(b)) if b > 1 << 10),
            "{reason:?}"
        );
    }

    #[test]
    fn age_falls_due_at_the_spread_deadline() {
        let limits = Recycling {
            max_age: Some(Duration::from_secs(10)),
            ..Recycling::default()
        };
        let check = RecycleCheck::new(limits, std::process::id(), b"x");
        let deadline = check.deadline().unwrap();
        assert_eq!(check.aged(deadline - Duration::from_millis(1)), None);
        assert!(matches!(check.aged(deadline), Some(RecycleReason::Age(_))));
    }

    #[test]
    fn the_timer_expires_only_while_a_task_runs_past_its_limit() {
        let t0 = Instant::now();
        let mut timer = TaskTimer::new(Some(Duration::from_secs(1)));
        assert_eq!(timer.expired(t0 + Duration::from_secs(5)), None, "idle");
        timer.start(7, t0);
        assert_eq!(timer.expired(t0 + Duration::from_millis(999)), None);
        assert_eq!(
            timer.expired(t0 + Duration::from_secs(1)),
            Some((7, Duration::from_secs(1)))
        );
        timer.stop();
        assert_eq!(timer.deadline(), None);
        let mut unlimited = TaskTimer::new(None);
        unlimited.start(1, t0);
        assert_eq!(unlimited.expired(t0 + Duration::from_secs(3600)), None);
    }
}
