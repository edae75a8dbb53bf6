//! `zerotasq worker`: N adapters (the same `__adapter` processes `zerotasq map` starts)
//! joining a remote broker over TCP. Each is restarted with back-off when it exits — its
//! command died, or the broker went silent (restarted, network cut) — which is how workers
//! rejoin a restarted broker. Their command's stderr comes back on the events pipe and is
//! printed prefixed `[wN]`. A signal stops them all (exit 128 + signal).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use zerotasq::child::{worker_env, ENV_KEY_FILE, ENV_SERVER_KEY};
use zerotasq::supervisor::{ENV_IDENTITY, ENV_SLOT};
use zerotasq::worker_runtime::{hostname, WorkerOptions};
use zerotasq::Security;

use crate::adapter::AdapterArgs;
use crate::args::WorkerArgs;
use crate::events::{self, Event, ENV_EVENTS_FD};
use crate::keys::client_security;
use crate::run::{say, EXIT_USAGE};
use crate::signals;

/// A worker command still running after this long has started (as in `map`).
const START_GRACE: Duration = Duration::from_millis(150);
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// An adapter that ran this long before exiting gets its back-off reset.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
/// How often exited adapters are looked for.
const WATCH_EVERY: Duration = Duration::from_millis(50);

struct Slot {
    child: Option<(Child, Instant)>,
    generation: u32,
    backoff: Duration,
    restart_at: Option<Instant>,
}

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

    // Each adapter gets its own routing id, and the keys, through its environment.
    let opts = WorkerOptions {
        identity: Vec::new(),
        ..WorkerOptions::remote(&args.connect, Security::Insecure)
    };
    let mut env: Vec<(String, String)> = worker_env(&opts, None);
    env.push((ENV_EVENTS_FD.into(), events_fd.to_string()));
    if let (Security::Client { server, .. }, Some(key)) = (&security, &args.remote.key) {
        let key = std::path::absolute(key).unwrap_or_else(|_| key.clone());
        env.push((ENV_SERVER_KEY.into(), server.to_string()));
        env.push((ENV_KEY_FILE.into(), key.display().to_string()));
    }
    let adapter = AdapterArgs {
        separator: if args.null { 0 } else { b'\n' },
        timeout: args.timeout,
        grace: START_GRACE,
        command: args.command.clone(),
    }
    .to_args();
    let host = hostname();
    let spawn = |index: usize, generation: u32| -> std::io::Result<Child> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let identity = format!(
            "{host}-{}-{index}-{generation}-{nanos:08x}",
            std::process::id()
        );
        let mut command = Command::new("/proc/self/exe");
        command
            .args(&adapter)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env(ENV_IDENTITY, identity)
            .env(ENV_SLOT, index.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0);
        // SAFETY: only async-signal-safe calls (sigprocmask, signal, prctl).
        unsafe {
            command.pre_exec(|| {
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGPIPE] {
                    libc::signal(sig, libc::SIG_DFL);
                }
                // The adapter dies with us, and its command with it.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command.spawn()
    };

    let (tx, rx) = mpsc::channel();
    signals::forward(tx, |sig| sig);
    say(&format!(
        "zerotasq worker: {jobs} workers joining {}",
        args.connect
    ));
    let mut slots: Vec<Slot> = (0..jobs)
        .map(|_| Slot {
            child: None,
            generation: 0,
            backoff: BACKOFF_INITIAL,
            restart_at: Some(Instant::now()),
        })
        .collect();
    let sig = loop {
        let now = Instant::now();
        for (index, slot) in slots.iter_mut().enumerate() {
            if let Some((child, started)) = &mut slot.child {
                if let Ok(Some(status)) = child.try_wait() {
                    if started.elapsed() >= HEALTHY_RUN {
                        slot.backoff = BACKOFF_INITIAL;
                    }
                    say(&format!(
                        "zerotasq worker: [w{}] adapter ended ({status}); restarting in {}",
                        index + 1,
                        crate::duration::show(slot.backoff)
                    ));
                    slot.restart_at = Some(now + slot.backoff);
                    slot.backoff = (slot.backoff * 2).min(BACKOFF_MAX);
                    slot.child = None;
                }
            }
            if slot.restart_at.is_some_and(|at| now >= at) {
                slot.generation += 1;
                slot.restart_at = None;
                match spawn(index, slot.generation) {
                    Ok(child) => slot.child = Some((child, now)),
                    Err(e) => {
                        say(&format!("zerotasq worker: cannot start an adapter: {e}"));
                        slot.restart_at = Some(now + slot.backoff);
                        slot.backoff = (slot.backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
        match rx.recv_timeout(WATCH_EVERY) {
            Ok(sig) => break sig,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break libc::SIGTERM,
        }
    };
    for slot in &mut slots {
        if let Some((child, _)) = &mut slot.child {
            // The adapter's process group: the adapter and its command.
            // SAFETY: signals a process group we created.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
        }
    }
    say("zerotasq worker: interrupted; the workers are stopped");
    128 + sig
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
