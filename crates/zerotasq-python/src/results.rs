//! `NativeResults`: the lazy, windowed iterator behind `imap` and `imap_unordered`, over the
//! engine's batching [`Stream`].
//!
//! Each `__next__` first advances the stream with the GIL held and a zero timeout: that pulls
//! the Python input into the free window slots, pickles each item straight into the batch the
//! stream submits (one message per batch, not per task) and pops an outcome already received
//! — no socket wait, no GIL hand-over. Only when no outcome is ready does it wait, without
//! the GIL, in short slices (`next_indexed_timeout`), running Python's signal handlers
//! between slices so Ctrl-C is seen at once. At most `window` items are pulled and not yet
//! yielded, so an endless input is read only as fast as results are consumed. An item that
//! cannot be pickled becomes an error outcome at its own place.
//!
//! The window also has a byte budget: the stream starts at the first `__next__`, after the
//! first item is pickled, and holds at most `window_bytes / size of the first item` tasks
//! (at least [`MIN_WINDOW`], at most `window`). Big payloads then flow in small batches that
//! overlap with the workers instead of one huge batch, and memory stays bounded in bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use pyo3::exceptions::{PyException, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::PyIterator;
use zerotasq::{BrokerAccess, ErrorKind, RawPool, Stream, TaskError};

use crate::codec::{Codec, Received};
use crate::failure;
use crate::pool_error;
use crate::wait::SLICE;

/// The fewest tasks a byte budget leaves in flight: enough to keep two workers' prefetch
/// full.
pub const MIN_WINDOW: usize = 4;

/// An input item on its way into a task.
enum Item {
    Object(Py<PyAny>),
    /// Pickled already (the first item, pickled to size the window).
    Encoded(Vec<u8>),
    /// Could not be pickled: why.
    Unpicklable(String),
}

/// What the stream pulls: the caller's Python iterator. It is pulled (and its items pickled)
/// while `__next__` holds the GIL, so `Python::attach` here costs nothing.
struct PyInput {
    first: Option<(u64, Item)>,
    iter: Option<Py<PyIterator>>,
    pulled: Arc<AtomicU64>,
    /// The exception the input raised (other than `StopIteration`).
    error: Arc<Mutex<Option<PyErr>>>,
}

impl Iterator for PyInput {
    type Item = (u64, Item);

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        let next = Python::attach(|py| {
            let mut it = self.iter.as_ref()?.bind(py).clone();
            it.next().map(|got| got.map(Bound::unbind))
        });
        match next {
            Some(Ok(item)) => Some((
                self.pulled.fetch_add(1, Ordering::Relaxed),
                Item::Object(item),
            )),
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
}

type PyStream = Stream<PyInput, Received>;

/// A stream not started yet: it starts at the first `__next__`, once the first item is
/// pickled and the window sized by it.
struct Pending {
    pool: Weak<RawPool>,
    input: PyInput,
    window: usize,
    window_bytes: usize,
    ordered: bool,
}

#[pyclass(module = "zerotasq._native")]
pub struct NativeResults {
    pending: Option<Pending>,
    stream: Mutex<Option<PyStream>>,
    input_error: Arc<Mutex<Option<PyErr>>>,
    codec: Arc<Codec>,
    make_error: Py<PyAny>,
    return_exceptions: bool,
    pulled: Arc<AtomicU64>,
}

impl NativeResults {
    #[allow(clippy::too_many_arguments)]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        pool: &Arc<RawPool>,
        input: Bound<'_, PyIterator>,
        window: usize,
        window_bytes: usize,
        ordered: bool,
        codec: Codec,
        make_error: Py<PyAny>,
        return_exceptions: bool,
    ) -> Self {
        let pulled = Arc::new(AtomicU64::new(0));
        let input_error = Arc::new(Mutex::new(None));
        let input = PyInput {
            first: None,
            iter: Some(input.unbind()),
            pulled: pulled.clone(),
            error: input_error.clone(),
        };
        NativeResults {
            pending: Some(Pending {
                pool: Arc::downgrade(pool),
                input,
                window: window.max(1),
                window_bytes,
                ordered,
            }),
            stream: Mutex::new(None),
            input_error,
            codec: Arc::new(codec),
            make_error,
            return_exceptions,
            pulled,
        }
    }

    /// Starts the stream: pickles the first item, sizes the window by it.
    fn start(&mut self, py: Python<'_>, pending: Pending) -> PyResult<()> {
        let Pending {
            pool,
            mut input,
            window,
            window_bytes,
            ordered,
        } = pending;
        let pool = pool
            .upgrade()
            .ok_or_else(|| pool_error("the pool is closed"))?;
        let mut window = window;
        if let Some((index, Item::Object(first))) = input.next() {
            let mut bytes = Vec::new();
            let item = match self.codec.encode(first.bind(py), &mut bytes) {
                Ok(()) => {
                    if window_bytes > 0 {
                        let fits = window_bytes / bytes.len().max(1);
                        window = window.min(fits.max(MIN_WINDOW));
                    }
                    Item::Encoded(bytes)
                }
                Err(e) => Item::Unpicklable(unpicklable(py, index, &e)),
            };
            input.first = Some((index, item));
        }
        let codec = self.codec.clone();
        let encode = Box::new(
            move |(index, item): (u64, Item), out: &mut Vec<u8>| -> Result<(), TaskError> {
                // On error the stream's batch writer drops what was written for this item.
                match item {
                    Item::Object(item) => Python::attach(|py| {
                        codec.encode(item.bind(py), out).map_err(|e| {
                            TaskError::new(ErrorKind::Codec, unpicklable(py, index, &e))
                        })
                    }),
                    Item::Encoded(bytes) => {
                        out.extend_from_slice(&bytes);
                        Ok(())
                    }
                    Item::Unpicklable(why) => Err(TaskError::new(ErrorKind::Codec, why)),
                }
            },
        );
        let decode = Box::new(|bytes: &[u8]| Ok::<_, TaskError>(Codec::receive(bytes)));
        let stream = py
            .detach(|| pool.stream(input, window, ordered, encode, decode))
            .map_err(pool_error)?;
        *self.stream.get_mut().expect("stream lock") = Some(stream);
        Ok(())
    }

    /// Turns an error object into the iterator's answer: returned or raised.
    fn fail(&self, py: Python<'_>, error: Py<PyAny>) -> PyResult<Py<PyAny>> {
        if self.return_exceptions {
            Ok(error)
        } else {
            Err(PyErr::from_value(error.into_bound(py)))
        }
    }

    fn outcome(
        &self,
        py: Python<'_>,
        outcome: Result<Received, TaskError>,
        index: u64,
    ) -> PyResult<Py<PyAny>> {
        match outcome {
            Ok(got) => match self.codec.finish(py, got) {
                Ok(value) => Ok(value.unbind()),
                Err(e) => {
                    let message = format!(
                        "the result of task #{index} cannot be unpickled: {}",
                        failure::describe(py, &e)
                    );
                    let error =
                        failure::make(py, &self.make_error, "codec", &message, "", Some(index))?;
                    self.fail(py, error)
                }
            },
            Err(e) => {
                let error = failure::from_task_error(py, &self.make_error, &e, Some(index))?;
                self.fail(py, error)
            }
        }
    }

    /// An exception of the input that must not wait for the open tasks (Ctrl-C raised
    /// inside a generator, `SystemExit`): it stops the stream at once.
    fn urgent_input_error(&self, py: Python<'_>) -> Option<PyErr> {
        let mut slot = self.input_error.lock().expect("input error lock");
        if slot
            .as_ref()
            .is_some_and(|e| !e.is_instance_of::<PyException>(py))
        {
            return slot.take();
        }
        None
    }
}

#[pymethods]
impl NativeResults {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if let Some(pending) = self.pending.take() {
            self.start(py, pending)?;
        }
        let stream = self.stream.get_mut().expect("stream lock");
        let Some(s) = stream.as_mut() else {
            return Err(PyStopIteration::new_err(()));
        };
        // With the GIL: pull, pickle and submit; take an outcome already received.
        let got = match s.next_indexed_timeout(Duration::ZERO) {
            Ok(got) => got,
            Err(_) => loop {
                if let Some(e) = self.urgent_input_error(py) {
                    self.close(py);
                    return Err(e);
                }
                let stream = self.stream.get_mut().expect("stream lock");
                let s = stream.as_mut().expect("stream open");
                if let Ok(got) = py.detach(|| s.next_indexed_timeout(SLICE)) {
                    break got;
                }
                if let Err(e) = py.check_signals() {
                    self.close(py);
                    return Err(e);
                }
            },
        };
        if let Some(e) = self.urgent_input_error(py) {
            self.close(py);
            return Err(e);
        }
        match got {
            Some((index, outcome)) => self.outcome(py, outcome, index),
            None => {
                self.close(py);
                match self.input_error.lock().expect("input error lock").take() {
                    Some(e) => Err(e),
                    None => Err(PyStopIteration::new_err(())),
                }
            }
        }
    }

    /// Items pulled from the input so far.
    #[getter]
    fn pulled(&self) -> u64 {
        self.pulled.load(Ordering::Relaxed)
    }

    /// Stops: open tasks are cancelled, the input is released. Idempotent.
    fn close(&mut self, py: Python<'_>) {
        self.pending = None;
        let stream = self.stream.get_mut().expect("stream lock").take();
        // Dropped with the GIL held: the input is released at once; the stream only sends
        // a cancel message, without waiting.
        let _ = py;
        drop(stream);
    }
}

fn unpicklable(py: Python<'_>, index: u64, e: &PyErr) -> String {
    format!(
        "task #{index} cannot be pickled: {}",
        failure::describe(py, e)
    )
}
