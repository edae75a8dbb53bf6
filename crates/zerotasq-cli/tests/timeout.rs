//! `--timeout`: a line that hangs its worker is killed, retried, then reported; the others
//! are answered.

mod common;
use common::*;

#[test]
fn hanging_line_times_out() {
    let worker = sh(r#"while IFS= read -r l; do
        [ "$l" = 4 ] && sleep 1000
        printf '%s\n' "$l"
    done"#);
    let mut command = zerotasq();
    command
        .args(["-j", "2", "--retries", "2", "--timeout", "300ms", "--"])
        .args(worker);
    let out = run(command, numbers(10));
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let expected: Vec<String> = (1..=10)
        .filter(|&i| i != 4)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(out.lines(), expected);
    assert!(
        out.stderr.contains("line 4 failed after 2 tries"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("timed out after 300ms"),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_duration_is_a_usage_error() {
    let mut command = zerotasq();
    command.args(["--timeout", "soon", "--", "cat"]);
    let out = run(command, Vec::new());
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.contains("invalid duration"), "{}", out.stderr);
}
