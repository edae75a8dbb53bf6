//! The clients' side: each client's queue of tasks waiting for a worker, the turns clients
//! take (one batch each, so a big stream cannot starve a small one), the outcomes collected
//! for each during one loop iteration, the heartbeats that tell a waiting client the broker
//! lives, and each client's figures for the status — kept for a while after it has nothing
//! open, and dropped with it when it cancels or vanishes.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::tasks::{Body, PeerId, Tasks};
use super::{Outbox, Route};
use crate::protocol::{header, Command, Outcome, ResultBatchWriter, TaskBatch, WireError};
use crate::status::{ClientStatus, Rate};

/// How long a client with nothing open still shows in the status.
const IDLE_CLIENT_LINGER: Duration = Duration::from_secs(10);
/// Idle clients whose figures are kept at most (their entries are small, but not free).
const MAX_IDLE_CLIENTS: usize = 10_000;
/// Idle clients past their linger are dropped this often (the status hides them anyway), so
/// a loop iteration does not walk up to `MAX_IDLE_CLIENTS` entries.
const IDLE_PRUNE_EVERY: Duration = Duration::from_secs(1);
/// Outcomes for one client are cut into messages of about this size.
const RESULTS_BYTES: usize = 4 << 20;

struct Client {
    queue: VecDeque<u64>,
    /// Since when its queue holds tasks (a batching worker may wait for more until then
    /// plus its wait).
    waiting_since: Instant,
    /// It said it has nothing more to send for now (an empty `Submit`): no batch waits for
    /// more of its tasks.
    input_ended: bool,
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

pub(super) struct Clients {
    /// Clients with tasks open.
    open: HashMap<PeerId, Client>,
    /// Figures of clients recently forgotten for having nothing open.
    idle: HashMap<PeerId, ClientFigures>,
    /// Clients with queued tasks, in turn order.
    turns: VecDeque<PeerId>,
    /// Tasks in all queues.
    queued: usize,
    last_pruned: Instant,
    heartbeat_interval: Duration,
}

impl Clients {
    pub(super) fn new(heartbeat_interval: Duration, now: Instant) -> Self {
        Clients {
            open: HashMap::new(),
            idle: HashMap::new(),
            turns: VecDeque::new(),
            queued: 0,
            last_pruned: now,
            heartbeat_interval,
        }
    }

    /// Whether no client has anything open.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.open.len()
    }

    /// Tasks waiting for a worker, all clients together.
    pub(super) fn queued(&self) -> usize {
        self.queued
    }

    /// A client's batch of tasks, each taken into `tasks` and queued — or, once the pool
    /// has failed, answered at once with `failed` as an `InitFailed` error.
    pub(super) fn submit(
        &mut self,
        identity: &[u8],
        batch: TaskBatch<'_>,
        body: &Body,
        tasks: &mut Tasks,
        failed: Option<&WireError<'_>>,
        now: Instant,
    ) {
        let key = match self.open.get_key_value(identity) {
            Some((key, _)) => key.clone(),
            None => {
                let key = PeerId::from(identity);
                let figures = self
                    .idle
                    .remove(identity)
                    .unwrap_or_else(|| ClientFigures::new(now));
                let client = Client {
                    queue: VecDeque::new(),
                    waiting_since: now,
                    input_ended: false,
                    outbox: ResultBatchWriter::new(),
                    sealed: Vec::new(),
                    open: 0,
                    last_sent: now,
                    figures,
                };
                self.open.insert(key.clone(), client);
                key
            }
        };
        let client = self.open.get_mut(identity).expect("inserted above");
        // An empty batch is the client's word that its input is exhausted for now.
        client.input_ended = batch.is_empty();
        client.figures.submitted += batch.len() as u64;
        client.figures.last_active = now;
        if let Some(error) = failed {
            for (client_id, _) in batch.iter() {
                client.outbox.push_err(client_id, error);
            }
            client.figures.failed += batch.len() as u64;
            return;
        }
        let was_idle = client.queue.is_empty();
        if was_idle {
            client.waiting_since = now;
        }
        for (client_id, payload) in batch.iter() {
            client
                .queue
                .push_back(tasks.add(&key, client_id, body.share(payload)));
            client.open += 1;
        }
        self.queued += batch.len();
        if was_idle && !client.queue.is_empty() {
            self.turns.push_back(key);
        }
    }

    /// Whether the client has tasks here not yet answered.
    pub(super) fn is_open(&self, identity: &[u8]) -> bool {
        self.open.get(identity).is_some_and(|c| c.open > 0)
    }

    /// Whether some client has tasks queued.
    pub(super) fn has_turns(&self) -> bool {
        !self.turns.is_empty()
    }

    /// The next task of the client whose turn it is.
    pub(super) fn next_task(&self) -> Option<u64> {
        let identity = self.turns.front()?;
        self.open.get(identity)?.queue.front().copied()
    }

    /// For a worker that takes batches of `max` and may wait `wait` for a fuller one: when
    /// to feed it from the client whose turn it is — `None` now (a full batch is queued,
    /// the wait is over, or the client has sent all it has), else the time the wait ends.
    pub(super) fn batch_wait_until(
        &self,
        max: usize,
        wait: Duration,
        now: Instant,
    ) -> Option<Instant> {
        let client = self.open.get(self.turns.front()?)?;
        let until = client.waiting_since + wait;
        let fill = client.queue.len() >= max || client.input_ended || now >= until;
        (!fill).then_some(until)
    }

    /// The client whose turn it is gives tasks from the front of its queue for as long as
    /// `take` accepts them, and goes to the back of the turns if it has more.
    pub(super) fn take_turn(&mut self, mut take: impl FnMut(u64) -> bool) {
        let Some(identity) = self.turns.pop_front() else {
            return;
        };
        let client = self.open.get_mut(&identity).expect("clients in turn exist");
        while let Some(&id) = client.queue.front() {
            if !take(id) {
                break;
            }
            client.queue.pop_front();
            self.queued -= 1;
        }
        if !client.queue.is_empty() {
            self.turns.push_back(identity);
        }
    }

    /// Puts a task back at the front of its client's queue; false if the client is gone.
    pub(super) fn requeue_front(&mut self, identity: &PeerId, id: u64) -> bool {
        let Some(client) = self.open.get_mut(identity) else {
            return false;
        };
        if client.queue.is_empty() {
            // Its `waiting_since` stays that of an earlier submit: a task that comes back
            // has waited already.
            self.turns.push_front(identity.clone());
        }
        client.queue.push_front(id);
        self.queued += 1;
        true
    }

    /// An outcome for a client; false if the client is gone.
    pub(super) fn answer(&mut self, identity: &[u8], client_id: u64, outcome: Outcome<'_>) -> bool {
        let Some(client) = self.open.get_mut(identity) else {
            return false;
        };
        client.answer(client_id, outcome);
        true
    }

    /// An error outcome for a client; false if the client is gone.
    pub(super) fn fail(&mut self, identity: &[u8], client_id: u64, error: &WireError<'_>) -> bool {
        let Some(client) = self.open.get_mut(identity) else {
            return false;
        };
        client.fail(client_id, error);
        true
    }

    /// A client cancelled or vanished: it, its queue and its figures are forgotten (the
    /// caller forgets its tasks).
    pub(super) fn cancel(&mut self, identity: &[u8]) {
        self.idle.remove(identity);
        let Some(client) = self.open.remove(identity) else {
            return;
        };
        if !client.queue.is_empty() {
            self.turns.retain(|c| &c[..] != identity);
            self.queued -= client.queue.len();
        }
    }

    /// Every queue emptied (the tasks were answered otherwise).
    pub(super) fn clear_queues(&mut self) {
        for client in self.open.values_mut() {
            client.queue.clear();
        }
        self.turns.clear();
        self.queued = 0;
    }

    /// Queues each client's collected outcomes as messages; forgets clients with nothing
    /// open (a finished stream: it is known again the moment it submits, with its figures if
    /// they are still kept).
    pub(super) fn flush(&mut self, now: Instant, outbox: &mut Outbox) {
        for (identity, client) in self.open.iter_mut() {
            if !client.outbox.is_empty() {
                let batch = std::mem::take(&mut client.outbox).finish(0);
                client.sealed.push(batch);
            }
            for batch in client.sealed.drain(..) {
                client.last_sent = now;
                outbox.push((
                    Route::Client(identity.to_vec()),
                    vec![header(Command::Results).to_vec(), batch],
                ));
            }
        }
        let idle = &mut self.idle;
        self.open.retain(|identity, c| {
            c.figures.tally(now);
            if c.open > 0 {
                return true;
            }
            if idle.len() < MAX_IDLE_CLIENTS {
                idle.insert(identity.clone(), c.figures.clone());
            }
            false
        });
        if now.saturating_duration_since(self.last_pruned) >= IDLE_PRUNE_EVERY {
            self.last_pruned = now;
            self.idle
                .retain(|_, f| now.saturating_duration_since(f.last_active) < IDLE_CLIENT_LINGER);
        }
    }

    /// Clients waiting for outcomes hear from us every interval: a remote client can tell
    /// a silent broker from slow tasks, and a vanished client shows up as unreachable.
    pub(super) fn heartbeats(&mut self, now: Instant, outbox: &mut Outbox) {
        for (identity, client) in self.open.iter_mut() {
            if client.open > 0
                && now.saturating_duration_since(client.last_sent) >= self.heartbeat_interval
            {
                client.last_sent = now;
                outbox.push((
                    Route::Client(identity.to_vec()),
                    vec![header(Command::Heartbeat).to_vec()],
                ));
            }
        }
    }

    /// When [`Clients::heartbeats`] next has something to do.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.open
            .values()
            .filter(|c| c.open > 0)
            .map(|c| c.last_sent + self.heartbeat_interval)
            .min()
    }

    /// Each client's figures for the status — open ones, and idle ones still lingering —
    /// by id.
    pub(super) fn statuses(&self, now: Instant) -> Vec<ClientStatus> {
        let open = self.open.iter().map(|(identity, c)| {
            let in_flight = c.open.saturating_sub(c.queue.len());
            c.figures.status(identity, c.queue.len(), in_flight, now)
        });
        let idle = self
            .idle
            .iter()
            .filter(|(_, f)| now.saturating_duration_since(f.last_active) < IDLE_CLIENT_LINGER)
            .map(|(identity, f)| f.status(identity, 0, 0, now));
        let mut clients: Vec<ClientStatus> = open.chain(idle).collect();
        clients.sort_by(|a, b| a.id.cmp(&b.id));
        clients
    }
}

/// A routing id in hex, at most its first 8 bytes (ZeroMQ gives a client 5).
pub(super) fn short_hex(identity: &[u8]) -> String {
    identity
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}
