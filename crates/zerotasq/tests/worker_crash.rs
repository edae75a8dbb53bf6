//! Worker processes killed from outside (as by the OOM killer) or by their own task cost
//! nothing: every task's outcome arrives exactly once, in order.

mod common;

use common::{within, Config, Job, TestWorker};
use rand::seq::IndexedRandom;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use zerotasq::{ErrorKind, Pool};

#[test]
fn sigkill_every_100ms_loses_and_duplicates_nothing() {
    const N: u64 = 20_000;
    let pool = Arc::new(
        Pool::<TestWorker>::builder(Config::default())
            .processes(2)
            .max_retries(20)
            .restart_backoff(Duration::from_millis(10), Duration::from_millis(100))
            .build()
            .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        let pids = pool.clone();
        std::thread::spawn(move || {
            let mut kills = 0;
            let mut rng = rand::rng();
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(100));
                if let Some(pid) = pids.raw().worker_pids().choose(&mut rng) {
                    // SAFETY: kills one of our own worker processes.
                    unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
                    kills += 1;
                }
            }
            kills
        })
    };
    let out: Vec<u64> = within(Duration::from_secs(240), move || {
        let out = pool
            .map((0..N).map(|i| Job::Spin(i, 150)))
            .unwrap()
            .map(|r| r.expect("no task may fail"))
            .collect::<Vec<_>>();
        let stats = pool.stats();
        assert!(stats.requeued > 0, "kills re-queued tasks: {stats:?}");
        out
    });
    stop.store(true, Ordering::Release);
    let kills = killer.join().unwrap();
    assert!(kills >= 5, "only {kills} kills happened");
    assert_eq!(out, (0..N).collect::<Vec<_>>());
}

#[test]
fn a_poison_task_becomes_an_error_after_max_retries_and_the_rest_complete() {
    let out = within(Duration::from_secs(60), || {
        let pool = Pool::<TestWorker>::builder(Config::default())
            .processes(2)
            .max_retries(3)
            .restart_backoff(Duration::from_millis(10), Duration::from_millis(50))
            .build()
            .unwrap();
        let jobs = (0..1_000).map(|i| if i == 100 { Job::Die } else { Job::Echo(i) });
        let out: Vec<_> = pool.map(jobs).unwrap().collect();
        (out, pool.stats())
    });
    let (out, stats) = out;
    assert_eq!(out.len(), 1_000);
    for (i, outcome) in out.iter().enumerate() {
        if i == 100 {
            let e = outcome.as_ref().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::WorkerLost, "{e}");
            assert!(e.message().contains("3 workers"), "{e}");
        } else {
            assert_eq!(outcome.as_ref().unwrap(), &(i as u64));
        }
    }
    assert_eq!(stats.poisoned, 1);
    assert!(stats.workers_lost >= 3);
}
