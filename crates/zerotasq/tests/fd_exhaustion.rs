//! A broker open to a network under the common soft limit of 1024 descriptors: 1,100 idle
//! connections from strangers must not lock out a legitimate client. The pool raises its
//! soft limit to the hard one, and strangers that never finish their handshake are dropped
//! after a few seconds. (That one address cannot hold more than its share of connections is
//! the command line's `tests/connections_per_address.rs`.)

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{bytes_stream, thread_workers, within};
use zerotasq::{PoolSpec, RawPool, RemoteBroker, Security, TcpListen};

fn nofile() -> (u64, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid pointer to a local struct.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    (limit.rlim_cur, limit.rlim_max)
}

#[test]
fn a_thousand_idle_connections_do_not_lock_out_a_client() {
    let (_, hard) = nofile();
    assert!(
        hard >= 4096,
        "the machine's hard limit ({hard}) leaves nothing to raise to"
    );
    let lowered = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: hard,
    };
    // SAFETY: lowers this test process's own soft limit (its binary runs this test alone).
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);

    let mut spec = PoolSpec {
        tcp: Some(TcpListen {
            workers: None,
            clients: Some("tcp://127.0.0.1:0".into()),
            security: Security::Insecure,
            allow_insecure_remote: false,
        }),
        ..PoolSpec::default()
    };
    thread_workers(&mut spec, 2, |task, out| out.extend_from_slice(task));
    let pool = RawPool::start(spec).unwrap();
    assert_eq!(nofile().0, hard, "the pool raised its soft limit");
    let endpoint = pool.tcp_endpoints().clients.clone().unwrap();
    let port = endpoint.rsplit(':').next().unwrap().to_string();

    // The stranger: 1,100 connections that never say a word, from five addresses (220 each,
    // within the cap on one address's connections, which is not what this test is about).
    let script = "import resource, socket, sys, time\n\
        h = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n\
        resource.setrlimit(resource.RLIMIT_NOFILE, (h, h))\n\
        socks = [socket.create_connection(('127.0.0.1', int(sys.argv[1])),\n\
                                          source_address=('127.0.0.%d' % (2 + i % 5), 0))\n\
                 for i in range(1100)]\n\
        print(len(socks), flush=True)\n\
        time.sleep(60)\n";
    let mut stranger = Command::new("python3")
        .args(["-c", script, &port])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(stranger.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "1100", "the stranger holds its connections");

    // Locked out, the client would wait until libzmq drops the strangers' half-made
    // connections after its default 30 s; with the limit raised and handshakes bounded
    // it is served at once.
    let out = within(Duration::from_secs(20), move || {
        let client = RemoteBroker::connect(&endpoint, Security::Insecure, false).unwrap();
        bytes_stream(&client, 1000).filter(|r| r.is_ok()).count()
    });
    let _ = stranger.kill();
    let _ = stranger.wait();
    assert_eq!(out, 1000);
    drop(pool);
}
