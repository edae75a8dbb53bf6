//! `NativeResults`: the lazy, windowed iterator behind `imap` and `imap_unordered`, over the
//! engine's batching [`Stream`].
//!
//! Each `__next__` first advances the stream with the GIL held and a zero timeout: that pulls
//! the Python input into the free window slots — in packs while tasks are tiny (see
//! [`packing`]) — pickles it straight into the batch the stream submits (one
//! message per batch, not per task) and pops an outcome already received — no socket wait,
//! no GIL hand-over. Only when no outcome is ready does it wait, without the GIL, in short
//! slices (`next_indexed_timeout`), running Python's signal handlers between slices so
//! Ctrl-C is seen at once. At most `window` items are pulled and not yet yielded, so an
//! endless input is read only as fast as results are consumed. An item that cannot be
//! pickled becomes an error outcome at its own place.
//!
//! The engine stream runs unordered: a pack's items are put in input order here, which also
//! lets the items of a split pack, sent again one by one, take their own places.
//!
//! The window also has a byte budget: the stream starts at the first `__next__`, after the
//! first item is pickled, and holds at most `window_bytes / size of the first item` items
//! (at least [`MIN_WINDOW`], at most `window`). Big payloads then flow in small batches that
//! overlap with the workers instead of one huge batch, and memory stays bounded in bytes.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyException, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::PyIterator;
use zerotasq::reorder::Reorder;
use zerotasq::{BrokerAccess, ErrorKind, Stream, TaskError};

use crate::access::{Access, WeakAccess};

use crate::codec::{Codec, Received};
use crate::failure;
use crate::packing::{self, Entry, Item, Packer, Packing};
use crate::pool_error;
use crate::wait::SLICE;

/// The fewest items a byte budget leaves in flight: enough to keep two workers' prefetch
/// full.
pub const MIN_WINDOW: usize = 4;

/// A result as the engine stream yields it: the worker's busy time, when given, and the
/// result's bytes.
type Timed = (Option<Duration>, Received);

type PyStream = Stream<Packer, Timed>;

/// A result (`Ok`) or the error object of a failed item (`Err`).
type Outcome = Result<Py<PyAny>, Py<PyAny>>;

/// A stream not started yet: it starts at the first `__next__`, once the first item is
/// pickled and the window sized by it.
struct Pending {
    pool: WeakAccess,
    packer: Packer,
    window: usize,
    window_bytes: usize,
    pack: bool,
}

#[pyclass(module = "zerotasq._native")]
pub struct NativeResults {
    pending: Option<Pending>,
    stream: Mutex<Option<PyStream>>,
    /// Outcomes received and not yet yielded.
    ready: Reorder<Outcome>,
    packing: Arc<Packing>,
    input_error: Arc<Mutex<Option<PyErr>>>,
    codec: Arc<Codec>,
    make_error: Py<PyAny>,
    return_exceptions: bool,
}

impl NativeResults {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        pool: &Access,
        input: Bound<'_, PyIterator>,
        window: usize,
        window_bytes: usize,
        ordered: bool,
        codec: Codec,
        make_error: Py<PyAny>,
        return_exceptions: bool,
        pack: bool,
        probe: usize,
    ) -> Self {
        let packing = Arc::new(Packing::new(window, probe));
        let input_error = Arc::new(Mutex::new(None));
        let codec = Arc::new(codec);
        let packer = Packer::new(
            input.unbind(),
            packing.clone(),
            input_error.clone(),
            codec.clone(),
        );
        NativeResults {
            pending: Some(Pending {
                pool: pool.downgrade(),
                packer,
                window: window.max(1),
                window_bytes,
                pack,
            }),
            stream: Mutex::new(None),
            ready: Reorder::new(ordered),
            packing,
            input_error,
            codec,
            make_error,
            return_exceptions,
        }
    }

    /// Starts the stream: pickles the first item, sizes the window and the packs by it.
    fn start(&mut self, py: Python<'_>, pending: Pending) -> PyResult<()> {
        let Pending {
            pool,
            mut packer,
            mut window,
            window_bytes,
            pack,
        } = pending;
        let pool = pool
            .upgrade()
            .ok_or_else(|| pool_error("the pool is closed"))?;
        if let Some((index, first)) = packer.pull(py) {
            let mut bytes = Vec::new();
            match self.codec.encode(first.bind(py), &mut bytes) {
                Ok(()) => {
                    if window_bytes > 0 {
                        let fits = window_bytes / bytes.len().max(1);
                        window = window.min(fits.max(MIN_WINDOW));
                    }
                    self.packing.configure(window, bytes.len(), pack);
                    packer.put_first(index, bytes);
                }
                // Sent alone, it fails again at its own place.
                Err(_) => self.packing.resend_first(index, first),
            }
        }
        let codec = self.codec.clone();
        let encode = Box::new(
            move |item: Item, out: &mut Vec<u8>| -> Result<(), TaskError> {
                // On error the stream's batch writer drops what was written for this item.
                match item {
                    Item::Object(index, item) => Python::attach(|py| {
                        codec.encode(item.bind(py), out).map_err(|e| {
                            TaskError::new(ErrorKind::Codec, unpicklable(py, index, &e))
                        })
                    }),
                    Item::Encoded(bytes) => {
                        out.extend_from_slice(&bytes);
                        Ok(())
                    }
                    // Not sent: an outcome of its own, which the reader skips.
                    Item::End => Err(TaskError::new(ErrorKind::Cancelled, "end of input")),
                }
            },
        );
        let decode = Box::new(|bytes: &[u8]| Ok::<_, TaskError>(Codec::receive(bytes)));
        let stream = py
            .detach(|| pool.stream(packer, window, false, encode, decode))
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

    /// The outcome of item `index`, sent alone.
    fn single(
        &self,
        py: Python<'_>,
        outcome: Result<Timed, TaskError>,
        index: u64,
    ) -> PyResult<Outcome> {
        match outcome {
            Ok((_, got)) => match self.codec.finish(py, got) {
                Ok(value) => Ok(Ok(value.unbind())),
                Err(e) => {
                    let message = format!(
                        "the result of task #{index} cannot be unpickled: {}",
                        failure::describe(py, &e)
                    );
                    let error =
                        failure::make(py, &self.make_error, "codec", &message, "", Some(index))?;
                    Ok(Err(error))
                }
            },
            Err(e) => Ok(Err(failure::from_task_error(
                py,
                &self.make_error,
                &e,
                Some(index),
            )?)),
        }
    }

    /// Takes in the outcome of engine task `task`: its item's, or its pack's items'.
    fn receive(
        &mut self,
        py: Python<'_>,
        task: u64,
        outcome: Result<Timed, TaskError>,
    ) -> PyResult<()> {
        match self.packing.take(task) {
            None | Some(Entry::End) => {}
            Some(Entry::Single(index)) => {
                match &outcome {
                    Ok((Some(busy), _)) => self.packing.answered(1, *busy),
                    _ => self.packing.answered_untimed(),
                }
                let outcome = self.single(py, outcome, index)?;
                self.ready.store(index, outcome);
            }
            Some(Entry::Pack { first, items }) => {
                let items = items.into_bound(py);
                let count = items.len();
                let answer = match &outcome {
                    Ok((_, Received::Small(bytes))) => {
                        packing::read_answer(py, self.codec.loads(py), bytes).ok()
                    }
                    _ => None,
                };
                match (answer, outcome) {
                    (Some(answer), _) if answer.values.len() == count => {
                        self.packing.answered(count, answer.busy);
                        let mut errors = answer.errors.into_iter().peekable();
                        for (at, value) in answer.values.iter().enumerate() {
                            let index = first + at as u64;
                            let outcome = match errors.next_if(|e| e.0 == at) {
                                Some((_, kind, message, detail)) => Err(failure::make(
                                    py,
                                    &self.make_error,
                                    &kind,
                                    &message,
                                    &detail,
                                    Some(index),
                                )?),
                                None => Ok(value.unbind()),
                            };
                            self.ready.store(index, outcome);
                        }
                    }
                    (_, Err(e)) if e.kind() == ErrorKind::Cancelled => {
                        for at in 0..count {
                            let index = first + at as u64;
                            let error =
                                failure::from_task_error(py, &self.make_error, &e, Some(index))?;
                            self.ready.store(index, Err(error));
                        }
                    }
                    // Lost with its workers, or unreadable: each item goes again, alone.
                    _ => self.packing.split(first, &items),
                }
            }
        }
        Ok(())
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

    /// The next engine outcome: `Ok(None)` when the stream is done.
    fn advance(&mut self, py: Python<'_>) -> PyResult<Option<(u64, Result<Timed, TaskError>)>> {
        let stream = self.stream.get_mut().expect("stream lock");
        let Some(s) = stream.as_mut() else {
            return Ok(None);
        };
        s.set_window(s.in_flight() + self.packing.tasks_that_fit(s.in_flight()));
        // With the GIL: pull, pickle and submit; take an outcome already received.
        if let Ok(got) = s.next_indexed_timeout(Duration::ZERO) {
            return Ok(got);
        }
        loop {
            if let Some(e) = self.urgent_input_error(py) {
                return Err(e);
            }
            let stream = self.stream.get_mut().expect("stream lock");
            let s = stream.as_mut().expect("stream open");
            if let Ok(got) = py.detach(|| s.next_indexed_timeout(SLICE)) {
                return Ok(got);
            }
            py.check_signals()?;
        }
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
        loop {
            if let Some((_, outcome)) = self.ready.pop() {
                self.packing.yielded();
                return match outcome {
                    Ok(value) => Ok(value),
                    Err(error) => self.fail(py, error),
                };
            }
            let got = match self.advance(py) {
                Ok(got) => got,
                Err(e) => {
                    self.close(py);
                    return Err(e);
                }
            };
            if let Some(e) = self.urgent_input_error(py) {
                self.close(py);
                return Err(e);
            }
            match got {
                Some((task, outcome)) => self.receive(py, task, outcome)?,
                None => {
                    self.close(py);
                    return match self.input_error.lock().expect("input error lock").take() {
                        Some(e) => Err(e),
                        None => Err(PyStopIteration::new_err(())),
                    };
                }
            }
        }
    }

    /// Items pulled from the input so far.
    #[getter]
    fn pulled(&self) -> u64 {
        self.packing.pulled.load(Ordering::Relaxed)
    }

    /// Stops: open tasks are cancelled, the input is released. Idempotent.
    fn close(&mut self, py: Python<'_>) {
        self.pending = None;
        self.ready = Reorder::new(false);
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
