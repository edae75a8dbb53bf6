//! The tasks the broker holds, queued or on a worker, and the retry rule.
//!
//! A task on a worker that died is charged one attempt and goes back to the front of its
//! client's queue; a charged task is a *suspect* (it may be what killed the worker), so it
//! runs alone. At `max_retries` attempts it is poison: it ends as a `WorkerLost` error
//! instead of killing more workers. A task handed back unstarted is not charged.

use std::collections::HashMap;
use std::sync::Arc;

/// A routing id, shared between the tables that name the same peer.
pub(super) type PeerId = Arc<[u8]>;

pub(super) struct Task {
    pub(super) client: PeerId,
    /// The id the client gave it.
    pub(super) client_id: u64,
    pub(super) payload: Vec<u8>,
    /// Dead workers this task has been on.
    pub(super) attempts: u32,
}

/// What charging a try to a task whose worker died makes of it.
pub(super) enum Charged {
    /// Back to the front of its client's queue.
    Retry,
    /// Out of tries: removed, to be answered with an error.
    Poison(Task),
}

pub(super) struct Tasks {
    table: HashMap<u64, Task>,
    next_id: u64,
    max_retries: u32,
}

impl Tasks {
    pub(super) fn new(max_retries: u32) -> Self {
        Tasks {
            table: HashMap::new(),
            next_id: 1,
            max_retries,
        }
    }

    /// Takes in a client's task; the broker's id for it.
    pub(super) fn add(&mut self, client: &PeerId, client_id: u64, payload: &[u8]) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.table.insert(
            id,
            Task {
                client: client.clone(),
                client_id,
                payload: payload.to_vec(),
                attempts: 0,
            },
        );
        id
    }

    /// The task's bytes. Only for ids known to be held (queued tasks always are).
    pub(super) fn payload(&self, id: u64) -> &[u8] {
        &self.table[&id].payload
    }

    /// Whether the task was on a worker that died, so must run alone.
    pub(super) fn is_suspect(&self, id: u64) -> bool {
        self.table.get(&id).is_some_and(|t| t.attempts > 0)
    }

    pub(super) fn client_of(&self, id: u64) -> Option<PeerId> {
        self.table.get(&id).map(|t| t.client.clone())
    }

    pub(super) fn remove(&mut self, id: u64) -> Option<Task> {
        self.table.remove(&id)
    }

    /// Charges a try to a task whose worker died; `None` if the task is gone already.
    pub(super) fn charge(&mut self, id: u64) -> Option<Charged> {
        let task = self.table.get_mut(&id)?;
        task.attempts += 1;
        if task.attempts >= self.max_retries {
            self.table.remove(&id).map(Charged::Poison)
        } else {
            Some(Charged::Retry)
        }
    }

    /// Forgets every task of a client (it cancelled): their results are dropped, and none
    /// goes back to a queue.
    pub(super) fn forget_client(&mut self, client: &[u8]) {
        self.table.retain(|_, task| &task.client[..] != client);
    }

    /// Every task, removed (the pool is closing or has failed).
    pub(super) fn drain(&mut self) -> impl Iterator<Item = Task> + '_ {
        self.table.drain().map(|(_, task)| task)
    }
}

/// The error message of a poison task.
pub(super) fn poison_message(attempts: u32, last_reason: &str) -> String {
    format!("the task was running on {attempts} workers that died (last: {last_reason}); giving up")
}
