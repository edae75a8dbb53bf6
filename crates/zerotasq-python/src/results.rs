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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyException, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::PyIterator;
use zerotasq::{ErrorKind, RawPool, Stream, TaskError};

use crate::codec::{Codec, Received};
use crate::failure;
use crate::pool_error;
use crate::wait::SLICE;

/// What the stream pulls: the caller's Python iterator. It is pulled (and its items pickled)
/// while `__next__` holds the GIL, so `Python::attach` here costs nothing.
struct PyInput {
    iter: Option<Py<PyIterator>>,
    pulled: Arc<AtomicU64>,
    /// The exception the input raised (other than `StopIteration`).
    error: Arc<Mutex<Option<PyErr>>>,
}

impl Iterator for PyInput {
    type Item = (u64, Py<PyAny>);

    fn next(&mut self) -> Option<Self::Item> {
        let next = Python::attach(|py| {
            let mut it = self.iter.as_ref()?.bind(py).clone();
            it.next().map(|got| got.map(Bound::unbind))
        });
        match next {
            Some(Ok(item)) => Some((self.pulled.fetch_add(1, Ordering::Relaxed), item)),
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

#[pyclass(module = "zerotasq._native")]
pub struct NativeResults {
    stream: Mutex<Option<PyStream>>,
    input_error: Arc<Mutex<Option<PyErr>>>,
    codec: Arc<Codec>,
    make_error: Py<PyAny>,
    return_exceptions: bool,
    pulled: Arc<AtomicU64>,
}

impl NativeResults {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        py: Python<'_>,
        raw: &RawPool,
        input: Bound<'_, PyIterator>,
        window: usize,
        ordered: bool,
        codec: Codec,
        make_error: Py<PyAny>,
        return_exceptions: bool,
    ) -> PyResult<Self> {
        let codec = Arc::new(codec);
        let pulled = Arc::new(AtomicU64::new(0));
        let input_error = Arc::new(Mutex::new(None));
        let input = PyInput {
            iter: Some(input.unbind()),
            pulled: pulled.clone(),
            error: input_error.clone(),
        };
        let encoder = codec.clone();
        let encode = Box::new(
            move |(index, item): (u64, Py<PyAny>), out: &mut Vec<u8>| -> Result<(), TaskError> {
                Python::attach(|py| {
                    // On error the stream's batch writer drops what was written for this item.
                    encoder.encode(item.bind(py), out).map_err(|e| {
                        TaskError::new(
                            ErrorKind::Codec,
                            format!(
                                "task #{index} cannot be pickled: {}",
                                failure::describe(py, &e)
                            ),
                        )
                    })
                })
            },
        );
        let decode = Box::new(|bytes: &[u8]| Ok::<_, TaskError>(Codec::receive(bytes)));
        let stream = py
            .detach(|| raw.stream(input, window.max(1), ordered, encode, decode))
            .map_err(pool_error)?;
        Ok(NativeResults {
            stream: Mutex::new(Some(stream)),
            input_error,
            codec,
            make_error,
            return_exceptions,
            pulled,
        })
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
        let stream = self.stream.get_mut().expect("stream lock").take();
        // Dropped with the GIL held: the input is released at once; the stream only sends
        // a cancel message, without waiting.
        let _ = py;
        drop(stream);
    }
}
