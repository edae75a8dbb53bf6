//! Pools across real hosts: each remote party runs in a network namespace with its own
//! address, joined to this one by a veth pair, all made and removed by the test. Covered: a
//! worker's link cut mid-run, a broker restarted under its remote workers, three worker
//! hosts sharing one stream, two client hosts sharing a standalone broker fairly, and
//! strangers on another host getting nothing. Every result arrives exactly once, in order.
//! Needs root and iproute2 (as CI has); fails loudly without them.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use common::{
    alive, echo_run, keys, thread_workers, within, Config, Job, Keys, RemoteWorker, TestWorker,
};
use zerotasq::protocol::{Message, Ready};
use zerotasq::PoolSpec;
use zerotasq::{BrokerAccess, KeyPair, Pool, RawPool, RemoteBroker, Security, TcpListen};

/// Another host: namespace `ztn<pid>-<k>`, reached from here over veth `ztv<pid>-<k>`.
/// Each gets a /30 of its own in 10.192.0.0/10, from this process's pid and a counter, so
/// tests running in parallel (in this process or another) never share names or subnets.
/// Its default route leads here, so it also reaches the addresses of the other hosts' veths
/// on this side. Removed on drop, also when the test panics.
struct Host {
    netns: String,
    veth: String,
    /// This side's address on the veth.
    here: String,
}

fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .status()
        .expect("iproute2's `ip` is needed");
    assert!(
        status.success(),
        "ip {args:?} failed (root is needed for network namespaces)"
    );
}

impl Host {
    fn create() -> Host {
        static SWEEP: Once = Once::new();
        static HOSTS: AtomicU32 = AtomicU32::new(0);
        SWEEP.call_once(sweep_dead_hosts);
        let pid = std::process::id();
        let k = HOSTS.fetch_add(1, Ordering::Relaxed);
        assert!(k < 32, "at most 32 hosts per test process");
        let block = (10u32 << 24 | 192 << 16) + ((pid % 32_768) * 32 + k) * 4;
        let addr = |n: u32| std::net::Ipv4Addr::from(block + n).to_string();
        let (here, there) = (addr(1), addr(2));
        let (netns, veth, peer) = (
            format!("ztn{pid}-{k}"),
            format!("ztv{pid}-{k}"),
            format!("ztp{pid}-{k}"),
        );
        ip(&["netns", "add", &netns]);
        // From here on, drop removes whatever was made.
        let host = Host {
            netns: netns.clone(),
            veth: veth.clone(),
            here: here.clone(),
        };
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &netns]);
        ip(&["addr", "add", &format!("{here}/30"), "dev", &veth]);
        ip(&["link", "set", &veth, "up"]);
        let inside = |args: &[&str]| ip(&[&["-n", &netns], args].concat());
        inside(&["addr", "add", &format!("{there}/30"), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        inside(&["link", "set", "lo", "up"]);
        inside(&["route", "add", "default", "via", &here]);
        host
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// Removes the namespaces of test processes that died without cleaning up (their veths go
/// with them), so a reused pid cannot collide with them.
fn sweep_dead_hosts() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let owner = name
            .strip_prefix("ztn")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if owner.is_some_and(|pid| !alive(pid)) {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn set_link(veth: &str, up: bool) {
    ip(&["link", "set", veth, if up { "up" } else { "down" }]);
}

fn server_security(k: &Keys) -> Security {
    Security::Server {
        keys: k.server.clone(),
        allowed: vec![k.worker.public, k.client.public],
    }
}

fn tcp(workers: Option<String>, clients: Option<String>, k: &Keys) -> TcpListen {
    TcpListen {
        workers,
        clients,
        security: server_security(k),
        allow_insecure_remote: false,
    }
}

/// Waits (the caller bounds it with `within`) until `n` workers have registered.
fn wait_ready(stats: impl Fn() -> zerotasq::BrokerStats, n: u64) {
    while stats().workers_ready < n {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Streams `n` jobs through `broker`: even ones echo their index, odd ones return the pid of
/// the worker that ran them. Checks that every echo is in its place — nothing lost,
/// duplicated or reordered — and returns the pids.
fn tagged_run(broker: &impl BrokerAccess, n: u64) -> Vec<u64> {
    let input = (0..n).map(|i| {
        if i % 2 == 0 {
            Job::Echo(i)
        } else {
            Job::SleepPid(1)
        }
    });
    let out: Vec<u64> = broker
        .stream(
            input,
            64,
            true,
            Box::new(|job: Job, buf: &mut Vec<u8>| zerotasq::codec::encode_into(&job, buf)),
            Box::new(|bytes: &[u8]| zerotasq::codec::decode::<u64>(bytes)),
        )
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(out.len() as u64, n);
    for (i, v) in out.iter().enumerate().step_by(2) {
        assert_eq!(*v, i as u64, "result {i} out of place");
    }
    out.into_iter().skip(1).step_by(2).collect()
}

#[test]
fn cutting_a_remote_workers_link_mid_run_loses_and_duplicates_nothing() {
    let host = Host::create();
    let k = keys();
    let pool = Pool::<TestWorker>::builder(Config::default())
        .processes(1)
        .heartbeat(Duration::from_millis(100), 5)
        .tcp(tcp(Some(format!("tcp://{}:0", host.here)), None, &k))
        .build()
        .unwrap();
    let endpoint = pool.raw().tcp_endpoints().workers.clone().unwrap();
    let _remote = RemoteWorker::start_in(Some(&host.netns), &endpoint, &k);
    let veth = host.veth.clone();
    let (out, stats) = within(Duration::from_secs(120), move || {
        wait_ready(|| pool.stats(), 2);
        let mut stream = pool.map((0..3_000).map(|i| Job::Sleep(i, 1))).unwrap();
        let mut out: Vec<u64> = stream.by_ref().take(500).map(|r| r.unwrap()).collect();
        set_link(&veth, false);
        out.extend(stream.by_ref().take(1_500).map(|r| r.unwrap()));
        set_link(&veth, true);
        out.extend(stream.map(|r| r.unwrap()));
        (out, pool.stats())
    });
    assert_eq!(out, (0..3_000).collect::<Vec<_>>());
    assert!(
        stats.workers_lost >= 1,
        "the cut-off worker was declared dead: {stats:?}"
    );
    assert!(stats.requeued >= 1, "its tasks ran elsewhere: {stats:?}");
}

/// A broker with no workers of its own, listening for remote workers on `workers`.
fn bare_broker(k: &Keys, workers: &str) -> RawPool {
    RawPool::start(PoolSpec {
        tcp: Some(tcp(Some(workers.to_string()), None, k)),
        ..PoolSpec::default()
    })
    .unwrap()
}

#[test]
fn remote_workers_on_two_hosts_rejoin_a_restarted_broker() {
    let hosts = [Host::create(), Host::create()];
    let k = keys();
    let first = bare_broker(&k, &format!("tcp://{}:0", hosts[0].here));
    // The second broker binds this same endpoint (its port fixed now).
    let endpoint = first.tcp_endpoints().workers.clone().unwrap();
    let remotes: Vec<RemoteWorker> = hosts
        .iter()
        .map(|h| RemoteWorker::start_in(Some(&h.netns), &endpoint, &k))
        .collect();
    let remote_pids: Vec<u64> = remotes.iter().map(|r| r.0.id() as u64).collect();
    let (before, after, stats) = within(Duration::from_secs(120), move || {
        wait_ready(|| first.stats(), 2);
        let before = tagged_run(&first, 400);
        drop(first);
        let second = bare_broker(&k, &endpoint);
        wait_ready(|| second.stats(), 2);
        let after = tagged_run(&second, 400);
        (before, after, second.stats())
    });
    for pid in &remote_pids {
        assert!(before.contains(pid), "{pid} served the first broker");
        assert!(after.contains(pid), "{pid} rejoined and served the second");
    }
    assert!(
        after.iter().all(|pid| remote_pids.contains(pid)),
        "only the remote workers ran tasks"
    );
    assert_eq!(stats.workers_ready, 2, "{stats:?}");
    assert_eq!(stats.completed, 400, "each task answered once: {stats:?}");
}

#[test]
fn three_worker_hosts_and_a_local_worker_share_one_stream() {
    let hosts = [Host::create(), Host::create(), Host::create()];
    let k = keys();
    let pool = Pool::<TestWorker>::builder(Config::default())
        .processes(1)
        .tcp(tcp(Some(format!("tcp://{}:0", hosts[0].here)), None, &k))
        .build()
        .unwrap();
    let endpoint = pool.raw().tcp_endpoints().workers.clone().unwrap();
    let remotes: Vec<RemoteWorker> = hosts
        .iter()
        .map(|h| RemoteWorker::start_in(Some(&h.netns), &endpoint, &k))
        .collect();
    let (pids, local, stats) = within(Duration::from_secs(120), move || {
        wait_ready(|| pool.stats(), 4);
        let pids = tagged_run(pool.raw(), 800);
        (pids, pool.raw().worker_pids(), pool.stats())
    });
    for (host, remote) in hosts.iter().zip(&remotes) {
        let pid = remote.0.id() as u64;
        assert!(pids.contains(&pid), "{} did some of the work", host.netns);
    }
    assert!(pids.contains(&(local[0] as u64)), "the local worker too");
    assert_eq!(stats.completed, 800, "each task answered once: {stats:?}");
}

#[test]
fn a_worker_on_another_host_joins_mid_stream() {
    let host = Host::create();
    let k = keys();
    let pool = Pool::<TestWorker>::builder(Config::default())
        .processes(1)
        .tcp(tcp(Some(format!("tcp://{}:0", host.here)), None, &k))
        .build()
        .unwrap();
    let endpoint = pool.raw().tcp_endpoints().workers.clone().unwrap();
    let netns = host.netns.clone();
    let (out, remote) = within(Duration::from_secs(120), move || {
        wait_ready(|| pool.stats(), 1);
        // Even jobs echo their index; odd ones sleep 2 ms and return the worker's pid.
        let input = (0..2_000u64).map(|i| {
            if i % 2 == 0 {
                Job::Echo(i)
            } else {
                Job::SleepPid(2)
            }
        });
        let mut stream = pool.map(input).unwrap();
        let mut out: Vec<u64> = stream.by_ref().take(300).map(|r| r.unwrap()).collect();
        let remote = RemoteWorker::start_in(Some(&netns), &endpoint, &k);
        out.extend(stream.map(|r| r.unwrap()));
        (out, remote)
    });
    assert_eq!(out.len(), 2_000);
    for (i, v) in out.iter().enumerate().step_by(2) {
        assert_eq!(*v, i as u64, "result {i} out of place");
    }
    let pid = remote.0.id() as u64;
    assert!(
        out[300..].iter().skip(1).step_by(2).any(|p| *p == pid),
        "the worker that joined on {} ran tasks of the stream",
        host.netns
    );
}

/// This test binary, re-executed in `netns` in a role (see [`netns_role`]), its stdin and
/// stdout piped to the test; killed on drop.
struct Peer(Child);

impl Peer {
    fn start(netns: &str, role: &str, env: &[(&str, String)]) -> Peer {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", netns])
            .arg(std::env::current_exe().unwrap())
            .env("ZT_NETNS_ROLE", role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        Peer(command.spawn().unwrap())
    }

    fn pipes(&mut self) -> (ChildStdin, BufReader<ChildStdout>) {
        (
            self.0.stdin.take().unwrap(),
            BufReader::new(self.0.stdout.take().unwrap()),
        )
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The roles this binary plays when re-executed on another host: a `client` that streams
/// `ZT_TASKS` byte tasks through a standalone broker, once told to go on stdin, printing each
/// result; a `stranger` that knocks on a broker with no key and an unknown key until stdin
/// closes, then prints what it received.
#[ctor::ctor]
fn netns_role() {
    match std::env::var("ZT_NETNS_ROLE").as_deref() {
        Ok("client") => client_role(),
        Ok("stranger") => stranger_role(),
        _ => return,
    }
    std::process::exit(0);
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} is not set"))
}

fn client_role() {
    let keys = KeyPair::read(env("ZT_KEY").as_ref()).unwrap();
    let server = env("ZT_SERVER").parse().unwrap();
    let n: u32 = env("ZT_TASKS").parse().unwrap();
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let broker = RemoteBroker::connect(
        &env("ZT_ENDPOINT"),
        Security::Client { keys, server },
        false,
    )
    .unwrap();
    let stream = common::bytes_stream(&broker, n);
    let mut out = std::io::stdout().lock();
    for outcome in stream {
        match outcome {
            Ok(bytes) => writeln!(out, "{}", u32::from_le_bytes(bytes.try_into().unwrap())),
            Err(e) => writeln!(out, "error: {e}"),
        }
        .and_then(|()| out.flush())
        .unwrap();
    }
}

fn stranger_role() {
    let server: zerotasq::PublicKey = env("ZT_SERVER").parse().unwrap();
    let unknown = zmq::CurveKeyPair::new().unwrap();
    let ctx = zmq::Context::new();
    let ready = Message::Ready(Ready {
        capacity: 8,
        pid: 1,
        host: "stranger",
        max_batch: 0,
        batch_wait_us: 0,
    })
    .encode();
    let mut batch = zerotasq::protocol::TaskBatchWriter::new();
    batch.push(0, b"anything");
    let submit = vec![
        zerotasq::protocol::header(zerotasq::protocol::Command::Submit).to_vec(),
        batch.finish(),
    ];
    // Each endpoint with no key, then with a key the broker does not list.
    let mut knockers = Vec::new();
    for curve in [false, true] {
        for (endpoint, message) in [("ZT_WORKERS", &ready), ("ZT_CLIENTS", &submit)] {
            let socket = ctx.socket(zmq::DEALER).unwrap();
            socket.set_linger(0).unwrap();
            if curve {
                socket.set_curve_serverkey(&server.0).unwrap();
                socket.set_curve_publickey(&unknown.public_key).unwrap();
                socket.set_curve_secretkey(&unknown.secret_key).unwrap();
            }
            socket.connect(&env(endpoint)).unwrap();
            knockers.push((socket, message));
        }
    }
    let (closed_tx, closed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = closed_tx.send(());
    });
    let (mut received, mut rounds) = (0, 0);
    while closed.try_recv().is_err() {
        for (socket, message) in &knockers {
            let _ = socket.send_multipart((*message).clone(), zmq::DONTWAIT);
        }
        let mut items: Vec<_> = knockers
            .iter()
            .map(|(s, _)| s.as_poll_item(zmq::POLLIN))
            .collect();
        zmq::poll(&mut items, 50).unwrap();
        for (socket, _) in &knockers {
            while socket.recv_multipart(zmq::DONTWAIT).is_ok() {
                received += 1;
            }
        }
        rounds += 1;
        if rounds == 1 {
            println!("knocking");
        }
    }
    println!("received {received} in {rounds} rounds");
}

/// A standalone broker listening for clients on `clients`, with two thread workers that
/// echo a task's bytes after 2 ms.
fn standalone_broker(k: &Keys, clients: String) -> RawPool {
    let mut spec = PoolSpec {
        tcp: Some(tcp(None, Some(clients), k)),
        ..PoolSpec::default()
    };
    thread_workers(&mut spec, 2, |task, out| {
        std::thread::sleep(Duration::from_millis(2));
        out.extend_from_slice(task);
    });
    RawPool::start(spec).unwrap()
}

/// Reads a client's results, checking each is the next index; counts them in `done`.
fn read_results(mut results: BufReader<ChildStdout>, done: &AtomicU32) {
    let mut line = String::new();
    while results.read_line(&mut line).unwrap() > 0 {
        let expected = done.load(Ordering::Relaxed);
        assert_eq!(line.trim(), expected.to_string(), "result out of place");
        done.store(expected + 1, Ordering::Relaxed);
        line.clear();
    }
}

#[test]
fn clients_on_two_hosts_share_a_standalone_broker_fairly() {
    let hosts = [Host::create(), Host::create()];
    let k = keys();
    k.client.write(&k.dir.join("client")).unwrap();
    let broker = standalone_broker(&k, format!("tcp://{}:0", hosts[0].here));
    let endpoint = broker.tcp_endpoints().clients.clone().unwrap();
    let client = |host: &Host, tasks: u32| {
        Peer::start(
            &host.netns,
            "client",
            &[
                ("ZT_ENDPOINT", endpoint.clone()),
                (
                    "ZT_KEY",
                    k.dir.join("client.key_secret").display().to_string(),
                ),
                ("ZT_SERVER", k.server.public.to_string()),
                ("ZT_TASKS", tasks.to_string()),
            ],
        )
    };
    let (mut big, mut small) = (client(&hosts[0], 1_000), client(&hosts[1], 100));
    let (mut big_go, big_results) = big.pipes();
    let (mut small_go, small_results) = small.pipes();
    let (big_seen, small_total, big_total) = within(Duration::from_secs(120), move || {
        let big_done = Arc::new(AtomicU32::new(0));
        let reader = {
            let big_done = big_done.clone();
            std::thread::spawn(move || read_results(big_results, &big_done))
        };
        writeln!(big_go, "go").unwrap();
        // Let the big client fill the queue first.
        while big_done.load(Ordering::Relaxed) < 10 {
            std::thread::sleep(Duration::from_millis(5));
        }
        writeln!(small_go, "go").unwrap();
        let small_done = AtomicU32::new(0);
        read_results(small_results, &small_done);
        let big_seen = big_done.load(Ordering::Relaxed);
        reader.join().unwrap();
        (
            big_seen,
            small_done.into_inner(),
            big_done.load(Ordering::Relaxed),
        )
    });
    assert_eq!(small_total, 100);
    assert_eq!(big_total, 1_000);
    // Taking turns, the small client's 100 tasks finish while the big one has done roughly
    // as many again: far from all its 1,000.
    assert!(
        big_seen < 500,
        "the big client had {big_seen} results when the small one finished"
    );
    assert!(big.0.wait().unwrap().success() && small.0.wait().unwrap().success());
}

#[test]
fn strangers_on_another_host_get_nothing_while_a_run_completes() {
    let hosts = [Host::create()];
    let k = keys();
    let at = Some(format!("tcp://{}:0", hosts[0].here));
    let pool = Pool::<TestWorker>::builder(Config::default())
        .processes(2)
        .tcp(tcp(at.clone(), at, &k))
        .build()
        .unwrap();
    let bound = pool.raw().tcp_endpoints().clone();
    let mut stranger = Peer::start(
        &hosts[0].netns,
        "stranger",
        &[
            ("ZT_WORKERS", bound.workers.unwrap()),
            ("ZT_CLIENTS", bound.clients.unwrap()),
            ("ZT_SERVER", k.server.public.to_string()),
        ],
    );
    let (stop, mut report) = stranger.pipes();
    let (out, stats, line) = within(Duration::from_secs(120), move || {
        let mut line = String::new();
        report.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "knocking");
        let (out, stats) = echo_run(pool, 10_000);
        drop(stop);
        line.clear();
        report.read_line(&mut line).unwrap();
        (out, stats, line)
    });
    assert_eq!(out, (0..10_000).collect::<Vec<_>>());
    assert!(
        line.starts_with("received 0 in "),
        "the stranger got something: {line}"
    );
    assert_eq!(
        stats.workers_ready, 2,
        "only the two local workers registered: {stats:?}"
    );
    assert_eq!(
        stats.submitted, 10_000,
        "the stranger submitted nothing: {stats:?}"
    );
}
