//! The typed Rust face of a pool: [`Pool`] over a [`Worker`]'s own types (serde), and
//! [`PoolBuilder`], which checks its settings and starts the [`RawPool`] underneath with
//! the worker processes (re-executions of this program) or threads.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::broker::BrokerStats;
use crate::child::{entry_env, entry_offset};
use crate::client::{DecodeFn, EncodeFn, Stream};
use crate::codec;
use crate::connector::Connector;
use crate::error::Error;
use crate::http::HttpListen;
use crate::link::BrokerAccess;
use crate::pool::{PoolSpec, RawPool, TcpListen};
use crate::slot_env::WorkerEnv;
use crate::status::BrokerStatus;
use crate::supervisor::WorkerCommand;
use crate::transport::Context;
use crate::worker::{init_worker, Worker, WorkerHandler};
use crate::worker_runtime::{serve, ServeEnd, WorkerOptions};
use crate::worker_session::report_init_failure;

/// A pool of [`Worker`]s: local processes (re-executions of this program), threads, or
/// both.
pub struct Pool<W: Worker> {
    raw: RawPool,
    window: usize,
    _worker: PhantomData<fn() -> W>,
}

impl<W: Worker> Pool<W> {
    /// A builder; `config` is handed to every worker's `init`.
    pub fn builder(config: W::Config) -> PoolBuilder<W> {
        PoolBuilder::new(config)
    }

    /// Outcomes in input order. The input is pulled lazily, at most `window` tasks ahead of
    /// what has been yielded.
    pub fn map<I>(&self, input: I) -> Result<Stream<I::IntoIter, W::Output>, Error>
    where
        I: IntoIterator<Item = W::Input>,
    {
        self.raw.stream(
            input.into_iter(),
            self.window,
            true,
            encoder::<W>(),
            decoder::<W>(),
        )
    }

    /// Outcomes as they complete.
    pub fn map_unordered<I>(&self, input: I) -> Result<Stream<I::IntoIter, W::Output>, Error>
    where
        I: IntoIterator<Item = W::Input>,
    {
        self.raw.stream(
            input.into_iter(),
            self.window,
            false,
            encoder::<W>(),
            decoder::<W>(),
        )
    }

    /// A connector with blocking `send` and `recv`, for a program that feeds from one thread
    /// and drains from another.
    pub fn connector(&self, ordered: bool) -> Result<Connector<W::Input, W::Output>, Error> {
        self.raw
            .connector(self.window, ordered, encoder::<W>(), decoder::<W>())
    }

    /// The engine underneath.
    pub fn raw(&self) -> &RawPool {
        &self.raw
    }

    /// The broker's counters, as of its last round of sends.
    pub fn stats(&self) -> BrokerStats {
        self.raw.stats()
    }

    /// See [`RawPool::status`].
    pub fn status(&self) -> Result<BrokerStatus, Error> {
        self.raw.status()
    }
}

fn encoder<W: Worker>() -> EncodeFn<W::Input> {
    Box::new(|item: W::Input, buf: &mut Vec<u8>| codec::encode_into(&item, buf))
}

fn decoder<W: Worker>() -> DecodeFn<W::Output> {
    Box::new(|bytes: &[u8]| codec::decode::<W::Output>(bytes))
}

/// Configures and starts a [`Pool`].
pub struct PoolBuilder<W: Worker> {
    config: W::Config,
    processes: Option<usize>,
    threads: usize,
    window: usize,
    spec: PoolSpec,
    /// The first bad setting, reported by [`PoolBuilder::build`].
    problem: Option<Error>,
}

impl<W: Worker> PoolBuilder<W> {
    fn new(config: W::Config) -> Self {
        PoolBuilder {
            config,
            processes: None,
            threads: 0,
            window: 1024,
            spec: PoolSpec::default(),
            problem: None,
        }
    }

    /// Local worker processes (default: one per core, unless threads are asked for).
    /// They are re-executions of this program: call [`crate::serve_if_worker`] first thing
    /// in `main`.
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// In-process worker threads (for work that releases no GIL and needs no isolation).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// Tasks in flight per stream, submitted but not yet yielded (default 1024).
    pub fn window(mut self, n: usize) -> Self {
        self.window = n.max(1);
        self
    }

    /// Dead workers a task may be on before it becomes a `WorkerLost` error (default 3).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.spec.broker.max_retries = n.max(1);
        self
    }

    /// Heartbeat interval (default 500 ms) and the intervals a worker may miss (default 6).
    pub fn heartbeat(mut self, interval: Duration, liveness: u32) -> Self {
        self.spec.broker.heartbeat_interval = interval;
        self.spec.broker.liveness = liveness.max(1);
        self
    }

    /// Batches a worker may hold at once (default 2: one runs while the next waits).
    pub fn prefetch(mut self, batches: u32) -> Self {
        self.spec.prefetch = batches.max(1);
        self
    }

    /// Worker inits that may fail in a row, with none ready, before tasks fail (default 3).
    pub fn max_init_failures(mut self, n: u32) -> Self {
        self.spec.broker.max_init_failures = n.max(1);
        self
    }

    /// The first and the longest wait before a crashed worker is restarted.
    pub fn restart_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.spec.backoff_initial = initial;
        self.spec.backoff_max = max.max(initial);
        self
    }

    /// The largest message a peer may send, in bytes (default 256 MiB).
    pub fn max_message(mut self, bytes: i64) -> Self {
        self.spec.max_message = bytes;
        self
    }

    /// Also listens on TCP, for workers on other machines to join (and clients, for a
    /// standalone broker).
    pub fn tcp(mut self, listen: TcpListen) -> Self {
        self.spec.tcp = Some(listen);
        self
    }

    /// Bytes the broker hands a remote worker that asks before joining
    /// ([`crate::worker_runtime::fetch_welcome`]); see [`PoolSpec::welcome`].
    pub fn welcome(mut self, bytes: Vec<u8>) -> Self {
        self.spec.welcome = bytes;
        self
    }

    /// A task running longer than `limit` has its worker killed and restarted, and is
    /// charged a try; past `max_retries` its outcome is an [`crate::ErrorKind::Timeout`]
    /// error that names the limit, and the stream goes on.
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.check(!limit.is_zero(), "task_timeout must be more than zero");
        self.spec.task_timeout = Some(limit);
        self
    }

    /// Replaces a worker by a fresh process after it ran `n` tasks (spread by ±10 % from
    /// worker to worker, so they do not all restart at once). No task is lost or charged.
    pub fn max_tasks_per_worker(mut self, n: u64) -> Self {
        self.check(n > 0, "max_tasks_per_worker must be at least 1");
        self.spec.recycling.max_tasks = Some(n);
        self
    }

    /// Replaces a worker by a fresh process once its resident memory passes `bytes`
    /// (checked between tasks).
    pub fn max_worker_memory(mut self, bytes: u64) -> Self {
        self.check(bytes > 0, "max_worker_memory must be more than zero");
        self.spec.recycling.max_memory = Some(bytes);
        self
    }

    /// Replaces a worker by a fresh process after it served for `age` (spread by ±10 %).
    pub fn max_worker_age(mut self, age: Duration) -> Self {
        self.check(!age.is_zero(), "max_worker_age must be more than zero");
        self.spec.recycling.max_age = Some(age);
        self
    }

    /// Sets `name` to `value` in every worker process, `{slot}` replaced by its slot
    /// (`0..n`, kept across restarts; also in `ZEROTASQ_SLOT`, [`crate::worker_slot`]).
    pub fn worker_env(mut self, name: &str, value: &str) -> Self {
        self.spec.worker_env = self.with_env(|env| env.var(name, value));
        self
    }

    /// Gives worker `slot` the device `devices[slot % devices.len()]` in
    /// `CUDA_VISIBLE_DEVICES`: one model per GPU.
    pub fn devices<S: AsRef<str>>(mut self, devices: &[S]) -> Self {
        self.spec.worker_env = self.with_env(|env| env.devices(devices));
        self
    }

    /// Threads each worker's math libraries may start (`OMP_NUM_THREADS` and the like);
    /// by default the machine's cores divided by the workers. Variables the user set win.
    pub fn threads_per_worker(mut self, threads: usize) -> Self {
        self.spec.worker_env = self.with_env(|env| env.threads_per_worker(threads));
        self
    }

    fn check(&mut self, ok: bool, problem: &str) {
        if !ok && self.problem.is_none() {
            self.problem = Some(Error::Config(problem.into()));
        }
    }

    fn with_env(
        &mut self,
        change: impl FnOnce(WorkerEnv) -> Result<WorkerEnv, Error>,
    ) -> WorkerEnv {
        let env = std::mem::take(&mut self.spec.worker_env);
        match change(env.clone()) {
            Ok(changed) => changed,
            Err(e) => {
                self.problem.get_or_insert(e);
                env
            }
        }
    }

    /// Hands each worker up to `n` tasks at a time, run by one call of
    /// [`Worker::process_batch`] (batched inference); batches form from what is queued when
    /// a worker is free. The stream still yields one outcome per input.
    pub fn max_batch_size(mut self, n: u32) -> Self {
        self.check(n > 0, "max_batch_size must be at least 1");
        self.spec.batching.max_size = n;
        self
    }

    /// Lets a batch of fewer than `max_batch_size` tasks wait up to `wait` for more — never
    /// once the stream has sent all it has. Default: no wait.
    pub fn batch_wait(mut self, wait: Duration) -> Self {
        self.spec.batching.wait = wait;
        self
    }

    /// Fine tuning of batching (target work per batch, most items per batch).
    pub fn batching(mut self, target: Duration, max_items: usize) -> Self {
        self.spec.broker.target_batch = target;
        self.spec.broker.max_batch_items = max_items.max(1);
        self
    }

    /// Serves `/metrics` (Prometheus text format) and a live dashboard at `/` over HTTP on
    /// `addr` (`HOST:PORT`, loopback only; port 0 picks a free one, see
    /// [`RawPool::http_address`]). For another address, set [`HttpListen::allow_remote`]
    /// with [`PoolBuilder::http_listen`].
    pub fn http(self, addr: &str) -> Self {
        self.http_listen(HttpListen::local(addr))
    }

    /// Serves metrics and the dashboard as `listen` says (see [`PoolBuilder::http`]).
    pub fn http_listen(mut self, listen: HttpListen) -> Self {
        self.spec.http = Some(listen);
        self
    }

    /// Starts the pool: the broker thread and the worker processes (re-executions of this
    /// program, which must call [`crate::serve_if_worker`] first thing in `main`).
    pub fn build(mut self) -> Result<Pool<W>, Error> {
        if let Some(problem) = self.problem {
            return Err(problem);
        }
        let batching = self.spec.batching;
        if !batching.wait.is_zero() && batching.max_size == 0 {
            return Err(Error::Config("batch_wait needs max_batch_size".into()));
        }
        if self.window > 100_000 {
            return Err(Error::Config(
                "window must be at most 100000 (the sockets' high-water mark)".into(),
            ));
        }
        let processes = self.processes.unwrap_or(if self.threads > 0 {
            0
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        });
        if processes + self.threads == 0 {
            return Err(Error::Config("a pool needs at least one worker".into()));
        }
        if processes > 0 {
            let exe = std::path::PathBuf::from("/proc/self/exe");
            let (key, value) = entry_env(entry_offset::<W>());
            let stdin = codec::encode(&self.config)
                .map_err(|e| Error::Config(format!("cannot encode the worker config: {e}")))?;
            self.spec.processes = Some((
                processes,
                WorkerCommand {
                    program: exe,
                    args: std::env::args_os().skip(1).collect(),
                    env: vec![(key.into(), value.into())],
                    stdin,
                },
            ));
        }
        for _ in 0..self.threads {
            let config = self.config.clone();
            let backoff = (self.spec.backoff_initial, self.spec.backoff_max);
            self.spec.threads.push(Box::new(move |ctx, opts, stopping| {
                run_thread_worker::<W>(ctx, opts, config, stopping, backoff)
            }));
        }
        Ok(Pool {
            raw: RawPool::start(self.spec)?,
            window: self.window,
            _worker: PhantomData,
        })
    }
}

/// A thread worker: `init` (retried with back-off while it fails), then serve.
fn run_thread_worker<W: Worker>(
    ctx: &Context,
    mut opts: WorkerOptions,
    config: W::Config,
    stopping: Arc<AtomicBool>,
    (mut backoff, max): (Duration, Duration),
) {
    let base = opts.identity.clone();
    // A thread cannot be killed: time limits are for worker processes.
    opts.task_timeout = None;
    for attempt in 0u32.. {
        opts.identity = [&base[..], format!("-{attempt}").as_bytes()].concat();
        match init_worker::<W>(config.clone()) {
            Ok(worker) => match serve(ctx, &opts, &mut WorkerHandler(worker)) {
                // A fresh worker takes its place, at once.
                Ok(ServeEnd::Recycled) => continue,
                Ok(_) => return,
                Err(e) => {
                    tracing::error!("worker thread stopped: {e}");
                    return;
                }
            },
            Err(message) => {
                tracing::warn!("worker thread init failed: {message}");
                let _ = report_init_failure(ctx, &opts, &message);
            }
        }
        let until = std::time::Instant::now() + backoff;
        while std::time::Instant::now() < until {
            if stopping.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        backoff = (backoff * 2).min(max);
    }
}
