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
        let mut said_all = false;
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
                        Some(FINISH) => self.finished = true,
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
                if self.finished && !said_all {
                    // After our last tasks, never before them: no batch waits for more of
                    // them (an empty batch says so).
                    said_all = true;
                    let end = [
                        header(Command::Submit).to_vec(),
                        TaskBatchWriter::new().finish(),
                    ];
                    let _ = self.client.send(end, true);
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

#[cfg(test)]
mod tests {
    //! The connector against a broker the test plays: a ROUTER socket in process, driven
    //! by hand, so each reply's order and kind is chosen.

    use super::*;
    use crate::link::{BrokerAccess, RemoteBroker};
    use crate::protocol::{Message, ResultBatchWriter};
    use crate::transport::{Context, Kind};

    struct FakeBroker {
        socket: Socket,
        /// The connector's routing id, from its first message.
        client: Option<Vec<u8>>,
    }

    impl FakeBroker {
        /// The next message from the client (bounded wait), without its routing id.
        fn expect(&mut self) -> Vec<Vec<u8>> {
            let ready = poll(
                &[Pollable::Socket(&self.socket)],
                Some(Duration::from_secs(10)),
            )
            .expect("poll");
            assert!(ready[0], "the connector sent nothing within 10 s");
            let frames = self.socket.recv(true).expect("recv").expect("a message");
            self.client = Some(frames[0].to_vec());
            frames[1..].iter().map(|f| f.to_vec()).collect()
        }

        /// The (id, payload) pairs of the client's next `Submit`s, until `n` are in.
        fn submitted(&mut self, n: usize) -> Vec<(u64, Vec<u8>)> {
            let mut tasks = Vec::new();
            while tasks.len() < n {
                let frames = self.expect();
                match Message::decode(&frames).expect("a message") {
                    Message::Submit(batch) => {
                        tasks.extend(batch.iter().map(|(id, p)| (id, p.to_vec())))
                    }
                    other => panic!("expected a Submit, got {:?}", other.command()),
                }
            }
            tasks
        }

        fn reply(&self, frames: Vec<Vec<u8>>) {
            let mut all = vec![self.client.clone().expect("the client spoke first")];
            all.extend(frames);
            self.socket.send(all, true).expect("send");
        }

        /// Answers `ids`, each with its payload reversed.
        fn answer(&self, tasks: &[(u64, Vec<u8>)], ids: &[u64]) {
            let mut batch = ResultBatchWriter::new();
            for id in ids {
                let (_, payload) = tasks.iter().find(|(t, _)| t == id).expect("a task");
                let reversed: Vec<u8> = payload.iter().rev().copied().collect();
                batch.push_ok(*id, &reversed);
            }
            self.reply(vec![header(Command::Results).to_vec(), batch.finish(0)]);
        }
    }

    /// A connector to a fake broker: in process, or (`remote`) over TCP on loopback, as a
    /// client of a standalone broker, which keeps its tasks' payloads.
    fn connector_to(
        window: usize,
        ordered: bool,
        remote: bool,
    ) -> (Connector<String, String>, FakeBroker) {
        static BROKERS: AtomicU64 = AtomicU64::new(0);
        let ctx = Context::new();
        let socket = ctx.socket(Kind::Router, -1).expect("router");
        let link = if remote {
            socket.bind("tcp://127.0.0.1:0").expect("bind");
            let endpoint = socket.last_endpoint().expect("endpoint");
            let broker = RemoteBroker::connect(&endpoint, crate::Security::Insecure, false);
            broker.expect("remote link").link().clone()
        } else {
            let n = BROKERS.fetch_add(1, Ordering::Relaxed);
            let endpoint = format!("inproc://connector-test-{n}");
            socket.bind(&endpoint).expect("bind");
            Link::local(ctx, endpoint, -1, Arc::new(AtomicBool::new(true)))
        };
        let encode: EncodeFn<String> = Box::new(|task: String, buf: &mut Vec<u8>| {
            buf.extend_from_slice(task.as_bytes());
            Ok(())
        });
        let decode: DecodeFn<String> =
            Box::new(|bytes: &[u8]| Ok(String::from_utf8_lossy(bytes).into_owned()));
        let conn = Connector::new(&link, window, ordered, encode, decode).expect("connector");
        let broker = FakeBroker {
            socket,
            client: None,
        };
        (conn, broker)
    }

    fn connector(window: usize, ordered: bool) -> (Connector<String, String>, FakeBroker) {
        connector_to(window, ordered, false)
    }

    #[test]
    fn outcomes_come_in_send_order_whatever_order_the_broker_answers_in() {
        let (conn, mut broker) = connector(8, true);
        for word in ["ab", "cd", "ef"] {
            conn.send(word.to_string()).unwrap();
        }
        let tasks = broker.submitted(3);
        let ids: Vec<u64> = tasks.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [0, 1, 2], "ids in send order");
        broker.answer(&tasks, &[2]);
        broker.answer(&tasks, &[0, 1]);
        let got: Vec<String> = (0..3).map(|_| conn.recv().unwrap().unwrap()).collect();
        assert_eq!(got, ["ba", "dc", "fe"]);
    }

    #[test]
    fn unordered_outcomes_come_as_answered() {
        let (conn, mut broker) = connector(8, false);
        for word in ["ab", "cd"] {
            conn.send(word.to_string()).unwrap();
        }
        let tasks = broker.submitted(2);
        broker.answer(&tasks, &[1]);
        assert_eq!(conn.recv().unwrap().unwrap(), "dc");
        broker.answer(&tasks, &[0]);
        assert_eq!(conn.recv().unwrap().unwrap(), "ba");
    }

    #[test]
    fn send_waits_while_the_window_is_full() {
        let (conn, mut broker) = connector(1, true);
        conn.send("ab".to_string()).unwrap();
        let tasks = broker.submitted(1);
        std::thread::scope(|s| {
            let (sent_tx, sent_rx) = std::sync::mpsc::channel();
            let conn = &conn;
            s.spawn(move || {
                conn.send("cd".to_string()).unwrap();
                sent_tx.send(()).unwrap();
            });
            // The second task waits for the first outcome to be received, not merely answered.
            broker.answer(&tasks, &[0]);
            assert!(
                sent_rx.recv_timeout(Duration::from_millis(300)).is_err(),
                "sent past a full window"
            );
            assert_eq!(conn.recv().unwrap().unwrap(), "ba");
            sent_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("sent once the window had room");
        });
        let tasks = broker.submitted(1);
        assert_eq!(tasks, [(1, b"cd".to_vec())]);
    }

    #[test]
    fn a_broker_that_forgot_gets_the_unanswered_tasks_again_under_their_ids() {
        let (conn, mut broker) = connector_to(8, true, true);
        for word in ["ab", "cd", "ef"] {
            conn.send(word.to_string()).unwrap();
        }
        let tasks = broker.submitted(3);
        broker.answer(&tasks, &[1]);
        // A restarted broker: it knows nothing of tasks 0 and 2.
        broker.reply(vec![header(Command::Forgotten).to_vec()]);
        let mut again = broker.submitted(2);
        again.sort();
        assert_eq!(again, [(0, b"ab".to_vec()), (2, b"ef".to_vec())]);
        broker.answer(&tasks, &[0, 2]);
        let got: Vec<String> = (0..3).map(|_| conn.recv().unwrap().unwrap()).collect();
        assert_eq!(got, ["ba", "dc", "fe"], "each task has exactly one outcome");
    }

    #[test]
    fn finish_ends_the_outcomes_once_all_are_in_and_refuses_later_sends() {
        let (conn, mut broker) = connector(8, true);
        conn.send("ab".to_string()).unwrap();
        conn.finish();
        let tasks = broker.submitted(1);
        // Then the empty Submit that says the client has sent all it has (after its tasks:
        // the broker must not take it for done while tasks are on their way).
        assert!(matches!(
            Message::decode(&broker.expect()).unwrap(),
            Message::Submit(batch) if batch.iter().next().is_none()
        ));
        broker.answer(&tasks, &[0]);
        assert_eq!(conn.recv().unwrap().unwrap(), "ba");
        assert!(conn.recv().is_none());
        assert!(conn.send("cd".to_string()).is_err());
    }
}
