//! `zerotasq map --joblog FILE --resume`: a run killed with `kill -9` mid-way and resumed
//! writes exactly what an undisturbed run writes (answers in order, the failed line
//! missing, the same exit status), the joblog logs every line once; a joblog from another
//! input or command, or an existing one without `--resume`, is refused with nothing
//! written.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::broker::TempDir;
use common::{numbers, run, sh, wait_bounded, zerotasq, LIMIT};

const LINES: u64 = 3000;
/// Answers each line after a millisecond; line 77 kills the command every time.
const WORKER: &str = "while read l; do [ \"$l\" = 77 ] && exit 3; sleep 0.001; echo \"x$l\"; done";

fn map(joblog: &std::path::Path, resume: bool, worker: &str) -> Command {
    let mut command = zerotasq();
    command.args(["-j", "3", "--joblog"]).arg(joblog);
    if resume {
        command.arg("--resume");
    }
    command.args(["--"]).args(sh(worker));
    command
}

/// Entries (not the header) in a joblog.
fn entries(text: &str) -> Vec<&str> {
    text.lines().skip(4).collect()
}

#[test]
fn a_run_killed_with_sigkill_and_resumed_writes_what_an_undisturbed_run_writes() {
    let dir = TempDir::new("joblog-resume");
    let input = dir.path("input");
    std::fs::write(&input, numbers(LINES)).unwrap();
    let whole = run(map(&dir.path("whole.log"), false, WORKER), numbers(LINES));
    assert_eq!(
        whole.status.code(),
        Some(1),
        "one line fails: {}",
        whole.stderr
    );
    assert_eq!(whole.lines().len() as u64, LINES - 1);
    assert!(whole.stderr.contains("line 77 failed"), "{}", whole.stderr);

    // The same, killed once a third of the lines are logged.
    let joblog = dir.path("run.log");
    let mut first = map(&joblog, false, WORKER)
        .stdin(std::fs::File::open(&input).unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    while entries(&std::fs::read_to_string(&joblog).unwrap_or_default()).len() < 1000 {
        assert!(Instant::now() < deadline, "the joblog did not grow");
        assert!(first.try_wait().unwrap().is_none(), "ended before the kill");
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().unwrap();
    wait_bounded(&mut first, LIMIT);
    let logged = entries(&std::fs::read_to_string(&joblog).unwrap()).len() as u64;
    assert!(logged < LINES, "killed mid-way: {logged} lines logged");

    let resumed = run(map(&joblog, true, WORKER), numbers(LINES));
    assert_eq!(resumed.status.code(), Some(1), "{}", resumed.stderr);
    assert!(
        resumed.stdout == whole.stdout,
        "the output differs from an undisturbed run's"
    );
    assert!(
        resumed.stderr.contains("line 77 failed"),
        "{}",
        resumed.stderr
    );

    // Every line logged once, with its outcome, host and slot.
    let text = std::fs::read_to_string(&joblog).unwrap();
    let mut seen: Vec<u64> = entries(&text)
        .iter()
        .map(|e| e.split('\t').next().unwrap().parse().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=LINES).collect::<Vec<_>>());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let fields: Vec<&str> = entries(&text)
        .iter()
        .find(|e| e.starts_with("5\t"))
        .unwrap()
        .split('\t')
        .collect();
    assert_eq!(fields[1], host.trim());
    assert!(["1", "2", "3"].contains(&fields[2]), "slot {}", fields[2]);
    assert_eq!((fields[5], fields[7]), ("ok", "x5"));
    let failed = entries(&text)
        .into_iter()
        .find(|e| e.starts_with("77\t"))
        .unwrap();
    assert!(failed.contains("\tfailed\t"), "{failed}");
}

#[test]
fn a_joblog_of_another_input_or_command_is_refused_and_left_alone() {
    let dir = TempDir::new("joblog-refused");
    let joblog = dir.path("run.log");
    let worker = "while read l; do echo \"x$l\"; done";
    assert!(run(map(&joblog, false, worker), numbers(20))
        .status
        .success());
    let before = std::fs::read(&joblog).unwrap();

    let other: Vec<u8> = b"a\nb\nc\n".to_vec();
    let out = run(map(&joblog, true, worker), other);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stderr
            .contains("it is the joblog of another input (record 1 differs)"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty());

    let out = run(map(&joblog, true, "cat"), numbers(20));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stderr.contains("written for another run"),
        "{}",
        out.stderr
    );

    let out = run(map(&joblog, true, worker), numbers(10));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stderr.contains("the input ends at record 10"),
        "{}",
        out.stderr
    );

    let out = run(map(&joblog, false, worker), numbers(20));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stderr.contains("exists: --resume continues its run"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read(&joblog).unwrap(),
        before,
        "the joblog is untouched"
    );

    // The same input resumes a finished run: nothing runs, the output is replayed.
    let out = run(map(&joblog, true, worker), numbers(20));
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(
        out.lines(),
        (1..=20).map(|i| format!("x{i}")).collect::<Vec<_>>()
    );
    assert_eq!(std::fs::read(&joblog).unwrap(), before);
}
