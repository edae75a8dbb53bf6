//! A command that does not exist, or exits at once, fails the run up front with a clear
//! message, before any input is read.

use std::io::{Seek, Write};
use std::process::Stdio;

mod common;
use common::*;

/// Runs with a file as stdin and says how far zerotasq read it (the offset is shared).
fn run_on_file(name: &str, args: &[&str]) -> (Output, u64) {
    let path = std::env::temp_dir().join(format!("zerotasq-{name}-{}", std::process::id()));
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(&numbers(1000)).unwrap();
    drop(file);
    let mut file = std::fs::File::open(&path).unwrap();
    let mut command = zerotasq();
    command
        .args(args)
        .stdin(Stdio::from(file.try_clone().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let status = wait_bounded(&mut child, LIMIT);
    let output = child.wait_with_output().unwrap();
    let offset = file.stream_position().unwrap();
    std::fs::remove_file(&path).unwrap();
    let output = Output {
        status,
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    (output, offset)
}

#[test]
fn command_not_found() {
    let (out, offset) = run_on_file(
        "not-found",
        &["-j", "2", "--", "/nonexistent/worker", "--flag"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr
            .contains("could not start: cannot run `/nonexistent/worker --flag`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("No such file"), "{}", out.stderr);
    assert_eq!(offset, 0, "the input was read");
}

#[test]
fn command_exiting_at_start() {
    let (out, offset) = run_on_file(
        "exits",
        &["-j", "1", "--", "sh", "-c", "echo no model >&2; exit 7"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("exited with status 7 at start"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("[w1] no model"), "{}", out.stderr);
    assert_eq!(offset, 0, "the input was read");
}
