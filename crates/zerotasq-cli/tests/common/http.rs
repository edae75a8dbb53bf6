//! A plain-TCP `zerotasq broker` serving HTTP, its workers, and a minimal HTTP client, for
//! the tests of the metrics endpoint and the dashboard.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use super::broker::{bin, Guard};
use super::LIMIT;

/// A running broker: its guard, client and worker endpoints, and `http://HOST:PORT`.
pub struct HttpBroker {
    pub guard: Guard,
    pub clients: String,
    pub workers: String,
    pub http: String,
}

/// Starts `zerotasq broker --insecure` on loopback (any ports) with `--http 127.0.0.1:0`.
pub fn http_broker() -> HttpBroker {
    let mut child = bin()
        .args(["broker", "--insecure", "--clients", "tcp://127.0.0.1:0"])
        .args(["--workers", "tcp://127.0.0.1:0", "--http", "127.0.0.1:0"])
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
    let field = |what: &str| {
        let line = rx
            .recv_timeout(LIMIT)
            .expect("the broker prints its endpoints");
        line.strip_prefix(&format!("{what} "))
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            .to_string()
    };
    let clients = field("clients");
    let workers = field("workers");
    let http = field("http");
    HttpBroker {
        guard,
        clients,
        workers,
        http,
    }
}

/// `zerotasq worker --insecure -j N` joining `workers`, running `script` under `sh -c`.
pub fn workers(workers: &str, n: u32, script: &str) -> Guard {
    let child = bin()
        .args([
            "worker",
            "--insecure",
            "--connect",
            workers,
            "-j",
            &n.to_string(),
        ])
        .args(["--", "sh", "-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Guard(child)
}

/// `zerotasq map --insecure --connect clients --no-pack` (one line per task, so the broker's
/// counts are the lines'), ready for [`super::run`].
pub fn client(clients: &str) -> Command {
    let mut command = super::zerotasq();
    command.args(["--insecure", "--connect", clients, "--no-pack"]);
    command
}

/// Sends one HTTP/1.0 request to `base` (`http://HOST:PORT`); the status code and body.
pub fn request(method: &str, base: &str, path: &str) -> (u16, String) {
    let authority = base.strip_prefix("http://").expect("an http:// address");
    let mut stream = TcpStream::connect(authority).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_string())
}

/// The path of a Debian tool the test needs; a clear failure (never a skip) without it.
pub fn tool(name: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{name} is not installed: scripts/setup installs it (Debian packages prometheus, chromium)"
    );
    String::from_utf8(found.stdout).unwrap().trim().to_string()
}
