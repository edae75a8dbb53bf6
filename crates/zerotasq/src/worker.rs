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
/// network fails. `security` is [`Security::Client`] for a CURVE endpoint.
pub fn serve_remote_worker<W: Worker>(
    endpoint: &str,
    security: Security,
    config: W::Config,
) -> Result<(), Error> {
    let worker = init_worker::<W>(config).map_err(Error::InitFailed)?;
    let opts = WorkerOptions::remote(endpoint, security);
    Err(serve_remote(&Context::new(), &opts, WorkerHandler(worker)))
}
