//! The dashboard of `zerotasq broker --http` in headless Chromium (Debian's `chromium`):
//! while a stream runs through two workers, the page it renders (scripts run, the status
//! fetched) shows both workers with host, pid and slot, the client, and the throughput
//! chart; a screenshot of it is a PNG.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::broker::{Guard, TempDir};
use common::http::{client, http_broker, request, tool, workers};
use common::{numbers, wait_bounded, LIMIT};

/// Chromium's headless run of `url`, with a fresh profile, after the page's scripts have
/// had 3 s of (virtual) time; `action` is `--dump-dom` or `--screenshot=FILE`.
fn chromium(chromium: &str, profile: &TempDir, action: &str, url: &str) -> String {
    let mut child = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .args(["--disable-background-networking", "--no-first-run"])
        .arg(format!(
            "--user-data-dir={}",
            profile.path("profile").display()
        ))
        .args([
            "--virtual-time-budget=3000",
            "--window-size=900,1000",
            "--hide-scrollbars",
        ])
        .arg(action)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let status = wait_bounded(&mut child, LIMIT);
    assert!(status.success(), "chromium {action}: {status:?}");
    reader.join().unwrap()
}

#[test]
fn the_dashboard_renders_workers_clients_and_the_chart() {
    let chromium_bin = tool("chromium");
    let broker = http_broker();
    let _workers = workers(
        &broker.workers,
        2,
        "while read l; do sleep 0.005; echo \"x$l\"; done",
    );
    // A stream of about 4 s in the background, so the page sees it under way.
    let mut map = client(&broker.clients);
    let mut stream = map
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = stream.stdin.take().unwrap();
    std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &numbers(1500)));
    let stream = Guard(stream);
    // Until the figures show both workers busy with the stream, and a few seconds of it.
    let deadline = Instant::now() + LIMIT;
    while !request("GET", &broker.http, "/api/status")
        .1
        .contains("\"state\":\"busy\"")
    {
        assert!(Instant::now() < deadline, "the workers never got busy");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));

    let profile = TempDir::new("chromium");
    let url = format!("{}/", broker.http);
    let dom = chromium(&chromium_bin, &profile, "--dump-dom", &url);
    let rows: Vec<&str> = dom
        .split("<tr>")
        .filter(|row| row.contains("class=\"state-"))
        .collect();
    assert_eq!(rows.len(), 2, "a row per worker:\n{dom}");
    for (slot, row) in rows.iter().enumerate() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let host = host.trim();
        assert!(row.starts_with(&format!("<td>{host}</td>")), "{row}");
        assert!(
            row.contains(&format!("</td><td>{slot}</td><td class=\"state-")),
            "{row}"
        );
    }
    let path = dom
        .split("<path ")
        .nth(1)
        .unwrap_or_else(|| panic!("no chart line:\n{dom}"));
    assert!(
        path.starts_with("d=\"M") && path.contains("class=\"done\""),
        "{path}"
    );
    assert!(
        dom.split("<table id=\"clients\">")
            .nth(1)
            .is_some_and(|t| t.contains("<td>1500</td>")),
        "the client with its 1500 tasks submitted:\n{dom}"
    );

    let shot = profile.path("dashboard.png");
    chromium(
        &chromium_bin,
        &profile,
        &format!("--screenshot={}", shot.display()),
        &url,
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    drop(stream);
}
