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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::{
    header, Command, ErrorKind, Message, Outcome, ProtocolError, ResultBatchWriter, TaskBatch,
    TaskBatchWriter, WireError, VERSION,
};
use crate::status::{BrokerStatus, ClientStatus, Rate, WorkerState, WorkerStatus};

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
pub(crate) enum Route {
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

struct Task {
    client: Vec<u8>,
    client_id: u64,
    payload: Vec<u8>,
    /// Dead workers this task has been on.
    attempts: u32,
}

struct Client {
    queue: VecDeque<u64>,
    /// Outcomes waiting for the end of this loop iteration.
    outbox: ResultBatchWriter,
    /// Full result batches waiting for the end of this loop iteration.
    sealed: Vec<Vec<u8>>,
    /// Tasks accepted and not yet answered.
    open: usize,
    last_sent: Instant,
    figures: ClientFigures,
}

impl Client {
    fn answer(&mut self, client_id: u64, outcome: Outcome<'_>) {
        self.open = self.open.saturating_sub(1);
        match outcome {
            Outcome::Ok(_) => self.figures.completed += 1,
            Outcome::Err(_) => self.figures.failed += 1,
        }
        self.outbox.push_outcome(client_id, outcome);
        self.seal_if_big();
    }

    fn fail(&mut self, client_id: u64, error: &WireError<'_>) {
        self.open = self.open.saturating_sub(1);
        self.figures.failed += 1;
        self.outbox.push_err(client_id, error);
        self.seal_if_big();
    }

    /// Big outcomes leave in several messages, each far below the client's size limit.
    fn seal_if_big(&mut self) {
        if self.outbox.byte_len() >= RESULTS_BYTES {
            self.sealed.push(std::mem::take(&mut self.outbox).finish(0));
        }
    }
}

/// A client's figures for the status. They outlive the client's entry for a while (a stream
/// between two refills may have nothing open), but not its cancel or disappearance.
#[derive(Clone)]
struct ClientFigures {
    submitted: u64,
    completed: u64,
    failed: u64,
    /// Outcomes already counted into `rate`.
    rated: u64,
    rate: Rate,
    last_active: Instant,
}

impl ClientFigures {
    fn new(now: Instant) -> Self {
        ClientFigures {
            submitted: 0,
            completed: 0,
            failed: 0,
            rated: 0,
            rate: Rate::new(now),
            last_active: now,
        }
    }

    /// Counts the outcomes since the last call into the rate.
    fn tally(&mut self, now: Instant) {
        let done = self.completed + self.failed;
        if done > self.rated {
            self.rate.record(done - self.rated, now);
            self.rated = done;
            self.last_active = now;
        }
    }

    fn status(
        &self,
        identity: &[u8],
        queued: usize,
        in_flight: usize,
        now: Instant,
    ) -> ClientStatus {
        ClientStatus {
            id: short_hex(identity),
            queued,
            in_flight,
            submitted: self.submitted,
            completed: self.completed,
            failed: self.failed,
            rate: self.rate.per_sec(now),
        }
    }
}

/// How long a client with nothing open still shows in the status.
const IDLE_CLIENT_LINGER: Duration = Duration::from_secs(10);
/// Idle clients whose figures are kept at most (their entries are small, but not free).
const MAX_IDLE_CLIENTS: usize = 10_000;

/// How long a pool about to fail waits for a worker's own reason for its failed init.
const REASON_GRACE: Duration = Duration::from_millis(500);

/// Outcomes for one client are cut into messages of about this size.
const RESULTS_BYTES: usize = 4 << 20;

struct Worker {
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
}

impl Worker {
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

    fn batch_size(&self, cfg: &BrokerConfig) -> usize {
        match self.task_us {
            Some(us) if us > 0.0 => {
                let n = cfg.target_batch.as_micros() as f64 / us;
                (n as usize).clamp(1, cfg.max_batch_items)
            }
            Some(_) => cfg.max_batch_items,
            None => 1,
        }
    }

    /// Tasks this worker may hold at once.
    fn allowance(&self, cfg: &BrokerConfig) -> usize {
        if self.isolated || self.retiring {
            return 0;
        }
        let long = self
            .task_us
            .is_some_and(|us| us > cfg.prefetch_limit.as_micros() as f64);
        let batches = if long { 1 } else { self.capacity };
        batches * self.batch_size(cfg)
    }
}

/// The broker's whole state.
pub struct Broker {
    cfg: BrokerConfig,
    tasks: HashMap<u64, Task>,
    next_id: u64,
    clients: HashMap<Vec<u8>, Client>,
    /// Figures of clients recently forgotten for having nothing open.
    idle_clients: HashMap<Vec<u8>, ClientFigures>,
    /// Clients with queued tasks, in turn order.
    client_turns: VecDeque<Vec<u8>>,
    workers: HashMap<Vec<u8>, Worker>,
    /// Workers with free credit, least recently fed first.
    lru: VecDeque<Vec<u8>>,
    /// Local children started but not yet ready, with their init error if they sent one.
    starting: HashMap<Vec<u8>, Option<String>>,
    init_failures_in_a_row: u32,
    /// The latest reason a worker gave for its failed init.
    last_init_error: Option<String>,
    /// Children that exited during init before their reason arrived (it travels on another
    /// socket than the news of their exit, and may come second).
    exited_in_init: HashSet<Vec<u8>>,
    /// The pool is to fail at this time, with this reason, unless a worker's own reason
    /// arrives first.
    failure_due: Option<(Instant, String)>,
    /// Set when the pool can no longer run tasks; every task then fails with it.
    failed: Option<String>,
    garbage: HashMap<Vec<u8>, u32>,
    ignored: HashSet<Vec<u8>>,
    stats: BrokerStats,
    /// The pool's welcome bytes, the answer to every `Hello`.
    welcome: Arc<[u8]>,
    started: Instant,
    /// All outcomes per second; `rated` of them counted so far.
    rate: Rate,
    rated: u64,
    outbox: Vec<(Route, Vec<Vec<u8>>)>,
}

impl Broker {
    pub fn new(cfg: BrokerConfig, now: Instant) -> Self {
        Broker {
            cfg,
            tasks: HashMap::new(),
            next_id: 1,
            clients: HashMap::new(),
            idle_clients: HashMap::new(),
            client_turns: VecDeque::new(),
            workers: HashMap::new(),
            lru: VecDeque::new(),
            starting: HashMap::new(),
            init_failures_in_a_row: 0,
            last_init_error: None,
            exited_in_init: HashSet::new(),
            failure_due: None,
            failed: None,
            garbage: HashMap::new(),
            ignored: HashSet::new(),
            stats: BrokerStats::default(),
            welcome: Arc::from(&[][..]),
            started: now,
            rate: Rate::new(now),
            rated: 0,
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
            workers_alive: self.workers.len(),
            queued: self
                .client_turns
                .iter()
                .map(|c| self.clients[c].queue.len())
                .sum(),
            in_flight: self.workers.values().map(|w| w.in_flight.len()).sum(),
            ..self.stats.clone()
        }
    }

    /// Figures per client and worker, and rates, as of `now`.
    pub fn status(&self, now: Instant) -> BrokerStatus {
        let open = self.clients.iter().map(|(identity, c)| {
            let in_flight = c.open.saturating_sub(c.queue.len());
            c.figures.status(identity, c.queue.len(), in_flight, now)
        });
        let idle = self
            .idle_clients
            .iter()
            .filter(|(_, f)| now.saturating_duration_since(f.last_active) < IDLE_CLIENT_LINGER)
            .map(|(identity, f)| f.status(identity, 0, 0, now));
        let mut clients: Vec<ClientStatus> = open.chain(idle).collect();
        clients.sort_by(|a, b| a.id.cmp(&b.id));
        let mut workers: Vec<WorkerStatus> = self
            .workers
            .iter()
            .map(|(identity, w)| WorkerStatus {
                id: String::from_utf8_lossy(identity).into_owned(),
                state: w.state(),
                in_flight: w.in_flight.len(),
                completed: w.completed,
                failed: w.failed,
            })
            .collect();
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        BrokerStatus {
            uptime_secs: now.saturating_duration_since(self.started).as_secs_f64(),
            rate: self.rate.per_sec(now),
            totals: self.stats(),
            clients,
            workers,
        }
    }

    /// Why the pool failed, if it did.
    #[cfg(test)]
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Messages to send, in order. Call [`Broker::flush`] first.
    pub fn outbox(&mut self) -> std::vec::Drain<'_, (Route, Vec<Vec<u8>>)> {
        self.outbox.drain(..)
    }

    /// A message from a worker, by routing id.
    pub fn on_worker<F: AsRef<[u8]>>(&mut self, identity: &[u8], frames: &[F], now: Instant) {
        if self.ignored.contains(identity) {
            return;
        }
        let msg = match Message::decode(frames) {
            Ok(msg) => msg,
            Err(e) => {
                self.refuse_version(Route::Worker(identity.to_vec()), &e);
                return self.on_garbage(identity, &e.to_string(), true);
            }
        };
        if let Some(worker) = self.workers.get_mut(identity) {
            worker.last_seen = now;
        }
        match msg {
            Message::Ready(ready) => {
                if self.workers.contains_key(identity) {
                    self.worker_dead(identity, "registered twice");
                }
                self.starting.remove(identity);
                self.init_failures_in_a_row = 0;
                self.failure_due = None;
                self.stats.workers_ready += 1;
                tracing::debug!(pid = ready.pid, host = ready.host, "worker ready");
                self.workers.insert(
                    identity.to_vec(),
                    Worker {
                        capacity: ready.capacity.clamp(1, 64) as usize,
                        in_flight: HashSet::new(),
                        last_seen: now,
                        last_sent: now,
                        task_us: None,
                        in_lru: false,
                        isolated: false,
                        retiring: false,
                        completed: 0,
                        failed: 0,
                    },
                );
                self.offer(identity);
            }
            Message::Results(batch) => {
                if !self.workers.contains_key(identity) {
                    // A worker we declared dead (frozen, then resumed): its tasks are
                    // elsewhere already. Drop the results and tell it to go.
                    self.stats.duplicates_dropped += batch.len() as u64;
                    return self.send_worker(identity, Command::Shutdown, None);
                }
                self.on_results(identity, batch.busy_us, batch.iter(), batch.len());
                self.offer(identity);
            }
            Message::Heartbeat => {
                if !self.workers.contains_key(identity) && !self.starting.contains_key(identity) {
                    self.send_worker(identity, Command::Shutdown, None);
                }
            }
            Message::InitFailed(text) => {
                tracing::warn!("worker init failed: {text}");
                if let Some(slot) = self.starting.get_mut(identity) {
                    *slot = Some(text.to_string());
                } else if self.exited_in_init.remove(identity) {
                    // Its exit was counted already; this is the reason, arriving second.
                    self.last_init_error = Some(text.to_string());
                    if self.failure_due.take().is_some() {
                        self.fail_init(text);
                    }
                } else {
                    // A worker we did not start (remote): count it here, once.
                    self.init_failed(Some(text.to_string()), String::new(), now);
                }
            }
            Message::Release(ids) => self.release(identity, ids.iter()),
            // Asking is not joining: no credit, no place in the LRU queue, no figures but one.
            Message::Hello => {
                self.stats.welcomes += 1;
                let welcome = Message::Welcome(&self.welcome).encode();
                self.outbox
                    .push((Route::Worker(identity.to_vec()), welcome));
            }
            Message::Goodbye => self.worker_dead(identity, "worker left"),
            other => self.on_garbage(
                identity,
                &format!("{:?} is not a worker command", other.command()),
                true,
            ),
        }
    }

    /// A message from a client, by routing id.
    pub fn on_client<F: AsRef<[u8]>>(&mut self, identity: &[u8], frames: &[F], now: Instant) {
        if self.ignored.contains(identity) {
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
            Message::Submit(batch) => self.on_submit(identity, batch, now),
            Message::Cancel => self.cancel_client(identity),
            Message::Heartbeat => {}
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
            Ok(Message::ChildStarted { identity }) => {
                self.starting.insert(identity.to_vec(), None);
            }
            Ok(Message::ChildExited { identity, status }) => {
                if let Some(init_error) = self.starting.remove(identity) {
                    if init_error.is_none() {
                        if self.exited_in_init.len() > 1_000 {
                            self.exited_in_init.clear();
                        }
                        self.exited_in_init.insert(identity.to_vec());
                    }
                    let fallback = format!("worker exited during init ({status})");
                    self.init_failed(init_error, fallback, now);
                } else if self.workers.contains_key(identity) {
                    self.worker_dead(identity, status);
                }
            }
            Ok(other) => tracing::error!("unexpected control message {:?}", other.command()),
            Err(e) => tracing::error!("malformed control message: {e}"),
        }
    }

    /// Heartbeats and expiry; call at least every [`Broker::next_wakeup`].
    pub fn tick(&mut self, now: Instant) {
        if let Some((due, _)) = &self.failure_due {
            if *due <= now {
                let (_, fallback) = self.failure_due.take().expect("checked");
                self.fail_init(&fallback);
            }
        }
        let deadline = self.cfg.heartbeat_interval * self.cfg.liveness;
        let expired: Vec<Vec<u8>> = self
            .workers
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.last_seen) > deadline)
            .map(|(id, _)| id.clone())
            .collect();
        for identity in expired {
            tracing::warn!("worker missed its heartbeats for {deadline:?}; declaring it dead");
            self.worker_dead(&identity, "missed heartbeats");
            self.outbox.push((
                Route::Supervisor,
                Message::KillWorker {
                    identity: &identity,
                }
                .encode(),
            ));
        }
        let quiet: Vec<Vec<u8>> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                now.saturating_duration_since(w.last_sent) >= self.cfg.heartbeat_interval
            })
            .map(|(id, _)| id.clone())
            .collect();
        for identity in quiet {
            self.send_worker(&identity, Command::Heartbeat, None);
            if let Some(w) = self.workers.get_mut(&identity) {
                w.last_sent = now;
            }
        }
        // Clients waiting for outcomes hear from us every interval: a remote client can tell
        // a silent broker from slow tasks, and a vanished client shows up as unreachable.
        for (identity, client) in self.clients.iter_mut() {
            if client.open > 0
                && now.saturating_duration_since(client.last_sent) >= self.cfg.heartbeat_interval
            {
                client.last_sent = now;
                self.outbox.push((
                    Route::Client(identity.clone()),
                    vec![header(Command::Heartbeat).to_vec()],
                ));
            }
        }
    }

    /// When [`Broker::tick`] next has something to do.
    pub fn next_wakeup(&self, now: Instant) -> Instant {
        let deadline = self.cfg.heartbeat_interval * self.cfg.liveness;
        self.workers
            .values()
            .flat_map(|w| {
                [
                    w.last_sent + self.cfg.heartbeat_interval,
                    w.last_seen + deadline,
                ]
            })
            .min()
            .unwrap_or(now + self.cfg.heartbeat_interval)
            .max(now)
    }

    /// A send to a worker failed because it is gone (ROUTER_MANDATORY told us).
    pub fn worker_unreachable(&mut self, identity: &[u8]) {
        if self.workers.contains_key(identity) {
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
        for (identity, client) in self.clients.iter_mut() {
            if !client.outbox.is_empty() {
                let batch = std::mem::take(&mut client.outbox).finish(0);
                client.sealed.push(batch);
            }
            for batch in client.sealed.drain(..) {
                client.last_sent = now;
                self.outbox.push((
                    Route::Client(identity.clone()),
                    vec![header(Command::Results).to_vec(), batch],
                ));
            }
        }
        // A client with nothing open is forgotten (a finished stream); it is known again
        // the moment it submits, with its figures if they are still kept.
        let idle = &mut self.idle_clients;
        self.clients.retain(|identity, c| {
            c.figures.tally(now);
            if c.open > 0 {
                return true;
            }
            if idle.len() < MAX_IDLE_CLIENTS {
                idle.insert(identity.clone(), c.figures.clone());
            }
            false
        });
        self.idle_clients
            .retain(|_, f| now.saturating_duration_since(f.last_active) < IDLE_CLIENT_LINGER);
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
        for (_, task) in self.tasks.drain() {
            if let Some(client) = self.clients.get_mut(&task.client) {
                client.fail(task.client_id, &error);
            }
        }
        for client in self.clients.values_mut() {
            client.queue.clear();
        }
        self.client_turns.clear();
        let workers: Vec<Vec<u8>> = self.workers.drain().map(|(id, _)| id).collect();
        self.lru.clear();
        for identity in workers {
            self.send_worker(&identity, Command::Shutdown, None);
        }
    }

    fn on_submit(&mut self, identity: &[u8], batch: TaskBatch<'_>, now: Instant) {
        let idle = &mut self.idle_clients;
        let client = self
            .clients
            .entry(identity.to_vec())
            .or_insert_with(|| Client {
                queue: VecDeque::new(),
                outbox: ResultBatchWriter::new(),
                sealed: Vec::new(),
                open: 0,
                last_sent: now,
                figures: idle
                    .remove(identity)
                    .unwrap_or_else(|| ClientFigures::new(now)),
            });
        self.stats.submitted += batch.len() as u64;
        client.figures.submitted += batch.len() as u64;
        client.figures.last_active = now;
        if let Some(reason) = &self.failed {
            let error = WireError {
                kind: ErrorKind::InitFailed,
                message: reason,
                detail: "",
            };
            for (client_id, _) in batch.iter() {
                client.outbox.push_err(client_id, &error);
            }
            self.stats.failed += batch.len() as u64;
            client.figures.failed += batch.len() as u64;
            return;
        }
        let was_idle = client.queue.is_empty();
        for (client_id, payload) in batch.iter() {
            let id = self.next_id;
            self.next_id += 1;
            self.tasks.insert(
                id,
                Task {
                    client: identity.to_vec(),
                    client_id,
                    payload: payload.to_vec(),
                    attempts: 0,
                },
            );
            client.queue.push_back(id);
            client.open += 1;
        }
        if was_idle && !client.queue.is_empty() {
            self.client_turns.push_back(identity.to_vec());
        }
    }

    fn on_results<'a>(
        &mut self,
        identity: &[u8],
        busy_us: u64,
        items: impl Iterator<Item = (u64, Outcome<'a>)>,
        count: usize,
    ) {
        let Some(worker) = self.workers.get_mut(identity) else {
            return;
        };
        if count > 0 && busy_us > 0 {
            let per_task = busy_us as f64 / count as f64;
            worker.task_us = Some(match worker.task_us {
                Some(avg) => 0.7 * avg + 0.3 * per_task,
                None => per_task,
            });
        }
        for (id, outcome) in items {
            if !worker.in_flight.remove(&id) {
                self.stats.duplicates_dropped += 1;
                continue;
            }
            let Some(task) = self.tasks.remove(&id) else {
                continue;
            };
            match outcome {
                Outcome::Ok(_) => {
                    self.stats.completed += 1;
                    worker.completed += 1;
                }
                Outcome::Err(_) => {
                    self.stats.failed += 1;
                    worker.failed += 1;
                }
            }
            if let Some(client) = self.clients.get_mut(&task.client) {
                client.answer(task.client_id, outcome);
            }
        }
        if worker.in_flight.is_empty() {
            worker.isolated = false;
        }
    }

    /// A leaving worker hands back tasks it never started (its command died on another one):
    /// they go back to the front of their queues with no try charged, and the worker gets no
    /// more tasks.
    fn release(&mut self, identity: &[u8], ids: impl Iterator<Item = u64>) {
        let Some(worker) = self.workers.get_mut(identity) else {
            return;
        };
        worker.retiring = true;
        worker.in_lru = false;
        self.lru.retain(|id| id.as_slice() != identity);
        let mut released: Vec<u64> = ids.filter(|id| worker.in_flight.remove(id)).collect();
        if worker.in_flight.is_empty() {
            worker.isolated = false;
        }
        released.sort_unstable_by(|a, b| b.cmp(a));
        for id in released {
            self.requeue_front(id);
        }
    }

    /// Puts a task back at the front of its client's queue.
    fn requeue_front(&mut self, id: u64) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        let Some(client) = self.clients.get_mut(&task.client) else {
            self.tasks.remove(&id);
            return;
        };
        if client.queue.is_empty() {
            self.client_turns.push_front(task.client.clone());
        }
        client.queue.push_front(id);
        self.stats.requeued += 1;
    }

    /// Puts a worker with free credit at the back of the LRU queue.
    fn offer(&mut self, identity: &[u8]) {
        if let Some(w) = self.workers.get_mut(identity) {
            if !w.in_lru && w.in_flight.len() < w.allowance(&self.cfg) {
                w.in_lru = true;
                self.lru.push_back(identity.to_vec());
            }
        }
    }

    fn dispatch(&mut self, now: Instant) {
        // Workers passed over because the next task must run alone and they are busy.
        let mut passed_over = Vec::new();
        while !self.client_turns.is_empty() {
            let Some(identity) = self.lru.pop_front() else {
                break;
            };
            let worker_count = self.workers.len();
            let Some(worker) = self.workers.get_mut(&identity) else {
                continue;
            };
            worker.in_lru = false;
            let room = worker
                .allowance(&self.cfg)
                .saturating_sub(worker.in_flight.len());
            if room == 0 {
                continue;
            }
            let client_identity = &self.client_turns[0];
            let client = self
                .clients
                .get_mut(client_identity)
                .expect("clients in turn exist");
            let front_is_suspect = client
                .queue
                .front()
                .is_some_and(|id| self.tasks[id].attempts > 0);
            if front_is_suspect && !worker.in_flight.is_empty() {
                worker.in_lru = true;
                passed_over.push(identity);
                continue;
            }
            // Near the end of a stream, split what is left evenly rather than hand it all to
            // the first worker in line.
            let queued: usize = self
                .client_turns
                .iter()
                .map(|c| self.clients[c].queue.len())
                .sum();
            let share = queued.div_ceil(worker_count.max(1)).max(1);
            let limit = room.min(worker.batch_size(&self.cfg)).min(share);

            let client_identity = self.client_turns.pop_front().expect("checked non-empty");
            let client = self
                .clients
                .get_mut(&client_identity)
                .expect("clients in turn exist");
            let mut writer = TaskBatchWriter::new();
            if front_is_suspect {
                let id = client.queue.pop_front().expect("checked non-empty");
                writer.push(id, &self.tasks[&id].payload);
                worker.in_flight.insert(id);
                worker.isolated = true;
            } else {
                while writer.len() < limit && writer.byte_len() < self.cfg.max_batch_bytes {
                    let Some(&id) = client.queue.front() else {
                        break;
                    };
                    let task = &self.tasks[&id];
                    if task.attempts > 0 {
                        break;
                    }
                    client.queue.pop_front();
                    writer.push(id, &task.payload);
                    worker.in_flight.insert(id);
                }
            }
            if !client.queue.is_empty() {
                self.client_turns.push_back(client_identity);
            }
            worker.last_sent = now;
            let body = writer.finish();
            self.send_worker(&identity, Command::Tasks, Some(body));
            self.offer(&identity);
        }
        for identity in passed_over.into_iter().rev() {
            self.lru.push_front(identity);
        }
    }

    fn worker_dead(&mut self, identity: &[u8], reason: &str) {
        let Some(worker) = self.workers.remove(identity) else {
            return;
        };
        self.stats.workers_lost += 1;
        self.lru.retain(|w| w.as_slice() != identity);
        let mut lost: Vec<u64> = worker.in_flight.into_iter().collect();
        // Re-queue in submission order, so ordered clients get their earliest tasks first.
        lost.sort_unstable_by(|a, b| b.cmp(a));
        for id in lost {
            let Some(task) = self.tasks.get_mut(&id) else {
                continue;
            };
            task.attempts += 1;
            if !self.clients.contains_key(&task.client) {
                self.tasks.remove(&id);
                continue;
            }
            if task.attempts >= self.cfg.max_retries {
                let task = self.tasks.remove(&id).expect("present");
                self.stats.poisoned += 1;
                self.stats.failed += 1;
                let message = format!(
                    "the task was running on {} workers that died (last: {reason}); giving up",
                    task.attempts
                );
                let client = self.clients.get_mut(&task.client).expect("checked");
                client.fail(
                    task.client_id,
                    &WireError {
                        kind: ErrorKind::WorkerLost,
                        message: &message,
                        detail: "",
                    },
                );
                continue;
            }
            self.requeue_front(id);
        }
        self.fail_if_hopeless();
    }

    /// Counts a failed init. Past the limit, with no worker ready, the pool fails — with the
    /// workers' own reason, waited for briefly if it has not arrived yet (`fallback` then).
    fn init_failed(&mut self, reason: Option<String>, fallback: String, now: Instant) {
        self.stats.init_failures += 1;
        self.init_failures_in_a_row += 1;
        if reason.is_some() {
            self.last_init_error = reason;
        }
        if self.init_failures_in_a_row < self.cfg.max_init_failures || !self.workers.is_empty() {
            return;
        }
        match self.last_init_error.clone() {
            Some(reason) => self.fail_init(&reason),
            None => self.failure_due = Some((now + REASON_GRACE, fallback)),
        }
    }

    /// The pool cannot start workers: every open and future task fails with `reason`.
    fn fail_init(&mut self, reason: &str) {
        if self.failed.is_some() {
            return;
        }
        self.failed = Some(format!(
            "no worker could start: init failed {} times in a row; last error: {reason}",
            self.init_failures_in_a_row
        ));
        self.outbox
            .push((Route::Supervisor, Message::StopRestarting.encode()));
        self.fail_if_hopeless();
    }

    /// Once the pool has failed and no worker is left, every task fails with the reason.
    fn fail_if_hopeless(&mut self) {
        let Some(reason) = &self.failed else {
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
        for (_, task) in self.tasks.drain() {
            if let Some(client) = self.clients.get_mut(&task.client) {
                client.fail(task.client_id, &error);
                self.stats.failed += 1;
            }
        }
        for client in self.clients.values_mut() {
            client.queue.clear();
        }
        self.client_turns.clear();
    }

    fn cancel_client(&mut self, identity: &[u8]) {
        self.idle_clients.remove(identity);
        if let Some(client) = self.clients.remove(identity) {
            for id in client.queue {
                self.tasks.remove(&id);
            }
            self.client_turns.retain(|c| c.as_slice() != identity);
            // Its in-flight tasks finish on their workers; their results are then dropped.
        }
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
        self.stats.malformed += 1;
        tracing::warn!("dropped a malformed message: {why}");
        if self.garbage.len() > 10_000 {
            self.garbage.clear();
        }
        let count = self.garbage.entry(identity.to_vec()).or_insert(0);
        *count += 1;
        if *count >= self.cfg.garbage_limit {
            tracing::warn!("ignoring a peer that sent {count} malformed messages");
            if self.ignored.len() > 10_000 {
                self.ignored.clear();
            }
            self.ignored.insert(identity.to_vec());
            if from_worker {
                self.worker_dead(identity, "sent malformed messages");
            } else {
                self.cancel_client(identity);
            }
        }
    }

    fn send_worker(&mut self, identity: &[u8], command: Command, body: Option<Vec<u8>>) {
        let mut frames = vec![header(command).to_vec()];
        frames.extend(body);
        self.outbox.push((Route::Worker(identity.to_vec()), frames));
    }
}

/// A routing id in hex, at most its first 8 bytes (ZeroMQ gives a client 5).
fn short_hex(identity: &[u8]) -> String {
    identity
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests;
