//! A worker whose `init` always fails ends in an error outcome for every task: no hang. A
//! pool whose inits failed runs tasks again once one succeeds, and workers killed from
//! outside while they start are not init failures.

mod common;

use common::{within, Config, Job, TestWorker};
use rand::seq::IndexedRandom;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zerotasq::{ErrorKind, Pool};

#[test]
fn an_init_that_always_fails_gives_errors_not_a_hang() {
    let out = within(Duration::from_secs(60), || {
        let pool = Pool::<TestWorker>::builder(Config {
            fail_init: Some("model file missing".into()),
            ..Config::default()
        })
        .processes(2)
        .restart_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .build()
        .unwrap();
        pool.map((0..10).map(Job::Echo))
            .unwrap()
            .collect::<Vec<_>>()
    });
    assert_eq!(out.len(), 10);
    for outcome in out {
        let e = outcome.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InitFailed);
        assert!(e.message().contains("model file missing"), "{e}");
    }
}

#[test]
fn thread_workers_whose_init_fails_also_end_in_errors() {
    let out = within(Duration::from_secs(60), || {
        let pool = Pool::<TestWorker>::builder(Config {
            fail_init: Some("no gpu".into()),
            ..Config::default()
        })
        .threads(1)
        .restart_backoff(Duration::from_millis(10), Duration::from_millis(20))
        .build()
        .unwrap();
        pool.map((0..3).map(Job::Echo)).unwrap().collect::<Vec<_>>()
    });
    assert!(out
        .iter()
        .all(|o| o.as_ref().is_err_and(|e| e.message().contains("no gpu"))));
}

#[test]
fn a_pool_whose_inits_failed_runs_tasks_again_once_an_init_succeeds() {
    let marker = std::env::temp_dir().join(format!("zerotasq-no-model-{}", std::process::id()));
    std::fs::write(&marker, b"").unwrap();
    let pool = Pool::<TestWorker>::builder(Config {
        fail_while: Some(marker.clone()),
        ..Config::default()
    })
    .processes(2)
    .restart_backoff(Duration::from_millis(10), Duration::from_millis(200))
    .build()
    .unwrap();
    let pool = Arc::new(pool);
    let failed = within(Duration::from_secs(60), {
        let pool = pool.clone();
        move || pool.map((0..5).map(Job::Echo)).unwrap().collect::<Vec<_>>()
    });
    assert!(
        failed
            .iter()
            .all(|o| o.as_ref().is_err_and(|e| e.kind() == ErrorKind::InitFailed)),
        "while no init can succeed, tasks fail: {failed:?}"
    );
    std::fs::remove_file(&marker).unwrap();
    let ok = within(Duration::from_secs(60), {
        let pool = pool.clone();
        move || {
            // The pool recovers as soon as a restarted worker is ready.
            let until = Instant::now() + Duration::from_secs(30);
            loop {
                let out: Vec<_> = pool.map((0..5).map(Job::Echo)).unwrap().collect();
                if out.iter().all(|o| o.is_ok()) || Instant::now() > until {
                    return out;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
    assert_eq!(
        ok.into_iter().map(|o| o.unwrap()).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
}

/// Kills a random worker of `pool` every `every`, sparing those younger than `min_age`
/// (seen by pid); returns the kills when `stop` is set.
fn kill_storm(
    pool: Arc<Pool<TestWorker>>,
    every: Duration,
    min_age: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let mut rng = rand::rng();
        let mut first_seen = std::collections::HashMap::new();
        let mut kills = 0;
        while !stop.load(Ordering::Acquire) {
            std::thread::sleep(every);
            let now = Instant::now();
            let pids = pool.raw().worker_pids();
            for pid in &pids {
                first_seen.entry(*pid).or_insert(now);
            }
            let old: Vec<u32> = pids
                .into_iter()
                .filter(|p| now.duration_since(first_seen[p]) >= min_age)
                .collect();
            if let Some(pid) = old.choose(&mut rng) {
                // SAFETY: kills one of our own worker processes.
                unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
                kills += 1;
            }
        }
        kills
    })
}

#[test]
fn workers_killed_while_they_start_are_not_init_failures() {
    // A 150 ms init and a kill every 100 ms: many kills land during init.
    let pool = Arc::new(
        Pool::<TestWorker>::builder(Config {
            init_ms: 150,
            ..Config::default()
        })
        .processes(2)
        .max_retries(50)
        .restart_backoff(Duration::from_millis(10), Duration::from_millis(100))
        .build()
        .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let killer = kill_storm(
        pool.clone(),
        Duration::from_millis(100),
        Duration::ZERO,
        stop.clone(),
    );
    let out: Vec<_> = within(Duration::from_secs(180), {
        let pool = pool.clone();
        move || {
            pool.map((0..600).map(|i| Job::Sleep(i, 5)))
                .unwrap()
                .collect()
        }
    });
    stop.store(true, Ordering::Release);
    assert!(killer.join().unwrap() >= 5);
    let failed: Vec<_> = out.iter().filter(|o| o.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    // And the pool is still alive for the next stream.
    let again: Vec<_> = pool.map((0..10).map(Job::Echo)).unwrap().collect();
    assert!(again.iter().all(|o| o.is_ok()), "{again:?}");
}

#[test]
fn a_worker_killed_after_it_started_is_replaced_without_a_growing_back_off() {
    // Each kill hits a worker that had started: its replacement comes after the first
    // back-off step (100 ms), not after one doubled per kill (100 ms × 2^n, 5 s at most).
    let pool = Arc::new(
        Pool::<TestWorker>::builder(Config::default())
            .processes(1)
            .restart_backoff(Duration::from_millis(100), Duration::from_secs(5))
            .build()
            .unwrap(),
    );
    let mut gaps = Vec::new();
    for _ in 0..6 {
        let pid = within(Duration::from_secs(30), {
            let pool = pool.clone();
            move || pool.map([Job::Pid]).unwrap().next().unwrap().unwrap()
        });
        // SAFETY: kills our own worker process.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let killed = Instant::now();
        within(Duration::from_secs(30), {
            let pool = pool.clone();
            move || {
                while pool.map([Job::Pid]).unwrap().next().unwrap().unwrap() == pid {}
            }
        });
        gaps.push(killed.elapsed());
    }
    assert!(
        gaps.iter().all(|g| *g < Duration::from_millis(1500)),
        "{gaps:?}"
    );
}
