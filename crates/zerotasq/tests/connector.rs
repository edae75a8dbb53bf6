//! The seed's Connector: one thread sends, another receives, with blocking calls and a
//! bounded window.

mod common;

use common::{within, Config, Job, TestWorker};
use std::time::Duration;
use zerotasq::Pool;

#[test]
fn send_and_recv_from_two_threads_in_order() {
    let out = within(Duration::from_secs(60), || {
        let pool = Pool::<TestWorker>::builder(Config::default())
            .processes(2)
            .window(16)
            .build()
            .unwrap();
        let conn = pool.connector(true).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..1_000 {
                    conn.send(Job::Echo(i)).unwrap();
                }
                conn.finish();
            });
            let mut out = Vec::new();
            while let Some(outcome) = conn.recv() {
                out.push(outcome.unwrap());
            }
            out
        })
    });
    assert_eq!(out, (0..1_000).collect::<Vec<_>>());
}

#[test]
fn unordered_connector_delivers_every_task_once() {
    let mut out = within(Duration::from_secs(60), || {
        let pool = Pool::<TestWorker>::builder(Config::default())
            .processes(2)
            .build()
            .unwrap();
        let conn = pool.connector(false).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..500 {
                    conn.send(if i % 7 == 0 {
                        Job::Sleep(i, 2)
                    } else {
                        Job::Echo(i)
                    })
                    .unwrap();
                }
                conn.finish();
            });
            std::iter::from_fn(|| conn.recv())
                .map(|r| r.unwrap())
                .collect::<Vec<_>>()
        })
    });
    out.sort_unstable();
    assert_eq!(out, (0..500).collect::<Vec<_>>());
}

#[test]
fn send_blocks_while_the_window_is_full() {
    let pool = Pool::<TestWorker>::builder(Config::default())
        .processes(1)
        .window(4)
        .build()
        .unwrap();
    let conn = pool.connector(true).unwrap();
    for i in 0..4 {
        conn.send(Job::Echo(i)).unwrap();
    }
    std::thread::scope(|s| {
        let blocked = s.spawn(|| conn.send(Job::Echo(4)).unwrap());
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !blocked.is_finished(),
            "a fifth send must wait for a receive"
        );
        assert_eq!(conn.recv().unwrap().unwrap(), 0);
        blocked.join().unwrap();
    });
    conn.finish();
    let rest: Vec<u64> = std::iter::from_fn(|| conn.recv())
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rest, vec![1, 2, 3, 4]);
}
