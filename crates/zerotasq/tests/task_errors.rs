//! A task that panics or returns an error yields an error outcome at its place; the worker
//! lives on and the rest of the stream completes.

mod common;

use common::{within, Config, Job, TestWorker};
use std::time::Duration;
use zerotasq::{ErrorKind, Pool};

#[test]
fn a_panicking_task_gives_an_error_at_its_place_with_a_backtrace() {
    let out = within(Duration::from_secs(60), || {
        let pool = Pool::<TestWorker>::builder(Config::default())
            .processes(2)
            .build()
            .unwrap();
        let jobs = (0..1_000).map(|i| {
            if i == 500 {
                Job::Panic("boom 500".into())
            } else {
                Job::Echo(i)
            }
        });
        pool.map(jobs).unwrap().collect::<Vec<_>>()
    });
    assert_eq!(out.len(), 1_000);
    for (i, outcome) in out.iter().enumerate() {
        if i == 500 {
            let e = outcome.as_ref().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Panicked);
            assert!(e.message().contains("boom 500"), "{e}");
            assert!(
                e.detail().contains("process"),
                "backtrace names the frame: {}",
                e.detail()
            );
        } else {
            assert_eq!(outcome.as_ref().unwrap(), &(i as u64));
        }
    }
}

#[test]
fn an_err_from_process_is_an_error_outcome_and_the_worker_survives() {
    let pool = Pool::<TestWorker>::builder(Config::default())
        .processes(1)
        .build()
        .unwrap();
    let jobs = vec![Job::Pid, Job::Fail("bad input".into()), Job::Pid];
    let out: Vec<_> = within(Duration::from_secs(30), move || {
        pool.map(jobs).unwrap().collect::<Vec<_>>()
    });
    let e = out[1].as_ref().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Failed);
    assert_eq!(e.message(), "bad input");
    assert_eq!(
        out[0].as_ref().unwrap(),
        out[2].as_ref().unwrap(),
        "same worker process before and after"
    );
}

#[test]
fn thread_workers_survive_panics_too() {
    let pool = Pool::<TestWorker>::builder(Config::default())
        .threads(2)
        .build()
        .unwrap();
    let jobs = (0..200).map(|i| {
        if i % 10 == 0 {
            Job::Panic(format!("p{i}"))
        } else {
            Job::Echo(i)
        }
    });
    let out: Vec<_> = pool.map(jobs).unwrap().collect();
    for (i, outcome) in out.iter().enumerate() {
        assert_eq!(outcome.is_err(), i % 10 == 0, "task {i}: {outcome:?}");
    }
}
