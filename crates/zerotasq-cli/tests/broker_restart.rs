//! A client outlives its broker: `zerotasq broker` is killed (`kill -9`) mid-run and started
//! again on the same ports a second later; `zerotasq map --connect` submits again what it
//! was still waiting for, and its output is exactly an undisturbed run's — from a file (a
//! stream) and from a pipe (a connector). A broker that never comes back is still a clear
//! error after the patience.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::broker::{broker, broker_at, curve_workers, keygen, map_connect, Guard, TempDir};
use common::numbers;

const LINES: u64 = 3_000;

/// Workers that take 2 ms a line, so the run is still going when the broker is killed.
fn start_workers(dir: &TempDir, workers: &str) -> Guard {
    curve_workers(
        dir,
        workers,
        2,
        "while read l; do sleep 0.002; echo \"$l$l\"; done",
    )
}

fn client(dir: &TempDir, clients: &str, from_file: bool) -> Command {
    let mut command = map_connect(dir, clients, "client");
    if from_file {
        command.arg("--input").arg(dir.path("input"));
    }
    command
}

/// Runs a client while the broker is killed and restarted under it; the client's exit,
/// output and stderr.
fn run_through_a_restart(name: &str, from_file: bool) -> (Option<i32>, Vec<String>, String) {
    let dir = TempDir::new(name);
    keygen(&dir, "client");
    keygen(&dir, "worker");
    std::fs::write(dir.path("input"), numbers(LINES)).unwrap();
    let (broker, clients, workers) = broker(&dir, &["client", "worker"]);
    let _workers = start_workers(&dir, &workers);
    let mut client = client(&dir, &clients, from_file)
        .stdin(if from_file {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if !from_file {
        let mut stdin = client.stdin.take().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&numbers(LINES));
        });
    }
    std::thread::sleep(Duration::from_millis(1500));
    drop(broker); // SIGKILL
    std::thread::sleep(Duration::from_secs(1));
    let _broker = broker_at(&dir, &["client", "worker"], &clients, &workers);
    let deadline = Instant::now() + Duration::from_secs(120);
    while client.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the client hangs");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = client.wait_with_output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    (
        out.status.code(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_run_from_a_file_survives_a_broker_restart() {
    let (code, lines, stderr) = run_through_a_restart("restart-file", true);
    assert_eq!(code, Some(0), "{stderr}");
    let expected: Vec<String> = (1..=LINES).map(|i| format!("{i}{i}")).collect();
    assert_eq!(lines, expected, "{stderr}");
}

#[test]
fn a_run_from_a_pipe_survives_a_broker_restart() {
    let (code, lines, stderr) = run_through_a_restart("restart-pipe", false);
    assert_eq!(code, Some(0), "{stderr}");
    let expected: Vec<String> = (1..=LINES).map(|i| format!("{i}{i}")).collect();
    assert_eq!(lines, expected, "{stderr}");
}

#[test]
fn a_broker_that_does_not_come_back_is_a_clear_error_not_a_hang() {
    let dir = TempDir::new("restart-never");
    keygen(&dir, "client");
    keygen(&dir, "worker");
    let (broker, clients, workers) = broker(&dir, &["client", "worker"]);
    let _workers = start_workers(&dir, &workers);
    let mut client = client(&dir, &clients, false)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&numbers(LINES));
    });
    std::thread::sleep(Duration::from_millis(1000));
    drop(broker);
    let started = Instant::now();
    let out = client.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("silent for"), "{stderr}");
}
