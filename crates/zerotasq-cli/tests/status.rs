//! `zerotasq status` against a real `zerotasq broker` on loopback with CURVE: a waiting
//! `map --connect` client shows with its queue depth, a worker with what it did; a key the
//! broker does not list gets a clear error and exit 2; `--watch` repeats until Ctrl-C.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::broker::{bin, broker, keygen, Guard, TempDir};
use common::{kill, numbers, run, wait_bounded, wait_until, LIMIT};
use zerotasq::BrokerStatus;

/// `zerotasq status --connect clients` with `key`'s keys.
fn status_command(dir: &TempDir, clients: &str, key: &str) -> Command {
    let mut command = bin();
    command
        .args(["status", "--connect", clients, "--server-key"])
        .arg(dir.path("broker.key"))
        .arg("--key")
        .arg(dir.path(&format!("{key}.key_secret")));
    command
}

fn json_status(dir: &TempDir, clients: &str) -> BrokerStatus {
    let mut command = status_command(dir, clients, "client");
    command.arg("--json");
    let out = run(command, Vec::new());
    assert!(out.status.success(), "{}", out.stderr);
    BrokerStatus::from_json(&out.stdout).unwrap()
}

#[test]
fn status_shows_a_waiting_client_then_the_worker_that_served_it() {
    let dir = TempDir::new("status-shows");
    keygen(&dir, "client");
    keygen(&dir, "worker");
    let (_broker, clients, workers) = broker(&dir, &["client", "worker"]);

    // A client whose 30 tasks wait: no worker has joined yet.
    let mut map = bin()
        .args([
            "map",
            "--no-progress",
            "--connect",
            &clients,
            "--server-key",
        ])
        .arg(dir.path("broker.key"))
        .arg("--key")
        .arg(dir.path("client.key_secret"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    map.stdin.take().unwrap().write_all(&numbers(30)).unwrap();
    let mut map_out = map.stdout.take().unwrap();
    let mut map = Guard(map);
    let mut last = None;
    wait_until("the client's 30 tasks queued", LIMIT, || {
        let status = json_status(&dir, &clients);
        let queued: Vec<usize> = status.clients.iter().map(|c| c.queued).collect();
        last = Some(status);
        queued == [30]
    });
    let status = last.unwrap();
    assert!(status.workers.is_empty(), "{status:?}");
    assert_eq!(status.totals.queued, 30);

    // A worker joins and serves it.
    let _worker = Guard(
        bin()
            .args(["worker", "--connect", &workers, "--server-key"])
            .arg(dir.path("broker.key"))
            .arg("--key")
            .arg(dir.path("worker.key_secret"))
            .args(["-j", "1", "--", "cat"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_bounded(&mut map.0, LIMIT).success());
    let mut answered = String::new();
    map_out.read_to_string(&mut answered).unwrap();
    assert_eq!(answered.lines().count(), 30);

    let out = run(status_command(&dir, &clients, "client"), Vec::new());
    assert!(out.status.success(), "{}", out.stderr);
    let table = String::from_utf8(out.stdout).unwrap();
    let worker_rows: Vec<Vec<&str>> = table
        .lines()
        .skip_while(|l| !l.starts_with("WORKER"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(worker_rows.len(), 1, "{table}");
    assert_eq!(worker_rows[0][1..5], ["ready", "0", "30", "0"], "{table}");
    let client_row = table
        .lines()
        .skip_while(|l| !l.starts_with("CLIENT"))
        .nth(1)
        .unwrap();
    let cells: Vec<&str> = client_row.split_whitespace().collect();
    assert_eq!(cells[1..6], ["0", "0", "30", "30", "0"], "{table}");
}

#[test]
fn a_key_the_broker_does_not_list_gets_a_clear_error() {
    let dir = TempDir::new("status-refused");
    keygen(&dir, "client");
    keygen(&dir, "stranger");
    let (_broker, clients, _) = broker(&dir, &["client"]);
    let out = run(status_command(&dir, &clients, "stranger"), Vec::new());
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stdout.is_empty());
    assert!(out.stderr.contains("refused our key"), "{}", out.stderr);
    assert!(out.stderr.contains(&clients), "{}", out.stderr);
}

#[test]
fn watch_repeats_until_interrupted() {
    let dir = TempDir::new("status-watch");
    keygen(&dir, "client");
    let (_broker, clients, _) = broker(&dir, &["client"]);
    let mut watch = status_command(&dir, &clients, "client")
        .args(["--json", "--watch", "100ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let mut watch = Guard(watch);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    for _ in 0..2 {
        let line = rx.recv_timeout(LIMIT).expect("a status line");
        BrokerStatus::from_json(line.as_bytes()).unwrap();
    }
    kill(watch.0.id(), libc::SIGINT);
    assert_eq!(
        wait_bounded(&mut watch.0, Duration::from_secs(30)).code(),
        Some(130)
    );
}
