//! Random bytes and malformed frames sent to the broker's worker endpoint, by a foreign
//! peer that connects like a worker, are dropped and counted; the pool keeps serving.

mod common;

use common::{echo_run, Config, TestWorker};
use rand::{Rng, RngCore};
use zerotasq::protocol::{header, Command, Message, Ready, ResultBatchWriter};
use zerotasq::Pool;

#[test]
fn garbage_on_the_worker_endpoint_leaves_the_broker_serving() {
    let pool = Pool::<TestWorker>::builder(Config::default())
        .processes(2)
        .build()
        .unwrap();
    let endpoint = pool.raw().worker_endpoint().to_string();
    let ctx = zmq::Context::new();
    let mut rng = rand::rng();
    let mut sent = 0;
    // Many foreign peers, each with its own flavour of garbage.
    for peer in 0..20 {
        let socket = ctx.socket(zmq::DEALER).unwrap();
        socket.set_linger(1000).unwrap();
        socket.connect(&endpoint).unwrap();
        for _ in 0..50 {
            let frames: Vec<Vec<u8>> = match peer % 5 {
                0 => (0..rng.random_range(1..4))
                    .map(|_| {
                        let mut b = vec![0; rng.random_range(0..64)];
                        rng.fill_bytes(&mut b);
                        b
                    })
                    .collect(),
                // A valid header with a truncated body.
                1 => vec![header(Command::Results).to_vec(), vec![5, 0, 0, 0, 1]],
                // Results from a peer that never said READY, for ids that exist.
                2 => {
                    let mut w = ResultBatchWriter::new();
                    for id in 0..10 {
                        w.push_ok(id, b"forged");
                    }
                    vec![header(Command::Results).to_vec(), w.finish(1)]
                }
                // Wrong protocol version.
                3 => vec![vec![b'Z', b'T', 99, 1]],
                // A client command on the worker side.
                _ => Message::Cancel.encode(),
            };
            socket.send_multipart(frames, 0).unwrap();
            sent += 1;
        }
        if peer == 2 {
            // A peer that registers and then sends forged results for tasks it never got.
            socket
                .send_multipart(
                    Message::Ready(Ready {
                        capacity: 1,
                        pid: 1,
                        host: "evil",
                        max_batch: 0,
                        batch_wait_us: 0,
                    })
                    .encode(),
                    0,
                )
                .unwrap();
        }
        drop(socket);
    }
    let out = echo_run(pool, 10_000);
    let (out, stats) = out;
    assert_eq!(
        out,
        (0..10_000).collect::<Vec<_>>(),
        "no forged result reached the client"
    );
    assert!(stats.malformed > 0, "{stats:?}");
    assert!(sent > 0);
}
