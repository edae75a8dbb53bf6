//! Errors: [`TaskError`], the outcome of one task that did not succeed (data, delivered at
//! the task's place in the stream), and [`Error`], a failure of the pool itself.

use std::fmt;

pub use crate::protocol::ErrorKind;
use crate::protocol::WireError;

/// Why one task produced no output. The stream goes on after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    kind: ErrorKind,
    message: String,
    detail: String,
}

impl TaskError {
    /// A failure of the given kind with its message (no detail).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        TaskError {
            kind,
            message: message.into(),
            detail: String::new(),
        }
    }

    /// Attaches a backtrace or remote traceback.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// What kind of failure it is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message: the error, exception or panic as the worker reported it.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The backtrace of a panic or the traceback of a remote exception; may be empty.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    pub(crate) fn to_wire(&self) -> WireError<'_> {
        WireError {
            kind: self.kind,
            message: &self.message,
            detail: &self.detail,
        }
    }

    pub(crate) fn from_wire(wire: &WireError<'_>) -> Self {
        TaskError {
            kind: wire.kind,
            message: wire.message.to_string(),
            detail: wire.detail.to_string(),
        }
    }

    /// Decodes an error outcome; bytes that are not one become a [`ErrorKind::Codec`] error.
    pub(crate) fn decode(bytes: &[u8]) -> Self {
        match WireError::decode(bytes) {
            Ok(wire) => TaskError::from_wire(&wire),
            Err(e) => TaskError::new(ErrorKind::Codec, format!("undecodable error outcome: {e}")),
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for TaskError {}

/// No outcome arrived within the time asked for (the stream goes on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no outcome arrived in time")]
pub struct TimedOut;

/// A failure of the pool itself (not of one task).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// ZeroMQ refused an operation (an endpoint that cannot be bound, say).
    #[error("zeromq: {context}: {message}")]
    Transport {
        /// What was being done.
        context: String,
        /// ZeroMQ's reason.
        message: String,
    },
    #[error("{context}: {source}")]
    /// A system call failed.
    Io {
        /// What was being done.
        context: String,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    /// The pool was configured in a way that cannot work; what is wrong.
    Config(String),
    #[error("the pool was closed")]
    /// The pool (or the broker it reached) was closed, so nothing more can be sent.
    Closed,
    #[error("worker environment: {0}")]
    /// A worker process was started without the environment its pool gives it.
    WorkerEnv(String),
    #[error("worker init failed: {0}")]
    /// A worker's `init` failed; its message.
    InitFailed(String),
    #[error("refused by the broker: {0}")]
    /// The broker cannot work with this peer (another protocol version, or told so); why.
    Refused(String),
    /// No answer from a broker within the patience given: it is unreachable, or it refused
    /// our key (CURVE gives no other sign). The message names the endpoint.
    #[error("{0}")]
    Unreachable(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
