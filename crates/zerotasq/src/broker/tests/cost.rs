//! What the state machine alone costs per task, with no sockets: tiny tasks on 2 workers,
//! and 10 ms tasks on 2, 16, 128 and 1,000 workers with one batch answered per loop
//! iteration (a broker woken by each message), so that work growing with the number of
//! workers shows instead of being spread over many messages. Thread CPU time, so other
//! load on the machine matters little. A measurement, not a check; run it in release:
//!
//!     cargo test -p zerotasq --release --lib broker::tests::cost -- --ignored --nocapture

use std::collections::VecDeque;

use super::*;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One iteration of the broker thread's loop after its events, as `broker_loop` runs it.
/// Batches sent to workers join `sent`; the outcomes delivered are counted.
fn iteration(b: &mut Broker, now: Instant, sent: &mut VecDeque<(String, Vec<u64>)>) -> u64 {
    b.tick(now);
    b.flush(now);
    let mut done = 0;
    for (route, frames) in b.outbox() {
        match (route, Message::decode(&frames)) {
            (Route::Worker(w), Ok(Message::Tasks(batch))) => {
                let ids = batch.iter().map(|(id, _)| id).collect();
                sent.push_back((String::from_utf8(w).unwrap(), ids));
            }
            (Route::Client(_), Ok(Message::Results(batch))) => done += batch.len() as u64,
            _ => {}
        }
    }
    std::hint::black_box(b.stats());
    std::hint::black_box(b.next_wakeup(now));
    done
}

/// `total` tasks of `task_us` each through `workers` workers, answering at most `answers`
/// batches (oldest first) per loop iteration: the broker's CPU per task.
fn run(workers: usize, total: u64, task_us: u64, answers: usize) -> Duration {
    let t = Instant::now();
    let mut b = Broker::new(BrokerConfig::default(), t);
    for i in 0..workers {
        ready(&mut b, &format!("w{i}"), 2, t);
    }
    let window = (4 * workers as u64).max(1024);
    let step = Duration::from_micros(task_us) / workers as u32;
    let (mut submitted, mut done, mut now) = (0, 0, t);
    let mut sent: VecDeque<(String, Vec<u64>)> = VecDeque::new();
    let cpu = thread_cpu();
    while done < total {
        if submitted < total && submitted - done < window / 2 {
            let n = (window - (submitted - done)).min(total - submitted);
            submit(&mut b, "c", submitted..submitted + n, now);
            submitted += n;
        }
        for _ in 0..answers {
            let Some((worker, ids)) = sent.pop_front() else {
                break;
            };
            results(&mut b, &worker, &ids, task_us * ids.len() as u64, now);
        }
        done += iteration(&mut b, now, &mut sent);
        now += step;
    }
    assert_eq!(b.stats().workers_alive, workers, "no worker expired");
    (thread_cpu() - cpu) / total as u32
}

#[test]
#[ignore = "a measurement; run in release with --ignored --nocapture"]
fn cost() {
    let tiny = run(2, 1_000_000, 1, usize::MAX);
    println!("tiny tasks, 2 workers, all answered each iteration: {tiny:>8.2?} per task");
    let base = run(2, 20_000, 10_000, 1);
    for workers in [2, 16, 128, 1000] {
        let per_task = if workers == 2 {
            base
        } else {
            run(workers, 20_000, 10_000, 1)
        };
        println!(
            "10 ms tasks, {workers:>4} workers, one batch per iteration: {per_task:>8.2?} per \
             task = {:.2}× 2 workers",
            per_task.as_secs_f64() / base.as_secs_f64()
        );
    }
}
