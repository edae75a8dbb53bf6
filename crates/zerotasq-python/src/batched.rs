//! The worker side of batching: a worker that defines `process_batch` declares its batch
//! size, the broker hands it groups of tasks from what is queued, and each group goes to
//! `process_batch` as one list — under one GIL acquisition — whose result *i* is task *i*'s.
//!
//! Failures keep their places: a task that does not unpickle fails alone (the others are
//! called without it); an exception in `process_batch`, or an answer that is not a list or
//! tuple of as many results, fails each request of that call; a result that does not pickle
//! fails its own request. The pools of this package do not pack items for such workers,
//! but a client elsewhere may: a pack's items join the requests, and calls never exceed the
//! batch size.

use std::time::Instant;

use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use zerotasq::{ErrorKind, TaskError};

use crate::packing;
use crate::worker::{
    answer_pack, decode_request, pack_error, python_failure, unpicklable_result, unpickle_pack,
    PyHandler,
};

/// Where a task's requests are among those called.
enum Place<'py> {
    /// Request `at`.
    Single(usize),
    /// The items of a pack: requests `from..from + items.len()`.
    Pack {
        from: usize,
        items: Bound<'py, PyList>,
    },
    /// Never called: it did not unpickle.
    Failed(TaskError),
}

/// Runs `tasks` through `process_batch` in calls of at most the batch size; one outcome per
/// task onto `outcomes`, in order.
pub(crate) fn run(
    py: Python<'_>,
    handler: &PyHandler,
    tasks: &[&[u8]],
    outcomes: &mut Vec<Result<Vec<u8>, TaskError>>,
) {
    let mut requests = Vec::with_capacity(tasks.len());
    let places: Vec<Place<'_>> = tasks
        .iter()
        .map(|task| {
            let place = if packing::is_pack(task) {
                unpickle_pack(py, &handler.codec, &task[1..]).map(|items| {
                    let from = requests.len();
                    requests.extend(items.iter());
                    Place::Pack { from, items }
                })
            } else {
                decode_request(py, &handler.codec, task).map(|request| {
                    requests.push(request);
                    Place::Single(requests.len() - 1)
                })
            };
            place.unwrap_or_else(Place::Failed)
        })
        .collect();
    let started = Instant::now();
    let mut answers = Vec::with_capacity(requests.len());
    for group in requests.chunks(handler.batch_size.max(1)) {
        call(py, handler, group, &mut answers);
    }
    let busy = started.elapsed();
    for place in places {
        outcomes.push(match place {
            Place::Failed(e) => Err(e),
            Place::Single(at) => answers[at]
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|value| {
                    let mut out = Vec::new();
                    handler
                        .codec
                        .encode(value, &mut out)
                        .map(|()| out)
                        .map_err(|e| {
                            let message = unpicklable_result(py, &requests[at], &e);
                            TaskError::new(ErrorKind::Codec, message)
                        })
                }),
            Place::Pack { from, items } => {
                let values = PyList::empty(py);
                let mut errors = Vec::new();
                for (at, answer) in answers[from..from + items.len()].iter().enumerate() {
                    let appended = match answer {
                        Ok(value) => values.append(value),
                        Err(e) => {
                            errors.push(pack_error(at, e));
                            values.append(py.None())
                        }
                    };
                    if let Err(e) = appended {
                        errors.push(pack_error(at, &python_failure(py, &handler.describe, e)));
                    }
                }
                let mut out = Vec::new();
                answer_pack(py, busy, &items, &values, errors, &handler.codec, &mut out)
                    .map(|()| out)
            }
        });
    }
}

/// One call of `process_batch` with `group`: a result or the call's failure for each
/// request, onto `answers`.
fn call<'py>(
    py: Python<'py>,
    handler: &PyHandler,
    group: &[Bound<'py, PyAny>],
    answers: &mut Vec<Result<Bound<'py, PyAny>, TaskError>>,
) {
    let n = group.len();
    let called = PyList::new(py, group).and_then(|list| handler.process.bind(py).call1((list,)));
    let failure = match called {
        Err(e) => python_failure(py, &handler.describe, e),
        Ok(result) => {
            let results: Option<Vec<Bound<'py, PyAny>>> = match result.cast::<PyList>() {
                Ok(list) => Some(list.iter().collect()),
                Err(_) => result.cast::<PyTuple>().ok().map(|t| t.iter().collect()),
            };
            match results {
                Some(results) if results.len() == n => {
                    answers.extend(results.into_iter().map(Ok));
                    return;
                }
                Some(results) => TaskError::new(
                    ErrorKind::Failed,
                    format!(
                        "process_batch returned {} results for a batch of {n} requests; it \
                         must return one result per request, in order",
                        results.len()
                    ),
                ),
                None => {
                    let kind = result
                        .get_type()
                        .name()
                        .map_or_else(|_| "?".into(), |t| t.to_string());
                    let length = result
                        .len()
                        .map_or_else(|_| String::new(), |l| format!(" of length {l}"));
                    TaskError::new(
                        ErrorKind::Failed,
                        format!(
                            "process_batch returned a {kind}{length} for a batch of {n} \
                             requests; it must return a list of {n} results, one per request, \
                             in order"
                        ),
                    )
                }
            }
        }
    };
    answers.extend(group.iter().map(|_| Err(failure.clone())));
}
