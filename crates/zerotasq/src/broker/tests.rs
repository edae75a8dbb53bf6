//! The broker's rules, driven with fake time and no sockets.

use super::clients::short_hex;
use super::startup::REASON_GRACE;
use super::*;
use crate::protocol::{IdList, Ready, ResultBatch, ResultBatchWriter, TaskBatchWriter};
use crate::status::WorkerState;

fn broker() -> Broker {
    broker_at(Instant::now())
}

fn broker_at(now: Instant) -> Broker {
    Broker::new(
        BrokerConfig {
            heartbeat_interval: Duration::from_millis(100),
            liveness: 3,
            max_retries: 3,
            ..BrokerConfig::default()
        },
        now,
    )
}

fn ready(b: &mut Broker, worker: &str, capacity: u32, now: Instant) {
    let frames = Message::Ready(Ready {
        capacity,
        pid: 1,
        host: "h",
        max_batch: 0,
        batch_wait_us: 0,
    })
    .encode();
    b.on_worker(worker.as_bytes(), &frames, now);
}

fn submit(b: &mut Broker, client: &str, ids: impl IntoIterator<Item = u64>, now: Instant) {
    let mut w = TaskBatchWriter::new();
    for id in ids {
        w.push(id, &id.to_le_bytes());
    }
    b.on_client(
        client.as_bytes(),
        &[header(Command::Submit).to_vec(), w.finish()],
        now,
    );
}

/// Drains the outbox: (worker, broker task ids, client task ids decoded from payloads).
fn sent_tasks(b: &mut Broker, now: Instant) -> Vec<(String, Vec<u64>, Vec<u64>)> {
    b.flush(now);
    let mut out = Vec::new();
    for (route, frames) in b.outbox() {
        if let (Route::Worker(id), Ok(Message::Tasks(batch))) = (&route, Message::decode(&frames)) {
            let (ids, payloads) = batch
                .iter()
                .map(|(id, p)| (id, u64::from_le_bytes(p.try_into().unwrap())))
                .unzip();
            out.push((String::from_utf8(id.clone()).unwrap(), ids, payloads));
        }
    }
    out
}

/// Drains the outbox: outcomes per client as (client id, Ok(payload) / Err(kind)).
fn delivered(b: &mut Broker, now: Instant) -> Vec<(String, u64, Result<Vec<u8>, ErrorKind>)> {
    b.flush(now);
    let mut out = Vec::new();
    for (route, frames) in b.outbox() {
        if let Route::Client(client) = route {
            let Ok(Message::Results(batch)) = Message::decode(&frames) else {
                continue;
            };
            for (id, outcome) in batch.iter() {
                let value = match outcome {
                    Outcome::Ok(bytes) => Ok(bytes.to_vec()),
                    Outcome::Err(bytes) => Err(WireError::decode(bytes).unwrap().kind),
                };
                out.push((String::from_utf8(client.clone()).unwrap(), id, value));
            }
        }
    }
    out
}

fn results(b: &mut Broker, worker: &str, ids: &[u64], busy_us: u64, now: Instant) {
    let mut w = ResultBatchWriter::new();
    for id in ids {
        w.push_ok(*id, b"ok");
    }
    let body = w.finish(busy_us);
    ResultBatch::parse(&body).unwrap();
    b.on_worker(
        worker.as_bytes(),
        &[header(Command::Results).to_vec(), body],
        now,
    );
}

#[test]
fn least_recently_used_worker_is_fed_first() {
    let t = Instant::now();
    let mut b = broker();
    ready(&mut b, "w1", 1, t);
    ready(&mut b, "w2", 1, t);
    submit(&mut b, "c", [0, 1, 2], t);
    let sent = sent_tasks(&mut b, t);
    assert_eq!(
        sent.len(),
        2,
        "each worker has credit for one task: {sent:?}"
    );
    assert_eq!(sent[0].0, "w1");
    assert_eq!(sent[1].0, "w2");
    // w2 finishes first, so it is the least recently fed free worker and gets task 2.
    results(&mut b, "w2", &sent[1].1, 10, t);
    let next = sent_tasks(&mut b, t);
    assert_eq!(next, vec![("w2".to_string(), vec![3], vec![2])]);
}

#[test]
fn tiny_tasks_are_batched_and_long_tasks_are_not_prefetched() {
    let t = Instant::now();
    let mut b = broker();
    ready(&mut b, "w", 2, t);
    submit(&mut b, "c", 0..10_000, t);
    let first = sent_tasks(&mut b, t);
    assert_eq!(first.len(), 2, "two batches of credit");
    assert!(
        first.iter().all(|(_, ids, _)| ids.len() == 1),
        "no measurement yet: one task each"
    );
    // 1 µs per task: batches grow toward target_batch (2 ms) worth of work.
    results(&mut b, "w", &first[0].1, 1, t);
    let grown = sent_tasks(&mut b, t);
    assert!(
        grown[0].1.len() > 500,
        "batch of {} tiny tasks",
        grown[0].1.len()
    );

    let mut b = broker();
    ready(&mut b, "w", 2, t);
    submit(&mut b, "c", 0..10, t);
    let first = sent_tasks(&mut b, t);
    let all: Vec<u64> = first.iter().flat_map(|(_, ids, _)| ids.clone()).collect();
    // Each task took a second: no prefetch, one at a time.
    results(&mut b, "w", &all, 2_000_000 * all.len() as u64, t);
    let next = sent_tasks(&mut b, t);
    assert_eq!(next.iter().map(|(_, ids, _)| ids.len()).sum::<usize>(), 1);
}

#[test]
fn a_dead_workers_tasks_are_requeued_first_and_its_late_results_dropped() {
    let t = Instant::now();
    let mut b = broker();
    ready(&mut b, "w1", 1, t);
    submit(&mut b, "c", [0, 1], t);
    let sent = sent_tasks(&mut b, t);
    assert_eq!(sent[0].2, vec![0]);
    b.on_control(
        &Message::ChildExited {
            identity: b"w1",
            status: "killed",
        }
        .encode(),
        t,
    );
    ready(&mut b, "w2", 1, t);
    let resent = sent_tasks(&mut b, t);
    assert_eq!(resent[0].0, "w2");
    assert_eq!(resent[0].2, vec![0], "the lost task goes first, alone");
    // The dead worker's late result is dropped and it is told to go.
    results(&mut b, "w1", &sent[0].1, 10, t);
    assert!(delivered(&mut b, t).is_empty());
    assert_eq!(b.stats().duplicates_dropped, 1);
    results(&mut b, "w2", &resent[0].1, 10, t);
    let out = delivered(&mut b, t);
    assert_eq!(out, vec![("c".to_string(), 0, Ok(b"ok".to_vec()))]);
}

#[test]
fn a_task_that_kills_max_retries_workers_becomes_an_error() {
    let t = Instant::now();
    let mut b = broker();
    submit(&mut b, "c", [7], t);
    for round in 0..3 {
        let worker = format!("w{round}");
        ready(&mut b, &worker, 1, t);
        let sent = sent_tasks(&mut b, t);
        assert_eq!(sent.len(), 1, "round {round}");
        b.worker_unreachable(worker.as_bytes());
    }
    let out = delivered(&mut b, t);
    assert_eq!(out, vec![("c".to_string(), 7, Err(ErrorKind::WorkerLost))]);
    assert_eq!(b.stats().poisoned, 1);
}

#[test]
fn silent_workers_expire_and_the_supervisor_is_told() {
    let t = Instant::now();
    let mut b = broker();
    ready(&mut b, "w", 1, t);
    submit(&mut b, "c", [0], t);
    sent_tasks(&mut b, t);
    // Heartbeats keep it alive past the deadline.
    let mut now = t;
    for _ in 0..10 {
        now += Duration::from_millis(100);
        b.on_worker(b"w", &[header(Command::Heartbeat).to_vec()], now);
        b.tick(now);
    }
    assert_eq!(b.stats().workers_alive, 1);
    b.outbox().count();
    // Then silence: dead after interval × liveness.
    now += Duration::from_millis(301);
    b.tick(now);
    assert_eq!(b.stats().workers_alive, 0);
    let kill = b
        .outbox()
        .filter(|(route, frames)| {
            *route == Route::Supervisor
                && Message::decode(frames) == Ok(Message::KillWorker { identity: b"w" })
        })
        .count();
    assert_eq!(kill, 1);
    assert_eq!(b.stats().queued, 1, "its task went back to the queue");
}

#[test]
fn clients_take_turns() {
    let t = Instant::now();
    let mut b = broker();
    submit(&mut b, "big", 0..100, t);
    submit(&mut b, "small", 1000..1002, t);
    ready(&mut b, "w", 1, t);
    let mut order = Vec::new();
    for _ in 0..4 {
        let sent = sent_tasks(&mut b, t);
        order.extend(sent[0].2.clone());
        results(&mut b, "w", &sent[0].1, 0, t);
    }
    assert_eq!(order, vec![0, 1000, 1, 1001]);
}

#[test]
fn an_init_that_keeps_failing_fails_the_tasks() {
    let t = Instant::now();
    let mut b = broker();
    submit(&mut b, "c", [0, 1], t);
    for i in 0..3 {
        let id = format!("w{i}");
        b.on_control(
            &Message::ChildStarted {
                identity: id.as_bytes(),
            }
            .encode(),
            t,
        );
        b.on_worker(id.as_bytes(), &Message::InitFailed("no model").encode(), t);
        b.on_control(
            &Message::ChildExited {
                identity: id.as_bytes(),
                status: "exit 3",
            }
            .encode(),
            t,
        );
    }
    assert!(b.failure().unwrap().contains("no model"));
    let out = delivered(&mut b, t);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|(_, _, r)| *r == Err(ErrorKind::InitFailed)));
    // Later submissions fail at once instead of waiting forever.
    submit(&mut b, "c", [2], t);
    assert_eq!(
        delivered(&mut b, t),
        vec![("c".to_string(), 2, Err(ErrorKind::InitFailed))]
    );
}

#[test]
fn garbage_is_counted_and_a_persistent_sender_ignored() {
    let t = Instant::now();
    let mut b = broker();
    for _ in 0..20 {
        b.on_client(b"evil", &[b"\x00garbage".to_vec()], t);
    }
    assert_eq!(b.stats().malformed, 16, "ignored after garbage_limit");
    submit(&mut b, "evil", [1], t);
    assert_eq!(b.stats().submitted, 0, "an ignored peer submits nothing");
    submit(&mut b, "good", [1], t);
    assert_eq!(b.stats().submitted, 1);
}

#[test]
fn cancel_forgets_queued_tasks_and_drops_late_results() {
    let t = Instant::now();
    let mut b = broker();
    ready(&mut b, "w", 1, t);
    submit(&mut b, "c", 0..5, t);
    let sent = sent_tasks(&mut b, t);
    b.on_client(b"c", &[header(Command::Cancel).to_vec()], t);
    assert_eq!(b.stats().queued, 0);
    results(&mut b, "w", &sent[0].1, 1, t);
    assert!(delivered(&mut b, t).is_empty());
    assert!(
        sent_tasks(&mut b, t).is_empty(),
        "nothing more is dispatched"
    );
}

#[test]
fn close_cancels_every_open_task() {
    let t = Instant::now();
    let mut b = broker();
    ready(&mut b, "w", 1, t);
    submit(&mut b, "c", 0..3, t);
    sent_tasks(&mut b, t);
    b.close();
    let out = delivered(&mut b, t);
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|(_, _, r)| *r == Err(ErrorKind::Cancelled)));
}

#[test]
fn released_tasks_go_back_to_the_front_without_a_try_charged() {
    let t = Instant::now();
    let mut b = broker();
    ready(&mut b, "w", 1, t);
    submit(&mut b, "c", [0], t);
    let first = sent_tasks(&mut b, t);
    submit(&mut b, "c", [1], t);
    let released = IdList::encode(first[0].1.clone());
    let frames = Message::Release(IdList::parse(&released).unwrap()).encode();
    b.on_worker(b"w", &frames, t);
    assert!(
        sent_tasks(&mut b, t).is_empty(),
        "a leaving worker gets nothing more"
    );
    ready(&mut b, "v", 1, t);
    assert_eq!(
        sent_tasks(&mut b, t)[0].2,
        vec![0],
        "the released task goes first"
    );
    // It was not charged: two deaths (max_retries - 1) leave it alive; three tries charged
    // would have made it a poison task.
    b.worker_unreachable(b"v");
    ready(&mut b, "u", 1, t);
    assert_eq!(sent_tasks(&mut b, t)[0].2, vec![0]);
    b.worker_unreachable(b"u");
    assert_eq!(b.stats().poisoned, 0);
    ready(&mut b, "x", 1, t);
    assert_eq!(
        sent_tasks(&mut b, t)[0].2,
        vec![0],
        "still queued, not failed"
    );
}

#[test]
fn finished_clients_are_forgotten() {
    let t = Instant::now();
    let mut b = broker();
    ready(&mut b, "w", 1, t);
    for client in ["a", "b", "c"] {
        submit(&mut b, client, [0], t);
        let sent = sent_tasks(&mut b, t);
        results(&mut b, "w", &sent[0].1, 1, t);
        assert_eq!(delivered(&mut b, t).len(), 1);
    }
    assert!(b.clients.is_empty(), "{} clients kept", b.clients.len());
    // A forgotten client that submits again is served as before.
    submit(&mut b, "a", [1], t);
    let sent = sent_tasks(&mut b, t);
    results(&mut b, "w", &sent[0].1, 1, t);
    assert_eq!(
        delivered(&mut b, t),
        vec![("a".to_string(), 1, Ok(b"ok".to_vec()))]
    );
}

#[test]
fn a_worker_releasing_behind_its_held_task_gets_nothing_more() {
    let t = Instant::now();
    let mut b = broker();
    ready(&mut b, "w", 4, t);
    submit(&mut b, "c", [0, 1, 2], t);
    let ids: Vec<u64> = sent_tasks(&mut b, t)
        .into_iter()
        .flat_map(|(_, ids, _)| ids)
        .collect();
    assert_eq!(ids.len(), 3);
    // It dies on the first task and hands back the two behind it.
    let released = IdList::encode(ids[1..].iter().copied());
    let frames = Message::Release(IdList::parse(&released).unwrap()).encode();
    b.on_worker(b"w", &frames, t);
    assert!(sent_tasks(&mut b, t).is_empty(), "nothing goes back to w");
    ready(&mut b, "v", 4, t);
    let payloads: Vec<u64> = sent_tasks(&mut b, t)
        .into_iter()
        .flat_map(|(_, _, p)| p)
        .collect();
    assert_eq!(payloads, vec![1, 2]);
}

#[test]
fn a_worker_that_said_goodbye_learns_its_messages_were_processed() {
    let t = Instant::now();
    let mut b = broker();
    ready(&mut b, "w", 1, t);
    submit(&mut b, "c", [0], t);
    let sent = sent_tasks(&mut b, t);
    results(&mut b, "w", &sent[0].1, 1, t);
    b.on_worker(b"w", &Message::Goodbye.encode(), t);
    b.on_worker(b"w", &Message::Heartbeat.encode(), t);
    b.flush(t);
    let to_w: Vec<_> = b
        .outbox()
        .filter(|(route, _)| *route == Route::Worker(b"w".to_vec()))
        .map(|(_, frames)| frames)
        .collect();
    assert_eq!(
        to_w.last().map(|f| Message::decode(f)),
        Some(Ok(Message::Shutdown))
    );
    assert_eq!(b.stats().completed, 1, "its result counted before it left");
}

#[test]
fn big_outcomes_leave_in_several_messages() {
    let t = Instant::now();
    let mut b = broker();
    ready(&mut b, "w", 64, t);
    submit(&mut b, "c", 0..12, t);
    let ids: Vec<u64> = sent_tasks(&mut b, t)
        .into_iter()
        .flat_map(|(_, ids, _)| ids)
        .collect();
    let mut w = ResultBatchWriter::new();
    for id in &ids {
        w.push_ok(*id, &vec![7u8; 1 << 20]);
    }
    b.on_worker(b"w", &[header(Command::Results).to_vec(), w.finish(1)], t);
    b.flush(t);
    let sizes: Vec<usize> = b
        .outbox()
        .filter(|(route, _)| matches!(route, Route::Client(_)))
        .map(|(_, frames)| frames[1].len())
        .collect();
    assert!(
        sizes.len() >= 3,
        "12 MiB of outcomes in {} messages",
        sizes.len()
    );
    assert!(sizes.iter().all(|s| *s <= (5 << 20)), "{sizes:?}");
}

/// Three local children named `<prefix>0..2` start and exit during init with `status`.
fn children_exit_during_init(b: &mut Broker, prefix: &str, status: &str, t: Instant) {
    for i in 0..3 {
        let id = format!("{prefix}{i}");
        b.on_control(
            &Message::ChildStarted {
                identity: id.as_bytes(),
            }
            .encode(),
            t,
        );
        b.on_control(
            &Message::ChildExited {
                identity: id.as_bytes(),
                status,
            }
            .encode(),
            t,
        );
    }
}

#[test]
fn an_init_reason_arriving_after_the_exit_still_names_the_failure() {
    let t = Instant::now();
    // A reason that came second, from an earlier worker, is enough to fail at once.
    let mut b = broker();
    submit(&mut b, "c", [0], t);
    b.on_control(&Message::ChildStarted { identity: b"w" }.encode(), t);
    b.on_control(
        &Message::ChildExited {
            identity: b"w",
            status: "exit 3",
        }
        .encode(),
        t,
    );
    b.on_worker(b"w", &Message::InitFailed("no model").encode(), t);
    children_exit_during_init(&mut b, "w", "exit 3", t);
    assert!(b.failure().unwrap().contains("no model"));

    // With no reason at all, the pool waits briefly for one, and takes it when it comes.
    let mut b = broker();
    submit(&mut b, "c", [0], t);
    children_exit_during_init(&mut b, "v", "signal 11", t);
    assert!(b.failure().is_none(), "waiting for a reason");
    b.on_worker(
        b"v2",
        &Message::InitFailed("segfault in the model loader").encode(),
        t,
    );
    assert!(b
        .failure()
        .unwrap()
        .contains("segfault in the model loader"));
    assert_eq!(
        b.stats().init_failures,
        3,
        "a late reason is not a fourth failure"
    );

    // … or fails with what it knows when none comes.
    let mut b = broker();
    children_exit_during_init(&mut b, "x", "signal 9", t);
    b.tick(t + Duration::from_secs(1));
    assert!(b.failure().unwrap().contains("signal 9"));
}

#[test]
fn next_wakeup_counts_the_wait_for_a_failed_workers_reason() {
    let t = Instant::now();
    // Heartbeats far apart: the wait for a reason must not stretch to one of them.
    let mut b = Broker::new(
        BrokerConfig {
            heartbeat_interval: Duration::from_secs(5),
            ..BrokerConfig::default()
        },
        t,
    );
    submit(&mut b, "c", [0], t);
    children_exit_during_init(&mut b, "x", "signal 9", t);
    assert!(b.failure().is_none(), "waiting for a reason");
    let wakeup = b.next_wakeup(t);
    assert!(
        wakeup <= t + REASON_GRACE,
        "the broker would wake {:?} after the exits",
        wakeup - t
    );
    b.tick(t + REASON_GRACE);
    assert!(b.failure().unwrap().contains("signal 9"));
    assert_eq!(
        delivered(&mut b, t + REASON_GRACE),
        vec![("c".to_string(), 0, Err(ErrorKind::InitFailed))]
    );
}

#[test]
fn a_hello_is_answered_with_the_welcome_and_joins_nothing() {
    let t = Instant::now();
    let mut b = broker().with_welcome(Arc::from(&b"defs"[..]));
    b.on_worker(b"asker", &Message::Hello.encode(), t);
    b.flush(t);
    let out: Vec<_> = b.outbox().collect();
    assert_eq!(
        out,
        vec![(
            Route::Worker(b"asker".to_vec()),
            Message::Welcome(b"defs").encode()
        )]
    );
    let stats = b.stats();
    assert_eq!(stats.workers_alive, 0, "asking is not joining: {stats:?}");
    assert_eq!(stats.workers_ready, 0);
    assert_eq!(stats.welcomes, 1);
    // It gets no task either: submitted work waits for a real worker.
    submit(&mut b, "c", [0], t);
    assert!(sent_tasks(&mut b, t).is_empty());
    ready(&mut b, "w", 1, t);
    assert_eq!(sent_tasks(&mut b, t)[0].0, "w");

    // A pool with no welcome answers with empty bytes, not silence.
    let mut b = broker();
    b.on_worker(b"asker", &Message::Hello.encode(), t);
    b.flush(t);
    let out: Vec<_> = b.outbox().collect();
    assert_eq!(
        out,
        vec![(
            Route::Worker(b"asker".to_vec()),
            Message::Welcome(b"").encode()
        )]
    );
}

/// Asks for the status as a client would, and reads the answer.
fn ask_status(b: &mut Broker, asker: &str, now: Instant) -> BrokerStatus {
    b.on_client(asker.as_bytes(), &Message::StatusRequest.encode(), now);
    b.flush(now);
    let answers: Vec<_> = b
        .outbox()
        .filter(|(route, _)| *route == Route::Client(asker.as_bytes().to_vec()))
        .collect();
    assert_eq!(answers.len(), 1, "one answer");
    let Ok(Message::Status(json)) = Message::decode(&answers[0].1) else {
        panic!("not a Status: {:?}", answers[0])
    };
    BrokerStatus::from_json(json).unwrap()
}

fn client_figures(status: &BrokerStatus) -> Vec<(String, usize, usize, u64, u64)> {
    status
        .clients
        .iter()
        .map(|c| {
            (
                c.id.clone(),
                c.queued,
                c.in_flight,
                c.submitted,
                c.completed,
            )
        })
        .collect()
}

#[test]
fn the_status_shows_each_clients_queue_and_each_workers_load() {
    let t = Instant::now();
    let mut b = broker_at(t);
    ready(&mut b, "w1", 1, t);
    ready(&mut b, "w2", 1, t);
    submit(&mut b, "a", 0..5, t);
    submit(&mut b, "b", 0..2, t);
    let sent = sent_tasks(&mut b, t);
    assert_eq!(sent.len(), 2);
    let status = ask_status(&mut b, "asker", t);
    // Each worker holds one task; "a" took the first turn, "b" the second.
    assert_eq!(
        client_figures(&status),
        vec![(short_hex(b"a"), 4, 1, 5, 0), (short_hex(b"b"), 1, 1, 2, 0),]
    );
    let workers: Vec<_> = status
        .workers
        .iter()
        .map(|w| (w.id.as_str(), w.state, w.in_flight))
        .collect();
    assert_eq!(
        workers,
        vec![("w1", WorkerState::Busy, 1), ("w2", WorkerState::Busy, 1)]
    );
    assert_eq!(status.totals.submitted, 7);
    assert_eq!(status.totals.queued, 5);
    assert!(
        !status.clients.iter().any(|c| c.id == short_hex(b"asker")),
        "asking is not submitting"
    );

    // A second later both workers finish one task each; rates follow.
    let t1 = t + Duration::from_secs(1);
    results(&mut b, "w1", &sent[0].1, 10, t1);
    results(&mut b, "w2", &sent[1].1, 10, t1);
    delivered(&mut b, t1);
    let t2 = t + Duration::from_secs(2);
    let status = ask_status(&mut b, "asker", t2);
    assert_eq!(status.uptime_secs, 2.0);
    assert_eq!(status.rate, 1.0, "2 outcomes in 2 s");
    let a = &status.clients[0];
    assert_eq!((a.completed, a.rate), (1, 0.5));
    assert_eq!(status.workers[0].completed, 1);
    assert_eq!(
        (status.workers[0].host.as_str(), status.workers[0].pid),
        ("h", 1)
    );
    assert_eq!(status.workers[0].slot, None, "not a supervised worker's id");
    // Each answered task took the second from its dispatch to its outcome.
    let durations = &status.task_durations;
    assert_eq!((durations.count(), durations.sum_secs), (2, 2.0));
    assert_eq!(durations.buckets().nth(12), Some((1.0, 2)), "(0.5 s, 1 s]");
    // Ten seconds on, the rates have forgotten them.
    let later = t + Duration::from_secs(12);
    assert_eq!(ask_status(&mut b, "asker", later).rate, 0.0);
}

#[test]
fn a_client_that_vanished_or_cancelled_leaves_the_status_and_an_idle_one_lingers() {
    let t = Instant::now();
    let mut b = broker_at(t);
    submit(&mut b, "gone", 0..3, t);
    submit(&mut b, "quits", 0..3, t);
    submit(&mut b, "done", [0], t);
    let status = ask_status(&mut b, "asker", t);
    assert_eq!(status.clients.len(), 3);

    b.client_unreachable(b"gone");
    b.on_client(b"quits", &Message::Cancel.encode(), t);
    let status = ask_status(&mut b, "asker", t);
    let ids: Vec<_> = status.clients.iter().map(|c| c.id.clone()).collect();
    assert_eq!(ids, vec![short_hex(b"done")]);

    // "done" finishes its one task: nothing open, it is still shown for a while, with its
    // figures, which it keeps if it submits again.
    ready(&mut b, "w", 1, t);
    let sent = sent_tasks(&mut b, t);
    results(&mut b, "w", &sent[0].1, 10, t);
    assert_eq!(delivered(&mut b, t).len(), 1);
    let status = ask_status(&mut b, "asker", t + Duration::from_secs(1));
    assert_eq!(
        client_figures(&status),
        vec![(short_hex(b"done"), 0, 0, 1, 1)]
    );
    submit(&mut b, "done", [1], t + Duration::from_secs(2));
    let sent = sent_tasks(&mut b, t + Duration::from_secs(2));
    let status = ask_status(&mut b, "asker", t + Duration::from_secs(2));
    assert_eq!(
        client_figures(&status),
        vec![(short_hex(b"done"), 0, 1, 2, 1)]
    );
    results(&mut b, "w", &sent[0].1, 10, t + Duration::from_secs(2));
    delivered(&mut b, t + Duration::from_secs(2));
    // Idle long enough, it is forgotten.
    let status = ask_status(&mut b, "asker", t + Duration::from_secs(30));
    assert!(status.clients.is_empty(), "{:?}", status.clients);
}

#[test]
fn workers_show_as_suspect_and_retiring() {
    let t = Instant::now();
    let mut b = broker_at(t);
    ready(&mut b, "w1", 1, t);
    submit(&mut b, "c", 0..2, t);
    sent_tasks(&mut b, t);
    b.worker_unreachable(b"w1");
    ready(&mut b, "w2", 2, t);
    let sent = sent_tasks(&mut b, t);
    assert_eq!(sent[0].1.len(), 1, "the suspect runs alone");
    ready(&mut b, "w3", 2, t);
    sent_tasks(&mut b, t);
    b.on_worker(
        b"w3",
        &Message::Release(IdList::parse(&IdList::encode([])).unwrap()).encode(),
        t,
    );
    let status = ask_status(&mut b, "asker", t);
    let states: Vec<_> = status
        .workers
        .iter()
        .map(|w| (w.id.as_str(), w.state))
        .collect();
    assert_eq!(
        states,
        vec![("w2", WorkerState::Suspect), ("w3", WorkerState::Retiring)]
    );
}

#[test]
fn a_task_past_its_time_limit_is_charged_a_try_and_ends_as_a_timeout_naming_the_limit() {
    let t = Instant::now();
    let mut b = broker();
    submit(&mut b, "c", [7], t);
    let limit = Duration::from_millis(1500);
    for round in 0..3 {
        let worker = format!("w{round}");
        ready(&mut b, &worker, 1, t);
        let sent = sent_tasks(&mut b, t);
        assert_eq!(sent[0].2, vec![7], "round {round}: retried");
        let task = sent[0].1[0];
        let frames = Message::TimedOut { id: task, limit }.encode();
        b.on_worker(worker.as_bytes(), &frames, t);
        b.on_worker(worker.as_bytes(), &[header(Command::Goodbye)], t);
    }
    b.flush(t);
    let mut errors = Vec::new();
    for (route, frames) in b.outbox() {
        if let (Route::Client(_), Ok(Message::Results(batch))) = (&route, Message::decode(&frames))
        {
            for (id, outcome) in batch.iter() {
                let Outcome::Err(bytes) = outcome else {
                    panic!("task {id} succeeded")
                };
                let error = WireError::decode(bytes).unwrap();
                errors.push((id, error.kind, error.message.to_string()));
            }
        }
    }
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!((errors[0].0, errors[0].1), (7, ErrorKind::Timeout));
    assert!(
        errors[0].2.contains("1.5s"),
        "names the limit: {}",
        errors[0].2
    );
    let stats = b.stats();
    assert_eq!((stats.timed_out, stats.poisoned, stats.failed), (3, 0, 1));
}

#[test]
fn a_recycled_worker_is_not_lost_and_what_it_held_goes_back_uncharged() {
    let t = Instant::now();
    let mut b = broker();
    ready(&mut b, "w", 2, t);
    submit(&mut b, "c", [0, 1], t);
    let sent = sent_tasks(&mut b, t);
    let held: Vec<u64> = sent.iter().flat_map(|s| s.1.clone()).collect();
    assert_eq!(held.len(), 2);
    // It finished one, hands the other back, and leaves to be replaced.
    results(&mut b, "w", &held[..1], 10, t);
    let released = IdList::encode(held[1..].to_vec());
    b.on_worker(
        b"w",
        &Message::Release(IdList::parse(&released).unwrap()).encode(),
        t,
    );
    b.on_worker(b"w", &Message::Recycling.encode(), t);
    let stats = b.stats();
    assert_eq!((stats.recycled, stats.workers_lost), (1, 0));
    // The handed-back task survives max_retries - 1 deaths: it was not charged.
    for round in 0..2 {
        let worker = format!("v{round}");
        ready(&mut b, &worker, 1, t);
        assert!(
            sent_tasks(&mut b, t).iter().any(|s| s.2 == [1]),
            "round {round}"
        );
        b.worker_unreachable(worker.as_bytes());
    }
    assert_eq!(b.stats().poisoned, 0);
}

/// Found by fuzzing: a cancelled client's task still on a worker came back, when that
/// worker died, into the queue of a new stream under the same routing id — which then
/// had more tasks queued than open, and was forgotten with a task still in its turn.
#[test]
fn a_cancelled_clients_task_does_not_return_to_a_new_stream_of_the_same_client() {
    let t = Instant::now();
    let mut b = broker();
    ready(&mut b, "w", 1, t);
    submit(&mut b, "c", [1, 2], t);
    assert_eq!(sent_tasks(&mut b, t).len(), 1, "task 1 is on the worker");
    b.on_client(b"c", &[header(Command::Cancel).to_vec()], t);
    submit(&mut b, "c", [9], t);
    b.worker_unreachable(b"w");
    ready(&mut b, "v", 1, t);
    let sent = sent_tasks(&mut b, t);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].2, vec![9], "only the new stream's task runs");
    results(&mut b, "v", &sent[0].1, 10, t);
    assert_eq!(
        delivered(&mut b, t),
        vec![("c".to_string(), 9, Ok(b"ok".to_vec()))]
    );
    assert!(sent_tasks(&mut b, t).is_empty(), "nothing left queued");
}

mod cost;
