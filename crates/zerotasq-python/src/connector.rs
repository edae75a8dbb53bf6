//! `NativeConnector`: the seed's blocking `send`/`recv`, usable from two threads, over an
//! engine `Connector`. `send` waits (without the GIL, interruptibly) while `window` tasks are
//! sent and not yet received; a task that cannot be pickled is refused by `send` with an
//! error naming it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use zerotasq::{BrokerAccess, Connector, TaskError};

use crate::codec::Codec;
use crate::failure;
use crate::pool_error;
use crate::wait::interruptible;

/// The engine connector over task and result bytes.
type ByteConnector = Connector<Vec<u8>, Vec<u8>>;

fn byte_connector(
    access: &impl BrokerAccess,
    window: usize,
    ordered: bool,
) -> PyResult<ByteConnector> {
    access
        .connector(
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

#[pyclass(module = "zerotasq._native", frozen)]
pub struct NativeConnector {
    conn: Mutex<Option<Arc<ByteConnector>>>,
    codec: Codec,
    make_error: Py<PyAny>,
    window: usize,
    /// Sent and not yet received.
    open: Mutex<usize>,
    freed: Condvar,
    sent: AtomicU64,
    closed: AtomicBool,
}

impl NativeConnector {
    pub(crate) fn start(
        access: &impl BrokerAccess,
        window: usize,
        ordered: bool,
        codec: Codec,
        make_error: Py<PyAny>,
    ) -> PyResult<Self> {
        let window = window.max(1);
        Ok(NativeConnector {
            conn: Mutex::new(Some(Arc::new(byte_connector(access, window, ordered)?))),
            codec,
            make_error,
            window,
            open: Mutex::new(0),
            freed: Condvar::new(),
            sent: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        })
    }

    fn conn(&self) -> PyResult<Arc<ByteConnector>> {
        self.conn
            .lock()
            .expect("connector lock")
            .clone()
            .ok_or_else(|| pool_error("the connector is closed"))
    }

    /// Takes one window slot; `false` once closed.
    fn acquire(&self, slice: Duration) -> Option<bool> {
        if self.closed.load(Ordering::Acquire) {
            return Some(false);
        }
        let open = self.open.lock().expect("open lock");
        let (mut open, _) = self
            .freed
            .wait_timeout_while(open, slice, |n| *n >= self.window)
            .expect("open lock");
        if *open >= self.window {
            return None;
        }
        *open += 1;
        Some(true)
    }

    fn release(&self) {
        let mut open = self.open.lock().expect("open lock");
        *open = open.saturating_sub(1);
        self.freed.notify_one();
    }
}

#[pymethods]
impl NativeConnector {
    /// Sends one task; blocks while `window` tasks are sent and not yet received.
    fn send(&self, py: Python<'_>, task: &Bound<'_, PyAny>) -> PyResult<()> {
        let index = self.sent.load(Ordering::Relaxed);
        let mut bytes = Vec::new();
        if let Err(e) = self.codec.encode(task, &mut bytes) {
            let message = format!(
                "task #{index} cannot be pickled: {}",
                failure::describe(py, &e)
            );
            let error = failure::make(py, &self.make_error, "codec", &message, "", Some(index))?;
            return Err(PyErr::from_value(error.into_bound(py)));
        }
        let conn = self.conn()?;
        if !interruptible(py, None, |slice| self.acquire(slice))?.unwrap_or(false) {
            return Err(pool_error("the connector is closed"));
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
        conn.send(bytes).map_err(|e| {
            self.release();
            pool_error(format!("cannot submit task #{index}: {e}"))
        })
    }

    /// Says no more tasks will be sent: `recv` returns `None` once every outcome is out.
    fn finish(&self) -> PyResult<()> {
        self.conn()?.finish();
        Ok(())
    }

    /// The next outcome as `(True, value)` or `(False, error)`; `None` once finished and
    /// drained. Raises `TimeoutError` after `timeout` seconds (`None`: wait forever).
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<(bool, Py<PyAny>)>> {
        let conn = self.conn()?;
        let timeout = timeout.map(|t| Duration::from_secs_f64(t.max(0.0)));
        let got = interruptible(py, timeout, |slice| {
            if self.closed.load(Ordering::Acquire) {
                return Some(None);
            }
            conn.recv_timeout(slice).ok()
        })?;
        let Some(outcome) = got else {
            return Err(pyo3::exceptions::PyTimeoutError::new_err(
                "no outcome arrived in time",
            ));
        };
        let Some(outcome) = outcome else {
            return Ok(None);
        };
        self.release();
        Ok(Some(match outcome {
            Ok(bytes) => match self.codec.decode(py, &bytes) {
                Ok(value) => (true, value.unbind()),
                Err(e) => {
                    let message = format!(
                        "a result cannot be unpickled: {}",
                        failure::describe(py, &e)
                    );
                    (
                        false,
                        failure::make(py, &self.make_error, "codec", &message, "", None)?,
                    )
                }
            },
            Err(e) => (
                false,
                failure::from_task_error(py, &self.make_error, &e, None)?,
            ),
        }))
    }

    /// Stops the connector: blocked `send`/`recv` calls return. Idempotent.
    fn close(&self, py: Python<'_>) {
        self.closed.store(true, Ordering::Release);
        self.freed.notify_all();
        let conn = self.conn.lock().expect("connector lock").take();
        if let Some(conn) = conn {
            py.detach(move || drop(conn));
        }
    }
}
