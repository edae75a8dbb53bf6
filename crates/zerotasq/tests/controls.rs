//! Controls for long-lived workers, with real worker processes: a time limit per task,
//! recycling (task count, memory), a slot, variables and a device per worker, and thread
//! limits — also under a SIGKILL storm.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::within;
use rand::seq::IndexedRandom;
use serde::{Deserialize, Serialize};
use zerotasq::{ErrorKind, Pool, Worker};

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Ask {
    /// The number back.
    Echo(u64),
    /// Never returns.
    Hang,
    /// Keeps this many MiB (touched, so resident) and returns the pid.
    Leak(u64),
    /// Sleeps this many milliseconds, returns the pid.
    Pid(u64),
    /// The slot, and these variables of the worker's environment, as `NAME=value` lines.
    Env(Vec<String>),
}

struct Controlled {
    hoard: Vec<Vec<u8>>,
}

impl Worker for Controlled {
    type Config = ();
    type Input = Ask;
    type Output = String;
    type Error = String;

    fn init(_: ()) -> Result<Self, String> {
        Ok(Controlled { hoard: Vec::new() })
    }

    fn process(&mut self, ask: Ask) -> Result<String, String> {
        let pid = std::process::id().to_string();
        match ask {
            Ask::Echo(n) => Ok(n.to_string()),
            Ask::Hang => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            Ask::Leak(mib) => {
                self.hoard.push(vec![1u8; (mib << 20) as usize]);
                Ok(pid)
            }
            Ask::Pid(ms) => {
                std::thread::sleep(Duration::from_millis(ms));
                Ok(pid)
            }
            Ask::Env(names) => {
                let mut lines = vec![format!("slot={:?}", zerotasq::worker_slot())];
                for name in names {
                    lines.push(format!(
                        "{name}={}",
                        std::env::var(&name).unwrap_or_default()
                    ));
                }
                Ok(lines.join("\n"))
            }
        }
    }
}

#[test]
fn a_hung_task_times_out_at_its_place_and_the_others_arrive_in_order() {
    let pool = Pool::<Controlled>::builder(())
        .processes(2)
        .task_timeout(Duration::from_secs(1))
        .max_retries(2)
        .build()
        .unwrap();
    let asks: Vec<Ask> = (0..40)
        .map(|i| if i == 17 { Ask::Hang } else { Ask::Echo(i) })
        .collect();
    let (out, stats) = within(Duration::from_secs(60), move || {
        let out: Vec<_> = pool.map(asks).unwrap().collect();
        (out, pool.stats())
    });
    assert_eq!(out.len(), 40);
    for (i, outcome) in out.iter().enumerate() {
        if i == 17 {
            let error = outcome.as_ref().unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
            assert!(error.message().contains("1s"), "names the limit: {error}");
        } else {
            assert_eq!(outcome.as_deref(), Ok(i.to_string().as_str()), "task {i}");
        }
    }
    assert_eq!(stats.timed_out, 2, "one try per worker it hung: {stats:?}");
}

#[test]
fn a_leaking_worker_is_replaced_and_nothing_is_lost_or_retried() {
    let pool = Pool::<Controlled>::builder(())
        .processes(1)
        .max_worker_memory(200 << 20)
        .build()
        .unwrap();
    let (pids, stats) = within(Duration::from_secs(120), move || {
        let pids: Vec<String> = pool
            .map((0..30).map(|_| Ask::Leak(20)))
            .unwrap()
            .map(|r| r.expect("no task fails"))
            .collect();
        (pids, pool.stats())
    });
    assert_eq!(pids.len(), 30);
    let distinct: BTreeSet<&String> = pids.iter().collect();
    assert!(
        distinct.len() >= 3,
        "600 MiB in 200 MiB workers: {distinct:?}"
    );
    assert_eq!((stats.workers_lost, stats.poisoned), (0, 0), "{stats:?}");
    assert!(stats.recycled >= 2, "{stats:?}");
    // One worker, tasks one at a time: each pid's tasks are one run of the stream.
    let runs = pids.windows(2).filter(|w| w[0] != w[1]).count() + 1;
    assert_eq!(runs, distinct.len(), "a pid never came back: {pids:?}");
}

#[test]
fn workers_are_recycled_every_n_tasks_and_none_is_lost() {
    let pool = Pool::<Controlled>::builder(())
        .processes(2)
        .max_tasks_per_worker(10)
        .build()
        .unwrap();
    let (pids, stats) = within(Duration::from_secs(120), move || {
        let pids: Vec<String> = pool
            .map((0..200).map(|_| Ask::Pid(1)))
            .unwrap()
            .map(|r| r.expect("no task fails"))
            .collect();
        (pids, pool.stats())
    });
    let mut per_pid: HashMap<&String, u32> = HashMap::new();
    for pid in &pids {
        *per_pid.entry(pid).or_default() += 1;
    }
    assert!(
        per_pid.len() >= 15,
        "200 tasks, ~10 each: {} pids",
        per_pid.len()
    );
    assert!(per_pid.values().all(|&n| n <= 11), "10 ± 10 %: {per_pid:?}");
    assert_eq!(stats.workers_lost, 0, "{stats:?}");
    assert!(stats.recycled >= 15, "{stats:?}");
}

/// The distinct answers to `Env`, from every worker: streams again while fewer distinct
/// answers than workers came (one still starting leaves a stream to the others).
fn environments(pool: &Pool<Controlled>, names: &[&str]) -> BTreeSet<String> {
    let workers = pool.raw().worker_pids().len().max(1);
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let asks = (0..60).map(|_| Ask::Env(names.clone()));
        let mut seen = BTreeSet::new();
        // Each Env task is instant: interleave short sleeps so every worker takes part.
        for outcome in pool.map(asks.flat_map(|a| [a, Ask::Pid(5)])).unwrap() {
            let text = outcome.unwrap();
            if text.starts_with("slot=") {
                seen.insert(text);
            }
        }
        if seen.len() >= workers || std::time::Instant::now() > until {
            return seen;
        }
    }
}

#[test]
fn each_worker_keeps_its_slot_variables_and_device_across_a_kill() {
    let pool = Pool::<Controlled>::builder(())
        .processes(2)
        .worker_env("SHARD", "shard-{slot}.bin")
        .devices(&["gpu-a", "gpu-b"])
        .build()
        .unwrap();
    let names = ["SHARD", "CUDA_VISIBLE_DEVICES", "ZEROTASQ_SLOT"];
    let expected: BTreeSet<String> = [
        "slot=Some(0)\nSHARD=shard-0.bin\nCUDA_VISIBLE_DEVICES=gpu-a\nZEROTASQ_SLOT=0",
        "slot=Some(1)\nSHARD=shard-1.bin\nCUDA_VISIBLE_DEVICES=gpu-b\nZEROTASQ_SLOT=1",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let pool = Arc::new(pool);
    let before = within(Duration::from_secs(60), {
        let pool = pool.clone();
        move || environments(&pool, &names)
    });
    assert_eq!(before, expected);
    let victim = pool.raw().worker_pids()[0];
    // SAFETY: kills one of our own worker processes.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let after = within(Duration::from_secs(60), {
        let pool = pool.clone();
        move || {
            // Its replacement first.
            while pool.raw().worker_pids().len() != 2 || pool.raw().worker_pids().contains(&victim)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            environments(&pool, &names)
        }
    });
    assert_eq!(after, expected, "the restarted worker took its slot");
    assert!(!pool.raw().worker_pids().contains(&victim));
}

#[test]
fn math_libraries_get_a_share_of_the_cores_unless_told_otherwise() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let share = (cores / 2).max(1);
    let vars = ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"];
    let default = Pool::<Controlled>::builder(())
        .processes(2)
        .build()
        .unwrap();
    let seen = within(Duration::from_secs(60), move || {
        environments(&default, &vars)
    });
    for text in &seen {
        for var in vars {
            assert!(
                text.contains(&format!("{var}={share}\n"))
                    || text.ends_with(&format!("{var}={share}")),
                "{text}"
            );
        }
    }
    let told = Pool::<Controlled>::builder(())
        .processes(2)
        .threads_per_worker(3)
        .worker_env("OMP_NUM_THREADS", "7")
        .build()
        .unwrap();
    let seen = within(Duration::from_secs(60), move || environments(&told, &vars));
    for text in &seen {
        assert!(
            text.contains("OMP_NUM_THREADS=7\n"),
            "the user's own setting wins: {text}"
        );
        assert!(text.contains("OPENBLAS_NUM_THREADS=3\n"), "{text}");
    }
}

#[test]
fn bad_settings_are_refused_when_the_pool_is_built() {
    let cases: Vec<(&str, zerotasq::PoolBuilder<Controlled>)> = vec![
        (
            "task_timeout",
            Pool::builder(()).task_timeout(Duration::ZERO),
        ),
        (
            "max_tasks_per_worker",
            Pool::builder(()).max_tasks_per_worker(0),
        ),
        ("max_worker_memory", Pool::builder(()).max_worker_memory(0)),
        (
            "max_worker_age",
            Pool::builder(()).max_worker_age(Duration::ZERO),
        ),
        (
            "unknown field {rank}",
            Pool::builder(()).worker_env("X", "{rank}"),
        ),
        ("devices", Pool::builder(()).devices::<&str>(&[])),
        (
            "threads per worker",
            Pool::builder(()).threads_per_worker(0),
        ),
    ];
    for (wanted, builder) in cases {
        let error = builder
            .processes(1)
            .build()
            .err()
            .expect("refused")
            .to_string();
        assert!(error.contains(wanted), "{wanted}: {error}");
    }
}

#[test]
fn timeouts_and_recycling_under_a_sigkill_storm_keep_every_outcome_exactly_once() {
    const N: u64 = 3_000;
    const HANGS: [u64; 2] = [700, 2100];
    let pool = Arc::new(
        Pool::<Controlled>::builder(())
            .processes(2)
            .max_retries(30)
            .task_timeout(Duration::from_millis(150))
            .max_tasks_per_worker(40)
            .restart_backoff(Duration::from_millis(10), Duration::from_millis(100))
            .build()
            .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let (stop, pool) = (stop.clone(), pool.clone());
        std::thread::spawn(move || {
            let mut kills = 0;
            let mut rng = rand::rng();
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(250));
                if let Some(pid) = pool.raw().worker_pids().choose(&mut rng) {
                    // SAFETY: kills one of our own worker processes.
                    unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
                    kills += 1;
                }
            }
            kills
        })
    };
    let (out, stats) = within(Duration::from_secs(240), {
        let pool = pool.clone();
        move || {
            let asks = (0..N).map(|i| {
                if HANGS.contains(&i) {
                    Ask::Hang
                } else {
                    Ask::Pid(1)
                }
            });
            let out: Vec<_> = pool.map(asks).unwrap().collect();
            (out, pool.stats())
        }
    });
    stop.store(true, Ordering::Release);
    let kills = killer.join().unwrap();
    assert!(kills >= 5, "only {kills} kills");
    assert_eq!(out.len() as u64, N, "one outcome per task");
    for (i, outcome) in out.iter().enumerate() {
        match outcome {
            Err(e) if HANGS.contains(&(i as u64)) => {
                assert!(
                    matches!(e.kind(), ErrorKind::Timeout | ErrorKind::WorkerLost),
                    "{e}"
                )
            }
            Ok(_) if !HANGS.contains(&(i as u64)) => {}
            other => panic!("task {i}: {other:?}"),
        }
    }
    assert!(stats.recycled > 0 && stats.timed_out > 0, "{stats:?}");
}
