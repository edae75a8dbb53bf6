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
