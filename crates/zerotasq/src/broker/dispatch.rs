//! Feeding workers: the worker with free credit that waited longest gets a batch from the
//! client whose turn it is, sized from the worker's task time and its credit, and near the
//! end of a stream no more than its share of what is left. A suspect task (it was on a
//! worker that died) goes alone, to a worker holding nothing else.

use std::time::Instant;

use super::Broker;
use crate::protocol::{Command, TaskBatchWriter};

impl Broker {
    pub(super) fn dispatch(&mut self, now: Instant) {
        self.batch_wake = None;
        // Workers passed over because the next task must run alone and they are busy.
        let mut passed_over = Vec::new();
        while self.clients.has_turns() {
            let Some(identity) = self.workers.next_free() else {
                break;
            };
            let Some(room) = self.workers.room(&identity) else {
                continue;
            };
            if room.tasks == 0 {
                continue;
            }
            // A worker that takes batches of its own size may wait a little for a fuller
            // one; it is fed when the wait is over (the broker wakes up for it).
            if let Some((max, wait)) = self.workers.batch_wait(&identity) {
                if let Some(until) = self.clients.batch_wait_until(max, wait, now) {
                    self.batch_wake = Some(self.batch_wake.map_or(until, |at| at.min(until)));
                    passed_over.push(identity);
                    continue;
                }
            }
            let suspect = self
                .clients
                .next_task()
                .is_some_and(|id| self.tasks.is_suspect(id));
            if suspect && room.busy {
                passed_over.push(identity);
                continue;
            }
            // Near the end of a stream, split what is left evenly rather than hand it all to
            // the first worker in line.
            let share = self
                .clients
                .queued()
                .div_ceil(self.workers.len().max(1))
                .max(1);
            let limit = if suspect {
                1
            } else {
                room.tasks.min(room.batch).min(share)
            };
            let max_bytes = self.cfg.max_batch_bytes;
            let tasks = &mut self.tasks;
            let mut writer = TaskBatchWriter::new();
            let mut ids = Vec::with_capacity(limit);
            self.clients.take_turn(|id| {
                if writer.len() >= limit || writer.byte_len() >= max_bytes {
                    return false;
                }
                // A suspect behind the batch waits for a turn of its own.
                if !suspect && tasks.is_suspect(id) {
                    return false;
                }
                writer.push(id, tasks.hand_out(id, now));
                ids.push(id);
                true
            });
            self.workers.hand(&identity, &ids, suspect, now);
            self.send_worker(&identity, Command::Tasks, Some(writer.finish()));
            self.workers.offer(&identity);
        }
        self.workers.put_back(passed_over);
    }
}
