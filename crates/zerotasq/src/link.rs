//! How a client reaches a broker — in process (its own pool's broker thread) or over TCP (a
//! standalone broker, [`RemoteBroker`]) — and how it tells that the broker is gone, so a
//! waiting client ends with a clear error instead of hanging.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{DecodeFn, EncodeFn, Stream};
use crate::connector::Connector;
use crate::error::Error;
use crate::protocol::{header, Command, Message, ProtocolError, TaskBatchWriter, VERSION};
use crate::status::BrokerStatus;
use crate::transport::curve::{check_insecure, Security};
use crate::transport::{Context, Frame, Kind, SendError, Socket};

/// How long the broker of this process may take to answer a status request.
const LOCAL_STATUS_PATIENCE: Duration = Duration::from_secs(5);

/// How a client reaches its broker.
#[derive(Clone)]
pub struct Link {
    ctx: Context,
    endpoint: String,
    security: Security,
    max_message: i64,
    kind: LinkKind,
}

#[derive(Clone)]
enum LinkKind {
    /// The broker thread of this process; the flag turns false when it stops.
    Local(Arc<AtomicBool>),
    /// A broker elsewhere: gone when silent this long, or unreachable for `connect`.
    Remote {
        silence: Duration,
        connect: Duration,
    },
}

impl Link {
    pub(crate) fn local(
        ctx: Context,
        endpoint: String,
        max_message: i64,
        alive: Arc<AtomicBool>,
    ) -> Link {
        Link {
            ctx,
            endpoint,
            security: Security::Insecure,
            max_message,
            kind: LinkKind::Local(alive),
        }
    }

    /// A new client socket connected to the broker.
    pub(crate) fn socket(&self) -> Result<Socket, Error> {
        self.socket_lingering(None)
    }

    /// [`Link::socket`], with its linger (the default when `None`) set before it connects:
    /// a connection copies the socket's options when it is made.
    fn socket_lingering(&self, linger: Option<Duration>) -> Result<Socket, Error> {
        let socket = self.ctx.socket(Kind::Dealer, self.max_message)?;
        if let Some(linger) = linger {
            socket.set_linger(linger)?;
        }
        if let LinkKind::Remote { connect, .. } = &self.kind {
            socket.secure(&self.security)?;
            // Queue nothing on a connection that is not up (unreachable, or our key was
            // refused), and give up on a send after `connect`.
            socket.set_connect_patience(*connect)?;
        }
        socket.connect(&self.endpoint)?;
        Ok(socket)
    }

    /// An in-process pair socket on the same context (for connectors).
    pub(crate) fn pair_socket(&self) -> Result<Socket, Error> {
        self.ctx.socket(Kind::Pair, -1)
    }

    /// Asks the broker for its status: one request on a socket of its own, answered within
    /// the broker's silence patience (remote) or a few seconds (in process), or an error.
    pub(crate) fn status(&self) -> Result<BrokerStatus, Error> {
        // Nothing we send here is worth waiting for at the close.
        let socket = self.socket_lingering(Some(Duration::ZERO))?;
        let watch = self.watch();
        match socket.send(Message::StatusRequest.encode(), true) {
            Ok(()) => {}
            Err(SendError::Other(e)) => return Err(e),
            Err(_) => return Err(Error::Unreachable(watch.unreachable())),
        }
        let patience = match &self.kind {
            LinkKind::Local(_) => LOCAL_STATUS_PATIENCE,
            LinkKind::Remote { silence, .. } => *silence,
        };
        let deadline = Instant::now() + patience;
        loop {
            if let Some(why) = watch.gone() {
                return Err(Error::Unreachable(why));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Unreachable(format!(
                    "no status from the broker at {} within {patience:?}",
                    self.endpoint
                )));
            }
            // Short waits, so an in-process broker that stops is noticed.
            let Some(frames) = socket.recv_timeout(left.min(Duration::from_millis(100)))? else {
                continue;
            };
            match Message::decode(&frames) {
                Ok(Message::Status(json)) => {
                    return BrokerStatus::from_json(json).map_err(|e| Error::Io {
                        context: format!("read the status of the broker at {}", self.endpoint),
                        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                    })
                }
                Ok(Message::Fatal(why)) => return Err(Error::Refused(why.to_string())),
                Err(ProtocolError::VersionMismatch { got }) => {
                    return Err(Error::Refused(format!(
                        "the broker speaks protocol version {got}; this client speaks version \
                         {VERSION}"
                    )))
                }
                Ok(other) => tracing::debug!("waiting for Status, ignored {:?}", other.command()),
                Err(e) => tracing::warn!("dropped a malformed message from the broker: {e}"),
            }
        }
    }

    /// The largest payload a task or a result may have on this link (a message over the
    /// sockets' limit would be dropped with its connection, not delivered).
    pub(crate) fn max_payload(&self) -> usize {
        max_payload(self.max_message)
    }

    pub(crate) fn watch(&self) -> Watch {
        Watch {
            kind: self.kind.clone(),
            endpoint: self.endpoint.clone(),
            last_heard: Instant::now(),
        }
    }
}

/// One client's view of its broker's health.
pub(crate) struct Watch {
    kind: LinkKind,
    endpoint: String,
    last_heard: Instant,
}

impl Watch {
    /// Something arrived from the broker (or we just started waiting for it).
    pub(crate) fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    /// Why the broker is to be considered gone, if it is.
    pub(crate) fn gone(&self) -> Option<String> {
        match &self.kind {
            LinkKind::Local(alive) => (!alive.load(Ordering::Acquire))
                .then(|| "the broker stopped before this task finished".to_string()),
            LinkKind::Remote { silence, .. } => (self.last_heard.elapsed() > *silence).then(|| {
                format!(
                    "the broker at {} has been silent for {silence:?}: it stopped, or the \
                     network failed",
                    self.endpoint
                )
            }),
        }
    }

    /// The error for a submission that could not be sent.
    pub(crate) fn unreachable(&self) -> String {
        match &self.kind {
            LinkKind::Local(_) => "the pool's broker is not accepting tasks".to_string(),
            LinkKind::Remote { connect, .. } => format!(
                "no connection to the broker at {} within {connect:?}: it is unreachable, \
                 or it refused our key (or this host's connections, over its cap per address)",
                self.endpoint
            ),
        }
    }
}

/// Something clients reach a broker through — a local [`crate::RawPool`] or a
/// [`RemoteBroker`] — and stream tasks through, as bytes.
pub trait BrokerAccess {
    /// How streams reach the broker: implement it by forwarding to a [`crate::RawPool`]'s or a
    /// [`RemoteBroker`]'s `link()`.
    fn link(&self) -> &Link;

    /// Streams `input` through the broker's workers; `encode` and `decode` turn items into
    /// task bytes and result bytes into outputs.
    fn stream<I: Iterator, O>(
        &self,
        input: I,
        window: usize,
        ordered: bool,
        encode: EncodeFn<I::Item>,
        decode: DecodeFn<O>,
    ) -> Result<Stream<I, O>, Error> {
        Stream::new(self.link(), input, window, ordered, encode, decode)
    }

    /// Blocking `send`/`recv` through the broker, for a face that feeds from one thread and
    /// drains from another (or must wait interruptibly).
    fn connector<T, O: Send + 'static>(
        &self,
        window: usize,
        ordered: bool,
        encode: EncodeFn<T>,
        decode: DecodeFn<O>,
    ) -> Result<Connector<T, O>, Error> {
        Connector::new(self.link(), window, ordered, encode, decode)
    }
}

/// A broker on another machine (or a `zerotasq broker`), reached over TCP.
pub struct RemoteBroker {
    link: Link,
}

impl RemoteBroker {
    /// Connects to the broker's client endpoint. `security` is [`Security::Client`] (CURVE),
    /// or [`Security::Insecure`], which is refused off loopback unless `allow_insecure_remote`.
    pub fn connect(
        endpoint: &str,
        security: Security,
        allow_insecure_remote: bool,
    ) -> Result<RemoteBroker, Error> {
        match &security {
            Security::Insecure => check_insecure(endpoint, allow_insecure_remote)?,
            Security::Client { .. } => {}
            Security::Server { .. } => {
                return Err(Error::Config("a client connects with client keys".into()))
            }
        }
        Ok(RemoteBroker {
            link: Link {
                ctx: Context::new(),
                endpoint: endpoint.to_string(),
                security,
                max_message: 256 << 20,
                kind: LinkKind::Remote {
                    silence: Duration::from_secs(3),
                    connect: Duration::from_secs(5),
                },
            },
        })
    }

    /// How long the broker may stay silent while we wait, and how long connecting may take
    /// (defaults 3 s and 5 s).
    pub fn patience(mut self, silence: Duration, connect: Duration) -> Self {
        self.link.kind = LinkKind::Remote { silence, connect };
        self
    }

    /// The broker's status: its clients, workers, queue depths and rates. No connection
    /// within the connect patience, or no answer within the silence patience, is
    /// [`Error::Unreachable`] naming the endpoint.
    pub fn status(&self) -> Result<BrokerStatus, Error> {
        self.link.status()
    }
}

impl BrokerAccess for RemoteBroker {
    fn link(&self) -> &Link {
        &self.link
    }
}

/// What a client of a broker elsewhere keeps so that a restart of that broker costs it
/// nothing: the payloads of its tasks not yet answered. While it waits and hears nothing it
/// asks (a `Heartbeat`); a broker that holds none of its tasks answers `Forgotten`, and the
/// client submits them again under the same ids — an outcome that still comes from before
/// is dropped by id, so each task has one. A local pool's broker cannot restart alone:
/// nothing is kept.
pub(crate) struct Unanswered {
    payloads: Option<HashMap<u64, Vec<u8>>>,
    /// Silence after which the client asks.
    ask_after: Duration,
    last_asked: Instant,
}

impl Unanswered {
    pub(crate) fn new(link: &Link) -> Unanswered {
        let (payloads, ask_after) = match &link.kind {
            LinkKind::Remote { silence, .. } => (Some(HashMap::new()), *silence / 4),
            LinkKind::Local(_) => (None, Duration::MAX),
        };
        Unanswered {
            payloads,
            ask_after,
            last_asked: Instant::now(),
        }
    }

    /// Task `id` was submitted with `payload`.
    pub(crate) fn keep(&mut self, id: u64, payload: &[u8]) {
        if let Some(payloads) = &mut self.payloads {
            payloads.insert(id, payload.to_vec());
        }
    }

    /// Task `id` has its outcome.
    pub(crate) fn answered(&mut self, id: u64) {
        if let Some(payloads) = &mut self.payloads {
            payloads.remove(&id);
        }
    }

    /// Asks the broker whether it still holds our tasks, when we have waited `ask_after`
    /// in silence (and not asked since).
    pub(crate) fn ask_if_silent(&mut self, socket: &Socket, watch: &Watch) {
        let Some(payloads) = &self.payloads else {
            return;
        };
        let now = Instant::now();
        let silent = now.duration_since(watch.last_heard) >= self.ask_after;
        if !payloads.is_empty() && silent && now.duration_since(self.last_asked) >= self.ask_after {
            self.last_asked = now;
            let _ = socket.send([header(Command::Heartbeat)], false);
        }
    }

    /// Submits every unanswered task again, oldest first, in batches far below a peer's
    /// size limit.
    pub(crate) fn resubmit(&self, socket: &Socket) -> Result<(), String> {
        let Some(payloads) = &self.payloads else {
            return Ok(());
        };
        let mut ids: Vec<u64> = payloads.keys().copied().collect();
        ids.sort_unstable();
        tracing::warn!(
            "the broker holds none of our {} open tasks (it restarted?); submitting them again",
            ids.len()
        );
        let mut writer = TaskBatchWriter::new();
        for id in ids {
            writer.push(id, &payloads[&id]);
            if writer.byte_len() >= RESUBMIT_BYTES {
                send_submit(socket, std::mem::take(&mut writer))?;
            }
        }
        if !writer.is_empty() {
            send_submit(socket, writer)?;
        }
        Ok(())
    }
}

/// Bytes per batch when tasks are submitted again.
const RESUBMIT_BYTES: usize = 4 << 20;

fn send_submit(socket: &Socket, writer: TaskBatchWriter) -> Result<(), String> {
    let frames: [Frame; 2] = [header(Command::Submit).into(), writer.finish().into()];
    socket
        .send(frames, true)
        .map_err(|_| "cannot submit tasks again to the restarted broker".to_string())
}

/// The largest payload under a message limit of `max_message` bytes (-1: none): room is
/// left for the batch's own framing.
pub(crate) fn max_payload(max_message: i64) -> usize {
    usize::try_from(max_message).map_or(usize::MAX, |m| m.saturating_sub(64))
}

/// The error for a task or result of `len` bytes, over the limit of `max` bytes.
pub(crate) fn too_big(what: &str, len: usize, max: usize) -> crate::error::TaskError {
    crate::error::TaskError::new(
        crate::error::ErrorKind::Codec,
        format!(
            "the {what} is {len} bytes, over the limit of {max} bytes (the pool's max_message; \
             raise it, or send a reference such as a file path instead)"
        ),
    )
}
