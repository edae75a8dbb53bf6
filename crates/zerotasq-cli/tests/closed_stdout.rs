//! `zerotasq map … | head -n 5`: once the reader is gone the run ends, quietly and at once.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

mod common;
use common::*;

#[test]
fn head_ends_the_run_quietly() {
    let mut child = zerotasq()
        .args(["-j", "2", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // An endless input: only the closed stdout can end this run.
    std::thread::spawn(move || {
        let line = b"0123456789\n".repeat(1000);
        while stdin.write_all(&line).is_ok() {}
    });
    let pid = child.id();
    let _guard = KillOnDrop(pid);
    let mut head = BufReader::new(child.stdout.take().unwrap());
    let mut first = Vec::new();
    for _ in 0..5 {
        let mut line = String::new();
        head.read_line(&mut line).unwrap();
        first.push(line);
    }
    let workers = descendants(pid);
    assert!(!workers.is_empty());
    drop(head);
    let status = wait_bounded(&mut child, Duration::from_secs(20));
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert_eq!(first, vec!["0123456789\n"; 5]);
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.is_empty(), "not quiet: {stderr}");
    wait_until("the workers to exit", Duration::from_secs(10), || {
        workers.iter().all(|(pid, _)| !alive(*pid))
    });
}
