//! The wire protocol: frames ⇄ typed messages. Pure functions, no I/O.
//!
//! Every message is a multipart ZeroMQ message (after the ROUTER's routing-id frame, which
//! the transport strips) made of a 4-byte header frame `b"ZT" VERSION COMMAND` and, for the
//! commands that carry data, body frames. Integers are little-endian. Payloads are opaque
//! bytes: serialisation belongs to each face (serde in Rust, pickle in Python, lines for
//! command workers).
//!
//! Tasks and results travel in *batches*: one body frame holds many items, so that tiny
//! tasks do not each pay a frame's overhead. Each item carries its id, so one item's outcome
//! is never confused with another's.
//!
//! ```text
//! task batch   = count:u32 { id:u64 len:u32 bytes }*
//! result batch = count:u32 busy_us:u64 { id:u64 status:u8 len:u32 bytes }*
//! status 0 = Ok (bytes: the output), 1 = Err (bytes: an encoded WireError)
//! wire error   = kind:u8 msg_len:u32 msg detail_len:u32 detail
//! ready        = capacity:u32 pid:u32 host_len:u32 host max_batch:u32 batch_wait_us:u32
//! release      = count:u32 { id:u64 }*
//! welcome      = the pool's welcome bytes, as given (may be empty)
//! status       = JSON of a BrokerStatus
//! ```
//!
//! Every decode is checked: a malformed message yields a [`ProtocolError`], never a panic.
//!
//! A worker the broker does not know (declared dead, or gone with `Goodbye`) is answered with
//! `Shutdown` whatever it sends. A leaving worker relies on that: after its last results,
//! `Release` and `Goodbye`, it sends a `Heartbeat`, and the `Shutdown` that comes back says
//! the broker has processed everything before it (one socket, so messages keep their order).
//!
//! `Hello` asks the broker for the pool's welcome bytes (what a remote worker needs before
//! its `init`, e.g. the Python face's pickled worker definition) without joining: the broker
//! answers `Welcome` and registers nothing. Likewise a client's `StatusRequest` is answered
//! with `Status` and submits nothing.

// Without the `wire` feature only the engine reads and writes messages, and it needs not
// every accessor of this complete codec.
#![cfg_attr(not(feature = "wire"), allow(dead_code))]

use std::fmt;

mod batch;
pub use batch::{IdList, Outcome, ResultBatch, ResultBatchWriter, TaskBatch, TaskBatchWriter};

/// The two bytes every header starts with.
pub const MAGIC: [u8; 2] = *b"ZT";
/// Protocol version; peers with another version are refused with a clear error.
pub const VERSION: u8 = 3;

/// Typed commands, one byte on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Command {
    /// worker → broker: initialised, may hold `capacity` batches.
    Ready = 1,
    /// broker → worker: a batch of tasks.
    Tasks = 2,
    /// worker → broker and broker → client: a batch of outcomes.
    Results = 3,
    /// both directions: still alive.
    Heartbeat = 4,
    /// worker → broker: `init` failed; the worker exits.
    InitFailed = 5,
    /// worker → broker: leaving cleanly.
    Goodbye = 6,
    /// broker → worker: exit now.
    Shutdown = 7,
    /// client → broker: a batch of tasks to run.
    Submit = 8,
    /// client → broker: forget my queued tasks, drop my late results.
    Cancel = 9,
    /// broker → client (or worker): the peer cannot be served; the reason.
    Fatal = 10,
    /// worker → broker: leaving; hands back the tasks it never started (no try is charged
    /// for them) and takes no more.
    Release = 11,
    /// worker → broker: send me the pool's welcome bytes (this does not join the pool).
    Hello = 12,
    /// broker → worker: the pool's welcome bytes, the answer to `Hello`.
    Welcome = 13,
    /// client → broker: send me your status (this submits nothing).
    StatusRequest = 14,
    /// broker → client: the status, as JSON (`crate::status::BrokerStatus`).
    Status = 15,
    /// worker → broker: this task ran past the worker's time limit; the worker is about to
    /// leave and be restarted. The task is charged a try, as for a death.
    TimedOut = 16,
    /// worker → broker: leaving to be replaced by a fresh worker (recycling: task count,
    /// memory or age reached). Nothing is charged; what it still holds is re-queued.
    Recycling = 17,
    /// broker → client: the answer to a client's `Heartbeat` when the broker holds no task of
    /// it — it restarted, or all is answered: send again what you still wait for.
    Forgotten = 18,
    /// supervisor → broker (in-process): a local child exited.
    ChildExited = 20,
    /// broker → supervisor (in-process): kill this worker (it missed its heartbeats).
    KillWorker = 21,
    /// broker → supervisor (in-process): this child registered (its init succeeded).
    ChildReady = 22,
    /// supervisor → broker (in-process): a local child was started and is initialising.
    ChildStarted = 24,
}

impl Command {
    pub(crate) fn from_byte(b: u8) -> Option<Command> {
        use Command::*;
        Some(match b {
            1 => Ready,
            2 => Tasks,
            3 => Results,
            4 => Heartbeat,
            5 => InitFailed,
            6 => Goodbye,
            7 => Shutdown,
            8 => Submit,
            9 => Cancel,
            10 => Fatal,
            11 => Release,
            12 => Hello,
            13 => Welcome,
            14 => StatusRequest,
            15 => Status,
            16 => TimedOut,
            17 => Recycling,
            18 => Forgotten,
            20 => ChildExited,
            21 => KillWorker,
            22 => ChildReady,
            24 => ChildStarted,
            _ => return None,
        })
    }
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("empty message")]
    Empty,
    #[error("header is not a ZeroTasQ header")]
    BadMagic,
    #[error("protocol version {got} is not supported (this build speaks version {VERSION})")]
    VersionMismatch { got: u8 },
    #[error("unknown command byte {0}")]
    UnknownCommand(u8),
    #[error("wrong number of frames for {command:?}: expected {expected}, got {got}")]
    FrameCount {
        command: Command,
        expected: usize,
        got: usize,
    },
    #[error("body truncated or too long")]
    Truncated,
    #[error("text is not valid UTF-8")]
    BadUtf8,
    #[error("unknown result status {0}")]
    BadStatus(u8),
    #[error("unknown error kind {0}")]
    BadErrorKind(u8),
}

/// The category of a failed task, as carried on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `process` returned an error (Rust `Err`, Python exception, bad worker answer).
    Failed = 1,
    /// `process` panicked.
    Panicked = 2,
    /// The task killed `max_retries` workers (a poison task).
    WorkerLost = 3,
    /// No worker could initialise, so the task never ran.
    InitFailed = 4,
    /// The pool was closed before the task finished.
    Cancelled = 5,
    /// The task ran past its time limit.
    Timeout = 6,
    /// The task or its output could not be (de)serialised.
    Codec = 7,
}

impl ErrorKind {
    fn from_byte(b: u8) -> Option<ErrorKind> {
        use ErrorKind::*;
        Some(match b {
            1 => Failed,
            2 => Panicked,
            3 => WorkerLost,
            4 => InitFailed,
            5 => Cancelled,
            6 => Timeout,
            7 => Codec,
            _ => return None,
        })
    }

    /// A stable one-word name (`failed`, `worker_lost`, …), for faces that name kinds in
    /// another language.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Failed => "failed",
            ErrorKind::Panicked => "panicked",
            ErrorKind::WorkerLost => "worker_lost",
            ErrorKind::InitFailed => "init_failed",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Codec => "codec",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Failed => "task failed",
            ErrorKind::Panicked => "task panicked",
            ErrorKind::WorkerLost => "worker lost",
            ErrorKind::InitFailed => "worker init failed",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Codec => "serialisation failed",
        })
    }
}

/// An error outcome as it travels on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError<'a> {
    pub kind: ErrorKind,
    pub message: &'a str,
    /// Backtrace or remote traceback; may be empty.
    pub detail: &'a str,
}

impl<'a> WireError<'a> {
    /// Appends the encoding to `buf`.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        buf.push(self.kind as u8);
        put_bytes(buf, self.message.as_bytes());
        put_bytes(buf, self.detail.as_bytes());
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(9 + self.message.len() + self.detail.len());
        self.encode_into(&mut buf);
        buf
    }

    pub fn decode(bytes: &'a [u8]) -> Result<WireError<'a>, ProtocolError> {
        let mut r = Reader::new(bytes);
        let kind_byte = r.u8()?;
        let kind = ErrorKind::from_byte(kind_byte).ok_or(ProtocolError::BadErrorKind(kind_byte))?;
        let message = r.str()?;
        let detail = r.str()?;
        r.finish()?;
        Ok(WireError {
            kind,
            message,
            detail,
        })
    }
}

/// A worker's announcement that it is initialised and ready for work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready<'a> {
    /// How many batches it may hold at once (credit).
    pub capacity: u32,
    pub pid: u32,
    pub host: &'a str,
    /// It runs tasks in batches of up to this many (0: no preference; the broker sizes
    /// batches from task times).
    pub max_batch: u32,
    /// How long a batch of fewer than `max_batch` may wait for more tasks (µs).
    pub batch_wait_us: u32,
}

impl Ready<'_> {
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(20 + self.host.len());
        buf.extend_from_slice(&self.capacity.to_le_bytes());
        buf.extend_from_slice(&self.pid.to_le_bytes());
        put_bytes(&mut buf, self.host.as_bytes());
        buf.extend_from_slice(&self.max_batch.to_le_bytes());
        buf.extend_from_slice(&self.batch_wait_us.to_le_bytes());
        buf
    }
}

/// A decoded message. Which commands a peer may send is checked by its receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    Ready(Ready<'a>),
    Tasks(TaskBatch<'a>),
    Results(ResultBatch<'a>),
    Heartbeat,
    InitFailed(&'a str),
    Goodbye,
    Shutdown,
    Submit(TaskBatch<'a>),
    Cancel,
    Fatal(&'a str),
    Release(IdList<'a>),
    /// A task ran past `limit` on the sending worker.
    TimedOut {
        id: u64,
        limit: std::time::Duration,
    },
    Recycling,
    Forgotten,
    Hello,
    Welcome(&'a [u8]),
    StatusRequest,
    /// JSON; parsed by the asker, not here.
    Status(&'a [u8]),
    ChildStarted {
        identity: &'a [u8],
    },
    ChildExited {
        identity: &'a [u8],
        status: &'a str,
    },
    KillWorker {
        identity: &'a [u8],
    },
    ChildReady {
        identity: &'a [u8],
    },
}

/// The header frame for `command`.
pub fn header(command: Command) -> [u8; 4] {
    [MAGIC[0], MAGIC[1], VERSION, command as u8]
}

impl<'a> Message<'a> {
    pub fn command(&self) -> Command {
        match self {
            Message::Ready(_) => Command::Ready,
            Message::Tasks(_) => Command::Tasks,
            Message::Results(_) => Command::Results,
            Message::Heartbeat => Command::Heartbeat,
            Message::InitFailed(_) => Command::InitFailed,
            Message::Goodbye => Command::Goodbye,
            Message::Shutdown => Command::Shutdown,
            Message::Submit(_) => Command::Submit,
            Message::Cancel => Command::Cancel,
            Message::Fatal(_) => Command::Fatal,
            Message::Release(_) => Command::Release,
            Message::TimedOut { .. } => Command::TimedOut,
            Message::Recycling => Command::Recycling,
            Message::Forgotten => Command::Forgotten,
            Message::Hello => Command::Hello,
            Message::Welcome(_) => Command::Welcome,
            Message::StatusRequest => Command::StatusRequest,
            Message::Status(_) => Command::Status,
            Message::ChildStarted { .. } => Command::ChildStarted,
            Message::ChildExited { .. } => Command::ChildExited,
            Message::KillWorker { .. } => Command::KillWorker,
            Message::ChildReady { .. } => Command::ChildReady,
        }
    }

    /// Decodes the frames of one message (routing id already removed).
    pub fn decode<F: AsRef<[u8]>>(frames: &'a [F]) -> Result<Message<'a>, ProtocolError> {
        let head = frames.first().ok_or(ProtocolError::Empty)?.as_ref();
        if head.len() != 4 || head[..2] != MAGIC {
            return Err(ProtocolError::BadMagic);
        }
        if head[2] != VERSION {
            return Err(ProtocolError::VersionMismatch { got: head[2] });
        }
        let command = Command::from_byte(head[3]).ok_or(ProtocolError::UnknownCommand(head[3]))?;
        let body = &frames[1..];
        let expect = |n: usize| {
            if body.len() == n {
                Ok(())
            } else {
                Err(ProtocolError::FrameCount {
                    command,
                    expected: n + 1,
                    got: frames.len(),
                })
            }
        };
        let frame = |i: usize| body[i].as_ref();
        Ok(match command {
            Command::Ready => {
                expect(1)?;
                let mut r = Reader::new(frame(0));
                let capacity = r.u32()?;
                let pid = r.u32()?;
                let host = r.str()?;
                let max_batch = r.u32()?;
                let batch_wait_us = r.u32()?;
                r.finish()?;
                Message::Ready(Ready {
                    capacity,
                    pid,
                    host,
                    max_batch,
                    batch_wait_us,
                })
            }
            Command::Tasks => {
                expect(1)?;
                Message::Tasks(TaskBatch::parse(frame(0))?)
            }
            Command::Submit => {
                expect(1)?;
                Message::Submit(TaskBatch::parse(frame(0))?)
            }
            Command::Results => {
                expect(1)?;
                Message::Results(ResultBatch::parse(frame(0))?)
            }
            Command::InitFailed => {
                expect(1)?;
                Message::InitFailed(utf8(frame(0))?)
            }
            Command::Fatal => {
                expect(1)?;
                Message::Fatal(utf8(frame(0))?)
            }
            Command::Release => {
                expect(1)?;
                Message::Release(IdList::parse(frame(0))?)
            }
            Command::TimedOut => {
                expect(1)?;
                let mut r = Reader::new(frame(0));
                let id = r.u64()?;
                let limit = std::time::Duration::from_millis(r.u64()?);
                r.finish()?;
                Message::TimedOut { id, limit }
            }
            Command::Welcome => {
                expect(1)?;
                Message::Welcome(frame(0))
            }
            Command::Status => {
                expect(1)?;
                Message::Status(frame(0))
            }
            Command::ChildExited => {
                expect(2)?;
                Message::ChildExited {
                    identity: frame(0),
                    status: utf8(frame(1))?,
                }
            }
            Command::KillWorker => {
                expect(1)?;
                Message::KillWorker { identity: frame(0) }
            }
            Command::ChildStarted => {
                expect(1)?;
                Message::ChildStarted { identity: frame(0) }
            }
            Command::Heartbeat => {
                expect(0)?;
                Message::Heartbeat
            }
            Command::Goodbye => {
                expect(0)?;
                Message::Goodbye
            }
            Command::Recycling => {
                expect(0)?;
                Message::Recycling
            }
            Command::Forgotten => {
                expect(0)?;
                Message::Forgotten
            }
            Command::Shutdown => {
                expect(0)?;
                Message::Shutdown
            }
            Command::Cancel => {
                expect(0)?;
                Message::Cancel
            }
            Command::ChildReady => {
                expect(1)?;
                Message::ChildReady { identity: frame(0) }
            }
            Command::Hello => {
                expect(0)?;
                Message::Hello
            }
            Command::StatusRequest => {
                expect(0)?;
                Message::StatusRequest
            }
        })
    }

    /// Encodes the message as frames. Hot paths build batch bodies with the writers instead.
    pub fn encode(&self) -> Vec<Vec<u8>> {
        let mut frames = vec![header(self.command()).to_vec()];
        match self {
            Message::Ready(ready) => frames.push(ready.encode()),
            Message::Tasks(batch) | Message::Submit(batch) => {
                let mut w = TaskBatchWriter::new();
                for (id, payload) in batch.iter() {
                    w.push(id, payload);
                }
                frames.push(w.finish());
            }
            Message::Results(batch) => {
                let mut w = ResultBatchWriter::new();
                for (id, outcome) in batch.iter() {
                    w.push_outcome(id, outcome);
                }
                frames.push(w.finish(batch.busy_us));
            }
            Message::InitFailed(text) | Message::Fatal(text) => {
                frames.push(text.as_bytes().to_vec())
            }
            Message::Release(ids) => frames.push(IdList::encode(ids.iter())),
            Message::TimedOut { id, limit } => {
                let mut body = id.to_le_bytes().to_vec();
                let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
                body.extend_from_slice(&ms.to_le_bytes());
                frames.push(body);
            }
            Message::Welcome(bytes) | Message::Status(bytes) => frames.push(bytes.to_vec()),
            Message::ChildExited { identity, status } => {
                frames.push(identity.to_vec());
                frames.push(status.as_bytes().to_vec());
            }
            Message::KillWorker { identity }
            | Message::ChildStarted { identity }
            | Message::ChildReady { identity } => frames.push(identity.to_vec()),
            Message::Heartbeat
            | Message::Goodbye
            | Message::Recycling
            | Message::Forgotten
            | Message::Shutdown
            | Message::Cancel
            | Message::Hello
            | Message::StatusRequest => {}
        }
        frames
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, ProtocolError> {
    std::str::from_utf8(bytes).map_err(|_| ProtocolError::BadUtf8)
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("payloads are bounded by ZMQ_MAXMSGSIZE < 4 GiB");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(bytes);
}

/// Writes the length of everything after the 4-byte slot at `len_at` into that slot.
fn patch_len(buf: &mut [u8], len_at: usize) {
    let len = (buf.len() - len_at - 4) as u32;
    buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
}

/// A checked cursor over a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.bytes.len() < n {
            return Err(ProtocolError::Truncated);
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], ProtocolError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn str(&mut self) -> Result<&'a str, ProtocolError> {
        utf8(self.bytes()?)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    fn finish(&self) -> Result<(), ProtocolError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests;
