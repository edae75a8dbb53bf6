//! The supervisor: starts local worker processes, sees each one's exit at once (a pidfd per
//! child, polled with the control sockets), tells the broker, and restarts it with back-off.
//!
//! Children cannot outlive the pool: each runs in its own process group (killed whole), gets
//! a parent-death signal (so a SIGKILLed parent takes them along), and is killed and reaped
//! when the pool stops.
//!
//! A pool's supervisor reports to its broker over a control socket (and takes `KillWorker`
//! from it); [`WorkerProcesses`] runs the same supervisor with no broker in the process, for
//! workers that join a broker elsewhere (the command line's `zerotasq worker`).

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::child::{ENV_IDENTITY, EXIT_RECYCLED, EXIT_TIMED_OUT};
use crate::error::Error;
use crate::protocol::Message;
use crate::slot_env::WorkerEnv;
use crate::transport::{poll, Pollable, Socket};

/// How to start one local worker process.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    /// The program to run.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Environment variables it gets beside the pool's own.
    pub env: Vec<(OsString, OsString)>,
    /// Written to the child's stdin, which is then closed (the worker's configuration).
    pub stdin: Vec<u8>,
}

/// What the supervisor needs to run.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Worker processes kept running, each in a slot of its own (`0..count`).
    pub count: usize,
    /// How each is started.
    pub command: WorkerCommand,
    /// Environment variables every child gets: endpoint, heartbeat settings…
    pub worker_env: Vec<(String, String)>,
    /// What each child gets for its slot: the slot, the user's variables, a device, thread
    /// limits.
    pub slot_env: WorkerEnv,
    /// Prefix of the children's routing ids; unique per pool (or per joining host and run).
    pub identity_prefix: String,
    /// The first restart's delay; it doubles with each quick exit of the same slot.
    pub backoff_initial: Duration,
    /// The longest delay between restarts.
    pub backoff_max: Duration,
    /// Where the supervisor publishes the pids of its live children.
    pub pids: Arc<Mutex<Vec<u32>>>,
}

/// A worker process that ended, as [`WorkerProcesses`] reports it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerExit {
    /// Its slot (`0..count`).
    pub slot: usize,
    /// How it ended: its pid and exit status or signal.
    pub description: String,
    /// When its slot's next process starts.
    pub restart_in: Duration,
}

/// Worker processes kept running by a supervisor thread, for a broker in another process:
/// each slot's process is restarted with back-off when it exits, and all are killed when
/// this is stopped or dropped.
pub struct WorkerProcesses {
    stop: Option<std::io::PipeWriter>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerProcesses {
    /// Starts `cfg.count` processes; `on_exit` hears of each exit, on the supervisor's
    /// thread.
    pub fn start(
        cfg: SupervisorConfig,
        mut on_exit: impl FnMut(&WorkerExit) + Send + 'static,
    ) -> Result<WorkerProcesses, Error> {
        let (reader, writer) = std::io::pipe().map_err(Error::io("create a stop pipe"))?;
        let thread = std::thread::Builder::new()
            .name("zerotasq-supervisor".into())
            .spawn(move || {
                if let Err(e) = run(cfg, reader, None, &mut on_exit) {
                    tracing::error!("the supervisor stopped: {e}");
                }
            })
            .map_err(Error::io("start the supervisor thread"))?;
        Ok(WorkerProcesses {
            stop: Some(writer),
            thread: Some(thread),
        })
    }

    /// Kills every process and waits for the supervisor to end.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        // A byte, not only the close: a pipe whose writer is gone polls as hung up, not
        // readable, and the supervisor would spin instead of stopping.
        if let Some(mut stop) = self.stop.take() {
            let _ = stop.write_all(b"x");
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WorkerProcesses {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// A child that ran at least this long before exiting had its back-off reset.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
/// Poll interval when the kernel offers no pidfd.
const FALLBACK_POLL: Duration = Duration::from_millis(20);

struct Slot {
    generation: u32,
    child: Option<(Child, Option<OwnedFd>, Vec<u8>, Instant)>,
    backoff: Duration,
    restart_at: Option<Instant>,
}

/// Runs until `stop` (the read end of a pipe) becomes readable — the pool wrote to it or
/// closed its end — then kills every child. `broker` is the control channel to the broker
/// in this process, if any; `on_exit` hears of each exit.
pub(crate) fn run(
    cfg: SupervisorConfig,
    stop: std::io::PipeReader,
    broker: Option<&Socket>,
    on_exit: &mut dyn FnMut(&WorkerExit),
) -> Result<(), Error> {
    let mut slots: Vec<Slot> = (0..cfg.count)
        .map(|_| Slot {
            generation: 0,
            child: None,
            backoff: cfg.backoff_initial,
            restart_at: Some(Instant::now()),
        })
        .collect();
    loop {
        let now = Instant::now();
        for (index, slot) in slots.iter_mut().enumerate() {
            if slot.child.is_none() && slot.restart_at.is_some_and(|at| at <= now) {
                slot.restart_at = None;
                spawn(&cfg, index, slot, broker)?;
            }
        }
        publish_pids(&cfg, &slots);
        let mut timeout = slots
            .iter()
            .filter_map(|s| s.restart_at)
            .min()
            .map(|at| at.saturating_duration_since(now));
        let mut items = vec![Pollable::Fd(stop.as_raw_fd())];
        items.extend(broker.map(Pollable::Socket));
        for slot in &slots {
            match &slot.child {
                Some((_, Some(fd), _, _)) => items.push(Pollable::Fd(fd.as_raw_fd())),
                Some((_, None, _, _)) => {
                    timeout = Some(timeout.map_or(FALLBACK_POLL, |t| t.min(FALLBACK_POLL)))
                }
                None => {}
            }
        }
        let readable = poll(&items, timeout)?;
        drop(items);
        if readable[0] {
            // The pool asked us to stop.
            kill_all(&mut slots);
            publish_pids(&cfg, &slots);
            return Ok(());
        }
        if let Some(broker) = broker.filter(|_| readable[1]) {
            while let Some(frames) = broker.recv(false)? {
                match Message::decode(&frames) {
                    Ok(Message::KillWorker { identity }) => {
                        if let Some((child, ..)) = slots
                            .iter()
                            .filter_map(|s| s.child.as_ref())
                            .find(|(_, _, id, _)| id == identity)
                        {
                            kill_group(child.id());
                        }
                    }
                    // It ran its init: its slot's back-off starts over, so workers killed
                    // after they started are replaced quickly however often it happens.
                    Ok(Message::ChildReady { identity }) => {
                        if let Some(slot) = slots
                            .iter_mut()
                            .find(|s| s.child.as_ref().is_some_and(|(_, _, id, _)| id == identity))
                        {
                            slot.backoff = cfg.backoff_initial;
                        }
                    }
                    _ => tracing::error!("supervisor: unexpected control message"),
                }
            }
        }
        reap(&cfg, &mut slots, broker, on_exit)?;
        publish_pids(&cfg, &slots);
    }
}

fn publish_pids(cfg: &SupervisorConfig, slots: &[Slot]) {
    let pids = slots
        .iter()
        .filter_map(|s| s.child.as_ref().map(|(child, ..)| child.id()))
        .collect();
    *cfg.pids.lock().expect("pids lock") = pids;
}

/// Notices exited children, reports them, and schedules their restart.
fn reap(
    cfg: &SupervisorConfig,
    slots: &mut [Slot],
    broker: Option<&Socket>,
    on_exit: &mut dyn FnMut(&WorkerExit),
) -> Result<(), Error> {
    let now = Instant::now();
    for (index, slot) in slots.iter_mut().enumerate() {
        let Some((child, _, identity, started)) = slot.child.as_mut() else {
            continue;
        };
        let Some(status) = child.try_wait().map_err(Error::io("wait for a worker"))? else {
            continue;
        };
        let pid = child.id();
        // A worker that left to be recycled, or ended itself over a task past its time
        // limit, was healthy: it is replaced at once, and its slot's back-off does not grow.
        let (description, planned) = match (status.code(), status.signal()) {
            (Some(EXIT_RECYCLED), _) => (format!("worker pid {pid} was recycled"), true),
            (Some(EXIT_TIMED_OUT), _) => (
                format!("worker pid {pid} ended itself: a task ran past its time limit"),
                true,
            ),
            (Some(code), _) => (format!("worker pid {pid} exited with status {code}"), false),
            (_, Some(sig)) => (
                format!("worker pid {pid} was killed by signal {sig}"),
                false,
            ),
            _ => (format!("worker pid {pid} ended"), false),
        };
        if planned {
            tracing::info!("{description}; replacing it");
        } else {
            tracing::warn!("{description}; restarting it");
        }
        // Its descendants go with it.
        kill_group(child.id());
        if let Some(broker) = broker {
            let news = Message::ChildExited {
                identity,
                status: &description,
            };
            let _ = broker.send(news.encode(), true);
        }
        if now.duration_since(*started) >= HEALTHY_RUN {
            slot.backoff = cfg.backoff_initial;
        }
        let restart_in = if planned {
            Duration::ZERO
        } else {
            slot.backoff
        };
        on_exit(&WorkerExit {
            slot: index,
            description,
            restart_in,
        });
        slot.restart_at = Some(now + restart_in);
        if !planned {
            slot.backoff = (slot.backoff * 2).min(cfg.backoff_max);
        }
        slot.child = None;
    }
    Ok(())
}

fn spawn(
    cfg: &SupervisorConfig,
    index: usize,
    slot: &mut Slot,
    broker: Option<&Socket>,
) -> Result<(), Error> {
    slot.generation += 1;
    let identity = format!("{}-{index}-{}", cfg.identity_prefix, slot.generation).into_bytes();
    let parent = std::process::id();
    let mut command = Command::new(&cfg.command.program);
    command
        .args(&cfg.command.args)
        .envs(cfg.command.env.iter().map(|(k, v)| (k, v)))
        .envs(cfg.worker_env.iter().map(|(k, v)| (k, v)))
        .env(ENV_IDENTITY, String::from_utf8_lossy(&identity).as_ref())
        .envs(cfg.slot_env.for_slot(index, cfg.count))
        .stdin(Stdio::piped())
        .process_group(0);
    // SAFETY: the closure only makes async-signal-safe system calls (sigprocmask, signal,
    // prctl, getppid, _exit).
    unsafe {
        command.pre_exec(move || {
            // A fresh signal state: the parent may block or ignore signals (the mask and
            // ignored dispositions survive exec), and the worker must receive SIGTERM.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGPIPE] {
                libc::signal(sig, libc::SIG_DFL);
            }
            // Die with the thread that started us (this supervisor, which lives as long as
            // the pool); SIGTERM lets the worker remove the pool's ipc directory first.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent as libc::pid_t {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(Error::io(format!(
        "start worker {}",
        cfg.command.program.display()
    )))?;
    if let Some(mut stdin) = child.stdin.take() {
        let config = cfg.command.stdin.clone();
        // A thread, so a child that never reads its stdin cannot block the supervisor.
        let _ = std::thread::Builder::new()
            .name("zerotasq-stdin".into())
            .spawn(move || {
                let _ = stdin.write_all(&config);
            });
    }
    let pidfd = pidfd_open(child.id());
    if let Some(broker) = broker {
        let news = Message::ChildStarted {
            identity: &identity,
        };
        let _ = broker.send(news.encode(), true);
    }
    slot.child = Some((child, pidfd, identity, Instant::now()));
    Ok(())
}

/// A file descriptor that becomes readable when the process exits (Linux ≥ 5.3).
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: a plain system call; on success it returns a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a fresh descriptor owned by no one else.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn kill_group(pid: u32) {
    // SAFETY: kill(2) with a negative pid signals the process group the child leads.
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
    }
}

fn kill_all(slots: &mut [Slot]) {
    for slot in slots.iter_mut() {
        if let Some((mut child, ..)) = slot.child.take() {
            kill_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
