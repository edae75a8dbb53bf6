//! The tasks the broker holds, queued or on a worker, and the retry rule.
//!
//! A task on a worker that died is charged one attempt and goes back to the front of its
//! client's queue; a charged task is a *suspect* (it may be what killed the worker), so it
//! runs alone. At `max_retries` attempts it is poison: it ends as a `WorkerLost` error
//! instead of killing more workers. A task handed back unstarted is not charged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

/// A routing id, shared between the tables that name the same peer.
pub(super) type PeerId = Arc<[u8]>;

pub(super) struct Task {
    pub(super) client: PeerId,
    /// The id the client gave it.
    pub(super) client_id: u64,
    /// A slice of the message it came in, shared, not copied.
    pub(super) payload: Bytes,
    /// Dead workers this task has been on.
    pub(super) attempts: u32,
    /// When it last went to a worker.
    pub(super) dispatched: Option<Instant>,
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
    pub(super) fn add(&mut self, client: &PeerId, client_id: u64, payload: Bytes) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.table.insert(
            id,
            Task {
                client: client.clone(),
                client_id,
                payload,
                attempts: 0,
                dispatched: None,
            },
        );
        id
    }

    /// The bytes of a task going to a worker now. Only for ids known to be held (queued
    /// tasks always are).
    pub(super) fn hand_out(&mut self, id: u64, now: Instant) -> &[u8] {
        let task = self.table.get_mut(&id).expect("queued tasks are held");
        task.dispatched = Some(now);
        &task.payload
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

/// A received frame the broker may keep parts of.
pub trait SharedFrame: AsRef<[u8]> {
    /// The frame as shared bytes: the same memory when it can be (a received message), a
    /// copy otherwise.
    fn shared(&self) -> Bytes;
}

impl SharedFrame for Bytes {
    fn shared(&self) -> Bytes {
        self.clone()
    }
}

/// Frames built in memory (tests, the fuzz target): copied once.
impl SharedFrame for Vec<u8> {
    fn shared(&self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

/// The body of a `Submit`, whose task payloads become shared slices of it.
pub(super) struct Body<'a> {
    frame: &'a [u8],
    shared: Bytes,
}

impl<'a> Body<'a> {
    pub(super) fn new<F: SharedFrame>(frame: &'a F) -> Self {
        Body {
            frame: frame.as_ref(),
            shared: frame.shared(),
        }
    }

    /// `part`, a slice of this body's frame (a decoded payload), as shared bytes.
    pub(super) fn share(&self, part: &[u8]) -> Bytes {
        let start = (part.as_ptr() as usize).wrapping_sub(self.frame.as_ptr() as usize);
        match start.checked_add(part.len()) {
            Some(end) if end <= self.frame.len() => self.shared.slice(start..end),
            // Not from this frame: never the case for a decoded payload.
            _ => Bytes::copy_from_slice(part),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_is_a_slice_of_a_received_frame_not_a_copy() {
        let frame = Bytes::from(b"..task one..task two".to_vec());
        let body = Body::new(&frame);
        let part = body.share(&frame[2..10]);
        assert_eq!(&part[..], b"task one");
        assert_eq!(part.as_ptr(), frame[2..].as_ptr(), "the same memory");
        let built = b"..task one".to_vec();
        assert_eq!(&Body::new(&built).share(&built[2..])[..], b"task one");
        let elsewhere = b"not from the frame".to_vec();
        assert_eq!(&body.share(&elsewhere)[..], &elsewhere[..], "copied");
    }
}
