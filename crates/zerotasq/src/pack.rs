//! Packing: while items take microseconds, a face sends many consecutive items as one engine
//! task, so tiny items do not pay the per-task cost each; one item per task as soon as they
//! take longer, so that balance between workers is kept. No chunk size to tune.
//!
//! [`PackSizer`] holds the rule every face follows: a pack aims at [`PackSizer::TARGET`] of a
//! worker's time, learnt from the busy time each answered pack reports; it grows at most
//! twice per answer (a first answer may come from a warm-up outlier), shrinks at once, and
//! is 1 as soon as one item alone takes the target. It also counts the items in flight, so
//! a face keeps them within its window whatever the pack size.
//!
//! Each face keeps what a pack holds (the command line: record numbers; Python: the items,
//! to send them again one by one when the pack's worker died on it).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// The adaptive pack size, and the items in flight; shared by the thread that packs and the
/// thread that reads answers.
#[derive(Debug)]
pub struct PackSizer {
    size: AtomicUsize,
    max: AtomicUsize,
    window: AtomicU64,
    in_flight: AtomicU64,
}

impl PackSizer {
    /// Work a pack aims at in the worker.
    pub const TARGET: Duration = Duration::from_millis(1);
    /// Shortest time per item believed: answers faster than the clock's resolution must not
    /// grow packs without bound.
    const FLOOR: Duration = Duration::from_nanos(10);

    /// Packs of 1 item until answers tell how long an item takes (two long items must not
    /// start in one pack on one worker), of at most `max` items, with at most `window`
    /// items in flight.
    pub fn new(max: usize, window: u64) -> PackSizer {
        PackSizer {
            size: AtomicUsize::new(1),
            max: AtomicUsize::new(max.max(1)),
            window: AtomicU64::new(window.max(1)),
            in_flight: AtomicU64::new(0),
        }
    }

    /// Items per pack now.
    pub fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    /// Caps packs at `max` items from now on (e.g. from the size of the items).
    pub fn set_max(&self, max: usize) {
        let max = max.max(1);
        self.max.store(max, Ordering::Relaxed);
        self.size.fetch_min(max, Ordering::Relaxed);
    }

    /// Allows `window` items in flight from now on.
    pub fn set_window(&self, window: u64) {
        self.window.store(window.max(1), Ordering::Relaxed);
    }

    /// Learns from one answered pack: `count` items took `busy` in the worker.
    pub fn answered(&self, count: usize, busy: Duration) {
        let per_item = (busy / count.max(1) as u32).max(Self::FLOOR);
        let ideal = (Self::TARGET.as_nanos() / per_item.as_nanos()) as usize;
        let now = self.size();
        let max = self.max.load(Ordering::Relaxed);
        self.size
            .store(ideal.clamp(1, max).min(now * 2), Ordering::Relaxed);
    }

    /// `count` items went out (packed or alone).
    pub fn sent(&self, count: u64) {
        self.in_flight.fetch_add(count, Ordering::Relaxed);
    }

    /// `count` items have their outcome.
    pub fn settled(&self, count: u64) {
        self.in_flight.fetch_sub(count, Ordering::Relaxed);
    }

    /// Items that may go out now without passing the window.
    pub fn room(&self) -> u64 {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        self.window
            .load(Ordering::Relaxed)
            .saturating_sub(in_flight)
    }

    /// The size of the next pack: the current size, within the room left (at least 1).
    pub fn next_size(&self) -> usize {
        let room = usize::try_from(self.room()).unwrap_or(usize::MAX);
        self.size().min(room).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn grows_at_most_twice_per_answer_and_shrinks_at_once() {
        let sizer = PackSizer::new(512, 1 << 20);
        assert_eq!(sizer.size(), 1);
        sizer.answered(1, US);
        assert_eq!(sizer.size(), 2);
        sizer.answered(2, 2 * US);
        assert_eq!(sizer.size(), 4);
        for _ in 0..20 {
            sizer.answered(4, 4 * US);
        }
        assert_eq!(sizer.size(), 512, "capped at max");
        sizer.answered(1, 5 * PackSizer::TARGET);
        assert_eq!(sizer.size(), 1, "one slow item: one item per pack at once");
        sizer.answered(10, PackSizer::TARGET);
        assert_eq!(sizer.size(), 2);
    }

    #[test]
    fn answers_faster_than_the_clock_do_not_grow_packs_past_the_cap() {
        let sizer = PackSizer::new(64, 1 << 20);
        for _ in 0..20 {
            sizer.answered(1000, Duration::ZERO);
        }
        assert_eq!(sizer.size(), 64);
        sizer.set_max(8);
        assert_eq!(sizer.size(), 8, "a lower cap applies at once");
    }

    #[test]
    fn the_next_pack_fits_the_window() {
        let sizer = PackSizer::new(512, 100);
        for _ in 0..10 {
            sizer.answered(1, US);
        }
        assert_eq!(sizer.next_size(), 100);
        sizer.sent(90);
        assert_eq!((sizer.room(), sizer.next_size()), (10, 10));
        sizer.sent(10);
        assert_eq!(sizer.next_size(), 1, "a full window still lets one item go");
        sizer.settled(50);
        assert_eq!(sizer.room(), 50);
    }
}
