#![warn(missing_docs)]
//! ZeroTasQ: stream tasks from one program through a ZeroMQ load-balancing broker to
//! long-lived worker processes, and get the outcomes back as an iterator — in input order or
//! as completed — while the input is read lazily.
//!
//! ```no_run
//! use zerotasq::{Pool, Worker};
//!
//! struct Square;
//! impl Worker for Square {
//!     type Config = ();
//!     type Input = u64;
//!     type Output = u64;
//!     type Error = String;
//!     fn init(_: ()) -> Result<Self, String> { Ok(Square) }
//!     fn process(&mut self, x: u64) -> Result<u64, String> { Ok(x * x) }
//! }
//!
//! fn main() -> Result<(), zerotasq::Error> {
//!     zerotasq::serve_if_worker(); // a re-executed child becomes a worker here
//!     let pool = Pool::<Square>::builder(()).processes(4).build()?;
//!     for outcome in pool.map(0..1_000_000)? {
//!         println!("{}", outcome.expect("task failed"));
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # Layout
//! The public surface is what the three faces (this crate's [`Pool`], the command line,
//! the Python package) build on; the rest is private.
//! - `protocol` — frames ⇄ typed messages; pure, versioned, checked (public only with the
//!   `wire` feature, for tests, fuzzing and peers written elsewhere; so is `broker`, for
//!   fuzzing).
//! - `transport` — the only module touching ZeroMQ: sockets, options, polling, CURVE.
//! - `broker` — the broker's state machine (LRU with credit, batching, retries), no I/O;
//!   [`status`] — what it reports when asked ([`BrokerStatus`], JSON), and its rates.
//! - `broker_loop` — the broker thread: sockets ⇄ state machine.
//! - `client` — the lazy, windowed [`Stream`]; `connector` — blocking `send`/`recv` from
//!   two threads ([`Connector`]).
//! - `link` — how a client reaches its broker (in process, or [`RemoteBroker`] over TCP)
//!   and tells it is gone.
//! - `worker` — the [`Worker`] trait; [`worker_runtime`] — what every worker process runs
//!   ([`worker_runtime::serve`]); [`worker_session`] — a worker's session with its broker,
//!   shared by every kind of worker; [`worker_limits`] — a task's time limit, recycling.
//! - `supervisor` — starts, watches, restarts and kills local worker processes
//!   ([`WorkerProcesses`] for workers of a broker elsewhere).
//! - [`child`] — the child side: [`serve_if_worker`] and the environment contract;
//!   [`slot_env`] — what each local worker finds in its environment for its slot.
//! - `ipc_dir` — the pool's private 0700 directory for its ipc endpoint.
//! - `pool` — [`RawPool`] (bytes, any worker command) and the typed [`Pool`].
//! - [`pack`] — the adaptive size of packs of tiny items; [`reorder`] — outcomes waiting to
//!   be yielded, in input order or as they came.
//! - [`codec`] — serde (postcard) for the Rust face.
//! - `error` — [`TaskError`] (one task's failure, as data) and [`Error`] (the pool's).

// The broker's state machine is public only with the `wire` feature, for fuzzing.
#[cfg(feature = "wire")]
#[allow(missing_docs)]
pub mod broker;
#[cfg(not(feature = "wire"))]
mod broker;
mod broker_loop;
pub mod child;
mod client;
pub mod codec;
mod connector;
mod error;
mod ipc_dir;
mod link;
pub mod pack;
mod pool;
#[cfg(feature = "wire")]
#[allow(missing_docs)]
pub mod protocol;
#[cfg(not(feature = "wire"))]
mod protocol;
pub mod reorder;
pub mod slot_env;
pub mod status;
mod supervisor;
mod transport;
mod worker;
mod worker_io;
pub mod worker_limits;
pub mod worker_runtime;
pub mod worker_session;

pub use broker::{BrokerConfig, BrokerStats};
pub use child::{serve_if_worker, worker_slot};
pub use client::{DecodeFn, EncodeFn, Stream};
pub use connector::Connector;
pub use error::{Error, ErrorKind, TaskError, TimedOut};
pub use link::{BrokerAccess, Link, RemoteBroker};
pub use pool::{Pool, PoolBuilder, PoolSpec, RawPool, TcpEndpoints, TcpListen};
pub use status::BrokerStatus;
pub use supervisor::{SupervisorConfig, WorkerCommand, WorkerExit, WorkerProcesses};
pub use transport::curve::{
    check_insecure, client_security, read_public_keys, server_security, KeyPair, PublicKey,
    Security,
};
pub use transport::Context;
pub use worker::{serve_remote_worker, Worker};
pub use worker_runtime::fetch_welcome;
