//! Batch bodies: the tasks of a `Tasks`/`Submit` message, the outcomes of a `Results`
//! message, the ids of a `Release`. Readers check a whole body before it is used; writers
//! build one in place, so payloads are serialised straight into the frame.

use super::{patch_len, put_bytes, ProtocolError, Reader, WireError};

/// One outcome in a result batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    Ok(&'a [u8]),
    /// An encoded [`WireError`], checked when the batch was parsed.
    Err(&'a [u8]),
}

/// A validated task batch: iterate it with [`TaskBatch::iter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskBatch<'a> {
    count: u32,
    items: &'a [u8],
}

impl<'a> TaskBatch<'a> {
    pub fn parse(body: &'a [u8]) -> Result<TaskBatch<'a>, ProtocolError> {
        let mut r = Reader::new(body);
        let count = r.u32()?;
        let items = r.rest();
        let mut check = Reader::new(items);
        for _ in 0..count {
            check.u64()?;
            check.bytes()?;
        }
        check.finish()?;
        Ok(TaskBatch { count, items })
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// `(id, payload)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &'a [u8])> + 'a {
        let mut r = Reader::new(self.items);
        (0..self.count).map_while(move |_| Some((r.u64().ok()?, r.bytes().ok()?)))
    }
}

/// A validated result batch: iterate it with [`ResultBatch::iter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultBatch<'a> {
    count: u32,
    /// Microseconds the worker spent in `process` for these items (0 when not measured).
    pub busy_us: u64,
    items: &'a [u8],
}

impl<'a> ResultBatch<'a> {
    pub fn parse(body: &'a [u8]) -> Result<ResultBatch<'a>, ProtocolError> {
        let mut r = Reader::new(body);
        let count = r.u32()?;
        let busy_us = r.u64()?;
        let items = r.rest();
        let mut check = Reader::new(items);
        for _ in 0..count {
            check.u64()?;
            let status = check.u8()?;
            let bytes = check.bytes()?;
            match status {
                0 => {}
                1 => {
                    WireError::decode(bytes)?;
                }
                other => return Err(ProtocolError::BadStatus(other)),
            }
        }
        check.finish()?;
        Ok(ResultBatch {
            count,
            busy_us,
            items,
        })
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// `(id, outcome)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Outcome<'a>)> + 'a {
        let mut r = Reader::new(self.items);
        (0..self.count).map_while(move |_| {
            let id = r.u64().ok()?;
            let status = r.u8().ok()?;
            let bytes = r.bytes().ok()?;
            Some((
                id,
                if status == 0 {
                    Outcome::Ok(bytes)
                } else {
                    Outcome::Err(bytes)
                },
            ))
        })
    }
}

/// A validated list of task ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdList<'a> {
    ids: &'a [u8],
}

impl<'a> IdList<'a> {
    pub fn parse(body: &'a [u8]) -> Result<IdList<'a>, ProtocolError> {
        let mut r = Reader::new(body);
        let count = r.u32()? as usize;
        let ids = r.take(count.checked_mul(8).ok_or(ProtocolError::Truncated)?)?;
        r.finish()?;
        Ok(IdList { ids })
    }

    pub fn encode(ids: impl IntoIterator<Item = u64>) -> Vec<u8> {
        let mut buf = vec![0; 4];
        let mut count = 0u32;
        for id in ids {
            buf.extend_from_slice(&id.to_le_bytes());
            count += 1;
        }
        buf[..4].copy_from_slice(&count.to_le_bytes());
        buf
    }

    pub fn len(&self) -> usize {
        self.ids.len() / 8
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = u64> + 'a {
        self.ids
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("chunks of 8")))
    }
}

/// Builds a task batch body in place, so payloads are serialised straight into it.
#[derive(Debug)]
pub struct TaskBatchWriter {
    buf: Vec<u8>,
    count: u32,
    /// Where the last item's payload starts.
    last: usize,
}

impl Default for TaskBatchWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl TaskBatchWriter {
    pub fn new() -> Self {
        TaskBatchWriter {
            buf: vec![0; 4],
            count: 0,
            last: 4,
        }
    }

    pub fn push(&mut self, id: u64, payload: &[u8]) {
        self.buf.extend_from_slice(&id.to_le_bytes());
        put_bytes(&mut self.buf, payload);
        self.count += 1;
        self.last = self.buf.len() - payload.len();
    }

    /// Appends an item whose payload `write` appends to the buffer it is given.
    pub fn push_with<E>(
        &mut self,
        id: u64,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&id.to_le_bytes());
        self.buf.extend_from_slice(&[0; 4]);
        if let Err(e) = write(&mut self.buf) {
            self.buf.truncate(start);
            return Err(e);
        }
        patch_len(&mut self.buf, start + 8);
        self.count += 1;
        self.last = start + 12;
        Ok(())
    }

    /// The payload of the item pushed last.
    pub fn last_payload(&self) -> &[u8] {
        &self.buf[self.last..]
    }

    /// Takes the item pushed last out again (one at most: the one before is not known).
    pub fn pop_last(&mut self) {
        if self.count > 0 && self.last >= 16 {
            self.buf.truncate(self.last - 12);
            self.count -= 1;
            self.last = 4;
        }
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes written so far, to bound a batch's size.
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf[..4].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }
}

/// Builds a result batch body in place.
#[derive(Debug)]
pub struct ResultBatchWriter {
    buf: Vec<u8>,
    count: u32,
}

impl Default for ResultBatchWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ResultBatchWriter {
    pub fn new() -> Self {
        ResultBatchWriter {
            buf: vec![0; 12],
            count: 0,
        }
    }

    pub fn push_ok(&mut self, id: u64, output: &[u8]) {
        self.buf.extend_from_slice(&id.to_le_bytes());
        self.buf.push(0);
        put_bytes(&mut self.buf, output);
        self.count += 1;
    }

    /// Appends a successful item whose output `write` appends to the buffer.
    pub fn push_ok_with<E>(
        &mut self,
        id: u64,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&id.to_le_bytes());
        self.buf.push(0);
        self.buf.extend_from_slice(&[0; 4]);
        if let Err(e) = write(&mut self.buf) {
            self.buf.truncate(start);
            return Err(e);
        }
        patch_len(&mut self.buf, start + 9);
        self.count += 1;
        Ok(())
    }

    pub fn push_err(&mut self, id: u64, error: &WireError<'_>) {
        self.buf.extend_from_slice(&id.to_le_bytes());
        self.buf.push(1);
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        error.encode_into(&mut self.buf);
        patch_len(&mut self.buf, len_at);
        self.count += 1;
    }

    /// Appends an outcome taken from another batch, unchanged.
    pub fn push_outcome(&mut self, id: u64, outcome: Outcome<'_>) {
        self.buf.extend_from_slice(&id.to_le_bytes());
        let bytes = match outcome {
            Outcome::Ok(b) => {
                self.buf.push(0);
                b
            }
            Outcome::Err(b) => {
                self.buf.push(1);
                b
            }
        };
        put_bytes(&mut self.buf, bytes);
        self.count += 1;
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    pub fn finish(mut self, busy_us: u64) -> Vec<u8> {
        self.buf[..4].copy_from_slice(&self.count.to_le_bytes());
        self.buf[4..12].copy_from_slice(&busy_us.to_le_bytes());
        self.buf
    }
}
