//! The adapter: a local worker process of the engine that owns one long-lived child running
//! the user's command and speaks the line protocol to it. The CLI's pool starts it as
//! `zerotasq __adapter …` ([`AdapterArgs`]); `{slot}` in the command's arguments is
//! its slot. Its limits (time per task, recycling) come with the engine's worker options.
//!
//! It is one event loop over the broker socket and the child's stdout. Unlike the engine's
//! per-task `serve`, it pipelines: every task of a batch is written to the child at once and
//! the answers are matched in order as they come, so tiny tasks cost a pipe write, not a
//! round trip each. Any failure of the child (exit, crash, per-task timeout, output nobody
//! asked for) ends the adapter with a non-zero status after reporting why on the events
//! pipe; the engine then re-queues its tasks and restarts it with back-off, and a task that
//! has killed `--retries` workers becomes an error outcome.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use zerotasq::child::ENV_SLOT;
use zerotasq::child::{options_from_env, prepare_worker_process, EXIT_BROKER_LOST};
use zerotasq::child::{EXIT_BAD_ENV, EXIT_INIT_FAILED, EXIT_RECYCLED, EXIT_TIMED_OUT};
use zerotasq::worker_limits::{RecycleCheck, RecycleReason};
use zerotasq::worker_runtime::WorkerOptions;
use zerotasq::worker_session::{report_init_failure, Incoming, Results, WorkerSession};
use zerotasq::Context;
use zerotasq::{ErrorKind, TaskError};

use crate::adapter_args::{AdapterArgs, ADAPTER_ARG};
use crate::events::{Event, Sender};
use crate::payload::{after_records, decode_task, encode_result, ResultHeader, SPLIT_ON_DEATH};
use crate::wake::Wake;
use crate::worker_command::{StartCheck, WorkerProcess, STDERR_GRACE};

/// Exit status of an adapter whose worker command failed.
const EXIT_WORKER_DIED: i32 = 1;
/// Answers are sent at least this often while a batch is being worked through.
const FLUSH_EVERY: Duration = Duration::from_millis(5);
/// Answers waiting beyond this many bytes are sent at once.
const FLUSH_BYTES: usize = 1 << 20;

/// The error for a task that is not a `zerotasq map` pack of lines (say, a Python client's
/// pickle sent through a broker whose workers are command-line workers).
const MALFORMED_TASK: &str = "malformed task payload: this worker is a zerotasq command-line \
     worker (lines in, lines out); the task did not come from `zerotasq map` — a Python or \
     Rust client needs workers of its own face on this broker";
/// Why an adapter gave up when its command's stdout ended.
const STDOUT_CLOSED: &str = "closed its stdout";

/// Runs an adapter; `args` are the arguments after `__adapter`. Returns the exit status.
pub fn main(args: &[OsString]) -> i32 {
    // The supervisor gives its children a fresh signal mask and default dispositions, so
    // the parent-death signal and the worker command's signals work as usual.
    prepare_worker_process();
    let (Some(mut args), Ok(opts)) = (AdapterArgs::parse(args), options_from_env()) else {
        eprintln!("zerotasq: `{ADAPTER_ARG}` is internal; it is started by `zerotasq map`");
        return EXIT_BAD_ENV;
    };
    if let Some(slot) = zerotasq::worker_slot() {
        args.command = with_slot(&args.command, slot);
    }
    let worker = worker_number();
    let events = Arc::new(Sender::from_env());
    let ctx = Context::new();
    let start_failed = |reason: String| {
        events.send(&Event::StartFailed {
            worker,
            reason: reason.clone(),
        });
        let _ = report_init_failure(&ctx, &opts, &reason);
        EXIT_INIT_FAILED
    };
    let (mut process, stdin, mut stdout) =
        match WorkerProcess::spawn(&args.command, worker, events.clone()) {
            Ok(started) => started,
            Err(reason) => return start_failed(reason),
        };
    match process.check_start(&mut stdout, args.grace) {
        Ok(()) => {}
        Err(StartCheck::Killed) => {
            // Killed from outside (a user, the OOM killer): not a failure of the command's
            // start-up. The adapter dies the same way, so the pool sees a kill.
            // SAFETY: signals this very process.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        Err(StartCheck::Failed(reason)) => return start_failed(reason),
    }
    let code = match Adapter::new(&ctx, &opts, args, worker, events, process, stdin, stdout) {
        Ok(mut adapter) => adapter.run(),
        Err(e) => {
            eprintln!("zerotasq adapter: {e}");
            EXIT_BROKER_LOST
        }
    };
    drop(ctx); // waits (bounded by the socket linger) for the last answers to leave
    code
}

/// The command with `{slot}` replaced in its arguments (other braces are the command's own:
/// `awk '{print $1}'`).
fn with_slot(command: &[OsString], slot: usize) -> Vec<OsString> {
    command
        .iter()
        .map(|arg| match arg.to_str() {
            Some(text) => text.replace("{slot}", &slot.to_string()).into(),
            None => arg.clone(),
        })
        .collect()
}

/// The 1-based worker number, from the slot the supervisor gives each child (0 if unset).
fn worker_number() -> u32 {
    std::env::var(ENV_SLOT)
        .ok()
        .and_then(|slot| slot.parse::<u32>().ok())
        .map_or(0, |slot| slot + 1)
}

/// A pack of records written to the worker command, awaiting its answers.
struct Pending {
    id: u64,
    /// The first record's number.
    record: u64,
    count: u32,
    /// The answers so far, each ended by the separator.
    answers: Vec<u8>,
    answered: u32,
    busy: Duration,
    /// A death of the command inside this task is answered with a split result (packs of
    /// several records, and records the CLI runs again after a split).
    split_on_death: bool,
    /// The records as written (only when `split_on_death`: to hand back on a split).
    records: Vec<u8>,
}

struct Adapter {
    args: AdapterArgs,
    worker: u32,
    /// This host's name, in each result (for the CLI's joblog).
    host: String,
    events: Arc<Sender>,
    process: WorkerProcess,
    session: WorkerSession,
    /// The time limit per task.
    limit: Option<Duration>,
    recycle: Option<RecycleCheck>,
    /// Due for recycling: nothing more goes to the command, and the worker leaves once
    /// everything it was given is answered.
    retiring: Option<RecycleReason>,
    /// Records written to the command so far, and answered by it.
    written: u64,
    answered: u64,
    /// The largest answer the broker takes.
    max_payload: usize,
    /// Tasks received and never written to the command (while retiring): handed back.
    held_back: Vec<u64>,
    /// Tasks, concatenated per batch, for the thread that writes the child's stdin.
    to_child: mpsc::Sender<Vec<u8>>,
    /// Chunks of the child's stdout (empty: end of file), and the wake-up that goes with them.
    from_child: mpsc::Receiver<Vec<u8>>,
    wake: Arc<Wake>,
    pending: VecDeque<Pending>,
    /// When the task at the front of `pending` began to be awaited.
    front_since: Instant,
    /// When the command last wrote to its stdout.
    last_output: Instant,
    /// The warning for a silent command was given (once per worker process).
    warned_silent: bool,
    stdout_buf: Vec<u8>,
    scanned: usize,
    results: Results,
    busy: Duration,
    unflushed_since: Option<Instant>,
}

impl Adapter {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ctx: &Context,
        opts: &WorkerOptions,
        args: AdapterArgs,
        worker: u32,
        events: Arc<Sender>,
        process: WorkerProcess,
        mut stdin: std::process::ChildStdin,
        mut stdout: std::process::ChildStdout,
    ) -> Result<Adapter, zerotasq::Error> {
        let session = WorkerSession::join(ctx, opts)?;
        let recycle = opts
            .recycling
            .is_set()
            .then(|| RecycleCheck::new(opts.recycling, process.pid(), &opts.identity));
        let (to_child, tasks) = mpsc::channel::<Vec<u8>>();
        spawn("stdin", move || {
            // Stops when the child closes its stdin; the stdout side then notices.
            for bytes in tasks {
                if stdin.write_all(&bytes).is_err() {
                    break;
                }
            }
        })?;
        let wake = Arc::new(Wake::new().map_err(io_error("create an eventfd"))?);
        let (chunks, from_child) = mpsc::channel::<Vec<u8>>();
        {
            let wake = wake.clone();
            spawn("stdout", move || loop {
                let mut chunk = vec![0; 64 << 10];
                let n = stdout.read(&mut chunk).unwrap_or(0);
                chunk.truncate(n);
                let _ = chunks.send(chunk);
                wake.signal();
                if n == 0 {
                    break;
                }
            })?;
        }
        Ok(Adapter {
            args,
            worker,
            host: zerotasq::worker_runtime::hostname(),
            events,
            process,
            session,
            limit: opts.task_timeout,
            recycle,
            retiring: None,
            written: 0,
            answered: 0,
            held_back: Vec::new(),
            max_payload: usize::try_from(opts.max_message).map_or(usize::MAX, |m| m - m.min(64)),
            to_child,
            from_child,
            wake,
            pending: VecDeque::new(),
            front_since: Instant::now(),
            last_output: Instant::now(),
            warned_silent: false,
            stdout_buf: Vec::new(),
            scanned: 0,
            results: Results::default(),
            busy: Duration::ZERO,
            unflushed_since: None,
        })
    }

    /// Serves until the broker says stop (0), goes silent, or the child fails.
    fn run(&mut self) -> i32 {
        match self.serve() {
            Ok(code) => code,
            Err(e) => {
                eprintln!("zerotasq adapter: {e}");
                self.process.kill();
                EXIT_BROKER_LOST
            }
        }
    }

    fn serve(&mut self) -> Result<i32, zerotasq::Error> {
        loop {
            let ready = self.session.wait(Some(self.wake.fd()), self.wake_at())?;
            if ready.broker {
                while let Some(incoming) = self.session.recv()? {
                    match incoming {
                        Incoming::Tasks(tasks) => self.submit(tasks.iter()),
                        Incoming::Shutdown => {
                            self.process.kill();
                            return Ok(0);
                        }
                        _ => {}
                    }
                }
            }
            if ready.fd {
                self.wake.clear();
                while let Ok(chunk) = self.from_child.try_recv() {
                    self.last_output = Instant::now();
                    if chunk.is_empty() {
                        return Ok(self.die(STDOUT_CLOSED));
                    }
                    if let Err(code) = self.take_answers(&chunk) {
                        return Ok(code);
                    }
                }
            }
            let now = Instant::now();
            if let (Some(limit), false) = (self.limit, self.pending.is_empty()) {
                if now.duration_since(self.front_since) >= limit {
                    return Ok(self.time_out(limit));
                }
            }
            if self.silence_ends().is_some_and(|end| now >= end) {
                self.warn_silent();
            }
            if let Some(reason) = self.due_for_recycling(now) {
                return Ok(self.retire(reason));
            }
            let due = self.unflushed_since.is_some_and(|s| now >= s + FLUSH_EVERY);
            if !self.results.is_empty()
                && (self.pending.is_empty() || due || self.results.byte_len() >= FLUSH_BYTES)
            {
                self.flush()?;
            }
            if !self.session.tick()? {
                self.process.kill();
                return Ok(EXIT_BROKER_LOST);
            }
        }
    }

    /// When the loop must look again without news: the session's next deadline, the
    /// awaited task's time limit, or answers due to be sent.
    fn wake_at(&self) -> Instant {
        let mut wake_at = self.session.next_deadline();
        if let (Some(limit), false) = (self.limit, self.pending.is_empty()) {
            wake_at = wake_at.min(self.front_since + limit);
        }
        if let Some(age) = self.recycle.as_ref().and_then(RecycleCheck::deadline) {
            wake_at = wake_at.min(age);
        }
        if let Some(since) = self.unflushed_since {
            wake_at = wake_at.min(since + FLUSH_EVERY);
        }
        if let Some(end) = self.silence_ends() {
            wake_at = wake_at.min(end);
        }
        wake_at
    }

    /// When the command's silence becomes worth a warning: it holds records, has written
    /// nothing since it was given the awaited one, and has not been warned about.
    fn silence_ends(&self) -> Option<Instant> {
        if self.warned_silent || self.pending.is_empty() {
            return None;
        }
        Some(self.front_since.max(self.last_output) + self.args.warn_silent)
    }

    /// Says once what a silent command may be doing wrong: a worker that buffers its output
    /// (a pipe is not a terminal) or never answers waits forever without `--timeout`.
    fn warn_silent(&mut self) {
        self.warned_silent = true;
        let record = self
            .pending
            .front()
            .map_or(0, |p| p.record + u64::from(p.answered));
        self.events.send(&Event::Silent {
            worker: self.worker,
            record,
            reason: format!(
                "{} has written nothing for {} since it was given record {record}: a worker \
                 writes one line for each line it reads, and flushes it (Python: \
                 print(..., flush=True)); --timeout limits a record's time",
                self.process.display(),
                crate::duration::show(self.args.warn_silent)
            ),
        });
    }

    /// Writes a batch's packs of records to the child.
    fn submit<'a>(&mut self, tasks: impl Iterator<Item = (u64, &'a [u8])>) {
        let mut bytes = Vec::new();
        for (id, payload) in tasks {
            let task = decode_task(payload).filter(|t| {
                // Every count is checked before use: a pack that says 5 records and holds
                // 1 would wait for 4 answers that never come.
                let records = t
                    .records
                    .iter()
                    .filter(|&&b| b == self.args.separator)
                    .count();
                records == t.count as usize && t.records.last() == Some(&self.args.separator)
            });
            let Some(task) = task else {
                let error = TaskError::new(ErrorKind::Codec, MALFORMED_TASK);
                self.results.push_err(id, &error);
                continue;
            };
            if self.holds_back(task.count) {
                self.held_back.push(id);
                continue;
            }
            self.written += u64::from(task.count);
            bytes.extend_from_slice(task.records);
            if self.pending.is_empty() {
                self.front_since = Instant::now();
                self.process.current.store(task.first, Ordering::Relaxed);
            }
            let split_on_death = task.count > 1 || task.flags & SPLIT_ON_DEATH != 0;
            self.pending.push_back(Pending {
                id,
                record: task.first,
                count: task.count,
                answers: Vec::new(),
                answered: 0,
                busy: Duration::ZERO,
                split_on_death,
                records: if split_on_death {
                    task.records.to_vec()
                } else {
                    Vec::new()
                },
            });
        }
        if !bytes.is_empty() {
            // A send error means the writer stopped because the child is gone; the stdout
            // side reports that.
            let _ = self.to_child.send(bytes);
        }
    }

    /// Matches complete answer records to pending records, in order; a pack's result goes
    /// out when its last record is answered. A pack answered within the bytes at hand is
    /// encoded straight from them; only a pack whose answers span reads keeps a copy.
    fn take_answers(&mut self, chunk: &[u8]) -> Result<(), i32> {
        let mut buf = std::mem::take(&mut self.stdout_buf);
        buf.extend_from_slice(chunk);
        let sep = self.args.separator;
        let mut start = 0;
        // Where the front pack's answers not yet copied to its `answers` begin.
        let mut begin: Option<usize> = None;
        while let Some(offset) = buf[self.scanned..].iter().position(|&b| b == sep) {
            let end = self.scanned + offset;
            let Some(pack) = self.pending.front_mut() else {
                // More lines out than in: answers were matched to the wrong lines.
                self.process.kill();
                let reason = format!(
                    "{} wrote more lines than it was given: a worker writes exactly one line \
                     per line it reads",
                    self.process.display()
                );
                self.events.send(&Event::Desync {
                    worker: self.worker,
                    reason,
                });
                // The answers not sent yet are as suspect as the rest: they go unanswered,
                // and the broker runs their tasks again.
                self.results = Results::default();
                self.stdout_buf.clear();
                return Err(self.die("wrote output no task asked for (one line per task)"));
            };
            let from = *begin.get_or_insert(start);
            let now = Instant::now();
            pack.busy += now.duration_since(self.front_since);
            self.front_since = now;
            pack.answered += 1;
            self.answered += 1;
            let mut current = pack.record + pack.answered as u64;
            if pack.answered == pack.count {
                let pack = self.pending.pop_front().expect("front exists");
                let records = u64::from(pack.count);
                if let Some(reason) = self.recycle.as_mut().and_then(|r| r.tasks_done(records)) {
                    self.retiring.get_or_insert(reason);
                }
                self.push_pack(&pack, &buf[from..=end], false, false);
                begin = None;
                current = self.pending.front().map_or(0, |p| p.record);
            }
            self.process.current.store(current, Ordering::Relaxed);
            start = end + 1;
            self.scanned = start;
        }
        if let (Some(from), Some(pack)) = (begin, self.pending.front_mut()) {
            pack.answers.extend_from_slice(&buf[from..start]);
        }
        buf.drain(..start);
        self.scanned = buf.len();
        self.stdout_buf = buf;
        if !self.results.is_empty() && self.unflushed_since.is_none() {
            self.unflushed_since = Some(Instant::now());
        }
        Ok(())
    }

    /// Adds a pack's result: all its answers (those kept in `pack.answers`, then `fresh`),
    /// or (split) those it got and the records it never answered.
    fn push_pack(&mut self, pack: &Pending, fresh: &[u8], split: bool, blameless: bool) {
        self.busy += pack.busy;
        let head = ResultHeader {
            record: pack.record,
            worker: self.worker,
            busy_us: pack.busy.as_micros().min(u32::MAX as u128) as u32,
            count: pack.answered,
            split,
            blameless,
        };
        let rest = if split {
            let skip = after_records(&pack.records, pack.answered, self.args.separator);
            &pack.records[skip.unwrap_or(pack.records.len())..]
        } else {
            &[][..]
        };
        let id = pack.id;
        let len = pack.answers.len() + fresh.len() + rest.len();
        if len > self.max_payload {
            // Over the broker's limit, it would be dropped with our connection.
            let error = TaskError::new(
                ErrorKind::Codec,
                format!(
                    "the answer is {len} bytes, over the limit of {} bytes (--max-message)",
                    self.max_payload
                ),
            );
            self.results.push_err(id, &error);
            return;
        }
        self.results
            .push_ok_with(id, |buf| {
                encode_result(head, &self.host, &[&pack.answers, fresh, rest], buf);
                Ok::<(), std::convert::Infallible>(())
            })
            .expect("infallible");
    }

    fn flush_if_any(&mut self) -> Result<(), zerotasq::Error> {
        if self.results.is_empty() {
            return Ok(());
        }
        self.flush()
    }

    fn flush(&mut self) -> Result<(), zerotasq::Error> {
        let results = std::mem::take(&mut self.results);
        self.session.send_results(results, self.busy)?;
        self.busy = Duration::ZERO;
        self.unflushed_since = None;
        Ok(())
    }

    /// The awaited task ran past `limit`. A task of one record goes the engine's way: it is
    /// reported timed out (charged a try; past the retries its outcome names the limit) and
    /// the tasks behind it go back unstarted. A pack, or a record the CLI runs again after a
    /// split, is split like a death, and the CLI counts its tries.
    fn time_out(&mut self, limit: Duration) -> i32 {
        self.process.kill();
        let reason = format!("timed out after {}", crate::duration::show(limit));
        let single = self.pending.front().is_some_and(|p| !p.split_on_death);
        if !single {
            return self.die(&reason);
        }
        let _ = self.flush_if_any();
        let pack = self.pending.pop_front().expect("a task is awaited");
        // Its last stderr lines are forwarded before the news of its death.
        self.process.finish(STDERR_GRACE);
        self.events.send(&Event::Died {
            worker: self.worker,
            record: pack.record,
            reason: format!("{} {reason}", self.process.display()),
        });
        if self.session.time_out(pack.id, limit).is_ok() {
            let unstarted = self.unstarted();
            self.session.leave(unstarted, None);
        }
        EXIT_TIMED_OUT
    }

    /// The tasks pending behind the awaited one (already taken off), and those held back.
    fn unstarted(&mut self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.pending.iter().map(|p| p.id).collect();
        ids.append(&mut self.held_back);
        ids
    }

    /// Whether a task of `records` must not go to the command: the worker is retiring, or
    /// the task would take it past its share of records (a first task always goes).
    fn holds_back(&mut self, records: u32) -> bool {
        if self.retiring.is_some() {
            return true;
        }
        let share = self.recycle.as_ref().and_then(|r| r.limits().max_tasks);
        match share {
            Some(max) if self.written > 0 && self.written + u64::from(records) > max => {
                self.retiring = Some(RecycleReason::Tasks(self.written));
                true
            }
            _ => false,
        }
    }

    /// The reason to recycle now: one is due (tasks, memory, age) and everything written to
    /// the command is answered — a line it was given may have started, so it is finished,
    /// not handed back.
    fn due_for_recycling(&mut self, now: Instant) -> Option<RecycleReason> {
        if self.retiring.is_none() {
            self.retiring = self.recycle.as_ref().and_then(|r| r.aged(now));
        }
        self.retiring.filter(|_| self.pending.is_empty())
    }

    /// Leaves to be replaced by a fresh worker: the answers go out, the tasks held back go
    /// back unstarted, and the command is stopped.
    fn retire(&mut self, reason: RecycleReason) -> i32 {
        let _ = self.flush_if_any();
        self.events.send(&Event::Recycled {
            worker: self.worker,
            reason: reason.to_string(),
        });
        let unstarted = std::mem::take(&mut self.held_back);
        self.session.retire(unstarted, None);
        self.process.kill();
        EXIT_RECYCLED
    }

    /// The child failed: send the answers it did give, say why on the events pipe (after
    /// its last stderr lines), and end with a failure status.
    fn die(&mut self, what: &str) -> i32 {
        let record = self
            .pending
            .front()
            .map_or(0, |p| p.record + p.answered as u64);
        // A pack of several records (or one the CLI asked for) is split: its answers so far
        // go out with the records it never answered, which the CLI runs again one by one,
        // counting the tries of the one that killed the command itself — the engine charges
        // nothing for an answered task.
        // It goes out after the release (see `leave`): from then on the broker offers us
        // nothing more, so no task is sent to us, and charged, between it and the goodbye.
        let _ = self.flush_if_any();
        let how = self.process.finish(STDERR_GRACE);
        // A command that ends cleanly after answering lines (one written to answer a line
        // and exit) did not die of the line after them: nothing is charged for it.
        let stopped = self.answered > 0 && self.process.try_wait().is_some_and(|s| s.success());
        let mut handed_back = Vec::new();
        if self.pending.front().is_some_and(|p| p.split_on_death) {
            let pack = self.pending.pop_front().expect("front exists");
            self.push_pack(&pack, &[], true, stopped);
        } else if let Some(pack) = self.pending.pop_front() {
            if stopped {
                handed_back.push(pack.id);
            }
        }
        // After the end of its stdout, how the command ended says more than that end.
        let mut reason = match (what, how.as_str()) {
            (STDOUT_CLOSED, "is still running") => format!("{} {what}", self.process.display()),
            (STDOUT_CLOSED, _) => format!("{} {how}", self.process.display()),
            _ => format!("{} {what}", self.process.display()),
        };
        if stopped {
            // Not a crash: a command written to answer one line and exit. It works, one
            // start-up per line.
            reason.push_str(
                " before its stdin ended: a worker reads lines until its stdin ends (each \
                 restart costs a start-up)",
            );
        }
        self.events.send(&Event::Died {
            worker: self.worker,
            record,
            reason,
        });
        // The tasks queued behind the awaited one were never started.
        let mut unstarted = self.unstarted();
        unstarted.append(&mut handed_back);
        let split = std::mem::take(&mut self.results);
        self.process.kill();
        if stopped {
            // Replaced at once, like a recycled worker: no back-off for a command that works.
            self.session.retire(unstarted, Some((split, self.busy)));
            return EXIT_RECYCLED;
        }
        self.session.leave(unstarted, Some((split, self.busy)));
        EXIT_WORKER_DIED
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), zerotasq::Error> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(io_error("start a thread"))
}

fn io_error(context: &'static str) -> impl FnOnce(std::io::Error) -> zerotasq::Error {
    move |source| zerotasq::Error::Io {
        context: context.into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The adapter in this process, with a real shell command behind it and a ROUTER
    /// socket on loopback TCP playing its broker.
    mod with_a_broker {
        use super::*;
        use crate::payload::{decode_result, push_record, start_task};
        use zerotasq::protocol::{header, Command, Message, ResultBatch, TaskBatchWriter};
        use zerotasq::Security;

        const WAIT: i64 = 5_000;

        struct Broker {
            router: zmq::Socket,
            worker: Vec<u8>,
            _ctx: zmq::Context,
        }

        impl Broker {
            fn send(&self, frames: Vec<Vec<u8>>) {
                self.router.send(&self.worker, zmq::SNDMORE).unwrap();
                self.router.send_multipart(frames, 0).unwrap();
            }

            /// The next message from the adapter: its command and its frames after the header.
            fn expect(&self) -> (Command, Vec<Vec<u8>>) {
                assert!(
                    self.router.poll(zmq::POLLIN, WAIT).unwrap() > 0,
                    "the adapter is mute"
                );
                let mut frames = self.router.recv_multipart(0).unwrap();
                assert_eq!(frames.remove(0), self.worker);
                let command = Message::decode(&frames).unwrap().command();
                (command, frames)
            }
        }

        /// Starts an adapter around `sh -c script`, joined to a fake broker; returns the
        /// broker (the adapter's `Ready` read) and the thread that runs the adapter.
        fn start(script: &str) -> (Broker, std::thread::JoinHandle<i32>) {
            let zctx = zmq::Context::new();
            let router = zctx.socket(zmq::ROUTER).unwrap();
            router.bind("tcp://127.0.0.1:0").unwrap();
            let endpoint = router.get_last_endpoint().unwrap().unwrap();
            let opts = WorkerOptions {
                endpoint,
                identity: b"adapter-test".to_vec(),
                capacity: 2,
                heartbeat_interval: Duration::from_secs(5),
                liveness: 3,
                max_message: -1,
                security: Security::Insecure,
                task_timeout: None,
                recycling: Default::default(),
                batching: Default::default(),
            };
            let args = AdapterArgs {
                separator: b'\n',
                grace: Duration::ZERO,
                warn_silent: Duration::from_secs(60),
                command: vec!["sh".into(), "-c".into(), script.into()],
            };
            let events = Arc::new(Sender::from_env());
            let run = std::thread::spawn(move || {
                let (process, stdin, stdout) =
                    WorkerProcess::spawn(&args.command, 1, events.clone()).unwrap();
                let ctx = Context::new();
                let mut adapter =
                    Adapter::new(&ctx, &opts, args, 1, events, process, stdin, stdout).unwrap();
                adapter.run()
            });
            let broker = Broker {
                router,
                worker: b"adapter-test".to_vec(),
                _ctx: zctx,
            };
            assert_eq!(broker.expect().0, Command::Ready);
            (broker, run)
        }

        fn tasks(packs: &[(u64, &[&str])]) -> Vec<Vec<u8>> {
            let mut batch = TaskBatchWriter::new();
            for &(id, records) in packs {
                let mut buf = Vec::new();
                let at = start_task(id * 10, 0, &mut buf);
                for record in records {
                    push_record(at, record.as_bytes(), b'\n', &mut buf);
                }
                batch.push(id, &buf);
            }
            vec![header(Command::Tasks).to_vec(), batch.finish()]
        }

        /// `(task id, first record, answers, split)` of each result in a `Results` body.
        fn answers(body: &[u8]) -> Vec<(u64, u64, String, bool)> {
            let batch = ResultBatch::parse(body).unwrap();
            batch
                .iter()
                .map(|(id, outcome)| {
                    let zerotasq::protocol::Outcome::Ok(bytes) = outcome else {
                        panic!("task {id} failed: {outcome:?}");
                    };
                    let (head, _, rest) = decode_result(bytes).unwrap();
                    let text = String::from_utf8(rest.to_vec()).unwrap();
                    (id, head.record, text, head.split)
                })
                .collect()
        }

        #[test]
        fn packs_are_pipelined_and_answered_in_order() {
            let (broker, run) = start("while read l; do echo \"<$l>\"; done");
            broker.send(tasks(&[(1, &["a", "b"]), (2, &["c"])]));
            let mut got = Vec::new();
            while got.len() < 2 {
                let (command, frames) = broker.expect();
                assert_eq!(command, Command::Results);
                got.extend(answers(&frames[1]));
            }
            assert_eq!(
                got,
                [
                    (1, 10, "<a>\n<b>\n".to_string(), false),
                    (2, 20, "<c>\n".to_string(), false)
                ]
            );
            broker.send(vec![header(Command::Shutdown).to_vec()]);
            assert_eq!(run.join().unwrap(), 0);
        }

        #[test]
        fn a_command_that_dies_in_a_pack_splits_it_and_hands_back_the_rest() {
            // Answers one line, then dies.
            let (broker, run) = start("read l; echo \"<$l>\"; exit 3");
            broker.send(tasks(&[(1, &["a", "b"]), (2, &["c"])]));
            let mut seen = Vec::new();
            loop {
                let (command, frames) = broker.expect();
                match command {
                    Command::Release => {
                        let ids = zerotasq::protocol::IdList::parse(&frames[1]).unwrap();
                        seen.push(format!("Release{:?}", ids.iter().collect::<Vec<_>>()));
                    }
                    Command::Results => seen.push(format!("{:?}", answers(&frames[1]))),
                    Command::Heartbeat => {
                        // From a worker that said goodbye: acknowledge, as the broker does.
                        broker.send(vec![header(Command::Shutdown).to_vec()]);
                        break;
                    }
                    other => seen.push(format!("{other:?}")),
                }
            }
            assert_eq!(
                seen,
                [
                    "Release[2]".to_string(),
                    r#"[(1, 10, "<a>\nb\n", true)]"#.to_string(),
                    "Goodbye".to_string(),
                ],
                "the unstarted pack released, the split pack (one answer, one record to run \
                 again), then goodbye"
            );
            assert_eq!(run.join().unwrap(), EXIT_WORKER_DIED);
        }
    }
}
