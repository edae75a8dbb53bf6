//! `zerotasq map --joblog FILE [--resume]`: a record of each finished input record, and
//! resuming a run from it.
//!
//! The file is text, one tab-separated line per finished record, appended as outcomes are
//! handled: its number, the worker's host and slot, when it finished, its share of its
//! pack's run time, `ok` or `failed`, a hash of the input record, and its answer (or, for
//! a failure, the error), escaped (`\\`, `\t`, `\n`, `\r`, `\0`). Three `#` lines first name
//! the format, the command and the separator.
//!
//! The contract, unlike GNU parallel's `--resume` (which runs only what is left and lets
//! the caller append the output): a resumed run writes the *whole* output again, in order —
//! the answers of records done before come from the joblog, the rest from the workers — so
//! it writes exactly what an undisturbed run writes, however the first run ended (`kill -9`
//! included), and `> out` is the way to collect it. That costs the joblog the size of the
//! output. A line cut short by a kill is ignored and overwritten. With `--unordered` the same
//! lines come out, the ones done before first.
//!
//! A joblog is refused — before anything is run or written — when it was written for another
//! command or separator, when the input's record at a logged number hashes differently, or
//! when the input ends before a logged number; a joblog that exists is not started afresh
//! without `--resume`.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::input::{Buffered, InputHashes, Records};

/// The first line of every joblog.
const MAGIC: &str = "# zerotasq joblog 1";
const COLUMNS: &str = "Seq\tHost\tSlot\tFinished\tRuntime\tOutcome\tInput\tOutput";

/// What a run is, as its joblog names it: the command (or the broker it used) and the
/// separator. A joblog written for another is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunIdentity {
    pub command: String,
    pub separator: u8,
}

impl RunIdentity {
    fn header(&self) -> String {
        let separator = if self.separator == 0 {
            "nul"
        } else {
            "newline"
        };
        format!(
            "{MAGIC}\n# command: {}\n# separator: {separator}\n{COLUMNS}\n",
            escape(self.command.as_bytes())
        )
    }
}

/// A record finished in an earlier run, as its joblog tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// The answer (without separator), or the error of a failed record.
    output: Vec<u8>,
    ok: bool,
    input_hash: u64,
}

/// The joblog of a run: where new records go, and the records done before, still to be
/// written to the output at their place.
pub struct JobLog {
    file: BufWriter<File>,
    path: PathBuf,
    replay: BTreeMap<u64, Done>,
    /// Hashes of the records sent and not yet logged.
    inputs: InputHashes,
}

/// One finished record, for [`JobLog::log`].
pub struct Finished<'a> {
    pub record: u64,
    pub host: &'a str,
    pub slot: u32,
    pub runtime: Option<Duration>,
    pub ok: bool,
    /// The answer (without separator), or the error.
    pub output: &'a [u8],
}

impl JobLog {
    /// Opens the joblog at `path` for `run`: a new one, or with `resume` the one there
    /// (whose records are checked against `records`' input, read ahead as far as the
    /// joblog goes). Nothing is written before every check has passed.
    pub fn open<R: Buffered>(
        path: &Path,
        resume: bool,
        run: &RunIdentity,
        records: &mut Records<R>,
    ) -> Result<JobLog, String> {
        let shown = path.display();
        let existing = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if existing > 0 && !resume {
            return Err(format!(
                "the joblog {shown} exists: --resume continues its run, or remove it"
            ));
        }
        let (replay, keep) = if existing > 0 {
            let file = File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
            let (done, keep) = read(BufReader::new(file), run)
                .map_err(|why| format!("cannot resume from the joblog {shown}: {why}"))?;
            check_input(&done, records)
                .map_err(|why| format!("cannot resume from the joblog {shown}: {why}"))?;
            (done, keep)
        } else {
            (BTreeMap::new(), 0)
        };
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(path)
            .map_err(|e| format!("cannot write the joblog {shown}: {e}"))?;
        // A line cut short by a kill goes; a new joblog gets its header.
        file.set_len(keep)
            .and_then(|()| file.seek(SeekFrom::End(0)))
            .and_then(|_| match keep {
                0 => file.write_all(run.header().as_bytes()),
                _ => Ok(()),
            })
            .map_err(|e| format!("cannot write the joblog {shown}: {e}"))?;
        let inputs = InputHashes::default();
        records.hash_into(inputs.clone());
        Ok(JobLog {
            file: BufWriter::with_capacity(256 << 10, file),
            path: path.to_path_buf(),
            replay,
            inputs,
        })
    }

    /// Records done before that come before `record`, removed, in order: each answer is
    /// written to `out` (with `separator`). How many were answered, and the failed ones
    /// with their errors.
    pub fn replay_before(
        &mut self,
        record: u64,
        separator: u8,
        out: &mut impl Write,
    ) -> std::io::Result<(u64, Vec<(u64, String)>)> {
        let (mut answered, mut failed) = (0, Vec::new());
        while let Some(entry) = self.replay.first_entry() {
            if *entry.key() >= record {
                break;
            }
            let (number, done) = entry.remove_entry();
            if done.ok {
                answered += 1;
                out.write_all(&done.output)?;
                out.write_all(&[separator])?;
            } else {
                failed.push((number, String::from_utf8_lossy(&done.output).into_owned()));
            }
        }
        Ok((answered, failed))
    }

    /// Appends a finished record.
    pub fn log(&mut self, f: &Finished<'_>) -> Result<(), String> {
        let finished = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let input_hash = self
            .inputs
            .lock()
            .expect("hashes lock")
            .remove(&f.record)
            .unwrap_or_default();
        let runtime = f
            .runtime
            .map_or_else(|| "-".to_string(), |d| format!("{:.6}", d.as_secs_f64()));
        let line = format!(
            "{}\t{}\t{}\t{finished:.3}\t{runtime}\t{}\t{:016x}\t",
            f.record,
            escape(f.host.as_bytes()),
            f.slot,
            if f.ok { "ok" } else { "failed" },
            input_hash,
        );
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.write_all(escape(f.output).as_bytes()))
            .and_then(|()| self.file.write_all(b"\n"))
            .map_err(|e| format!("cannot write the joblog {}: {e}", self.path.display()))
    }

    pub fn flush(&mut self) -> Result<(), String> {
        self.file
            .flush()
            .map_err(|e| format!("cannot write the joblog {}: {e}", self.path.display()))
    }
}

/// The records a joblog holds, by number, and how many of its bytes are whole lines.
fn read(mut reader: impl BufRead, run: &RunIdentity) -> Result<(BTreeMap<u64, Done>, u64), String> {
    let mut header = String::new();
    for _ in 0..4 {
        reader
            .read_line(&mut header)
            .map_err(|e| format!("cannot read it: {e}"))?;
    }
    if !header.starts_with(MAGIC) {
        return Err("it is not a zerotasq joblog".into());
    }
    if header != run.header() {
        let theirs = header.lines().nth(1).unwrap_or_default();
        return Err(format!(
            "it was written for another run ({}; this one is {})",
            theirs.trim_start_matches("# "),
            run.header()
                .lines()
                .nth(1)
                .unwrap_or_default()
                .trim_start_matches("# "),
        ));
    }
    let mut kept = header.len() as u64;
    let mut done = BTreeMap::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("cannot read it: {e}"))?;
        if n == 0 || line.last() != Some(&b'\n') {
            break; // the end, or a line cut short by a kill
        }
        let text = String::from_utf8_lossy(&line[..n - 1]);
        let fields: Vec<&str> = text.split('\t').collect();
        let parsed = match fields[..] {
            [seq, _host, _slot, _finished, _runtime, outcome, input, output] => seq
                .parse::<u64>()
                .ok()
                .zip(u64::from_str_radix(input, 16).ok())
                .map(|(seq, input_hash)| {
                    let done = Done {
                        output: unescape(output),
                        ok: outcome == "ok",
                        input_hash,
                    };
                    (seq, done)
                }),
            _ => None,
        };
        let Some((seq, entry)) = parsed else {
            return Err(format!("line {} is not a joblog entry", done.len() + 5));
        };
        done.insert(seq, entry);
        kept += n as u64;
    }
    Ok((done, kept))
}

/// Reads the input as far as the joblog goes: each record done must be the one logged
/// (same hash); those not done are set aside, to be run first.
fn check_input<R: Buffered>(
    done: &BTreeMap<u64, Done>,
    records: &mut Records<R>,
) -> Result<(), String> {
    let Some(&last) = done.keys().next_back() else {
        return Ok(());
    };
    let mut ahead = VecDeque::new();
    let mut buf = Vec::new();
    while records.next_number() <= last {
        buf.clear();
        let Some(number) = records.read_ahead(&mut buf) else {
            return Err(format!(
                "it records record {last}, but the input ends at record {}",
                records.next_number() - 1
            ));
        };
        match done.get(&number) {
            Some(entry) if entry.input_hash != hash(&buf[..buf.len() - 1]) => {
                return Err(format!(
                    "it is the joblog of another input (record {number} differs); nothing was \
                     run or written"
                ));
            }
            Some(_) => {}
            None => ahead.push_back((number, buf.clone())),
        }
    }
    records.set_aside(ahead);
    Ok(())
}

/// FNV-1a, 64 bits: a stable hash of an input record (it tells inputs apart; it is no
/// defence against a forged one).
pub fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn escape(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => text.push_str("\\\\"),
                '\t' => text.push_str("\\t"),
                '\n' => text.push_str("\\n"),
                '\r' => text.push_str("\\r"),
                '\0' => text.push_str("\\0"),
                c => text.push(c),
            }
        }
        for b in chunk.invalid() {
            text.push_str(&format!("\\x{b:02x}"));
        }
    }
    text
}

fn unescape(text: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut chars = text.bytes();
    while let Some(b) = chars.next() {
        if b != b'\\' {
            bytes.push(b);
            continue;
        }
        match chars.next() {
            Some(b't') => bytes.push(b'\t'),
            Some(b'n') => bytes.push(b'\n'),
            Some(b'r') => bytes.push(b'\r'),
            Some(b'0') => bytes.push(0),
            Some(b'x') => {
                let hex: Vec<u8> = chars.by_ref().take(2).collect();
                let value = std::str::from_utf8(&hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                bytes.push(value.unwrap_or(b'?'));
            }
            Some(other) => bytes.push(other),
            None => bytes.push(b'\\'),
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> RunIdentity {
        RunIdentity {
            command: "python3 w.py".into(),
            separator: b'\n',
        }
    }

    #[test]
    fn escaping_round_trips_any_bytes() {
        let bytes = b"a\tb\\c\nd\re\0f\xffg \xc3\xa9";
        let text = escape(bytes);
        assert!(!text.contains(['\t', '\n']), "{text}");
        assert_eq!(unescape(&text), bytes);
    }

    #[test]
    fn entries_are_read_back_and_a_cut_line_is_dropped() {
        let mut log = run().header();
        log.push_str(&format!(
            "1\th\t1\t0\t0.1\tok\t{:016x}\tA\\tB\n",
            hash(b"x")
        ));
        log.push_str(&format!(
            "3\th\t2\t0\t-\tfailed\t{:016x}\tboom\n",
            hash(b"z")
        ));
        let whole = log.len() as u64;
        log.push_str("4\th\t1\t0\t0.1\tok\t00");
        let (done, kept) = read(log.as_bytes(), &run()).unwrap();
        assert_eq!(kept, whole);
        assert_eq!(done.len(), 2);
        assert_eq!(done[&1].output, b"A\tB");
        assert!(!done[&3].ok);

        let other = RunIdentity {
            command: "cat".into(),
            ..run()
        };
        let err = read(log.as_bytes(), &other).unwrap_err();
        assert!(err.contains("another run (command: python3 w.py"), "{err}");
    }

    #[test]
    fn the_input_is_checked_and_records_not_done_are_set_aside() {
        let mut done = BTreeMap::new();
        for (n, text) in [(1, "x"), (3, "z")] {
            let entry = Done {
                output: Vec::new(),
                ok: true,
                input_hash: hash(text.as_bytes()),
            };
            done.insert(n, entry);
        }
        let mut records = Records::new(&b"x\ny\nz\nw\n"[..], b'\n');
        check_input(&done, &mut records).unwrap();
        let rest: Vec<_> = records.collect();
        assert_eq!(rest, [(2, b"y".to_vec()), (4, b"w".to_vec())]);

        let mut other = Records::new(&b"x\ny\nQ\n"[..], b'\n');
        let err = check_input(&done, &mut other).unwrap_err();
        assert!(err.contains("another input (record 3 differs)"), "{err}");
        let mut short = Records::new(&b"x\n"[..], b'\n');
        let err = check_input(&done, &mut short).unwrap_err();
        assert!(err.contains("the input ends at record 1"), "{err}");
    }
}
