//! Pools: [`RawPool`] starts the broker thread, the supervisor and its local worker
//! processes, and in-process thread workers, all over byte payloads (its typed Rust face,
//! `Pool`, is in `typed_pool`).
//!
//! Dropping a pool stops everything in bounded time: the supervisor kills and reaps its
//! children, the broker ends every open task as `Cancelled` and tells remaining workers to
//! exit, and the private ipc directory is removed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::broker::{Broker, BrokerConfig, BrokerStats};
use crate::broker_loop::{self, BrokerSockets, Side};
use crate::child::worker_env;
use crate::error::Error;
use crate::http::{HttpBound, HttpListen, HttpServer};
use crate::ipc_dir::IpcDir;
use crate::link::{BrokerAccess, Link};
use crate::slot_env::WorkerEnv;
use crate::status::BrokerStatus;
use crate::supervisor::{self, SupervisorConfig, WorkerCommand};
use crate::transport::curve::{check_insecure, Security, ZapHandler};
use crate::transport::{Context, Kind, Socket};
use crate::worker_limits::Recycling;
use crate::worker_runtime::{Batching, WorkerOptions};

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
    /// How many connections one peer address (an IPv4 address, or an IPv6 /64) may hold at
    /// once on each TCP endpoint; more are closed as they are accepted, so a stranger on one
    /// address cannot take every descriptor. 0: no cap. Needs the built-in libzmq (not
    /// `system-libzmq`). Default [`PoolSpec::MAX_CONNECTIONS_PER_ADDRESS`].
    pub max_connections_per_address: u32,
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
    /// Serve `/metrics` (Prometheus) and a live dashboard over HTTP here.
    pub http: Option<HttpListen>,
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

impl PoolSpec {
    /// The default cap on one address's connections to a TCP endpoint: a host running
    /// `zerotasq worker -j 64` holds 64 on the workers' endpoint, and a client holds one.
    pub const MAX_CONNECTIONS_PER_ADDRESS: u32 = 256;

    /// The options of this pool's workers (their endpoint and identity left empty).
    fn worker_options(&self) -> WorkerOptions {
        WorkerOptions {
            endpoint: String::new(),
            identity: Vec::new(),
            capacity: self.prefetch,
            heartbeat_interval: self.broker.heartbeat_interval,
            liveness: self.broker.liveness,
            max_message: self.max_message,
            security: Security::Insecure,
            task_timeout: self.task_timeout,
            recycling: self.recycling,
            batching: self.batching,
        }
    }
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
            max_connections_per_address: PoolSpec::MAX_CONNECTIONS_PER_ADDRESS,
            task_timeout: None,
            recycling: Recycling::default(),
            batching: Batching::default(),
            worker_env: WorkerEnv::default(),
            welcome: Vec::new(),
            http: None,
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
    /// The metrics and dashboard endpoint, if asked for.
    http: Option<HttpServer>,
    /// Answers CURVE authentication while the broker runs.
    zap: Option<ZapHandler>,
    ipc_dir: Option<IpcDir>,
}

impl RawPool {
    /// Starts the broker thread, the supervisor and its worker processes, and the thread
    /// workers; the pool is ready for streams when this returns (workers join as they start).
    pub fn start(spec: PoolSpec) -> Result<RawPool, Error> {
        let template = spec.worker_options();
        static POOLS: AtomicU64 = AtomicU64::new(0);
        let n = POOLS.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}-{n}", std::process::id());
        let ctx = Context::new();
        // First: a bad address or a port in use fails the pool before anything starts.
        let http = spec.http.as_ref().map(HttpBound::bind).transpose()?;
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
            ..template.clone()
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
        let supervisor_thread = start_supervisor(supervisor_cfg, stop_reader, supervisor_broker)?;

        let stopping = Arc::new(AtomicBool::new(false));
        let thread_workers = start_thread_workers(spec.threads, &ctx, &stopping, |index| {
            worker_opts(&inproc_workers, format!("{tag}-t{index}"))
        })?;

        let link = Link::local(ctx.clone(), frontend, spec.max_message, broker_alive);
        let http = match http {
            Some(bound) => Some(bound.serve(link.clone(), stats.clone())?),
            None => None,
        };
        Ok(RawPool {
            link,
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
            http,
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

    /// Where the pool serves its metrics and dashboard over HTTP, if it does (port
    /// resolved).
    pub fn http_address(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().map(HttpServer::addr)
    }

    /// Pids of the local worker processes alive now.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.pids.lock().expect("pids lock").clone()
    }

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
        // The HTTP endpoint first, which asks the broker; then the supervisor (its children
        // die), then the broker (open tasks are cancelled).
        self.http.take();
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
        let mut socket = broker_socket(ctx, spec.max_message)?;
        socket.secure(&tcp.security)?;
        let interval = spec.broker.heartbeat_interval;
        socket.detect_dead_peers(interval, interval * spec.broker.liveness)?;
        socket.set_handshake_limit(HANDSHAKE_LIMIT)?;
        socket.cap_connections_per_address(spec.max_connections_per_address)?;
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

/// Starts the supervisor's thread, reporting to the broker over `control`.
fn start_supervisor(
    cfg: SupervisorConfig,
    stop: std::io::PipeReader,
    control: Socket,
) -> Result<JoinHandle<()>, Error> {
    std::thread::Builder::new()
        .name("zerotasq-supervisor".into())
        .spawn(move || {
            if let Err(e) = supervisor::run(cfg, stop, Some(&control), &mut |_| {}) {
                tracing::error!("the supervisor stopped: {e}");
            }
        })
        .map_err(Error::io("start the supervisor thread"))
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
