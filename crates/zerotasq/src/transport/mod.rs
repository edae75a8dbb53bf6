//! The only module that touches the `zmq` crate (and `zmq-sys`, for an option only the
//! built-in libzmq has): sockets with explicit options, multipart send/receive of
//! [`Frame`]s, and polling sockets together with plain file descriptors.
//!
//! Every socket gets explicit high-water marks, a bounded `ZMQ_MAXMSGSIZE` and a short
//! linger; ROUTER sockets get `ROUTER_MANDATORY`, so a message to a vanished peer is an
//! error we see rather than a silent drop. TCP listeners also bound the handshake's time and
//! each peer address's connections.

use std::os::fd::RawFd;
use std::os::raw::c_int;
use std::time::Duration;

use crate::error::Error;

pub mod curve;

/// Messages (multipart messages count per part) a socket queues before pushing back.
const HIGH_WATER_MARK: i32 = 100_000;
/// How long closing a socket may wait to flush what it queued.
const LINGER_MS: i32 = 200;

/// One frame of a message; moves without copying its bytes.
pub struct Frame(zmq::Message);

impl Frame {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The frame as shared bytes, without a copy: parts of it can outlive the message.
    pub fn into_bytes(self) -> bytes::Bytes {
        bytes::Bytes::from_owner(self)
    }
}

impl std::ops::Deref for Frame {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Frame {
    fn from(bytes: Vec<u8>) -> Self {
        Frame(zmq::Message::from(bytes))
    }
}

impl From<&[u8]> for Frame {
    fn from(bytes: &[u8]) -> Self {
        Frame(zmq::Message::from(bytes))
    }
}

impl<const N: usize> From<[u8; N]> for Frame {
    fn from(bytes: [u8; N]) -> Self {
        Frame(zmq::Message::from(&bytes[..]))
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({} bytes)", self.len())
    }
}

/// The socket roles ZeroTasQ uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The broker's two faces: many peers, addressed by routing id.
    Router,
    /// Clients and workers: one broker.
    Dealer,
    /// In-process control channels between threads.
    Pair,
}

/// Why a send did not go through.
#[derive(Debug)]
pub enum SendError {
    /// The peer's queue is full (non-blocking sends only).
    WouldBlock,
    /// No peer with that routing id is connected (ROUTER_MANDATORY).
    Unreachable,
    Other(Error),
}

/// A ZeroMQ context: one per pool, shared by its threads.
#[derive(Clone)]
pub struct Context(zmq::Context);

impl Default for Context {
    fn default() -> Self {
        Self::new()
    }
}

impl Context {
    /// A new context; its I/O thread starts with it.
    pub fn new() -> Self {
        Context(zmq::Context::new())
    }

    /// A socket of `kind` with the project's options. `max_message` bounds what a peer can
    /// make us allocate for one frame.
    pub fn socket(&self, kind: Kind, max_message: i64) -> Result<Socket, Error> {
        let zkind = match kind {
            Kind::Router => zmq::ROUTER,
            Kind::Dealer => zmq::DEALER,
            Kind::Pair => zmq::PAIR,
        };
        let socket = self.0.socket(zkind).map_err(zmq_err("create socket"))?;
        let setup = || -> Result<(), zmq::Error> {
            socket.set_sndhwm(HIGH_WATER_MARK)?;
            socket.set_rcvhwm(HIGH_WATER_MARK)?;
            socket.set_linger(LINGER_MS)?;
            socket.set_maxmsgsize(max_message)?;
            if kind == Kind::Router {
                socket.set_router_mandatory(true)?;
            }
            Ok(())
        };
        setup().map_err(zmq_err("set socket options"))?;
        Ok(Socket(socket))
    }
}

/// A socket; used by one thread at a time.
pub struct Socket(zmq::Socket);

impl Socket {
    /// Sets the routing id this socket presents to a ROUTER (before connecting).
    pub fn set_identity(&self, identity: &[u8]) -> Result<(), Error> {
        self.0
            .set_identity(identity)
            .map_err(zmq_err("set routing id"))
    }

    pub fn bind(&self, endpoint: &str) -> Result<(), Error> {
        self.0.bind(endpoint).map_err(|e| Error::Transport {
            context: format!("bind {endpoint}"),
            message: e.to_string(),
        })
    }

    pub fn connect(&self, endpoint: &str) -> Result<(), Error> {
        self.0.connect(endpoint).map_err(|e| Error::Transport {
            context: format!("connect {endpoint}"),
            message: e.to_string(),
        })
    }

    /// For a client of a remote broker: queue nothing until a connection is up, and let a
    /// blocking send give up after `patience`.
    pub fn set_connect_patience(&self, patience: Duration) -> Result<(), Error> {
        self.0
            .set_immediate(true)
            .and_then(|_| {
                self.0
                    .set_sndtimeo(patience.as_millis().min(i32::MAX as u128) as i32)
            })
            .map_err(zmq_err("set connect options"))
    }

    /// Lets libzmq ping TCP peers and drop a connection that stays silent past `timeout`, so
    /// a peer behind a cut network shows up as unreachable.
    pub fn detect_dead_peers(&self, interval: Duration, timeout: Duration) -> Result<(), Error> {
        let ms = |d: Duration| d.as_millis().min(i32::MAX as u128) as i32;
        self.0
            .set_heartbeat_ivl(ms(interval))
            .and_then(|_| self.0.set_heartbeat_timeout(ms(timeout)))
            .map_err(zmq_err("set ZMTP heartbeats"))
    }

    /// How long a peer may take over its handshake (greeting and CURVE) before its
    /// connection is dropped: a stranger that connects and stalls holds a descriptor only
    /// that long (libzmq's default is 30 s).
    pub fn set_handshake_limit(&self, limit: Duration) -> Result<(), Error> {
        let ms = limit.as_millis().min(i32::MAX as u128) as i32;
        self.0
            .set_handshake_ivl(ms)
            .map_err(zmq_err("set the handshake interval"))
    }

    /// Caps the connections one peer address (an IPv4 address, or an IPv6 /64) may hold at
    /// once on each TCP endpoint this socket binds afterwards (0: no cap); over it, a
    /// connection is closed as it is accepted, so a stranger on one address cannot take every
    /// descriptor. An option of the libzmq built here (`crates/zeromq-src`): a system libzmq
    /// has none, and then this only warns.
    pub fn cap_connections_per_address(&mut self, cap: u32) -> Result<(), Error> {
        let value = c_int::try_from(cap).unwrap_or(c_int::MAX);
        // SAFETY: a live socket, and a pointer to an int with its size; libzmq copies it.
        let rc = unsafe {
            zmq_sys::zmq_setsockopt(
                self.0.as_mut_ptr(),
                zmq_sys::ZMQ_PEER_CONNECTIONS_MAX as c_int,
                (&value as *const c_int).cast(),
                std::mem::size_of::<c_int>(),
            )
        };
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: reads this thread's libzmq error number.
        match unsafe { zmq_sys::zmq_errno() } {
            libc::EINVAL => {
                tracing::warn!(
                    "this libzmq (not the one built in) cannot cap connections per address"
                );
                Ok(())
            }
            errno => Err(zmq_err("cap connections per address")(
                zmq::Error::from_raw(errno),
            )),
        }
    }

    /// How long closing may wait to deliver what is still queued (zero: drop it). Set it
    /// before `bind`/`connect`: each connection copies the options when it is made.
    pub fn set_linger(&self, linger: Duration) -> Result<(), Error> {
        self.0
            .set_linger(linger.as_millis().min(i32::MAX as u128) as i32)
            .map_err(zmq_err("set linger"))
    }

    /// The endpoint this socket last bound, with a wildcard port resolved.
    pub fn last_endpoint(&self) -> Result<String, Error> {
        match self.0.get_last_endpoint() {
            Ok(Ok(endpoint)) => Ok(endpoint),
            Ok(Err(_)) => Err(Error::Config("endpoint is not UTF-8".into())),
            Err(e) => Err(zmq_err("read the bound endpoint")(e)),
        }
    }

    /// Sends one multipart message. With `wait == false` a full queue is
    /// [`SendError::WouldBlock`] instead of blocking.
    pub fn send<I>(&self, frames: I, wait: bool) -> Result<(), SendError>
    where
        I: IntoIterator,
        I::Item: Into<Frame>,
    {
        let flags = if wait { 0 } else { zmq::DONTWAIT };
        let mut iter = frames.into_iter().peekable();
        let mut first = true;
        while let Some(frame) = iter.next() {
            let more = if iter.peek().is_some() {
                zmq::SNDMORE
            } else {
                0
            };
            let frame: Frame = frame.into();
            match self.0.send(frame.0, flags | more) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) if first => return Err(SendError::WouldBlock),
                Err(zmq::Error::EHOSTUNREACH) if first => return Err(SendError::Unreachable),
                Err(e) => return Err(SendError::Other(zmq_err("send")(e))),
            }
            first = false;
        }
        Ok(())
    }

    /// Receives one multipart message; `None` when `wait == false` and nothing is queued.
    pub fn recv(&self, wait: bool) -> Result<Option<Vec<Frame>>, Error> {
        let flags = if wait { 0 } else { zmq::DONTWAIT };
        let mut frames = Vec::with_capacity(3);
        loop {
            let mut msg = zmq::Message::new();
            match self.0.recv(&mut msg, flags) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) if frames.is_empty() => return Ok(None),
                Err(e) => return Err(zmq_err("receive")(e)),
            }
            let more = msg.get_more();
            frames.push(Frame(msg));
            if !more {
                return Ok(Some(frames));
            }
        }
    }

    /// Waits up to `timeout` for a message; `None` on time-out.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Vec<Frame>>, Error> {
        if !poll(&[Pollable::Socket(self)], Some(timeout))?[0] {
            return Ok(None);
        }
        self.recv(false)
    }
}

/// Something [`poll`] can wait on.
pub enum Pollable<'a> {
    Socket(&'a Socket),
    /// A file descriptor that becomes readable (a pidfd: the process exited).
    Fd(RawFd),
}

/// Waits until one of `items` is readable or `timeout` passes (`None`: forever), and says
/// which are readable, in order. An interrupted wait reports nothing readable.
pub fn poll(items: &[Pollable<'_>], timeout: Option<Duration>) -> Result<Vec<bool>, Error> {
    let mut zitems: Vec<zmq::PollItem<'_>> = items
        .iter()
        .map(|item| match item {
            Pollable::Socket(s) => s.0.as_poll_item(zmq::POLLIN),
            Pollable::Fd(fd) => zmq::PollItem::from_fd(*fd, zmq::POLLIN),
        })
        .collect();
    // Rounded up: a wait shorter than a millisecond must not become a busy poll.
    let ms = timeout.map_or(-1, |t| {
        t.as_micros().div_ceil(1000).min(i64::MAX as u128) as i64
    });
    match zmq::poll(&mut zitems, ms) {
        Ok(_) => Ok(zitems.iter().map(|i| i.is_readable()).collect()),
        Err(zmq::Error::EINTR) => Ok(vec![false; items.len()]),
        Err(e) => Err(zmq_err("poll")(e)),
    }
}

fn zmq_err(context: &'static str) -> impl Fn(zmq::Error) -> Error {
    move |e| Error::Transport {
        context: context.to_string(),
        message: e.to_string(),
    }
}
