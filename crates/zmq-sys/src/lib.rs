//! The C API of libzmq (`zmq.h`, 4.3) that the `zmq` crate calls, declared by hand for the
//! library that build.rs links: the one built here with CURVE, or the system's.
//!
//! Only what `zmq` 0.10 uses is declared, and the socket option our patched libzmq adds.
//! Numeric `#define`s are `u32`, as `zmq` expects (it matches socket types against them and
//! casts the rest).

#![allow(non_camel_case_types)]

use libc::{c_char, c_int, c_long, c_short, c_void, size_t};

pub use std::os::unix::io::RawFd;

/// Error numbers: the platform's, and libzmq's own past `ZMQ_HAUSNUMERO`.
pub mod errno {
    pub use libc::{
        EACCES, EADDRINUSE, EADDRNOTAVAIL, EAGAIN, EBUSY, ECONNREFUSED, EFAULT, EHOSTUNREACH,
        EINPROGRESS, EINTR, EINVAL, EMFILE, EMSGSIZE, ENAMETOOLONG, ENETDOWN, ENOBUFS, ENODEV,
        ENOENT, ENOMEM, ENOTCONN, ENOTSOCK, ENOTSUP, EPROTO, EPROTONOSUPPORT,
    };

    const HAUSNUMERO: i32 = 156_384_712;

    // libzmq returns these where the platform has no such errno (not on Linux; `zmq` maps them).
    pub const ENOTSUP_ALT: i32 = HAUSNUMERO + 1;
    pub const EPROTONOSUPPORT_ALT: i32 = HAUSNUMERO + 2;
    pub const ENOBUFS_ALT: i32 = HAUSNUMERO + 3;
    pub const ENETDOWN_ALT: i32 = HAUSNUMERO + 4;
    pub const EADDRINUSE_ALT: i32 = HAUSNUMERO + 5;
    pub const EADDRNOTAVAIL_ALT: i32 = HAUSNUMERO + 6;
    pub const ECONNREFUSED_ALT: i32 = HAUSNUMERO + 7;
    pub const EINPROGRESS_ALT: i32 = HAUSNUMERO + 8;
    pub const ENOTSOCK_ALT: i32 = HAUSNUMERO + 9;
    pub const EMSGSIZE_ALT: i32 = HAUSNUMERO + 10;
    pub const EAFNOSUPPORT_ALT: i32 = HAUSNUMERO + 11;
    pub const ENETUNREACH_ALT: i32 = HAUSNUMERO + 12;
    pub const ECONNABORTED_ALT: i32 = HAUSNUMERO + 13;
    pub const ECONNRESET_ALT: i32 = HAUSNUMERO + 14;
    pub const ENOTCONN_ALT: i32 = HAUSNUMERO + 15;
    pub const ETIMEDOUT_ALT: i32 = HAUSNUMERO + 16;
    pub const EHOSTUNREACH_ALT: i32 = HAUSNUMERO + 17;
    pub const ENETRESET_ALT: i32 = HAUSNUMERO + 18;

    pub const EFSM: i32 = HAUSNUMERO + 51;
    pub const ENOCOMPATPROTO: i32 = HAUSNUMERO + 52;
    pub const ETERM: i32 = HAUSNUMERO + 53;
    pub const EMTHREAD: i32 = HAUSNUMERO + 54;
}

// Context options.
pub const ZMQ_IO_THREADS: u32 = 1;

// Socket types.
pub const ZMQ_PAIR: u32 = 0;
pub const ZMQ_PUB: u32 = 1;
pub const ZMQ_SUB: u32 = 2;
pub const ZMQ_REQ: u32 = 3;
pub const ZMQ_REP: u32 = 4;
pub const ZMQ_DEALER: u32 = 5;
pub const ZMQ_ROUTER: u32 = 6;
pub const ZMQ_PULL: u32 = 7;
pub const ZMQ_PUSH: u32 = 8;
pub const ZMQ_XPUB: u32 = 9;
pub const ZMQ_XSUB: u32 = 10;
pub const ZMQ_STREAM: u32 = 11;

// Socket options.
pub const ZMQ_AFFINITY: u32 = 4;
pub const ZMQ_ROUTING_ID: u32 = 5;
pub const ZMQ_SUBSCRIBE: u32 = 6;
pub const ZMQ_UNSUBSCRIBE: u32 = 7;
pub const ZMQ_RATE: u32 = 8;
pub const ZMQ_RECOVERY_IVL: u32 = 9;
pub const ZMQ_SNDBUF: u32 = 11;
pub const ZMQ_RCVBUF: u32 = 12;
pub const ZMQ_RCVMORE: u32 = 13;
pub const ZMQ_FD: u32 = 14;
pub const ZMQ_EVENTS: u32 = 15;
pub const ZMQ_TYPE: u32 = 16;
pub const ZMQ_LINGER: u32 = 17;
pub const ZMQ_RECONNECT_IVL: u32 = 18;
pub const ZMQ_BACKLOG: u32 = 19;
pub const ZMQ_RECONNECT_IVL_MAX: u32 = 21;
pub const ZMQ_MAXMSGSIZE: u32 = 22;
pub const ZMQ_SNDHWM: u32 = 23;
pub const ZMQ_RCVHWM: u32 = 24;
pub const ZMQ_MULTICAST_HOPS: u32 = 25;
pub const ZMQ_RCVTIMEO: u32 = 27;
pub const ZMQ_SNDTIMEO: u32 = 28;
pub const ZMQ_LAST_ENDPOINT: u32 = 32;
pub const ZMQ_ROUTER_MANDATORY: u32 = 33;
pub const ZMQ_TCP_KEEPALIVE: u32 = 34;
pub const ZMQ_TCP_KEEPALIVE_CNT: u32 = 35;
pub const ZMQ_TCP_KEEPALIVE_IDLE: u32 = 36;
pub const ZMQ_TCP_KEEPALIVE_INTVL: u32 = 37;
pub const ZMQ_IMMEDIATE: u32 = 39;
pub const ZMQ_XPUB_VERBOSE: u32 = 40;
pub const ZMQ_IPV6: u32 = 42;
pub const ZMQ_MECHANISM: u32 = 43;
pub const ZMQ_PLAIN_SERVER: u32 = 44;
pub const ZMQ_PLAIN_USERNAME: u32 = 45;
pub const ZMQ_PLAIN_PASSWORD: u32 = 46;
pub const ZMQ_CURVE_SERVER: u32 = 47;
pub const ZMQ_CURVE_PUBLICKEY: u32 = 48;
pub const ZMQ_CURVE_SECRETKEY: u32 = 49;
pub const ZMQ_CURVE_SERVERKEY: u32 = 50;
pub const ZMQ_PROBE_ROUTER: u32 = 51;
pub const ZMQ_REQ_CORRELATE: u32 = 52;
pub const ZMQ_REQ_RELAXED: u32 = 53;
pub const ZMQ_CONFLATE: u32 = 54;
pub const ZMQ_ZAP_DOMAIN: u32 = 55;
pub const ZMQ_ROUTER_HANDOVER: u32 = 56;
pub const ZMQ_TOS: u32 = 57;
pub const ZMQ_GSSAPI_SERVER: u32 = 62;
pub const ZMQ_GSSAPI_PRINCIPAL: u32 = 63;
pub const ZMQ_GSSAPI_SERVICE_PRINCIPAL: u32 = 64;
pub const ZMQ_GSSAPI_PLAINTEXT: u32 = 65;
pub const ZMQ_HANDSHAKE_IVL: u32 = 66;
pub const ZMQ_SOCKS_PROXY: u32 = 68;
pub const ZMQ_XPUB_WELCOME_MSG: u32 = 72;
pub const ZMQ_HEARTBEAT_IVL: u32 = 75;
pub const ZMQ_HEARTBEAT_TTL: u32 = 76;
pub const ZMQ_HEARTBEAT_TIMEOUT: u32 = 77;
pub const ZMQ_CONNECT_TIMEOUT: u32 = 79;
/// Only in the libzmq built here (crates/zeromq-src): the connections one peer address may
/// hold at once on each TCP endpoint a socket binds; a system libzmq refuses it (`EINVAL`).
pub const ZMQ_PEER_CONNECTIONS_MAX: u32 = 1601;

// Send/recv flags.
pub const ZMQ_DONTWAIT: u32 = 1;
pub const ZMQ_SNDMORE: u32 = 2;

// Security mechanisms.
pub const ZMQ_NULL: u32 = 0;
pub const ZMQ_PLAIN: u32 = 1;
pub const ZMQ_CURVE: u32 = 2;
pub const ZMQ_GSSAPI: u32 = 3;

// Socket monitor events.
pub const ZMQ_EVENT_CONNECTED: u32 = 0x0001;
pub const ZMQ_EVENT_CONNECT_DELAYED: u32 = 0x0002;
pub const ZMQ_EVENT_CONNECT_RETRIED: u32 = 0x0004;
pub const ZMQ_EVENT_LISTENING: u32 = 0x0008;
pub const ZMQ_EVENT_BIND_FAILED: u32 = 0x0010;
pub const ZMQ_EVENT_ACCEPTED: u32 = 0x0020;
pub const ZMQ_EVENT_ACCEPT_FAILED: u32 = 0x0040;
pub const ZMQ_EVENT_CLOSED: u32 = 0x0080;
pub const ZMQ_EVENT_CLOSE_FAILED: u32 = 0x0100;
pub const ZMQ_EVENT_DISCONNECTED: u32 = 0x0200;
pub const ZMQ_EVENT_MONITOR_STOPPED: u32 = 0x0400;
pub const ZMQ_EVENT_ALL: u32 = 0xFFFF;
pub const ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL: u32 = 0x0800;
pub const ZMQ_EVENT_HANDSHAKE_SUCCEEDED: u32 = 0x1000;
pub const ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL: u32 = 0x2000;
pub const ZMQ_EVENT_HANDSHAKE_FAILED_AUTH: u32 = 0x4000;

// Poll events.
pub const ZMQ_POLLIN: u32 = 1;
pub const ZMQ_POLLOUT: u32 = 2;
pub const ZMQ_POLLERR: u32 = 4;

/// A message: 64 opaque bytes, pointer-aligned (`zmq.h`); `zmq_msg_init*` fill it in.
#[repr(C, align(8))]
pub struct zmq_msg_t {
    _opaque: [u8; 64],
}

impl Default for zmq_msg_t {
    fn default() -> Self {
        zmq_msg_t { _opaque: [0; 64] }
    }
}

/// One entry of `zmq_poll`'s array: a socket, or a file descriptor when `socket` is null.
#[repr(C)]
pub struct zmq_pollitem_t {
    pub socket: *mut c_void,
    pub fd: RawFd,
    pub events: c_short,
    pub revents: c_short,
}

/// Frees the data of a message made by `zmq_msg_init_data`.
pub type zmq_free_fn = Option<unsafe extern "C" fn(data: *mut c_void, hint: *mut c_void)>;

extern "C" {
    pub fn zmq_errno() -> c_int;
    pub fn zmq_strerror(errnum: c_int) -> *const c_char;
    pub fn zmq_version(major: *mut c_int, minor: *mut c_int, patch: *mut c_int);
    pub fn zmq_has(capability: *const c_char) -> c_int;

    pub fn zmq_ctx_new() -> *mut c_void;
    pub fn zmq_ctx_term(context: *mut c_void) -> c_int;
    pub fn zmq_ctx_set(context: *mut c_void, option: c_int, optval: c_int) -> c_int;
    pub fn zmq_ctx_get(context: *mut c_void, option: c_int) -> c_int;

    pub fn zmq_msg_init(msg: *mut zmq_msg_t) -> c_int;
    pub fn zmq_msg_init_size(msg: *mut zmq_msg_t, size: size_t) -> c_int;
    pub fn zmq_msg_init_data(
        msg: *mut zmq_msg_t,
        data: *mut c_void,
        size: size_t,
        ffn: zmq_free_fn,
        hint: *mut c_void,
    ) -> c_int;
    pub fn zmq_msg_send(msg: *mut zmq_msg_t, socket: *mut c_void, flags: c_int) -> c_int;
    pub fn zmq_msg_recv(msg: *mut zmq_msg_t, socket: *mut c_void, flags: c_int) -> c_int;
    pub fn zmq_msg_close(msg: *mut zmq_msg_t) -> c_int;
    pub fn zmq_msg_data(msg: *mut zmq_msg_t) -> *mut c_void;
    pub fn zmq_msg_size(msg: *const zmq_msg_t) -> size_t;
    pub fn zmq_msg_more(msg: *const zmq_msg_t) -> c_int;
    pub fn zmq_msg_gets(msg: *const zmq_msg_t, property: *const c_char) -> *const c_char;

    pub fn zmq_socket(context: *mut c_void, type_: c_int) -> *mut c_void;
    pub fn zmq_close(socket: *mut c_void) -> c_int;
    pub fn zmq_setsockopt(
        socket: *mut c_void,
        option: c_int,
        optval: *const c_void,
        optvallen: size_t,
    ) -> c_int;
    pub fn zmq_getsockopt(
        socket: *mut c_void,
        option: c_int,
        optval: *mut c_void,
        optvallen: *mut size_t,
    ) -> c_int;
    pub fn zmq_bind(socket: *mut c_void, addr: *const c_char) -> c_int;
    pub fn zmq_connect(socket: *mut c_void, addr: *const c_char) -> c_int;
    pub fn zmq_unbind(socket: *mut c_void, addr: *const c_char) -> c_int;
    pub fn zmq_disconnect(socket: *mut c_void, addr: *const c_char) -> c_int;
    pub fn zmq_recv(socket: *mut c_void, buf: *mut c_void, len: size_t, flags: c_int) -> c_int;
    pub fn zmq_socket_monitor(socket: *mut c_void, addr: *const c_char, events: c_int) -> c_int;

    pub fn zmq_poll(items: *mut zmq_pollitem_t, nitems: c_int, timeout: c_long) -> c_int;
    pub fn zmq_proxy(frontend: *mut c_void, backend: *mut c_void, capture: *mut c_void) -> c_int;
    pub fn zmq_proxy_steerable(
        frontend: *mut c_void,
        backend: *mut c_void,
        capture: *mut c_void,
        control: *mut c_void,
    ) -> c_int;

    pub fn zmq_z85_encode(dest: *mut c_char, data: *const u8, size: size_t) -> *mut c_char;
    pub fn zmq_z85_decode(dest: *mut u8, string: *const c_char) -> *mut u8;
    pub fn zmq_curve_keypair(z85_public_key: *mut c_char, z85_secret_key: *mut c_char) -> c_int;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    /// CURVE (on libsodium) is what this crate is for: every build must have it.
    #[test]
    fn has_curve() {
        assert_eq!(unsafe { zmq_has(c"curve".as_ptr()) }, 1);
    }

    /// libsodium makes a key pair: two 40-character Z85 keys.
    #[test]
    fn curve_keypair() {
        let (mut public, mut secret) = ([0 as c_char; 41], [0 as c_char; 41]);
        assert_eq!(
            unsafe { zmq_curve_keypair(public.as_mut_ptr(), secret.as_mut_ptr()) },
            0
        );
        let public = unsafe { CStr::from_ptr(public.as_ptr()) };
        assert_eq!(public.to_bytes().len(), 40);
    }

    /// The libzmq built here is the patched one: it knows our socket option.
    #[cfg(not(feature = "system"))]
    #[test]
    fn has_the_peer_connection_cap() {
        let cap: c_int = 8;
        unsafe {
            let ctx = zmq_ctx_new();
            let socket = zmq_socket(ctx, ZMQ_ROUTER as c_int);
            let rc = zmq_setsockopt(
                socket,
                ZMQ_PEER_CONNECTIONS_MAX as c_int,
                (&cap as *const c_int).cast(),
                std::mem::size_of::<c_int>(),
            );
            assert_eq!(rc, 0, "errno {}", zmq_errno());
            zmq_close(socket);
            zmq_ctx_term(ctx);
        }
    }

    /// The message struct has zmq.h's size and alignment.
    #[test]
    fn msg_layout() {
        assert_eq!(std::mem::size_of::<zmq_msg_t>(), 64);
        assert_eq!(std::mem::align_of::<zmq_msg_t>(), 8);
    }
}
