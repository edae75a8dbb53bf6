//! The Rust face's client outlives its broker: a standalone broker (a process of its own,
//! this test binary in its broker role) is killed with SIGKILL mid-stream and started again
//! on the same ports; the `RemoteBroker` client submits again what it still waited for, and
//! its outcomes are exactly an undisturbed run's. Remote workers rejoin on their own.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{keys, within, Job, Keys, RemoteWorker};
use zerotasq::{BrokerAccess, KeyPair, PoolSpec, RawPool, RemoteBroker, Security, TcpListen};

/// The broker role: a standalone broker on the endpoints named in the environment, CURVE
/// with the key pair in `ZT_BROKER_KEY` admitting the keys in `ZT_BROKER_ALLOW`; prints its
/// bound endpoints and serves until killed.
#[ctor::ctor]
fn broker_role() {
    let Ok(clients) = std::env::var("ZT_BROKER_CLIENTS") else {
        return;
    };
    let workers = std::env::var("ZT_BROKER_WORKERS").unwrap();
    let key_file = std::env::var("ZT_BROKER_KEY").unwrap();
    let keys = KeyPair::read(std::path::Path::new(&key_file)).unwrap();
    let allowed = std::env::var("ZT_BROKER_ALLOW")
        .unwrap()
        .split(',')
        .map(|k| k.parse().unwrap())
        .collect();
    let pool = RawPool::start(PoolSpec {
        tcp: Some(TcpListen {
            workers: Some(workers),
            clients: Some(clients),
            security: Security::Server { keys, allowed },
            allow_insecure_remote: false,
        }),
        ..PoolSpec::default()
    })
    .unwrap();
    let bound = pool.tcp_endpoints();
    println!(
        "{} {}",
        bound.clients.as_ref().unwrap(),
        bound.workers.as_ref().unwrap()
    );
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

struct Broker(Child);

impl Broker {
    /// Starts the broker role on `clients` and `workers`; the endpoints it bound.
    fn start(k: &Keys, clients: &str, workers: &str) -> (Broker, String, String) {
        let allow = format!("{},{}", k.worker.public, k.client.public);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("ZT_BROKER_CLIENTS", clients)
            .env("ZT_BROKER_WORKERS", workers)
            .env("ZT_BROKER_KEY", k.dir.join("server.key_secret"))
            .env("ZT_BROKER_ALLOW", allow)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut parts = line.split_whitespace().map(String::from);
        let (clients, workers) = (parts.next().unwrap(), parts.next().unwrap());
        (Broker(child), clients, workers)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill(); // SIGKILL
        let _ = self.0.wait();
    }
}

#[test]
fn a_stream_survives_its_broker_killed_and_restarted_mid_run() {
    const N: u64 = 2_000;
    let k = keys();
    k.server.write(&k.dir.join("server")).unwrap();
    let (broker, clients, workers) = Broker::start(&k, "tcp://127.0.0.1:0", "tcp://127.0.0.1:0");
    let _workers: Vec<RemoteWorker> = (0..2).map(|_| RemoteWorker::start(&workers, &k)).collect();
    let client = RemoteBroker::connect(
        &clients,
        Security::Client {
            keys: k.client.clone(),
            server: k.server.public,
        },
        false,
    )
    .unwrap()
    .patience(Duration::from_secs(10), Duration::from_secs(10));
    let (clients2, workers2) = (clients.clone(), workers.clone());
    let k2 = keys_copy(&k);
    let out: Vec<u64> = within(Duration::from_secs(120), move || {
        let stream = client
            .stream(
                (0..N).map(|i| Job::Sleep(i, 2)),
                256,
                true,
                Box::new(|job: Job, buf: &mut Vec<u8>| zerotasq::codec::encode_into(&job, buf)),
                Box::new(|bytes: &[u8]| zerotasq::codec::decode::<u64>(bytes)),
            )
            .unwrap();
        let mut broker = Some(broker);
        let mut restarted = None;
        let mut out = Vec::new();
        for (i, outcome) in stream.enumerate() {
            out.push(outcome.expect("no task fails"));
            if i == 200 {
                drop(broker.take()); // SIGKILL, mid-stream
                std::thread::sleep(Duration::from_secs(1));
                restarted = Some(Broker::start(&k2, &clients2, &workers2));
            }
        }
        drop(restarted);
        out
    });
    assert_eq!(out, (0..N).collect::<Vec<_>>());
}

/// The same keys, for the thread that restarts the broker.
fn keys_copy(k: &Keys) -> Keys {
    Keys {
        server: k.server.clone(),
        worker: k.worker.clone(),
        client: k.client.clone(),
        dir: k.dir.clone(),
    }
}
