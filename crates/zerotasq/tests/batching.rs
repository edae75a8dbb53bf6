//! Batched inference with real worker processes: `process_batch` gets batches of up to
//! `max_batch_size` formed from what is queued; each request keeps its place and its own
//! outcome, through failures, wrong answers, kills and poison requests; `batch_wait` waits
//! for fuller batches, but never at the end of the input.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::within;
use rand::seq::IndexedRandom;
use serde::{Deserialize, Serialize};
use zerotasq::{ErrorKind, Pool, Worker};

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Req {
    /// Answered with the request's number and the size of the batch it came in.
    Num(u64),
    /// The whole batch panics, naming its members.
    Boom(u64),
    /// The batch returns one result too few.
    Short(u64),
    /// Kills the worker process (a poison request).
    Die,
}

/// `(number, batch size)`.
type Answer = (u64, usize);

struct Model;

impl Worker for Model {
    type Config = u64; // milliseconds per batch
    type Input = Req;
    type Output = Answer;
    type Error = String;

    fn init(_: u64) -> Result<Self, String> {
        Ok(Model)
    }

    fn process(&mut self, _: Req) -> Result<Answer, String> {
        unreachable!("a batching pool calls process_batch")
    }

    fn process_batch(&mut self, inputs: Vec<Req>) -> Vec<Result<Answer, String>> {
        let size = inputs.len();
        let numbers: Vec<u64> = inputs
            .iter()
            .map(|r| match r {
                Req::Num(n) | Req::Boom(n) | Req::Short(n) => *n,
                Req::Die => u64::MAX,
            })
            .collect();
        if inputs.iter().any(|r| matches!(r, Req::Die)) {
            std::process::abort();
        }
        if inputs.iter().any(|r| matches!(r, Req::Boom(_))) {
            panic!("batch {numbers:?} blew up");
        }
        std::thread::sleep(Duration::from_millis(2));
        let mut out: Vec<_> = numbers.iter().map(|&n| Ok((n, size))).collect();
        if inputs.iter().any(|r| matches!(r, Req::Short(_))) {
            out.pop();
        }
        out
    }
}

fn pool(max: u32) -> zerotasq::PoolBuilder<Model> {
    Pool::<Model>::builder(0).processes(2).max_batch_size(max)
}

#[test]
fn batches_hold_several_requests_never_more_than_the_maximum_and_keep_input_order() {
    let pool = pool(8).build().unwrap();
    let (out, status) = within(Duration::from_secs(60), move || {
        let out: Vec<Answer> = pool
            .map((0..400).map(Req::Num))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        (out, pool.status().unwrap())
    });
    let numbers: Vec<u64> = out.iter().map(|&(n, _)| n).collect();
    assert_eq!(numbers, (0..400).collect::<Vec<_>>(), "input order");
    let sizes: BTreeSet<usize> = out.iter().map(|&(_, s)| s).collect();
    assert!(sizes.iter().all(|&s| (1..=8).contains(&s)), "{sizes:?}");
    assert!(sizes.iter().any(|&s| s > 1), "batches formed: {sizes:?}");
    assert!(
        status.workers.iter().all(|w| w.max_batch == 8),
        "{:?}",
        status.workers
    );
    assert!(
        status.workers.iter().any(|w| w.mean_batch > 1.0),
        "{:?}",
        status.workers
    );
}

#[test]
fn a_failing_batch_fails_exactly_its_own_requests() {
    let pool = pool(8).build().unwrap();
    let reqs = (0..200).map(|i| if i == 77 { Req::Boom(i) } else { Req::Num(i) });
    let out: Vec<_> = within(Duration::from_secs(60), move || {
        pool.map(reqs).unwrap().collect()
    });
    let failed: Vec<usize> = (0..out.len()).filter(|&i| out[i].is_err()).collect();
    assert!(failed.contains(&77));
    // Every failed request names the batch it was in; that batch is exactly the failures.
    let message = out[77].as_ref().unwrap_err().message().to_string();
    let members: BTreeSet<usize> = message
        .split(['[', ']'])
        .nth(1)
        .unwrap()
        .split(", ")
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(members, failed.iter().copied().collect(), "{message}");
    for i in &failed {
        assert_eq!(out[*i].as_ref().unwrap_err().kind(), ErrorKind::Panicked);
    }
    assert!(out
        .iter()
        .enumerate()
        .all(|(i, o)| o.is_err() || o.as_ref().unwrap().0 == i as u64));
}

#[test]
fn a_wrong_length_answer_is_an_error_for_each_request_naming_both_lengths() {
    let pool = pool(8).build().unwrap();
    let reqs = (0..100).map(|i| if i == 50 { Req::Short(i) } else { Req::Num(i) });
    let out: Vec<_> = within(Duration::from_secs(60), move || {
        pool.map(reqs).unwrap().collect()
    });
    let error = out[50].as_ref().unwrap_err();
    assert!(error.message().contains("results for"), "{error}");
    let failed = out.iter().filter(|o| o.is_err()).count();
    assert!(
        error.message().contains(&format!(
            "returned {} results for {failed} inputs",
            failed - 1
        )),
        "{error}"
    );
    assert!(out
        .iter()
        .enumerate()
        .all(|(i, o)| o.is_err() || o.as_ref().unwrap().0 == i as u64));
}

#[test]
fn a_poison_request_inside_batches_ends_alone_and_the_rest_complete() {
    let pool = pool(8).max_retries(3).build().unwrap();
    let reqs = (0..300).map(|i| if i == 123 { Req::Die } else { Req::Num(i) });
    let out: Vec<_> = within(Duration::from_secs(120), move || {
        pool.map(reqs).unwrap().collect()
    });
    for (i, outcome) in out.iter().enumerate() {
        if i == 123 {
            assert_eq!(outcome.as_ref().unwrap_err().kind(), ErrorKind::WorkerLost);
        } else {
            assert_eq!(outcome.as_ref().map(|a| a.0), Ok(i as u64), "request {i}");
        }
    }
}

#[test]
fn sigkill_during_batches_keeps_every_outcome_exactly_once() {
    const N: u64 = 5_000;
    let pool = Arc::new(
        pool(16)
            .max_retries(20)
            .restart_backoff(Duration::from_millis(10), Duration::from_millis(100))
            .build()
            .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let (stop, pool) = (stop.clone(), pool.clone());
        std::thread::spawn(move || {
            let mut rng = rand::rng();
            let mut kills = 0;
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(150));
                if let Some(pid) = pool.raw().worker_pids().choose(&mut rng) {
                    // SAFETY: kills one of our own worker processes.
                    unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
                    kills += 1;
                }
            }
            kills
        })
    };
    let out: Vec<u64> = within(Duration::from_secs(240), {
        let pool = pool.clone();
        move || {
            pool.map((0..N).map(Req::Num))
                .unwrap()
                .map(|r| r.expect("no request fails").0)
                .collect()
        }
    });
    stop.store(true, Ordering::Release);
    assert!(killer.join().unwrap() >= 3);
    assert_eq!(out, (0..N).collect::<Vec<_>>());
    assert!(pool.stats().requeued > 0);
}

#[test]
fn batch_wait_makes_fuller_batches_from_a_trickle() {
    // Requests arrive one by one, every 5 ms: without a wait each goes alone to a free
    // worker; with one, a batch gathers what arrives meanwhile.
    fn mean_batch(wait: Option<Duration>) -> f64 {
        let mut builder = pool(16).processes(1);
        if let Some(wait) = wait {
            builder = builder.batch_wait(wait);
        }
        let pool = builder.build().unwrap();
        let connector = Arc::new(pool.connector(true).unwrap());
        let feeder = {
            let connector = connector.clone();
            std::thread::spawn(move || {
                for i in 0..60 {
                    connector.send(Req::Num(i)).unwrap();
                    std::thread::sleep(Duration::from_millis(5));
                }
                connector.finish();
            })
        };
        let sizes: Vec<usize> = std::iter::from_fn(|| connector.recv())
            .map(|r| r.unwrap().1)
            .collect();
        feeder.join().unwrap();
        assert_eq!(sizes.len(), 60);
        sizes.iter().sum::<usize>() as f64 / sizes.len() as f64
    }
    let (none, waited) = within(Duration::from_secs(60), || {
        (
            mean_batch(None),
            mean_batch(Some(Duration::from_millis(60))),
        )
    });
    assert!(none < 2.0, "no wait: {none}");
    assert!(
        waited >= 4.0,
        "a 60 ms wait gathers ~12 of a 5 ms trickle: {waited} (vs {none})"
    );
}

#[test]
fn batch_wait_is_never_waited_out_at_the_end_of_the_input() {
    let pool = pool(64)
        .batch_wait(Duration::from_secs(30))
        .build()
        .unwrap();
    let started = Instant::now();
    let out: Vec<_> = within(Duration::from_secs(60), move || {
        pool.map((0..5).map(Req::Num))
            .unwrap()
            .map(|r| r.unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(out.len(), 5);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn bad_batch_settings_are_refused() {
    let error = pool(0).build().err().unwrap().to_string();
    assert!(error.contains("max_batch_size"), "{error}");
    let error = Pool::<Model>::builder(0)
        .batch_wait(Duration::from_millis(5))
        .build()
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("batch_wait needs max_batch_size"), "{error}");
}
