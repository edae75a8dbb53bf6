//! The workers' side: who is registered, what each holds, its credit and batch size, the
//! least-recently-used queue of workers with free credit, and each worker's two deadlines —
//! when it is owed a heartbeat, and when its silence makes it dead.
//!
//! The deadlines are kept in time order ([`Deadlines`]), so a tick and
//! [`Workers::next_deadline`] touch only the workers that are due, not every worker: with a
//! thousand workers the broker's loop would otherwise scan them all on every iteration.
//! Everything else here is O(1) per message, but for a worker's death or retirement, which
//! takes it out of the LRU queue.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::tasks::PeerId;
use super::BrokerConfig;
use crate::protocol::Outcome;
use crate::status::{WorkerState, WorkerStatus};
use crate::supervisor::supervised_slot;

/// The most batches of credit a worker may claim.
const MAX_CAPACITY: u32 = 64;

/// What sizes a worker's batches and its credit.
#[derive(Clone, Copy)]
struct Sizing {
    /// Work per batch the broker aims for.
    target_batch: Duration,
    max_items: usize,
    /// Workers whose tasks take longer than this get no prefetch.
    prefetch_limit: Duration,
}

pub(super) struct Worker {
    identity: PeerId,
    /// Tells this registration from an earlier one under the same routing id.
    serial: u64,
    capacity: usize,
    in_flight: HashSet<u64>,
    last_seen: Instant,
    last_sent: Instant,
    /// Smoothed microseconds per task, from the busy time the worker reports.
    task_us: Option<f64>,
    in_lru: bool,
    /// Holds a task that was on a dead worker: it runs alone, so if it is a poison task it
    /// takes no other task down with it.
    isolated: bool,
    /// Handed its unstarted tasks back: it is leaving and takes no more.
    retiring: bool,
    /// Outcomes it returned, for the status.
    completed: u64,
    failed: u64,
    /// It runs tasks in batches of up to this many, and a batch may wait this long for
    /// more (declared in its `Ready`).
    batching: Option<(usize, Duration)>,
    /// Batches handed to it and the tasks in them, for the status.
    batches: u64,
    batched_tasks: u64,
    /// Where it runs, as its `Ready` said.
    host: String,
    pid: u32,
}

impl Worker {
    /// The tasks it holds, given up when it is removed.
    pub(super) fn into_in_flight(self) -> HashSet<u64> {
        self.in_flight
    }

    fn state(&self) -> WorkerState {
        if self.retiring {
            WorkerState::Retiring
        } else if self.isolated {
            WorkerState::Suspect
        } else if self.in_flight.is_empty() {
            WorkerState::Ready
        } else {
            WorkerState::Busy
        }
    }

    fn batch_size(&self, sizing: Sizing) -> usize {
        if let Some((max, _)) = self.batching {
            return max;
        }
        match self.task_us {
            Some(us) if us > 0.0 => {
                let n = sizing.target_batch.as_micros() as f64 / us;
                (n as usize).clamp(1, sizing.max_items)
            }
            Some(_) => sizing.max_items,
            None => 1,
        }
    }

    /// Tasks this worker may hold at once.
    fn allowance(&self, sizing: Sizing) -> usize {
        if self.isolated || self.retiring {
            return 0;
        }
        let long = self
            .task_us
            .is_some_and(|us| us > sizing.prefetch_limit.as_micros() as f64);
        let batches = if long { 1 } else { self.capacity };
        batches * self.batch_size(sizing)
    }
}

/// How much a worker may be handed now.
pub(super) struct Room {
    /// Tasks it has credit for.
    pub(super) tasks: usize,
    /// Its batch size.
    pub(super) batch: usize,
    /// Whether it holds tasks already.
    pub(super) busy: bool,
}

pub(super) struct Workers {
    table: HashMap<PeerId, Worker>,
    /// Workers with free credit, least recently fed first.
    lru: VecDeque<PeerId>,
    /// Tasks held by all workers.
    held: usize,
    next_serial: u64,
    sizing: Sizing,
    heartbeat_interval: Duration,
    /// Silence after which a worker is dead (`heartbeat_interval × liveness`).
    silence: Duration,
    /// When each worker is next owed a heartbeat.
    heartbeats: Deadlines,
    /// When each worker's silence next makes it dead.
    expiries: Deadlines,
}

impl Workers {
    pub(super) fn new(cfg: &BrokerConfig) -> Self {
        Workers {
            table: HashMap::new(),
            lru: VecDeque::new(),
            held: 0,
            next_serial: 0,
            sizing: Sizing {
                target_batch: cfg.target_batch,
                max_items: cfg.max_batch_items,
                prefetch_limit: cfg.prefetch_limit,
            },
            heartbeat_interval: cfg.heartbeat_interval,
            silence: cfg.heartbeat_interval * cfg.liveness,
            heartbeats: Deadlines::default(),
            expiries: Deadlines::default(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub(super) fn contains(&self, identity: &[u8]) -> bool {
        self.table.contains_key(identity)
    }

    /// Tasks held by all workers.
    pub(super) fn held(&self) -> usize {
        self.held
    }

    /// Registers a worker that may hold `capacity` batches. The caller has removed an
    /// earlier worker of the same routing id.
    /// Registers a worker that may hold `capacity` batches; `batching`: its own batch size
    /// and how long a batch may wait for more tasks.
    pub(super) fn register(
        &mut self,
        identity: &[u8],
        capacity: u32,
        batching: Option<(usize, Duration)>,
        now: Instant,
    ) {
        let serial = self.next_serial;
        self.next_serial += 1;
        let identity = PeerId::from(identity);
        self.heartbeats
            .push(now + self.heartbeat_interval, serial, identity.clone());
        self.expiries
            .push(self.expiry(now), serial, identity.clone());
        self.table.insert(
            identity.clone(),
            Worker {
                identity,
                serial,
                capacity: capacity.clamp(1, MAX_CAPACITY) as usize,
                in_flight: HashSet::new(),
                last_seen: now,
                last_sent: now,
                task_us: None,
                in_lru: false,
                isolated: false,
                retiring: false,
                completed: 0,
                failed: 0,
                batching,
                batches: 0,
                batched_tasks: 0,
                host: String::new(),
                pid: 0,
            },
        );
    }

    /// Where a registered worker runs, for the status.
    pub(super) fn describe(&mut self, identity: &[u8], host: &str, pid: u32) {
        if let Some(worker) = self.table.get_mut(identity) {
            worker.host = host.to_string();
            worker.pid = pid;
        }
    }

    /// A batching worker's batch size and wait, if it declared them with a wait.
    pub(super) fn batch_wait(&self, identity: &[u8]) -> Option<(usize, Duration)> {
        self.table
            .get(identity)?
            .batching
            .filter(|(_, wait)| !wait.is_zero())
    }

    /// Takes a worker out (dead or gone); its tasks are the caller's to re-queue.
    pub(super) fn remove(&mut self, identity: &[u8]) -> Option<Worker> {
        let worker = self.table.remove(identity)?;
        self.held -= worker.in_flight.len();
        if worker.in_lru {
            self.lru.retain(|w| &w[..] != identity);
        }
        // Its deadlines stay queued until due, then are dropped: the serial no longer
        // matches anything registered.
        Some(worker)
    }

    /// Every worker, removed (the pool is closing).
    pub(super) fn drain(&mut self) -> Vec<PeerId> {
        self.lru.clear();
        self.held = 0;
        self.heartbeats = Deadlines::default();
        self.expiries = Deadlines::default();
        self.table.drain().map(|(identity, _)| identity).collect()
    }

    /// A message came from `identity`: it is alive.
    pub(super) fn seen(&mut self, identity: &[u8], now: Instant) {
        if let Some(worker) = self.table.get_mut(identity) {
            worker.last_seen = now;
        }
    }

    /// A worker's results. Its task time is updated from the busy time it reports, and each
    /// outcome for a task it held goes to `deliver`, which says whether that task was still
    /// open (only those count to the worker). `None` if the worker is not registered;
    /// otherwise how many outcomes were for tasks it did not hold (duplicates).
    pub(super) fn results<'a>(
        &mut self,
        identity: &[u8],
        busy_us: u64,
        count: usize,
        items: impl Iterator<Item = (u64, Outcome<'a>)>,
        mut deliver: impl FnMut(u64, Outcome<'a>) -> bool,
    ) -> Option<u64> {
        let worker = self.table.get_mut(identity)?;
        if count > 0 && busy_us > 0 {
            let per_task = busy_us as f64 / count as f64;
            worker.task_us = Some(match worker.task_us {
                Some(avg) => 0.7 * avg + 0.3 * per_task,
                None => per_task,
            });
        }
        let mut duplicates = 0;
        for (id, outcome) in items {
            if !worker.in_flight.remove(&id) {
                duplicates += 1;
                continue;
            }
            self.held -= 1;
            let ok = matches!(outcome, Outcome::Ok(_));
            if deliver(id, outcome) {
                if ok {
                    worker.completed += 1;
                } else {
                    worker.failed += 1;
                }
            }
        }
        if worker.in_flight.is_empty() {
            worker.isolated = false;
        }
        Some(duplicates)
    }

    /// A leaving worker hands back tasks it never started: it takes no more. The ones it
    /// did hold, latest first, for the front of their queues.
    pub(super) fn release(&mut self, identity: &[u8], ids: impl Iterator<Item = u64>) -> Vec<u64> {
        let Some(worker) = self.table.get_mut(identity) else {
            return Vec::new();
        };
        worker.retiring = true;
        if worker.in_lru {
            worker.in_lru = false;
            self.lru.retain(|w| &w[..] != identity);
        }
        let mut released: Vec<u64> = ids.filter(|id| worker.in_flight.remove(id)).collect();
        self.held -= released.len();
        if worker.in_flight.is_empty() {
            worker.isolated = false;
        }
        released.sort_unstable_by(|a, b| b.cmp(a));
        released
    }

    /// Puts a worker with free credit at the back of the LRU queue.
    pub(super) fn offer(&mut self, identity: &[u8]) {
        let sizing = self.sizing;
        if let Some(w) = self.table.get_mut(identity) {
            if !w.in_lru && w.in_flight.len() < w.allowance(sizing) {
                w.in_lru = true;
                self.lru.push_back(w.identity.clone());
            }
        }
    }

    /// The worker with free credit that was fed least recently, out of the LRU queue.
    pub(super) fn next_free(&mut self) -> Option<PeerId> {
        while let Some(identity) = self.lru.pop_front() {
            if let Some(worker) = self.table.get_mut(&identity) {
                worker.in_lru = false;
                return Some(identity);
            }
        }
        None
    }

    /// Workers taken by [`Workers::next_free`] and not fed go back to the front, in order.
    pub(super) fn put_back(&mut self, passed_over: Vec<PeerId>) {
        for identity in passed_over.into_iter().rev() {
            if let Some(worker) = self.table.get_mut(&identity) {
                worker.in_lru = true;
                self.lru.push_front(identity);
            }
        }
    }

    pub(super) fn room(&self, identity: &[u8]) -> Option<Room> {
        let worker = self.table.get(identity)?;
        Some(Room {
            tasks: worker
                .allowance(self.sizing)
                .saturating_sub(worker.in_flight.len()),
            batch: worker.batch_size(self.sizing),
            busy: !worker.in_flight.is_empty(),
        })
    }

    /// `ids` went to the worker, alone if `isolated` (a suspect task).
    pub(super) fn hand(&mut self, identity: &[u8], ids: &[u64], isolated: bool, now: Instant) {
        if let Some(worker) = self.table.get_mut(identity) {
            let before = worker.in_flight.len();
            worker.in_flight.extend(ids);
            self.held += worker.in_flight.len() - before;
            worker.isolated |= isolated;
            worker.last_sent = now;
            worker.batches += 1;
            worker.batched_tasks += ids.len() as u64;
        }
    }

    /// Workers silent for longer than `heartbeat_interval × liveness`, for the caller to
    /// declare dead.
    pub(super) fn expired(&mut self, now: Instant) -> Vec<PeerId> {
        let mut expired = Vec::new();
        let mut later = Vec::new();
        while let Some((serial, identity)) = self.expiries.pop_due(now) {
            let Some(worker) = self.table.get(&identity).filter(|w| w.serial == serial) else {
                continue;
            };
            let due = self.expiry(worker.last_seen);
            if due <= now {
                expired.push(identity);
            } else {
                later.push((due, serial, identity));
            }
        }
        for (due, serial, identity) in later {
            self.expiries.push(due, serial, identity);
        }
        expired
    }

    /// Workers sent nothing for a heartbeat interval, counted as sent to now: the caller
    /// sends each a heartbeat.
    pub(super) fn owed_heartbeats(&mut self, now: Instant) -> Vec<PeerId> {
        let mut owed = Vec::new();
        let mut later = Vec::new();
        while let Some((serial, identity)) = self.heartbeats.pop_due(now) {
            let Some(worker) = self.table.get_mut(&identity).filter(|w| w.serial == serial) else {
                continue;
            };
            let due = worker.last_sent + self.heartbeat_interval;
            if due <= now {
                worker.last_sent = now;
                later.push((now + self.heartbeat_interval, serial, identity.clone()));
                owed.push(identity);
            } else {
                later.push((due, serial, identity));
            }
        }
        // Pushed after the loop: with a zero interval, a re-queued deadline would be due
        // again at once.
        for (due, serial, identity) in later {
            self.heartbeats.push(due, serial, identity);
        }
        owed
    }

    /// When [`Workers::expired`] or [`Workers::owed_heartbeats`] next may have something.
    /// Possibly earlier than needed (a worker heard from since), never later.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        match (self.heartbeats.next(), self.expiries.next()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Each worker's figures for the status, by id.
    pub(super) fn statuses(&self) -> Vec<WorkerStatus> {
        let mut workers: Vec<WorkerStatus> = self
            .table
            .iter()
            .map(|(identity, w)| {
                let slot = supervised_slot(identity);
                WorkerStatus {
                    id: String::from_utf8_lossy(identity).into_owned(),
                    state: w.state(),
                    in_flight: w.in_flight.len(),
                    completed: w.completed,
                    failed: w.failed,
                    mean_batch: w.batched_tasks as f64 / w.batches.max(1) as f64,
                    max_batch: w.batching.map_or(0, |(max, _)| max),
                    host: w.host.clone(),
                    pid: w.pid,
                    slot: slot.map(|(slot, _)| slot),
                    restarts: slot.map(|(_, started)| u64::from(started.saturating_sub(1))),
                }
            })
            .collect();
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        workers
    }

    /// The first instant at which a worker last heard from at `last_seen` is dead: strictly
    /// after `silence` has passed.
    fn expiry(&self, last_seen: Instant) -> Instant {
        last_seen + self.silence + Duration::from_nanos(1)
    }
}

/// Instants in time order, each naming a worker registration (serial and routing id).
///
/// Entries are not moved when a worker's real deadline moves later, which happens on every
/// message; an entry that comes due is checked against the worker instead, and queued again
/// at the real time if it was early. Keeping time so costs nothing per message and
/// O(log n) per worker per interval.
#[derive(Default)]
struct Deadlines(BinaryHeap<Reverse<(Instant, u64, PeerId)>>);

impl Deadlines {
    fn push(&mut self, at: Instant, serial: u64, identity: PeerId) {
        self.0.push(Reverse((at, serial, identity)));
    }

    fn next(&self) -> Option<Instant> {
        self.0.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The earliest entry due by `now`, removed.
    fn pop_due(&mut self, now: Instant) -> Option<(u64, PeerId)> {
        if self.next()? > now {
            return None;
        }
        self.0
            .pop()
            .map(|Reverse((_, serial, identity))| (serial, identity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Heartbeats every 100 ms; dead after 300 ms of silence.
    fn workers() -> Workers {
        Workers::new(&BrokerConfig {
            heartbeat_interval: Duration::from_millis(100),
            liveness: 3,
            ..BrokerConfig::default()
        })
    }

    fn ids(list: Vec<PeerId>) -> Vec<String> {
        list.iter()
            .map(|id| String::from_utf8_lossy(id).into_owned())
            .collect()
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_worker_heard_from_lives_on_and_its_deadline_moves_with_it() {
        let t = Instant::now();
        let mut w = workers();
        w.register(b"a", 1, None, t);
        w.register(b"b", 1, None, t);
        w.seen(b"a", t + 200 * MS);
        // The queued deadline (t + 300 ms) is early for "a": checked, and queued again.
        assert!(
            w.expired(t + 300 * MS).is_empty(),
            "exactly 300 ms is not dead"
        );
        assert_eq!(ids(w.expired(t + 301 * MS)), ["b"]);
        w.remove(b"b");
        let next = w.expiries.next().expect("a's deadline");
        assert!(
            next <= t + 501 * MS && next > t + 301 * MS,
            "{:?}",
            next - t
        );
        assert!(w.expired(t + 500 * MS).is_empty());
        assert_eq!(ids(w.expired(t + 501 * MS)), ["a"]);
    }

    #[test]
    fn heartbeats_go_to_workers_sent_nothing_for_an_interval() {
        let t = Instant::now();
        let mut w = workers();
        w.register(b"a", 1, None, t);
        w.register(b"b", 1, None, t);
        w.hand(b"a", &[1], false, t + 50 * MS);
        assert_eq!(ids(w.owed_heartbeats(t + 100 * MS)), ["b"]);
        assert!(w.owed_heartbeats(t + 120 * MS).is_empty());
        assert_eq!(ids(w.owed_heartbeats(t + 150 * MS)), ["a"]);
        assert_eq!(ids(w.owed_heartbeats(t + 200 * MS)), ["b"]);
        assert_eq!(w.next_deadline(), Some(t + 250 * MS), "a's next heartbeat");
    }

    #[test]
    fn a_removed_workers_deadlines_do_not_reach_its_successor() {
        let t = Instant::now();
        let mut w = workers();
        w.register(b"a", 1, None, t);
        w.remove(b"a");
        // The same routing id registers again later: only the new deadlines count.
        w.register(b"a", 1, None, t + 200 * MS);
        assert!(w.expired(t + 301 * MS).is_empty());
        assert!(w.owed_heartbeats(t + 100 * MS).is_empty());
        assert_eq!(ids(w.owed_heartbeats(t + 300 * MS)), ["a"]);
        assert_eq!(ids(w.expired(t + 501 * MS)), ["a"]);
    }

    #[test]
    fn a_zero_heartbeat_interval_does_not_spin() {
        let t = Instant::now();
        let mut w = Workers::new(&BrokerConfig {
            heartbeat_interval: Duration::ZERO,
            ..BrokerConfig::default()
        });
        w.register(b"a", 1, None, t);
        assert_eq!(ids(w.owed_heartbeats(t)), ["a"]);
    }

    #[test]
    fn the_count_of_held_tasks_follows_hands_results_releases_and_removals() {
        let t = Instant::now();
        let mut w = workers();
        w.register(b"a", 4, None, t);
        w.register(b"b", 4, None, t);
        w.hand(b"a", &[1, 2, 3], false, t);
        w.hand(b"b", &[4, 5], false, t);
        assert_eq!(w.held(), 5);
        let outcomes = [(1, Outcome::Ok(b"")), (9, Outcome::Ok(b""))];
        assert_eq!(
            w.results(b"a", 10, 2, outcomes.into_iter(), |_, _| true),
            Some(1)
        );
        assert_eq!(w.held(), 4);
        assert_eq!(w.release(b"a", [3, 2].into_iter()), vec![3, 2]);
        assert_eq!(w.held(), 2);
        w.remove(b"b");
        assert_eq!(w.held(), 0);
    }
}
