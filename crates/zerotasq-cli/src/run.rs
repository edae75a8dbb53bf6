//! `zerotasq map`: starts a pool whose workers are adapters around the user's command,
//! waits until one has started (or fails the run before reading any input), streams the
//! records through it (a stream for a file, a connector fed by a thread for a pipe), writes
//! the answers, reports failed tasks, and ends with a summary.
//!
//! Three threads matter: the run thread does the streaming; the events thread passes the
//! workers' stderr through ([`Monitor`]); the main thread waits for the run to end or for a
//! signal, and in both cases drops the pool, which kills and reaps every worker.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use zerotasq::BrokerConfig;
use zerotasq::Link;
use zerotasq::WorkerCommand;
use zerotasq::{BrokerAccess, Connector, ErrorKind, PoolSpec, RawPool, RemoteBroker, TaskError};

use crate::adapter::AdapterArgs;
use crate::args::{MapArgs, StatsFormat};
use crate::events::{self, ENV_EVENTS_FD};
use crate::input::Records;
use crate::monitor::Monitor;
use crate::pack::{Pack, Packer, Packing};
use crate::payload::{
    after_records, decode_result, push_record, start_task, ResultHeader, SPLIT_ON_DEATH,
};
use crate::progress::{Figures, Progress};
use crate::signals;
use crate::summary::{Summary, WorkerTally};

/// A worker command still running after this long has started (see the adapter).
const START_GRACE: Duration = Duration::from_millis(150);
/// Failed tasks reported with their worker's last stderr lines; later ones get one line.
const DETAILED_FAILURES: u64 = 10;
/// Longest wait for the news of why a task's worker died.
const DEATH_NEWS_WAIT: Duration = Duration::from_millis(500);
/// Output written to a pipe or file is flushed at least this often.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

pub const EXIT_FAILED_TASKS: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// Set once a signal has come: the run thread then stops quietly.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

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
enum Access {
    Local(Box<RawPool>),
    Remote(RemoteBroker),
}

impl Access {
    /// The broker's figures; only a local pool's are known here.
    fn stats(&self) -> Option<zerotasq::BrokerStats> {
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
    let (reader, total_bytes) = match open_input(args.input.as_ref()) {
        Ok(input) => input,
        Err(message) => {
            say(&format!("zerotasq: {message}"));
            return EXIT_USAGE;
        }
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
    let adapter = AdapterArgs {
        separator,
        timeout: args.timeout,
        grace: START_GRACE,
        command: args.command.clone(),
    };
    let broker = BrokerConfig {
        max_retries: args.retries,
        ..BrokerConfig::default()
    };
    let max_init_failures = broker.max_init_failures as u64;
    let spec = PoolSpec {
        broker,
        processes: Some((
            jobs,
            WorkerCommand {
                program: "/proc/self/exe".into(),
                args: adapter.to_args(),
                env: vec![(ENV_EVENTS_FD.into(), events_fd.to_string().into())],
                stdin: Vec::new(),
            },
        )),
        ..PoolSpec::default()
    };
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
        args,
    };
    std::thread::Builder::new()
        .name("run".into())
        .spawn(move || {
            let code = run.run(reader);
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

/// The input, buffered (a pack takes what is buffered without waiting for more).
type Reader = BufReader<Box<dyn Read + Send>>;
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

/// Which pack an outcome of a connector belongs to: in order, the packs as sent; as
/// completed, the open packs by first record (an answer names its own).
enum Sent {
    Ordered(Mutex<VecDeque<(u64, u32)>>),
    Unordered(Mutex<BTreeMap<u64, u32>>),
}

/// Feeds packs to `connector` from a thread of its own, so each is sent as soon as it is
/// read: a slow or endless input (a pipe, `tail -f`) streams instead of waiting for a
/// window's worth of lines (a pack takes only the records already buffered). Returns the
/// outcomes, with their packs when known.
fn feed(
    packer: Packer<Reader>,
    connector: Arc<Connector<Pack, Answer>>,
    sent: Arc<Sent>,
) -> Box<dyn Iterator<Item = Outcome>> {
    let feeder = connector.clone();
    let sending = sent.clone();
    std::thread::Builder::new()
        .name("feed".into())
        .spawn(move || {
            for pack in packer {
                match &*sending {
                    Sent::Ordered(q) => q
                        .lock()
                        .expect("sent lock")
                        .push_back((pack.first, pack.count)),
                    Sent::Unordered(m) => {
                        m.lock().expect("sent lock").insert(pack.first, pack.count);
                    }
                }
                if feeder.send(pack).is_err() {
                    break;
                }
            }
            feeder.finish();
        })
        .expect("start the feeding thread");
    Box::new(std::iter::from_fn(move || connector.recv()).map(move |o| {
        let pack = match (&*sent, &o) {
            (Sent::Ordered(q), _) => q.lock().expect("sent lock").pop_front(),
            (Sent::Unordered(m), Ok(answer)) => {
                let first = answer.head.record;
                m.lock()
                    .expect("sent lock")
                    .remove(&first)
                    .map(|count| (first, count))
            }
            (Sent::Unordered(_), Err(_)) => None,
        };
        (pack, o)
    }))
}

/// An outcome, with its task's first record and record count when the engine tells it.
type Outcome = (Option<(u64, u32)>, Result<Answer, TaskError>);

fn decoder() -> zerotasq::DecodeFn<Answer> {
    Box::new(|bytes: &[u8]| {
        decode_result(bytes)
            .map(|(head, answer)| Answer {
                head,
                bytes: answer.to_vec(),
            })
            .ok_or_else(|| TaskError::new(ErrorKind::Codec, "malformed result from a worker"))
    })
}

/// One answer, as decoded from its result.
struct Answer {
    head: ResultHeader,
    bytes: Vec<u8>,
}

struct Run {
    pool: Arc<Mutex<Option<Access>>>,
    monitor: Monitor,
    progress: Progress,
    separator: u8,
    jobs: usize,
    max_init_failures: u64,
    /// A regular file: reading it never waits for a writer.
    input_is_file: bool,
    args: MapArgs,
}

impl Run {
    fn stats(&self) -> Option<zerotasq::BrokerStats> {
        self.pool.lock().ok()?.as_ref().and_then(|p| p.stats())
    }

    /// Waits until a worker is ready; `Err(message)` when the command cannot start.
    fn wait_for_a_worker(&self) -> Result<(), String> {
        if self.args.connect.is_some() {
            // A standalone broker's workers come and go; tasks wait there for one.
            return Ok(());
        }
        loop {
            let Some(stats) = self.stats() else {
                return Err("the pool stopped".into());
            };
            if stats.workers_ready > 0 {
                return Ok(());
            }
            if stats.init_failures >= self.max_init_failures {
                let reason = self
                    .monitor
                    .start_failure()
                    .map_or_else(|| "no worker could start".to_string(), |(_, r)| r);
                return Err(format!("the worker command could not start: {reason}"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn run(self, reader: Reader) -> i32 {
        let started = Instant::now();
        if let Err(message) = self.wait_for_a_worker() {
            self.progress.finish();
            say(&format!("zerotasq: {message}"));
            return EXIT_USAGE;
        }
        let records = Records::new(reader, self.separator);
        let bytes_read = records.bytes_read();
        let input_error = records.error();
        let separator = self.separator;
        let window = self.args.window as usize;
        let ordered = !self.args.unordered;
        let packing = Packing::new(!self.args.no_pack, window as u64);
        let encode_pack = Box::new(|pack: Pack, buf: &mut Vec<u8>| {
            if buf.is_empty() {
                *buf = pack.bytes;
            } else {
                buf.extend_from_slice(&pack.bytes);
            }
            Ok(())
        });
        // A connector's unordered outcomes do not say which task failed: keep the open
        // packs to tell. A stream's outcomes come with their input's index.
        let mut open = None;
        let outcomes: Box<dyn Iterator<Item = Outcome>> = {
            let pool = self.pool.lock().expect("pool lock");
            let Some(pool) = pool.as_ref() else {
                return EXIT_USAGE;
            };
            let outcomes = if self.input_is_file {
                // A regular file never blocks a read: the stream pulls it in whole batches.
                let packer = Packer::new(records, false, packing.clone(), true);
                let packing = packing.clone();
                pool.stream(packer, window, ordered, encode_pack, decoder())
                    .map(|s| {
                        Box::new(s.indexed().map(move |(i, o)| (packing.take(i), o))) as Box<_>
                    })
            } else {
                let packer = Packer::new(records, true, packing.clone(), false);
                let sent = Arc::new(if ordered {
                    Sent::Ordered(Mutex::new(VecDeque::new()))
                } else {
                    Sent::Unordered(Mutex::new(BTreeMap::new()))
                });
                if !ordered {
                    open = Some(sent.clone());
                }
                pool.connector(window, ordered, encode_pack, decoder())
                    .map(|c| feed(packer, Arc::new(c), sent))
            };
            match outcomes {
                Ok(outcomes) => outcomes,
                Err(e) => {
                    say(&format!("zerotasq: {e}"));
                    return EXIT_USAGE;
                }
            }
        };
        let stdout = std::io::stdout();
        let flush_each = stdout.is_terminal();
        let mut out = BufWriter::with_capacity(256 << 10, stdout.lock());
        let mut last_flush = Instant::now();
        // With `--connect` the workers are other hosts' `zerotasq worker`s, whose slot
        // numbers repeat from host to host: no per-worker figures (`zerotasq status` has
        // them, by worker).
        let local_slots = if self.args.connect.is_some() {
            0
        } else {
            self.jobs
        };
        let mut tallies = vec![WorkerTally::default(); local_slots];
        let (mut done, mut failed) = (0u64, 0u64);
        // Deaths of the command on records of split packs: the engine charged nothing
        // for them (a split pack is answered), so the tries are counted here.
        let mut tries: HashMap<u64, u32> = HashMap::new();
        let mut write_error = None;
        let mut broker_lost = None;
        'outcomes: for (pack, outcome) in outcomes {
            // The outcomes to handle now: this one, then (for a split pack) those of its
            // unanswered records, run again one by one, before what follows.
            let mut now: VecDeque<Outcome> = VecDeque::from([(pack, outcome)]);
            while let Some((pack, outcome)) = now.pop_front() {
                match outcome {
                    Ok(answer) => {
                        let head = answer.head;
                        for r in head.record..head.record + head.count as u64 {
                            self.monitor.forget(r);
                        }
                        done += head.count as u64;
                        if let Some(t) = tallies.get_mut((head.worker as usize).wrapping_sub(1)) {
                            t.tasks += head.count as u64;
                            t.busy += Duration::from_micros(head.busy_us as u64);
                        }
                        let cut = after_records(&answer.bytes, head.count, separator)
                            .unwrap_or(answer.bytes.len());
                        if let Err(e) = out.write_all(&answer.bytes[..cut]) {
                            write_error = Some(e);
                            break 'outcomes;
                        }
                        if !head.split {
                            packing.answered(head.count, head.busy_us);
                            packing.done(pack.map_or(head.count, |(_, n)| n) as u64);
                            continue;
                        }
                        packing.done(head.count as u64);
                        // The command died on the first record it did not answer.
                        let guilty = head.record + head.count as u64;
                        let mut rest = &answer.bytes[cut..];
                        let try_now = tries.entry(guilty).or_insert(0);
                        *try_now += 1;
                        let mut first = guilty;
                        if *try_now >= self.args.retries {
                            tries.remove(&guilty);
                            packing.done(1);
                            failed += 1;
                            done += 1;
                            let error = TaskError::new(
                                ErrorKind::WorkerLost,
                                format!("the command died on it {} times", self.args.retries),
                            );
                            self.report_failure(Some(guilty), &error, failed <= DETAILED_FAILURES);
                            if self.args.fail_fast {
                                self.progress.println("zerotasq: stopping (--fail-fast)");
                                break 'outcomes;
                            }
                            let skip = after_records(rest, 1, separator).unwrap_or(rest.len());
                            rest = &rest[skip..];
                            first += 1;
                        }
                        for again in self.run_alone(first, rest).into_iter().rev() {
                            now.push_front(again);
                        }
                    }
                    Err(_) if INTERRUPTED.load(Ordering::Acquire) => break 'outcomes,
                    Err(error)
                        if self.args.connect.is_some() && error.kind() == ErrorKind::Cancelled =>
                    {
                        // The standalone broker is unreachable, refused our key, or went
                        // silent: every task would fail the same way.
                        broker_lost = Some(error);
                        break 'outcomes;
                    }
                    Err(error) => {
                        let pack =
                            pack.or_else(|| open.as_ref().and_then(|o| self.which_failed(o)));
                        let records: Vec<Option<u64>> = match pack {
                            Some((first, count)) => {
                                packing.done(count as u64);
                                (first..first + count as u64).map(Some).collect()
                            }
                            None => vec![None],
                        };
                        for record in records {
                            failed += 1;
                            done += 1;
                            self.report_failure(record, &error, failed <= DETAILED_FAILURES);
                        }
                        if self.args.fail_fast {
                            self.progress.println("zerotasq: stopping (--fail-fast)");
                            break 'outcomes;
                        }
                    }
                }
            }
            if flush_each || last_flush.elapsed() >= FLUSH_EVERY {
                if let Err(e) = out.flush() {
                    write_error = Some(e);
                    break;
                }
                last_flush = Instant::now();
            }
            if self.progress.due() {
                let stats = self.stats().unwrap_or_default();
                self.progress.update(&Figures {
                    done,
                    failed,
                    bytes_read: bytes_read.load(Ordering::Relaxed),
                    workers_alive: stats.workers_alive,
                    retries: stats.requeued,
                });
            }
        }
        if write_error.is_none() {
            write_error = out.flush().err();
        }
        self.progress.finish();
        if INTERRUPTED.load(Ordering::Acquire) {
            return 0; // the main thread reports the interruption
        }
        if let Some(e) = write_error {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return 0; // `| head`: the reader has all it wants
            }
            say(&format!("zerotasq: cannot write the output: {e}"));
            return EXIT_USAGE;
        }
        if let Some(error) = broker_lost {
            say(&format!("zerotasq: {error}"));
            return EXIT_USAGE;
        }
        let mut code = if failed > 0 { EXIT_FAILED_TASKS } else { 0 };
        if let Some(e) = input_error.lock().expect("input error lock").take() {
            say(&format!("zerotasq: cannot read the input: {e}"));
            code = EXIT_USAGE;
        }
        let summary = Summary {
            tasks: done,
            failed,
            retries: self.stats().map_or(0, |s| s.requeued),
            wall: started.elapsed(),
            jobs: local_slots,
            tallies,
            slots: self.monitor.slots(),
        };
        match self.args.stats {
            StatsFormat::Text => say(&summary.text()),
            StatsFormat::Json => say(&summary.json()),
            StatsFormat::None => {}
        }
        code
    }

    /// Runs the records of a split pack (`first` and on, each ended by the separator) one
    /// per task, in order; their outcomes, each with its record.
    fn run_alone(&self, first: u64, records: &[u8]) -> Vec<Outcome> {
        let sep = self.separator;
        let mut body = records;
        if body.last() == Some(&sep) {
            body = &body[..body.len() - 1];
        }
        let items: Vec<(u64, Vec<u8>)> = if records.is_empty() {
            Vec::new()
        } else {
            body.split(|&b| b == sep)
                .enumerate()
                .map(|(i, r)| (first + i as u64, r.to_vec()))
                .collect()
        };
        let numbers: Vec<u64> = items.iter().map(|(r, _)| *r).collect();
        // Each alone, and split on a death even so: the tries are counted by `run`.
        let encode = Box::new(move |(record, data): (u64, Vec<u8>), buf: &mut Vec<u8>| {
            let at = start_task(record, SPLIT_ON_DEATH, buf);
            push_record(at, &data, sep, buf);
            Ok(())
        });
        let stream = {
            let pool = self.pool.lock().expect("pool lock");
            let Some(pool) = pool.as_ref() else {
                return Vec::new();
            };
            pool.stream(
                items.into_iter(),
                numbers.len().max(1),
                true,
                encode,
                decoder(),
            )
        };
        match stream {
            Ok(stream) => stream
                .indexed()
                .map(|(i, o)| (Some((numbers[i as usize], 1)), o))
                .collect(),
            Err(e) => numbers
                .iter()
                .map(|&r| {
                    (
                        Some((r, 1)),
                        Err(TaskError::new(ErrorKind::Cancelled, e.to_string())),
                    )
                })
                .collect(),
        }
    }

    /// In unordered mode with a pipe as input, the open pack an error outcome belongs to:
    /// the one whose workers died most, else the oldest.
    fn which_failed(&self, sent: &Sent) -> Option<(u64, u32)> {
        let Sent::Unordered(open) = sent else {
            return None;
        };
        let mut open = open.lock().expect("sent lock");
        // Let the news of the last death arrive.
        std::thread::sleep(Duration::from_millis(20));
        let first = self
            .monitor
            .most_deaths(open.keys().copied())
            .or_else(|| open.keys().next().copied())?;
        open.remove(&first).map(|count| (first, count))
    }

    fn report_failure(&self, record: Option<u64>, error: &TaskError, detailed: bool) {
        let noun = if self.separator == b'\n' {
            "line"
        } else {
            "record"
        };
        let place = record.map_or_else(|| format!("a {noun}"), |r| format!("{noun} {r}"));
        let death = match (record, error.kind()) {
            (Some(r), ErrorKind::WorkerLost) => self.monitor.death(r, DEATH_NEWS_WAIT),
            _ => None,
        };
        let mut text = match &death {
            Some(death) => format!(
                "zerotasq: {place} failed after {} tries: {} (worker {})",
                self.args.retries, death.reason, death.worker
            ),
            None => format!("zerotasq: {place} failed: {error}"),
        };
        if let (true, Some(death)) = (detailed, &death) {
            for line in &death.tail {
                text.push_str(&format!("\n  [w{}] {line}", death.worker));
            }
        }
        self.progress.println(&text);
    }
}
