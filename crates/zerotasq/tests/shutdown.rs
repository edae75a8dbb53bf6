//! No orphans: closing a pool, or SIGKILLing the program that owns it, leaves no worker
//! process and no ipc directory behind. Closing with tasks in flight cancels them cleanly.

mod common;

use common::{alive, eventually, within, Config, Job, TestWorker};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use zerotasq::{ErrorKind, Pool};

#[test]
fn dropping_the_pool_kills_every_worker_and_removes_the_ipc_dir() {
    let pool = Pool::<TestWorker>::builder(Config::default())
        .processes(3)
        .build()
        .unwrap();
    let pids: Vec<u64> = pool
        .map((0..30).map(|_| Job::Pid))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let endpoint = pool.raw().worker_endpoint().to_string();
    let socket = endpoint.strip_prefix("ipc://").unwrap().to_string();
    assert!(std::path::Path::new(&socket).exists());
    within(Duration::from_secs(20), move || drop(pool));
    for pid in pids {
        assert!(!alive(pid as u32), "worker {pid} outlived the pool");
    }
    assert!(
        !std::path::Path::new(&socket).parent().unwrap().exists(),
        "ipc dir left behind"
    );
}

#[test]
fn closing_the_pool_with_tasks_in_flight_cancels_them_in_bounded_time() {
    let pool = Pool::<TestWorker>::builder(Config::default())
        .processes(2)
        .build()
        .unwrap();
    let mut stream = pool.map((0..100).map(|i| Job::Sleep(i, 200))).unwrap();
    assert_eq!(stream.next().unwrap().unwrap(), 0);
    let rest = within(Duration::from_secs(20), move || {
        drop(pool);
        stream.collect::<Vec<_>>()
    });
    assert_eq!(rest.len(), 99, "every task still has an outcome");
    let cancelled = rest
        .iter()
        .filter(|r| r.as_ref().is_err_and(|e| e.kind() == ErrorKind::Cancelled))
        .count();
    assert!(cancelled > 0);
    assert!(rest
        .iter()
        .all(|r| r.is_ok() || r.as_ref().unwrap_err().kind() == ErrorKind::Cancelled));
}

/// The child role of the next test: a program that owns a pool, reports its workers, and
/// waits to be killed. Runs before the test harness, in the re-executed test binary only.
#[ctor::ctor]
fn parent_role() {
    if std::env::var_os("ZT_TEST_PARENT").is_none() || std::env::var_os("ZEROTASQ_ENTRY").is_some()
    {
        return;
    }
    let pool = Pool::<TestWorker>::builder(Config::default())
        .processes(2)
        .build()
        .unwrap();
    let pids: Vec<u64> = pool
        .map((0..20).map(|_| Job::Pid))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let mut pids = pids;
    pids.sort_unstable();
    pids.dedup();
    println!("endpoint {}", pool.raw().worker_endpoint());
    for pid in pids {
        println!("worker {pid}");
    }
    println!("ready");
    std::thread::sleep(Duration::from_secs(600));
}

/// Starts the parent role; returns it, its workers' pids and its ipc directory.
fn start_parent() -> (std::process::Child, Vec<u32>, std::path::PathBuf) {
    let mut parent = Command::new(std::env::current_exe().unwrap())
        .env("ZT_TEST_PARENT", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(parent.stdout.take().unwrap()).lines();
    let mut workers = Vec::new();
    let mut endpoint = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(pid) = line.strip_prefix("worker ") {
            workers.push(pid.parse::<u32>().unwrap());
        } else if let Some(e) = line.strip_prefix("endpoint ipc://") {
            endpoint = e.to_string();
        } else if line == "ready" {
            break;
        }
    }
    assert!(!workers.is_empty() && !endpoint.is_empty());
    assert!(workers.iter().all(|pid| alive(*pid)));
    let dir = std::path::Path::new(&endpoint)
        .parent()
        .unwrap()
        .to_path_buf();
    (parent, workers, dir)
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: signals our own child process.
    unsafe { libc::kill(child.id() as i32, sig) };
}

#[test]
fn sigkill_of_the_parent_takes_the_workers_and_the_ipc_dir_along() {
    let (mut parent, workers, dir) = start_parent();
    parent.kill().unwrap(); // SIGKILL
    parent.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || workers
            .iter()
            .all(|pid| !alive(*pid))),
        "workers outlived their SIGKILLed parent"
    );
    assert!(
        eventually(Duration::from_secs(10), || !dir.exists()),
        "ipc dir {dir:?} left behind"
    );
}

#[test]
fn ctrl_c_in_the_parent_leaves_no_worker_and_no_ipc_dir() {
    let (mut parent, workers, dir) = start_parent();
    signal(&parent, libc::SIGINT);
    parent.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || workers
            .iter()
            .all(|pid| !alive(*pid))),
        "workers outlived Ctrl-C"
    );
    assert!(
        eventually(Duration::from_secs(10), || !dir.exists()),
        "ipc dir {dir:?} left behind"
    );
}

#[test]
fn workers_leave_when_their_broker_falls_silent() {
    let (mut parent, workers, _dir) = start_parent();
    // A frozen parent: its broker sends no heartbeats, but it is not dead, so no
    // parent-death signal fires. The workers must notice the silence themselves.
    signal(&parent, libc::SIGSTOP);
    let gone = eventually(Duration::from_secs(10), || {
        workers.iter().all(|pid| !alive(*pid))
    });
    parent.kill().unwrap();
    parent.wait().unwrap();
    assert!(gone, "workers kept waiting for a silent broker");
}
