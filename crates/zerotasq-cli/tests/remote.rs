//! Many machines, on loopback: `zerotasq keygen`, a standalone `zerotasq broker` with CURVE,
//! `zerotasq worker` joining it and `zerotasq map --connect` sending it tasks — the real
//! binary, real TCP sockets, every process killed when its guard drops.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::broker::{bin, broker, curve_workers, keygen, map_connect, TempDir, DOUBLE};
use common::{numbers, run};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn keygen_writes_a_public_and_a_private_file_and_keeps_them() {
    let dir = TempDir::new("keygen");
    keygen(&dir, "alice");
    let public = std::fs::read_to_string(dir.path("alice.key")).unwrap();
    assert_eq!(public.trim().len(), 40, "a Z85 public key: {public:?}");
    assert_eq!(mode(&dir.path("alice.key_secret")), 0o600);
    let secret = std::fs::read_to_string(dir.path("alice.key_secret")).unwrap();
    assert!(secret.contains(public.trim()), "{secret}");

    let again = bin().arg("keygen").arg(dir.path("alice")).output().unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(
        std::fs::read_to_string(dir.path("alice.key")).unwrap(),
        public
    );

    std::fs::set_permissions(
        dir.path("alice.key_secret"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let forced = bin()
        .args(["keygen", "--force"])
        .arg(dir.path("alice"))
        .output()
        .unwrap();
    assert!(forced.status.success(), "{forced:?}");
    assert_ne!(
        std::fs::read_to_string(dir.path("alice.key")).unwrap(),
        public
    );
    assert_eq!(mode(&dir.path("alice.key_secret")), 0o600);
}

#[test]
fn map_through_a_broker_and_remote_workers_keeps_order() {
    let dir = TempDir::new("remote-map");
    keygen(&dir, "client");
    keygen(&dir, "worker");
    let (_broker, clients, workers) = broker(&dir, &["client", "worker"]);
    let _workers = curve_workers(&dir, &workers, 3, DOUBLE);
    let mut command = map_connect(&dir, &clients, "client");
    command.args(["--stats", "json"]);
    let out = run(command, numbers(5000));
    assert!(out.status.success(), "{}", out.stderr);
    let expected: Vec<String> = (1..=5000).map(|i| format!("{i}{i}")).collect();
    assert_eq!(out.lines(), expected);
    // Slot numbers repeat from host to host: no per-worker figures through a broker.
    assert!(
        out.stderr.contains("\"tasks\":5000") && out.stderr.contains("\"workers\":[]"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_client_with_an_unlisted_key_gets_a_clear_error() {
    let dir = TempDir::new("remote-refused");
    keygen(&dir, "client");
    keygen(&dir, "stranger");
    let (_broker, clients, _) = broker(&dir, &["client"]);
    let started = Instant::now();
    let out = run(map_connect(&dir, &clients, "stranger"), numbers(10));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stdout.is_empty());
    assert!(out.stderr.contains("refused our key"), "{}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn plain_tcp_is_refused_off_loopback() {
    let broker = bin()
        .args(["broker", "--insecure", "--clients", "tcp://0.0.0.0:0"])
        .args(["--workers", "tcp://127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(broker.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&broker.stderr).contains("plain TCP"));

    let mut map = bin();
    map.args(["map", "--no-progress", "--insecure", "--connect"])
        .arg("tcp://192.0.2.1:5555");
    let out = run(map, numbers(1));
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.contains("plain TCP"), "{}", out.stderr);

    let worker = bin()
        .args(["worker", "--insecure", "--connect", "tcp://192.0.2.1:5556"])
        .args(["--", "cat"])
        .output()
        .unwrap();
    assert_eq!(worker.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&worker.stderr).contains("plain TCP"));
}
