//! The pool's private ipc directory: a name already taken does not stop a pool, and a new
//! pool's sweep of abandoned directories spares what it cannot prove abandoned and its own —
//! a live pool's in another pid namespace, another user's. Needs root and util-linux's
//! `unshare` (as CI has); fails loudly without them.

mod common;

use common::{Config, Job, TestWorker};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use zerotasq::Pool;

/// Where pools make their directories.
fn parent_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

/// Starts a pool, runs a few tasks through it and returns it.
fn working_pool() -> Pool<TestWorker> {
    let pool = Pool::<TestWorker>::builder(Config::default())
        .processes(1)
        .build()
        .unwrap();
    let out: Vec<u64> = pool
        .map((0..3).map(Job::Echo))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(out, [0, 1, 2]);
    pool
}

fn ipc_dir_of(pool: &Pool<TestWorker>) -> PathBuf {
    let endpoint = pool.raw().worker_endpoint().to_string();
    let socket = PathBuf::from(endpoint.strip_prefix("ipc://").unwrap());
    socket.parent().unwrap().to_path_buf()
}

/// Child roles, run before the test harness in the re-executed test binary: "hold" keeps a
/// pool open until killed, after printing its ipc directory; "run" starts a pool, uses it
/// and exits.
#[ctor::ctor]
fn pool_roles() {
    if std::env::var_os("ZEROTASQ_ENTRY").is_some() {
        return;
    }
    match std::env::var("ZT_TEST_ROLE").as_deref() {
        Ok("hold") => {
            let pool = working_pool();
            println!("dir {}", ipc_dir_of(&pool).display());
            std::thread::sleep(std::time::Duration::from_secs(600));
        }
        Ok("run") => {
            drop(working_pool());
            println!("ok");
            std::process::exit(0);
        }
        _ => {}
    }
}

/// Runs the "run" role through `program` + `args` (a wrapper such as `unshare`) and checks
/// that its pool worked.
fn run_pool_via(program: &str, args: &[&str]) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(program)
        .args(args)
        .arg(&exe)
        .env("ZT_TEST_ROLE", "run")
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "{program} {args:?}: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A pid no process has here.
fn dead_pid() -> u32 {
    (20_000..4_000_000)
        .find(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        .unwrap()
}

/// A directory looking like a pool's (0700, with a socket file in it), owned by `uid`.
fn fake_pool_dir(name: &str, uid: u32) -> PathBuf {
    let dir = parent_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir); // left by an earlier run that failed
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(dir.join("workers.sock"), b"").unwrap();
    chown(dir.join("workers.sock"), Some(uid), Some(uid)).unwrap();
    chown(&dir, Some(uid), Some(uid)).unwrap();
    dir
}

#[test]
fn a_taken_name_does_not_stop_a_pool() {
    // The names this process's pools would get if they were made of its pid and a counter.
    let pid = std::process::id();
    let taken: Vec<PathBuf> = (0..64)
        .map(|n| parent_dir().join(format!("zerotasq-{pid}-{n}")))
        .collect();
    for dir in &taken {
        std::fs::create_dir(dir).unwrap();
    }
    let first = working_pool();
    let second = working_pool();
    let (a, b) = (ipc_dir_of(&first), ipc_dir_of(&second));
    assert_ne!(a, b);
    drop((first, second));
    assert!(
        !a.exists() && !b.exists(),
        "a closed pool left its directory"
    );
    for dir in &taken {
        assert!(dir.exists(), "{dir:?} is not a pool's and was removed");
        std::fs::remove_dir(dir).unwrap();
    }
}

#[test]
fn a_live_pool_in_another_pid_namespace_keeps_its_directory() {
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .env("ZT_TEST_ROLE", "hold")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    let dir = loop {
        let line = lines.next().expect("the holder exited early").unwrap();
        if let Some(dir) = line.strip_prefix("dir ") {
            break PathBuf::from(dir);
        }
    };
    // In a pid namespace of its own, the new pool sees no process with the holder's pid.
    run_pool_via("unshare", &["--pid", "--fork"]);
    let survived = dir.join("workers.sock").exists();
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(survived, "a live pool's directory {dir:?} was removed");
}

#[test]
fn another_users_directories_are_left_alone() {
    let nobody = 65_534;
    let dirs = [
        fake_pool_dir(&format!("zerotasq-{}-0", dead_pid()), nobody),
        fake_pool_dir("zerotasq-Nob0dy", nobody),
    ];
    run_pool_via("env", &[]);
    for dir in &dirs {
        let survived = dir.exists();
        let _ = std::fs::remove_dir_all(dir);
        assert!(survived, "another user's {dir:?} was removed");
    }
}

#[test]
fn an_abandoned_directory_of_ours_is_swept() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let dir = fake_pool_dir("zerotasq-L3ftBy", uid);
    run_pool_via("env", &[]);
    let survived = dir.exists();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!survived, "{dir:?} was left behind");
}
