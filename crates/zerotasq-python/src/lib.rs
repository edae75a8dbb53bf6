//! `zerotasq._native`: the thin PyO3 layer between the ZeroTasQ engine and the Python
//! package `zerotasq`. It holds no logic of its own: the broker, the client and the worker
//! loop are the engine's; this crate turns Python objects into task bytes and back, and
//! releases the GIL around every blocking call.
//!
//! # Layout
//! - [`pool`] — `NativePool`: a running engine pool whose workers are fresh interpreters,
//!   or a remote broker.
//! - [`access`] — what a pool streams through: its own broker or a remote one.
//! - [`remote`] — keys, and the worker side of a remote worker (definition, then serve).
//! - [`processes`] — the worker processes of `python -m zerotasq worker`, one per slot.
//! - [`results`] — `NativeResults`: the lazy, windowed iterator behind `imap`.
//! - [`connector`] — `NativeConnector`: blocking `send`/`recv` from any thread.
//! - [`controls`] — the workers' limits, batching and per-slot environment.
//! - [`codec`] — Python object ⇄ task bytes (raw `bytes` fast path, pickle otherwise).
//! - [`packing`] — tiny tasks travel in packs, sized by how long an item takes.
//! - [`failure`] — engine `TaskError` → the Python `zerotasq.TaskError` factory.
//! - [`wait`] — waiting without the GIL while staying responsive to Ctrl-C.
//! - [`log_bridge`] — the engine's `tracing` events into Python's `logging`, GIL-free.
//! - [`worker`] — the worker process side: the engine's `serve` loop calling `process`;
//!   [`batched`] — calling `process_batch` with the groups the broker hands a worker.

use pyo3::prelude::*;

pub mod access;
pub mod batched;
pub mod codec;
pub mod connector;
pub mod controls;
pub mod failure;
pub mod log_bridge;
pub mod packing;
pub mod pool;
pub mod processes;
pub mod remote;
pub mod results;
pub mod wait;
pub mod worker;

pyo3::create_exception!(
    _native,
    PoolError,
    pyo3::exceptions::PyRuntimeError,
    "The pool itself failed (not one task)."
);

/// Turns an engine error into a Python `PoolError`.
pub(crate) fn pool_error(e: impl std::fmt::Display) -> PyErr {
    PoolError::new_err(e.to_string())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    log_bridge::install();
    m.add("PoolError", m.py().get_type::<PoolError>())?;
    m.add_class::<pool::NativePool>()?;
    m.add_class::<results::NativeResults>()?;
    m.add_class::<connector::NativeConnector>()?;
    m.add_class::<processes::NativeWorkerProcesses>()?;
    m.add_function(wrap_pyfunction!(worker::serve_worker, m)?)?;
    m.add_function(wrap_pyfunction!(worker::report_init_failure, m)?)?;
    m.add_function(wrap_pyfunction!(worker::prepare_worker_process, m)?)?;
    m.add_function(wrap_pyfunction!(remote::keygen, m)?)?;
    m.add_function(wrap_pyfunction!(remote::check_security, m)?)?;
    m.add_function(wrap_pyfunction!(remote::fetch_welcome, m)?)?;
    m.add_function(wrap_pyfunction!(remote::serve_remote_worker, m)?)?;
    m.add_function(wrap_pyfunction!(log_bridge::set_log_level, m)?)?;
    m.add_function(wrap_pyfunction!(log_bridge::wait_logs, m)?)?;
    m.add_function(wrap_pyfunction!(log_bridge::stop_log_pump, m)?)?;
    Ok(())
}
