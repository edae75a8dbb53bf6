//! A plain-TCP `zerotasq broker` serving HTTP, its workers, and a minimal HTTP client, for
//! the tests of the metrics endpoint and the dashboard.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use super::broker::{bin, start_broker, Guard};
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
    let mut command = bin();
    command
        .args(["broker", "--insecure", "--clients", "tcp://127.0.0.1:0"])
        .args(["--workers", "tcp://127.0.0.1:0", "--http", "127.0.0.1:0"]);
    let (guard, fields) = start_broker(command, &["clients", "workers", "http"]);
    let [clients, workers, http] = <[String; 3]>::try_from(fields).expect("three fields");
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
