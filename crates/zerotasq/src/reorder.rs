//! Outcomes received but not yet yielded, kept in input order (slots from the oldest index
//! not yet yielded) or as they came. The client's [`crate::Stream`] keeps its outcomes here,
//! and so does a face that restores the order itself (the Python face's packed items).

use std::collections::VecDeque;

/// Outcomes by input index, yielded in input order or in arrival order.
#[derive(Debug)]
pub struct Reorder<T>(Order<T>);

#[derive(Debug)]
enum Order<T> {
    /// Slot `i` holds the outcome of index `base + i`.
    Ordered {
        base: u64,
        slots: VecDeque<Option<T>>,
    },
    Unordered(VecDeque<(u64, T)>),
}

impl<T> Reorder<T> {
    /// In input order (indexes from 0), or as the outcomes come.
    pub fn new(ordered: bool) -> Self {
        Reorder(if ordered {
            Order::Ordered {
                base: 0,
                slots: VecDeque::new(),
            }
        } else {
            Order::Unordered(VecDeque::new())
        })
    }

    /// Keeps the outcome of `index` (in order: ignored if that place was already yielded).
    pub fn store(&mut self, index: u64, outcome: T) {
        match &mut self.0 {
            Order::Ordered { base, slots } => {
                let Some(at) = index.checked_sub(*base) else {
                    return;
                };
                let at = at as usize;
                if slots.len() <= at {
                    slots.resize_with(at + 1, || None);
                }
                slots[at] = Some(outcome);
            }
            Order::Unordered(queue) => queue.push_back((index, outcome)),
        }
    }

    /// Whether [`Reorder::pop`] would give something.
    pub fn has_ready(&self) -> bool {
        match &self.0 {
            Order::Ordered { slots, .. } => matches!(slots.front(), Some(Some(_))),
            Order::Unordered(queue) => !queue.is_empty(),
        }
    }

    /// The next outcome to yield, with its index.
    pub fn pop(&mut self) -> Option<(u64, T)> {
        match &mut self.0 {
            Order::Ordered { base, slots } => {
                if !matches!(slots.front(), Some(Some(_))) {
                    return None;
                }
                let index = *base;
                *base += 1;
                slots.pop_front().flatten().map(|outcome| (index, outcome))
            }
            Order::Unordered(queue) => queue.pop_front(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_holds_back_what_came_early() {
        let mut r = Reorder::new(true);
        r.store(2, "c");
        r.store(1, "b");
        assert!(!r.has_ready(), "0 has not come");
        r.store(0, "a");
        let got: Vec<_> = std::iter::from_fn(|| r.pop()).collect();
        assert_eq!(got, [(0, "a"), (1, "b"), (2, "c")]);
        assert_eq!(r.pop(), None);
    }

    #[test]
    fn in_order_ignores_a_place_already_yielded() {
        let mut r = Reorder::new(true);
        r.store(0, 'a');
        assert_eq!(r.pop(), Some((0, 'a')));
        r.store(0, 'x'); // a late duplicate
        assert!(!r.has_ready());
        r.store(1, 'b');
        assert_eq!(r.pop(), Some((1, 'b')));
    }

    #[test]
    fn as_completed_yields_in_arrival_order() {
        let mut r = Reorder::new(false);
        r.store(5, 'f');
        r.store(1, 'b');
        assert!(r.has_ready());
        assert_eq!(r.pop(), Some((5, 'f')));
        assert_eq!(r.pop(), Some((1, 'b')));
        assert_eq!(r.pop(), None);
    }
}
