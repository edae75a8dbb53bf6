//! The bytes between the CLI and its adapters (opaque to the engine). A task is a *pack* of
//! consecutive records: the first record's number, how many, then the records, each ended
//! by the separator (so the adapter writes them to its command as they are). A result is
//! the first record's number, the worker's number, the time the pack took, how many answers
//! follow and whether the pack was split, then the answers, each ended by the separator. A
//! split result (the command died inside the pack) carries, after the answers it got, the
//! records it never answered, the first of which killed the command.

/// Bytes before a task's records.
const TASK_HEADER: usize = 12;
/// Bytes before a result's answers.
const RESULT_HEADER: usize = 21;

/// Appends `record` and its separator to a pack being built.
pub fn start_task(first: u64, buf: &mut Vec<u8>) {
    buf.extend_from_slice(&first.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
}

/// Adds one record to a pack started with [`start_task`].
pub fn push_record(record: &[u8], separator: u8, buf: &mut Vec<u8>) {
    buf.extend_from_slice(record);
    buf.push(separator);
    let count = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes")) + 1;
    buf[8..12].copy_from_slice(&count.to_le_bytes());
}

/// `(first record, count, records each ended by the separator)`.
pub fn decode_task(bytes: &[u8]) -> Option<(u64, u32, &[u8])> {
    let (head, data) = bytes.split_at_checked(TASK_HEADER)?;
    let first = u64::from_le_bytes(head[..8].try_into().ok()?);
    let count = u32::from_le_bytes(head[8..12].try_into().ok()?);
    (count > 0).then_some((first, count, data))
}

/// Who answered a pack, and how long it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultHeader {
    pub record: u64,
    /// 1-based worker slot.
    pub worker: u32,
    pub busy_us: u32,
    /// Answers that follow.
    pub count: u32,
    /// The command died on record `record + count`; the unanswered records follow.
    pub split: bool,
}

pub fn encode_result(head: ResultHeader, answers: &[u8], rest: &[u8], buf: &mut Vec<u8>) {
    buf.reserve(RESULT_HEADER + answers.len() + rest.len());
    buf.extend_from_slice(&head.record.to_le_bytes());
    buf.extend_from_slice(&head.worker.to_le_bytes());
    buf.extend_from_slice(&head.busy_us.to_le_bytes());
    buf.extend_from_slice(&head.count.to_le_bytes());
    buf.push(head.split as u8);
    buf.extend_from_slice(answers);
    buf.extend_from_slice(rest);
}

/// The header and the bytes after it (answers, then for a split pack the unanswered
/// records).
pub fn decode_result(bytes: &[u8]) -> Option<(ResultHeader, &[u8])> {
    let (head, body) = bytes.split_at_checked(RESULT_HEADER)?;
    let head = ResultHeader {
        record: u64::from_le_bytes(head[..8].try_into().ok()?),
        worker: u32::from_le_bytes(head[8..12].try_into().ok()?),
        busy_us: u32::from_le_bytes(head[12..16].try_into().ok()?),
        count: u32::from_le_bytes(head[16..20].try_into().ok()?),
        split: head[20] != 0,
    };
    Some((head, body))
}

/// The offset just past the `n`-th separator in `bytes` (`None` if there are fewer).
pub fn after_records(bytes: &[u8], n: u32, separator: u8) -> Option<usize> {
    if n == 0 {
        return Some(0);
    }
    let mut seen = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == separator {
            seen += 1;
            if seen == n {
                return Some(i + 1);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut buf = Vec::new();
        start_task(42, &mut buf);
        push_record(b"hello", b'\n', &mut buf);
        push_record(b"", b'\n', &mut buf);
        assert_eq!(decode_task(&buf), Some((42, 2, &b"hello\n\n"[..])));
        let head = ResultHeader {
            record: 7,
            worker: 3,
            busy_us: 1234,
            count: 1,
            split: true,
        };
        buf.clear();
        encode_result(head, b"a\n", b"b\nc\n", &mut buf);
        let (got, body) = decode_result(&buf).unwrap();
        assert_eq!(got, head);
        assert_eq!(after_records(body, 1, b'\n'), Some(2));
        assert_eq!(after_records(body, 4, b'\n'), None);
        assert_eq!(decode_result(&buf[..20]), None);
        assert_eq!(decode_task(&[1, 2]), None);
    }
}
