//! The bytes between the CLI and its adapters (opaque to the engine). A task is the record's
//! number and the record; a result is the record's number, the worker's number and the time
//! the answer took, then the answer. Separators are not carried: each side adds its own.

/// Bytes before a task's record.
const TASK_HEADER: usize = 8;
/// Bytes before a result's answer.
const RESULT_HEADER: usize = 16;

pub fn encode_task(record: u64, data: &[u8], buf: &mut Vec<u8>) {
    buf.reserve(TASK_HEADER + data.len());
    buf.extend_from_slice(&record.to_le_bytes());
    buf.extend_from_slice(data);
}

pub fn decode_task(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, data) = bytes.split_at_checked(TASK_HEADER)?;
    Some((u64::from_le_bytes(head.try_into().ok()?), data))
}

/// Who answered a task, and how long it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultHeader {
    pub record: u64,
    /// 1-based worker slot.
    pub worker: u32,
    pub busy_us: u32,
}

pub fn encode_result(head: ResultHeader, answer: &[u8], buf: &mut Vec<u8>) {
    buf.reserve(RESULT_HEADER + answer.len());
    buf.extend_from_slice(&head.record.to_le_bytes());
    buf.extend_from_slice(&head.worker.to_le_bytes());
    buf.extend_from_slice(&head.busy_us.to_le_bytes());
    buf.extend_from_slice(answer);
}

pub fn decode_result(bytes: &[u8]) -> Option<(ResultHeader, &[u8])> {
    let (head, answer) = bytes.split_at_checked(RESULT_HEADER)?;
    let head = ResultHeader {
        record: u64::from_le_bytes(head[..8].try_into().ok()?),
        worker: u32::from_le_bytes(head[8..12].try_into().ok()?),
        busy_us: u32::from_le_bytes(head[12..16].try_into().ok()?),
    };
    Some((head, answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut buf = Vec::new();
        encode_task(42, b"hello", &mut buf);
        assert_eq!(decode_task(&buf), Some((42, &b"hello"[..])));
        let head = ResultHeader {
            record: 7,
            worker: 3,
            busy_us: 1234,
        };
        buf.clear();
        encode_result(head, b"", &mut buf);
        assert_eq!(decode_result(&buf), Some((head, &b""[..])));
        assert_eq!(decode_result(&buf[..15]), None);
        assert_eq!(decode_task(&[1, 2]), None);
    }
}
