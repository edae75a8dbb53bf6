//! `NativePool`: an engine [`RawPool`] whose local workers are fresh Python interpreters
//! (`python -m zerotasq._worker`), each reading its worker definition from stdin. Never a
//! fork of this process, which has running threads.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use zerotasq::broker::BrokerConfig;
use zerotasq::supervisor::WorkerCommand;
use zerotasq::{PoolSpec, RawPool};

use crate::codec::Codec;
use crate::connector::NativeConnector;
use crate::pool_error;
use crate::results::NativeResults;

/// A running pool: broker thread, supervisor thread and worker processes.
#[pyclass(module = "zerotasq._native", frozen)]
pub struct NativePool {
    raw: Mutex<Option<Arc<RawPool>>>,
}

impl NativePool {
    fn raw(&self) -> PyResult<Arc<RawPool>> {
        self.raw
            .lock()
            .expect("pool lock")
            .clone()
            .ok_or_else(|| pool_error("the pool is closed"))
    }
}

#[pymethods]
impl NativePool {
    /// Starts the pool: `n_workers` copies of `program args…`, each given `stdin`.
    #[new]
    #[pyo3(signature = (program, args, env, stdin, n_workers, max_retries=3, prefetch=2,
                        heartbeat_ms=500, liveness=6, max_message=256 << 20))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        stdin: &[u8],
        n_workers: usize,
        max_retries: u32,
        prefetch: u32,
        heartbeat_ms: u64,
        liveness: u32,
        max_message: i64,
    ) -> PyResult<Self> {
        if n_workers == 0 {
            return Err(pool_error("a pool needs at least one worker"));
        }
        let spec = PoolSpec {
            broker: BrokerConfig {
                heartbeat_interval: Duration::from_millis(heartbeat_ms.max(10)),
                liveness: liveness.max(1),
                max_retries: max_retries.max(1),
                ..BrokerConfig::default()
            },
            processes: Some((
                n_workers,
                WorkerCommand {
                    program,
                    args: args.into_iter().map(OsString::from).collect(),
                    env: env
                        .into_iter()
                        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
                        .collect(),
                    stdin: stdin.to_vec(),
                },
            )),
            prefetch: prefetch.max(1),
            max_message,
            ..PoolSpec::default()
        };
        let raw = py.detach(|| RawPool::start(spec)).map_err(pool_error)?;
        Ok(NativePool {
            raw: Mutex::new(Some(Arc::new(raw))),
        })
    }

    /// A lazy iterator over the outcomes of `iterable`'s items.
    #[pyo3(signature = (iterable, window, ordered, dumps, loads, make_error, return_exceptions,
                        window_bytes=0))]
    #[allow(clippy::too_many_arguments)]
    fn results(
        &self,
        py: Python<'_>,
        iterable: &Bound<'_, PyAny>,
        window: usize,
        ordered: bool,
        dumps: Py<PyAny>,
        loads: Py<PyAny>,
        make_error: Py<PyAny>,
        return_exceptions: bool,
        window_bytes: usize,
    ) -> PyResult<NativeResults> {
        let raw = self.raw()?;
        Ok(NativeResults::new(
            &raw,
            iterable.try_iter()?,
            window,
            window_bytes,
            ordered,
            Codec::new(py, dumps, loads)?,
            make_error,
            return_exceptions,
        ))
    }

    /// A connector with blocking `send` and `recv`.
    #[pyo3(signature = (window, ordered, dumps, loads, make_error))]
    fn connector(
        &self,
        py: Python<'_>,
        window: usize,
        ordered: bool,
        dumps: Py<PyAny>,
        loads: Py<PyAny>,
        make_error: Py<PyAny>,
    ) -> PyResult<NativeConnector> {
        let raw = self.raw()?;
        NativeConnector::start(
            &raw,
            window,
            ordered,
            Codec::new(py, dumps, loads)?,
            make_error,
        )
    }

    /// The pids of the live worker processes.
    fn worker_pids(&self) -> PyResult<Vec<u32>> {
        Ok(self.raw()?.worker_pids())
    }

    /// The broker's counters.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.raw()?.stats();
        let d = PyDict::new(py);
        d.set_item("submitted", s.submitted)?;
        d.set_item("completed", s.completed)?;
        d.set_item("failed", s.failed)?;
        d.set_item("requeued", s.requeued)?;
        d.set_item("poisoned", s.poisoned)?;
        d.set_item("duplicates_dropped", s.duplicates_dropped)?;
        d.set_item("workers_ready", s.workers_ready)?;
        d.set_item("workers_lost", s.workers_lost)?;
        d.set_item("init_failures", s.init_failures)?;
        d.set_item("workers_alive", s.workers_alive)?;
        d.set_item("queued", s.queued)?;
        d.set_item("in_flight", s.in_flight)?;
        Ok(d)
    }

    /// Whether `close` has run.
    #[getter]
    fn closed(&self) -> bool {
        self.raw.lock().expect("pool lock").is_none()
    }

    /// Stops the pool: kills and reaps the workers, ends open tasks as cancelled. Idempotent.
    fn close(&self, py: Python<'_>) {
        let raw = self.raw.lock().expect("pool lock").take();
        if let Some(raw) = raw {
            // Open iterators hold only their own sockets, so this is the last reference.
            py.detach(move || drop(raw));
        }
    }
}
