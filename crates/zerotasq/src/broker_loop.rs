//! The broker's event loop: moves frames between its sockets and the [`Broker`] state
//! machine. One thread; it never blocks on one peer (all its sends are non-blocking).
//!
//! Each side (clients, workers) may have several ROUTER sockets — in-process and ipc for
//! local peers, a CURVE-secured TCP one for remote peers — since security is a property of a
//! socket, not of an endpoint. The loop remembers which socket each peer came in on.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::broker::{Broker, BrokerStats, Route};
use crate::error::Error;
use crate::transport::{poll, Frame, Pollable, SendError, Socket};

/// Messages taken from one socket before the others get a turn.
const RECV_BUDGET: usize = 256;
/// Peers remembered per side before the table is reset (it only grows with new peers).
const MAX_PEERS: usize = 100_000;

/// The ROUTER sockets of one side, and which one each peer uses.
pub struct Side {
    sockets: Vec<Socket>,
    home: HashMap<Vec<u8>, usize>,
}

impl Side {
    pub fn new(sockets: Vec<Socket>) -> Side {
        Side {
            sockets,
            home: HashMap::new(),
        }
    }

    fn recv(&mut self, index: usize) -> Result<Option<Vec<Frame>>, Error> {
        let frames = self.sockets[index].recv(false)?;
        if self.sockets.len() > 1 {
            if let Some(identity) = frames.as_ref().and_then(|f| f.first()) {
                // Only a peer seen for the first time (or on another socket) costs an insert.
                if self.home.get(&identity[..]) != Some(&index) {
                    if self.home.len() >= MAX_PEERS {
                        self.home.clear();
                    }
                    self.home.insert(identity.to_vec(), index);
                }
            }
        }
        Ok(frames)
    }

    fn socket_for(&self, identity: &[u8]) -> &Socket {
        &self.sockets[self.home.get(identity).copied().unwrap_or(0)]
    }
}

/// The broker's sockets: clients' side, workers' side, the in-process control channel from
/// the supervisor, and the pipe on which the pool says stop.
pub struct BrokerSockets {
    pub clients: Side,
    pub workers: Side,
    pub control: Socket,
    pub stop: std::io::PipeReader,
}

/// Runs until `stop` (the read end of a pipe) becomes readable: the pool is closing.
pub fn run(
    mut broker: Broker,
    mut sockets: BrokerSockets,
    stats: Arc<Mutex<BrokerStats>>,
) -> Result<(), Error> {
    let (n_workers, n_clients) = (sockets.workers.sockets.len(), sockets.clients.sockets.len());
    loop {
        let now = Instant::now();
        let timeout = broker.next_wakeup(now).saturating_duration_since(now);
        let mut items = vec![
            Pollable::Socket(&sockets.control),
            Pollable::Fd(sockets.stop.as_raw_fd()),
        ];
        items.extend(sockets.workers.sockets.iter().map(Pollable::Socket));
        items.extend(sockets.clients.sockets.iter().map(Pollable::Socket));
        let ready = poll(&items, Some(timeout.max(Duration::from_millis(1))))?;
        drop(items);
        let now = Instant::now();
        for index in 0..n_workers {
            if !ready[2 + index] {
                continue;
            }
            for _ in 0..RECV_BUDGET {
                let Some(frames) = sockets.workers.recv(index)? else {
                    break;
                };
                if let Some((identity, rest)) = frames.split_first() {
                    broker.on_worker(identity, rest, now);
                }
            }
        }
        for index in 0..n_clients {
            if !ready[2 + n_workers + index] {
                continue;
            }
            for _ in 0..RECV_BUDGET {
                let Some(frames) = sockets.clients.recv(index)? else {
                    break;
                };
                // Shared, so the broker keeps each task as a slice of its message.
                let frames: Vec<_> = frames.into_iter().map(Frame::into_bytes).collect();
                if let Some((identity, rest)) = frames.split_first() {
                    broker.on_client(identity, rest, now);
                }
            }
        }
        // Control last: a worker's final results, already in its socket, are counted
        // before the supervisor's news of its exit re-queues its tasks.
        if ready[0] {
            while let Some(frames) = sockets.control.recv(false)? {
                broker.on_control(&frames, now);
            }
        }
        if ready[1] {
            stop(&mut broker, &sockets, now, &stats);
            return Ok(());
        }
        broker.tick(now);
        send_all(&mut broker, &sockets, now, &stats)?;
    }
}

/// Flushes the broker and sends its outbox; a peer found gone changes the state (tasks
/// re-queued), so repeat until nothing new is produced. The figures are published before
/// each round of sends, so a client that sees an outcome sees it counted.
fn send_all(
    broker: &mut Broker,
    sockets: &BrokerSockets,
    now: Instant,
    stats: &Mutex<BrokerStats>,
) -> Result<(), Error> {
    loop {
        broker.flush(now);
        *stats.lock().expect("stats lock") = broker.stats();
        let mut gone_workers = Vec::new();
        let mut gone_clients = Vec::new();
        let mut sent_any = false;
        for (route, frames) in broker.outbox() {
            sent_any = true;
            let (socket, identity) = match &route {
                Route::Worker(id) => (sockets.workers.socket_for(id), Some(id)),
                Route::Client(id) => (sockets.clients.socket_for(id), Some(id)),
                Route::Supervisor => (&sockets.control, None),
            };
            let routed = identity
                .cloned()
                .into_iter()
                .chain(frames)
                .collect::<Vec<_>>();
            match socket.send(routed, false) {
                Ok(()) => {}
                Err(SendError::Unreachable) => match route {
                    Route::Worker(id) => gone_workers.push(id),
                    Route::Client(id) => gone_clients.push(id),
                    Route::Supervisor => {}
                },
                Err(SendError::WouldBlock) => {
                    // Credit and the client's window keep queues far below the high-water
                    // mark, so this means a peer that stopped reading.
                    tracing::error!("a peer's queue is full; message dropped ({route:?})");
                }
                Err(SendError::Other(e)) => return Err(e),
            }
        }
        if !sent_any || (gone_workers.is_empty() && gone_clients.is_empty()) {
            return Ok(());
        }
        for id in gone_workers {
            broker.worker_unreachable(&id);
        }
        for id in gone_clients {
            broker.client_unreachable(&id);
        }
    }
}

/// Ends the loop: workers are told to exit, and every open task ends as `Cancelled`.
fn stop(broker: &mut Broker, sockets: &BrokerSockets, now: Instant, stats: &Mutex<BrokerStats>) {
    broker.close();
    if let Err(e) = send_all(broker, sockets, now, stats) {
        tracing::warn!("while closing the broker: {e}");
    }
}
