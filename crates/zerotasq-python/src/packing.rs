//! Packing: while tasks take microseconds, consecutive input items travel as one engine task
//! — one pickle of a list out, one pickle of the results back — so tiny tasks do not pay the
//! per-task cost of a Python call, a pickle and a frame each. No chunk size to tune: the
//! engine's [`PackSizer`] sizes packs from the busy time each answered pack reports, and
//! packs of 1 are plain tasks (with out-of-band buffers and the raw-bytes path).
//!
//! The items of a pack that could not be answered (its worker died `max_retries` times, or
//! the worker could not read it) are sent again one by one, so a poison item ends as
//! `WorkerLost` at its own place and its neighbours complete.
//!
//! Items in flight (pulled and not yet yielded) never exceed the stream's window: the
//! caller sets the engine's task window before each wait to the packs that still fit —
//! whole ones, and while packs still grow no more tasks than the pool's workers can hold
//! (its probe), so a stream does not start as a window of single items.
//!
//! Some pools send every item alone: a worker that batches (`process_batch`: the broker
//! groups tasks for it, so packs would only hide them), and workers with a time limit or a
//! task count (both are per engine task: a pack would share one limit, count as one task).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zerotasq::pack::PackSizer;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyIterator, PyList, PyTuple};

use crate::codec::Codec;

/// Items per pack at most.
pub const MAX_PACK: usize = 1024;
/// A pack holds at most about this many bytes (estimated from the first item).
const MAX_PACK_BYTES: usize = 64 << 10;
/// Items whose first one pickles bigger than this are never packed: they go as plain tasks,
/// with out-of-band buffers.
const MAX_PACKED_ITEM: usize = 8 << 10;

/// The first byte of a pack (task) and of a pack's answer (result).
pub const PACK_TAG: u8 = b'K';

/// What an engine task carries.
pub enum Item {
    /// One input item, pickled when the stream submits it.
    Object(u64, Py<PyAny>),
    /// Bytes ready to send: the first item (pickled to size the window) or a pack.
    Encoded(Vec<u8>),
    /// The input is exhausted: a local no-op task, so the engine keeps asking for items
    /// while split packs may still need re-sending.
    End,
}

/// What an engine task stands for, by task index.
pub enum Entry {
    /// Item `index`, alone.
    Single(u64),
    /// Items `first..first + items.len()`, kept until answered in case they must be re-sent.
    Pack {
        first: u64,
        items: Py<PyList>,
    },
    End,
}

/// The packer's and the result reader's shared state.
pub struct Packing {
    /// Items per pack (at most 1 until the first item shows they are small), and items in
    /// flight (pulled and not yet yielded) within the window.
    sizer: PackSizer,
    /// Items pulled from the input.
    pub pulled: AtomicU64,
    input_done: AtomicBool,
    entries: Mutex<HashMap<u64, Entry>>,
    /// Items of split packs, to send again one by one.
    resend: Mutex<VecDeque<(u64, Py<PyAny>)>>,
    /// Engine tasks in flight at most while packs grow: enough to keep the pool's workers
    /// and their prefetch busy.
    probe: usize,
}

impl Packing {
    /// `probe`: tasks in flight at most while packs grow (see [`Packing::tasks_that_fit`]).
    pub fn new(window: usize, probe: usize) -> Packing {
        Packing {
            probe: probe.max(1),
            sizer: PackSizer::new(1, window as u64),
            pulled: AtomicU64::new(0),
            input_done: AtomicBool::new(false),
            entries: Mutex::new(HashMap::new()),
            resend: Mutex::new(VecDeque::new()),
        }
    }

    /// Sizes the window and the packs by the first item's pickled size; `pack: false` keeps
    /// one item per engine task.
    pub fn configure(&self, window: usize, first_item_bytes: usize, pack: bool) {
        self.sizer.set_window(window as u64);
        if pack && first_item_bytes <= MAX_PACKED_ITEM {
            let by_bytes = (MAX_PACK_BYTES / first_item_bytes.max(1)).clamp(1, MAX_PACK);
            self.sizer.set_max(by_bytes);
        }
    }

    /// Engine tasks that may be pulled now, `in_flight` being out: the items to re-send,
    /// then packs for the room — no more than `probe` tasks in flight while packs grow.
    pub fn tasks_that_fit(&self, in_flight: usize) -> usize {
        let resend = self.resend.lock().expect("resend lock").len();
        if self.input_done.load(Ordering::Relaxed) {
            return resend;
        }
        // Whole packs, or one smaller pack for what room there is.
        let room = usize::try_from(self.sizer.sendable()).unwrap_or(usize::MAX);
        let fit = resend + (room / self.sizer.size()).max(usize::from(room > 0));
        if self.sizer.growing() {
            fit.min(self.probe.saturating_sub(in_flight))
        } else {
            fit
        }
    }

    pub fn yielded(&self) {
        self.sizer.settled(1);
    }

    /// Learns from an answered pack: `count` items took `busy`.
    pub fn answered(&self, count: usize, busy: Duration) {
        self.sizer.answered(count, busy);
    }

    /// Learns from an answer that tells no time (a failed task).
    pub fn answered_untimed(&self) {
        self.sizer.answered_untimed();
    }

    /// What task `task` stood for (forgotten).
    pub fn take(&self, task: u64) -> Option<Entry> {
        self.entries.lock().expect("entries lock").remove(&task)
    }

    /// Sends an item that was pulled but not sent (the first one, which did not pickle).
    pub fn resend_first(&self, index: u64, item: Py<PyAny>) {
        self.resend
            .lock()
            .expect("resend lock")
            .push_front((index, item));
    }

    /// Sends a pack's items again, one by one.
    pub fn split(&self, first: u64, items: &Bound<'_, PyList>) {
        let mut resend = self.resend.lock().expect("resend lock");
        for (i, item) in items.iter().enumerate() {
            resend.push_back((first + i as u64, item.unbind()));
        }
    }
}

/// The engine stream's input: the caller's iterator, in packs.
pub struct Packer {
    /// The first item, pulled and pickled before the stream started.
    first: Option<(u64, Vec<u8>)>,
    iter: Option<Py<PyIterator>>,
    packing: Arc<Packing>,
    /// The index the engine gives the next task (it numbers them in pull order).
    next_task: u64,
    /// The exception the input raised (other than `StopIteration`).
    error: Arc<Mutex<Option<PyErr>>>,
    codec: Arc<Codec>,
}

impl Packer {
    pub fn new(
        iter: Py<PyIterator>,
        packing: Arc<Packing>,
        error: Arc<Mutex<Option<PyErr>>>,
        codec: Arc<Codec>,
    ) -> Packer {
        Packer {
            first: None,
            iter: Some(iter),
            packing,
            next_task: 0,
            error,
            codec,
        }
    }

    /// Pulls one item from the caller's input, with its index.
    pub fn pull(&mut self, py: Python<'_>) -> Option<(u64, Py<PyAny>)> {
        let it = self.iter.as_ref()?.bind(py).clone();
        match it.clone().next() {
            Some(Ok(item)) => {
                self.packing.sizer.sent(1);
                let index = self.packing.pulled.fetch_add(1, Ordering::Relaxed);
                Some((index, item.unbind()))
            }
            Some(Err(e)) => {
                *self.error.lock().expect("input error lock") = Some(e);
                self.iter = None;
                None
            }
            None => {
                self.iter = None;
                None
            }
        }
    }

    /// Gives the first item, already pickled, back to be sent first.
    pub fn put_first(&mut self, index: u64, bytes: Vec<u8>) {
        self.first = Some((index, bytes));
    }

    fn record(&mut self, entry: Entry) {
        self.packing
            .entries
            .lock()
            .expect("entries lock")
            .insert(self.next_task, entry);
        self.next_task += 1;
    }

    /// A pack's bytes: the tag, then the pickled list.
    fn encode_pack(&self, items: &Bound<'_, PyList>) -> Option<Vec<u8>> {
        let pickled = self.codec.pickle_in_band(items).ok()?;
        let mut bytes = Vec::with_capacity(pickled.len() + 1);
        bytes.push(PACK_TAG);
        bytes.extend_from_slice(&pickled);
        Some(bytes)
    }

    fn next_item(&mut self, py: Python<'_>) -> Item {
        let resend = self.packing.resend.lock().expect("resend lock").pop_front();
        if let Some((index, item)) = resend {
            self.record(Entry::Single(index));
            return Item::Object(index, item);
        }
        if let Some((index, bytes)) = self.first.take() {
            self.record(Entry::Single(index));
            return Item::Encoded(bytes);
        }
        let size = self.packing.sizer.next_size();
        let Some((first, item)) = self.pull(py) else {
            self.packing.input_done.store(true, Ordering::Relaxed);
            self.record(Entry::End);
            return Item::End;
        };
        if size == 1 {
            self.record(Entry::Single(first));
            return Item::Object(first, item);
        }
        let items = PyList::empty(py);
        let _ = items.append(item);
        while items.len() < size {
            match self.pull(py) {
                Some((_, item)) => {
                    let _ = items.append(item);
                }
                None => {
                    self.packing.input_done.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
        if items.len() == 1 {
            self.record(Entry::Single(first));
            return Item::Object(first, items.get_item(0).expect("one item").unbind());
        }
        match self.encode_pack(&items) {
            Some(bytes) => {
                self.record(Entry::Pack {
                    first,
                    items: items.unbind(),
                });
                Item::Encoded(bytes)
            }
            None => {
                // Some item does not pickle: each goes alone, and fails at its own place.
                self.packing.split(first, &items);
                self.next_item(py)
            }
        }
    }
}

impl Iterator for Packer {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        // The engine pulls only as many tasks as `Packing::tasks_that_fit` allowed.
        Some(Python::attach(|py| self.next_item(py)))
    }
}

/// A pack's answer, read: the results, and the failures by position in the pack.
pub struct Answer<'py> {
    pub busy: Duration,
    pub values: Bound<'py, PyList>,
    /// `(position, kind, message, detail)`.
    pub errors: Vec<(usize, String, String, String)>,
}

/// Reads a pack's answer (`bytes` includes the tag).
pub fn read_answer<'py>(
    py: Python<'py>,
    loads: &Bound<'py, PyAny>,
    bytes: &[u8],
) -> PyResult<Answer<'py>> {
    let bad = || pyo3::exceptions::PyValueError::new_err("not a pack's answer");
    let rest = match bytes.split_first() {
        Some((&PACK_TAG, rest)) if rest.len() >= 8 => rest,
        _ => return Err(bad()),
    };
    let busy = Duration::from_nanos(u64::from_le_bytes(rest[..8].try_into().expect("8 bytes")));
    let loaded = loads.call1((PyBytes::new(py, &rest[8..]),))?;
    let pair = loaded.cast_into::<PyTuple>().map_err(|_| bad())?;
    let values = pair.get_item(0)?.cast_into::<PyList>().map_err(|_| bad())?;
    let errors = pair.get_item(1)?;
    let errors = if errors.is_none() {
        Vec::new()
    } else {
        errors.extract::<Vec<(usize, String, String, String)>>()?
    };
    Ok(Answer {
        busy,
        values,
        errors,
    })
}

/// A worker's answer to a pack: `(values, errors or None)` pickled after the tag and the
/// busy time.
pub fn write_answer(
    py: Python<'_>,
    busy: Duration,
    values: &Bound<'_, PyList>,
    errors: &[(usize, String, String, String)],
    codec: &Codec,
    out: &mut Vec<u8>,
) -> PyResult<()> {
    let errors_obj: Bound<'_, PyAny> = if errors.is_empty() {
        py.None().into_bound(py)
    } else {
        PyList::new(py, errors)?.into_any()
    };
    let pair = PyTuple::new(py, [values.as_any().clone(), errors_obj])?;
    let pickled = codec.pickle_in_band(pair.as_any())?;
    out.push(PACK_TAG);
    out.extend_from_slice(&(busy.as_nanos() as u64).to_le_bytes());
    out.extend_from_slice(&pickled);
    Ok(())
}

/// Whether a task's bytes are a pack.
pub fn is_pack(bytes: &[u8]) -> bool {
    bytes.first() == Some(&PACK_TAG)
}
