//! One address may hold only so many connections to a broker's endpoint (issue 16, #5):
//! past `--max-connections-per-address`, a stranger's connections are closed as they are
//! accepted, while another address is admitted and a client is served; when the stranger's
//! connections close, its count comes back down.

mod common;

use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use common::broker::{broker_with, curve_workers, keygen, map_connect, TempDir, DOUBLE};
use common::{numbers, run};

const CAP: usize = 16;
const STRANGER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: Ipv4Addr, to: SocketAddrV4) -> TcpStream {
    let sockaddr = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a new socket owned by the stream at once; bind and connect read addresses of
    // the length given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(SocketAddrV4::new(from, 0));
        let rc = libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len);
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let remote = sockaddr(to);
        let rc = libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len);
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        stream
    }
}

/// Whether the broker admitted each connection — it sends an admitted peer its greeting at
/// once, and closes a refused one unread — and when it had closed the refused ones.
fn admitted(connections: &mut [TcpStream]) -> (Vec<bool>, Option<Instant>) {
    let mut seen: Vec<Option<bool>> = vec![None; connections.len()];
    let mut last_refusal = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.iter().any(Option::is_none) {
        assert!(Instant::now() < deadline, "undecided connections: {seen:?}");
        for (socket, seen) in connections.iter_mut().zip(&mut seen) {
            if seen.is_some() {
                continue;
            }
            socket.set_nonblocking(true).unwrap();
            let mut byte = [0u8; 1];
            *seen = match socket.read(&mut byte) {
                Ok(0) => Some(false),
                Ok(_) => Some(true),
                Err(e) if e.kind() == ErrorKind::WouldBlock => None,
                Err(_) => Some(false),
            };
            if *seen == Some(false) {
                last_refusal = Some(Instant::now());
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (seen.into_iter().map(Option::unwrap).collect(), last_refusal)
}

fn count(admitted: &[bool]) -> usize {
    admitted.iter().filter(|a| **a).count()
}

#[test]
fn a_stranger_past_its_cap_is_refused_and_others_are_served() {
    let dir = TempDir::new("connections-per-address");
    keygen(&dir, "broker");
    keygen(&dir, "client");
    keygen(&dir, "worker");
    let any = "tcp://127.0.0.1:0";
    let cap = CAP.to_string();
    let more = ["--max-connections-per-address", cap.as_str()];
    let (_broker, clients, workers) = broker_with(&dir, &["client", "worker"], any, any, &more);
    let _worker = curve_workers(&dir, &workers, 1, DOUBLE);
    let endpoint: SocketAddrV4 = clients.trim_start_matches("tcp://").parse().unwrap();

    // The stranger opens more than its share; strangers that never finish their handshake
    // are dropped after 3 s anyway, so all of this happens well within that.
    let started = Instant::now();
    let mut stranger: Vec<TcpStream> = (0..CAP + 8)
        .map(|_| connect_from(STRANGER, endpoint))
        .collect();
    let (seen, last_refusal) = admitted(&mut stranger);
    let refused_within = last_refusal.map(|t| t - started);
    eprintln!(
        "{} of {} admitted; the others closed within {refused_within:?}",
        count(&seen),
        seen.len()
    );
    assert_eq!(count(&seen), CAP, "{seen:?}");
    assert!(
        refused_within.is_some_and(|t| t < Duration::from_secs(1)),
        "{refused_within:?}"
    );
    // Another address is admitted at once, the stranger's is not.
    let mut probes = vec![
        connect_from(Ipv4Addr::LOCALHOST, endpoint),
        connect_from(STRANGER, endpoint),
    ];
    assert_eq!(admitted(&mut probes).0, [true, false]);
    drop(probes);

    // When the stranger's connections close, its count comes back down.
    drop(stranger);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let mut again: Vec<TcpStream> =
            (0..CAP).map(|_| connect_from(STRANGER, endpoint)).collect();
        let (seen, _) = admitted(&mut again);
        if count(&seen) == CAP {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {seen:?}");
    }

    let map = map_connect(&dir, &clients, "client");
    let out = run(map, numbers(100));
    assert!(out.status.success(), "{}", out.stderr);
    let expected: Vec<String> = (1..=100).map(|i| format!("{i}{i}")).collect();
    assert_eq!(out.lines(), expected);
}
