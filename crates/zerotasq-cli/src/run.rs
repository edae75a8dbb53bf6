//! `zerotasq map`: starts a pool whose workers are adapters around the user's command,
//! opens the input, and hands both to a [`Run`] (`outcomes`), which waits until a worker has
//! started (or fails the run before reading any input) and streams the records through.
//!
//! Three threads matter: the run thread does the streaming; the events thread passes the
//! workers' stderr through ([`Monitor`]); the main thread waits for the run to end or for a
//! signal, and in both cases drops the pool, which kills and reaps every worker.

use std::fs::File;
use std::io::{BufReader, IsTerminal, Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use zerotasq::BrokerConfig;
use zerotasq::Link;
use zerotasq::WorkerCommand;
use zerotasq::{BrokerAccess, PoolSpec, RawPool, RemoteBroker};

use crate::adapter_args::AdapterArgs;
use crate::args::MapArgs;
use crate::events::{self, ENV_EVENTS_FD};
use crate::input::Records;
use crate::joblog::{JobLog, RunIdentity};
use crate::monitor::Monitor;
use crate::outcomes::Run;
use crate::progress::Progress;
use crate::signals;

/// A worker command still running after this long has started (see the adapter).
const START_GRACE: Duration = Duration::from_millis(150);

pub const EXIT_FAILED_TASKS: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// Set once a signal has come: the run thread then stops quietly.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Prints a line on stderr; a closed stderr must not stop the clean-up (`eprintln!` would
/// panic).
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

enum Msg {
    Done(i32),
    Signal(i32),
}

/// Where the tasks go: this run's own pool, or a standalone broker (`--connect`) whose
/// workers are elsewhere.
pub enum Access {
    Local(Box<RawPool>),
    Remote(RemoteBroker),
}

impl Access {
    /// The broker's figures; only a local pool's are known here.
    pub fn stats(&self) -> Option<zerotasq::BrokerStats> {
        match self {
            Access::Local(pool) => Some(pool.stats()),
            Access::Remote(_) => None,
        }
    }
}

impl BrokerAccess for Access {
    fn link(&self) -> &Link {
        match self {
            Access::Local(pool) => pool.link(),
            Access::Remote(remote) => remote.link(),
        }
    }
}

/// The run's own pool: `jobs` adapters around the command, with the run's controls.
fn pool_spec(
    args: &MapArgs,
    separator: u8,
    jobs: usize,
    events_fd: i32,
    settings: crate::controls::Settings,
) -> PoolSpec {
    let adapter = AdapterArgs {
        separator,
        grace: START_GRACE,
        warn_silent: args.controls.warn_silent,
        command: args.command.clone(),
    };
    PoolSpec {
        broker: BrokerConfig {
            max_retries: args.retries,
            ..BrokerConfig::default()
        },
        processes: Some((
            jobs,
            WorkerCommand {
                program: "/proc/self/exe".into(),
                args: adapter.to_args(),
                env: vec![(ENV_EVENTS_FD.into(), events_fd.to_string().into())],
                stdin: Vec::new(),
            },
        )),
        max_message: settings.max_message,
        task_timeout: settings.task_timeout,
        recycling: settings.recycling,
        worker_env: settings.worker_env,
        ..PoolSpec::default()
    }
}

/// Connects to a standalone broker (`--connect`).
fn connect(args: &MapArgs, endpoint: &str) -> Result<Access, String> {
    let security = crate::keys::client_security(endpoint, &args.remote)?;
    RemoteBroker::connect(endpoint, security, args.remote.allow_insecure_remote)
        .map(Access::Remote)
        .map_err(|e| e.to_string())
}

/// Runs `zerotasq map`; returns the exit status.
pub fn map(args: MapArgs) -> i32 {
    signals::block();
    let separator = if args.null { 0 } else { b'\n' };
    let jobs = args.jobs.map_or_else(
        || std::thread::available_parallelism().map_or(2, |n| n.get()),
        |j| j as usize,
    );
    let settings = match args.controls.settings() {
        Ok(settings) => settings,
        Err(message) => {
            say(&format!("zerotasq: {message}"));
            return EXIT_USAGE;
        }
    };
    let (reader, total_bytes) = match open_input(args.input.as_ref()) {
        Ok(input) => input,
        Err(message) => {
            say(&format!("zerotasq: {message}"));
            return EXIT_USAGE;
        }
    };
    let mut records = Records::new(reader, separator);
    // Before anything starts: a joblog from another run is refused with nothing written.
    let joblog = match &args.joblog {
        Some(path) => match JobLog::open(path, args.resume, &run_identity(&args), &mut records) {
            Ok(joblog) => Some(joblog),
            Err(message) => {
                say(&format!("zerotasq: {message}"));
                return EXIT_USAGE;
            }
        },
        None => None,
    };
    let show_progress = !args.no_progress && (args.progress || std::io::stderr().is_terminal());
    let progress = Progress::new(show_progress, total_bytes);
    let (pipe, events_fd) = match events::pipe() {
        Ok(pipe) => pipe,
        Err(e) => {
            say(&format!("zerotasq: cannot create a pipe: {e}"));
            return EXIT_USAGE;
        }
    };
    let monitor = Monitor::start(pipe, progress.clone());
    let spec = pool_spec(&args, separator, jobs, events_fd, settings);
    let max_init_failures = spec.broker.max_init_failures as u64;
    let access = match &args.connect {
        Some(endpoint) => connect(&args, endpoint),
        None => RawPool::start(spec)
            .map(|pool| Access::Local(Box::new(pool)))
            .map_err(|e| format!("cannot start the pool: {e}")),
    };
    let pool = match access {
        Ok(access) => Arc::new(Mutex::new(Some(access))),
        Err(message) => {
            progress.finish();
            say(&format!("zerotasq: {message}"));
            return EXIT_USAGE;
        }
    };

    let (tx, rx) = mpsc::channel();
    signals::forward(tx.clone(), Msg::Signal);
    let run = Run {
        pool: pool.clone(),
        monitor,
        progress: progress.clone(),
        separator,
        jobs,
        max_init_failures,
        input_is_file: total_bytes.is_some(),
        joblog: Mutex::new(joblog),
        args,
    };
    std::thread::Builder::new()
        .name("run".into())
        .spawn(move || {
            let code = run.run(records);
            let _ = tx.send(Msg::Done(code));
        })
        .expect("start the run thread");
    let code = match rx.recv() {
        Ok(Msg::Done(code)) => code,
        Ok(Msg::Signal(sig)) => {
            INTERRUPTED.store(true, Ordering::Release);
            progress.finish();
            128 + sig
        }
        Err(_) => EXIT_USAGE,
    };
    // Kills and reaps every worker and its command, whatever the run thread is doing.
    drop(pool.lock().map(|mut p| p.take()));
    if INTERRUPTED.load(Ordering::Acquire) {
        say("zerotasq: interrupted; the workers are stopped");
    }
    code
}

/// What a joblog names this run by: the command (or the broker, with `--connect`) and the
/// separator.
fn run_identity(args: &MapArgs) -> RunIdentity {
    let command = match &args.connect {
        Some(endpoint) => format!("--connect {endpoint}"),
        None => args
            .command
            .iter()
            .map(|arg| arg.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
    };
    RunIdentity {
        command,
        separator: if args.null { 0 } else { b'\n' },
    }
}

/// The input, buffered (a pack takes what is buffered without waiting for more).
pub type Reader = BufReader<Box<dyn Read + Send>>;
type Input = (Reader, Option<u64>);

/// The input and, when it is a regular file, its size (for the progress bar's ETA).
fn open_input(path: Option<&PathBuf>) -> Result<Input, String> {
    match path {
        Some(path) => {
            let file =
                File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let size = file
                .metadata()
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len());
            Ok((BufReader::with_capacity(256 << 10, Box::new(file)), size))
        }
        None => {
            let stdin = std::io::stdin();
            // SAFETY: fstat on our own stdin into a local buffer.
            let size = unsafe {
                let mut st: libc::stat = std::mem::zeroed();
                (libc::fstat(stdin.as_raw_fd(), &mut st) == 0
                    && st.st_mode & libc::S_IFMT == libc::S_IFREG)
                    .then_some(st.st_size as u64)
            };
            Ok((BufReader::with_capacity(256 << 10, Box::new(stdin)), size))
        }
    }
}
