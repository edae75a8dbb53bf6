//! A frozen worker (SIGSTOP) is declared dead after `heartbeat_interval × liveness`; its
//! tasks run elsewhere. A long task is not mistaken for a dead worker: heartbeats come from
//! the worker's own I/O thread.

mod common;

use common::{alive, eventually, within, Config, Job, TestWorker};
use std::time::Duration;
use zerotasq::Pool;

#[test]
fn a_sigstopped_workers_tasks_are_redispatched_after_the_heartbeat_timeout() {
    let pool = Pool::<TestWorker>::builder(Config::default())
        .processes(2)
        .heartbeat(Duration::from_millis(100), 3)
        .build()
        .unwrap();
    let marker = std::env::temp_dir().join(format!("zerotasq-holder-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let (out, stats, frozen) = within(Duration::from_secs(60), move || {
        // Task 0 names the worker that holds it; that worker is frozen mid-task, so it
        // certainly dies with a task in flight.
        let jobs = std::iter::once(Job::Announce(0, 1_000, marker.clone()))
            .chain((1..40).map(|i| Job::Sleep(i, 20)));
        // The stream sends tasks as it is read, so the freezing happens beside the reading.
        let freezer = std::thread::spawn({
            let marker = marker.clone();
            move || {
                let holder = || std::fs::read_to_string(&marker).ok()?.parse::<i32>().ok();
                assert!(eventually(Duration::from_secs(30), || holder().is_some()));
                let victim = holder().unwrap();
                // SAFETY: freezes one of our own worker processes.
                unsafe { libc::kill(victim, libc::SIGSTOP) };
                victim as u32
            }
        });
        let out: Vec<u64> = pool.map(jobs).unwrap().map(|r| r.unwrap()).collect();
        let victim = freezer.join().unwrap();
        let _ = std::fs::remove_file(&marker);
        (out, pool.stats(), victim)
    });
    assert_eq!(out, (0..40).collect::<Vec<_>>());
    assert!(stats.workers_lost >= 1, "{stats:?}");
    assert!(stats.requeued >= 1, "{stats:?}");
    // The supervisor killed the frozen worker (SIGKILL works on stopped processes).
    assert!(eventually(Duration::from_secs(5), || !alive(frozen)));
}

#[test]
fn a_task_longer_than_the_heartbeat_timeout_is_not_taken_for_a_dead_worker() {
    let pool = Pool::<TestWorker>::builder(Config::default())
        .processes(1)
        .heartbeat(Duration::from_millis(50), 3)
        .build()
        .unwrap();
    let (results, stats) = within(Duration::from_secs(30), move || {
        let out: Vec<_> = pool
            .map(vec![Job::Sleep(1, 1_000), Job::Spin(2, 500_000)])
            .unwrap()
            .collect();
        (out, pool.stats())
    });
    assert_eq!(
        results.into_iter().map(|r| r.unwrap()).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(stats.workers_lost, 0, "{stats:?}");
}
