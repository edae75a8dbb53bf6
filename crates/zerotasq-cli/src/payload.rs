//! The bytes between the CLI and its adapters (opaque to the engine). A task is a *pack* of
//! consecutive records: the first record's number, how many, flags, then the records, each
//! ended by the separator (so the adapter writes them to its command as they are). A result
//! is the first record's number, the worker's number, the time the pack took, how many
//! answers follow and whether the pack was split, the worker's host (a length byte, then
//! the name), then the answers, each ended by the separator. A split result (the command died inside the pack) carries, after the answers
//! it got, the records it never answered, the first of which killed the command.
//!
//! A task is encoded at the end of a buffer that may already hold other bytes (the engine's
//! stream serialises each task straight into its batch): every offset is relative to where
//! the task starts.

/// Bytes before a task's records.
const TASK_HEADER: usize = 13;
/// Bytes before a result's answers.
const RESULT_HEADER: usize = 21;

/// Task flag: a death of the command on this task is answered with a split result even
/// when the task is a single record, so that the CLI, not the engine, counts its tries.
pub const SPLIT_ON_DEATH: u8 = 1;

/// Starts a task (no records yet) at the end of `buf`; returns where it starts, for
/// [`push_record`].
pub fn start_task(first: u64, flags: u8, buf: &mut Vec<u8>) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&first.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    buf.push(flags);
    at
}

/// Adds one record (and its separator) to the task started at `at` by [`start_task`].
pub fn push_record(at: usize, record: &[u8], separator: u8, buf: &mut Vec<u8>) {
    buf.extend_from_slice(record);
    buf.push(separator);
    let field = at + 8..at + 12;
    let count = u32::from_le_bytes(buf[field.clone()].try_into().expect("4 bytes")) + 1;
    buf[field].copy_from_slice(&count.to_le_bytes());
}

/// Sets the first record's number and the record count of the task started at `at`, whose
/// records were appended straight after [`start_task`] (each ended by the separator).
pub fn set_task_head(at: usize, first: u64, count: u32, buf: &mut [u8]) {
    buf[at..at + 8].copy_from_slice(&first.to_le_bytes());
    buf[at + 8..at + 12].copy_from_slice(&count.to_le_bytes());
}

/// A task as the adapter reads it.
#[derive(Debug, PartialEq, Eq)]
pub struct TaskView<'a> {
    pub first: u64,
    pub count: u32,
    pub flags: u8,
    /// The records, each ended by the separator.
    pub records: &'a [u8],
}

pub fn decode_task(bytes: &[u8]) -> Option<TaskView<'_>> {
    let (head, records) = bytes.split_at_checked(TASK_HEADER)?;
    let view = TaskView {
        first: u64::from_le_bytes(head[..8].try_into().ok()?),
        count: u32::from_le_bytes(head[8..12].try_into().ok()?),
        flags: head[12],
        records,
    };
    (view.count > 0).then_some(view)
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
    /// The split is no record's fault: the command ended cleanly (status 0) after it had
    /// answered lines, so the record after them is not charged a try.
    pub blameless: bool,
}

/// Appends a result to `buf`: the header, the worker's host (its first 255 bytes), then
/// `parts` one after the other (the answers, and for a split pack the records it never
/// answered).
pub fn encode_result(head: ResultHeader, host: &str, parts: &[&[u8]], buf: &mut Vec<u8>) {
    let host = &host.as_bytes()[..host.len().min(255)];
    buf.reserve(RESULT_HEADER + 1 + host.len() + parts.iter().map(|p| p.len()).sum::<usize>());
    buf.extend_from_slice(&head.record.to_le_bytes());
    buf.extend_from_slice(&head.worker.to_le_bytes());
    buf.extend_from_slice(&head.busy_us.to_le_bytes());
    buf.extend_from_slice(&head.count.to_le_bytes());
    buf.push(head.split as u8 | (head.blameless as u8) << 1);
    buf.push(host.len() as u8);
    buf.extend_from_slice(host);
    for part in parts {
        buf.extend_from_slice(part);
    }
}

/// The header, the worker's host, and the bytes after them (answers, then for a split pack
/// the unanswered records).
pub fn decode_result(bytes: &[u8]) -> Option<(ResultHeader, &str, &[u8])> {
    let (head, rest) = bytes.split_at_checked(RESULT_HEADER)?;
    let (&len, rest) = rest.split_first()?;
    let (host, body) = rest.split_at_checked(len.into())?;
    let head = ResultHeader {
        record: u64::from_le_bytes(head[..8].try_into().ok()?),
        worker: u32::from_le_bytes(head[8..12].try_into().ok()?),
        busy_us: u32::from_le_bytes(head[12..16].try_into().ok()?),
        count: u32::from_le_bytes(head[16..20].try_into().ok()?),
        split: head[20] & 1 != 0,
        blameless: head[20] & 2 != 0,
    };
    Some((head, std::str::from_utf8(host).unwrap_or("?"), body))
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
        // After other bytes, as in a batch the engine's stream builds.
        let mut buf = vec![9; 7];
        let at = start_task(42, SPLIT_ON_DEATH, &mut buf);
        push_record(at, b"hello", b'\n', &mut buf);
        push_record(at, b"", b'\n', &mut buf);
        assert_eq!(&buf[..7], &[9; 7]);
        let want = TaskView {
            first: 42,
            count: 2,
            flags: SPLIT_ON_DEATH,
            records: &b"hello\n\n"[..],
        };
        assert_eq!(decode_task(&buf[7..]), Some(want));
        let head = ResultHeader {
            record: 7,
            worker: 3,
            busy_us: 1234,
            count: 1,
            split: true,
            blameless: true,
        };
        buf.clear();
        encode_result(head, "node-1", &[b"a\n", b"b\n", b"c\n"], &mut buf);
        let (got, host, body) = decode_result(&buf).unwrap();
        assert_eq!((got, host), (head, "node-1"));
        assert_eq!(after_records(body, 1, b'\n'), Some(2));
        assert_eq!(after_records(body, 4, b'\n'), None);
        assert_eq!(decode_result(&buf[..20]), None);
        assert_eq!(decode_task(&[1, 2]), None);
    }
}
