//! A worker process's I/O thread: the only user of its [`WorkerSession`]. It forwards tasks
//! to the task thread and results to the broker over an in-process pair, so heartbeats go
//! out on time even while a task runs for minutes.
//!
//! When the worker has limits ([`crate::worker_limits`]) it also keeps a ledger of the tasks
//! it handed over, and reads the task thread's [`Progress`]: a task past its time limit is
//! reported from here — the task thread is stuck in it — and the process then dies to be
//! restarted; when the task thread decides to recycle, the tasks it never started go back
//! from here.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::child::EXIT_TIMED_OUT;
use crate::error::Error;
use crate::protocol::{header, Command, Message};
use crate::transport::{Frame, SendError, Socket};
use crate::worker_runtime::ServeEnd;
use crate::worker_session::{Incoming, WorkerSession};

/// What the task thread publishes of its progress, read by the I/O thread.
#[derive(Debug)]
pub(crate) struct Progress {
    base: Instant,
    /// Tasks finished so far.
    finished: AtomicU64,
    /// When the running task started (nanoseconds after `base`, plus one); 0 when idle.
    running_since: AtomicU64,
    /// How many tasks the running call holds (a batch), the oldest handed over first.
    running: AtomicU64,
}

impl Progress {
    pub(crate) fn new() -> Progress {
        Progress {
            base: Instant::now(),
            finished: AtomicU64::new(0),
            running_since: AtomicU64::new(0),
            running: AtomicU64::new(1),
        }
    }

    pub(crate) fn started(&self, at: Instant) {
        self.started_many(at, 1);
    }

    /// A call running `count` tasks at once (a batch) started at `at`.
    pub(crate) fn started_many(&self, at: Instant, count: usize) {
        self.running.store(count as u64, Ordering::Release);
        let nanos = at.saturating_duration_since(self.base).as_nanos() as u64;
        self.running_since.store(nanos + 1, Ordering::Release);
    }

    pub(crate) fn finished(&self) {
        self.finished_many(1);
    }

    pub(crate) fn finished_many(&self, count: usize) {
        self.running_since.store(0, Ordering::Release);
        self.finished.fetch_add(count as u64, Ordering::AcqRel);
    }

    fn running_since(&self) -> Option<Instant> {
        match self.running_since.load(Ordering::Acquire) {
            0 => None,
            n => Some(self.base + Duration::from_nanos(n - 1)),
        }
    }
}

/// The tasks handed to the task thread and not yet finished, oldest first.
struct Ledger {
    handed: VecDeque<u64>,
    /// How many of the task thread's finished tasks were already taken off `handed`.
    taken: u64,
}

impl Ledger {
    /// Takes the finished tasks off; the rest, the running one (if any) first.
    fn open(&mut self, progress: &Progress) -> &VecDeque<u64> {
        let finished = progress.finished.load(Ordering::Acquire);
        while self.taken < finished && self.handed.pop_front().is_some() {
            self.taken += 1;
        }
        &self.handed
    }
}

/// Runs the I/O thread until the session ends, then tells the task thread how.
/// `limits`: the task thread's progress and the time limit per task, when the worker has
/// limits (otherwise no ledger is kept: tiny tasks pay nothing for it).
pub(crate) fn run(
    session: WorkerSession,
    pair: &Socket,
    limits: Option<(&Progress, Option<Duration>)>,
) {
    let mut io = Io {
        session,
        pair,
        ledger: limits.map(|_| Ledger {
            handed: VecDeque::new(),
            taken: 0,
        }),
        progress: limits.map(|(p, _)| p),
        limit: limits.and_then(|(_, limit)| limit),
    };
    let frames = match io.serve() {
        Ok(ServeEnd::Shutdown) => Message::Shutdown.encode(),
        Ok(ServeEnd::Recycled) => Message::Recycling.encode(),
        Ok(_) => Message::Goodbye.encode(),
        Err(Error::Refused(why)) => Message::Fatal(&why).encode(),
        Err(e) => {
            tracing::error!("worker I/O failed: {e}");
            Message::Goodbye.encode()
        }
    };
    let _ = pair.send(frames, true);
}

struct Io<'a> {
    session: WorkerSession,
    pair: &'a Socket,
    ledger: Option<Ledger>,
    progress: Option<&'a Progress>,
    limit: Option<Duration>,
}

impl Io<'_> {
    fn serve(&mut self) -> Result<ServeEnd, Error> {
        loop {
            let ready = self.session.wait_with(self.pair, self.wake_at())?;
            if ready.broker {
                while let Some(incoming) = self.session.recv()? {
                    match incoming {
                        Incoming::Tasks(tasks) => {
                            if let Some(ledger) = &mut self.ledger {
                                ledger.handed.extend(tasks.iter().map(|(id, _)| id));
                            }
                            send_pair(self.pair, tasks.into_frames())?;
                        }
                        Incoming::Shutdown => return Ok(ServeEnd::Shutdown),
                    }
                }
            }
            if ready.fd && self.forward_results()? {
                self.retire();
                return Ok(ServeEnd::Recycled);
            }
            if let Some(limit) = self.expired() {
                self.time_out(limit);
            }
            if !self.session.tick()? {
                return Ok(ServeEnd::BrokerLost);
            }
        }
    }

    fn wake_at(&self) -> Instant {
        let deadline = self.session.next_deadline();
        match (self.progress.and_then(Progress::running_since), self.limit) {
            (Some(since), Some(limit)) => deadline.min(since + limit),
            _ => deadline,
        }
    }

    /// Sends the task thread's results on; true when it asked to recycle the worker.
    fn forward_results(&mut self) -> Result<bool, Error> {
        while let Some(frames) = self.pair.recv(false)? {
            if frames
                .first()
                .is_some_and(|h| h[..] == header(Command::Recycling))
            {
                return Ok(true);
            }
            self.session.send_frames(frames)?;
        }
        Ok(false)
    }

    /// The time limit, if the running task has run past it.
    fn expired(&self) -> Option<Duration> {
        let (since, limit) = (self.progress?.running_since()?, self.limit?);
        (Instant::now() >= since + limit).then_some(limit)
    }

    /// Reports the running task as timed out, hands back the tasks after it, and ends the
    /// process: the task thread is stuck in user code, and only a fresh process is sure to
    /// be free of it. The supervisor (or the remote host's) restarts the worker.
    fn time_out(&mut self, limit: Duration) -> ! {
        // Results that came in while we looked go first: a task that just finished is
        // not the one that timed out.
        let _ = self.forward_results();
        let progress = self.progress.expect("a time limit comes with progress");
        let open: Vec<u64> = match &mut self.ledger {
            Some(ledger) => ledger.open(progress).iter().copied().collect(),
            None => Vec::new(),
        };
        // The running call's tasks (one, or a batch) are charged; the rest go back.
        let count = (progress.running.load(Ordering::Acquire) as usize).min(open.len());
        let (running, unstarted) = open.split_at(count);
        if progress.running_since().is_some() && !running.is_empty() {
            tracing::warn!(
                "{} task(s) ran past the time limit of {limit:?}; restarting",
                running.len()
            );
            for &id in running {
                let _ = self.session.time_out(id, limit);
            }
            self.session.leave(unstarted.to_vec(), None);
        }
        // SAFETY: _exit ends the process at once; nothing of ours needs unwinding, and the
        // task thread must not run on.
        unsafe { libc::_exit(EXIT_TIMED_OUT) }
    }

    /// Leaves to be replaced: hands back every task handed over and not finished (the task
    /// thread stopped between tasks, so none is running).
    fn retire(&mut self) {
        let unstarted = match (&mut self.ledger, self.progress) {
            (Some(ledger), Some(progress)) => ledger.open(progress).iter().copied().collect(),
            _ => Vec::new(),
        };
        self.session.retire(unstarted, None);
    }
}

fn send_pair(pair: &Socket, frames: Vec<Frame>) -> Result<(), Error> {
    pair.send(frames, true).map_err(|e| match e {
        SendError::Other(e) => e,
        _ => Error::Closed,
    })
}
