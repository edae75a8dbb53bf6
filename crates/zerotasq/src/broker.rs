//! The broker's state machine: queues, credit, in-flight tables, heartbeats, retries.
//!
//! It does no I/O and reads no clock: each event comes in with the current time and every
//! message to send goes to [`Broker::outbox`], which the event loop (`broker_loop`) drains.
//! That keeps every rule here testable without sockets or sleeps.
//!
//! Rules it keeps (see DESIGN.md's invariants):
//! - *Least-recently-used with credit.* A worker announces how many batches it may hold;
//!   workers with free credit wait in LRU order; the one idle longest is fed first.
//! - *Adaptive batching.* From the busy time workers report, each worker's batch holds about
//!   `target_batch` of work (many microsecond tasks, one long task), and workers busy with long
//!   tasks get no prefetch, so balance is kept.
//! - *Fair sharing.* Clients with queued tasks take turns, one batch each.
//! - *Exactly one outcome per task.* Each task has one holder; a result from anyone else, or
//!   after the holder was declared dead, is dropped and counted. A dead worker's tasks go back
//!   to the front of their queue and are retried alone; a task that has been on
//!   `max_retries` dead workers becomes a `WorkerLost` error outcome.
//!
//! It also answers questions that join nothing: a worker's `Hello` with the pool's welcome
//! bytes, a client's `StatusRequest` with a [`BrokerStatus`] (figures per client and worker,
//! rates over the last seconds).
//!
//! The state lives in parts, each owning its tables and reporting its own next deadline;
//! [`Broker`] routes events to them and does what spans several (feeding a worker, a
//! worker's death):
//! - `workers` — registrations, credit and batch sizes, the LRU queue, heartbeat and expiry
//!   deadlines in time order;
//! - `clients` — queues and turns, collected outcomes, client heartbeats, figures;
//! - `tasks` — the tasks held and the retry rule (attempts, suspects, poison);
//! - `startup` — children not yet ready and when failing inits fail the pool;
//! - `garbage` — malformed messages per peer, and who is ignored;
//! - `dispatch` — matching free workers with clients' turns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::{
    header, Command, ErrorKind, Message, Outcome, ProtocolError, ResultBatch, WireError, VERSION,
};
use crate::status::{BrokerStatus, Durations, Rate};

use clients::Clients;
use garbage::GarbageGuard;
use startup::Startup;
pub use tasks::SharedFrame;
use tasks::{poison_message, Body, Charged, Tasks};
use workers::Workers;

mod clients;
mod dispatch;
mod garbage;
mod startup;
mod tasks;
mod workers;

/// The largest batch a worker may ask for (a batch also stops at `max_batch_bytes`).
const MAX_BATCH: u32 = 4096;

/// Tuning of the broker; the pool builder fills it in.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// How often the broker and its peers say they are alive.
    pub heartbeat_interval: Duration,
    /// Missed heartbeat intervals after which a worker is declared dead.
    pub liveness: u32,
    /// Dead workers a task may be on before it becomes an error outcome.
    pub max_retries: u32,
    /// Local workers that may fail `init` in a row (with none ready) before the pool fails.
    pub max_init_failures: u32,
    /// Work per batch the broker aims for.
    pub target_batch: Duration,
    /// Tasks per batch at most.
    pub max_batch_items: usize,
    /// Bytes per batch at most (a bigger task still goes, alone).
    pub max_batch_bytes: usize,
    /// Workers whose tasks take longer than this get no prefetch.
    pub prefetch_limit: Duration,
    /// Malformed messages a peer may send before it is ignored.
    pub garbage_limit: u32,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            heartbeat_interval: Duration::from_millis(500),
            liveness: 6,
            max_retries: 3,
            max_init_failures: 3,
            target_batch: Duration::from_millis(2),
            max_batch_items: 1024,
            max_batch_bytes: 1 << 20,
            prefetch_limit: Duration::from_millis(50),
            garbage_limit: 16,
        }
    }
}

/// Where an outgoing message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Worker(Vec<u8>),
    Client(Vec<u8>),
    Supervisor,
}

/// Counters for status displays and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BrokerStats {
    /// Tasks accepted from clients.
    pub submitted: u64,
    /// Tasks answered with a result.
    pub completed: u64,
    /// Tasks answered with an error (raised, panicked, lost, cancelled…).
    pub failed: u64,
    /// Tasks put back in their queue because their worker died or left.
    pub requeued: u64,
    /// Tasks that killed `max_retries` workers and ended as `WorkerLost`.
    pub poisoned: u64,
    /// Results dropped because their task already had its outcome or was not the sender's.
    pub duplicates_dropped: u64,
    /// Messages dropped because they did not decode.
    pub malformed: u64,
    /// Workers that registered.
    pub workers_ready: u64,
    /// Workers that died or fell silent while registered.
    pub workers_lost: u64,
    /// Workers that left to be replaced by fresh ones (recycling).
    #[serde(default)]
    pub recycled: u64,
    /// Tasks that ran past their time limit (each a try).
    #[serde(default)]
    pub timed_out: u64,
    /// `Hello`s answered with the welcome bytes (peers about to join, or only asking).
    pub welcomes: u64,
    /// Workers whose `init` failed.
    pub init_failures: u64,
    /// Workers registered now.
    pub workers_alive: usize,
    /// Tasks waiting for a worker now.
    pub queued: usize,
    /// Tasks on workers now.
    pub in_flight: usize,
}

/// Messages to send, with where they go, in order.
type Outbox = Vec<(Route, Vec<Vec<u8>>)>;

/// The broker's whole state.
pub struct Broker {
    cfg: BrokerConfig,
    workers: Workers,
    clients: Clients,
    tasks: Tasks,
    startup: Startup,
    garbage: GarbageGuard,
    /// Counters of events; the parts' own figures are added in [`Broker::stats`].
    stats: BrokerStats,
    /// The pool's welcome bytes, the answer to every `Hello`.
    welcome: Arc<[u8]>,
    started: Instant,
    /// All outcomes per second; `rated` of them counted so far.
    rate: Rate,
    rated: u64,
    /// Dispatch-to-outcome times of the tasks workers answered.
    durations: Durations,
    outbox: Outbox,
    /// When a batching worker's wait for a fuller batch ends (set by each dispatch).
    batch_wake: Option<Instant>,
}

impl Broker {
    pub fn new(cfg: BrokerConfig, now: Instant) -> Self {
        Broker {
            workers: Workers::new(&cfg),
            clients: Clients::new(cfg.heartbeat_interval, now),
            tasks: Tasks::new(cfg.max_retries),
            startup: Startup::new(cfg.max_init_failures),
            garbage: GarbageGuard::new(cfg.garbage_limit),
            cfg,
            stats: BrokerStats::default(),
            welcome: Arc::from(&[][..]),
            started: now,
            rate: Rate::new(now),
            rated: 0,
            durations: Durations::default(),
            batch_wake: None,
            outbox: Vec::new(),
        }
    }

    /// The bytes every `Hello` is answered with (see [`crate::pool::PoolSpec::welcome`]).
    pub fn with_welcome(mut self, welcome: Arc<[u8]>) -> Self {
        self.welcome = welcome;
        self
    }

    pub fn stats(&self) -> BrokerStats {
        BrokerStats {
            malformed: self.garbage.malformed(),
            init_failures: self.startup.init_failures(),
            workers_alive: self.workers.len(),
            queued: self.clients.queued(),
            in_flight: self.workers.held(),
            ..self.stats.clone()
        }
    }

    /// Figures per client and worker, and rates, as of `now`.
    pub fn status(&self, now: Instant) -> BrokerStatus {
        BrokerStatus {
            uptime_secs: now.saturating_duration_since(self.started).as_secs_f64(),
            rate: self.rate.per_sec(now),
            totals: self.stats(),
            clients: self.clients.statuses(now),
            workers: self.workers.statuses(),
            task_durations: self.durations.clone(),
        }
    }

    /// Why the pool failed, if it did.
    #[cfg(test)]
    pub fn failure(&self) -> Option<&str> {
        self.startup.failure()
    }

    /// Messages to send, in order. Call [`Broker::flush`] first.
    pub fn outbox(&mut self) -> std::vec::Drain<'_, (Route, Vec<Vec<u8>>)> {
        self.outbox.drain(..)
    }

    /// A message from a worker, by routing id.
    pub fn on_worker<F: AsRef<[u8]>>(&mut self, identity: &[u8], frames: &[F], now: Instant) {
        if self.garbage.is_ignored(identity) {
            return;
        }
        let msg = match Message::decode(frames) {
            Ok(msg) => msg,
            Err(e) => {
                self.refuse_version(Route::Worker(identity.to_vec()), &e);
                return self.on_garbage(identity, &e.to_string(), true);
            }
        };
        self.workers.seen(identity, now);
        match msg {
            Message::Ready(ready) => {
                if self.workers.contains(identity) {
                    self.worker_dead(identity, "registered twice");
                }
                if self.startup.worker_ready(identity) {
                    // A child that got this far ran its init: its slot's back-off starts over.
                    let news = Message::ChildReady { identity }.encode();
                    self.outbox.push((Route::Supervisor, news));
                }
                self.stats.workers_ready += 1;
                tracing::debug!(pid = ready.pid, host = ready.host, "worker ready");
                let batching = (ready.max_batch > 0).then(|| {
                    let wait = Duration::from_micros(ready.batch_wait_us.into());
                    (ready.max_batch.min(MAX_BATCH) as usize, wait)
                });
                self.workers
                    .register(identity, ready.capacity, batching, now);
                self.workers.describe(identity, ready.host, ready.pid);
                self.workers.offer(identity);
            }
            Message::Results(batch) => self.on_results(identity, batch, now),
            Message::Heartbeat => {
                if !self.workers.contains(identity) && !self.startup.is_starting(identity) {
                    self.send_worker(identity, Command::Shutdown, None);
                }
            }
            Message::InitFailed(text) => {
                tracing::warn!("worker init failed: {text}");
                let any_ready = !self.workers.is_empty();
                if self.startup.reason(identity, text, any_ready, now) {
                    self.pool_failed();
                }
            }
            Message::Release(ids) => {
                for id in self.workers.release(identity, ids.iter()) {
                    self.requeue_front(id);
                }
            }
            // Asking is not joining: no credit, no place in the LRU queue, no figures but one.
            Message::Hello => {
                self.stats.welcomes += 1;
                let welcome = Message::Welcome(&self.welcome).encode();
                self.outbox
                    .push((Route::Worker(identity.to_vec()), welcome));
            }
            Message::Goodbye => self.worker_dead(identity, "worker left"),
            Message::TimedOut { id, limit } => self.timed_out(identity, id, limit),
            Message::Recycling => self.worker_recycled(identity),
            other => self.on_garbage(
                identity,
                &format!("{:?} is not a worker command", other.command()),
                true,
            ),
        }
    }

    /// A message from a client, by routing id. The tasks of a `Submit` are kept as slices
    /// of its frame, not copied.
    pub fn on_client<F: SharedFrame>(&mut self, identity: &[u8], frames: &[F], now: Instant) {
        if self.garbage.is_ignored(identity) {
            return;
        }
        let msg = match Message::decode(frames) {
            Ok(msg) => msg,
            Err(e) => {
                self.refuse_version(Route::Client(identity.to_vec()), &e);
                return self.on_garbage(identity, &e.to_string(), false);
            }
        };
        match msg {
            Message::Submit(batch) => {
                self.stats.submitted += batch.len() as u64;
                let failed = self.startup.failure().map(|reason| WireError {
                    kind: ErrorKind::InitFailed,
                    message: reason,
                    detail: "",
                });
                if failed.is_some() {
                    self.stats.failed += batch.len() as u64;
                }
                let body = Body::new(&frames[1]);
                self.clients.submit(
                    identity,
                    batch,
                    &body,
                    &mut self.tasks,
                    failed.as_ref(),
                    now,
                );
            }
            Message::Cancel => self.cancel_client(identity),
            // A client that waits and hears nothing asks; a broker that holds none of its
            // tasks (it restarted) says so, and the client submits them again.
            Message::Heartbeat => {
                if !self.clients.is_open(identity) {
                    let frames = Message::Forgotten.encode();
                    self.outbox.push((Route::Client(identity.to_vec()), frames));
                }
            }
            // Asking is not submitting: the asker is not counted as a client.
            Message::StatusRequest => {
                let body = self.status(now).to_json();
                let frames = vec![header(Command::Status).to_vec(), body];
                self.outbox.push((Route::Client(identity.to_vec()), frames));
            }
            other => self.on_garbage(
                identity,
                &format!("{:?} is not a client command", other.command()),
                false,
            ),
        }
    }

    /// A message from the supervisor or the pool, over the in-process control channel.
    pub fn on_control<F: AsRef<[u8]>>(&mut self, frames: &[F], now: Instant) {
        match Message::decode(frames) {
            Ok(Message::ChildStarted { identity }) => self.startup.child_started(identity),
            Ok(Message::ChildExited { identity, status }) => {
                if self.startup.is_starting(identity) {
                    let any_ready = !self.workers.is_empty();
                    if self
                        .startup
                        .exited_during_init(identity, status, any_ready, now)
                    {
                        self.pool_failed();
                    }
                } else if self.workers.contains(identity) {
                    self.worker_dead(identity, status);
                }
            }
            Ok(other) => tracing::error!("unexpected control message {:?}", other.command()),
            Err(e) => tracing::error!("malformed control message: {e}"),
        }
    }

    /// Heartbeats and expiry; call at least every [`Broker::next_wakeup`].
    pub fn tick(&mut self, now: Instant) {
        if self.startup.tick(now) {
            self.pool_failed();
        }
        for identity in self.workers.expired(now) {
            let silence = self.cfg.heartbeat_interval * self.cfg.liveness;
            tracing::warn!("worker missed its heartbeats for {silence:?}; declaring it dead");
            self.worker_dead(&identity, "missed heartbeats");
            self.outbox.push((
                Route::Supervisor,
                Message::KillWorker {
                    identity: &identity,
                }
                .encode(),
            ));
        }
        for identity in self.workers.owed_heartbeats(now) {
            self.send_worker(&identity, Command::Heartbeat, None);
        }
        self.clients.heartbeats(now, &mut self.outbox);
    }

    /// When [`Broker::tick`] next has something to do: the earliest of the parts' own
    /// deadlines (workers' heartbeats and expiry, clients' heartbeats, the wait for a failed
    /// worker's reason), and no later than a heartbeat interval from now.
    pub fn next_wakeup(&self, now: Instant) -> Instant {
        [
            self.workers.next_deadline(),
            self.clients.next_deadline(),
            self.startup.next_deadline(),
            self.batch_wake,
            Some(now + self.cfg.heartbeat_interval),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now)
        .max(now)
    }

    /// A send to a worker failed because it is gone (ROUTER_MANDATORY told us).
    pub fn worker_unreachable(&mut self, identity: &[u8]) {
        if self.workers.contains(identity) {
            self.worker_dead(identity, "worker disconnected");
        }
    }

    /// A send to a client failed because it is gone.
    pub fn client_unreachable(&mut self, identity: &[u8]) {
        self.cancel_client(identity);
    }

    /// Feeds workers, then queues each client's collected outcomes as one message. Call once
    /// per loop iteration, after the events.
    pub fn flush(&mut self, now: Instant) {
        self.dispatch(now);
        self.clients.flush(now, &mut self.outbox);
        let done = self.stats.completed + self.stats.failed;
        self.rate.record(done.saturating_sub(self.rated), now);
        self.rated = done;
    }

    /// Closing: every open task ends as `Cancelled` and every worker is told to exit.
    pub fn close(&mut self) {
        let error = WireError {
            kind: ErrorKind::Cancelled,
            message: "the pool was closed before this task finished",
            detail: "",
        };
        for task in self.tasks.drain() {
            self.clients.fail(&task.client, task.client_id, &error);
        }
        self.clients.clear_queues();
        for identity in self.workers.drain() {
            self.send_worker(&identity, Command::Shutdown, None);
        }
    }

    /// A worker's results. Each task answered counts its time from its last dispatch to now
    /// (run time, plus waiting in the worker's queue and for its results to leave).
    fn on_results(&mut self, identity: &[u8], batch: ResultBatch<'_>, now: Instant) {
        let Broker {
            workers,
            tasks,
            clients,
            stats,
            durations,
            ..
        } = self;
        let delivered = workers.results(
            identity,
            batch.busy_us,
            batch.len(),
            batch.iter(),
            |id, outcome| {
                let Some(task) = tasks.remove(id) else {
                    return false;
                };
                if let Some(dispatched) = task.dispatched {
                    durations.record(now.saturating_duration_since(dispatched));
                }
                match outcome {
                    Outcome::Ok(_) => stats.completed += 1,
                    Outcome::Err(_) => stats.failed += 1,
                }
                clients.answer(&task.client, task.client_id, outcome);
                true
            },
        );
        match delivered {
            Some(duplicates) => {
                self.stats.duplicates_dropped += duplicates;
                self.workers.offer(identity);
            }
            None => {
                // A worker we declared dead (frozen, then resumed): its tasks are elsewhere
                // already. Drop the results and tell it to go.
                self.stats.duplicates_dropped += batch.len() as u64;
                self.send_worker(identity, Command::Shutdown, None);
            }
        }
    }

    /// Puts a task back at the front of its client's queue, or forgets it if the client is
    /// gone.
    fn requeue_front(&mut self, id: u64) {
        let Some(client) = self.tasks.client_of(id) else {
            return;
        };
        if self.clients.requeue_front(&client, id) {
            self.stats.requeued += 1;
        } else {
            self.tasks.remove(id);
        }
    }

    /// Task `id` ran past its time limit on worker `identity`, which now leaves and dies: the
    /// task is charged a try, as for a death, and once out of tries it ends as a `Timeout`
    /// error naming the limit.
    fn timed_out(&mut self, identity: &[u8], id: u64, limit: Duration) {
        if self
            .workers
            .release(identity, std::iter::once(id))
            .is_empty()
        {
            return; // not that worker's task (any more): nothing to charge
        }
        self.stats.timed_out += 1;
        match self.tasks.charge(id) {
            None => {}
            Some(Charged::Retry) => self.requeue_front(id),
            Some(Charged::Poison(task)) => {
                let message = format!(
                    "the task ran past its time limit of {limit:?} (on {} workers); giving up",
                    task.attempts
                );
                let error = WireError {
                    kind: ErrorKind::Timeout,
                    message: &message,
                    detail: "",
                };
                if self.clients.fail(&task.client, task.client_id, &error) {
                    self.stats.failed += 1;
                }
            }
        }
    }

    /// A worker leaves to be replaced by a fresh one: nothing is charged, and whatever it
    /// still held goes back to the front of its queue.
    fn worker_recycled(&mut self, identity: &[u8]) {
        let Some(worker) = self.workers.remove(identity) else {
            return;
        };
        self.stats.recycled += 1;
        let mut held: Vec<u64> = worker.into_in_flight().into_iter().collect();
        held.sort_unstable_by(|a, b| b.cmp(a));
        for id in held {
            self.requeue_front(id);
        }
    }

    /// A worker is dead: each task it held is charged a try and re-queued, or answered with
    /// `WorkerLost` once it has been on `max_retries` dead workers.
    fn worker_dead(&mut self, identity: &[u8], reason: &str) {
        let Some(worker) = self.workers.remove(identity) else {
            return;
        };
        self.stats.workers_lost += 1;
        let mut lost: Vec<u64> = worker.into_in_flight().into_iter().collect();
        // Re-queue in submission order, so ordered clients get their earliest tasks first.
        lost.sort_unstable_by(|a, b| b.cmp(a));
        for id in lost {
            match self.tasks.charge(id) {
                None => {}
                Some(Charged::Retry) => self.requeue_front(id),
                Some(Charged::Poison(task)) => {
                    let message = poison_message(task.attempts, reason);
                    let error = WireError {
                        kind: ErrorKind::WorkerLost,
                        message: &message,
                        detail: "",
                    };
                    if self.clients.fail(&task.client, task.client_id, &error) {
                        self.stats.poisoned += 1;
                        self.stats.failed += 1;
                    }
                }
            }
        }
        self.fail_if_hopeless();
    }

    /// The pool has just failed: the tasks fail if no worker is left to run them. The
    /// supervisor goes on restarting children with back-off, and the first to be ready
    /// ends the failure.
    fn pool_failed(&mut self) {
        self.fail_if_hopeless();
    }

    /// Once the pool has failed and no worker is left, every task fails with the reason.
    fn fail_if_hopeless(&mut self) {
        let Some(reason) = self.startup.failure() else {
            return;
        };
        if !self.workers.is_empty() {
            return;
        }
        let error = WireError {
            kind: ErrorKind::InitFailed,
            message: reason,
            detail: "",
        };
        for task in self.tasks.drain() {
            if self.clients.fail(&task.client, task.client_id, &error) {
                self.stats.failed += 1;
            }
        }
        self.clients.clear_queues();
    }

    fn cancel_client(&mut self, identity: &[u8]) {
        self.clients.cancel(identity);
        // Queued and in flight alike: an in-flight task of a cancelled client must not come
        // back to the queue of a new stream under the same routing id when its worker dies.
        self.tasks.forget_client(identity);
    }

    /// Tells a peer that speaks another protocol version why nothing will work, in our
    /// header, which it can read far enough to report.
    fn refuse_version(&mut self, route: Route, error: &ProtocolError) {
        if let ProtocolError::VersionMismatch { got } = error {
            let why = format!(
                "this broker speaks protocol version {VERSION}; the peer sent version {got}"
            );
            self.outbox.push((route, Message::Fatal(&why).encode()));
        }
    }

    fn on_garbage(&mut self, identity: &[u8], why: &str, from_worker: bool) {
        tracing::warn!("dropped a malformed message: {why}");
        if !self.garbage.strike(identity) {
            return;
        }
        if from_worker {
            self.worker_dead(identity, "sent malformed messages");
        } else {
            self.cancel_client(identity);
        }
    }

    fn send_worker(&mut self, identity: &[u8], command: Command, body: Option<Vec<u8>>) {
        let mut frames = vec![header(command).to_vec()];
        frames.extend(body);
        self.outbox.push((Route::Worker(identity.to_vec()), frames));
    }
}

#[cfg(test)]
mod tests;
