//! The Python face across machines, worker side and keys: `keygen`; a remote worker
//! (`python -m zerotasq worker --connect …`) first fetches the pool's worker definition —
//! its welcome bytes, over the authenticated channel — then serves through the engine's
//! `serve`, joining again after a broker restart or a network cut, until it is due for
//! recycling.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use zerotasq::child::EXIT_RECYCLED;
use zerotasq::client_security;
use zerotasq::worker_runtime::{serve, ServeEnd, WorkerOptions};
use zerotasq::Context;
use zerotasq::{Error, KeyPair, Security};

use crate::controls::Controls;
use crate::pool_error;
use crate::worker::{batch_size, PyHandler};

/// How long a joining worker waits for the pool's welcome before it joins anyway.
const WELCOME_PATIENCE: Duration = Duration::from_secs(5);

/// Writes `NAME.key` (public) and `NAME.key_secret` (secret, mode 0600); returns the public
/// key (Z85). Refuses to overwrite existing files unless `force`.
#[pyfunction]
#[pyo3(signature = (name, force=false))]
pub fn keygen(name: PathBuf, force: bool) -> PyResult<String> {
    let with = |suffix: &str| {
        let mut path = name.clone().into_os_string();
        path.push(suffix);
        PathBuf::from(path)
    };
    let (public, secret) = (with(".key"), with(".key_secret"));
    if force {
        // A fresh file, so the secret one is created with mode 0600 whatever it was.
        let _ = std::fs::remove_file(&secret);
    } else if let Some(existing) = [&public, &secret]
        .into_iter()
        .find(|p| p.symlink_metadata().is_ok())
    {
        return Err(pyo3::exceptions::PyFileExistsError::new_err(format!(
            "{} exists; not overwriting it (force=True)",
            existing.display()
        )));
    }
    let keys = KeyPair::generate().map_err(pool_error)?;
    keys.write(&name).map_err(pool_error)?;
    Ok(keys.public.to_string())
}

/// The security of a client or worker reaching `endpoint`, from the Python arguments.
pub(crate) fn security(
    endpoint: &str,
    server_key: Option<PathBuf>,
    key: Option<PathBuf>,
    insecure: bool,
    allow_insecure_remote: bool,
) -> PyResult<Security> {
    client_security(
        endpoint,
        server_key.as_deref(),
        key.as_deref(),
        insecure,
        allow_insecure_remote,
    )
    .map_err(pool_error)
}

/// How a remote worker reaches its broker.
fn options(
    endpoint: &str,
    server_key: Option<PathBuf>,
    key: Option<PathBuf>,
    insecure: bool,
    allow_insecure_remote: bool,
) -> PyResult<WorkerOptions> {
    let security = security(endpoint, server_key, key, insecure, allow_insecure_remote)?;
    Ok(WorkerOptions::remote(endpoint, security))
}

/// Checks that the keys (or `insecure`) let us reach `endpoint`: readable key files, plain
/// TCP only where allowed. Raises `PoolError` saying what is wrong.
#[pyfunction]
#[pyo3(signature = (endpoint, server_key=None, key=None, insecure=false,
                    allow_insecure_remote=false))]
pub fn check_security(
    endpoint: &str,
    server_key: Option<PathBuf>,
    key: Option<PathBuf>,
    insecure: bool,
    allow_insecure_remote: bool,
) -> PyResult<()> {
    options(endpoint, server_key, key, insecure, allow_insecure_remote).map(drop)
}

/// The pool's welcome bytes (its pickled worker definitions), asked of the broker at
/// `endpoint`; an error after `patience_s` without an answer (unreachable, or our key
/// refused).
#[pyfunction]
#[pyo3(signature = (endpoint, server_key=None, key=None, insecure=false,
                    allow_insecure_remote=false, patience_s=10.0))]
pub fn fetch_welcome<'py>(
    py: Python<'py>,
    endpoint: &str,
    server_key: Option<PathBuf>,
    key: Option<PathBuf>,
    insecure: bool,
    allow_insecure_remote: bool,
    patience_s: f64,
) -> PyResult<Bound<'py, PyBytes>> {
    let opts = options(endpoint, server_key, key, insecure, allow_insecure_remote)?;
    let patience = Duration::from_secs_f64(patience_s.max(0.0));
    let welcome = py
        .detach(|| zerotasq::fetch_welcome(&Context::new(), &opts, patience))
        .map_err(pool_error)?;
    Ok(PyBytes::new(py, &welcome))
}

/// Serves the broker at `endpoint` with `process` (a worker's `process_batch` when
/// `batched`) for as long as this process lives,
/// joining again after broker restarts and network cuts. When the worker was built from the
/// pool's `welcome` bytes, each join first checks that the broker still hands out the same
/// ones: a different pool (an edited script run again) must not get the old code. Returns
/// the process's exit status when the worker is due for recycling (`controls`: its
/// limits and batching); raises `PoolError` when the pool's definition changed — the caller starts
/// afresh — or when the broker refuses us for good (another protocol version).
#[pyfunction]
#[pyo3(signature = (endpoint, process, describe, dumps, loads, server_key=None, key=None,
                    insecure=false, allow_insecure_remote=false, welcome=None, controls=None,
                    batched=false))]
#[allow(clippy::too_many_arguments)]
pub fn serve_remote_worker(
    py: Python<'_>,
    endpoint: &str,
    process: Py<PyAny>,
    describe: Py<PyAny>,
    dumps: Py<PyAny>,
    loads: Py<PyAny>,
    server_key: Option<PathBuf>,
    key: Option<PathBuf>,
    insecure: bool,
    allow_insecure_remote: bool,
    welcome: Option<Vec<u8>>,
    controls: Option<Controls>,
    batched: bool,
) -> PyResult<i32> {
    let mut opts = options(endpoint, server_key, key, insecure, allow_insecure_remote)?;
    if let Some(controls) = &controls {
        controls.apply(&mut opts)?;
    }
    let batch_size = batch_size(&mut opts, batched).map_err(pool_error)?;
    let mut handler = PyHandler::new(py, process, describe, dumps, loads, batch_size)?;
    let ctx = Context::new();
    let same_pool = || -> Result<(), Error> {
        let Some(ours) = &welcome else {
            return Ok(());
        };
        // Unreachable now: the session that follows fails, and the next join asks again.
        match zerotasq::fetch_welcome(&ctx, &opts, WELCOME_PATIENCE) {
            Ok(theirs) if theirs != *ours => Err(Error::Refused(format!(
                "the pool at {endpoint} now hands out another worker definition"
            ))),
            Ok(_) | Err(Error::Unreachable(_)) => Ok(()),
            Err(e) => Err(e),
        }
    };
    py.detach(|| serve_until_recycled(&ctx, &opts, &mut handler, same_pool))
        .map_err(pool_error)
}

/// The engine's `serve_remote_checked`, except that a worker due for recycling ends (with
/// its exit status) instead of joining again: only a fresh process sheds what it holds.
fn serve_until_recycled(
    ctx: &Context,
    opts: &WorkerOptions,
    handler: &mut PyHandler,
    mut may_join: impl FnMut() -> Result<(), Error>,
) -> Result<i32, Error> {
    const BACKOFF_MIN: Duration = Duration::from_millis(100);
    const BACKOFF_MAX: Duration = Duration::from_secs(5);
    const HEALTHY: Duration = Duration::from_secs(10);
    let mut backoff = BACKOFF_MIN;
    for session in 0u64.. {
        let mut session_opts = opts.clone();
        session_opts.identity = [&opts.identity[..], format!("-{session}").as_bytes()].concat();
        may_join()?;
        let started = Instant::now();
        match serve(ctx, &session_opts, handler) {
            Ok(ServeEnd::Recycled) => return Ok(EXIT_RECYCLED),
            Err(Error::Refused(why)) => return Err(Error::Refused(why)),
            Ok(end) => tracing::info!("left the broker ({end:?}); joining again"),
            Err(e) => tracing::warn!("worker session failed: {e}; joining again"),
        }
        if started.elapsed() >= HEALTHY {
            backoff = BACKOFF_MIN;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    unreachable!("the session loop only ends by returning")
}
