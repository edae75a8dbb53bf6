//! `NativePool`: an engine [`RawPool`] whose local workers are fresh Python interpreters
//! (`python -m zerotasq._worker`), each reading its worker definition from stdin — never a
//! fork of this process, which has running threads — and which may listen on TCP for remote
//! workers (handed the definition as the pool's welcome bytes) and clients; or a
//! [`RemoteBroker`] reached over TCP, streamed through the same way.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use zerotasq::server_security;
use zerotasq::BrokerConfig;
use zerotasq::WorkerCommand;
use zerotasq::{HttpListen, PoolSpec, RawPool, RemoteBroker, Security, TcpListen};

use crate::access::Access;
use crate::codec::Codec;
use crate::connector::NativeConnector;
use crate::controls::Controls;
use crate::pool_error;
use crate::remote;
use crate::results::NativeResults;

/// A running pool (broker thread, supervisor thread, worker processes) or a remote broker.
#[pyclass(module = "zerotasq._native", frozen)]
pub struct NativePool {
    access: Mutex<Option<Access>>,
    /// Engine tasks a stream keeps in flight while its packs grow: twice what the pool's
    /// own workers hold with their prefetch; unbounded when workers may join from elsewhere
    /// (a remote broker's, `listen_workers`), whose number is not known here.
    probe: usize,
}

impl NativePool {
    fn access(&self) -> PyResult<Access> {
        self.access
            .lock()
            .expect("pool lock")
            .clone()
            .ok_or_else(|| pool_error("the pool is closed"))
    }

    fn local(&self) -> PyResult<Option<Arc<RawPool>>> {
        Ok(match self.access()? {
            Access::Local(pool) => Some(pool),
            Access::Remote(_) => None,
        })
    }
}

/// Where a pool listens on TCP, from `Pool(listen_workers=…, listen_clients=…, key=…,
/// allow=…, insecure=…)`.
fn tcp_listen(
    workers: Option<String>,
    clients: Option<String>,
    key: Option<PathBuf>,
    allow: Vec<PathBuf>,
    insecure: bool,
    allow_insecure_remote: bool,
) -> PyResult<Option<TcpListen>> {
    if workers.is_none() && clients.is_none() {
        return Ok(None);
    }
    let security = if insecure {
        Security::Insecure
    } else {
        let key = key.ok_or_else(|| {
            pool_error(
                "listening on TCP needs key= (the pool's NAME.key_secret) and allow= (files of \
                 admitted public keys), or insecure=True for plain TCP",
            )
        })?;
        server_security(&key, &allow).map_err(pool_error)?
    };
    Ok(Some(TcpListen {
        workers,
        clients,
        security,
        allow_insecure_remote,
    }))
}

#[pymethods]
impl NativePool {
    /// Starts the pool: `n_workers` copies of `program args…`, each given `stdin`; on TCP
    /// too when `listen_workers`/`listen_clients` are given (remote workers get `welcome`).
    /// `controls`: the workers' limits, batching and per-slot environment; `http`: where to
    /// serve metrics and a dashboard (`HOST:PORT`, loopback).
    #[new]
    #[pyo3(signature = (program, args, env, stdin, n_workers, max_retries=3, prefetch=2,
                        heartbeat_ms=500, liveness=6, max_message=256 << 20, *,
                        listen_workers=None, listen_clients=None, key=None, allow=Vec::new(),
                        insecure=false, allow_insecure_remote=false, welcome=Vec::new(),
                        controls=None, http=None))]
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
        listen_workers: Option<String>,
        listen_clients: Option<String>,
        key: Option<PathBuf>,
        allow: Vec<PathBuf>,
        insecure: bool,
        allow_insecure_remote: bool,
        welcome: Vec<u8>,
        controls: Option<Controls>,
        http: Option<String>,
    ) -> PyResult<Self> {
        if n_workers == 0 && listen_workers.is_none() {
            return Err(pool_error(
                "a pool needs at least one worker (or listen_workers= for remote ones)",
            ));
        }
        let probe = match listen_workers {
            Some(_) => usize::MAX,
            None => 2 * n_workers * prefetch.max(1) as usize,
        };
        let tcp = tcp_listen(
            listen_workers,
            listen_clients,
            key,
            allow,
            insecure,
            allow_insecure_remote,
        )?;
        let defaults = PoolSpec::default();
        let (task_timeout, recycling, batching, worker_env) = match &controls {
            Some(c) => (
                c.task_timeout()?,
                c.recycling()?,
                c.batching()?,
                c.worker_env()?,
            ),
            None => (
                defaults.task_timeout,
                defaults.recycling,
                defaults.batching,
                defaults.worker_env.clone(),
            ),
        };
        let spec = PoolSpec {
            broker: BrokerConfig {
                heartbeat_interval: Duration::from_millis(heartbeat_ms.max(10)),
                liveness: liveness.max(1),
                max_retries: max_retries.max(1),
                ..BrokerConfig::default()
            },
            processes: (n_workers > 0).then(|| {
                (
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
                )
            }),
            prefetch: prefetch.max(1),
            max_message,
            tcp,
            welcome,
            task_timeout,
            recycling,
            batching,
            worker_env,
            http: http.map(HttpListen::local),
            ..defaults
        };
        let raw = py.detach(|| RawPool::start(spec)).map_err(pool_error)?;
        Ok(NativePool {
            access: Mutex::new(Some(Access::Local(Arc::new(raw)))),
            probe,
        })
    }

    /// A broker elsewhere (its client endpoint), with CURVE keys or plain TCP.
    #[staticmethod]
    #[pyo3(signature = (endpoint, server_key=None, key=None, insecure=false,
                        allow_insecure_remote=false, patience_s=5.0))]
    fn connect(
        endpoint: &str,
        server_key: Option<PathBuf>,
        key: Option<PathBuf>,
        insecure: bool,
        allow_insecure_remote: bool,
        patience_s: f64,
    ) -> PyResult<Self> {
        let security =
            remote::security(endpoint, server_key, key, insecure, allow_insecure_remote)?;
        let patience = Duration::from_secs_f64(patience_s.max(0.1));
        let broker = RemoteBroker::connect(endpoint, security, allow_insecure_remote)
            .map_err(pool_error)?
            .patience(patience, patience);
        Ok(NativePool {
            access: Mutex::new(Some(Access::Remote(Arc::new(broker)))),
            probe: usize::MAX,
        })
    }

    /// The TCP endpoints the pool bound (ports resolved): `{"workers": …, "clients": …}`.
    fn tcp_endpoints<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        if let Some(pool) = self.local()? {
            let e = pool.tcp_endpoints();
            d.set_item("workers", e.workers.clone())?;
            d.set_item("clients", e.clients.clone())?;
        }
        Ok(d)
    }

    /// `http://HOST:PORT` where the pool serves its metrics and dashboard, if it does.
    fn http_address(&self) -> PyResult<Option<String>> {
        Ok(self
            .local()?
            .and_then(|pool| pool.http_address())
            .map(|addr| format!("http://{addr}")))
    }

    /// A lazy iterator over the outcomes of `iterable`'s items; tiny items travel in packs
    /// unless `pack` is false.
    #[pyo3(signature = (iterable, window, ordered, dumps, loads, make_error, return_exceptions,
                        window_bytes=0, pack=true))]
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
        pack: bool,
    ) -> PyResult<NativeResults> {
        let access = self.access()?;
        Ok(NativeResults::new(
            &access,
            iterable.try_iter()?,
            window,
            window_bytes,
            ordered,
            Codec::for_caller(py, dumps, loads)?,
            make_error,
            return_exceptions,
            pack,
            self.probe,
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
        let access = self.access()?;
        NativeConnector::start(
            &access,
            window,
            ordered,
            Codec::for_caller(py, dumps, loads)?,
            make_error,
        )
    }

    /// The pids of the live local worker processes.
    fn worker_pids(&self) -> PyResult<Vec<u32>> {
        Ok(self
            .local()?
            .map_or_else(Vec::new, |pool| pool.worker_pids()))
    }

    /// The broker's counters.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let Some(pool) = self.local()? else {
            return Err(pool_error(
                "the counters of a remote broker are not available here",
            ));
        };
        let s = pool.stats();
        let d = PyDict::new(py);
        d.set_item("submitted", s.submitted)?;
        d.set_item("completed", s.completed)?;
        d.set_item("failed", s.failed)?;
        d.set_item("requeued", s.requeued)?;
        d.set_item("poisoned", s.poisoned)?;
        d.set_item("duplicates_dropped", s.duplicates_dropped)?;
        d.set_item("malformed", s.malformed)?;
        d.set_item("workers_ready", s.workers_ready)?;
        d.set_item("workers_lost", s.workers_lost)?;
        d.set_item("recycled", s.recycled)?;
        d.set_item("timed_out", s.timed_out)?;
        d.set_item("init_failures", s.init_failures)?;
        d.set_item("workers_alive", s.workers_alive)?;
        d.set_item("queued", s.queued)?;
        d.set_item("in_flight", s.in_flight)?;
        Ok(d)
    }

    /// The broker's status as JSON: clients with their queue depths and rates, workers
    /// with their state, totals (a round trip to the broker, local or remote).
    fn status_json(&self, py: Python<'_>) -> PyResult<String> {
        let access = self.access()?;
        let status = py
            .detach(|| match &access {
                Access::Local(pool) => pool.status(),
                Access::Remote(broker) => broker.status(),
            })
            .map_err(pool_error)?;
        Ok(String::from_utf8_lossy(&status.to_json()).into_owned())
    }

    /// Whether `close` has run.
    #[getter]
    fn closed(&self) -> bool {
        self.access.lock().expect("pool lock").is_none()
    }

    /// Stops the pool: kills and reaps the workers, ends open tasks as cancelled. Idempotent.
    fn close(&self, py: Python<'_>) {
        let access = self.access.lock().expect("pool lock").take();
        if let Some(access) = access {
            // Open iterators hold only their own sockets, so this is the last reference.
            py.detach(move || drop(access));
        }
    }
}
