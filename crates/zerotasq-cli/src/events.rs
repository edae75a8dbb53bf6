//! The side channel from adapters to the CLI: a pipe the CLI creates and every adapter
//! inherits (its number travels in [`ENV_EVENTS_FD`]). It carries what the engine's outcomes
//! do not: the worker command's stderr lines, why a worker died and on which record, and
//! start-up failures. Each event is one `write(2)` of at most [`MAX_EVENT`] bytes, which
//! POSIX makes atomic on a pipe, so events from many adapters never interleave.

use std::fs::File;
use std::os::fd::{FromRawFd, RawFd};

/// Environment variable naming the inherited write end of the pipe.
pub const ENV_EVENTS_FD: &str = "ZEROTASQ_CLI_EVENTS_FD";
/// Largest event, below `PIPE_BUF` (4096 on Linux).
const MAX_EVENT: usize = 4000;

/// One event; `worker` is the 1-based slot, `record` 0 when there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The adapter started the worker command.
    Started { worker: u32, pid: u32 },
    /// One line the worker command wrote on its stderr while on `record`.
    Stderr {
        worker: u32,
        record: u64,
        text: Vec<u8>,
    },
    /// The worker command died (or was killed) while on `record`.
    Died {
        worker: u32,
        record: u64,
        reason: String,
    },
    /// The worker command could not start, or exited at once.
    StartFailed { worker: u32, reason: String },
    /// The worker left to be replaced by a fresh one (recycling), and why.
    Recycled { worker: u32, reason: String },
    /// The command broke the line protocol (more lines out than in): answers cannot be
    /// matched to lines, so the run must stop.
    Desync { worker: u32, reason: String },
    /// The command has written nothing for a long while since it was given `record`: a
    /// warning (it may be slow, or buffer its output, or not answer at all), once per
    /// worker process.
    Silent {
        worker: u32,
        record: u64,
        reason: String,
    },
}

impl Event {
    /// `KIND \t worker \t record \t text \n`; only the last field is free text.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, worker, record, text): (u8, u32, u64, &[u8]) = match self {
            Event::Started { worker, pid } => (b'S', *worker, *pid as u64, b""),
            Event::Stderr {
                worker,
                record,
                text,
            } => (b'E', *worker, *record, text),
            Event::Died {
                worker,
                record,
                reason,
            } => (b'D', *worker, *record, reason.as_bytes()),
            Event::StartFailed { worker, reason } => (b'F', *worker, 0, reason.as_bytes()),
            Event::Recycled { worker, reason } => (b'R', *worker, 0, reason.as_bytes()),
            Event::Desync { worker, reason } => (b'X', *worker, 0, reason.as_bytes()),
            Event::Silent {
                worker,
                record,
                reason,
            } => (b'W', *worker, *record, reason.as_bytes()),
        };
        let mut buf = format!("{}\t{worker}\t{record}\t", kind as char).into_bytes();
        let room = MAX_EVENT - buf.len() - 1;
        buf.extend(
            text.iter()
                .take(room)
                .map(|&b| if b == b'\n' { b' ' } else { b }),
        );
        buf.push(b'\n');
        buf
    }

    /// The event as a person reads it on stderr, without a CLI to report it: the command's
    /// stderr lines prefixed `[wN]`, deaths and start failures; `None` for a start.
    pub fn human(&self) -> Option<String> {
        match self {
            Event::Started { .. } => None,
            Event::Stderr { worker, text, .. } => {
                Some(format!("[w{worker}] {}", String::from_utf8_lossy(text)))
            }
            Event::Died {
                worker,
                record,
                reason,
            } => Some(format!(
                "zerotasq: [w{worker}] {reason}{}",
                if *record > 0 {
                    format!(" (on record {record})")
                } else {
                    String::new()
                }
            )),
            Event::StartFailed { worker, reason } => {
                Some(format!("zerotasq: [w{worker}] could not start: {reason}"))
            }
            Event::Recycled { worker, reason } => {
                Some(format!("zerotasq: [w{worker}] recycled: it {reason}"))
            }
            Event::Desync { worker, reason } => Some(format!("zerotasq: [w{worker}] {reason}")),
            Event::Silent { worker, reason, .. } => {
                Some(format!("zerotasq: [w{worker}] warning: {reason}"))
            }
        }
    }

    /// Parses one line (without its newline); `None` for anything malformed.
    pub fn parse(line: &[u8]) -> Option<Event> {
        let mut fields = line.splitn(4, |&b| b == b'\t');
        let kind = fields.next()?;
        let worker: u32 = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
        let number: u64 = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
        let text = fields.next()?;
        let lossy = || String::from_utf8_lossy(text).into_owned();
        Some(match kind {
            b"S" => Event::Started {
                worker,
                pid: number as u32,
            },
            b"E" => Event::Stderr {
                worker,
                record: number,
                text: text.to_vec(),
            },
            b"D" => Event::Died {
                worker,
                record: number,
                reason: lossy(),
            },
            b"F" => Event::StartFailed {
                worker,
                reason: lossy(),
            },
            b"R" => Event::Recycled {
                worker,
                reason: lossy(),
            },
            b"X" => Event::Desync {
                worker,
                reason: lossy(),
            },
            b"W" => Event::Silent {
                worker,
                record: number,
                reason: lossy(),
            },
            _ => return None,
        })
    }
}

/// Creates the pipe: the read end (close-on-exec) for the CLI, and the number of the write
/// end, left open across exec so that adapters inherit it.
pub fn pipe() -> std::io::Result<(File, RawFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: clears close-on-exec on the write end we just created.
    unsafe { libc::fcntl(fds[1], libc::F_SETFD, 0) };
    // SAFETY: fds[0] is a fresh descriptor that nothing else owns.
    Ok((unsafe { File::from_raw_fd(fds[0]) }, fds[1]))
}

/// The adapter's end: sends events, or prints them on stderr without a CLI to read them.
pub struct Sender {
    fd: Option<RawFd>,
}

impl Sender {
    /// Takes the inherited descriptor and marks it close-on-exec, so the worker command
    /// does not inherit it.
    pub fn from_env() -> Sender {
        let fd = std::env::var(ENV_EVENTS_FD)
            .ok()
            .and_then(|v| v.parse::<RawFd>().ok())
            // SAFETY: F_GETFD only checks that the descriptor is open.
            .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0);
        if let Some(fd) = fd {
            // SAFETY: sets close-on-exec on an open descriptor.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        Sender { fd }
    }

    pub fn send(&self, event: &Event) {
        let bytes = event.encode();
        match self.fd {
            // SAFETY: one write of a buffer we own; a short or failed write only loses
            // diagnostics.
            Some(fd) => unsafe {
                libc::write(fd, bytes.as_ptr().cast(), bytes.len());
            },
            None => {
                if let Some(text) = event.human() {
                    use std::io::Write;
                    let _ = writeln!(std::io::stderr().lock(), "{text}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let events = [
            Event::Started { worker: 2, pid: 99 },
            Event::Stderr {
                worker: 1,
                record: 7,
                text: b"a\tb".to_vec(),
            },
            Event::Died {
                worker: 3,
                record: 0,
                reason: "timed out after 1s".into(),
            },
            Event::StartFailed {
                worker: 1,
                reason: "cannot run `x`".into(),
            },
            Event::Silent {
                worker: 2,
                record: 5,
                reason: "no answer".into(),
            },
        ];
        for event in events {
            let bytes = event.encode();
            assert_eq!(bytes.last(), Some(&b'\n'));
            assert_eq!(Event::parse(&bytes[..bytes.len() - 1]), Some(event));
        }
    }

    #[test]
    fn long_text_is_cut_below_pipe_buf() {
        let event = Event::Stderr {
            worker: 1,
            record: 1,
            text: vec![b'x'; 10_000],
        };
        assert!(event.encode().len() <= MAX_EVENT);
        assert_eq!(Event::parse(b"Q\t1\t1\tx"), None);
        assert_eq!(Event::parse(b"E\tone\t1\tx"), None);
    }
}
