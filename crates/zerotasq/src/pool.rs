//! Pools: [`RawPool`] starts the broker thread, the supervisor and its local worker
//! processes, and in-process thread workers, all over byte payloads; [`Pool`] is its typed
//! Rust face over a [`Worker`], built with [`PoolBuilder`].
//!
//! Dropping a pool stops everything in bounded time: the supervisor kills and reaps its
//! children, the broker ends every open task as `Cancelled` and tells remaining workers to
//! exit, and the private ipc directory is removed.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::broker::{Broker, BrokerConfig, BrokerStats};
use crate::broker_loop::{self, BrokerSockets, Side};
use crate::child::{entry_env, entry_offset, worker_env};
use crate::client::{DecodeFn, EncodeFn, Stream};
use crate::codec;
use crate::connector::Connector;
use crate::error::Error;
use crate::ipc_dir::IpcDir;
use crate::link::{BrokerAccess, Link};
use crate::slot_env::WorkerEnv;
use crate::status::BrokerStatus;
use crate::supervisor::{self, SupervisorConfig, WorkerCommand};
use crate::transport::curve::{check_insecure, Security, ZapHandler};
use crate::transport::{Context, Kind, Socket};
use crate::worker::{init_worker, Worker, WorkerHandler};
use crate::worker_limits::Recycling;
use crate::worker_runtime::{serve, Batching, ServeEnd, WorkerOptions};
use crate::worker_session::report_init_failure;

/// How long a peer of a TCP endpoint may take over its handshake.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(3);

/// How long dropping a pool waits for thread workers still inside a task.
const THREAD_WORKER_GRACE: Duration = Duration::from_secs(2);

/// A thread worker that was started: its handle, and a channel that closes when it returns.
type RunningThreadWorker = (JoinHandle<()>, std::sync::mpsc::Receiver<()>);

/// Runs one in-process worker until the pool stops: given the pool's context, the worker's
/// options, and a flag that turns true when the pool stops.
pub type ThreadWorker = Box<dyn FnOnce(&Context, WorkerOptions, Arc<AtomicBool>) + Send>;

/// Everything [`RawPool::start`] needs.
pub struct PoolSpec {
    /// The broker's tuning: heartbeats, retries, batching.
    pub broker: BrokerConfig,
    /// Local worker processes: how many, and how to start one.
    pub processes: Option<(usize, WorkerCommand)>,
    /// Workers run as threads of this process (tests, benchmarks, cheap in-process work).
    pub threads: Vec<ThreadWorker>,
    /// Batches a worker may hold (credit).
    pub prefetch: u32,
    /// Largest frame a peer may send.
    pub max_message: i64,
    /// The first restart's delay after a worker exits; it doubles with each quick exit.
    pub backoff_initial: Duration,
    /// The longest delay between restarts.
    pub backoff_max: Duration,
    /// TCP endpoints for remote workers and clients.
    pub tcp: Option<TcpListen>,
    /// A task running longer than this on a worker is reported, its worker is killed and
    /// restarted, and the task is charged a try; past `max_retries` its outcome is a
    /// [`crate::ErrorKind::Timeout`] error naming the limit.
    pub task_timeout: Option<Duration>,
    /// When local workers leave to be replaced by fresh ones.
    pub recycling: Recycling,
    /// Whether local workers take tasks in batches of their own size.
    pub batching: Batching,
    /// What each local worker finds in its environment for its slot.
    pub worker_env: WorkerEnv,
    /// What the broker tells a worker that asks before joining
    /// ([`crate::worker_runtime::fetch_welcome`]), e.g. the Python face's pickled worker
    /// definition; it reaches only peers that passed authentication. Empty by default.
    pub welcome: Vec<u8>,
}

/// Where a pool listens on TCP, and how it authenticates peers there.
#[derive(Debug, Clone)]
pub struct TcpListen {
    /// Where remote workers join, e.g. `tcp://0.0.0.0:5555` (port 0: any free port).
    pub workers: Option<String>,
    /// Where clients of other programs connect (a standalone broker).
    pub clients: Option<String>,
    /// [`Security::Server`] (CURVE, the default of every face) or [`Security::Insecure`].
    pub security: Security,
    /// Plain TCP on a non-loopback address; refused unless set.
    pub allow_insecure_remote: bool,
}

/// The TCP endpoints a pool actually bound (ports resolved).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpEndpoints {
    /// Where remote workers join, if the pool listens for them.
    pub workers: Option<String>,
    /// Where clients of other programs connect, if the pool listens for them.
    pub clients: Option<String>,
}

impl Default for PoolSpec {
    fn default() -> Self {
        PoolSpec {
            broker: BrokerConfig::default(),
            processes: None,
            threads: Vec::new(),
            prefetch: 2,
            max_message: 256 << 20,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            tcp: None,
            task_timeout: None,
            recycling: Recycling::default(),
            batching: Batching::default(),
            worker_env: WorkerEnv::default(),
            welcome: Vec::new(),
        }
    }
}

/// A running pool over byte payloads: the engine the Rust, Python and command-line faces
/// share.
pub struct RawPool {
    /// How this pool's clients reach its broker.
    link: Link,
    worker_endpoint: String,
    /// Writing to these tells the supervisor, then the broker, to stop (pipes, not sockets:
    /// nothing queued on them can hold up the close).
    stop_supervisor: Mutex<Option<std::io::PipeWriter>>,
    stop_broker: Mutex<Option<std::io::PipeWriter>>,
    broker_thread: Option<JoinHandle<()>>,
    supervisor_thread: Option<JoinHandle<()>>,
    thread_workers: Mutex<Vec<RunningThreadWorker>>,
    stopping: Arc<AtomicBool>,
    stats: Arc<Mutex<BrokerStats>>,
    pids: Arc<Mutex<Vec<u32>>>,
    tcp_endpoints: TcpEndpoints,
    /// Answers CURVE authentication while the broker runs.
    zap: Option<ZapHandler>,
    ipc_dir: Option<IpcDir>,
}

impl RawPool {
    /// Starts the broker thread, the supervisor and its worker processes, and the thread
    /// workers; the pool is ready for streams when this returns (workers join as they start).
    pub fn start(spec: PoolSpec) -> Result<RawPool, Error> {
        static POOLS: AtomicU64 = AtomicU64::new(0);
        let n = POOLS.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}-{n}", std::process::id());
        let ctx = Context::new();
        let ipc_dir = IpcDir::create()?;
        let frontend = format!("inproc://zerotasq-{tag}-clients");
        let worker_endpoint = ipc_dir.endpoint();
        let inproc_workers = format!("inproc://zerotasq-{tag}-workers");

        let local_clients = broker_socket(&ctx, spec.max_message)?;
        local_clients.bind(&frontend)?;
        let local_workers = broker_socket(&ctx, spec.max_message)?;
        local_workers.bind(&worker_endpoint)?;
        local_workers.bind(&inproc_workers)?;
        let mut client_sockets = vec![local_clients];
        let mut worker_sockets = vec![local_workers];
        let (tcp_endpoints, zap) = match &spec.tcp {
            Some(tcp) => listen_tcp(&ctx, &spec, tcp, &mut client_sockets, &mut worker_sockets)?,
            None => (TcpEndpoints::default(), None),
        };
        let (broker_stop, stop_broker) =
            std::io::pipe().map_err(Error::io("create the broker's stop pipe"))?;
        let sockets = BrokerSockets {
            clients: Side::new(client_sockets),
            workers: Side::new(worker_sockets),
            control: ctx.socket(Kind::Pair, -1)?,
            stop: broker_stop,
        };
        let control = format!("inproc://zerotasq-{tag}-control");
        sockets.control.bind(&control)?;
        let supervisor_broker = ctx.socket(Kind::Pair, -1)?;
        // The broker stops on the pool's word; news of children still queued here is moot
        // by then, and must not hold up the close (set before connecting: the connection
        // copies the options).
        supervisor_broker.set_linger(Duration::ZERO)?;
        supervisor_broker.connect(&control)?;
        let (stop_reader, stop_writer) =
            std::io::pipe().map_err(Error::io("create the supervisor's stop pipe"))?;

        let stats = Arc::new(Mutex::new(BrokerStats::default()));
        let pids = Arc::new(Mutex::new(Vec::new()));
        let broker_alive = Arc::new(AtomicBool::new(true));
        let broker_thread = {
            let stats = stats.clone();
            let alive = broker_alive.clone();
            let broker = Broker::new(spec.broker.clone(), std::time::Instant::now())
                .with_welcome(spec.welcome.into());
            std::thread::Builder::new()
                .name("zerotasq-broker".into())
                .spawn(move || {
                    if let Err(e) = broker_loop::run(broker, sockets, stats) {
                        tracing::error!("the broker stopped: {e}");
                    }
                    alive.store(false, Ordering::Release);
                })
                .map_err(Error::io("start the broker thread"))?
        };

        let worker_opts = |endpoint: &str, identity: String| WorkerOptions {
            endpoint: endpoint.to_string(),
            identity: identity.into_bytes(),
            capacity: spec.prefetch,
            heartbeat_interval: spec.broker.heartbeat_interval,
            liveness: spec.broker.liveness,
            max_message: spec.max_message,
            security: Security::Insecure,
            task_timeout: spec.task_timeout,
            recycling: spec.recycling,
            batching: spec.batching,
        };
        let (count, command) = match spec.processes {
            Some((count, command)) => (count, Some(command)),
            None => (0, None),
        };
        let supervisor_cfg = SupervisorConfig {
            count,
            command: command.unwrap_or_else(|| WorkerCommand {
                program: "/bin/false".into(),
                args: Vec::new(),
                env: Vec::new(),
                stdin: Vec::new(),
            }),
            worker_env: worker_env(
                &worker_opts(&worker_endpoint, String::new()),
                Some(ipc_dir.path()),
            ),
            slot_env: spec.worker_env.clone(),
            identity_prefix: format!("{tag}-p"),
            backoff_initial: spec.backoff_initial,
            backoff_max: spec.backoff_max,
            pids: pids.clone(),
        };
        let supervisor_thread = std::thread::Builder::new()
            .name("zerotasq-supervisor".into())
            .spawn(move || {
                let control = Some(&supervisor_broker);
                if let Err(e) = supervisor::run(supervisor_cfg, stop_reader, control, &mut |_| {}) {
                    tracing::error!("the supervisor stopped: {e}");
                }
            })
            .map_err(Error::io("start the supervisor thread"))?;

        let stopping = Arc::new(AtomicBool::new(false));
        let thread_workers = start_thread_workers(spec.threads, &ctx, &stopping, |index| {
            worker_opts(&inproc_workers, format!("{tag}-t{index}"))
        })?;

        Ok(RawPool {
            link: Link::local(ctx.clone(), frontend, spec.max_message, broker_alive),
            worker_endpoint,
            stop_supervisor: Mutex::new(Some(stop_writer)),
            stop_broker: Mutex::new(Some(stop_broker)),
            broker_thread: Some(broker_thread),
            supervisor_thread: Some(supervisor_thread),
            thread_workers: Mutex::new(thread_workers),
            stopping,
            stats,
            pids,
            tcp_endpoints,
            zap,
            ipc_dir: Some(ipc_dir),
        })
    }

    /// The endpoint other workers on this machine can connect to, to join the pool.
    pub fn worker_endpoint(&self) -> &str {
        &self.worker_endpoint
    }

    /// The TCP endpoints this pool listens on, if any.
    pub fn tcp_endpoints(&self) -> &TcpEndpoints {
        &self.tcp_endpoints
    }

    /// Pids of the local worker processes alive now.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.pids.lock().expect("pids lock").clone()
    }

    /// The broker's counters, as of the broker's latest loop iteration.
    /// The broker's counters, as of its last round of sends.
    pub fn stats(&self) -> BrokerStats {
        self.stats.lock().expect("stats lock").clone()
    }

    /// The broker's status (clients, workers, queue depths, rates), asked of its thread —
    /// an in-process round trip; an error only if the broker has stopped.
    pub fn status(&self) -> Result<BrokerStatus, Error> {
        self.link.status()
    }
}

impl BrokerAccess for RawPool {
    fn link(&self) -> &Link {
        &self.link
    }
}

impl Drop for RawPool {
    fn drop(&mut self) {
        // The supervisor first (its children die), then the broker (open tasks are cancelled).
        signal_stop(&self.stop_supervisor);
        if let Some(handle) = self.supervisor_thread.take() {
            let _ = handle.join();
        }
        signal_stop(&self.stop_broker);
        if let Some(handle) = self.broker_thread.take() {
            let _ = handle.join();
        }
        self.stopping.store(true, Ordering::Release);
        let workers = std::mem::take(self.thread_workers.get_mut().expect("workers lock"));
        for (handle, done) in workers {
            // A thread stuck in a long task is left to finish on its own.
            if done.recv_timeout(THREAD_WORKER_GRACE).is_ok() {
                let _ = handle.join();
            }
        }
        self.zap.take();
        self.ipc_dir.take();
    }
}

/// A ROUTER socket of the broker. It lingers for nothing: when the broker stops, local
/// workers are being killed and remote peers notice the silence, so a message still queued
/// for a peer whose connection is going away must not hold up the close. Set before any
/// bind: each connection copies the socket's options when it is made, so a linger set at
/// the stop came too late for the connections already made (one close in fifty or so waited
/// out the default 200 ms).
fn broker_socket(ctx: &Context, max_message: i64) -> Result<Socket, Error> {
    let socket = ctx.socket(Kind::Router, max_message)?;
    socket.set_linger(Duration::ZERO)?;
    Ok(socket)
}

/// Writes to a stop pipe. A byte, not only the close: a process forked from this one may
/// hold the write end too, and then closing ours would not be seen.
fn signal_stop(pipe: &Mutex<Option<std::io::PipeWriter>>) {
    if let Some(mut writer) = pipe.lock().ok().and_then(|mut w| w.take()) {
        use std::io::Write;
        let _ = writer.write_all(b"x");
    }
}

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

/// Binds the pool's TCP endpoints (with CURVE and its ZAP handler, or plain where allowed)
/// beside its local sockets; the endpoints bound (ports resolved), and the ZAP handler.
fn listen_tcp(
    ctx: &Context,
    spec: &PoolSpec,
    tcp: &TcpListen,
    client_sockets: &mut Vec<Socket>,
    worker_sockets: &mut Vec<Socket>,
) -> Result<(TcpEndpoints, Option<ZapHandler>), Error> {
    // Each peer holds a descriptor: a broker open to a network must not run out of them at
    // the common soft limit of 1024 while the hard limit allows more.
    raise_descriptor_limit();
    let mut tcp_endpoints = TcpEndpoints::default();
    let mut zap = None;
    match &tcp.security {
        Security::Server { allowed, .. } => {
            zap = Some(ZapHandler::start(ctx, allowed)?);
        }
        Security::Insecure => {
            for endpoint in tcp.workers.iter().chain(&tcp.clients) {
                check_insecure(endpoint, tcp.allow_insecure_remote)?;
            }
        }
        Security::Client { .. } => {
            return Err(Error::Config("a pool listens with server keys".into()))
        }
    }
    let listen = |endpoint: &str| -> Result<(Socket, String), Error> {
        let socket = broker_socket(ctx, spec.max_message)?;
        socket.secure(&tcp.security)?;
        let interval = spec.broker.heartbeat_interval;
        socket.detect_dead_peers(interval, interval * spec.broker.liveness)?;
        socket.set_handshake_limit(HANDSHAKE_LIMIT)?;
        socket.bind(endpoint)?;
        let bound = socket.last_endpoint()?;
        Ok((socket, bound))
    };
    if let Some(endpoint) = &tcp.workers {
        let (socket, bound) = listen(endpoint)?;
        worker_sockets.push(socket);
        tcp_endpoints.workers = Some(bound);
    }
    if let Some(endpoint) = &tcp.clients {
        let (socket, bound) = listen(endpoint)?;
        client_sockets.push(socket);
        tcp_endpoints.clients = Some(bound);
    }
    Ok((tcp_endpoints, zap))
}

/// Starts the thread workers, each with its options; their handles, and for each a channel
/// that closes when it returns.
fn start_thread_workers(
    threads: Vec<ThreadWorker>,
    ctx: &Context,
    stopping: &Arc<AtomicBool>,
    opts: impl Fn(usize) -> WorkerOptions,
) -> Result<Vec<RunningThreadWorker>, Error> {
    let mut started = Vec::new();
    for (index, run) in threads.into_iter().enumerate() {
        let opts = opts(index);
        let ctx = ctx.clone();
        let stopping = stopping.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(format!("zerotasq-worker-{index}"))
            .spawn(move || {
                run(&ctx, opts, stopping);
                let _ = done_tx.send(());
            })
            .map_err(Error::io("start a worker thread"))?;
        started.push((handle, done_rx));
    }
    Ok(started)
}

/// Raises this process's soft limit on open descriptors to its hard limit.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                ..limit
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                tracing::warn!("cannot raise the limit on open descriptors");
            }
        }
    }
}
