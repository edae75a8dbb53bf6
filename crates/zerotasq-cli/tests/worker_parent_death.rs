//! `zerotasq worker` SIGKILLed while its broker lives on: the adapters it started, and their
//! commands, go with it — even when it was started with SIGTERM ignored, which its children
//! inherit. Nothing else would end them: the broker still answers their heartbeats.

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

mod common;
use common::broker::{bin, broker, keygen, Guard, TempDir, DOUBLE};
use common::{alive, descendants, kill, wait_until, KillOnDrop};

#[test]
fn sigkill_of_zerotasq_worker_takes_its_adapters_along_even_with_sigterm_ignored() {
    let dir = TempDir::new("worker-parent-death");
    keygen(&dir, "worker");
    let (_broker, _clients, workers) = broker(&dir, &["worker"]);
    let mut command = bin();
    command
        .args(["worker", "--connect", &workers, "--server-key"])
        .arg(dir.path("broker.key"))
        .arg("--key")
        .arg(dir.path("worker.key_secret"))
        .args(["-j", "2", "--", "sh", "-c", DOUBLE])
        .stderr(Stdio::null());
    // SAFETY: signal(2) is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut worker = Guard(command.spawn().unwrap());
    let pid = worker.0.id();
    // 2 adapters, each with its shell.
    let mut started = Vec::new();
    wait_until(
        "the adapters and their shells",
        Duration::from_secs(20),
        || {
            started = descendants(pid);
            started
                .iter()
                .filter(|(_, cmd)| cmd.starts_with("sh"))
                .count()
                >= 2
        },
    );
    // Should the test fail, what it started does not outlive it.
    let _cleanup: Vec<KillOnDrop> = started.iter().map(|&(pid, _)| KillOnDrop(pid)).collect();
    kill(pid, libc::SIGKILL);
    worker.0.wait().unwrap();
    wait_until(
        "every process zerotasq worker started to be gone",
        Duration::from_secs(10),
        || started.iter().all(|(pid, _)| !alive(*pid)),
    );
}
