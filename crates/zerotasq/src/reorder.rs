//! Outcomes received but not yet yielded, kept in input order (slots from the oldest index
//! not yet yielded) or as they came. The client's [`crate::Stream`] keeps its outcomes here,
//! and so does a face that restores the order itself (the Python face's packed items).

use std::collections::VecDeque;

pub enum Reorder<T> {
    /// Slot `i` holds the outcome of index `base + i`.
    Ordered {
        base: u64,
        slots: VecDeque<Option<T>>,
    },
    Unordered(VecDeque<(u64, T)>),
}

impl<T> Reorder<T> {
    pub fn new(ordered: bool) -> Self {
        if ordered {
            Reorder::Ordered {
                base: 0,
                slots: VecDeque::new(),
            }
        } else {
            Reorder::Unordered(VecDeque::new())
        }
    }

    /// Keeps the outcome of `index` (in order: ignored if that place was already yielded).
    pub fn store(&mut self, index: u64, outcome: T) {
        match self {
            Reorder::Ordered { base, slots } => {
                let Some(at) = index.checked_sub(*base) else {
                    return;
                };
                let at = at as usize;
                if slots.len() <= at {
                    slots.resize_with(at + 1, || None);
                }
                slots[at] = Some(outcome);
            }
            Reorder::Unordered(queue) => queue.push_back((index, outcome)),
        }
    }

    /// Whether [`Reorder::pop`] would give something.
    pub fn has_ready(&self) -> bool {
        match self {
            Reorder::Ordered { slots, .. } => matches!(slots.front(), Some(Some(_))),
            Reorder::Unordered(queue) => !queue.is_empty(),
        }
    }

    /// The next outcome to yield, with its index.
    pub fn pop(&mut self) -> Option<(u64, T)> {
        match self {
            Reorder::Ordered { base, slots } => {
                if !matches!(slots.front(), Some(Some(_))) {
                    return None;
                }
                let index = *base;
                *base += 1;
                slots.pop_front().flatten().map(|outcome| (index, outcome))
            }
            Reorder::Unordered(queue) => queue.pop_front(),
        }
    }
}
