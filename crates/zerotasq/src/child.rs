//! The child side of a local worker process: the environment contract between the
//! supervisor and its children, and [`serve_if_worker`], the one line at the top of `main`
//! that turns a re-executed copy of the program into a worker (as procspawn does).
//!
//! The parent re-executes `/proc/self/exe`, which is the very same binary even if the file
//! was replaced on disk, and names the entry function by its offset from a marker function
//! in this crate: offsets inside one binary do not change between runs.

use std::io::Read;
use std::time::Duration;

use crate::error::Error;
use crate::transport::curve::{KeyPair, Security};
use crate::transport::Context;
use crate::worker::{init_worker, Worker, WorkerHandler};
use crate::worker_limits::Recycling;
use crate::worker_runtime::{serve, Batching, ServeEnd, WorkerOptions};
use crate::worker_session::report_init_failure;

/// Environment variable carrying a child's routing id.
pub const ENV_IDENTITY: &str = "ZEROTASQ_WORKER_ID";
/// Environment variable carrying the pid of the process whose supervisor started this worker.
pub(crate) const ENV_PARENT_PID: &str = "ZEROTASQ_PARENT_PID";
/// Environment variable carrying a local worker's slot (0-based, kept across restarts).
pub const ENV_SLOT: &str = "ZEROTASQ_SLOT";

/// This process's slot among its pool's local workers (`0..n`, kept across restarts), or
/// `None` outside a worker. Workers on another host number their own slots.
pub fn worker_slot() -> Option<usize> {
    std::env::var(ENV_SLOT).ok()?.parse().ok()
}
const ENV_ENTRY: &str = "ZEROTASQ_ENTRY";
const ENV_ENDPOINT: &str = "ZEROTASQ_ENDPOINT";
const ENV_HEARTBEAT_MS: &str = "ZEROTASQ_HEARTBEAT_MS";
const ENV_LIVENESS: &str = "ZEROTASQ_LIVENESS";
const ENV_CAPACITY: &str = "ZEROTASQ_CAPACITY";
const ENV_MAX_MESSAGE: &str = "ZEROTASQ_MAX_MESSAGE";
const ENV_IPC_DIR: &str = "ZEROTASQ_IPC_DIR";
const ENV_TASK_TIMEOUT_MS: &str = "ZEROTASQ_TASK_TIMEOUT_MS";
const ENV_MAX_TASKS: &str = "ZEROTASQ_MAX_TASKS_PER_WORKER";
const ENV_MAX_MEMORY: &str = "ZEROTASQ_MAX_WORKER_MEMORY";
const ENV_MAX_AGE_MS: &str = "ZEROTASQ_MAX_WORKER_AGE_MS";
const ENV_MAX_BATCH: &str = "ZEROTASQ_MAX_BATCH_SIZE";
const ENV_BATCH_WAIT_US: &str = "ZEROTASQ_BATCH_WAIT_US";
/// For a worker joining a CURVE endpoint: the broker's public key (Z85) …
pub const ENV_SERVER_KEY: &str = "ZEROTASQ_SERVER_KEY";
/// … and the path of this worker's `.key_secret` file.
pub const ENV_KEY_FILE: &str = "ZEROTASQ_KEY_FILE";

/// Exit status of a worker whose `init` failed.
pub const EXIT_INIT_FAILED: i32 = 3;
/// Exit status of a worker that lost its broker.
pub const EXIT_BROKER_LOST: i32 = 4;
/// Exit status of a worker started with a broken environment.
pub const EXIT_BAD_ENV: i32 = 2;
/// Exit status of a worker that ended itself because a task ran past its time limit.
pub const EXIT_TIMED_OUT: i32 = 5;
/// Exit status of a worker that left to be replaced by a fresh one (recycling).
pub const EXIT_RECYCLED: i32 = 6;

/// If this process was started as a ZeroTasQ worker, runs the worker and exits; otherwise
/// returns at once. Call it first thing in `main`, before anything that should only happen
/// in the parent:
///
/// ```no_run
/// // first line of `main`:
/// zerotasq::serve_if_worker();
/// // … then the program, which builds a `Pool` …
/// ```
pub fn serve_if_worker() {
    let Ok(entry) = std::env::var(ENV_ENTRY) else {
        return;
    };
    let Ok(offset) = entry.parse::<isize>() else {
        eprintln!("zerotasq: bad {ENV_ENTRY}={entry:?}");
        std::process::exit(EXIT_BAD_ENV);
    };
    let base = entry_marker as fn() -> i32 as usize as isize;
    // SAFETY: the parent computed `offset` from a `fn() -> i32` of this same binary (we are
    // `/proc/self/exe` of the parent), relative to the same marker function.
    let entry: fn() -> i32 = unsafe { std::mem::transmute::<isize, fn() -> i32>(base + offset) };
    std::process::exit(entry());
}

#[inline(never)]
fn entry_marker() -> i32 {
    std::hint::black_box(0)
}

/// The offset that names `run_process_worker::<W>` to a child.
pub(crate) fn entry_offset<W: Worker>() -> isize {
    run_process_worker::<W> as fn() -> i32 as usize as isize
        - entry_marker as fn() -> i32 as usize as isize
}

/// Environment variables for a child of the named entry.
pub(crate) fn entry_env(offset: isize) -> (String, String) {
    (ENV_ENTRY.to_string(), offset.to_string())
}

/// The environment a worker process needs to find its pool.
pub fn worker_env(
    opts: &WorkerOptions,
    ipc_dir: Option<&std::path::Path>,
) -> Vec<(String, String)> {
    let mut env = vec![
        (ENV_ENDPOINT.to_string(), opts.endpoint.clone()),
        (
            ENV_HEARTBEAT_MS.to_string(),
            opts.heartbeat_interval.as_millis().to_string(),
        ),
        (ENV_LIVENESS.to_string(), opts.liveness.to_string()),
        (ENV_CAPACITY.to_string(), opts.capacity.to_string()),
        (ENV_MAX_MESSAGE.to_string(), opts.max_message.to_string()),
    ];
    if let Some(dir) = ipc_dir {
        env.push((ENV_IPC_DIR.to_string(), dir.display().to_string()));
    }
    let limits = [
        (
            ENV_TASK_TIMEOUT_MS,
            opts.task_timeout.map(|t| t.as_millis() as u64),
        ),
        (ENV_MAX_TASKS, opts.recycling.max_tasks),
        (ENV_MAX_MEMORY, opts.recycling.max_memory),
        (
            ENV_MAX_AGE_MS,
            opts.recycling.max_age.map(|a| a.as_millis() as u64),
        ),
        (
            ENV_MAX_BATCH,
            Some(u64::from(opts.batching.max_size)).filter(|&n| n > 0),
        ),
        (
            ENV_BATCH_WAIT_US,
            Some(opts.batching.wait.as_micros() as u64).filter(|&n| n > 0),
        ),
    ];
    for (name, value) in limits {
        if let Some(value) = value {
            env.push((name.to_string(), value.to_string()));
        }
    }
    env
}

/// Reads the options the supervisor put in this process's environment.
pub fn options_from_env() -> Result<WorkerOptions, Error> {
    fn var(name: &str) -> Result<String, Error> {
        std::env::var(name).map_err(|_| Error::WorkerEnv(format!("{name} is not set")))
    }
    fn optional<T: std::str::FromStr>(name: &str) -> Result<Option<T>, Error> {
        match std::env::var(name) {
            Ok(_) => num(name).map(Some),
            Err(_) => Ok(None),
        }
    }
    fn num<T: std::str::FromStr>(name: &str) -> Result<T, Error> {
        let text = var(name)?;
        text.parse()
            .map_err(|_| Error::WorkerEnv(format!("{name}={text:?} is not a number")))
    }
    Ok(WorkerOptions {
        endpoint: var(ENV_ENDPOINT)?,
        identity: var(ENV_IDENTITY)?.into_bytes(),
        capacity: num(ENV_CAPACITY)?,
        heartbeat_interval: Duration::from_millis(num(ENV_HEARTBEAT_MS)?),
        liveness: num(ENV_LIVENESS)?,
        max_message: num(ENV_MAX_MESSAGE)?,
        security: security_from_env()?,
        task_timeout: optional::<u64>(ENV_TASK_TIMEOUT_MS)?.map(Duration::from_millis),
        recycling: Recycling {
            max_tasks: optional(ENV_MAX_TASKS)?,
            max_memory: optional(ENV_MAX_MEMORY)?,
            max_age: optional::<u64>(ENV_MAX_AGE_MS)?.map(Duration::from_millis),
        },
        batching: Batching {
            max_size: optional(ENV_MAX_BATCH)?.unwrap_or(0),
            wait: Duration::from_micros(optional(ENV_BATCH_WAIT_US)?.unwrap_or(0)),
        },
    })
}

/// CURVE client keys when both [`ENV_SERVER_KEY`] and [`ENV_KEY_FILE`] are set (a worker
/// joining a TCP endpoint); plain otherwise (local pools).
fn security_from_env() -> Result<Security, Error> {
    match (std::env::var(ENV_SERVER_KEY), std::env::var(ENV_KEY_FILE)) {
        (Ok(server), Ok(key_file)) => Ok(Security::Client {
            keys: KeyPair::read(std::path::Path::new(&key_file))?,
            server: server.parse()?,
        }),
        (Err(_), Err(_)) => Ok(Security::Insecure),
        _ => Err(Error::WorkerEnv(format!(
            "{ENV_SERVER_KEY} and {ENV_KEY_FILE} go together"
        ))),
    }
}

/// Prepares a worker process for its parent's death; call it first thing in a worker. A
/// worker that a supervisor started gets SIGTERM when the supervisor's thread ends, the
/// parent SIGKILLed included, and at once if that happened before this call; SIGTERM removes
/// the pool's private ipc directory, which the dead parent can no longer do, then exits.
pub fn prepare_worker_process() {
    if let Ok(dir) = std::env::var(ENV_IPC_DIR) {
        crate::ipc_dir::remove_on_sigterm(std::path::Path::new(&dir));
    }
    let parent = std::env::var(ENV_PARENT_PID)
        .ok()
        .and_then(|p| p.parse().ok());
    if let Some(parent) = parent {
        die_with_parent(parent);
    }
}

/// Arms the parent-death signal (SIGTERM), which the supervisor cannot do for us: it spawns
/// without running code in the child, so that a big parent does not pay for a fork.
fn die_with_parent(parent: libc::pid_t) {
    // SAFETY: plain system calls on this process's own signal state.
    unsafe {
        // A signal the parent ignores stays ignored across exec, and one it blocks stays
        // blocked: the worker must hear SIGTERM (and SIGINT, SIGHUP) whatever its parent does.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut current) == 0
                && current.sa_sigaction == libc::SIG_IGN
            {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
            tracing::warn!(
                "cannot arm the parent-death signal: {}",
                std::io::Error::last_os_error()
            );
        }
        // The parent may have died before prctl took effect: end as its death would.
        if libc::getppid() != parent {
            libc::raise(libc::SIGTERM);
        }
    }
}

/// Entry of a re-executed Rust worker: config from stdin, `init`, then serve.
fn run_process_worker<W: Worker>() -> i32 {
    prepare_worker_process();
    let opts = match options_from_env() {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("zerotasq worker: {e}");
            return EXIT_BAD_ENV;
        }
    };
    let mut config_bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut config_bytes) {
        eprintln!("zerotasq worker: cannot read its configuration: {e}");
        return EXIT_BAD_ENV;
    }
    let ctx = Context::new();
    let worker = crate::codec::decode::<W::Config>(&config_bytes)
        .map_err(|e| format!("cannot decode the worker configuration: {e}"))
        .and_then(init_worker::<W>);
    let worker = match worker {
        Ok(worker) => worker,
        Err(message) => {
            eprintln!("zerotasq worker: init failed: {message}");
            let _ = report_init_failure(&ctx, &opts, &message);
            return EXIT_INIT_FAILED;
        }
    };
    match serve(&ctx, &opts, &mut WorkerHandler(worker)) {
        Ok(ServeEnd::Shutdown) => 0,
        Ok(ServeEnd::Recycled) => EXIT_RECYCLED,
        Ok(ServeEnd::BrokerLost) => EXIT_BROKER_LOST,
        Err(e) => {
            eprintln!("zerotasq worker: {e}");
            EXIT_BROKER_LOST
        }
    }
}
