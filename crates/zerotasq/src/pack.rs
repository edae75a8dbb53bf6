//! Packing: while items take microseconds, a face sends many consecutive items as one engine
//! task, so tiny items do not pay the per-task cost each; one item per task as soon as they
//! take longer, so that balance between workers is kept. No chunk size to tune.
//!
//! [`PackSizer`] holds the rule every face follows: a pack aims at [`PackSizer::TARGET`] of a
//! worker's time, learnt from the busy time each answered pack reports; it grows at most
//! twice per answer (a first answer may come from a warm-up outlier), shrinks at once, and
//! is 1 as soon as one item alone takes the target; it is at most a quarter of the window,
//! so that several packs are in flight. It also counts the items in flight, so a face keeps
//! them within its window whatever the pack size, and says what is worth sending
//! ([`PackSizer::sendable`]: whole packs while half the window is out) and whether packs
//! are still growing ([`PackSizer::growing`]: a face then keeps few tasks out, or its
//! window would fill with the small packs of the start).
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
    /// The size the last answer asked for (0 before any answer).
    wanted: AtomicUsize,
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
            wanted: AtomicUsize::new(0),
            max: AtomicUsize::new(max.max(1)),
            window: AtomicU64::new(window.max(1)),
            in_flight: AtomicU64::new(0),
        }
    }

    /// Items per pack now: what the answers taught, at most a quarter of the window, so
    /// that several packs are in flight and no worker waits while another holds them all.
    pub fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed).min(self.size_cap())
    }

    /// A quarter of the window (at least 1).
    fn size_cap(&self) -> usize {
        let quarter = self.window.load(Ordering::Relaxed) / 4;
        usize::try_from(quarter).unwrap_or(usize::MAX).max(1)
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
        let wanted = ideal.clamp(1, self.max.load(Ordering::Relaxed));
        self.wanted.store(wanted, Ordering::Relaxed);
        self.size.store(wanted.min(now * 2), Ordering::Relaxed);
    }

    /// Learns from an answer that tells no busy time (a failed task): if it is the first,
    /// packs stop waiting to grow and keep their size until a timed answer comes, so a
    /// stream that starts with failures is not held to a few tasks in flight.
    pub fn answered_untimed(&self) {
        let _ = self
            .wanted
            .compare_exchange(0, self.size(), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Whether packs are still to grow: no answer yet, or the last asked for bigger packs
    /// than the doubling allowed. Meanwhile a face keeps few tasks in flight, or the window
    /// would fill with the small packs of the start (each costs a task's overhead).
    pub fn growing(&self) -> bool {
        let cap = self.size_cap().min(self.max.load(Ordering::Relaxed));
        let wanted = self.wanted.load(Ordering::Relaxed);
        cap > 1 && (wanted == 0 || self.size() < wanted.min(cap))
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

    /// Items worth sending now: the room left, once a whole pack fits in it or while at
    /// most half the window is in flight. Sending every scrap of room as it frees would cut
    /// the stream into ever smaller packs (TCP's silly-window syndrome): items are yielded
    /// one at a time, so the room grows one item at a time.
    pub fn sendable(&self) -> u64 {
        let window = self.window.load(Ordering::Relaxed);
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let room = window.saturating_sub(in_flight);
        if room < self.size() as u64 && in_flight > window / 2 {
            0
        } else {
            room
        }
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
        assert_eq!(sizer.next_size(), 25, "a quarter of the window");
        sizer.sent(90);
        assert_eq!((sizer.room(), sizer.next_size()), (10, 10));
        sizer.sent(10);
        assert_eq!(sizer.next_size(), 1, "a full window still lets one item go");
        sizer.settled(50);
        assert_eq!(sizer.room(), 50);
    }

    #[test]
    fn scraps_of_room_wait_for_a_whole_pack_while_half_the_window_is_in_flight() {
        let sizer = PackSizer::new(512, 1024);
        for _ in 0..10 {
            sizer.answered(1, US);
        }
        assert_eq!(sizer.size(), 256);
        sizer.sent(1024);
        sizer.settled(100);
        assert_eq!(sizer.sendable(), 0, "100 free, 924 in flight: wait");
        sizer.settled(156);
        assert_eq!(sizer.sendable(), 256, "a whole pack fits");
        sizer.sent(200);
        sizer.settled(600);
        assert_eq!(
            sizer.sendable(),
            656,
            "368 in flight, under half: send what fits"
        );
        let slow = PackSizer::new(512, 1024);
        slow.sent(1023);
        assert_eq!(slow.sendable(), 1, "single items go as the room frees");
    }

    #[test]
    fn packs_grow_until_they_reach_what_answers_ask_or_the_cap() {
        assert!(!PackSizer::new(1, 1024).growing(), "packs of 1 at most");
        let failing = PackSizer::new(512, 1024);
        failing.answered_untimed();
        assert!(
            !failing.growing(),
            "a first answer without a time: no more waiting"
        );
        failing.answered(1, US);
        assert!(failing.growing(), "a timed one asks for more again");
        let sizer = PackSizer::new(512, 1024);
        assert!(sizer.growing(), "no answer yet");
        sizer.answered(1, 10 * PackSizer::TARGET);
        assert!(
            !sizer.growing(),
            "long items: one per pack, and that is final"
        );
        sizer.answered(1, US);
        assert!(sizer.growing(), "short ones: 2 of the 256 the cap allows");
        for _ in 0..7 {
            sizer.answered(1, US);
        }
        assert_eq!(sizer.size(), 256);
        assert!(!sizer.growing());
        sizer.answered(100, 400 * US);
        assert_eq!(sizer.size(), 250);
        assert!(!sizer.growing(), "shrunk to what was asked");
    }
}
