//! Outcomes come back in input order with `map`, and each exactly once with
//! `map_unordered`, through real worker processes.

mod common;

use common::{Config, Job, TestWorker};
use zerotasq::Pool;

#[test]
fn ordered_output_equals_input_order() {
    let pool = Pool::<TestWorker>::builder(Config::default())
        .processes(2)
        .build()
        .unwrap();
    let out: Vec<u64> = pool
        .map((0..20_000).map(Job::Echo))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(out, (0..20_000).collect::<Vec<_>>());
}

#[test]
fn unordered_yields_each_id_exactly_once() {
    let pool = Pool::<TestWorker>::builder(Config::default())
        .processes(2)
        .build()
        .unwrap();
    // Uneven task lengths so completion order differs from input order.
    let jobs = (0..2_000).map(|i| {
        if i % 50 == 0 {
            Job::Sleep(i, 5)
        } else {
            Job::Echo(i)
        }
    });
    let mut out: Vec<u64> = pool
        .map_unordered(jobs)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let in_order = out.windows(2).all(|w| w[0] < w[1]);
    out.sort_unstable();
    assert_eq!(out, (0..2_000).collect::<Vec<_>>());
    assert!(!in_order, "slow tasks should have been overtaken");
}

#[test]
fn thread_workers_serve_the_same_stream() {
    let pool = Pool::<TestWorker>::builder(Config::default())
        .threads(3)
        .build()
        .unwrap();
    let out: Vec<u64> = pool
        .map((0..5_000).map(Job::Echo))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(out, (0..5_000).collect::<Vec<_>>());
}

#[test]
fn empty_input_yields_nothing() {
    let pool = Pool::<TestWorker>::builder(Config::default())
        .processes(1)
        .build()
        .unwrap();
    assert_eq!(pool.map(std::iter::empty()).unwrap().count(), 0);
}

#[test]
fn indexed_unordered_outcomes_name_their_input() {
    let pool = Pool::<TestWorker>::builder(Config::default())
        .processes(2)
        .build()
        .unwrap();
    let jobs = (0..300).map(|i| {
        if i % 30 == 0 {
            Job::Fail(format!("bad {i}"))
        } else {
            Job::Echo(i)
        }
    });
    let mut seen = Vec::new();
    for (index, outcome) in pool.map_unordered(jobs).unwrap().indexed() {
        match outcome {
            Ok(n) => assert_eq!(n, index),
            Err(e) => assert_eq!(e.message(), format!("bad {index}")),
        }
        seen.push(index);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..300).collect::<Vec<_>>());
}

#[test]
fn next_timeout_gives_up_without_losing_the_outcome() {
    let pool = Pool::<TestWorker>::builder(Config::default())
        .processes(1)
        .build()
        .unwrap();
    let mut stream = pool.map(vec![Job::Sleep(7, 400)]).unwrap();
    assert_eq!(
        stream.next_timeout(std::time::Duration::from_millis(50)),
        Err(zerotasq::TimedOut)
    );
    let outcome = stream
        .next_timeout(std::time::Duration::from_secs(20))
        .unwrap();
    assert_eq!(outcome.unwrap().unwrap(), 7);
    assert_eq!(
        stream.next_timeout(std::time::Duration::from_secs(1)),
        Ok(None)
    );
}
