//! The seed's `Connector`: blocking `send` and `recv` usable from two threads, for programs
//! that feed the pool from one thread and drain it from another.
//!
//! A socket belongs to one thread, so an I/O thread owns the client socket: `send` encodes
//! the task and hands it over an in-process pair; outcomes come back over a channel, in send
//! order or as completed. `send` blocks while `window` tasks are sent but not yet received.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::client::{read_reply, DecodeFn, EncodeFn, Reply};
use crate::error::{Error, ErrorKind, TaskError, TimedOut};
use crate::link::{too_big, Link, Unanswered, Watch};
use crate::protocol::{header, Command, TaskBatchWriter};
use crate::reorder::Reorder;
use crate::transport::{poll, Frame, Pollable, Socket};

/// Frames on the pair from `send` to the I/O thread.
const TASK: &[u8] = b"task";
const FINISH: &[u8] = b"finish";
const STOP: &[u8] = b"stop";

struct Permits {
    in_flight: usize,
    finished: bool,
}

/// Blocking `send`/`recv` over a pool, shareable between threads (`&Connector` is `Sync`).
pub struct Connector<T, O> {
    feed: Mutex<Socket>,
    encode: Mutex<EncodeFn<T>>,
    results: Mutex<Receiver<Result<O, TaskError>>>,
    permits: Mutex<Permits>,
    freed: Condvar,
    window: usize,
    stop: Arc<AtomicBool>,
    io: Option<JoinHandle<()>>,
}

impl<T, O: Send + 'static> Connector<T, O> {
    pub(crate) fn new(
        link: &Link,
        window: usize,
        ordered: bool,
        encode: EncodeFn<T>,
        decode: DecodeFn<O>,
    ) -> Result<Self, Error> {
        static CONNECTORS: AtomicU64 = AtomicU64::new(0);
        let endpoint = format!(
            "inproc://zerotasq-connector-{}-{}",
            std::process::id(),
            CONNECTORS.fetch_add(1, Ordering::Relaxed)
        );
        let client = link.socket()?;
        let inner = link.pair_socket()?;
        inner.bind(&endpoint)?;
        let feed = link.pair_socket()?;
        feed.connect(&endpoint)?;
        let (tx, rx) = channel();
        let mut watch = link.watch();
        let unanswered = Unanswered::new(link);
        let max_payload = link.max_payload();
        let stop = Arc::new(AtomicBool::new(false));
        let io_stop = stop.clone();
        let io = std::thread::Builder::new()
            .name("zerotasq-connector".into())
            .spawn(move || {
                let mut io = ConnectorIo {
                    client,
                    inner,
                    decode,
                    tx,
                    next_id: 0,
                    outstanding: HashSet::new(),
                    delivery: Reorder::new(ordered),
                    unanswered,
                    max_payload,
                    finished: false,
                };
                if let Err(why) = io.run(&mut watch, &io_stop) {
                    io.fail_all(TaskError::new(ErrorKind::Cancelled, why));
                }
            })
            .map_err(Error::io("start the connector thread"))?;
        Ok(Connector {
            feed: Mutex::new(feed),
            encode: Mutex::new(encode),
            results: Mutex::new(rx),
            permits: Mutex::new(Permits {
                in_flight: 0,
                finished: false,
            }),
            freed: Condvar::new(),
            window: window.max(1),
            stop,
            io: Some(io),
        })
    }

    /// Sends one task; blocks while `window` tasks are sent but not yet received. A task that
    /// cannot be encoded is refused here, with the error.
    pub fn send(&self, task: T) -> Result<(), TaskError> {
        let mut bytes = Vec::new();
        (self.encode.lock().expect("encoder lock"))(task, &mut bytes)?;
        let mut permits = self.permits.lock().expect("permits lock");
        if permits.finished {
            return Err(TaskError::new(ErrorKind::Cancelled, "send after finish"));
        }
        while permits.in_flight >= self.window {
            permits = self.freed.wait(permits).expect("permits lock");
        }
        permits.in_flight += 1;
        drop(permits);
        let frames: [Frame; 2] = [TASK.into(), bytes.into()];
        // Non-blocking: the window keeps the pair far below its high-water mark, so a refusal
        // means the I/O thread has ended (the pool is gone).
        self.feed
            .lock()
            .expect("feed lock")
            .send(frames, false)
            .map_err(|_| TaskError::new(ErrorKind::Cancelled, "the connector is closed"))
    }

    /// Says no more tasks will be sent; `recv` returns `None` once all outcomes are out.
    pub fn finish(&self) {
        let mut permits = self.permits.lock().expect("permits lock");
        if !permits.finished {
            permits.finished = true;
            let _ = self.feed.lock().expect("feed lock").send([FINISH], false);
        }
    }

    /// The next outcome; blocks until one arrives. `None` after [`Connector::finish`] once
    /// every sent task's outcome has been received.
    pub fn recv(&self) -> Option<Result<O, TaskError>> {
        let outcome = self.results.lock().expect("results lock").recv().ok()?;
        self.release();
        Some(outcome)
    }

    /// Like [`Connector::recv`], giving up after `timeout` (`Ok(None)`: finished).
    pub fn recv_timeout(
        &self,
        timeout: Duration,
    ) -> Result<Option<Result<O, TaskError>>, TimedOut> {
        use std::sync::mpsc::RecvTimeoutError;
        match self
            .results
            .lock()
            .expect("results lock")
            .recv_timeout(timeout)
        {
            Ok(outcome) => {
                self.release();
                Ok(Some(outcome))
            }
            Err(RecvTimeoutError::Disconnected) => Ok(None),
            Err(RecvTimeoutError::Timeout) => Err(TimedOut),
        }
    }

    fn release(&self) {
        let mut permits = self.permits.lock().expect("permits lock");
        permits.in_flight -= 1;
        self.freed.notify_one();
    }
}

impl<T, O> Drop for Connector<T, O> {
    fn drop(&mut self) {
        // The I/O thread may have ended already (all outcomes delivered): never block here.
        self.stop.store(true, Ordering::Release);
        if let Ok(feed) = self.feed.lock() {
            let _ = feed.send([STOP], false);
        }
        if let Some(io) = self.io.take() {
            let _ = io.join();
        }
    }
}

/// The I/O thread's state.
struct ConnectorIo<O> {
    client: Socket,
    inner: Socket,
    decode: DecodeFn<O>,
    tx: Sender<Result<O, TaskError>>,
    next_id: u64,
    outstanding: HashSet<u64>,
    /// Outcomes not yet handed over: in order of the task ids, or as they came.
    delivery: Reorder<Result<O, TaskError>>,
    finished: bool,
    /// Unanswered tasks' payloads, to submit again to a broker that restarted.
    unanswered: Unanswered,
    /// The largest task payload the link carries.
    max_payload: usize,
}

impl<O> ConnectorIo<O> {
    /// Moves tasks out and outcomes in until finished or stopped; an error says why the
    /// broker is unusable.
    fn run(&mut self, watch: &mut Watch, stop: &AtomicBool) -> Result<(), String> {
        loop {
            if self.finished && self.outstanding.is_empty() {
                return Ok(());
            }
            if stop.load(Ordering::Acquire) {
                let _ = self.client.send([header(Command::Cancel)], false);
                return Ok(());
            }
            let readable = poll(
                &[
                    Pollable::Socket(&self.inner),
                    Pollable::Socket(&self.client),
                ],
                Some(Duration::from_millis(200)),
            )
            .map_err(|e| e.to_string())?;
            if readable[0] {
                let was_idle = self.outstanding.is_empty();
                let mut batch = TaskBatchWriter::new();
                while let Some(frames) = self.inner.recv(false).map_err(|e| e.to_string())? {
                    match frames.first().map(|f| &f[..]) {
                        Some(TASK) if frames.len() == 2 && frames[1].len() > self.max_payload => {
                            let error = too_big("task", frames[1].len(), self.max_payload);
                            self.deliver(self.next_id, Err(error));
                            self.next_id += 1;
                        }
                        Some(TASK) if frames.len() == 2 => {
                            self.outstanding.insert(self.next_id);
                            self.unanswered.keep(self.next_id, &frames[1]);
                            batch.push(self.next_id, &frames[1]);
                            self.next_id += 1;
                        }
                        Some(FINISH) => {
                            self.finished = true;
                            // No batch waits for more of our tasks (an empty batch).
                            let end = [
                                header(Command::Submit).to_vec(),
                                TaskBatchWriter::new().finish(),
                            ];
                            let _ = self.client.send(end, true);
                        }
                        Some(STOP) => {
                            let _ = self.client.send([header(Command::Cancel)], false);
                            return Ok(());
                        }
                        _ => tracing::error!("connector: unexpected internal message"),
                    }
                }
                if !batch.is_empty() {
                    let frames: [Frame; 2] =
                        [header(Command::Submit).into(), batch.finish().into()];
                    self.client
                        .send(frames, true)
                        .map_err(|_| watch.unreachable())?;
                    if was_idle {
                        watch.heard();
                    }
                }
            }
            if readable[1] {
                while let Some(frames) = self.client.recv(false).map_err(|e| e.to_string())? {
                    watch.heard();
                    self.on_message(&frames)?;
                }
            } else if !self.outstanding.is_empty() {
                if let Some(why) = watch.gone() {
                    return Err(why);
                }
                self.unanswered.ask_if_silent(&self.client, watch);
            }
        }
    }

    fn on_message(&mut self, frames: &[Frame]) -> Result<(), String> {
        match read_reply(frames, &mut self.decode)? {
            Reply::Outcomes(outcomes) => {
                for (id, value) in outcomes {
                    if self.outstanding.remove(&id) {
                        self.unanswered.answered(id);
                        self.deliver(id, value);
                    }
                }
            }
            Reply::Forgotten => self.unanswered.resubmit(&self.client)?,
            Reply::Nothing => {}
        }
        Ok(())
    }

    fn deliver(&mut self, id: u64, value: Result<O, TaskError>) {
        self.delivery.store(id, value);
        while let Some((_, value)) = self.delivery.pop() {
            let _ = self.tx.send(value);
        }
    }

    fn fail_all(&mut self, error: TaskError) {
        let mut ids: Vec<u64> = self.outstanding.drain().collect();
        ids.sort_unstable();
        for id in ids {
            self.deliver(id, Err(error.clone()));
        }
    }
}
