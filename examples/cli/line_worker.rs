//! A zerotasq line-protocol worker in Rust: answers each line with the line upper-cased.
//!
//! ```text
//! cargo build --release --example line_worker
//! zerotasq map -j 4 -- target/release/examples/line_worker < lines.txt
//! ```
//!
//! The protocol: read one line from stdin, write exactly one line to stdout, flush. Rust's
//! `stdout()` is line-buffered, but locking it and flushing explicitly states the rule.
//! `STARTUP_MS` and `WORK_MS` make it sleep at start and per line (the benchmark's worker).

use std::io::{BufRead, Write};
use std::time::Duration;

fn millis(name: &str) -> Duration {
    let ms = std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Duration::from_millis(ms)
}

fn main() -> std::io::Result<()> {
    // Stands for loading a model: once per worker.
    std::thread::sleep(millis("STARTUP_MS"));
    let work = millis("WORK_MS");
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.split(b'\n') {
        let mut line = line?;
        if !work.is_zero() {
            std::thread::sleep(work);
        }
        line.make_ascii_uppercase();
        line.push(b'\n');
        stdout.write_all(&line)?;
        stdout.flush()?;
    }
    Ok(())
}
