//! Worker commands and peers that break the line protocol get a clear error, never a wrong
//! answer with a clean exit: a command that writes two lines per line, one that prints a
//! banner first, a malformed pack or another face's task from a client of the broker, and a
//! worker whose key the broker refuses. Commands that are slow to answer, exit after every
//! line, or never answer are told about on stderr the first time, and the last is given up.

mod common;
use common::broker::{bin, keygen, start_broker, Guard, TempDir};
use common::*;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;
use zerotasq::protocol::{header, Command, Message, Outcome, TaskBatchWriter};

#[test]
fn a_command_writing_two_lines_per_line_stops_the_run_with_a_clear_error() {
    let worker = sh(r#"while IFS= read -r l; do echo "$l"; echo extra; done"#);
    let mut command = zerotasq();
    command.args(["-j", "1", "--"]).args(worker);
    let out = run(command, b"a\nb\nc\nd\n".to_vec());
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("wrote more lines than it was given"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("0 failed"), "{}", out.stderr);
}

#[test]
fn a_command_printing_a_banner_first_fails_the_start_and_says_why() {
    let worker = sh(r#"echo "Loading model"; while IFS= read -r l; do echo "$l"; done"#);
    let mut command = zerotasq();
    command.args(["-j", "2", "--"]).args(worker);
    let out = run(command, numbers(10));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "nothing misplaced is written");
    assert!(
        out.stderr.contains("before it was given a line"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("Loading model"), "{}", out.stderr);
}

#[test]
fn a_command_silent_past_the_warning_is_warned_about_once() {
    // Both workers hold their first line for a second (a model loading lazily, or output
    // stuck in a buffer): one warning for the run, then the answers as usual.
    let worker = sh(r#"read l; sleep 1; echo "$l"; while IFS= read -r l; do echo "$l"; done"#);
    let mut command = zerotasq();
    command
        .args(["-j", "2", "--no-pack", "--warn-silent", "200ms", "--"])
        .args(worker);
    let out = run(command, numbers(20));
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, numbers(20));
    assert_eq!(
        out.said("has written nothing for 200ms"),
        1,
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("flush=True"), "{}", out.stderr);
}

#[test]
fn a_command_that_exits_after_each_line_is_told_once_and_still_answers_all() {
    let worker = sh(r#"IFS= read -r l && echo "$l""#);
    let mut command = zerotasq();
    command.args(["-j", "2", "--"]).args(worker);
    let out = run(command, numbers(60));
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, numbers(60));
    assert_eq!(out.said("before its stdin ended"), 1, "{}", out.stderr);
}

#[test]
fn a_command_that_never_answers_is_given_up_after_a_few_deaths() {
    // Without giving up, each of the 10,000 lines would cost its retries' worth of starts.
    let worker = sh("IFS= read -r l; exit 3");
    let mut command = zerotasq();
    command.args(["-j", "2", "--"]).args(worker);
    let out = run(command, numbers(10_000));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("never answered a line") && out.stderr.contains("status 3"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "nothing answered, nothing written");
}

/// A broker on loopback (plain TCP) with one `zerotasq worker` echoing lines.
fn broker_and_worker(dir: &TempDir) -> (Guard, Guard, String) {
    let mut command = bin();
    command
        .args(["broker", "--insecure", "--clients", "tcp://127.0.0.1:0"])
        .args(["--workers", "tcp://127.0.0.1:0"])
        .current_dir(dir.path(""));
    let (broker, fields) = start_broker(command, &["clients", "workers"]);
    let worker = common::http::workers(&fields[1], 1, "cat");
    (broker, worker, fields[0].clone())
}

/// Submits raw task payloads as a foreign client; their outcomes, in order.
fn submit_raw(clients: &str, payloads: &[Vec<u8>]) -> Vec<Result<Vec<u8>, String>> {
    let ctx = zmq::Context::new();
    let socket = ctx.socket(zmq::DEALER).unwrap();
    socket.connect(clients).unwrap();
    let mut batch = TaskBatchWriter::new();
    for (id, payload) in payloads.iter().enumerate() {
        batch.push(id as u64, payload);
    }
    socket
        .send_multipart([header(Command::Submit).to_vec(), batch.finish()], 0)
        .unwrap();
    let mut outcomes: Vec<Option<Result<Vec<u8>, String>>> = vec![None; payloads.len()];
    while outcomes.iter().any(Option::is_none) {
        assert!(
            socket.poll(zmq::POLLIN, 30_000).unwrap() > 0,
            "no answer: a wedged worker"
        );
        let frames = socket.recv_multipart(0).unwrap();
        if let Ok(Message::Results(results)) = Message::decode(&frames) {
            for (id, outcome) in results.iter() {
                outcomes[id as usize] = Some(match outcome {
                    Outcome::Ok(bytes) => Ok(bytes.to_vec()),
                    Outcome::Err(bytes) => Err(zerotasq::protocol::WireError::decode(bytes)
                        .unwrap()
                        .message
                        .to_string()),
                });
            }
        }
    }
    outcomes.into_iter().map(Option::unwrap).collect()
}

/// A pack as `zerotasq map` sends it: first record, count, flags, then the records.
fn pack(first: u64, count: u32, records: &[u8]) -> Vec<u8> {
    let mut bytes = first.to_le_bytes().to_vec();
    bytes.extend_from_slice(&count.to_le_bytes());
    bytes.push(0);
    bytes.extend_from_slice(records);
    bytes
}

#[test]
fn a_malformed_pack_or_another_faces_task_is_an_error_and_wedges_nothing() {
    let dir = TempDir::new("misuse-raw");
    let (_broker, _worker, clients) = broker_and_worker(&dir);
    let outcomes = submit_raw(
        &clients,
        &[
            pack(1, 5, b"only one\n"),
            b"\x80\x05\x95pickled by python".to_vec(),
            pack(7, 2, b"good\nlines\n"),
        ],
    );
    let first = outcomes[0].as_ref().unwrap_err();
    assert!(first.contains("malformed task payload"), "{first}");
    let second = outcomes[1].as_ref().unwrap_err();
    assert!(
        second.contains("command-line worker") && second.contains("Python"),
        "{second}"
    );
    let third = outcomes[2].as_ref().expect("the worker is not wedged");
    assert!(
        third.ends_with(b"good\nlines\n"),
        "{:?}",
        String::from_utf8_lossy(third)
    );
}

#[test]
fn a_worker_whose_key_is_refused_says_so() {
    let dir = TempDir::new("misuse-stranger");
    keygen(&dir, "client");
    keygen(&dir, "stranger");
    let (_broker, _clients, workers) = common::broker::broker(&dir, &["client"]);
    let mut stranger = bin()
        .args(["worker", "--connect", &workers, "--server-key"])
        .arg(dir.path("broker.key"))
        .arg("--key")
        .arg(dir.path("stranger.key_secret"))
        .args(["-j", "1", "--", "cat"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = stranger.stderr.take().unwrap();
    let guard = Guard(stranger);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut said = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        let refused = line.contains("refused our key");
        said.push(line);
        if refused {
            drop(guard);
            return;
        }
    }
    panic!("the stranger said nothing about its key: {said:?}");
}

#[test]
fn lines_and_answers_over_the_limit_fail_at_their_place_and_nothing_hangs() {
    // Line 2 is 2 MiB; the answer to "big" is 2 MiB; the limit is 1 MiB.
    let worker = sh(r#"while IFS= read -r l; do
        if [ "$l" = big ]; then head -c 2097152 /dev/zero | tr '\0' x; echo; else echo "${#l}"; fi
    done"#);
    let mut input = b"a\n".to_vec();
    input.extend(std::iter::repeat_n(b'y', 2 << 20));
    input.extend_from_slice(b"\nbig\nd\n");
    let mut command = zerotasq();
    command
        .args(["-j", "2", "--no-pack", "--max-message", "1MiB", "--"])
        .args(worker);
    let out = run(command, input);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert_eq!(
        out.lines(),
        ["1", "1"],
        "the lines within the limit are answered"
    );
    assert!(
        out.stderr.contains("line 2 failed") && out.stderr.contains("the task is"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("line 3 failed") && out.stderr.contains("the answer is"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("over the limit of"), "{}", out.stderr);
}
