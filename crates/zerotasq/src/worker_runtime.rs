//! The worker runtime every face shares: register with the broker, run tasks through a
//! [`Handler`], send results back, and keep heartbeats going from a thread of its own.
//!
//! Two threads: the caller's thread runs tasks; an I/O thread owns the socket to the broker,
//! forwards tasks and results over an in-process pair, sends heartbeats on time even while a
//! task runs for minutes, and notices a silent broker. A panic or an error in a task becomes
//! an error outcome for that task; the worker lives on.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, TaskError};
use crate::link::{max_payload, too_big};
use crate::protocol::{Message, ProtocolError, TaskBatch, VERSION};
use crate::transport::curve::Security;
use crate::transport::{Context, Frame, Kind, SendError, Socket};
use crate::worker_io::{self, Progress};
use crate::worker_limits::Recycling;
use crate::worker_limits::{RecycleCheck, RecycleReason};
use crate::worker_session::{Results, WorkerSession};

/// Results waiting beyond this many bytes are sent at once.
const FLUSH_BYTES: usize = 1 << 20;
/// Results are sent at least this often while a batch is being worked through.
const FLUSH_EVERY: Duration = Duration::from_millis(5);

/// Runs one task: reads the task's bytes, appends the output's bytes to `out`.
pub trait Handler {
    /// Runs one task: reads the task's bytes, appends the output's bytes to `out`.
    fn handle(&mut self, task: &[u8], out: &mut Vec<u8>) -> Result<(), TaskError>;

    /// Runs several tasks in one call, for a worker that declared a batch size
    /// ([`Batching`]): one outcome per task, in order, pushed onto `outcomes`. By default
    /// each task runs alone through [`Handler::handle`].
    fn handle_batch(&mut self, tasks: &[&[u8]], outcomes: &mut Vec<Result<Vec<u8>, TaskError>>) {
        for task in tasks {
            let mut out = Vec::new();
            outcomes.push(self.handle(task, &mut out).map(|()| out));
        }
    }

    /// Wraps the running of one batch of tasks. A face that must enter an interpreter
    /// (take Python's GIL) overrides it to do so once per batch instead of once per task.
    fn batch<R>(&mut self, run: impl FnOnce(&mut Self) -> R) -> R
    where
        Self: Sized,
    {
        run(self)
    }
}

impl<F> Handler for F
where
    F: FnMut(&[u8], &mut Vec<u8>) -> Result<(), TaskError>,
{
    fn handle(&mut self, task: &[u8], out: &mut Vec<u8>) -> Result<(), TaskError> {
        self(task, out)
    }
}

/// Where and how a worker joins a pool.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The broker's worker endpoint (`ipc://…`, `inproc://…`, `tcp://…`).
    pub endpoint: String,
    /// Routing id; unique per worker incarnation.
    pub identity: Vec<u8>,
    /// Batches this worker may hold at once (1 runs, the rest wait: hides the round trip).
    pub capacity: u32,
    /// How often the worker says it is alive (its broker uses the same).
    pub heartbeat_interval: Duration,
    /// Heartbeat intervals of silence after which the broker is taken for gone.
    pub liveness: u32,
    /// The largest message accepted from the broker, in bytes (-1: no limit).
    pub max_message: i64,
    /// CURVE client keys for a TCP broker; `Insecure` for local pools.
    pub security: Security,
    /// A task running longer is reported and the worker dies (to be restarted).
    pub task_timeout: Option<Duration>,
    /// When the worker leaves to be replaced by a fresh one.
    pub recycling: Recycling,
    /// Whether it takes tasks in batches of its own size ([`Handler::handle_batch`]).
    pub batching: Batching,
}

/// A worker that runs tasks in batches (a model's batched inference) declares it: the
/// broker then hands it up to `max_size` tasks at a time from what is queued, waiting up to
/// `wait` for a fuller batch — never once the client has sent all it has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Batching {
    /// Tasks per batch at most; 0 for a worker that takes tasks one by one.
    pub max_size: u32,
    /// How long a batch of fewer than `max_size` may wait for more tasks.
    pub wait: Duration,
}

impl WorkerOptions {
    /// A worker joining a broker elsewhere: a routing id naming this host and process, two
    /// batches of credit, the broker's default heartbeats, frames up to 256 MiB.
    pub fn remote(endpoint: &str, security: Security) -> WorkerOptions {
        let broker = crate::broker::BrokerConfig::default();
        WorkerOptions {
            endpoint: endpoint.to_string(),
            identity: remote_identity(),
            capacity: 2,
            heartbeat_interval: broker.heartbeat_interval,
            liveness: broker.liveness,
            max_message: 256 << 20,
            security,
            task_timeout: None,
            recycling: Recycling::default(),
            batching: Batching::default(),
        }
    }
}

/// How [`serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServeEnd {
    /// The broker told the worker to exit.
    Shutdown,
    /// The broker fell silent for `heartbeat_interval × liveness`.
    BrokerLost,
    /// The worker left to be replaced by a fresh process (recycling); the process should
    /// exit.
    Recycled,
}

/// Serves tasks until the broker says stop or goes silent. A broker that refuses this
/// worker (another protocol version) is [`Error::Refused`].
pub fn serve(
    ctx: &Context,
    opts: &WorkerOptions,
    handler: &mut impl Handler,
) -> Result<ServeEnd, Error> {
    install_panic_capture();
    let inner = format!("inproc://zerotasq-worker-{}", unique());
    let pair = ctx.socket(Kind::Pair, -1)?;
    pair.bind(&inner)?;
    let session = WorkerSession::join(ctx, opts)?;
    let io_pair = ctx.socket(Kind::Pair, -1)?;
    io_pair.connect(&inner)?;
    // Limits need the task thread's progress; without them tiny tasks pay nothing for it.
    let limited = opts.task_timeout.is_some() || opts.recycling.is_set();
    let progress = std::sync::Arc::new(Progress::new());
    let io_progress = progress.clone();
    let limit = opts.task_timeout;
    let io = std::thread::Builder::new()
        .name("zerotasq-worker-io".into())
        .spawn(move || {
            let limits = limited.then_some((&*io_progress, limit));
            worker_io::run(session, &io_pair, limits)
        })
        .map_err(Error::io("start the worker's I/O thread"))?;
    let mut tasks = TaskThread {
        pair: &pair,
        out: Vec::new(),
        progress: limited.then_some(&*progress),
        recycle: opts
            .recycling
            .is_set()
            .then(|| RecycleCheck::new(opts.recycling, std::process::id(), &opts.identity)),
        max_batch: opts.batching.max_size as usize,
        max_payload: max_payload(opts.max_message),
        timed: opts.task_timeout.is_some(),
    };
    let end = tasks.serve(handler);
    // The I/O thread has left its loop (it sent us the message we ended on), or will once
    // it reads our word to recycle.
    let _ = io.join();
    end
}

/// The task thread's side of [`serve`].
struct TaskThread<'a> {
    pair: &'a Socket,
    out: Vec<u8>,
    progress: Option<&'a Progress>,
    recycle: Option<RecycleCheck>,
    /// Tasks per call of [`Handler::handle_batch`]; 0: one task per [`Handler::handle`].
    max_batch: usize,
    /// The largest result the broker takes.
    max_payload: usize,
    /// Whether tasks have a time limit.
    timed: bool,
}

impl TaskThread<'_> {
    fn serve(&mut self, handler: &mut impl Handler) -> Result<ServeEnd, Error> {
        let mut recycling = false;
        loop {
            let wait = match (&self.recycle, recycling) {
                (Some(check), false) => check.deadline(),
                _ => None,
            };
            let frames = match wait {
                Some(at) => self
                    .pair
                    .recv_timeout(at.saturating_duration_since(Instant::now()))?,
                None => self.pair.recv(true)?,
            };
            let Some(frames) = frames else {
                // Idle past the age limit.
                if let Some(reason) = self.recycle.as_ref().and_then(|c| c.aged(Instant::now())) {
                    recycling = self.ask_to_recycle(reason)?;
                }
                continue;
            };
            match Message::decode(&frames) {
                // Once we asked to recycle, batches still on their way go back unstarted.
                Ok(Message::Tasks(_)) if recycling => {}
                Ok(Message::Tasks(batch)) => {
                    if let Some(reason) = handler.batch(|handler| self.run_batch(handler, batch))? {
                        recycling = self.ask_to_recycle(reason)?;
                    }
                    if self.out.capacity() > 1 << 20 {
                        self.out = Vec::new();
                    }
                }
                Ok(Message::Shutdown) => return Ok(ServeEnd::Shutdown),
                Ok(Message::Recycling) => return Ok(ServeEnd::Recycled),
                Ok(Message::Goodbye) => return Ok(ServeEnd::BrokerLost),
                Ok(Message::Fatal(why)) => return Err(Error::Refused(why.to_string())),
                Ok(other) => tracing::warn!("worker ignored {:?}", other.command()),
                Err(e) => tracing::warn!("worker dropped a malformed message: {e}"),
            }
        }
    }

    fn ask_to_recycle(&self, reason: RecycleReason) -> Result<bool, Error> {
        tracing::info!("recycling this worker: it {reason}");
        send_pair(
            self.pair,
            Message::Recycling
                .encode()
                .into_iter()
                .map(Frame::from)
                .collect(),
        )?;
        Ok(true)
    }

    /// Runs the tasks of one batch, sending results at least every [`FLUSH_EVERY`]; stops
    /// early, with the reason, when the worker is due for recycling (the tasks left go back
    /// unstarted).
    fn run_batch(
        &mut self,
        handler: &mut impl Handler,
        batch: TaskBatch<'_>,
    ) -> Result<Option<RecycleReason>, Error> {
        if self.max_batch > 0 {
            return self.run_grouped(handler, batch);
        }
        let mut writer = Results::default();
        let mut busy = Duration::ZERO;
        let mut flush_at = Instant::now() + FLUSH_EVERY;
        let mut due = None;
        for (id, task) in batch.iter() {
            if self.timed && !writer.is_empty() {
                // A task past its limit ends the process with the results not yet sent, and
                // their tasks would be charged a try: what is done goes out first.
                send_results(self.pair, std::mem::take(&mut writer), busy)?;
                busy = Duration::ZERO;
            }
            let started = Instant::now();
            if let Some(progress) = self.progress {
                progress.started(started);
            }
            self.out.clear();
            match run_one(handler, task, &mut self.out) {
                Ok(()) if self.out.len() > self.max_payload => {
                    writer.push_err(id, &too_big("result", self.out.len(), self.max_payload))
                }
                Ok(()) => writer.push_ok(id, &self.out),
                Err(e) => writer.push_err(id, &e),
            }
            let finished = Instant::now();
            if let Some(progress) = self.progress {
                progress.finished();
            }
            busy += finished - started;
            due = self.recycle.as_mut().and_then(|check| check.tasks_done(1));
            // Results go out every few milliseconds, and before they add up to a message
            // too big for the broker to take.
            if finished >= flush_at || due.is_some() || writer.byte_len() >= FLUSH_BYTES {
                send_results(self.pair, std::mem::take(&mut writer), busy)?;
                busy = Duration::ZERO;
                flush_at = finished + FLUSH_EVERY;
            }
            if due.is_some() {
                break;
            }
        }
        if !writer.is_empty() {
            send_results(self.pair, writer, busy)?;
        }
        Ok(due)
    }

    /// Runs a batch in calls of up to `max_batch` tasks ([`Handler::handle_batch`]); each
    /// call's outcomes go out as soon as it returns. The time limit applies to each call.
    fn run_grouped(
        &mut self,
        handler: &mut impl Handler,
        batch: TaskBatch<'_>,
    ) -> Result<Option<RecycleReason>, Error> {
        let tasks: Vec<(u64, &[u8])> = batch.iter().collect();
        let mut outcomes = Vec::new();
        for group in tasks.chunks(self.max_batch) {
            let inputs: Vec<&[u8]> = group.iter().map(|&(_, task)| task).collect();
            let started = Instant::now();
            if let Some(progress) = self.progress {
                progress.started_many(started, group.len());
            }
            run_many(handler, &inputs, &mut outcomes);
            let busy = started.elapsed();
            if let Some(progress) = self.progress {
                progress.finished_many(group.len());
            }
            let mut writer = Results::default();
            for (&(id, _), outcome) in group.iter().zip(&outcomes) {
                match outcome {
                    Ok(out) if out.len() > self.max_payload => {
                        writer.push_err(id, &too_big("result", out.len(), self.max_payload))
                    }
                    Ok(out) => writer.push_ok(id, out),
                    Err(e) => writer.push_err(id, e),
                }
                if writer.byte_len() >= FLUSH_BYTES {
                    send_results(self.pair, std::mem::take(&mut writer), busy)?;
                }
            }
            if !writer.is_empty() {
                send_results(self.pair, writer, busy)?;
            }
            let done = group.len() as u64;
            if let Some(reason) = self.recycle.as_mut().and_then(|c| c.tasks_done(done)) {
                return Ok(Some(reason));
            }
        }
        Ok(None)
    }
}

/// Serves a broker on another machine for as long as this process lives: when the broker
/// restarts, the network fails, or the broker forgets us (declared dead while cut off), it
/// joins again under a new routing id after a back-off, keeping the initialised handler.
/// Returns when the broker refuses us for good (another protocol version: an error), or
/// when the worker is due for recycling (`Ok(ServeEnd::Recycled)`: its process should end,
/// so that a fresh one takes its place).
pub fn serve_remote(
    ctx: &Context,
    opts: &WorkerOptions,
    mut handler: impl Handler,
) -> Result<ServeEnd, Error> {
    serve_remote_checked(ctx, opts, &mut handler, || Ok(()))
}

/// [`serve_remote`], asking `may_join` before every join, the first included; its error
/// ends the serving and is returned. A worker whose handler was built from what the broker
/// hands out (its welcome) checks there that it still serves the same pool.
pub fn serve_remote_checked(
    ctx: &Context,
    opts: &WorkerOptions,
    handler: &mut impl Handler,
    mut may_join: impl FnMut() -> Result<(), Error>,
) -> Result<ServeEnd, Error> {
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
            Ok(ServeEnd::Recycled) => return Ok(ServeEnd::Recycled),
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

/// Asks the broker for its pool's welcome bytes ([`crate::pool::PoolSpec::welcome`]) without
/// joining it: what a remote worker needs before its `init` (the Python face's pickled
/// worker definition). Asks again every `heartbeat_interval` while the broker is unreachable
/// or restarting. No answer within `patience` is [`Error::Unreachable`], naming the endpoint;
/// a broker that speaks another protocol version is [`Error::Refused`].
pub fn fetch_welcome(
    ctx: &Context,
    opts: &WorkerOptions,
    patience: Duration,
) -> Result<Vec<u8>, Error> {
    /// While no connection is up, sending is tried again this often.
    const RETRY: Duration = Duration::from_millis(50);
    let dealer = ctx.socket(Kind::Dealer, opts.max_message)?;
    // A Hello that never left must not hold up the close.
    dealer.set_linger(Duration::ZERO)?;
    if !opts.identity.is_empty() {
        dealer.set_identity(&opts.identity)?;
    }
    dealer.secure(&opts.security)?;
    // Queue nothing while no connection is up: Hellos must not pile up and be answered in
    // bulk once it is.
    dealer.set_connect_patience(patience)?;
    dealer.connect(&opts.endpoint)?;
    let deadline = Instant::now() + patience;
    let mut ask_at = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Unreachable(format!(
                "no answer from the broker at {} within {patience:?}: it is unreachable, or \
                 it refused our key (or this host's connections, over its cap per address)",
                opts.endpoint
            )));
        }
        if now >= ask_at {
            ask_at = match dealer.send(Message::Hello.encode(), false) {
                Ok(()) => now + opts.heartbeat_interval,
                Err(SendError::Other(e)) => return Err(e),
                Err(_) => now + RETRY,
            };
        }
        let wait = ask_at.min(deadline).saturating_duration_since(now);
        let Some(frames) = dealer.recv_timeout(wait)? else {
            continue;
        };
        match Message::decode(&frames) {
            Ok(Message::Welcome(bytes)) => return Ok(bytes.to_vec()),
            Ok(Message::Fatal(why)) => return Err(Error::Refused(why.to_string())),
            Err(ProtocolError::VersionMismatch { got }) => {
                return Err(Error::Refused(format!(
                    "the broker speaks protocol version {got}; this worker speaks version \
                     {VERSION}"
                )))
            }
            Ok(other) => tracing::debug!("waiting for Welcome, ignored {:?}", other.command()),
            Err(e) => tracing::warn!("dropped a malformed message from the broker: {e}"),
        }
    }
}

/// A routing id for a worker that joins from elsewhere: host, pid and time, so two never
/// collide.
pub fn remote_identity() -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("r-{}-{}-{nanos:x}", hostname(), std::process::id()).into_bytes()
}

fn send_results(pair: &Socket, results: Results, busy: Duration) -> Result<(), Error> {
    send_pair(pair, results.into_frames(busy).into())
}

fn send_pair(pair: &Socket, frames: Vec<Frame>) -> Result<(), Error> {
    pair.send(frames, true).map_err(|e| match e {
        SendError::Other(e) => e,
        _ => Error::Closed,
    })
}

/// Runs tasks as one batch (a worker that declared a batch size): one outcome per task. A
/// panic, or a count of outcomes that does not match, fails every task of the batch.
fn run_many(
    handler: &mut impl Handler,
    tasks: &[&[u8]],
    outcomes: &mut Vec<Result<Vec<u8>, TaskError>>,
) {
    outcomes.clear();
    CAPTURING.with(|c| *c.borrow_mut() = Some(None));
    let result = catch_unwind(AssertUnwindSafe(|| handler.handle_batch(tasks, outcomes)));
    let captured = CAPTURING.with(|c| c.borrow_mut().take()).flatten();
    let failure = match result {
        Err(payload) => {
            let (message, backtrace) =
                captured.unwrap_or_else(|| (panic_message(&*payload), String::new()));
            Some(TaskError::new(ErrorKind::Panicked, message).with_detail(backtrace))
        }
        Ok(()) if outcomes.len() != tasks.len() => Some(TaskError::new(
            ErrorKind::Failed,
            format!(
                "the batch of {} tasks got {} results; one result per task is needed",
                tasks.len(),
                outcomes.len()
            ),
        )),
        Ok(()) => None,
    };
    if let Some(error) = failure {
        outcomes.clear();
        outcomes.extend(tasks.iter().map(|_| Err(error.clone())));
    }
}

/// Runs one task, turning a panic into an error outcome with its backtrace.
fn run_one(handler: &mut impl Handler, task: &[u8], out: &mut Vec<u8>) -> Result<(), TaskError> {
    CAPTURING.with(|c| *c.borrow_mut() = Some(None));
    let result = catch_unwind(AssertUnwindSafe(|| handler.handle(task, out)));
    let captured = CAPTURING.with(|c| c.borrow_mut().take()).flatten();
    match result {
        Ok(outcome) => outcome,
        Err(payload) => {
            let (message, backtrace) =
                captured.unwrap_or_else(|| (panic_message(&*payload), String::new()));
            out.clear();
            Err(TaskError::new(ErrorKind::Panicked, message).with_detail(backtrace))
        }
    }
}

thread_local! {
    /// `Some` while a task runs on this thread: the panic hook stores the panic here
    /// instead of printing it.
    static CAPTURING: RefCell<Option<Option<(String, String)>>> = const { RefCell::new(None) };
}

/// Wraps the process's panic hook once: panics inside tasks are captured (message and
/// backtrace) for the error outcome; every other panic goes to the previous hook.
fn install_panic_capture() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let captured = CAPTURING.with(|c| {
                let mut slot = c.borrow_mut();
                match slot.as_mut() {
                    Some(place) => {
                        let location = info
                            .location()
                            .map(|l| format!(" at {}:{}", l.file(), l.line()))
                            .unwrap_or_default();
                        let message = format!("{}{location}", panic_message(info.payload()));
                        let backtrace = std::backtrace::Backtrace::force_capture().to_string();
                        *place = Some((message, backtrace));
                        true
                    }
                    None => false,
                }
            });
            if !captured {
                previous(info);
            }
        }));
    });
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

pub(crate) fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// This machine's name, for the broker's worker table.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}
