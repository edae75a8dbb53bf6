//! A worker command that dies on one line hands back the lines queued behind it uncharged:
//! with `--retries 1`, only the guilty line fails, again and again across many deaths.

mod common;
use common::*;

#[test]
fn only_the_guilty_lines_are_charged() {
    // Every 500th line kills the command: 4 deaths, each with lines queued behind it.
    let worker = sh(r#"while IFS= read -r l; do
        case "$l" in *500|*000) echo "boom on $l" >&2; exit 3;; esac
        printf '%s\n' "$l"
    done"#);
    let mut command = zerotasq();
    command
        .args(["-j", "2", "--retries", "1", "--"])
        .args(worker);
    let out = run(command, numbers(2000));
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let expected: Vec<String> = (1..=2000)
        .filter(|i| i % 500 != 0)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(out.lines(), expected, "{}", out.stderr);
    assert!(
        out.stderr.contains("2000 tasks, 4 failed"),
        "{}",
        out.stderr
    );
    for i in (500..=2000).step_by(500) {
        assert!(
            out.stderr.contains(&format!("line {i} failed")),
            "{}",
            out.stderr
        );
    }
}
