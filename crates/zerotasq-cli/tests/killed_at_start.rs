//! A worker command killed from outside (`kill -9`) while it starts is not a command that
//! cannot start: the run goes on once the kills stop, and every line is answered.

mod common;
use common::*;

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Pids of the worker commands (`sh -c … marker`, not the adapters or the run, whose
/// arguments hold the marker too).
fn pids_with(marker: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.starts_with(b"sh\0-c\0") && String::from_utf8_lossy(&cmdline).contains(marker) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn commands_killed_during_their_start_up_do_not_fail_the_run() {
    let marker = format!("zt-slow-start-{}", std::process::id());
    let script = "sleep 0.3; while IFS= read -r l; do printf '%s\\n' \"$l\"; done";
    let mut command = zerotasq();
    command
        .args([
            "-j",
            "2",
            "--retries",
            "20",
            "--",
            "sh",
            "-c",
            script,
            &marker,
        ])
        .stdin(Stdio::piped());
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let (stop, marker) = (stop.clone(), marker.clone());
        std::thread::spawn(move || {
            let mut kills = 0;
            // Kill every start for 1.5 s: each command is killed inside its 300 ms start-up.
            for _ in 0..15 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                for pid in pids_with(&marker) {
                    // SAFETY: kills a worker command this test started (its marker).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    kills += 1;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            kills
        })
    };
    let out = run(command, numbers(200));
    stop.store(true, Ordering::Release);
    let kills = killer.join().unwrap();
    assert!(kills >= 4, "only {kills} kills");
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let expected: Vec<String> = (1..=200).map(|i| i.to_string()).collect();
    assert_eq!(out.lines(), expected);
}
