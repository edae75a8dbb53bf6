//! A stranger must not make the broker allocate what it declares (issue 16, #6): six
//! connections that send a ZMTP 3.0 greeting with CURVE, then declare a 240 MiB frame and
//! stream it, before any key is checked. The built-in libzmq takes frames of at most 8 KiB
//! until CURVE has admitted a peer, so each is cut off at the frame's header: the broker's
//! resident memory stays flat, and an admitted client is served afterwards, its messages
//! still as large as the socket's limit allows.

mod common;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::broker::{broker, curve_workers, keygen, map_connect, TempDir, DOUBLE};
use common::{numbers, run};

const STRANGERS: usize = 6;
const DECLARED: u64 = 240 << 20;

/// The broker's resident memory, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One stranger: a ZMTP 3.0 greeting proposing CURVE, a command frame declaring
/// [`DECLARED`] bytes, then zeros as fast as the broker takes them, until it cuts the
/// connection off or `until`. How long after the frame's header it was cut off.
fn stranger(endpoint: &str, until: Instant) -> Option<Duration> {
    let mut socket = TcpStream::connect(endpoint.trim_start_matches("tcp://")).unwrap();
    let mut greeting = [0u8; 64];
    greeting[0] = 0xff; // signature
    greeting[9] = 0x7f;
    greeting[10] = 3; // ZMTP 3.0
    greeting[12..17].copy_from_slice(b"CURVE");
    socket.write_all(&greeting).unwrap();
    let mut header = vec![0x06]; // a command, with an 8-byte size
    header.extend_from_slice(&DECLARED.to_be_bytes());
    socket.write_all(&header).unwrap();
    let sent = Instant::now();
    socket
        .set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let chunk = vec![0u8; 1 << 16];
    let mut streamed = 0;
    while streamed < DECLARED && Instant::now() < until {
        match socket.write(&chunk) {
            Ok(n) => streamed += n as u64,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(sent.elapsed()),
        }
    }
    None
}

#[test]
fn strangers_declaring_huge_frames_do_not_grow_the_broker() {
    let dir = TempDir::new("unauthenticated-memory");
    keygen(&dir, "client");
    keygen(&dir, "worker");
    let (broker, clients, workers) = broker(&dir, &["client", "worker"]);
    let pid = broker.0.id();
    let _worker = curve_workers(&dir, &workers, 1, DOUBLE);
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(pid);

    // The broker drops a handshake after 3 s whatever happens; the strangers give up at 2.5 s.
    let until = Instant::now() + Duration::from_millis(2500);
    let attacking = Arc::new(AtomicBool::new(true));
    let sampler = {
        let attacking = attacking.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while attacking.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let strangers: Vec<_> = (0..STRANGERS)
        .map(|_| {
            let endpoint = clients.clone();
            std::thread::spawn(move || stranger(&endpoint, until))
        })
        .collect();
    let cut_off: Vec<Option<Duration>> = strangers.into_iter().map(|s| s.join().unwrap()).collect();
    attacking.store(false, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    eprintln!(
        "broker RSS: {} KiB before, {} KiB at most under attack; strangers cut off after {:?}",
        before, peak, cut_off
    );

    assert!(
        peak < before + 64 * 1024,
        "the broker grew from {before} KiB to {peak} KiB for strangers"
    );
    for time in &cut_off {
        assert!(
            time.is_some_and(|t| t < Duration::from_secs(1)),
            "a stranger streaming a huge frame must be cut off at its header: {cut_off:?}"
        );
    }

    let map = map_connect(&dir, &clients, "client");
    // An admitted client's messages may be as large as the socket allows, far past 8 KiB.
    let long = "x".repeat(100_000);
    let mut input = numbers(100);
    input.extend_from_slice(format!("{long}\n").as_bytes());
    let out = run(map, input);
    assert!(out.status.success(), "{}", out.stderr);
    let mut expected: Vec<String> = (1..=100).map(|i| format!("{i}{i}")).collect();
    expected.push(format!("{long}{long}"));
    assert_eq!(out.lines(), expected);
}
