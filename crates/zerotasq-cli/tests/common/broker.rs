//! A standalone `zerotasq broker` for tests across machines (on loopback): key files in a
//! directory of the test's own, and a broker admitting the keys named.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use super::LIMIT;

/// The binary, with no subcommand.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_zerotasq"))
}

/// A fresh directory for one test, removed at the end.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("zerotasq-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process killed (with its process group's adapters dying with it) when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The command line of a worker doubling each line (`a` → `aa`), for `sh -c`.
pub const DOUBLE: &str = "while read l; do echo \"$l$l\"; done";

/// `zerotasq worker -j JOBS` joined to the broker at `workers` with the key pair `worker`
/// in `dir`, running `script` under `sh -c`.
pub fn curve_workers(dir: &TempDir, workers: &str, jobs: u32, script: &str) -> Guard {
    Guard(
        bin()
            .args(["worker", "--connect", workers, "--server-key"])
            .arg(dir.path("broker.key"))
            .arg("--key")
            .arg(dir.path("worker.key_secret"))
            .args(["-j", &jobs.to_string(), "--", "sh", "-c", script])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// `zerotasq map --connect` to the broker's client endpoint with the key pair `key` in `dir`.
pub fn map_connect(dir: &TempDir, clients: &str, key: &str) -> Command {
    let mut command = bin();
    command
        .args(["map", "--no-progress", "--connect", clients, "--server-key"])
        .arg(dir.path("broker.key"))
        .arg("--key")
        .arg(dir.path(&format!("{key}.key_secret")));
    command
}

pub fn keygen(dir: &TempDir, name: &str) {
    let out = bin().arg("keygen").arg(dir.path(name)).output().unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Starts `zerotasq broker` with CURVE on loopback, any ports; its client and worker
/// endpoints.
pub fn broker(dir: &TempDir, allowed: &[&str]) -> (Guard, String, String) {
    keygen(dir, "broker");
    broker_at(dir, allowed, "tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
}

/// Starts `zerotasq broker` on the given endpoints with the key pair `broker` already in
/// `dir` (a restart keeps its keys and addresses); its client and worker endpoints.
pub fn broker_at(
    dir: &TempDir,
    allowed: &[&str],
    clients: &str,
    workers: &str,
) -> (Guard, String, String) {
    broker_with(dir, allowed, clients, workers, &[])
}

/// [`broker_at`] with more arguments for `zerotasq broker`.
pub fn broker_with(
    dir: &TempDir,
    allowed: &[&str],
    clients: &str,
    workers: &str,
    more: &[&str],
) -> (Guard, String, String) {
    let mut list = String::from("# allowed keys\n");
    for name in allowed {
        list.push_str(&std::fs::read_to_string(dir.path(&format!("{name}.key"))).unwrap());
    }
    std::fs::write(dir.path("allowed"), list).unwrap();
    let mut command = bin();
    command
        .args(["broker", "--clients", clients])
        .args(["--workers", workers, "--key"])
        .arg(dir.path("broker.key_secret"))
        .arg("--allow")
        .arg(dir.path("allowed"))
        .args(more);
    let (guard, mut fields) = start_broker(command, &["clients", "workers"]);
    let workers = fields.pop().expect("two fields");
    let clients = fields.pop().expect("two fields");
    (guard, clients, workers)
}

/// Starts a `zerotasq broker` command and reads the lines it prints first, `NAME VALUE` for
/// each of `fields` in order (its endpoints); the values.
pub fn start_broker(mut command: Command, fields: &[&str]) -> (Guard, Vec<String>) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let guard = Guard(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let values = fields
        .iter()
        .map(|what| {
            let line = rx
                .recv_timeout(LIMIT)
                .expect("the broker prints its endpoints");
            line.strip_prefix(&format!("{what} "))
                .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                .to_string()
        })
        .collect();
    (guard, values)
}
