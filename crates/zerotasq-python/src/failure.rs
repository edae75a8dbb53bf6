//! Failures as Python objects: an engine [`TaskError`] (or a local encoding failure) becomes
//! whatever the package's `make_error(kind, message, detail, index)` returns — a
//! `zerotasq.TaskError` or one of its subclasses.

use pyo3::prelude::*;
use zerotasq::TaskError;

/// Builds the Python error object for one failed task.
pub fn make(
    py: Python<'_>,
    factory: &Py<PyAny>,
    kind: &str,
    message: &str,
    detail: &str,
    index: Option<u64>,
) -> PyResult<Py<PyAny>> {
    Ok(factory
        .bind(py)
        .call1((kind, message, detail, index))?
        .unbind())
}

/// Builds the Python error object for an engine [`TaskError`].
pub fn from_task_error(
    py: Python<'_>,
    factory: &Py<PyAny>,
    error: &TaskError,
    index: Option<u64>,
) -> PyResult<Py<PyAny>> {
    make(
        py,
        factory,
        error.kind().name(),
        error.message(),
        error.detail(),
        index,
    )
}

/// Describes a Python exception as `"Type: message"`, for errors made on this side.
pub fn describe(py: Python<'_>, err: &PyErr) -> String {
    let name = err
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    format!("{name}: {}", err.value(py))
}
