//! The Rust face of a worker: the [`Worker`] trait (init once, then `process` per task, over
//! serde types) and its adapter onto the byte-level runtime.

use std::fmt::Display;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::error::{Error, ErrorKind, TaskError};
use crate::transport::curve::Security;
use crate::transport::Context;
use crate::worker_runtime::{serve_remote, Handler, WorkerOptions};

/// A long-lived worker: `init` runs once per worker (load a model), `process` once per task.
///
/// An `Err` from `process`, or a panic in it, becomes an error outcome for that task, and
/// the worker goes on with the next one.
pub trait Worker: Sized + 'static {
    /// What `init` needs; sent to each worker process once.
    type Config: Serialize + DeserializeOwned + Clone + Send + 'static;
    /// What each task carries.
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// What each task gives back.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// What `init` and `process` fail with; its text becomes the task's error message.
    type Error: Display;

    /// Runs once per worker process, before its first task (load a model here).
    fn init(config: Self::Config) -> Result<Self, Self::Error>;

    /// Runs one task; an error (or a panic) is that task's outcome, and the worker goes on.
    fn process(&mut self, input: Self::Input) -> Result<Self::Output, Self::Error>;

    /// Runs several tasks at once — batched inference — when the pool sets
    /// [`crate::PoolBuilder::max_batch_size`]: one outcome per input, in order (outcome *i*
    /// is input *i*'s). A panic, or a count that does not match, fails each task of the
    /// batch. By default each input goes through [`Worker::process`].
    fn process_batch(
        &mut self,
        inputs: Vec<Self::Input>,
    ) -> Vec<Result<Self::Output, Self::Error>> {
        inputs
            .into_iter()
            .map(|input| self.process(input))
            .collect()
    }
}

/// Runs a [`Worker`] as a byte-level [`Handler`].
pub(crate) struct WorkerHandler<W: Worker>(pub W);

impl<W: Worker> Handler for WorkerHandler<W> {
    fn handle(&mut self, task: &[u8], out: &mut Vec<u8>) -> Result<(), TaskError> {
        let input: W::Input = codec::decode(task)?;
        let output = self
            .0
            .process(input)
            .map_err(|e| TaskError::new(ErrorKind::Failed, e.to_string()))?;
        codec::encode_into(&output, out)
    }

    fn handle_batch(&mut self, tasks: &[&[u8]], outcomes: &mut Vec<Result<Vec<u8>, TaskError>>) {
        // An input that does not decode fails at its place; the others run as one batch.
        let mut decoded = Vec::with_capacity(tasks.len());
        let mut places = Vec::with_capacity(tasks.len());
        let mut slots: Vec<Option<Result<Vec<u8>, TaskError>>> = Vec::with_capacity(tasks.len());
        for (place, task) in tasks.iter().enumerate() {
            match codec::decode::<W::Input>(task) {
                Ok(input) => {
                    decoded.push(input);
                    places.push(place);
                    slots.push(None);
                }
                Err(e) => slots.push(Some(Err(e))),
            }
        }
        let wanted = decoded.len();
        let outputs = self.0.process_batch(decoded);
        if outputs.len() != wanted {
            let message = format!(
                "process_batch returned {} results for {wanted} inputs",
                outputs.len()
            );
            let error = TaskError::new(ErrorKind::Failed, message);
            outcomes.extend(tasks.iter().map(|_| Err(error.clone())));
            return;
        }
        for (place, output) in places.into_iter().zip(outputs) {
            let encoded = output
                .map_err(|e| TaskError::new(ErrorKind::Failed, e.to_string()))
                .and_then(|value| {
                    let mut out = Vec::new();
                    codec::encode_into(&value, &mut out).map(|()| out)
                });
            slots[place] = Some(encoded);
        }
        outcomes.extend(
            slots
                .into_iter()
                .map(|slot| slot.expect("every place filled")),
        );
    }
}

/// Runs `init`, turning a panic into an error message.
pub(crate) fn init_worker<W: Worker>(config: W::Config) -> Result<W, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| W::init(config))) {
        Ok(Ok(worker)) => Ok(worker),
        Ok(Err(e)) => Err(e.to_string()),
        Err(payload) => Err(format!(
            "init panicked: {}",
            payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        )),
    }
}

/// Runs a [`Worker`] for a pool on another machine (or a standalone broker) until the broker
/// refuses it: `init` once, then serve, joining again whenever the broker restarts or the
/// network fails. `security` is [`Security::Client`] for a CURVE endpoint. Returns `Ok` when
/// the worker is due for recycling (its process should then end, to be started afresh).
pub fn serve_remote_worker<W: Worker>(
    endpoint: &str,
    security: Security,
    config: W::Config,
) -> Result<(), Error> {
    let worker = init_worker::<W>(config).map_err(Error::InitFailed)?;
    let opts = WorkerOptions::remote(endpoint, security);
    // Only a refusal is an error; a worker due for recycling returns, for its process to end.
    serve_remote(&Context::new(), &opts, WorkerHandler(worker)).map(|_| ())
}
