//! Workers killed with SIGKILL from outside during a 10,000-line run: the user's command
//! once, and an adapter once. The output is identical to an undisturbed run's.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

mod common;
use common::*;

const LINES: u64 = 10_000;
/// A little work per line, so the run is still going when the kills come.
const WORKER: &str = "import sys, time
for line in sys.stdin:
    time.sleep(0.0005)
    sys.stdout.write('ok ' + line)
    sys.stdout.flush()";

#[test]
fn killed_workers_change_nothing_in_the_output() {
    let mut child = zerotasq()
        .args(["-j", "2", "--window", "256", "--", "python3", "-c", WORKER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _guard = KillOnDrop(pid);
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || stdin.write_all(&numbers(LINES)));
    let stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
    let mut lines = Vec::new();
    let mut killed = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        lines.push(line.unwrap());
        // The user's command first, then an adapter.
        let adapter = match lines.len() {
            2000 => false,
            5000 => true,
            _ => continue,
        };
        let victim = descendants(pid)
            .into_iter()
            .find(|(_, cmd)| cmd.contains("__adapter") == adapter)
            .unwrap_or_else(|| panic!("no process to kill (adapter: {adapter})"));
        kill(victim.0, libc::SIGKILL);
        killed.push(victim);
    }
    let status = wait_bounded(&mut child, Duration::from_secs(60));
    let stderr = stderr.join().unwrap();
    assert!(status.success(), "{status:?}: {stderr}");
    assert_eq!(killed.len(), 2);
    let expected: Vec<String> = (1..=LINES).map(|i| format!("ok {i}")).collect();
    assert!(
        lines == expected,
        "the output differs from an undisturbed run"
    );
    assert!(
        stderr.contains(&format!("{LINES} tasks, 0 failed")),
        "{stderr}"
    );
}
