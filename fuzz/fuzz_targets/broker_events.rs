//! The broker's state machine driven by arbitrary events — messages from workers, clients
//! and the supervisor (valid or not), ticks and flushes at advancing fake times, unreachable
//! peers, a close. It must never panic, and its counters must stay consistent: never more
//! outcomes than tasks submitted.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use zerotasq::broker::Broker;
use zerotasq::protocol::{header, Command, Message, Ready, TaskBatchWriter};
use zerotasq::BrokerConfig;

/// A small cast of peers, so that events meet the same ones again.
const PEERS: [&[u8]; 4] = [b"w0", b"w1", b"c0", b"c1"];

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut now = start;
    let cfg = BrokerConfig {
        heartbeat_interval: Duration::from_millis(10),
        liveness: 3,
        max_retries: 2,
        ..BrokerConfig::default()
    };
    let mut broker = Broker::new(cfg, now);
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        let peer = PEERS[(op as usize >> 4) % PEERS.len()];
        let arg = bytes.next().unwrap_or(0);
        let frames: Vec<Vec<u8>> = match op & 0x0f {
            0 => Message::Ready(Ready {
                capacity: u32::from(arg % 4),
                pid: 1,
                host: "h",
                max_batch: u32::from(arg % 3),
                batch_wait_us: u32::from(arg) * 100,
            })
            .encode(),
            1 => {
                let mut w = TaskBatchWriter::new();
                for i in 0..(arg % 8) {
                    w.push(u64::from(i) + u64::from(arg) * 8, &[arg; 3]);
                }
                vec![header(Command::Submit).to_vec(), w.finish()]
            }
            2 => {
                // Results for ids the broker may or may not have handed out.
                let mut w = zerotasq::protocol::ResultBatchWriter::new();
                for i in 0..(arg % 4) {
                    w.push_ok(u64::from(i) + u64::from(arg), b"r");
                }
                vec![header(Command::Results).to_vec(), w.finish(u64::from(arg))]
            }
            3 => vec![header(Command::Heartbeat).to_vec()],
            4 => vec![header(Command::Goodbye).to_vec()],
            5 => Message::TimedOut {
                id: u64::from(arg),
                limit: Duration::from_millis(5),
            }
            .encode(),
            6 => vec![header(Command::Recycling).to_vec()],
            7 => vec![header(Command::Cancel).to_vec()],
            8 => {
                now += Duration::from_millis(u64::from(arg));
                broker.tick(now);
                continue;
            }
            9 => {
                broker.worker_unreachable(peer);
                continue;
            }
            10 => {
                let exited = Message::ChildExited {
                    identity: peer,
                    status: "killed by signal 9",
                };
                broker.on_control(&exited.encode(), now);
                continue;
            }
            // Raw garbage, with a valid header now and then.
            _ => {
                let rest: Vec<u8> = bytes.by_ref().take(usize::from(arg % 32)).collect();
                vec![header(Command::Submit).to_vec(), rest]
            }
        };
        if peer.starts_with(b"w") {
            broker.on_worker(peer, &frames, now);
        } else {
            broker.on_client(peer, &frames, now);
        }
        broker.flush(now);
        let _ = broker.outbox().count();
        let stats = broker.stats();
        assert!(
            stats.completed + stats.failed <= stats.submitted,
            "{stats:?}"
        );
        assert!(broker.next_wakeup(now) >= now);
    }
    broker.close();
    broker.flush(now);
    let _ = broker.outbox().count();
});
