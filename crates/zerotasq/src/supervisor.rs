//! The supervisor: starts local worker processes, sees each one's exit at once (a pidfd per
//! child, polled with the control sockets), tells the broker, and restarts it with back-off.
//!
//! Children cannot outlive the pool: each runs in its own process group (killed whole), arms
//! a parent-death signal as it starts (so a SIGKILLed parent takes them along), and is killed
//! and reaped when the pool stops.
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

use crate::child::{ENV_IDENTITY, ENV_PARENT_PID, EXIT_RECYCLED, EXIT_TIMED_OUT};
use crate::error::Error;
use crate::protocol::Message;
use crate::slot_env::WorkerEnv;
use crate::transport::{poll, Pollable, Socket};

/// How to start one local worker process. The program must call
/// [`crate::child::prepare_worker_process`] first thing (every worker entry of this crate and
/// of its faces does): that is where it arms the signal that ends it with its parent.
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

/// The routing id of a slot's child: the prefix, `-s` and the slot, `-g` and how many
/// children the slot has started, this one included — so the broker can tell a supervised
/// worker's slot and restarts from its id alone, wherever its supervisor runs.
fn supervised_identity(prefix: &str, slot: usize, generation: u32) -> Vec<u8> {
    format!("{prefix}-s{slot}-g{generation}").into_bytes()
}

/// A supervised worker's slot and generation (see [`supervised_identity`]); `None` for a
/// worker started otherwise.
pub(crate) fn supervised_slot(identity: &[u8]) -> Option<(usize, u32)> {
    let text = std::str::from_utf8(identity).ok()?;
    let mut parts = text.rsplitn(3, '-');
    let generation = parts.next()?.strip_prefix('g')?.parse().ok()?;
    let slot = parts.next()?.strip_prefix('s')?.parse().ok()?;
    parts.next()?;
    Some((slot, generation))
}

fn spawn(
    cfg: &SupervisorConfig,
    index: usize,
    slot: &mut Slot,
    broker: Option<&Socket>,
) -> Result<(), Error> {
    slot.generation += 1;
    let identity = supervised_identity(&cfg.identity_prefix, index, slot.generation);
    let mut command = Command::new(&cfg.command.program);
    command
        .args(&cfg.command.args)
        .envs(cfg.command.env.iter().map(|(k, v)| (k, v)))
        .envs(cfg.worker_env.iter().map(|(k, v)| (k, v)))
        .env(ENV_IDENTITY, String::from_utf8_lossy(&identity).as_ref())
        .env(ENV_PARENT_PID, std::process::id().to_string())
        .envs(cfg.slot_env.for_slot(index, cfg.count))
        .stdin(Stdio::piped())
        .process_group(0);
    // No `pre_exec`: without one, std spawns with posix_spawn (vfork semantics), whose cost
    // does not grow with this process. A fork would copy the page tables of a caller that
    // holds gigabytes (a model, a dataset) once per worker: 70 ms per worker at 4 GB here.
    // The child arms its parent-death signal itself (`child::prepare_worker_process`).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_supervised_workers_slot_and_generation_are_read_back_from_its_id() {
        let id = supervised_identity("host-a-12-0f3e", 7, 3);
        assert_eq!(supervised_slot(&id), Some((7, 3)));
        // A remote worker's id (host, pid, time in hex, session) is not a supervised one.
        assert_eq!(supervised_slot(b"r-host-12-2af9e-0"), None);
        assert_eq!(supervised_slot(b"123-0-t1-0"), None);
        assert_eq!(supervised_slot(b"s1-g2"), None, "no prefix");
    }
}
