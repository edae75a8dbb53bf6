//! Pools across real hosts: each remote party runs in a network namespace with its own
//! address, joined to this one by a veth pair, all made and removed by the test. Covered: a
//! worker's link cut mid-run, a broker restarted under its remote workers, and three worker
//! hosts sharing one stream. Every result arrives exactly once, in order.
//! Needs root and iproute2 (as CI has); fails loudly without them.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::Duration;

use common::{alive, keys, within, Config, Job, Keys, RemoteWorker, TestWorker};
use zerotasq::pool::PoolSpec;
use zerotasq::{BrokerAccess, Pool, RawPool, Security, TcpListen};

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
fn wait_ready(stats: impl Fn() -> zerotasq::broker::BrokerStats, n: u64) {
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
