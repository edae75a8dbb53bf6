//! `NativeResults`: the lazy, windowed iterator behind `imap` and `imap_unordered`.
//!
//! The caller's thread pulls the Python input and pickles it while it holds the GIL; an
//! engine `Connector` (its own I/O thread) moves the bytes. At most `window` items are
//! pulled and not yet yielded, so an endless input is read only as fast as results are
//! consumed. Waiting for a result releases the GIL in short slices, so Ctrl-C is seen at
//! once. An item that cannot be pickled becomes an error outcome at its own place.

use std::collections::VecDeque;
use std::sync::Arc;

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use zerotasq::{Connector, RawPool, TaskError};

use crate::codec::Codec;
use crate::failure;
use crate::pool_error;
use crate::wait::interruptible;

/// The engine connector over task and result bytes.
pub(crate) type ByteConnector = Connector<Vec<u8>, Vec<u8>>;

/// One pulled item, in input order.
enum Slot {
    /// Sent to the pool; its outcome comes from the connector.
    Sent(u64),
    /// Failed before it could be sent (it could not be pickled).
    Failed(Py<PyAny>),
}

#[pyclass(module = "zerotasq._native")]
pub struct NativeResults {
    conn: Option<Arc<ByteConnector>>,
    input: Option<Py<PyAny>>,
    input_error: Option<PyErr>,
    codec: Codec,
    make_error: Py<PyAny>,
    return_exceptions: bool,
    window: usize,
    ordered: bool,
    /// Items pulled from the input so far.
    pulled: u64,
    /// Items sent whose outcome has not been received.
    sent: usize,
    /// Ordered: every pulled item not yet yielded. Unordered: the failed ones only.
    slots: VecDeque<Slot>,
    buf: Vec<u8>,
}

pub(crate) fn byte_connector(
    raw: &RawPool,
    window: usize,
    ordered: bool,
) -> PyResult<ByteConnector> {
    raw.connector(
        window,
        ordered,
        Box::new(|task: Vec<u8>, out: &mut Vec<u8>| {
            *out = task;
            Ok(())
        }),
        Box::new(|bytes: &[u8]| Ok::<_, TaskError>(bytes.to_vec())),
    )
    .map_err(pool_error)
}

impl NativeResults {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        _py: Python<'_>,
        raw: &RawPool,
        input: Py<PyAny>,
        window: usize,
        ordered: bool,
        codec: Codec,
        make_error: Py<PyAny>,
        return_exceptions: bool,
    ) -> PyResult<Self> {
        let window = window.max(1);
        Ok(NativeResults {
            conn: Some(Arc::new(byte_connector(raw, window, ordered)?)),
            input: Some(input),
            input_error: None,
            codec,
            make_error,
            return_exceptions,
            window,
            ordered,
            pulled: 0,
            sent: 0,
            slots: VecDeque::new(),
            buf: Vec::new(),
        })
    }

    /// Items pulled and not yet yielded.
    fn open(&self) -> usize {
        if self.ordered {
            self.slots.len()
        } else {
            self.sent + self.slots.len()
        }
    }

    /// Pulls input into free window slots. Refills in batches (an eighth of the window at
    /// least) unless nothing is open.
    fn fill(&mut self, py: Python<'_>) -> PyResult<()> {
        let free = self.window - self.open();
        if free == 0 || (free < (self.window / 8).max(1) && self.open() > 0) {
            return Ok(());
        }
        let Some(conn) = self.conn.clone() else {
            return Ok(());
        };
        for _ in 0..free {
            let Some(input) = self.input.as_ref() else {
                break;
            };
            let item = match input.bind(py).call_method0(pyo3::intern!(py, "__next__")) {
                Ok(item) => item,
                Err(e) => {
                    self.input = None;
                    if !e.is_instance_of::<PyStopIteration>(py) {
                        self.input_error = Some(e);
                    }
                    break;
                }
            };
            let index = self.pulled;
            self.pulled += 1;
            self.buf.clear();
            if let Err(e) = self.codec.encode(&item, &mut self.buf) {
                let message = format!(
                    "task #{index} cannot be pickled: {}",
                    failure::describe(py, &e)
                );
                let error =
                    failure::make(py, &self.make_error, "codec", &message, "", Some(index))?;
                self.slots.push_back(Slot::Failed(error));
                continue;
            }
            // Never blocks for long: the window has room for it, and the connector's I/O
            // thread drains the hand-over queue without the GIL.
            conn.send(std::mem::take(&mut self.buf))
                .map_err(|e| pool_error(format!("cannot submit task #{index}: {e}")))?;
            self.sent += 1;
            if self.ordered {
                self.slots.push_back(Slot::Sent(index));
            }
        }
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
        outcome: Result<Vec<u8>, TaskError>,
        index: Option<u64>,
    ) -> PyResult<Py<PyAny>> {
        match outcome {
            Ok(bytes) => match self.codec.decode(py, &bytes) {
                Ok(value) => Ok(value.unbind()),
                Err(e) => {
                    let at = index.map(|i| format!(" of task #{i}")).unwrap_or_default();
                    let message = format!(
                        "the result{at} cannot be unpickled: {}",
                        failure::describe(py, &e)
                    );
                    let error = failure::make(py, &self.make_error, "codec", &message, "", index)?;
                    self.fail(py, error)
                }
            },
            Err(e) => {
                let error = failure::from_task_error(py, &self.make_error, &e, index)?;
                self.fail(py, error)
            }
        }
    }
}

#[pymethods]
impl NativeResults {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        loop {
            if let Some(Slot::Failed(_)) = self.slots.front() {
                let Some(Slot::Failed(error)) = self.slots.pop_front() else {
                    unreachable!()
                };
                return self.fail(py, error);
            }
            self.fill(py)?;
            if matches!(self.slots.front(), Some(Slot::Failed(_))) {
                continue;
            }
            if self.sent == 0 {
                self.conn = None;
                if let Some(e) = self.input_error.take() {
                    return Err(e);
                }
                return Err(PyStopIteration::new_err(()));
            }
            let Some(conn) = self.conn.clone() else {
                return Err(PyStopIteration::new_err(()));
            };
            let received = match conn.recv_timeout(std::time::Duration::ZERO) {
                Ok(got) => Some(got),
                Err(_) => interruptible(py, None, |slice| conn.recv_timeout(slice).ok())?,
            };
            let Some(Some(outcome)) = received else {
                self.conn = None;
                return Err(pool_error("the pool stopped while results were awaited"));
            };
            self.sent -= 1;
            let index = if self.ordered {
                match self.slots.pop_front() {
                    Some(Slot::Sent(i)) => Some(i),
                    _ => None,
                }
            } else {
                None
            };
            return self.outcome(py, outcome, index);
        }
    }

    /// Items pulled from the input so far.
    #[getter]
    fn pulled(&self) -> u64 {
        self.pulled
    }

    /// Stops: open tasks are cancelled, the input is released. Idempotent.
    fn close(&mut self, py: Python<'_>) {
        self.input = None;
        self.slots.clear();
        self.sent = 0;
        if let Some(conn) = self.conn.take() {
            py.detach(move || drop(conn));
        }
    }
}
