//! A worker whose `init` always fails ends in an error outcome for every task: no hang.

mod common;

use common::{within, Config, Job, TestWorker};
use std::time::Duration;
use zerotasq::{ErrorKind, Pool};

#[test]
fn an_init_that_always_fails_gives_errors_not_a_hang() {
    let out = within(Duration::from_secs(60), || {
        let pool = Pool::<TestWorker>::builder(Config {
            fail_init: Some("model file missing".into()),
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
