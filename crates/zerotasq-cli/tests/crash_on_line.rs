//! A worker that crashes on one line: the line is retried on fresh workers, then reported
//! with its number and the worker's last stderr lines; every other answer is written; the
//! exit status says a task failed.

mod common;
use common::*;

#[test]
fn poison_line_is_retried_then_reported() {
    let worker = sh(r#"while IFS= read -r l; do
        if [ "$l" = 13 ]; then echo "boom on $l" >&2; exit 3; fi
        printf '%s\n' "$l"
    done"#);
    let mut command = zerotasq();
    command
        .args(["-j", "2", "--retries", "3", "--"])
        .args(worker);
    let out = run(command, numbers(50));
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let expected: Vec<String> = (1..=50)
        .filter(|&i| i != 13)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(out.lines(), expected);
    assert!(
        out.stderr.contains("line 13 failed after 3 tries"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("exited with status 3"),
        "{}",
        out.stderr
    );
    // Passed through with the worker's number, and repeated under the failure.
    assert_eq!(out.said("] boom on 13"), 4, "{}", out.stderr);
    assert!(out.stderr.contains("  [w"), "{}", out.stderr);
    assert!(out.stderr.contains("50 tasks, 1 failed"), "{}", out.stderr);
}

#[test]
fn fail_fast_stops_at_the_first_failure() {
    let worker = sh(r#"while IFS= read -r l; do
        [ "$l" = 5 ] && exit 1
        printf '%s\n' "$l"
    done"#);
    let mut command = zerotasq();
    // One try: the lines queued behind the culprit are handed back uncharged.
    command
        .args(["-j", "1", "--retries", "1", "--fail-fast", "--"])
        .args(worker);
    let out = run(command, numbers(100_000));
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert_eq!(out.lines(), ["1", "2", "3", "4"]);
    assert!(out.stderr.contains("line 5 failed"), "{}", out.stderr);
}
