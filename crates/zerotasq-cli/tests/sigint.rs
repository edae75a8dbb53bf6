//! Ctrl-C (SIGINT) mid-run: exit status 130 and no process left behind — neither the
//! adapters nor the user's commands nor what those started.

use std::process::Stdio;
use std::time::Duration;

mod common;
use common::*;

#[test]
fn sigint_leaves_no_process() {
    // Each worker starts a grandchild (sleep) and hangs on its first line.
    let worker = sh("sleep 1000 & while IFS= read -r l; do sleep 1000; done");
    let mut child = zerotasq()
        .args(["-j", "2", "--"])
        .args(worker)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, &numbers(100)).unwrap();
    let pid = child.id();
    let _guard = KillOnDrop(pid);
    // 2 adapters, 2 shells, 2 background sleeps, and the sleeps the lines started.
    let mut seen = Vec::new();
    wait_until("the workers to start", Duration::from_secs(20), || {
        seen = descendants(pid);
        seen.iter()
            .filter(|(_, cmd)| cmd.starts_with("sleep"))
            .count()
            >= 4
    });
    kill(pid, libc::SIGINT);
    let status = wait_bounded(&mut child, Duration::from_secs(20));
    drop(stdin);
    assert_eq!(status.code(), Some(130));
    wait_until(
        "every worker process to be gone",
        Duration::from_secs(10),
        || seen.iter().all(|(pid, _)| !alive(*pid)),
    );
}
