//! The start-up policy: local children that have not registered yet, and when a pool whose
//! workers keep failing `init` fails its tasks.
//!
//! Past `max_init_failures` failures in a row, with no worker ready, the pool fails with the
//! workers' own reason: open and new tasks end as `InitFailed` errors rather than wait. It
//! is not dead for good: children are still restarted with back-off, and once one is ready
//! the pool runs tasks again. A child killed by SIGKILL during init without a reason of its
//! own was killed from outside (a user, the OOM killer), not failed by its code: such kills
//! count only past a limit ten times larger (a model that never fits in memory still ends
//! in a clear error rather than a wait without end). A child's reason travels on the workers' socket and the news of its
//! exit on the supervisor's, so the exit may come first: the pool then waits up to
//! [`REASON_GRACE`] for the reason before failing with what it knows. That wait is this
//! part's deadline ([`Startup::next_deadline`]).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// How long a pool about to fail waits for a worker's own reason for its failed init.
pub(super) const REASON_GRACE: Duration = Duration::from_millis(500);
/// SIGKILLs during init count as failures only this many times more often in a row.
const KILLED_FACTOR: u32 = 10;
/// Children remembered as having exited before their reason came; beyond it the list
/// starts over (a reason arriving later is then counted as a failure of its own).
const MAX_EXITED_IN_INIT: usize = 1_000;

pub(super) struct Startup {
    /// Failures in a row, with none ready, after which the pool fails.
    max_in_a_row: u32,
    /// Local children started but not yet ready, with their init error if they sent one.
    starting: HashMap<Vec<u8>, Option<String>>,
    in_a_row: u32,
    /// The latest reason a worker gave for its failed init.
    last_error: Option<String>,
    /// Children that exited during init before their reason arrived.
    exited_in_init: HashSet<Vec<u8>>,
    /// The pool is to fail at this time, with this reason, unless a worker's own reason
    /// arrives first.
    failure_due: Option<(Instant, String)>,
    /// Set when the pool can no longer run tasks; every task then fails with it.
    failed: Option<String>,
    /// Failed inits counted, for the figures.
    failures: u64,
    /// Children killed by SIGKILL during init in a row, with none ready.
    killed_in_a_row: u32,
}

impl Startup {
    pub(super) fn new(max_in_a_row: u32) -> Self {
        Startup {
            max_in_a_row,
            starting: HashMap::new(),
            in_a_row: 0,
            last_error: None,
            exited_in_init: HashSet::new(),
            failure_due: None,
            failed: None,
            failures: 0,
            killed_in_a_row: 0,
        }
    }

    /// Why the pool failed, if it did.
    pub(super) fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    pub(super) fn init_failures(&self) -> u64 {
        self.failures
    }

    pub(super) fn is_starting(&self, identity: &[u8]) -> bool {
        self.starting.contains_key(identity)
    }

    pub(super) fn child_started(&mut self, identity: &[u8]) {
        self.starting.insert(identity.to_vec(), None);
    }

    /// A worker registered: the failures in a row are over, and a pool that had failed runs
    /// tasks again. True if it was one of our local children (it just became ready).
    pub(super) fn worker_ready(&mut self, identity: &[u8]) -> bool {
        self.in_a_row = 0;
        self.killed_in_a_row = 0;
        self.failure_due = None;
        if self.failed.take().is_some() {
            tracing::info!("a worker is ready: the pool runs tasks again");
        }
        self.starting.remove(identity).is_some()
    }

    /// A child that was starting exited. True if the pool failed just now.
    pub(super) fn exited_during_init(
        &mut self,
        identity: &[u8],
        status: &str,
        any_ready: bool,
        now: Instant,
    ) -> bool {
        let Some(init_error) = self.starting.remove(identity) else {
            return false;
        };
        let killed = init_error.is_none() && status.ends_with("killed by signal 9");
        if killed {
            self.killed_in_a_row += 1;
            if self.killed_in_a_row < self.max_in_a_row.saturating_mul(KILLED_FACTOR) || any_ready {
                return false;
            }
        }
        if init_error.is_none() {
            if self.exited_in_init.len() > MAX_EXITED_IN_INIT {
                self.exited_in_init.clear();
            }
            self.exited_in_init.insert(identity.to_vec());
        }
        let fallback = format!("worker exited during init ({status})");
        self.count(init_error, fallback, any_ready, now)
    }

    /// A worker's reason for its failed init. True if the pool failed just now.
    pub(super) fn reason(
        &mut self,
        identity: &[u8],
        text: &str,
        any_ready: bool,
        now: Instant,
    ) -> bool {
        if let Some(slot) = self.starting.get_mut(identity) {
            *slot = Some(text.to_string());
            false
        } else if self.exited_in_init.remove(identity) {
            // Its exit was counted already; this is the reason, arriving second.
            self.last_error = Some(text.to_string());
            self.failure_due.take().is_some() && self.fail(text)
        } else {
            // A worker we did not start (remote): count it here, once.
            self.count(Some(text.to_string()), String::new(), any_ready, now)
        }
    }

    /// The wait for a reason is over: the pool fails with what it knows. True if the pool
    /// failed just now.
    pub(super) fn tick(&mut self, now: Instant) -> bool {
        match self.failure_due.take() {
            Some((due, fallback)) if due <= now => self.fail(&fallback),
            not_due => {
                self.failure_due = not_due;
                false
            }
        }
    }

    /// When [`Startup::tick`] next has something to do.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.failure_due.as_ref().map(|(due, _)| *due)
    }

    /// Counts a failed init. Past the limit, with no worker ready, the pool fails — with the
    /// workers' own reason, waited for briefly if it has not arrived yet (`fallback` then).
    fn count(
        &mut self,
        reason: Option<String>,
        fallback: String,
        any_ready: bool,
        now: Instant,
    ) -> bool {
        self.failures += 1;
        self.in_a_row += 1;
        if reason.is_some() {
            self.last_error = reason;
        }
        if self.in_a_row < self.max_in_a_row || any_ready {
            return false;
        }
        match self.last_error.clone() {
            Some(reason) => self.fail(&reason),
            None => {
                self.failure_due = Some((now + REASON_GRACE, fallback));
                false
            }
        }
    }

    /// Records that the pool cannot start workers. True the first time.
    fn fail(&mut self, reason: &str) -> bool {
        if self.failed.is_some() {
            return false;
        }
        self.failed = Some(format!(
            "no worker could start: init failed {} times in a row; last error: {reason}",
            self.in_a_row
        ));
        true
    }
}
