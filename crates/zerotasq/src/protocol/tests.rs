//! Round trips and hostile input for the wire protocol.

use super::*;
use proptest::prelude::*;

fn task_body(items: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut w = TaskBatchWriter::new();
    for (id, payload) in items {
        w.push(*id, payload);
    }
    w.finish()
}

fn kind_strategy() -> impl Strategy<Value = ErrorKind> {
    (1u8..=7).prop_map(|b| ErrorKind::from_byte(b).unwrap())
}

proptest! {
    #[test]
    fn task_batches_round_trip(items in prop::collection::vec((any::<u64>(), prop::collection::vec(any::<u8>(), 0..64)), 0..40)) {
        let body = task_body(&items);
        let frames = vec![header(Command::Tasks).to_vec(), body];
        let Message::Tasks(batch) = Message::decode(&frames).unwrap() else { panic!("wrong command") };
        let back: Vec<(u64, Vec<u8>)> = batch.iter().map(|(id, p)| (id, p.to_vec())).collect();
        prop_assert_eq!(back, items);
        prop_assert_eq!(Message::decode(&frames).unwrap().encode(), frames);
    }

    #[test]
    fn result_batches_round_trip(
        items in prop::collection::vec((any::<u64>(), prop::option::of((kind_strategy(), ".{0,20}", ".{0,20}")), prop::collection::vec(any::<u8>(), 0..64)), 0..40),
        busy in any::<u64>(),
    ) {
        let mut w = ResultBatchWriter::new();
        for (id, err, payload) in &items {
            match err {
                None => w.push_ok(*id, payload),
                Some((kind, message, detail)) => w.push_err(*id, &WireError { kind: *kind, message, detail }),
            }
        }
        let frames = vec![header(Command::Results).to_vec(), w.finish(busy)];
        let Message::Results(batch) = Message::decode(&frames).unwrap() else { panic!("wrong command") };
        prop_assert_eq!(batch.busy_us, busy);
        prop_assert_eq!(batch.len(), items.len());
        for ((id, outcome), (want_id, err, payload)) in batch.iter().zip(&items) {
            prop_assert_eq!(id, *want_id);
            match (outcome, err) {
                (Outcome::Ok(bytes), None) => prop_assert_eq!(bytes, &payload[..]),
                (Outcome::Err(bytes), Some((kind, message, detail))) => {
                    let e = WireError::decode(bytes).unwrap();
                    prop_assert_eq!(e, WireError { kind: *kind, message, detail });
                }
                other => prop_assert!(false, "status mismatch: {:?}", other),
            }
        }
        prop_assert_eq!(Message::decode(&frames).unwrap().encode(), frames);
    }

    #[test]
    fn control_messages_round_trip(identity in prop::collection::vec(any::<u8>(), 0..16), text in ".{0,30}", cap in any::<u32>(), pid in any::<u32>()) {
        let messages = [
            Message::Ready(Ready { capacity: cap, pid, host: &text, max_batch: cap / 3, batch_wait_us: pid / 5 }),
            Message::Heartbeat, Message::Goodbye, Message::Shutdown, Message::Cancel,
            Message::ChildReady { identity: &identity }, Message::Hello, Message::Welcome(&identity),
            Message::StatusRequest, Message::Status(text.as_bytes()),
            Message::InitFailed(&text), Message::Fatal(&text),
            Message::ChildExited { identity: &identity, status: &text },
            Message::KillWorker { identity: &identity },
            Message::ChildStarted { identity: &identity },
            Message::Recycling, Message::Forgotten,
            Message::TimedOut { id: pid as u64 * 7, limit: std::time::Duration::from_millis(cap as u64) },
        ];
        let released = IdList::encode([cap as u64, pid as u64, 7]);
        let released = Message::Release(IdList::parse(&released).unwrap());
        let frames = released.encode();
        prop_assert_eq!(Message::decode(&frames).unwrap(), released);
        for m in messages {
            let frames = m.encode();
            prop_assert_eq!(Message::decode(&frames).unwrap(), m);
        }
    }

    /// Welcome bytes are carried as given, whatever they hold (a pickle, nothing at all).
    #[test]
    fn welcome_carries_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let frames = Message::Welcome(&bytes).encode();
        prop_assert_eq!(frames.len(), 2);
        prop_assert_eq!(Message::decode(&frames).unwrap(), Message::Welcome(&bytes));
        // A Hello has no body; a Welcome has exactly one frame.
        let mut hello = Message::Hello.encode();
        hello.push(bytes.clone());
        let is_frame_count = matches!(Message::decode(&hello), Err(ProtocolError::FrameCount { .. }));
        prop_assert!(is_frame_count);
        let is_frame_count = matches!(Message::decode(&frames[..1]), Err(ProtocolError::FrameCount { .. }));
        prop_assert!(is_frame_count);
    }

    /// Arbitrary frames never panic the decoder, whatever the header claims.
    #[test]
    fn garbage_never_panics(frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..4), cmd in any::<u8>()) {
        let _ = Message::decode(&frames);
        let mut with_header = vec![vec![b'Z', b'T', VERSION, cmd]];
        with_header.extend(frames);
        let _ = Message::decode(&with_header);
    }

    /// Truncating a valid batch at any point is an error, never a panic or a short read.
    #[test]
    fn truncation_is_detected(items in prop::collection::vec((any::<u64>(), prop::collection::vec(any::<u8>(), 0..16)), 1..8), cut in any::<prop::sample::Index>()) {
        let body = task_body(&items);
        let at = cut.index(body.len());
        prop_assert!(TaskBatch::parse(&body[..at]).is_err());
    }
}

#[test]
fn rejects_foreign_headers() {
    assert_eq!(Message::decode::<Vec<u8>>(&[]), Err(ProtocolError::Empty));
    assert_eq!(
        Message::decode(&[b"GET / HTTP/1.1".to_vec()]),
        Err(ProtocolError::BadMagic)
    );
    assert_eq!(
        Message::decode(&[vec![b'Z', b'T', 99, 4]]),
        Err(ProtocolError::VersionMismatch { got: 99 })
    );
    assert_eq!(
        Message::decode(&[vec![b'Z', b'T', VERSION, 200]]),
        Err(ProtocolError::UnknownCommand(200))
    );
    assert!(matches!(
        Message::decode(&[header(Command::Heartbeat).to_vec(), vec![1]]),
        Err(ProtocolError::FrameCount { .. })
    ));
}

#[test]
fn a_count_larger_than_the_body_is_refused() {
    let mut body = task_body(&[(1, b"x".to_vec())]);
    body[..4].copy_from_slice(&1000u32.to_le_bytes());
    assert_eq!(TaskBatch::parse(&body), Err(ProtocolError::Truncated));
}

#[test]
fn bad_status_and_error_kind_are_refused() {
    let mut w = ResultBatchWriter::new();
    w.push_ok(7, b"out");
    let mut body = w.finish(0);
    body[12 + 8] = 9; // status byte of the first item
    assert_eq!(ResultBatch::parse(&body), Err(ProtocolError::BadStatus(9)));
    assert_eq!(
        WireError::decode(&[42, 0, 0, 0, 0, 0, 0, 0, 0]),
        Err(ProtocolError::BadErrorKind(42))
    );
}

#[test]
fn push_with_rolls_back_on_error() {
    let mut w = TaskBatchWriter::new();
    w.push(1, b"a");
    let failed: Result<(), ()> = w.push_with(2, |buf| {
        buf.extend_from_slice(b"partial");
        Err(())
    });
    assert!(failed.is_err());
    w.push_with::<()>(3, |buf| {
        buf.extend_from_slice(b"ccc");
        Ok(())
    })
    .unwrap();
    let body = w.finish();
    let batch = TaskBatch::parse(&body).unwrap();
    let items: Vec<_> = batch.iter().collect();
    assert_eq!(items, vec![(1, &b"a"[..]), (3, &b"ccc"[..])]);
}
