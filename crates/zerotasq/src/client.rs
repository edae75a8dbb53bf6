//! The client: streams an input through the broker and yields one outcome per task, in input
//! order or as completed.
//!
//! The input is pulled only while the window (tasks submitted but not yet yielded) has room,
//! so memory stays bounded whatever the input's length; the ordered reorder buffer holds at
//! most `window` outcomes. Tasks are submitted in batches: the window refills once an eighth
//! of it is free, or at once when nothing is ready to yield.
//!
//! A stream may outlive its pool (its socket keeps the ZeroMQ context alive): once the pool
//! is closed, every task still open ends as a `Cancelled` error.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, TaskError, TimedOut};
use crate::link::{too_big, Link, Unanswered, Watch};
use crate::protocol::{header, Command, Message, Outcome, ProtocolError, TaskBatchWriter, VERSION};
use crate::reorder::Reorder;
use crate::transport::{Frame, SendError, Socket};

/// A submission is cut into messages of about this size.
const SUBMIT_BYTES: usize = 4 << 20;
/// How long a blocked receive waits before checking that the broker is still there.
const BROKER_CHECK: Duration = Duration::from_millis(200);

/// Encodes one input item into the task's bytes.
pub type EncodeFn<T> = Box<dyn FnMut(T, &mut Vec<u8>) -> Result<(), TaskError> + Send>;
/// Decodes one output from the result's bytes.
pub type DecodeFn<O> = Box<dyn FnMut(&[u8]) -> Result<O, TaskError> + Send>;

/// An outcome with the index of the input item it belongs to.
pub type Indexed<O> = (u64, Result<O, TaskError>);

/// Reads one message from the broker: the outcomes it carries (decoded), `None` for one that
/// carries none (a heartbeat, or a malformed message, dropped), or why the broker cannot
/// serve this client. Shared by [`Stream`] and the connector.
pub(crate) fn read_reply<O>(
    frames: &[Frame],
    decode: &mut DecodeFn<O>,
) -> Result<Reply<O>, String> {
    match Message::decode(frames) {
        Ok(Message::Results(batch)) => Ok(Reply::Outcomes(
            batch
                .iter()
                .map(|(id, outcome)| {
                    let value = match outcome {
                        Outcome::Ok(bytes) => decode(bytes),
                        Outcome::Err(bytes) => Err(TaskError::decode(bytes)),
                    };
                    (id, value)
                })
                .collect(),
        )),
        Ok(Message::Heartbeat) => Ok(Reply::Nothing),
        Ok(Message::Forgotten) => Ok(Reply::Forgotten),
        Ok(Message::Fatal(why)) => Err(why.to_string()),
        Err(ProtocolError::VersionMismatch { got }) => Err(format!(
            "the broker speaks protocol version {got}; this client speaks version {VERSION}"
        )),
        Ok(other) => {
            tracing::warn!("client ignored {:?}", other.command());
            Ok(Reply::Nothing)
        }
        Err(e) => {
            tracing::warn!("client dropped a malformed message: {e}");
            Ok(Reply::Nothing)
        }
    }
}

/// What a message from the broker means to a client.
pub(crate) enum Reply<O> {
    /// Outcomes, by task id.
    Outcomes(Vec<Indexed<O>>),
    /// The broker holds none of our tasks: submit the unanswered ones again.
    Forgotten,
    Nothing,
}

/// The lazy iterator behind `map` and `map_unordered`: one outcome per input item.
pub struct Stream<I: Iterator, O> {
    socket: Socket,
    input: Option<I>,
    encode: EncodeFn<I::Item>,
    decode: DecodeFn<O>,
    window: usize,
    next_id: u64,
    /// Submitted (or failed to encode) and not yet yielded.
    in_flight: usize,
    outstanding: HashSet<u64>,
    delivery: Reorder<Result<O, TaskError>>,
    watch: Watch,
    /// The broker was told we have nothing more for now (since our last tasks).
    said_all: bool,
    /// Unanswered tasks' payloads, to submit again to a broker that restarted.
    unanswered: Unanswered,
    /// The largest task payload the link carries.
    max_payload: usize,
}

impl<I: Iterator, O> Stream<I, O> {
    pub(crate) fn new(
        link: &Link,
        input: I,
        window: usize,
        ordered: bool,
        encode: EncodeFn<I::Item>,
        decode: DecodeFn<O>,
    ) -> Result<Self, Error> {
        Ok(Stream {
            socket: link.socket()?,
            input: Some(input),
            encode,
            decode,
            window: window.max(1),
            next_id: 0,
            in_flight: 0,
            outstanding: HashSet::new(),
            delivery: Reorder::new(ordered),
            watch: link.watch(),
            said_all: false,
            unanswered: Unanswered::new(link),
            max_payload: link.max_payload(),
        })
    }

    /// Tasks submitted (or failed to encode) whose outcome has not been yielded yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Changes the window: the input is pulled while fewer than `window` tasks are in flight.
    /// A caller whose tasks carry several items each (packs) keeps its item count bounded by
    /// setting it before each wait. A window at or below [`Stream::in_flight`] pulls nothing
    /// more; the stream then ends once the tasks in flight are yielded.
    pub fn set_window(&mut self, window: usize) {
        self.window = window;
    }

    /// Pulls input into free window slots and submits it as one batch.
    fn fill(&mut self) -> Result<(), TaskError> {
        let free = self.window.saturating_sub(self.in_flight);
        let refill_at = (self.window / 8).max(1);
        if free == 0 && !self.said_all && self.input.is_some() {
            // A window made smaller (set_window) is full without a fill.
            self.said_all = true;
            return self.send_submit(TaskBatchWriter::new());
        }
        if free == 0 || (free < refill_at && self.delivery.has_ready()) {
            return Ok(());
        }
        // Taken out while pulling, so batches can be sent on the way; put back unless done.
        let Some(mut input) = self.input.take() else {
            return Ok(());
        };
        let was_idle = self.outstanding.is_empty();
        let mut writer = TaskBatchWriter::new();
        let mut exhausted = false;
        for _ in 0..free {
            let Some(item) = input.next() else {
                exhausted = true;
                break;
            };
            let id = self.next_id;
            self.next_id += 1;
            self.in_flight += 1;
            let encode = &mut self.encode;
            match writer.push_with(id, |buf| encode(item, buf)) {
                Ok(()) if writer.last_payload().len() > self.max_payload => {
                    let len = writer.last_payload().len();
                    writer.pop_last();
                    self.delivery
                        .store(id, Err(too_big("task", len, self.max_payload)));
                }
                Ok(()) => {
                    self.outstanding.insert(id);
                    self.unanswered.keep(id, writer.last_payload());
                }
                Err(e) => self.delivery.store(id, Err(e)),
            }
            // Big payloads go out in several messages, each far below a peer's size limit.
            if writer.byte_len() >= SUBMIT_BYTES {
                self.submit(std::mem::take(&mut writer))?;
            }
        }
        if !exhausted {
            self.input = Some(input);
        }
        let sent_some = !writer.is_empty();
        self.submit(writer)?;
        // Nothing more can come for now — the input is exhausted or the window is full:
        // the broker hears it (an empty batch), so no batch waits for more of our tasks.
        if exhausted || self.in_flight >= self.window {
            if sent_some || !self.said_all {
                self.said_all = true;
                self.send_submit(TaskBatchWriter::new())?;
            }
        } else if sent_some {
            self.said_all = false;
        }
        if was_idle {
            // Silence is counted from when we started waiting.
            self.watch.heard();
        }
        Ok(())
    }

    fn submit(&mut self, writer: TaskBatchWriter) -> Result<(), TaskError> {
        if writer.is_empty() {
            return Ok(());
        }
        self.send_submit(writer)
    }

    fn send_submit(&mut self, writer: TaskBatchWriter) -> Result<(), TaskError> {
        let frames: [Frame; 2] = [header(Command::Submit).into(), writer.finish().into()];
        match self.socket.send(frames, true) {
            Ok(()) => Ok(()),
            Err(SendError::Other(e)) => Err(TaskError::new(
                ErrorKind::Cancelled,
                format!("cannot submit tasks: {e}"),
            )),
            Err(_) => Err(TaskError::new(
                ErrorKind::Cancelled,
                self.watch.unreachable(),
            )),
        }
    }

    /// Waits for the next batch of outcomes, until `until` if given; `Ok(false)` when that
    /// time came first.
    fn receive(&mut self, until: Option<Instant>) -> Result<bool, TaskError> {
        loop {
            let slice = match until {
                Some(until) => {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(false);
                    }
                    left.min(BROKER_CHECK)
                }
                None => BROKER_CHECK,
            };
            let frames = self.socket.recv_timeout(slice).map_err(|e| {
                TaskError::new(ErrorKind::Cancelled, format!("cannot receive: {e}"))
            })?;
            let Some(frames) = frames else {
                if let Some(why) = self.watch.gone() {
                    return Err(TaskError::new(ErrorKind::Cancelled, why));
                }
                self.unanswered.ask_if_silent(&self.socket, &self.watch);
                continue;
            };
            self.watch.heard();
            let reply = read_reply(&frames, &mut self.decode)
                .map_err(|why| TaskError::new(ErrorKind::Cancelled, why))?;
            let outcomes = match reply {
                Reply::Outcomes(outcomes) => outcomes,
                Reply::Forgotten => {
                    self.unanswered
                        .resubmit(&self.socket)
                        .map_err(|why| TaskError::new(ErrorKind::Cancelled, why))?;
                    continue;
                }
                Reply::Nothing => continue,
            };
            for (id, value) in outcomes {
                if self.outstanding.remove(&id) {
                    self.unanswered.answered(id);
                    self.delivery.store(id, value);
                }
            }
            return Ok(true);
        }
    }

    /// Fails every outstanding task with `error` (the broker is gone).
    fn fail_outstanding(&mut self, error: TaskError) {
        let mut ids: Vec<u64> = self.outstanding.drain().collect();
        ids.sort_unstable();
        for id in ids {
            self.delivery.store(id, Err(error.clone()));
        }
        self.input = None;
    }
}

impl<I: Iterator, O> Stream<I, O> {
    /// Yields `(index of the input item, outcome)` instead of the bare outcome: what an
    /// unordered consumer needs to tell which input an outcome (or an error) belongs to.
    pub fn indexed(mut self) -> impl Iterator<Item = Indexed<O>> {
        std::iter::from_fn(move || self.next_indexed())
    }

    /// Like `next`, but gives up at `timeout` — for callers that must stay responsive while
    /// they wait (an interpreter checking for Ctrl-C between waits).
    pub fn next_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Result<O, TaskError>>, TimedOut> {
        self.next_indexed_timeout(timeout)
            .map(|item| item.map(|(_, outcome)| outcome))
    }

    /// [`Stream::next_timeout`] with the index of the input item.
    pub fn next_indexed_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Indexed<O>>, TimedOut> {
        self.advance(Some(Instant::now() + timeout)).ok_or(TimedOut)
    }

    fn next_indexed(&mut self) -> Option<Indexed<O>> {
        self.advance(None).expect("no deadline, so never timed out")
    }

    /// The next outcome; `None` inside when the stream is done, `None` outside when `until`
    /// came first.
    fn advance(&mut self, until: Option<Instant>) -> Option<Option<Indexed<O>>> {
        loop {
            if let Err(e) = self.fill() {
                self.fail_outstanding(e);
            }
            if let Some(outcome) = self.delivery.pop() {
                self.in_flight -= 1;
                return Some(Some(outcome));
            }
            if self.in_flight == 0 {
                return Some(None);
            }
            match self.receive(until) {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => self.fail_outstanding(e),
            }
        }
    }
}

impl<I: Iterator, O> Iterator for Stream<I, O> {
    type Item = Result<O, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_indexed().map(|(_, outcome)| outcome)
    }
}

impl<I: Iterator, O> Drop for Stream<I, O> {
    fn drop(&mut self) {
        if !self.outstanding.is_empty() || self.input.is_some() {
            // Stop the broker feeding workers with tasks nobody will read.
            let _ = self.socket.send([header(Command::Cancel)], false);
        }
    }
}
