//! The CLI's side of the events pipe: a thread that passes the workers' stderr through
//! (each line prefixed with the worker's number), keeps each worker's last lines, and
//! records why workers died and on which record, so a failed task can be reported with its
//! cause.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::events::Event;
use crate::progress::Progress;

/// Stderr lines kept per worker.
const TAIL_LINES: usize = 10;
/// Deaths remembered at most (entries leave when their task's outcome is reported).
const MAX_DEATHS: usize = 100_000;

/// Why a record's workers died: the last reason and that worker's last stderr lines.
#[derive(Debug, Clone, Default)]
pub struct Death {
    pub count: u32,
    pub worker: u32,
    pub reason: String,
    pub tail: Vec<String>,
}

/// What each worker slot went through.
#[derive(Debug, Clone, Default)]
pub struct Slot {
    pub starts: u64,
    pub deaths: u64,
    pub start_failures: u64,
    tail: VecDeque<String>,
}

#[derive(Default)]
struct State {
    slots: HashMap<u32, Slot>,
    deaths: HashMap<u64, Death>,
    start_failure: Option<(u32, String)>,
    /// The first command that broke the line protocol, and how.
    desync: Option<(u32, String)>,
    /// The last death of a worker command in this run: its worker and reason.
    last_death: Option<(u32, String)>,
    /// The warning for a silent worker was printed (once per run).
    warned_silent: bool,
}

#[derive(Clone)]
pub struct Monitor {
    state: Arc<(Mutex<State>, Condvar)>,
}

impl Monitor {
    /// Starts the reader thread on the pipe's read end.
    pub fn start(pipe: File, progress: Progress) -> Monitor {
        let monitor = Monitor {
            state: Arc::new((Mutex::new(State::default()), Condvar::new())),
        };
        let reader = monitor.clone();
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || reader.read(pipe, progress))
            .expect("start the events thread");
        monitor
    }

    fn read(&self, pipe: File, progress: Progress) {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            line.pop();
            if let Some(event) = Event::parse(&line) {
                self.apply(event, &progress);
            }
            line.clear();
        }
    }

    fn apply(&self, event: Event, progress: &Progress) {
        let (lock, changed) = &*self.state;
        let mut state = lock.lock().expect("monitor lock");
        match event {
            Event::Started { worker, .. } => state.slots.entry(worker).or_default().starts += 1,
            Event::Stderr { worker, text, .. } => {
                let text = String::from_utf8_lossy(&text).into_owned();
                progress.println(&format!("[w{worker}] {text}"));
                let tail = &mut state.slots.entry(worker).or_default().tail;
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(text);
            }
            Event::Died {
                worker,
                record,
                reason,
            } => {
                // The first death is told when it happens (a command that exits after each
                // line is slow for no reason the output shows); the rest go to the summary
                // and to the failed records' reports.
                if state.last_death.is_none() {
                    let event = Event::Died {
                        worker,
                        record,
                        reason: reason.clone(),
                    };
                    if let Some(text) = event.human() {
                        progress.println(&format!("{text}; restarted"));
                    }
                }
                state.last_death = Some((worker, reason.clone()));
                let slot = state.slots.entry(worker).or_default();
                slot.deaths += 1;
                let tail: Vec<String> = slot.tail.drain(..).collect();
                if record != 0 {
                    if state.deaths.len() >= MAX_DEATHS {
                        state.deaths.clear();
                    }
                    let death = state.deaths.entry(record).or_default();
                    death.count += 1;
                    death.worker = worker;
                    death.reason = reason;
                    death.tail = tail;
                }
            }
            Event::StartFailed { worker, reason } => {
                state.slots.entry(worker).or_default().start_failures += 1;
                state.start_failure = Some((worker, reason));
            }
            // Planned: the broker's figures count it; a run's output stays quiet.
            Event::Recycled { .. } => {}
            Event::Desync { worker, reason } => {
                state.desync.get_or_insert((worker, reason));
            }
            Event::Silent { .. } if !state.warned_silent => {
                state.warned_silent = true;
                if let Some(text) = event.human() {
                    progress.println(&text);
                }
            }
            Event::Silent { .. } => {}
        }
        changed.notify_all();
    }

    /// Why `record`'s workers died, waiting up to `wait` for the news (it travels apart from
    /// the task's outcome).
    pub fn death(&self, record: u64, wait: Duration) -> Option<Death> {
        let (lock, changed) = &*self.state;
        let deadline = Instant::now() + wait;
        let mut state = lock.lock().expect("monitor lock");
        loop {
            if let Some(death) = state.deaths.remove(&record) {
                return Some(death);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = changed.wait_timeout(state, left).expect("monitor lock").0;
        }
    }

    /// Forgets a record that has its outcome.
    pub fn forget(&self, record: u64) {
        let (lock, _) = &*self.state;
        let mut state = lock.lock().expect("monitor lock");
        if !state.deaths.is_empty() {
            state.deaths.remove(&record);
        }
    }

    /// Of `candidates`, the record whose workers died most often.
    pub fn most_deaths(&self, candidates: impl Iterator<Item = u64>) -> Option<u64> {
        let (lock, _) = &*self.state;
        let state = lock.lock().expect("monitor lock");
        candidates
            .filter_map(|r| {
                state
                    .deaths
                    .get(&r)
                    .map(|d| (d.count, std::cmp::Reverse(r)))
            })
            .max()
            .map(|(_, std::cmp::Reverse(r))| r)
    }

    /// The last start-up failure: worker number and reason.
    pub fn start_failure(&self) -> Option<(u32, String)> {
        let (lock, _) = &*self.state;
        lock.lock().expect("monitor lock").start_failure.clone()
    }

    /// The first worker command that broke the line protocol, and how, if one did.
    pub fn desync(&self) -> Option<(u32, String)> {
        let (lock, _) = &*self.state;
        lock.lock().expect("monitor lock").desync.clone()
    }

    /// How many worker commands died in this run, and the last one's worker and reason.
    pub fn deaths(&self) -> (u64, Option<(u32, String)>) {
        let (lock, _) = &*self.state;
        let state = lock.lock().expect("monitor lock");
        let deaths = state.slots.values().map(|slot| slot.deaths).sum();
        (deaths, state.last_death.clone())
    }

    /// Per-slot figures, by worker number.
    pub fn slots(&self) -> HashMap<u32, Slot> {
        let (lock, _) = &*self.state;
        lock.lock().expect("monitor lock").slots.clone()
    }
}
