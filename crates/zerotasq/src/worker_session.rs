//! One worker's session with its broker, the part every kind of worker shares: it joins
//! (`Ready` with capacity, pid and host), keeps heartbeats going, notices a silent broker,
//! refuses a broker of another protocol version, sends results, and leaves cleanly.
//!
//! It owns the socket to the broker and nothing else, so each worker drives it from its own
//! loop: the engine's [`crate::worker_runtime::serve`] from an I/O thread beside the thread
//! that runs tasks, the command line's adapter from the one loop that also pipelines lines
//! into the user's command. Both therefore follow the same rules.
//!
//! Leaving ([`WorkerSession::leave`]) is the one sequence that makes an early exit cost
//! nothing: tasks never started go back with `Release` (no try charged), then `Goodbye`
//! (the broker charges the task that was running, if any), then the broker's
//! acknowledgement is awaited, so everything was counted before the supervisor's news of the
//! exit arrives.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::error::{Error, TaskError};
use crate::protocol::{header, Command, IdList, Message, Ready, ResultBatchWriter, MAGIC, VERSION};
use crate::transport::{poll, Context, Frame, Kind, Pollable, SendError, Socket};
use crate::worker_runtime::{hostname, WorkerOptions};

/// How long a leaving worker collects batches that were on their way when it released.
const RELEASE_SETTLE: Duration = Duration::from_millis(20);
/// Longest wait, when leaving, for the broker to acknowledge our last messages.
const LEAVE_ACK_WAIT: Duration = Duration::from_secs(1);

/// A worker's connection to its broker; see the module summary.
pub struct WorkerSession {
    dealer: Socket,
    heartbeat: Duration,
    silence: Duration,
    last_sent: Instant,
    broker_seen: Instant,
}

/// What the broker sent, as far as the worker is concerned.
#[derive(Debug)]
#[non_exhaustive]
pub enum Incoming {
    /// A batch of tasks to run.
    Tasks(TaskFrames),
    /// The broker wants this worker to exit.
    Shutdown,
}

/// A batch of tasks as received, read in place.
#[derive(Debug)]
pub struct TaskFrames(Vec<Frame>);

impl TaskFrames {
    /// The batch's tasks: each task's id and payload, in the order the broker sent them.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        let batch = match Message::decode(&self.0) {
            Ok(Message::Tasks(batch)) => Some(batch),
            _ => None,
        };
        batch.into_iter().flat_map(|b| b.iter())
    }

    pub(crate) fn into_frames(self) -> Vec<Frame> {
        self.0
    }
}

/// The outcomes of tasks, gathered until they are sent in one message.
#[derive(Default)]
pub struct Results(ResultBatchWriter);

impl Results {
    /// Records task `id`'s output.
    pub fn push_ok(&mut self, id: u64, output: &[u8]) {
        self.0.push_ok(id, output);
    }

    /// Records task `id`'s output, written in place by `write`; an error of `write` records
    /// nothing and is returned.
    pub fn push_ok_with<E>(
        &mut self,
        id: u64,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.0.push_ok_with(id, write)
    }

    /// Records task `id`'s failure.
    pub fn push_err(&mut self, id: u64, error: &TaskError) {
        self.0.push_err(id, &error.to_wire());
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The size of what was recorded, in bytes.
    pub fn byte_len(&self) -> usize {
        self.0.byte_len()
    }

    /// The `Results` message for what was recorded, with the time the tasks took.
    pub(crate) fn into_frames(self, busy: Duration) -> [Frame; 2] {
        let body = self.0.finish(busy.as_micros().max(1) as u64);
        [header(Command::Results).into(), body.into()]
    }
}

/// What [`WorkerSession::wait`] found ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The broker sent something: call [`WorkerSession::recv`] until it gives `None`.
    pub broker: bool,
    /// The caller's descriptor is readable.
    pub fd: bool,
}

impl WorkerSession {
    /// Connects to the broker at `opts.endpoint` and registers with it.
    pub fn join(ctx: &Context, opts: &WorkerOptions) -> Result<WorkerSession, Error> {
        let dealer = ctx.socket(Kind::Dealer, opts.max_message)?;
        dealer.set_identity(&opts.identity)?;
        // CURVE keys when the broker is remote; plain for a local pool.
        dealer.secure(&opts.security)?;
        dealer.connect(&opts.endpoint)?;
        let ready = Ready {
            capacity: opts.capacity,
            pid: std::process::id(),
            host: &hostname(),
            max_batch: opts.batching.max_size,
            batch_wait_us: u32::try_from(opts.batching.wait.as_micros()).unwrap_or(u32::MAX),
        };
        send(&dealer, [header(Command::Ready).to_vec(), ready.encode()])?;
        let now = Instant::now();
        Ok(WorkerSession {
            dealer,
            heartbeat: opts.heartbeat_interval,
            silence: opts.heartbeat_interval * opts.liveness,
            last_sent: now,
            broker_seen: now,
        })
    }

    /// When [`WorkerSession::tick`] has something to do: a heartbeat due, or the broker's
    /// silence to declare.
    pub fn next_deadline(&self) -> Instant {
        (self.last_sent + self.heartbeat).min(self.broker_seen + self.silence)
    }

    /// Waits until the broker sends something, `fd` (if any) is readable, or `until`.
    pub fn wait(&self, fd: Option<RawFd>, until: Instant) -> Result<Readiness, Error> {
        let timeout = until.saturating_duration_since(Instant::now());
        let mut items = vec![Pollable::Socket(&self.dealer)];
        items.extend(fd.map(Pollable::Fd));
        let ready = poll(&items, Some(timeout))?;
        Ok(Readiness {
            broker: ready[0],
            fd: ready.get(1).copied().unwrap_or(false),
        })
    }

    /// Waits like [`WorkerSession::wait`] on the session and another socket of the engine's
    /// (the worker runtime's in-process pair).
    pub(crate) fn wait_with(&self, other: &Socket, until: Instant) -> Result<Readiness, Error> {
        let timeout = until.saturating_duration_since(Instant::now());
        let ready = poll(
            &[Pollable::Socket(&self.dealer), Pollable::Socket(other)],
            Some(timeout),
        )?;
        Ok(Readiness {
            broker: ready[0],
            fd: ready[1],
        })
    }

    /// The next message from the broker, without waiting. Heartbeats only keep the session
    /// alive and malformed messages are dropped (logged); a broker that refuses this worker
    /// or speaks another protocol version is [`Error::Refused`].
    pub fn recv(&mut self) -> Result<Option<Incoming>, Error> {
        while let Some(frames) = self.dealer.recv(false)? {
            self.broker_seen = Instant::now();
            match command_of(&frames) {
                Ok(Command::Tasks) => return Ok(Some(Incoming::Tasks(TaskFrames(frames)))),
                Ok(Command::Shutdown) => return Ok(Some(Incoming::Shutdown)),
                Ok(Command::Heartbeat) => {}
                Ok(Command::Fatal) => {
                    return Err(Error::Refused(match Message::decode(&frames) {
                        Ok(Message::Fatal(why)) => why.to_string(),
                        _ => "the broker refused this worker".to_string(),
                    }))
                }
                Ok(_) | Err(None) => {
                    tracing::warn!("worker dropped a malformed message from the broker")
                }
                Err(Some(got)) => {
                    return Err(Error::Refused(format!(
                        "the broker speaks protocol version {got}; this worker speaks version \
                         {VERSION}"
                    )))
                }
            }
        }
        Ok(None)
    }

    /// Sends the outcomes gathered in `results`, which took `busy` to compute.
    pub fn send_results(&mut self, results: Results, busy: Duration) -> Result<(), Error> {
        self.send_frames(results.into_frames(busy))
    }

    /// Sends a message built elsewhere in the engine (the worker runtime's task thread).
    pub(crate) fn send_frames<F: Into<Frame>>(
        &mut self,
        frames: impl IntoIterator<Item = F>,
    ) -> Result<(), Error> {
        send(&self.dealer, frames)?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Sends a heartbeat when one is due. Returns false once the broker has been silent for
    /// `heartbeat_interval × liveness`: the session is over.
    pub fn tick(&mut self) -> Result<bool, Error> {
        let now = Instant::now();
        if now.duration_since(self.broker_seen) > self.silence {
            tracing::warn!("the broker has been silent for {:?}; leaving", self.silence);
            return Ok(false);
        }
        if now.duration_since(self.last_sent) >= self.heartbeat {
            self.send_frames([header(Command::Heartbeat)])?;
        }
        Ok(true)
    }

    /// Leaves the broker: hands back `unstarted` (tasks received and never begun: re-queued
    /// with no try charged) and any batch still on its way, then sends `last` (outcomes that
    /// must follow the release, so the broker offers us nothing new after them), says
    /// goodbye — the broker charges a try to any task of ours still open — and waits,
    /// bounded, for its acknowledgement. Failures to send end the sequence early: a broker
    /// that cannot be reached learns of our exit from the supervisor or our silence.
    pub fn leave(&mut self, unstarted: Vec<u64>, last: Option<(Results, Duration)>) {
        self.depart(Command::Goodbye, unstarted, last);
    }

    /// Leaves like [`WorkerSession::leave`], to be replaced by a fresh worker (recycling):
    /// the broker charges nothing and counts the worker as recycled, not lost.
    pub fn retire(&mut self, unstarted: Vec<u64>, last: Option<(Results, Duration)>) {
        self.depart(Command::Recycling, unstarted, last);
    }

    /// Tells the broker that task `id` ran past `limit` here: it is charged a try, as for a
    /// death. The worker then leaves ([`WorkerSession::leave`]) and its process dies.
    pub fn time_out(&mut self, id: u64, limit: Duration) -> Result<(), Error> {
        self.send_frames(Message::TimedOut { id, limit }.encode())
    }

    fn depart(
        &mut self,
        farewell: Command,
        unstarted: Vec<u64>,
        last: Option<(Results, Duration)>,
    ) {
        let mut unstarted = unstarted;
        // Batches sent to us that we have not read yet were never started either.
        unstarted.extend(self.drain_unread());
        // Released even when there is nothing to hand back: a release marks us as leaving,
        // so the outcomes we send next do not make the broker offer us new tasks that the
        // goodbye would then charge a try.
        if self.release(unstarted).is_err() {
            return;
        }
        // Once the broker has read the release it sends us nothing more; batches it sent
        // before are handed back too.
        let until = Instant::now() + RELEASE_SETTLE;
        let mut late = Vec::new();
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match self.dealer.recv_timeout(left) {
                Ok(Some(frames)) => late.extend(task_ids(&frames)),
                _ => break,
            }
        }
        if !late.is_empty() && self.release(late).is_err() {
            return;
        }
        if let Some((results, busy)) = last.filter(|(r, _)| !r.is_empty()) {
            if self.send_results(results, busy).is_err() {
                return;
            }
        }
        // The heartbeat after the goodbye comes from a worker the broker no longer knows:
        // it answers `Shutdown`, which is our acknowledgement.
        for command in [farewell, Command::Heartbeat] {
            if self.send_frames([header(command)]).is_err() {
                return;
            }
        }
        let deadline = Instant::now() + LEAVE_ACK_WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.dealer.recv_timeout(left) {
                Ok(Some(frames)) if matches!(Message::decode(&frames), Ok(Message::Shutdown)) => {
                    return
                }
                Ok(Some(_)) => {}
                _ => return,
            }
        }
    }

    fn release(&mut self, ids: Vec<u64>) -> Result<(), Error> {
        self.send_frames([header(Command::Release).to_vec(), IdList::encode(ids)])
    }

    /// The ids of the tasks in batches received and not read yet.
    fn drain_unread(&mut self) -> Vec<u64> {
        let mut ids = Vec::new();
        while let Ok(Some(frames)) = self.dealer.recv(false) {
            ids.extend(task_ids(&frames));
        }
        ids
    }
}

/// Tells the broker a worker's `init` failed, so the client can be told why; used instead
/// of joining.
pub fn report_init_failure(
    ctx: &Context,
    opts: &WorkerOptions,
    message: &str,
) -> Result<(), Error> {
    let dealer = ctx.socket(Kind::Dealer, opts.max_message)?;
    dealer.set_identity(&opts.identity)?;
    dealer.secure(&opts.security)?;
    dealer.connect(&opts.endpoint)?;
    match dealer.send(Message::InitFailed(message).encode(), true) {
        Ok(()) | Err(SendError::Unreachable) | Err(SendError::WouldBlock) => Ok(()),
        Err(SendError::Other(e)) => Err(e),
    }
    // Dropping the socket lingers briefly, so the message leaves before the process exits.
}

fn task_ids(frames: &[Frame]) -> Vec<u64> {
    match Message::decode(frames) {
        Ok(Message::Tasks(batch)) => batch.iter().map(|(id, _)| id).collect(),
        _ => Vec::new(),
    }
}

fn send<F: Into<Frame>>(socket: &Socket, frames: impl IntoIterator<Item = F>) -> Result<(), Error> {
    socket.send(frames, true).map_err(|e| match e {
        SendError::Other(e) => e,
        _ => Error::Closed,
    })
}

/// The command of a message, from its header alone (the body is checked by its reader).
/// `Err(Some(v))`: a ZeroTasQ header of another protocol version; `Err(None)`: garbage.
fn command_of(frames: &[Frame]) -> Result<Command, Option<u8>> {
    let head = frames.first().ok_or(None)?;
    if head.len() != 4 || head[..2] != MAGIC {
        return Err(None);
    }
    if head[2] != VERSION {
        return Err(Some(head[2]));
    }
    Command::from_byte(head[3]).ok_or(None)
}

#[cfg(test)]
mod tests {
    //! The session against a real ROUTER socket that plays the broker, in process.
    use super::*;
    use crate::protocol::TaskBatchWriter;
    use crate::transport::curve::Security;

    struct FakeBroker {
        router: Socket,
        worker: Vec<u8>,
    }

    impl FakeBroker {
        /// Binds a broker, joins a session to it, and reads the session's `Ready`.
        fn with_session(heartbeat: Duration, liveness: u32) -> (FakeBroker, WorkerSession) {
            let ctx = Context::new();
            let router = ctx.socket(Kind::Router, -1).unwrap();
            let endpoint = format!("inproc://session-test-{}", crate::worker_runtime::unique());
            router.bind(&endpoint).unwrap();
            let opts = WorkerOptions {
                endpoint,
                identity: b"w-1".to_vec(),
                capacity: 2,
                heartbeat_interval: heartbeat,
                liveness,
                max_message: -1,
                security: Security::Insecure,
                task_timeout: None,
                recycling: Default::default(),
                batching: Default::default(),
            };
            let session = WorkerSession::join(&ctx, &opts).unwrap();
            let mut broker = FakeBroker {
                router,
                worker: b"w-1".to_vec(),
            };
            let ready = broker.expect();
            assert!(
                matches!(&ready, Message::Ready(r) if r.capacity == 2),
                "{ready:?}"
            );
            (broker, session)
        }

        fn send(&self, frames: Vec<Vec<u8>>) {
            let mut all = vec![self.worker.clone()];
            all.extend(frames);
            self.router.send(all, true).unwrap();
        }

        /// The next message from the worker, decoded with the same protocol module.
        fn expect(&mut self) -> Message<'static> {
            let frames = self
                .router
                .recv_timeout(Duration::from_secs(5))
                .unwrap()
                .expect("the worker said something");
            assert_eq!(&frames[0][..], &self.worker[..]);
            let body: Vec<Vec<u8>> = frames[1..].iter().map(|f| f.to_vec()).collect();
            let leaked: &'static [Vec<u8>] = Box::leak(body.into_boxed_slice());
            Message::decode(leaked).unwrap()
        }
    }

    fn tasks(ids: &[u64]) -> Vec<Vec<u8>> {
        let mut batch = TaskBatchWriter::new();
        for &id in ids {
            batch.push(id, format!("task {id}").as_bytes());
        }
        vec![header(Command::Tasks).to_vec(), batch.finish()]
    }

    fn recv_soon(session: &mut WorkerSession) -> Result<Option<Incoming>, Error> {
        let until = Instant::now() + Duration::from_secs(5);
        while session.wait(None, until)?.broker {
            if let Some(incoming) = session.recv()? {
                return Ok(Some(incoming));
            }
        }
        Ok(None)
    }

    #[test]
    fn tasks_arrive_heartbeats_are_absorbed_and_results_go_back() {
        let (mut broker, mut session) = FakeBroker::with_session(Duration::from_secs(10), 3);
        broker.send(vec![header(Command::Heartbeat).to_vec()]);
        broker.send(tasks(&[7, 8]));
        let Some(Incoming::Tasks(batch)) = recv_soon(&mut session).unwrap() else {
            panic!("a batch of tasks");
        };
        let got: Vec<(u64, Vec<u8>)> = batch.iter().map(|(id, t)| (id, t.to_vec())).collect();
        assert_eq!(got, [(7, b"task 7".to_vec()), (8, b"task 8".to_vec())]);
        let mut results = Results::default();
        results.push_ok(7, b"seven");
        results.push_err(8, &TaskError::new(crate::ErrorKind::Failed, "no"));
        session
            .send_results(results, Duration::from_millis(3))
            .unwrap();
        let Message::Results(batch) = broker.expect() else {
            panic!("results");
        };
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.busy_us, 3000);
        broker.send(vec![header(Command::Shutdown).to_vec()]);
        assert!(matches!(
            recv_soon(&mut session).unwrap(),
            Some(Incoming::Shutdown)
        ));
    }

    #[test]
    fn a_broker_of_another_version_or_a_fatal_word_is_a_refusal() {
        let (broker, mut session) = FakeBroker::with_session(Duration::from_secs(10), 3);
        let mut old = header(Command::Tasks).to_vec();
        old[2] = VERSION + 1;
        broker.send(vec![old]);
        let err = recv_soon(&mut session).unwrap_err();
        assert!(
            matches!(&err, Error::Refused(why) if why.contains("version")),
            "{err}"
        );

        let (broker, mut session) = FakeBroker::with_session(Duration::from_secs(10), 3);
        broker.send(Message::Fatal("go away").encode());
        let err = recv_soon(&mut session).unwrap_err();
        assert!(
            matches!(&err, Error::Refused(why) if why == "go away"),
            "{err}"
        );
    }

    #[test]
    fn heartbeats_go_out_on_time_and_a_silent_broker_ends_the_session() {
        let beat = Duration::from_millis(20);
        let (broker, mut session) = FakeBroker::with_session(beat, 3);
        let started = Instant::now();
        let mut heartbeats = 0;
        loop {
            session.wait(None, session.next_deadline()).unwrap();
            if !session.tick().unwrap() {
                break;
            }
            while let Ok(Some(frames)) = broker.router.recv(false) {
                assert_eq!(Message::decode(&frames[1..]).unwrap(), Message::Heartbeat);
                heartbeats += 1;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "never declared silent"
            );
        }
        let silent_for = started.elapsed();
        assert!(
            silent_for >= beat * 3,
            "declared silent after {silent_for:?}"
        );
        assert!(
            heartbeats >= 2,
            "only {heartbeats} heartbeats in {silent_for:?}"
        );
    }

    #[test]
    fn leaving_releases_unstarted_and_late_tasks_then_says_goodbye() {
        let (mut broker, mut session) = FakeBroker::with_session(Duration::from_secs(10), 3);
        broker.send(tasks(&[1, 2, 3]));
        let Some(Incoming::Tasks(_)) = recv_soon(&mut session).unwrap() else {
            panic!("a batch");
        };
        // Sent before the worker leaves, never read by it.
        broker.send(tasks(&[4]));
        std::thread::sleep(Duration::from_millis(50));
        let mut last = Results::default();
        last.push_ok(1, b"one");
        let acknowledge = std::thread::spawn(move || {
            let mut seen = Vec::new();
            loop {
                let message = broker.expect();
                let command = message.command();
                seen.push(match message {
                    Message::Release(ids) => format!("Release{:?}", ids.iter().collect::<Vec<_>>()),
                    Message::Results(batch) => format!("Results{}", batch.len()),
                    other => format!("{:?}", other.command()),
                });
                if command == Command::Heartbeat {
                    broker.send(vec![header(Command::Shutdown).to_vec()]);
                    return seen;
                }
            }
        });
        let started = Instant::now();
        session.leave(vec![2, 3], Some((last, Duration::from_millis(1))));
        assert!(
            started.elapsed() < LEAVE_ACK_WAIT,
            "the acknowledgement was heard"
        );
        let seen = acknowledge.join().unwrap();
        assert_eq!(
            seen,
            ["Release[2, 3, 4]", "Results1", "Goodbye", "Heartbeat"],
            "unstarted tasks, then the last outcomes, then goodbye"
        );
    }
}
