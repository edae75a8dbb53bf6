//! `zerotasq worker`: N adapters (the same `__adapter` processes `zerotasq map` starts)
//! joining a remote broker over TCP. Each is restarted with back-off when it exits — its
//! command died, or the broker went silent (restarted, network cut) — which is how workers
//! rejoin a restarted broker. Their command's stderr comes back on the events pipe and is
//! printed prefixed `[wN]`. A signal stops them all (exit 128 + signal).

use std::io::{BufRead, BufReader, Write};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use zerotasq::child::{worker_env, ENV_KEY_FILE, ENV_SERVER_KEY};
use zerotasq::worker_runtime::{hostname, WorkerOptions};
use zerotasq::{fetch_welcome, Security};
use zerotasq::{SupervisorConfig, WorkerCommand, WorkerExit, WorkerProcesses};

use crate::adapter_args::AdapterArgs;
use crate::args::WorkerArgs;
use crate::controls::Settings;
use crate::events::{self, Event, ENV_EVENTS_FD};
use crate::keys::client_security;
use crate::run::{say, EXIT_USAGE};
use crate::signals;

/// A worker command still running after this long has started (as in `map`).
const START_GRACE: Duration = Duration::from_millis(150);
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Runs `zerotasq worker` until a signal; returns the exit status.
pub fn worker(args: WorkerArgs) -> i32 {
    signals::block();
    let security = match client_security(&args.connect, &args.remote) {
        Ok(security) => security,
        Err(message) => {
            say(&format!("zerotasq: {message}"));
            return EXIT_USAGE;
        }
    };
    let jobs = args.jobs.map_or_else(
        || std::thread::available_parallelism().map_or(2, |n| n.get()),
        |j| j as usize,
    );
    let (pipe, events_fd) = match events::pipe() {
        Ok(pipe) => pipe,
        Err(e) => {
            say(&format!("zerotasq: cannot create a pipe: {e}"));
            return EXIT_USAGE;
        }
    };
    std::thread::Builder::new()
        .name("events".into())
        .spawn(move || print_events(pipe))
        .expect("start the events thread");

    let settings = match args.controls.settings() {
        Ok(settings) => settings,
        Err(message) => {
            say(&format!("zerotasq: {message}"));
            return EXIT_USAGE;
        }
    };
    let (tx, rx) = mpsc::channel();
    signals::forward(tx, |sig| sig);
    say(&format!(
        "zerotasq worker: {jobs} workers joining {}",
        args.connect
    ));
    check_the_broker(&args.connect, security.clone());
    let config = adapters(&args, &security, jobs, events_fd, settings);
    let adapters = match WorkerProcesses::start(config, report) {
        Ok(adapters) => adapters,
        Err(e) => {
            say(&format!("zerotasq worker: cannot start the adapters: {e}"));
            return EXIT_USAGE;
        }
    };
    let sig = rx.recv().unwrap_or(libc::SIGTERM);
    // Kills each adapter's process group: the adapter and its command.
    adapters.stop();
    say("zerotasq worker: interrupted; the workers are stopped");
    128 + sig
}

/// `jobs` adapters (the same `__adapter` processes `zerotasq map` starts), each with its own
/// routing id, and the keys and the events pipe through its environment.
fn adapters(
    args: &WorkerArgs,
    security: &Security,
    jobs: usize,
    events_fd: i32,
    settings: Settings,
) -> SupervisorConfig {
    let opts = WorkerOptions {
        identity: Vec::new(),
        task_timeout: settings.task_timeout,
        recycling: settings.recycling,
        max_message: settings.max_message,
        ..WorkerOptions::remote(&args.connect, Security::Insecure)
    };
    let mut env: Vec<(String, String)> = worker_env(&opts, None);
    env.push((ENV_EVENTS_FD.into(), events_fd.to_string()));
    if let (Security::Client { server, .. }, Some(key)) = (security, &args.remote.key) {
        let key = std::path::absolute(key).unwrap_or_else(|_| key.clone());
        env.push((ENV_SERVER_KEY.into(), server.to_string()));
        env.push((ENV_KEY_FILE.into(), key.display().to_string()));
    }
    let adapter = AdapterArgs {
        separator: if args.null { 0 } else { b'\n' },
        grace: START_GRACE,
        warn_silent: args.controls.warn_silent,
        command: args.command.clone(),
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    SupervisorConfig {
        count: jobs,
        command: WorkerCommand {
            program: "/proc/self/exe".into(),
            args: adapter.to_args(),
            env: Vec::new(),
            stdin: Vec::new(),
        },
        worker_env: env,
        slot_env: settings.worker_env,
        // Unique per host and run, so routing ids never repeat at the broker.
        identity_prefix: format!("{}-{}-{nanos:08x}", hostname(), std::process::id()),
        backoff_initial: BACKOFF_INITIAL,
        backoff_max: BACKOFF_MAX,
        pids: Arc::new(Mutex::new(Vec::new())),
    }
}

/// Says so, once, when the broker does not answer within a few seconds (it is down, or it
/// refused our key — CURVE gives no other sign): the adapters would only go on retrying in
/// silence.
fn check_the_broker(endpoint: &str, security: Security) {
    const PATIENCE: Duration = Duration::from_secs(5);
    let opts = WorkerOptions::remote(endpoint, security);
    let _ = std::thread::Builder::new()
        .name("check".into())
        .spawn(move || {
            if let Err(e) = fetch_welcome(&zerotasq::Context::new(), &opts, PATIENCE) {
                say(&format!("zerotasq worker: {e}; still trying"));
            }
        });
}

fn report(exit: &WorkerExit) {
    say(&format!(
        "zerotasq worker: [w{}] adapter ended ({}); restarting in {}",
        exit.slot + 1,
        exit.description,
        crate::duration::show(exit.restart_in)
    ));
}

/// Prints the adapters' events: their command's stderr prefixed `[wN]`, deaths and
/// start-up failures.
fn print_events(pipe: std::fs::File) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if let Some(text) = Event::parse(&line).and_then(|e| e.human()) {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
    }
}
