//! Pools across machines over real TCP (loopback here; network namespaces in `netns.rs`):
//! remote workers joining and rejoining, CURVE keeping strangers out, a standalone broker
//! shared fairly by two clients, and clear errors instead of hangs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    bytes_stream, echo_run, keys, thread_workers, within, Config, Job, Keys, RemoteWorker,
    TestWorker,
};
use zerotasq::protocol::{Message, Ready};
use zerotasq::PoolSpec;
use zerotasq::{
    BrokerAccess, ErrorKind, KeyPair, Pool, RawPool, RemoteBroker, Security, TcpListen,
};

fn server_security(k: &Keys) -> Security {
    Security::Server {
        keys: k.server.clone(),
        allowed: vec![k.worker.public, k.client.public],
    }
}

fn tcp(workers: Option<&str>, clients: Option<&str>, security: Security) -> TcpListen {
    TcpListen {
        workers: workers.map(String::from),
        clients: clients.map(String::from),
        security,
        allow_insecure_remote: false,
    }
}

#[test]
fn a_remote_worker_joins_mid_stream_over_curve() {
    let k = keys();
    let pool = Pool::<TestWorker>::builder(Config::default())
        .processes(1)
        .tcp(tcp(Some("tcp://127.0.0.1:0"), None, server_security(&k)))
        .build()
        .unwrap();
    let endpoint = pool.raw().tcp_endpoints().workers.clone().unwrap();
    let (pids, stats, remote_pid) = within(Duration::from_secs(120), move || {
        let mut stream = pool.map((0..1_500).map(|_| Job::SleepPid(2))).unwrap();
        let mut pids: Vec<u64> = stream.by_ref().take(100).map(|r| r.unwrap()).collect();
        let remote = RemoteWorker::start(&endpoint, &k);
        let remote_pid = remote.0.id() as u64;
        pids.extend(stream.map(|r| r.unwrap()));
        (pids, pool.stats(), remote_pid)
    });
    assert_eq!(pids.len(), 1_500);
    assert!(
        pids.contains(&remote_pid),
        "the remote worker got tasks: {stats:?}"
    );
    assert!(stats.workers_ready >= 2);
}

#[test]
fn strangers_without_an_allowed_key_get_no_task_and_submit_nothing() {
    let k = keys();
    let pool = Pool::<TestWorker>::builder(Config::default())
        .processes(2)
        .tcp(tcp(
            Some("tcp://127.0.0.1:0"),
            Some("tcp://127.0.0.1:0"),
            server_security(&k),
        ))
        .build()
        .unwrap();
    let workers_ep = pool.raw().tcp_endpoints().workers.clone().unwrap();
    let clients_ep = pool.raw().tcp_endpoints().clients.clone().unwrap();
    let ctx = zmq::Context::new();
    let ready = Message::Ready(Ready {
        capacity: 8,
        pid: 1,
        host: "stranger",
        max_batch: 0,
        batch_wait_us: 0,
    })
    .encode();
    // No key at all, on both endpoints.
    let plain_worker = ctx.socket(zmq::DEALER).unwrap();
    plain_worker.connect(&workers_ep).unwrap();
    let plain_client = ctx.socket(zmq::DEALER).unwrap();
    plain_client.connect(&clients_ep).unwrap();
    // A CURVE key the broker does not list.
    let unknown = KeyPair::generate().unwrap();
    let intruder = ctx.socket(zmq::DEALER).unwrap();
    intruder.set_curve_serverkey(&k.server.public.0).unwrap();
    intruder.set_curve_publickey(&unknown.public.0).unwrap();
    intruder
        .set_curve_secretkey(&zmq::z85_decode(&secret_of(&unknown)).unwrap())
        .unwrap();
    intruder.connect(&workers_ep).unwrap();
    for s in [&plain_worker, &intruder, &plain_client] {
        // Their messages can never be delivered: closing must not wait for them.
        s.set_linger(0).unwrap();
    }
    for s in [&plain_worker, &intruder] {
        s.set_sndtimeo(100).unwrap();
        for _ in 0..5 {
            let _ = s.send_multipart(ready.clone(), 0);
        }
    }
    plain_client.set_sndtimeo(100).unwrap();
    let mut w = zerotasq::protocol::TaskBatchWriter::new();
    w.push(0, b"anything");
    let _ = plain_client.send_multipart(
        vec![
            zerotasq::protocol::header(zerotasq::protocol::Command::Submit).to_vec(),
            w.finish(),
        ],
        0,
    );
    let (out, stats) = echo_run(pool, 10_000);
    assert_eq!(out, (0..10_000).collect::<Vec<_>>());
    assert_eq!(
        stats.workers_ready, 2,
        "only the two local workers registered: {stats:?}"
    );
    assert_eq!(
        stats.submitted, 10_000,
        "the stranger submitted nothing: {stats:?}"
    );
    for s in [&plain_worker, &intruder, &plain_client] {
        assert_eq!(
            s.poll(zmq::POLLIN, 100).unwrap(),
            0,
            "a stranger received something"
        );
    }
}

/// The secret half of a key pair, through its key file (the only way out of a `KeyPair`).
fn secret_of(keys: &KeyPair) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let path = std::env::temp_dir().join(format!("zt-secret-{}-{nanos}", std::process::id()));
    keys.write(&path).unwrap();
    let text = std::fs::read_to_string(path.with_extension("key_secret")).unwrap();
    let _ = std::fs::remove_file(path.with_extension("key"));
    let _ = std::fs::remove_file(path.with_extension("key_secret"));
    text.lines()
        .find_map(|l| l.strip_prefix("secret = "))
        .unwrap()
        .trim()
        .to_string()
}

/// A bytes-level echo pool usable as a standalone broker: thread workers that sleep `ms`.
fn standalone_broker(k: &Keys, workers: usize, ms: u64, port: &str) -> RawPool {
    let mut spec = PoolSpec {
        tcp: Some(tcp(
            Some(&format!("tcp://127.0.0.1:{port}")),
            Some("tcp://127.0.0.1:0"),
            server_security(k),
        )),
        ..PoolSpec::default()
    };
    thread_workers(&mut spec, workers, move |task, out| {
        std::thread::sleep(Duration::from_millis(ms));
        out.extend_from_slice(task);
    });
    RawPool::start(spec).unwrap()
}

fn client(endpoint: &str, k: &Keys) -> RemoteBroker {
    RemoteBroker::connect(
        endpoint,
        Security::Client {
            keys: k.client.clone(),
            server: k.server.public,
        },
        false,
    )
    .unwrap()
}

#[test]
fn two_clients_share_a_standalone_broker_fairly() {
    let k = Arc::new(keys());
    let broker = standalone_broker(&k, 2, 2, "0");
    let endpoint = broker.tcp_endpoints().clients.clone().unwrap();
    let big_done = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (small_seen_big, big_total) = within(Duration::from_secs(120), {
        let k = k.clone();
        let big_done = big_done.clone();
        move || {
            let big = {
                let (endpoint, k, big_done) = (endpoint.clone(), k.clone(), big_done.clone());
                std::thread::spawn(move || {
                    let c = client(&endpoint, &k);
                    for (i, r) in bytes_stream(&c, 1_000).enumerate() {
                        assert_eq!(r.unwrap(), (i as u32).to_le_bytes());
                        big_done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                })
            };
            // Let the big client fill the queue first.
            while big_done.load(std::sync::atomic::Ordering::Relaxed) < 10 {
                std::thread::sleep(Duration::from_millis(5));
            }
            let c = client(&endpoint, &k);
            let small: Vec<_> = bytes_stream(&c, 100).map(|r| r.unwrap()).collect();
            assert_eq!(small.len(), 100);
            let seen = big_done.load(std::sync::atomic::Ordering::Relaxed);
            big.join().unwrap();
            (seen, big_done.load(std::sync::atomic::Ordering::Relaxed))
        }
    });
    assert_eq!(big_total, 1_000);
    // Taking turns, the small client's 100 tasks finish while the big one has done roughly
    // as many again — far from all its 1,000.
    assert!(
        small_seen_big < 500,
        "the big client had done {small_seen_big} when the small one finished"
    );
    drop(broker);
}

/// 200 echo jobs through a broker whose only worker is the remote `TestWorker` process.
fn job_stream(broker: &RawPool, k: &Keys) -> Vec<u64> {
    let c = client(broker.tcp_endpoints().clients.as_ref().unwrap(), k);
    c.stream(
        (0..200u64).map(Job::Echo),
        64,
        true,
        Box::new(|job: Job, buf: &mut Vec<u8>| zerotasq::codec::encode_into(&job, buf)),
        Box::new(|bytes: &[u8]| zerotasq::codec::decode::<u64>(bytes)),
    )
    .unwrap()
    .map(|r| r.unwrap())
    .collect()
}

#[test]
fn remote_workers_rejoin_a_restarted_broker() {
    let k = keys();
    let first = standalone_broker(&k, 0, 0, "0");
    let workers_ep = first.tcp_endpoints().workers.clone().unwrap();
    let port = workers_ep.rsplit(':').next().unwrap().to_string();
    let _remote = RemoteWorker::start(&workers_ep, &k);
    let out = within(Duration::from_secs(60), move || {
        let a = job_stream(&first, &k);
        drop(first);
        let second = standalone_broker(&k, 0, 0, &port);
        let b = job_stream(&second, &k);
        (a, b, second.stats())
    });
    assert_eq!(out.0, (0..200).collect::<Vec<_>>());
    assert_eq!(
        out.1,
        (0..200).collect::<Vec<_>>(),
        "the rejoined worker served the new broker"
    );
    assert_eq!(out.2.workers_ready, 1);
}

#[test]
fn an_unreachable_broker_or_a_refused_key_is_a_clear_error_not_a_hang() {
    let k = keys();
    // Nothing listens on this port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let nowhere = client(&format!("tcp://127.0.0.1:{port}"), &k)
        .patience(Duration::from_secs(2), Duration::from_secs(1));
    let first = within(Duration::from_secs(20), move || {
        bytes_stream(&nowhere, 3).next().unwrap()
    });
    let e = first.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert!(e.message().contains("no connection to the broker"), "{e}");

    // A broker that does not list our key.
    let broker = standalone_broker(&k, 1, 0, "0");
    let endpoint = broker.tcp_endpoints().clients.clone().unwrap();
    let stranger = Keys {
        client: KeyPair::generate().unwrap(),
        ..keys()
    };
    let refused = RemoteBroker::connect(
        &endpoint,
        Security::Client {
            keys: stranger.client.clone(),
            server: k.server.public,
        },
        false,
    )
    .unwrap()
    .patience(Duration::from_secs(2), Duration::from_secs(1));
    let first = within(Duration::from_secs(20), move || {
        bytes_stream(&refused, 3).next().unwrap()
    });
    assert!(first.unwrap_err().message().contains("refused our key"));
    assert_eq!(broker.stats().submitted, 0);
}

#[test]
fn plain_tcp_is_refused_off_loopback_and_other_protocol_versions_are_told_why() {
    let err = RemoteBroker::connect("tcp://10.1.2.3:5555", Security::Insecure, false)
        .err()
        .unwrap();
    assert!(err.to_string().contains("plain TCP"), "{err}");

    let spec = PoolSpec {
        tcp: Some(tcp(None, Some("tcp://127.0.0.1:0"), Security::Insecure)),
        ..PoolSpec::default()
    };
    let pool = RawPool::start(spec).unwrap();
    let ctx = zmq::Context::new();
    let socket = ctx.socket(zmq::DEALER).unwrap();
    socket
        .connect(pool.tcp_endpoints().clients.as_ref().unwrap())
        .unwrap();
    socket
        .send_multipart([vec![b'Z', b'T', 99, 8], vec![0, 0, 0, 0]], 0)
        .unwrap();
    assert!(
        socket.poll(zmq::POLLIN, 5_000).unwrap() > 0,
        "no answer to a foreign version"
    );
    let reply = socket.recv_multipart(0).unwrap();
    let Ok(Message::Fatal(why)) = Message::decode(&reply) else {
        panic!("not a Fatal: {reply:?}")
    };
    assert!(why.contains("version 99"), "{why}");
}

#[test]
fn big_payloads_travel_in_messages_below_the_size_limit() {
    // The broker accepts no message over 6 MiB; 24 tasks of 1 MiB must still get through.
    let mut spec = PoolSpec {
        tcp: Some(tcp(None, Some("tcp://127.0.0.1:0"), Security::Insecure)),
        max_message: 6 << 20,
        ..PoolSpec::default()
    };
    thread_workers(&mut spec, 2, |task, out| out.extend_from_slice(&task[..8]));
    let pool = RawPool::start(spec).unwrap();
    let endpoint = pool.tcp_endpoints().clients.clone().unwrap();
    let out = within(Duration::from_secs(60), move || {
        let c = RemoteBroker::connect(&endpoint, Security::Insecure, false).unwrap();
        let input = (0..24u64).map(|i| {
            let mut payload = vec![0u8; 1 << 20];
            payload[..8].copy_from_slice(&i.to_le_bytes());
            payload
        });
        let stream = c
            .stream(
                input,
                64,
                true,
                Box::new(|item: Vec<u8>, buf: &mut Vec<u8>| {
                    buf.extend_from_slice(&item);
                    Ok(())
                }),
                Box::new(|bytes: &[u8]| Ok(u64::from_le_bytes(bytes.try_into().unwrap()))),
            )
            .unwrap();
        let out: Vec<u64> = stream.map(|r| r.unwrap()).collect();
        drop(pool);
        out
    });
    assert_eq!(out, (0..24).collect::<Vec<_>>());
}
