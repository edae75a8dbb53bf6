//! The outcomes of one `zerotasq map` run: the stream (a file) or the connector fed by a
//! thread (a pipe) that yields them, each with the pack of records it answers; the answers
//! written in order, failed records reported with their worker's last words, split packs
//! run again record by record, and the summary at the end.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufWriter, IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zerotasq::{BrokerAccess, Connector, ErrorKind, TaskError};

use crate::args::{MapArgs, StatsFormat};
use crate::input::Records;
use crate::joblog::{Finished, JobLog};
use crate::monitor::Monitor;
use crate::pack::{Pack, Packer, Packing};
use crate::payload::{
    after_records, decode_result, push_record, start_task, ResultHeader, SPLIT_ON_DEATH,
};
use crate::progress::{Figures, Progress};
use crate::run::{say, Access, Reader, EXIT_FAILED_TASKS, EXIT_USAGE, INTERRUPTED};
use crate::summary::{Summary, WorkerTally};

/// Failed tasks reported with their worker's last stderr lines; later ones get one line.
const DETAILED_FAILURES: u64 = 10;
/// Longest wait for the news of why a task's worker died.
const DEATH_NEWS_WAIT: Duration = Duration::from_millis(500);
/// Output written to a pipe or file is flushed at least this often.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Deaths of the command, with no line ever answered, after which a run gives up (at least
/// two per worker).
const GIVE_UP_DEATHS: u64 = 10;

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
type Outcomes = Box<dyn Iterator<Item = Outcome>>;

fn decoder() -> zerotasq::DecodeFn<Answer> {
    Box::new(|bytes: &[u8]| {
        decode_result(bytes)
            .map(|(head, host, answer)| Answer {
                head,
                host: host.to_string(),
                bytes: answer.to_vec(),
            })
            .ok_or_else(|| TaskError::new(ErrorKind::Codec, "malformed result from a worker"))
    })
}

/// One answer, as decoded from its result.
struct Answer {
    head: ResultHeader,
    /// The worker's host.
    host: String,
    bytes: Vec<u8>,
}

/// What ended a run before its input did.
enum Stop {
    Write(std::io::Error),
    /// A command broke the line protocol: its answers cannot be matched to lines.
    Desync(u32, String),
    /// Commands died this many times and never answered a line: the last one, and why.
    NeverAnswers(u64, u32, String),
    BrokerLost(TaskError),
    /// The joblog could not be written; why.
    JobLog(String),
    FailFast,
    Interrupted,
}

/// The run's figures so far.
struct Tally {
    done: u64,
    failed: u64,
    workers: Vec<WorkerTally>,
    /// Deaths of the command on records of split packs, by record.
    tries: HashMap<u64, u32>,
}

impl Tally {
    /// No record has been answered yet (every one done so far failed).
    fn none_answered(&self) -> bool {
        self.done == self.failed
    }

    fn new(workers: usize) -> Tally {
        Tally {
            done: 0,
            failed: 0,
            workers: vec![WorkerTally::default(); workers],
            tries: HashMap::new(),
        }
    }
}

pub struct Run {
    pub pool: Arc<Mutex<Option<Access>>>,
    pub monitor: Monitor,
    pub progress: Progress,
    pub separator: u8,
    pub jobs: usize,
    pub max_init_failures: u64,
    /// A regular file: reading it never waits for a writer.
    pub input_is_file: bool,
    /// `--joblog`: where finished records are logged, and those done before replayed.
    pub joblog: Mutex<Option<JobLog>>,
    pub args: MapArgs,
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

    /// Streams `records`; returns the exit status.
    pub fn run(self, records: Records<Reader>) -> i32 {
        let started = Instant::now();
        if let Err(message) = self.wait_for_a_worker() {
            self.progress.finish();
            say(&format!("zerotasq: {message}"));
            return EXIT_USAGE;
        }
        let bytes_read = records.bytes_read();
        let input_error = records.error();
        let packing = Packing::new(!self.args.no_pack, self.args.window.into());
        let (outcomes, open) = match self.outcomes(records, &packing) {
            Ok(opened) => opened,
            Err(message) => {
                say(&format!("zerotasq: {message}"));
                return EXIT_USAGE;
            }
        };
        let stdout = std::io::stdout();
        let flush_each = stdout.is_terminal();
        let mut out = BufWriter::with_capacity(256 << 10, stdout.lock());
        let mut last_flush = Instant::now();
        let mut tally = Tally::new(self.local_slots());
        // As they complete: what was done before comes first.
        let mut stop = match self.args.unordered {
            true => self.replay(u64::MAX, &mut out, &mut tally).err(),
            false => None,
        };
        for (pack, outcome) in outcomes {
            // The outcomes to handle now: this one, then (for a split pack) those of its
            // unanswered records, run again one by one, before what follows.
            let mut now: VecDeque<Outcome> = VecDeque::from([(pack, outcome)]);
            while let (Some(next), None) = (now.pop_front(), &stop) {
                let handled = self.handle(next, &mut out, &mut tally, &packing, open.as_deref());
                match handled {
                    Ok(again) => again.into_iter().rev().for_each(|o| now.push_front(o)),
                    Err(why) => stop = Some(why),
                }
                if stop.is_none() && tally.none_answered() {
                    stop = self.never_answers();
                }
            }
            if let (None, Some((worker, reason))) = (&stop, self.monitor.desync()) {
                stop = Some(Stop::Desync(worker, reason));
            }
            if stop.is_none() && (flush_each || last_flush.elapsed() >= FLUSH_EVERY) {
                stop = out.flush().err().map(Stop::Write);
                stop = stop.or_else(|| self.flush_joblog().err());
                last_flush = Instant::now();
            }
            if stop.is_some() {
                break;
            }
            if self.progress.due() {
                let stats = self.stats().unwrap_or_default();
                self.progress.update(&Figures {
                    done: tally.done,
                    failed: tally.failed,
                    bytes_read: bytes_read.load(Ordering::Relaxed),
                    workers_alive: stats.workers_alive,
                    retries: stats.requeued,
                });
            }
        }
        // Records done before and after the last one run now.
        if stop.is_none() {
            stop = self.replay(u64::MAX, &mut out, &mut tally).err();
        }
        if !matches!(stop, Some(Stop::JobLog(_))) {
            stop = stop.or_else(|| self.flush_joblog().err());
        }
        // What was written before a stop (but a failed write) still goes out.
        if !matches!(stop, Some(Stop::Write(_))) {
            if let Err(e) = out.flush() {
                stop = Some(Stop::Write(e));
            }
        }
        self.progress.finish();
        if let (None | Some(Stop::FailFast), Some((worker, reason))) =
            (&stop, self.monitor.desync())
        {
            stop = Some(Stop::Desync(worker, reason));
        }
        let input_error = input_error.lock().expect("input error lock").take();
        self.conclude(stop, tally, input_error, started)
    }

    /// Stops a run whose commands keep dying without ever answering a line (the caller
    /// asks only while none has been answered): every record would fail the same way, each
    /// after its retries.
    fn never_answers(&self) -> Option<Stop> {
        let (deaths, last) = self.monitor.deaths();
        let (worker, reason) = last?;
        let enough = GIVE_UP_DEATHS.max(2 * self.jobs as u64);
        (deaths >= enough).then_some(Stop::NeverAnswers(deaths, worker, reason))
    }

    /// Per-worker figures only for this run's own workers: with `--connect` the workers
    /// are other hosts' `zerotasq worker`s, whose slot numbers repeat from host to host
    /// (`zerotasq status` has them, by worker).
    fn local_slots(&self) -> usize {
        if self.args.connect.is_some() {
            0
        } else {
            self.jobs
        }
    }

    /// The outcomes of the records, with each one's pack when known: a stream for a file,
    /// a connector fed by a thread for a pipe. A connector's unordered outcomes do not say
    /// which task failed, so the open packs are kept to tell (the second value).
    fn outcomes(
        &self,
        records: Records<Reader>,
        packing: &Packing,
    ) -> Result<(Outcomes, Option<Arc<Sent>>), String> {
        let window = self.args.window as usize;
        let ordered = !self.args.unordered;
        let encode_pack = Box::new(|pack: Pack, buf: &mut Vec<u8>| {
            if buf.is_empty() {
                *buf = pack.bytes;
            } else {
                buf.extend_from_slice(&pack.bytes);
            }
            Ok(())
        });
        let pool = self.pool.lock().expect("pool lock");
        let pool = pool.as_ref().ok_or("the pool stopped")?;
        if self.input_is_file {
            // A regular file never blocks a read: the stream pulls it in whole batches.
            let packer = Packer::new(records, false, packing.clone(), true);
            let packing = packing.clone();
            let stream = pool
                .stream(packer, window, ordered, encode_pack, decoder())
                .map_err(|e| e.to_string())?;
            let outcomes = stream.indexed().map(move |(i, o)| (packing.take(i), o));
            return Ok((Box::new(outcomes), None));
        }
        let packer = Packer::new(records, true, packing.clone(), false);
        let sent = Arc::new(if ordered {
            Sent::Ordered(Mutex::new(VecDeque::new()))
        } else {
            Sent::Unordered(Mutex::new(BTreeMap::new()))
        });
        let connector = pool
            .connector(window, ordered, encode_pack, decoder())
            .map_err(|e| e.to_string())?;
        let open = (!ordered).then(|| sent.clone());
        Ok((feed(packer, Arc::new(connector), sent), open))
    }

    /// Handles one outcome: writes an answer, reports a failure. A split pack's records
    /// that must run again come back, with their outcomes, to be handled next.
    fn handle(
        &self,
        (pack, outcome): Outcome,
        out: &mut impl Write,
        tally: &mut Tally,
        packing: &Packing,
        open: Option<&Sent>,
    ) -> Result<Vec<Outcome>, Stop> {
        match outcome {
            Ok(answer) => self.write_answer(pack, answer, out, tally, packing),
            Err(_) if INTERRUPTED.load(Ordering::Acquire) => Err(Stop::Interrupted),
            Err(error) if self.args.connect.is_some() && error.kind() == ErrorKind::Cancelled => {
                // The standalone broker is unreachable, refused our key, or went silent:
                // every task would fail the same way.
                Err(Stop::BrokerLost(error))
            }
            Err(error) => {
                let pack = pack.or_else(|| open.and_then(|o| self.which_failed(o)));
                let records: Vec<Option<u64>> = match pack {
                    Some((first, count)) => {
                        packing.done(count as u64);
                        (first..first + count as u64).map(Some).collect()
                    }
                    None => vec![None],
                };
                for record in records {
                    self.count_failure(record, &error, out, tally)?;
                }
                Ok(Vec::new())
            }
        }
    }

    /// Writes an answered pack's answers; for a split pack (its command died inside it),
    /// counts a try against the record it died on and runs the rest again one by one.
    fn write_answer(
        &self,
        pack: Option<(u64, u32)>,
        answer: Answer,
        out: &mut impl Write,
        tally: &mut Tally,
        packing: &Packing,
    ) -> Result<Vec<Outcome>, Stop> {
        let separator = self.separator;
        let head = answer.head;
        self.replay(head.record, out, tally)?;
        for r in head.record..head.record + head.count as u64 {
            self.monitor.forget(r);
        }
        tally.done += head.count as u64;
        if let Some(t) = tally
            .workers
            .get_mut((head.worker as usize).wrapping_sub(1))
        {
            t.tasks += head.count as u64;
            t.busy += Duration::from_micros(head.busy_us as u64);
        }
        let cut = after_records(&answer.bytes, head.count, separator).unwrap_or(answer.bytes.len());
        out.write_all(&answer.bytes[..cut]).map_err(Stop::Write)?;
        self.log_answers(&answer, cut)?;
        if !head.split {
            packing.answered(head.count, head.busy_us);
            packing.done(pack.map_or(head.count, |(_, n)| n) as u64);
            return Ok(Vec::new());
        }
        packing.done(head.count as u64);
        let none_answered = tally.none_answered();
        if head.blameless {
            let first = head.record + head.count as u64;
            return Ok(self.run_alone(first, &answer.bytes[cut..], none_answered));
        }
        // The command died on the first record it did not answer. The engine charged
        // nothing for it (a split pack is answered), so its tries are counted here.
        let guilty = head.record + head.count as u64;
        let mut rest = &answer.bytes[cut..];
        let tries = tally.tries.entry(guilty).or_insert(0);
        *tries += 1;
        let mut first = guilty;
        if *tries >= self.args.retries {
            tally.tries.remove(&guilty);
            packing.done(1);
            let error = TaskError::new(
                ErrorKind::WorkerLost,
                format!("the command died on it {} times", self.args.retries),
            );
            self.count_failure(Some(guilty), &error, out, tally)?;
            let skip = after_records(rest, 1, separator).unwrap_or(rest.len());
            rest = &rest[skip..];
            first += 1;
        }
        Ok(self.run_alone(first, rest, none_answered))
    }

    /// Counts and reports a failed record; stops the run under `--fail-fast`.
    fn count_failure(
        &self,
        record: Option<u64>,
        error: &TaskError,
        out: &mut impl Write,
        tally: &mut Tally,
    ) -> Result<(), Stop> {
        if let Some(record) = record {
            self.replay(record, out, tally)?;
            let message = error.to_string();
            self.log(&Finished {
                record,
                host: "-",
                slot: 0,
                runtime: None,
                ok: false,
                output: message.as_bytes(),
            })?;
        }
        tally.failed += 1;
        tally.done += 1;
        self.report_failure(record, error, tally.failed <= DETAILED_FAILURES);
        if self.args.fail_fast {
            self.progress.println("zerotasq: stopping (--fail-fast)");
            return Err(Stop::FailFast);
        }
        Ok(())
    }

    /// The exit status, after the summary and what stopped the run early, if anything.
    fn conclude(
        &self,
        stop: Option<Stop>,
        tally: Tally,
        input_error: Option<std::io::Error>,
        started: Instant,
    ) -> i32 {
        match stop {
            // The main thread reports the interruption.
            _ if INTERRUPTED.load(Ordering::Acquire) => return 0,
            // `| head`: the reader has all it wants.
            Some(Stop::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => return 0,
            Some(Stop::Write(e)) => {
                say(&format!("zerotasq: cannot write the output: {e}"));
                return EXIT_USAGE;
            }
            Some(Stop::BrokerLost(error)) => {
                say(&format!("zerotasq: {error}"));
                return EXIT_USAGE;
            }
            Some(Stop::JobLog(why)) => {
                say(&format!("zerotasq: {why}"));
                return EXIT_USAGE;
            }
            Some(Stop::NeverAnswers(deaths, worker, reason)) => {
                say(&format!(
                    "zerotasq: giving up: the worker command died {deaths} times and never \
                     answered a line; the last: [w{worker}] {reason}"
                ));
                return EXIT_USAGE;
            }
            Some(Stop::Desync(worker, reason)) => {
                say(&format!(
                    "zerotasq: [w{worker}] {reason}; stopping: its answers cannot be matched \
                     to lines, and the output so far may hold some in the wrong place"
                ));
                return EXIT_USAGE;
            }
            Some(Stop::FailFast | Stop::Interrupted) | None => {}
        }
        let mut code = if tally.failed > 0 {
            EXIT_FAILED_TASKS
        } else {
            0
        };
        if let Some(e) = input_error {
            say(&format!("zerotasq: cannot read the input: {e}"));
            code = EXIT_USAGE;
        }
        let summary = Summary {
            tasks: tally.done,
            failed: tally.failed,
            retries: self.stats().map_or(0, |s| s.requeued),
            wall: started.elapsed(),
            jobs: self.local_slots(),
            tallies: tally.workers,
            slots: self.monitor.slots(),
        };
        match self.args.stats {
            StatsFormat::Text => say(&summary.text()),
            StatsFormat::Json => say(&summary.json()),
            StatsFormat::None => {}
        }
        code
    }

    /// Writes the answers and failures of records done before `record` (a resumed run's),
    /// from the joblog, at their place in the output.
    fn replay(&self, record: u64, out: &mut impl Write, tally: &mut Tally) -> Result<(), Stop> {
        let mut joblog = self.joblog.lock().expect("joblog lock");
        let Some(joblog) = joblog.as_mut() else {
            return Ok(());
        };
        let (answered, failed) = joblog
            .replay_before(record, self.separator, out)
            .map_err(Stop::Write)?;
        tally.done += answered;
        for (record, message) in failed {
            tally.failed += 1;
            tally.done += 1;
            let error = TaskError::new(ErrorKind::WorkerLost, message);
            self.report_failure(Some(record), &error, false);
        }
        Ok(())
    }

    /// Logs each record of an answered pack: `answer.bytes[..cut]` holds their answers.
    fn log_answers(&self, answer: &Answer, cut: usize) -> Result<(), Stop> {
        if self.joblog.lock().expect("joblog lock").is_none() {
            return Ok(());
        }
        let head = answer.head;
        let runtime = Duration::from_micros(head.busy_us.into()) / head.count.max(1);
        let answers = answer.bytes[..cut].split(|&b| b == self.separator);
        for (record, output) in (head.record..).zip(answers).take(head.count as usize) {
            self.log(&Finished {
                record,
                host: &answer.host,
                slot: head.worker,
                runtime: Some(runtime),
                ok: true,
                output,
            })?;
        }
        Ok(())
    }

    fn log(&self, finished: &Finished<'_>) -> Result<(), Stop> {
        match self.joblog.lock().expect("joblog lock").as_mut() {
            Some(joblog) => joblog.log(finished).map_err(Stop::JobLog),
            None => Ok(()),
        }
    }

    fn flush_joblog(&self) -> Result<(), Stop> {
        match self.joblog.lock().expect("joblog lock").as_mut() {
            Some(joblog) => joblog.flush().map_err(Stop::JobLog),
            None => Ok(()),
        }
    }

    /// Runs the records of a split pack (`first` and on, each ended by the separator) one
    /// per task, in order; their outcomes, each with its record. While no record has been
    /// answered, it stops early once the run gives up (`never_answers`).
    fn run_alone(&self, first: u64, records: &[u8], none_answered: bool) -> Vec<Outcome> {
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
                .take_while(|(_, o)| o.is_ok() || !none_answered || self.never_answers().is_none())
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
            // Why its workers died (or were stopped): their last words, and how.
            (Some(r), ErrorKind::WorkerLost | ErrorKind::Timeout) => {
                self.monitor.death(r, DEATH_NEWS_WAIT)
            }
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
