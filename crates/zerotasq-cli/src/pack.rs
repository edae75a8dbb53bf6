//! Packing: consecutive records go to the engine as one task while they are answered in
//! microseconds, so tiny lines do not pay the per-task cost each; one record per task as
//! soon as they take longer, so that balance between workers is kept.
//!
//! The size adapts to the answers: a pack aims at [`TARGET_US`] of work, grows at most twice
//! per answer, shrinks at once, and is 1 when a record alone takes that long. Records in
//! flight stay below the window (so memory is bounded by about twice `--window` records).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::input::{Buffered, Records};
use crate::payload::{set_task_head, start_task};

/// Work a pack aims at, in microseconds.
const TARGET_US: f64 = 1000.0;
/// Records per pack at most.
pub const MAX_PACK: u64 = 512;
/// A pack takes no more records once it holds this many bytes.
const MAX_PACK_BYTES: usize = 16 << 10;
/// Records in flight at most, per window slot.
const RECORDS_PER_SLOT: u64 = 64;

/// What the packer and the reader of answers share.
#[derive(Clone, Default)]
pub struct Packing {
    /// Records per pack now.
    size: Arc<AtomicU64>,
    /// Records packed and not yet answered (written or reported).
    in_flight: Arc<AtomicU64>,
    /// Each task's first record and record count, by task index.
    packs: Arc<Mutex<PackTable>>,
    /// Off: one record per task, always.
    enabled: bool,
}

impl Packing {
    pub fn new(enabled: bool) -> Packing {
        let packing = Packing {
            enabled,
            ..Packing::default()
        };
        packing.size.store(1, Ordering::Relaxed);
        packing
    }

    /// Learns from one answered pack: `count` records in `busy_us`.
    pub fn answered(&self, count: u32, busy_us: u32) {
        if !self.enabled {
            return;
        }
        let per_record = (busy_us as f64 / count.max(1) as f64).max(0.05);
        let ideal = (TARGET_US / per_record).clamp(1.0, MAX_PACK as f64) as u64;
        let now = self.size.load(Ordering::Relaxed);
        self.size.store(ideal.min(now * 2), Ordering::Relaxed);
    }

    /// `count` records have their outcome.
    pub fn done(&self, count: u64) {
        self.in_flight.fetch_sub(count, Ordering::Relaxed);
    }

    /// The first record and record count of task `index` (forgotten).
    pub fn take(&self, index: u64) -> Option<(u64, u32)> {
        self.packs.lock().expect("packs lock").take(index)
    }
}

/// The packs of open tasks by task index: indexes are given in order and mostly taken in
/// order, so a queue from the oldest open index does (no hashing per task).
#[derive(Default)]
struct PackTable {
    /// The index of `slots[0]`.
    base: u64,
    slots: VecDeque<Option<(u64, u32)>>,
}

impl PackTable {
    fn insert(&mut self, index: u64, pack: (u64, u32)) {
        let at = (index - self.base) as usize;
        if self.slots.len() <= at {
            self.slots.resize(at + 1, None);
        }
        self.slots[at] = Some(pack);
    }

    fn take(&mut self, index: u64) -> Option<(u64, u32)> {
        let at = usize::try_from(index.checked_sub(self.base)?).ok()?;
        let pack = self.slots.get_mut(at)?.take();
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
        pack
    }
}

/// A task: one pack's payload.
pub struct Pack {
    pub first: u64,
    pub count: u32,
    pub bytes: Vec<u8>,
}

/// Packs of records, sized by [`Packing`].
pub struct Packer<R> {
    records: Records<R>,
    /// Reading may wait (a pipe): a pack then takes only the records already buffered, so
    /// a slow input streams record by record.
    may_wait: bool,
    window: u64,
    packing: Packing,
    /// Remember each pack by its task index (for the engine's indexed stream).
    index_packs: bool,
    next_index: u64,
}

impl<R: Buffered> Packer<R> {
    pub fn new(
        records: Records<R>,
        may_wait: bool,
        window: u64,
        packing: Packing,
        index_packs: bool,
    ) -> Self {
        Packer {
            records,
            may_wait,
            window,
            packing,
            index_packs,
            next_index: 0,
        }
    }
}

impl<R: Buffered> Iterator for Packer<R> {
    type Item = Pack;

    fn next(&mut self) -> Option<Pack> {
        let in_flight = self.packing.in_flight.load(Ordering::Relaxed);
        let room = (self.window * RECORDS_PER_SLOT)
            .saturating_sub(in_flight)
            .max(1);
        let limit = self.packing.size.load(Ordering::Relaxed).min(room);
        let mut bytes = Vec::with_capacity(if limit > 1 { 4096 } else { 64 });
        let at = start_task(0, 0, &mut bytes);
        let first = self.records.read_into(&mut bytes)?;
        let mut count = 1u32;
        while (count as u64) < limit
            && bytes.len() < MAX_PACK_BYTES
            && (!self.may_wait || self.records.record_buffered())
            && self.records.read_into(&mut bytes).is_some()
        {
            count += 1;
        }
        set_task_head(at, first, count, &mut bytes);
        self.packing
            .in_flight
            .fetch_add(count as u64, Ordering::Relaxed);
        if self.index_packs {
            self.packing
                .packs
                .lock()
                .expect("packs lock")
                .insert(self.next_index, (first, count));
        }
        self.next_index += 1;
        Some(Pack {
            first,
            count,
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::decode_task;

    fn count(pack: Pack) -> u32 {
        decode_task(&pack.bytes).unwrap().count
    }

    #[test]
    fn packs_grow_with_fast_answers_and_shrink_with_slow_ones() {
        let packing = Packing::new(true);
        let input: Vec<u8> = (1..=100)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let mut packer = Packer::new(
            Records::new(&input[..], b'\n'),
            false,
            1000,
            packing.clone(),
            true,
        );
        assert_eq!(count(packer.next().unwrap()), 1);
        packing.answered(1, 1); // 1 µs a record
        packing.answered(2, 2);
        let pack = packer.next().unwrap();
        let task = decode_task(&pack.bytes).unwrap();
        assert_eq!((task.first, task.count), (2, 4));
        assert_eq!(task.records, b"2\n3\n4\n5\n");
        assert_eq!(packing.take(1), Some((2, 4)));
        assert_eq!(packing.take(1), None);
        assert_eq!(packing.take(0), Some((1, 1)));
        packing.answered(1, 5000); // 5 ms a record
        assert_eq!(count(packer.next().unwrap()), 1);
    }

    /// Reads `1\n2\n` at the first read, `3\n4\n` at the second, like a pipe.
    struct Chunks(Vec<&'static [u8]>);

    impl std::io::Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let chunk = self.0.remove(0);
            buf[..chunk.len()].copy_from_slice(chunk);
            Ok(chunk.len())
        }
    }

    #[test]
    fn a_pack_from_a_pipe_takes_only_what_is_buffered() {
        let packing = Packing::new(true);
        packing.size.store(MAX_PACK, Ordering::Relaxed);
        let reader = std::io::BufReader::new(Chunks(vec![b"1\n2\n", b"3\n4\n"]));
        let mut packer = Packer::new(Records::new(reader, b'\n'), true, 1000, packing, false);
        let firsts: Vec<(u64, u32)> = packer.by_ref().map(|p| (p.first, p.count)).collect();
        assert_eq!(firsts, [(1, 2), (3, 2)]);
    }
}
