//! Packing of records: consecutive records go to the engine as one task while they are
//! answered in microseconds, one record per task as soon as they take longer. The size
//! follows the engine's rule ([`PackSizer`]); records in flight stay below
//! `RECORDS_PER_SLOT` × the window (so memory is bounded by about twice `--window` records).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use zerotasq::pack::PackSizer;
use zerotasq::reorder::Reorder;

use crate::input::{Buffered, Records};
use crate::payload::{set_task_head, start_task};

/// Records per pack at most.
pub const MAX_PACK: usize = 512;
/// A pack takes no more records once it holds this many bytes.
const MAX_PACK_BYTES: usize = 16 << 10;
/// Records in flight at most, per window slot.
const RECORDS_PER_SLOT: u64 = 64;

/// What the packer and the reader of answers share.
#[derive(Clone)]
pub struct Packing {
    sizer: Arc<PackSizer>,
    /// Each task's first record and record count, by task index, while the ordered stream
    /// has not yielded it (it yields tasks in index order).
    packs: Arc<Mutex<Reorder<(u64, u32)>>>,
    /// Off: one record per task, always.
    enabled: bool,
}

impl Packing {
    pub fn new(enabled: bool, window: u64) -> Packing {
        Packing {
            sizer: Arc::new(PackSizer::new(MAX_PACK, window * RECORDS_PER_SLOT)),
            packs: Arc::new(Mutex::new(Reorder::new(true))),
            enabled,
        }
    }

    /// Learns from one answered pack: `count` records in `busy_us`.
    pub fn answered(&self, count: u32, busy_us: u32) {
        if self.enabled {
            let busy = Duration::from_micros(busy_us.into());
            self.sizer.answered(count as usize, busy);
        }
    }

    /// `count` records have their outcome.
    pub fn done(&self, count: u64) {
        self.sizer.settled(count);
    }

    /// The first record and record count of task `index`, the next one the ordered stream
    /// yields (forgotten).
    pub fn take(&self, index: u64) -> Option<(u64, u32)> {
        let mut packs = self.packs.lock().expect("packs lock");
        match packs.pop() {
            Some((at, pack)) if at == index => Some(pack),
            _ => None,
        }
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
    packing: Packing,
    /// Remember each pack by its task index (for the engine's indexed stream).
    index_packs: bool,
    next_index: u64,
}

impl<R: Buffered> Packer<R> {
    pub fn new(records: Records<R>, may_wait: bool, packing: Packing, index_packs: bool) -> Self {
        Packer {
            records,
            may_wait,
            packing,
            index_packs,
            next_index: 0,
        }
    }
}

impl<R: Buffered> Iterator for Packer<R> {
    type Item = Pack;

    fn next(&mut self) -> Option<Pack> {
        let limit = if self.packing.enabled {
            self.packing.sizer.next_size() as u64
        } else {
            1
        };
        let mut bytes = Vec::with_capacity(if limit > 1 { 4096 } else { 64 });
        let at = start_task(0, 0, &mut bytes);
        let first = self.records.read_into(&mut bytes)?;
        let mut count = 1u32;
        // A pack holds consecutive records (a resumed run skips those done before).
        while (count as u64) < limit
            && bytes.len() < MAX_PACK_BYTES
            && self.records.next_number() == first + count as u64
            && (!self.may_wait || self.records.record_buffered())
            && self.records.read_into(&mut bytes).is_some()
        {
            count += 1;
        }
        set_task_head(at, first, count, &mut bytes);
        self.packing.sizer.sent(count as u64);
        if self.index_packs {
            let mut packs = self.packing.packs.lock().expect("packs lock");
            packs.store(self.next_index, (first, count));
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
        let packing = Packing::new(true, 1000);
        let input: Vec<u8> = (1..=100)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let mut packer = Packer::new(
            Records::new(&input[..], b'\n'),
            false,
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
        assert_eq!(packing.take(0), Some((1, 1)));
        assert_eq!(packing.take(1), Some((2, 4)));
        assert_eq!(packing.take(1), None);
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
        let packing = Packing::new(true, 1000);
        for _ in 0..10 {
            packing.answered(1, 0);
        }
        let reader = std::io::BufReader::new(Chunks(vec![b"1\n2\n", b"3\n4\n"]));
        let mut packer = Packer::new(Records::new(reader, b'\n'), true, packing, false);
        let firsts: Vec<(u64, u32)> = packer.by_ref().map(|p| (p.first, p.count)).collect();
        assert_eq!(firsts, [(1, 2), (3, 2)]);
    }
}
