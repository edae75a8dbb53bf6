//! The user's worker command, as an adapter runs it: started once with piped stdin, stdout
//! and stderr, dying with the adapter (parent-death signal), its stderr forwarded line by
//! line as [`Event::Stderr`], tagged with the record the worker is on.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::events::{Event, Sender};

/// Environment variable telling the worker command its 1-based worker number.
pub const ENV_WORKER_NUMBER: &str = "ZEROTASQ_WORKER";
/// How long a dying worker command gets to finish writing its stderr.
pub const STDERR_GRACE: Duration = Duration::from_millis(300);
/// How often a starting command is looked at during the start-up grace.
const START_POLL: Duration = Duration::from_millis(1);

/// Why a command did not pass its start.
pub enum StartCheck {
    /// SIGKILLed from outside (a user, the OOM killer): not a failure of the command.
    Killed,
    /// It ended, or spoke before it was asked; why, for the user.
    Failed(String),
}

pub struct WorkerProcess {
    child: Child,
    /// The record whose answer is awaited (0: none), for tagging stderr lines.
    pub current: Arc<AtomicU64>,
    stderr_done: mpsc::Receiver<()>,
    display: String,
}

impl WorkerProcess {
    /// Starts `argv` and its stderr forwarder; the caller takes stdin and stdout.
    pub fn spawn(
        argv: &[OsString],
        worker: u32,
        events: Arc<Sender>,
    ) -> Result<(WorkerProcess, ChildStdin, ChildStdout), String> {
        let display = display(argv);
        let mut command = Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The engine's variables are for the adapter, not for the user's program — but for
        // its slot, which is the user's too.
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("ZEROTASQ_") && key_text != zerotasq::child::ENV_SLOT {
                command.env_remove(key);
            }
        }
        command.env(ENV_WORKER_NUMBER, worker.to_string());
        // SAFETY: prctl is async-signal-safe. The command dies with this adapter, even when
        // the adapter is SIGKILLed.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run {display}: {e}"))?;
        let (stdin, stdout, stderr) = (
            child.stdin.take().expect("piped"),
            child.stdout.take().expect("piped"),
            child.stderr.take().expect("piped"),
        );
        events.send(&Event::Started {
            worker,
            pid: child.id(),
        });
        let current = Arc::new(AtomicU64::new(0));
        let (done_tx, stderr_done) = mpsc::channel();
        {
            let current = current.clone();
            std::thread::Builder::new()
                .name("stderr".into())
                .spawn(move || {
                    let mut reader = BufReader::new(stderr);
                    let mut line = Vec::new();
                    while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        events.send(&Event::Stderr {
                            worker,
                            record: current.load(Ordering::Relaxed),
                            text: std::mem::take(&mut line),
                        });
                    }
                    let _ = done_tx.send(());
                })
                .map_err(|e| format!("cannot start a thread: {e}"))?;
        }
        Ok((
            WorkerProcess {
                child,
                current,
                stderr_done,
                display,
            },
            stdin,
            stdout,
        ))
    }

    /// Waits until the command has started. A command that exits at once (not found by its
    /// interpreter, bad arguments) fails the start, so the CLI can stop before reading its
    /// input. It has started when it blocks reading its stdin (it waits for a line: what a
    /// line-protocol worker does once ready), or, if that cannot be told, when it is still
    /// running after `grace`. Output before any line was given (a banner on stdout) would
    /// be taken for the first answer and shift every answer after it: a failed start too.
    pub fn check_start(
        &mut self,
        stdout: &mut ChildStdout,
        grace: Duration,
    ) -> Result<(), StartCheck> {
        let until = Instant::now() + grace;
        loop {
            if let Some(status) = self.try_wait() {
                if status.signal() == Some(libc::SIGKILL) {
                    return Err(StartCheck::Killed);
                }
                let how = self.finish(STDERR_GRACE);
                return Err(StartCheck::Failed(format!(
                    "{} {how} at start",
                    self.display
                )));
            }
            if Instant::now() >= until || self.waits_for_input() {
                break;
            }
            std::thread::sleep(START_POLL);
        }
        match early_output(stdout) {
            None => Ok(()),
            Some(banner) => {
                self.kill();
                Err(StartCheck::Failed(format!(
                    "{} wrote to its stdout before it was given a line ({banner:?}): a worker \
                     writes one line per line it reads, and nothing else (write messages to \
                     stderr)",
                    self.display
                )))
            }
        }
    }

    /// The command's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command as the user typed it, for messages.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The command is blocked reading its stdin (fd 0, an empty pipe): it has started and
    /// waits for its first line. Told by the system call it is blocked in
    /// (`/proc/PID/syscall`: `read` on fd 0 — a wait channel alone is not enough: a shell
    /// wrapper such as pyenv's `python3` blocks reading a command substitution's pipe
    /// first); `false` when that cannot be read, or for a command that delegates to a
    /// child of its own (`sh -c 'a | b'`).
    pub fn waits_for_input(&self) -> bool {
        let Ok(line) = std::fs::read_to_string(format!("/proc/{}/syscall", self.child.id())) else {
            return false;
        };
        let mut fields = line.split_ascii_whitespace();
        fields.next().and_then(|n| n.parse::<libc::c_long>().ok()) == Some(libc::SYS_read)
            && fields.next() == Some("0x0")
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills the command (not its own children: the supervisor kills the adapter's whole
    /// process group once the adapter has exited).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }

    /// Waits (bounded) for the command to end and its stderr to be forwarded, so that a
    /// death is reported with the lines that explain it; says how it ended.
    pub fn finish(&mut self, grace: Duration) -> String {
        let deadline = Instant::now() + grace;
        let status = loop {
            if let Some(status) = self.try_wait() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = self
            .stderr_done
            .recv_timeout(left.max(Duration::from_millis(50)));
        match status {
            Some(status) => describe(status),
            None => "is still running".to_string(),
        }
    }
}

/// What the command wrote to its stdout already, if anything (a short excerpt).
fn early_output(stdout: &mut ChildStdout) -> Option<String> {
    let mut ready = libc::pollfd {
        fd: stdout.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut ready, 1, 0) };
    if n <= 0 || ready.revents & libc::POLLIN == 0 {
        return None;
    }
    let mut start = [0u8; 80];
    let got = stdout.read(&mut start).ok().filter(|&n| n > 0)?;
    Some(
        String::from_utf8_lossy(&start[..got])
            .trim_end()
            .to_string(),
    )
}

/// `exited with status 1` / `was killed by signal 9 (SIGKILL)`.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (_, Some(sig)) => format!("was killed by signal {sig}{}", signal_name(sig)),
        _ => "ended".to_string(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGPIPE => " (SIGPIPE)",
        libc::SIGINT => " (SIGINT)",
        _ => "",
    }
}

/// `` `python3 score.py` ``, shortened when long (`sh -c '…'` scripts).
pub fn display(argv: &[OsString]) -> String {
    const LONGEST: usize = 60;
    let words: Vec<_> = argv.iter().map(|a| a.to_string_lossy()).collect();
    let text = words.join(" ");
    match text.char_indices().nth(LONGEST) {
        Some((cut, _)) => format!("`{}…`", &text[..cut]),
        None => format!("`{text}`"),
    }
}
