//! The worker process side: a fresh interpreter runs `zerotasq._worker`, which builds the
//! user's worker and calls [`serve_worker`]. The loop, the heartbeats and the socket are the
//! engine's (`serve`); Python runs only inside `process`. The GIL is taken once per batch
//! of tasks (`Handler::batch`), not once per task: the broker batches tiny tasks. A worker
//! that defines `process_batch` gets its groups of tasks in one call (see [`batched`]).

use pyo3::prelude::*;
use std::time::Instant;

use pyo3::types::{PyList, PyTuple};
use zerotasq::child::{options_from_env, EXIT_BAD_ENV, EXIT_BROKER_LOST, EXIT_RECYCLED};
use zerotasq::worker_runtime::{serve, Batching, Handler, ServeEnd, WorkerOptions};
use zerotasq::Context;
use zerotasq::{ErrorKind, TaskError};

use crate::batched;
use crate::codec::{self, Codec};
use crate::failure;
use crate::packing;

/// Prepares this process for its parent's death (removes the pool's ipc directory on the
/// parent-death signal). Call it first.
#[pyfunction]
pub fn prepare_worker_process() {
    zerotasq::child::prepare_worker_process();
}

/// Tells the broker this worker's init failed, with `message`.
#[pyfunction]
pub fn report_init_failure(py: Python<'_>, message: &str) -> PyResult<()> {
    let opts = options_from_env().map_err(crate::pool_error)?;
    py.detach(|| zerotasq::worker_session::report_init_failure(&Context::new(), &opts, message))
        .map_err(crate::pool_error)
}

/// Serves tasks until the broker says stop; returns the process's exit status.
///
/// `process(request)` runs each task — or, `batched`, `process(requests)` (the worker's
/// `process_batch`) each group the broker hands over; `describe(exc)` turns an exception it
/// raised into `(message, detail)`; `dumps`/`loads` pickle results and read tasks.
#[pyfunction]
#[pyo3(signature = (process, describe, dumps, loads, batched=false))]
pub fn serve_worker(
    py: Python<'_>,
    process: Py<PyAny>,
    describe: Py<PyAny>,
    dumps: Py<PyAny>,
    loads: Py<PyAny>,
    batched: bool,
) -> i32 {
    let mut opts = match options_from_env() {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("zerotasq worker: {e}");
            return EXIT_BAD_ENV;
        }
    };
    let batch_size = match batch_size(&mut opts, batched) {
        Ok(size) => size,
        Err(e) => {
            eprintln!("zerotasq worker: {e}");
            return EXIT_BAD_ENV;
        }
    };
    let handler = match PyHandler::new(py, process, describe, dumps, loads, batch_size) {
        Ok(handler) => handler,
        Err(e) => {
            eprintln!("zerotasq worker: {e}");
            return EXIT_BAD_ENV;
        }
    };
    let mut handler = handler;
    let end = py.detach(|| serve(&Context::new(), &opts, &mut handler));
    match end {
        Ok(ServeEnd::Shutdown) => 0,
        // The supervisor starts a fresh worker in its slot at once.
        Ok(ServeEnd::Recycled) => EXIT_RECYCLED,
        Ok(_) => EXIT_BROKER_LOST,
        Err(e) => {
            eprintln!("zerotasq worker: {e}");
            EXIT_BROKER_LOST
        }
    }
}

/// The size of this worker's calls of `process_batch` (0: it has none, `process` runs each
/// task), its options made to match: a worker without `process_batch` takes tasks one by
/// one whatever its pool batches.
pub(crate) fn batch_size(opts: &mut WorkerOptions, batched: bool) -> Result<usize, String> {
    if !batched {
        opts.batching = Batching::default();
    } else if opts.batching.max_size == 0 {
        return Err("process_batch needs a batch size (max_batch_size), and none was given".into());
    }
    Ok(opts.batching.max_size as usize)
}

/// Runs tasks through `process` (or groups of them through `process_batch`); a batch runs
/// under one GIL acquisition.
pub(crate) struct PyHandler {
    pub(crate) codec: Codec,
    pub(crate) process: Py<PyAny>,
    pub(crate) describe: Py<PyAny>,
    /// Requests per call of `process_batch`; 0 when `process` takes them one by one.
    pub(crate) batch_size: usize,
}

impl PyHandler {
    pub(crate) fn new(
        py: Python<'_>,
        process: Py<PyAny>,
        describe: Py<PyAny>,
        dumps: Py<PyAny>,
        loads: Py<PyAny>,
        batch_size: usize,
    ) -> PyResult<PyHandler> {
        Ok(PyHandler {
            codec: Codec::new(py, dumps, loads)?,
            process,
            describe,
            batch_size,
        })
    }
}

impl Handler for PyHandler {
    fn handle(&mut self, task: &[u8], out: &mut Vec<u8>) -> Result<(), TaskError> {
        // Inside `batch` the GIL is already held: this attach only counts.
        Python::attach(|py| run_task(py, &self.codec, &self.process, &self.describe, task, out))
    }

    fn handle_batch(&mut self, tasks: &[&[u8]], outcomes: &mut Vec<Result<Vec<u8>, TaskError>>) {
        Python::attach(|py| batched::run(py, self, tasks, outcomes))
    }

    fn batch<R>(&mut self, run: impl FnOnce(&mut Self) -> R) -> R {
        Python::attach(|_py| run(self))
    }
}

fn run_task(
    py: Python<'_>,
    codec: &Codec,
    process: &Py<PyAny>,
    describe: &Py<PyAny>,
    task: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), TaskError> {
    if packing::is_pack(task) {
        return run_pack(py, codec, process, describe, &task[1..], out);
    }
    let request = decode_request(py, codec, task)?;
    let started = Instant::now();
    let result = match process.bind(py).call1((&request,)) {
        Ok(result) => result,
        Err(e) => return Err(python_failure(py, describe, e)),
    };
    let busy = started.elapsed();
    codec::start_timed(out);
    codec
        .encode(&result, out)
        .map(|()| codec::end_timed(out, busy))
        .map_err(|e| {
            out.clear();
            TaskError::new(ErrorKind::Codec, unpicklable_result(py, &request, &e))
        })
}

/// The request a task's bytes encode.
pub(crate) fn decode_request<'py>(
    py: Python<'py>,
    codec: &Codec,
    task: &[u8],
) -> Result<Bound<'py, PyAny>, TaskError> {
    codec.decode(py, task).map_err(|e| {
        TaskError::new(
            ErrorKind::Codec,
            format!(
                "the task cannot be unpickled in the worker: {}",
                failure::describe(py, &e)
            ),
        )
    })
}

/// The items of a pack (its bytes after the tag).
pub(crate) fn unpickle_pack<'py>(
    py: Python<'py>,
    codec: &Codec,
    pickled: &[u8],
) -> Result<Bound<'py, PyList>, TaskError> {
    codec
        .unpickle(py, pickled)
        .and_then(|items| Ok(items.cast_into::<PyList>()?))
        .map_err(|e| {
            TaskError::new(
                ErrorKind::Codec,
                format!(
                    "the tasks cannot be unpickled in the worker: {}",
                    failure::describe(py, &e)
                ),
            )
        })
}

/// Why a result cannot be sent, naming the task (its `repr`, cut short).
pub(crate) fn unpicklable_result(py: Python<'_>, request: &Bound<'_, PyAny>, e: &PyErr) -> String {
    let shown = request
        .repr()
        .map(|r| {
            let r = r.to_string();
            match r.char_indices().nth(80) {
                Some((cut, _)) => format!("{}…", &r[..cut]),
                None => r,
            }
        })
        .unwrap_or_default();
    format!(
        "the result of the task {shown} cannot be pickled: {}",
        failure::describe(py, e)
    )
}

/// Runs a pack: `process` for each item, failures kept at their positions, the answer
/// pickled as one (see [`packing`]).
fn run_pack(
    py: Python<'_>,
    codec: &Codec,
    process: &Py<PyAny>,
    describe: &Py<PyAny>,
    pickled: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), TaskError> {
    let started = Instant::now();
    let items = unpickle_pack(py, codec, pickled)?;
    let process = process.bind(py);
    let values = PyList::empty(py);
    let mut errors = Vec::new();
    for (at, item) in items.iter().enumerate() {
        match process.call1((&item,)) {
            Ok(value) => values.append(value),
            Err(e) => {
                errors.push(pack_error(at, &python_failure(py, describe, e)));
                values.append(py.None())
            }
        }
        .map_err(|e| TaskError::new(ErrorKind::Failed, failure::describe(py, &e)))?;
    }
    answer_pack(py, started.elapsed(), &items, &values, errors, codec, out)
}

/// A failure at position `at` of a pack, as its answer carries it.
pub(crate) fn pack_error(at: usize, e: &TaskError) -> (usize, String, String, String) {
    (
        at,
        e.kind().name().to_string(),
        e.message().to_string(),
        e.detail().to_string(),
    )
}

/// Writes a pack's answer: `values` (None where `errors`, by position, has a failure); a
/// value that does not pickle becomes an error at its own place.
pub(crate) fn answer_pack(
    py: Python<'_>,
    busy: std::time::Duration,
    items: &Bound<'_, PyList>,
    values: &Bound<'_, PyList>,
    mut errors: Vec<(usize, String, String, String)>,
    codec: &Codec,
    out: &mut Vec<u8>,
) -> Result<(), TaskError> {
    if packing::write_answer(py, busy, values, &errors, codec, out).is_ok() {
        return Ok(());
    }
    // Some result does not pickle: it becomes an error at its own place.
    out.clear();
    for (at, value) in values.iter().enumerate() {
        if let Err(e) = codec.pickle_in_band(&value) {
            let item = items.get_item(at).expect("as many items as values");
            errors.push((
                at,
                ErrorKind::Codec.name().to_string(),
                unpicklable_result(py, &item, &e),
                String::new(),
            ));
            let _ = values.set_item(at, py.None());
        }
    }
    errors.sort_by_key(|e| e.0);
    packing::write_answer(py, busy, values, &errors, codec, out).map_err(|e| {
        out.clear();
        TaskError::new(
            ErrorKind::Codec,
            format!(
                "the results cannot be pickled: {}",
                failure::describe(py, &e)
            ),
        )
    })
}

/// An exception raised by `process`, as a `Failed` task error with the remote traceback.
pub(crate) fn python_failure(py: Python<'_>, describe: &Py<PyAny>, err: PyErr) -> TaskError {
    let value = err.value(py);
    if let Some(tb) = err.traceback(py) {
        // Python 3.11 keeps a raised exception's traceback beside it, not on it.
        let _ = value.setattr(pyo3::intern!(py, "__traceback__"), tb);
    }
    let described = describe.bind(py).call1((value,)).and_then(|t| {
        let t = t.cast_into::<PyTuple>()?;
        Ok((
            t.get_item(0)?.extract::<String>()?,
            t.get_item(1)?.extract::<String>()?,
        ))
    });
    match described {
        Ok((message, detail)) => TaskError::new(ErrorKind::Failed, message).with_detail(detail),
        Err(_) => TaskError::new(ErrorKind::Failed, failure::describe(py, &err)),
    }
}
