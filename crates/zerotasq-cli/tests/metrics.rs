//! `zerotasq broker --http`: a real Prometheus server (Debian's `prometheus`, on loopback,
//! scraping every second) scrapes a broker that ran a stream, and its query API gives the
//! stream's completed-task count; `promtool check metrics` accepts the page; the endpoint is
//! read-only; a port in use, a malformed address and a remote one without the flag are
//! refused.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::broker::{bin, Guard, TempDir};
use common::http::{client, http_broker, request, tool, workers};
use common::{numbers, run, LIMIT};

const TASKS: u64 = 500;

#[test]
fn prometheus_scrapes_the_broker_and_promtool_accepts_the_page() {
    let prometheus = tool("prometheus");
    let promtool = tool("promtool");
    let broker = http_broker();
    let _workers = workers(&broker.workers, 2, "while read l; do echo \"x$l\"; done");
    let out = run(client(&broker.clients), numbers(TASKS));
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.lines().len() as u64, TASKS);

    let (status, page) = request("GET", &broker.http, "/metrics");
    assert_eq!(status, 200, "{page}");
    for line in [
        format!("zerotasq_tasks_submitted_total {TASKS}"),
        format!("zerotasq_tasks_completed_total {TASKS}"),
        "zerotasq_tasks_failed_total 0".into(),
        format!("zerotasq_task_duration_seconds_count {TASKS}"),
    ] {
        assert!(page.lines().any(|l| l == line), "no {line:?} in\n{page}");
    }
    // The workers by state (which, depends on the moment), and the client's queue.
    for state in ["ready", "busy", "suspect", "retiring"] {
        let series = format!("zerotasq_workers{{state=\"{state}\"}} ");
        assert!(
            page.lines().any(|l| l.starts_with(&series)),
            "no {series:?}"
        );
    }
    assert!(page.contains("zerotasq_queue_depth{client=\""), "{page}");
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool: {checked:?}\n{page}"
    );

    // Read-only.
    for method in ["POST", "PUT", "DELETE"] {
        assert_eq!(request(method, &broker.http, "/metrics").0, 405, "{method}");
    }
    assert_eq!(request("GET", &broker.http, "/nothing").0, 404);

    let dir = TempDir::new("prometheus");
    let target = broker.http.strip_prefix("http://").unwrap();
    std::fs::write(
        dir.path("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: zerotasq\n    \
             static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let web = free_loopback_port();
    let _prometheus = Guard(
        Command::new(&prometheus)
            .arg(format!(
                "--config.file={}",
                dir.path("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let api = format!("http://127.0.0.1:{web}");
    let query = "/api/v1/query?query=zerotasq_tasks_completed_total";
    let deadline = Instant::now() + LIMIT;
    let answer = loop {
        let answer = std::net::TcpStream::connect(format!("127.0.0.1:{web}"))
            .ok()
            .map(|_| request("GET", &api, query));
        match answer {
            Some((200, body)) if body.contains("\"value\"") => break body,
            _ if Instant::now() > deadline => panic!("Prometheus had no sample in {LIMIT:?}"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    assert!(
        answer.contains(&format!("\"{TASKS}\"]")),
        "the query gave {answer}"
    );
    assert!(answer.contains("\"job\":\"zerotasq\""), "{answer}");
}

/// A port free on loopback now (Prometheus takes an address, not port 0).
fn free_loopback_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `zerotasq broker --insecure` on loopback with these HTTP arguments; it must refuse to
/// start: its stderr.
fn refused(http: &[&str]) -> String {
    let mut broker = bin();
    broker
        .args(["broker", "--insecure", "--clients", "tcp://127.0.0.1:0"])
        .args(["--workers", "tcp://127.0.0.1:0"])
        .args(http);
    let out = run(broker, Vec::new());
    assert_eq!(out.status.code(), Some(2), "{http:?}: {}", out.stderr);
    assert!(out.lines().is_empty(), "nothing bound: {:?}", out.lines());
    out.stderr
}

#[test]
fn a_port_in_use_a_malformed_or_remote_address_is_refused() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = refused(&["--http", &addr]);
    assert!(
        err.contains(&format!("listen for HTTP on {addr}")) && err.contains("in use"),
        "{err}"
    );
    let err = refused(&["--http", "localhost"]);
    assert!(err.contains("\"localhost\" is not HOST:PORT"), "{err}");
    let err = refused(&["--http", "127.0.0.1:99999"]);
    assert!(err.contains("is not HOST:PORT"), "{err}");
    let err = refused(&["--http", "0.0.0.0:0"]);
    assert!(
        err.contains("not loopback) must be allowed explicitly"),
        "{err}"
    );
}
