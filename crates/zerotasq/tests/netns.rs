//! A remote worker on another host — a network namespace with its own address, joined to
//! this one by a veth pair, made and removed by the test — loses its link mid-run: it is
//! declared dead after the heartbeat timeout, its tasks run elsewhere, and when the link
//! comes back its late results are dropped. Every result arrives exactly once, in order.
//! Needs root and iproute2 (as CI has); fails loudly without them.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{keys, within, Config, Job, RemoteWorker, TestWorker};
use zerotasq::{Pool, Security, TcpListen};

/// A namespace `zt-<pid>` with address 10.233.N.2, reached from here at 10.233.N.1.
struct Host {
    netns: String,
    veth: String,
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
        let id = std::process::id();
        let n = id % 250 + 1;
        let (netns, veth, peer) = (format!("zt-{id}"), format!("ztb{id}"), format!("ztp{id}"));
        let (here, there) = (format!("10.233.{n}.1"), format!("10.233.{n}.2"));
        ip(&["netns", "add", &netns]);
        let host = Host {
            netns: netns.clone(),
            veth: veth.clone(),
            here: here.clone(),
        };
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &netns]);
        ip(&["addr", "add", &format!("{here}/30"), "dev", &veth]);
        ip(&["link", "set", &veth, "up"]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{there}/30"),
            "dev",
            &peer,
        ]);
        ip(&["-n", &netns, "link", "set", &peer, "up"]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        host
    }

    fn link(&self, up: bool) {
        ip(&["link", "set", &self.veth, if up { "up" } else { "down" }]);
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

#[test]
fn cutting_a_remote_workers_link_mid_run_loses_and_duplicates_nothing() {
    let host = Host::create();
    let k = keys();
    let pool = Pool::<TestWorker>::builder(Config::default())
        .processes(1)
        .heartbeat(Duration::from_millis(100), 5)
        .tcp(TcpListen {
            workers: Some(format!("tcp://{}:0", host.here)),
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
    let remote = RemoteWorker::start_in(Some(&host.netns), &endpoint, &k);
    let (out, stats) = within(Duration::from_secs(120), move || {
        // Wait until the remote worker has registered.
        while pool.stats().workers_ready < 2 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut stream = pool.map((0..3_000).map(|i| Job::Sleep(i, 1))).unwrap();
        let mut out: Vec<u64> = stream.by_ref().take(500).map(|r| r.unwrap()).collect();
        host.link(false);
        out.extend(stream.by_ref().take(1_500).map(|r| r.unwrap()));
        host.link(true);
        out.extend(stream.map(|r| r.unwrap()));
        let stats = pool.stats();
        drop(host);
        (out, stats)
    });
    drop(remote);
    assert_eq!(out, (0..3_000).collect::<Vec<_>>());
    assert!(
        stats.workers_lost >= 1,
        "the cut-off worker was declared dead: {stats:?}"
    );
    assert!(stats.requeued >= 1, "its tasks ran elsewhere: {stats:?}");
}
