//! The broker's status over real loopback TCP with CURVE: two remote clients show with their
//! queue depths, the workers with their load, a stranger's request gets nothing, and the
//! pool's own `status()` tells the same.

mod common;

use std::time::Duration;

use common::{eventually, keys, within, Keys};
use zerotasq::worker_runtime::{remote_identity, serve_remote, WorkerOptions};
use zerotasq::Context;
use zerotasq::PoolSpec;
use zerotasq::{BrokerStatus, Error, KeyPair, RawPool, RemoteBroker, Security, TcpListen};

fn client(endpoint: &str, keys: KeyPair, k: &Keys) -> RemoteBroker {
    RemoteBroker::connect(
        endpoint,
        Security::Client {
            keys,
            server: k.server.public,
        },
        false,
    )
    .unwrap()
    .patience(Duration::from_secs(2), Duration::from_secs(1))
}

/// A thread streaming `n` tasks through `broker`; returns how many succeeded.
fn streaming(broker: RemoteBroker, n: u32) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        common::bytes_stream(&broker, n)
            .filter(|r| r.is_ok())
            .count()
    })
}

fn queue_depths(status: &BrokerStatus) -> Vec<usize> {
    let mut depths: Vec<usize> = status.clients.iter().map(|c| c.queued).collect();
    depths.sort();
    depths
}

#[test]
fn two_remote_clients_show_with_their_queue_depths() {
    let k = keys();
    // A broker with no worker yet: what the clients submit stays queued.
    let pool = RawPool::start(PoolSpec {
        tcp: Some(TcpListen {
            workers: Some("tcp://127.0.0.1:0".into()),
            clients: Some("tcp://127.0.0.1:0".into()),
            security: Security::Server {
                keys: k.server.clone(),
                allowed: vec![k.worker.public, k.client.public],
            },
            allow_insecure_remote: false,
        }),
        ..PoolSpec::default()
    })
    .unwrap();
    let clients_ep = pool.tcp_endpoints().clients.clone().unwrap();
    let workers_ep = pool.tcp_endpoints().workers.clone().unwrap();
    let a = streaming(client(&clients_ep, k.client.clone(), &k), 10);
    let b = streaming(client(&clients_ep, k.client.clone(), &k), 25);

    let observer = client(&clients_ep, k.client.clone(), &k);
    let mut last = None;
    let seen = eventually(Duration::from_secs(20), || {
        let status = observer.status().unwrap();
        let done = queue_depths(&status) == [10, 25];
        last = Some(status);
        done
    });
    let status = last.unwrap();
    assert!(seen, "{status:#?}");
    assert_eq!(status.totals.queued, 35);
    assert!(status.workers.is_empty());
    assert!(status.clients.iter().all(|c| c.in_flight == 0));
    assert_eq!(
        queue_depths(&pool.status().unwrap()),
        [10, 25],
        "the pool's own status tells the same"
    );

    // A key the broker does not list gets nothing: an error, within the patience.
    let stranger = client(&clients_ep, KeyPair::generate().unwrap(), &k);
    let refused = within(Duration::from_secs(30), move || stranger.status());
    let Err(Error::Unreachable(why)) = refused else {
        panic!("a stranger got an answer: {refused:?}")
    };
    assert!(
        why.contains(&clients_ep) && why.contains("refused our key"),
        "{why}"
    );

    // A worker joins; both streams finish, and the figures say who did what.
    let opts = WorkerOptions {
        endpoint: workers_ep,
        identity: remote_identity(),
        capacity: 2,
        heartbeat_interval: Duration::from_millis(100),
        liveness: 6,
        max_message: 1 << 20,
        security: Security::Client {
            keys: k.worker.clone(),
            server: k.server.public,
        },
        task_timeout: None,
        recycling: Default::default(),
        batching: Default::default(),
    };
    std::thread::spawn(move || {
        serve_remote(&Context::new(), &opts, |task: &[u8], out: &mut Vec<u8>| {
            out.extend_from_slice(task);
            Ok(())
        })
    });
    let counts = within(Duration::from_secs(60), move || {
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(counts, (10, 25));
    let status = observer.status().unwrap();
    assert_eq!(status.workers.len(), 1, "{status:#?}");
    assert_eq!(status.workers[0].completed, 35);
    assert!(status.workers[0].id.starts_with("r-"), "{status:#?}");
    // The finished clients still show for a while, with their figures.
    let mut done: Vec<(u64, u64)> = status
        .clients
        .iter()
        .map(|c| (c.submitted, c.completed))
        .collect();
    done.sort();
    assert_eq!(done, [(10, 10), (25, 25)], "{status:#?}");
}

#[test]
fn status_from_a_broker_that_is_not_there_is_an_error_not_a_hang() {
    let k = keys();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("tcp://{}", listener.local_addr().unwrap());
    drop(listener);
    let nowhere = client(&endpoint, k.client.clone(), &k);
    let result = within(Duration::from_secs(30), move || nowhere.status());
    let Err(Error::Unreachable(why)) = result else {
        panic!("expected no answer: {result:?}")
    };
    assert!(why.contains(&endpoint), "{why}");
}
