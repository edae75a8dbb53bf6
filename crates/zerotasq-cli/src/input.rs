//! The input: records (lines, or NUL-separated with `-0`) read lazily from stdin or a file,
//! numbered from 1. A read error ends the records and is kept for the caller to report, since
//! an iterator of tasks cannot carry it. A resumed run reads ahead past the records done
//! before and sets aside the others, which come first, by their own numbers.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A reader whose buffered bytes can be looked at without reading (and so without
/// waiting for a pipe's writer).
pub trait Buffered: BufRead {
    fn buffered(&self) -> &[u8];
}

impl<R: Read> Buffered for BufReader<R> {
    fn buffered(&self) -> &[u8] {
        self.buffer()
    }
}

impl Buffered for &[u8] {
    fn buffered(&self) -> &[u8] {
        self
    }
}

/// An iterator of `(record number, record without its separator)`.
pub struct Records<R> {
    reader: R,
    separator: u8,
    next: u64,
    /// Bytes consumed so far, for the progress bar.
    bytes_read: Arc<AtomicU64>,
    error: Arc<Mutex<Option<std::io::Error>>>,
    /// Records read ahead and set aside, each ended by the separator, with its number.
    aside: VecDeque<(u64, Vec<u8>)>,
    /// Where each record given goes by number with its hash, for a joblog.
    hashes: Option<InputHashes>,
}

/// Hashes of records given and not yet answered, by number (see `joblog`).
pub type InputHashes = Arc<Mutex<HashMap<u64, u64>>>;

impl<R: BufRead> Records<R> {
    pub fn new(reader: R, separator: u8) -> Self {
        Records {
            reader,
            separator,
            next: 1,
            bytes_read: Arc::new(AtomicU64::new(0)),
            error: Arc::new(Mutex::new(None)),
            aside: VecDeque::new(),
            hashes: None,
        }
    }

    /// From now on, each record given leaves its hash in `hashes`.
    pub fn hash_into(&mut self, hashes: InputHashes) {
        self.hashes = Some(hashes);
    }

    /// The number of the record [`Records::read_into`] gives next.
    pub fn next_number(&self) -> u64 {
        self.aside.front().map_or(self.next, |(n, _)| *n)
    }

    /// Records read ahead (with [`Records::read_ahead`]) to be given before the rest.
    pub fn set_aside(&mut self, records: VecDeque<(u64, Vec<u8>)>) {
        self.aside = records;
    }

    pub fn bytes_read(&self) -> Arc<AtomicU64> {
        self.bytes_read.clone()
    }

    /// Where a read error is left.
    pub fn error(&self) -> Arc<Mutex<Option<std::io::Error>>> {
        self.error.clone()
    }

    /// Appends the next record to `buf`, always ended by the separator; its number, or
    /// `None` at the end of the input (or on a read error, kept for the caller).
    pub fn read_into(&mut self, buf: &mut Vec<u8>) -> Option<u64> {
        let start = buf.len();
        let number = match self.aside.pop_front() {
            Some((number, record)) => {
                buf.extend_from_slice(&record);
                number
            }
            None => self.read_ahead(buf)?,
        };
        if let Some(hashes) = &self.hashes {
            let hash = crate::joblog::hash(&buf[start..buf.len() - 1]);
            hashes.lock().expect("hashes lock").insert(number, hash);
        }
        Some(number)
    }

    /// As [`Records::read_into`], but from the input itself, past any records set aside.
    pub fn read_ahead(&mut self, buf: &mut Vec<u8>) -> Option<u64> {
        match self.reader.read_until(self.separator, buf) {
            Ok(0) => None,
            Ok(n) => {
                self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
                if buf.last() != Some(&self.separator) {
                    buf.push(self.separator);
                }
                let number = self.next;
                self.next += 1;
                Some(number)
            }
            Err(e) => {
                *self.error.lock().expect("input error lock") = Some(e);
                None
            }
        }
    }
}

impl<R: Buffered> Records<R> {
    /// A whole record is buffered: reading it will not wait.
    pub fn record_buffered(&self) -> bool {
        !self.aside.is_empty() || self.reader.buffered().contains(&self.separator)
    }
}

impl<R: BufRead> Iterator for Records<R> {
    type Item = (u64, Vec<u8>);

    fn next(&mut self) -> Option<Self::Item> {
        let mut record = Vec::new();
        let number = self.read_into(&mut record)?;
        record.pop();
        Some((number, record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_and_without_a_final_newline() {
        let records: Vec<_> = Records::new(&b"a\n\nb"[..], b'\n').collect();
        assert_eq!(
            records,
            [(1, b"a".to_vec()), (2, b"".to_vec()), (3, b"b".to_vec())]
        );
        assert_eq!(Records::new(&b""[..], b'\n').count(), 0);
    }

    #[test]
    fn nul_records_keep_newlines() {
        let records: Vec<_> = Records::new(&b"a\nb\0c\0"[..], 0).map(|r| r.1).collect();
        assert_eq!(records, [b"a\nb".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn a_record_is_buffered_when_its_separator_is() {
        let mut records = Records::new(&b"a\nb"[..], b'\n');
        assert!(records.record_buffered());
        let mut buf = Vec::new();
        assert_eq!(records.read_into(&mut buf), Some(1));
        assert!(!records.record_buffered());
        assert_eq!(records.read_into(&mut buf), Some(2));
        assert_eq!(buf, b"a\nb\n");
    }
}
