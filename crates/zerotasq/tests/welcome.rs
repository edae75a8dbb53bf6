//! A remote worker fetches its pool's welcome bytes (`fetch_welcome`) over real loopback TCP
//! with CURVE before it joins: listed keys get them, strangers and empty ports end in a clear
//! error within the patience, and asking does not get in the way of joining.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, keys, within, Config, Job, Keys, TestWorker};
use zerotasq::worker_runtime::{remote_identity, serve_remote, WorkerOptions};
use zerotasq::Context;
use zerotasq::{fetch_welcome, Error, KeyPair, Pool, Security, TcpListen};

fn worker_options(endpoint: &str, keys: KeyPair, server: &Keys) -> WorkerOptions {
    WorkerOptions {
        endpoint: endpoint.to_string(),
        identity: remote_identity(),
        capacity: 2,
        heartbeat_interval: Duration::from_millis(100),
        liveness: 6,
        max_message: 1 << 20,
        security: Security::Client {
            keys,
            server: server.server.public,
        },
        task_timeout: None,
        recycling: Default::default(),
        batching: Default::default(),
    }
}

#[test]
fn listed_workers_get_the_welcome_strangers_an_error_and_joining_still_works() {
    let k = keys();
    let pool = Pool::<TestWorker>::builder(Config::default())
        .processes(1)
        .welcome(b"defs".to_vec())
        .tcp(TcpListen {
            workers: Some("tcp://127.0.0.1:0".into()),
            clients: None,
            security: Security::Server {
                keys: k.server.clone(),
                allowed: vec![k.worker.public],
            },
            allow_insecure_remote: false,
        })
        .build()
        .unwrap();
    let endpoint = pool.raw().tcp_endpoints().workers.clone().unwrap();
    let ctx = Context::new();
    let opts = worker_options(&endpoint, k.worker.clone(), &k);

    let welcome = within(Duration::from_secs(30), {
        let (ctx, opts) = (ctx.clone(), opts.clone());
        move || fetch_welcome(&ctx, &opts, Duration::from_secs(10))
    });
    assert_eq!(welcome.unwrap(), b"defs");

    let stranger = worker_options(&endpoint, KeyPair::generate().unwrap(), &k);
    let patience = Duration::from_secs(1);
    let started = Instant::now();
    let refused = within(Duration::from_secs(30), {
        let ctx = ctx.clone();
        move || fetch_welcome(&ctx, &stranger, patience)
    });
    let waited = started.elapsed();
    let Err(Error::Unreachable(why)) = refused else {
        panic!("a stranger was answered: {refused:?}")
    };
    assert!(why.contains(&endpoint), "{why}");
    assert!(why.contains("refused our key"), "{why}");
    assert!(waited < Duration::from_secs(10), "no hang: {waited:?}");
    assert_eq!(
        pool.stats().welcomes,
        1,
        "only the listed worker was answered"
    );
    assert_eq!(pool.stats().workers_ready, 1, "asking is not joining");

    // The same process now joins as a worker, with the same context.
    let pool_ready = pool.stats().workers_ready;
    std::thread::spawn(move || {
        serve_remote(&ctx, &opts, |task: &[u8], out: &mut Vec<u8>| {
            let _: Job = zerotasq::codec::decode(task)?;
            zerotasq::codec::encode_into(&(std::process::id() as u64), out)
        })
    });
    assert!(
        eventually(Duration::from_secs(20), || pool.stats().workers_ready
            > pool_ready),
        "the remote worker never joined: {:?}",
        pool.stats()
    );
    let pids = within(Duration::from_secs(60), move || {
        let pids: Vec<u64> = pool
            .map((0..200).map(|_| Job::SleepPid(2)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        pids
    });
    assert_eq!(pids.len(), 200);
    assert!(
        pids.contains(&(std::process::id() as u64)),
        "the worker that asked first served tasks too"
    );
}

#[test]
fn nothing_listening_is_an_error_within_the_patience() {
    let k = keys();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("tcp://{}", listener.local_addr().unwrap());
    drop(listener);
    let opts = worker_options(&endpoint, k.worker.clone(), &k);
    let started = Instant::now();
    let result = within(Duration::from_secs(30), move || {
        fetch_welcome(&Context::new(), &opts, Duration::from_secs(1))
    });
    let waited = started.elapsed();
    let Err(Error::Unreachable(why)) = result else {
        panic!("expected no answer: {result:?}")
    };
    assert!(why.contains(&endpoint), "{why}");
    assert!(waited < Duration::from_secs(10), "no hang: {waited:?}");
}

#[test]
fn a_worker_started_before_its_broker_asks_until_it_is_up() {
    let k = keys();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("tcp://{}", listener.local_addr().unwrap());
    drop(listener);
    let opts = worker_options(&endpoint, k.worker.clone(), &k);
    let asking =
        std::thread::spawn(move || fetch_welcome(&Context::new(), &opts, Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(300));
    let _pool = Pool::<TestWorker>::builder(Config::default())
        .processes(1)
        .welcome(b"late".to_vec())
        .tcp(TcpListen {
            workers: Some(endpoint),
            clients: None,
            security: Security::Server {
                keys: k.server.clone(),
                allowed: vec![k.worker.public],
            },
            allow_insecure_remote: false,
        })
        .build()
        .unwrap();
    let welcome = within(Duration::from_secs(30), move || asking.join().unwrap());
    assert_eq!(welcome.unwrap(), b"late");
}

#[test]
fn a_broker_of_another_protocol_version_is_a_refusal() {
    // A stand-in for a broker of another version: it answers the first message in its
    // header, and stays open until that answer is read (a socket closed at once may drop
    // what it has not yet sent: seen under load).
    let zctx = zmq::Context::new();
    let router = zctx.socket(zmq::ROUTER).unwrap();
    router.bind("tcp://127.0.0.1:0").unwrap();
    let endpoint = router.get_last_endpoint().unwrap().unwrap();
    let answering = std::thread::spawn(move || {
        let mut frames = router.recv_multipart(0).unwrap();
        frames.truncate(1);
        frames.push(vec![b'Z', b'T', 99, 10]);
        frames.push(b"speaks version 99".to_vec());
        router.send_multipart(frames, 0).unwrap();
        router
    });
    let opts = WorkerOptions {
        security: Security::Insecure,
        ..worker_options(&endpoint, KeyPair::generate().unwrap(), &keys())
    };
    let result = within(Duration::from_secs(30), move || {
        fetch_welcome(&Context::new(), &opts, Duration::from_secs(10))
    });
    answering.join().unwrap();
    let Err(Error::Refused(why)) = result else {
        panic!("expected a refusal: {result:?}")
    };
    assert!(why.contains("version 99"), "{why}");
}
