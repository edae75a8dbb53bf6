//! `--unordered` yields every answer exactly once, in whatever order they complete.

mod common;
use common::*;

#[test]
fn every_answer_exactly_once() {
    let worker = sh(r#"while IFS= read -r l; do
        case "$l" in *3) sleep 0.02;; esac
        printf '%s\n' "$l"
    done"#);
    let mut command = zerotasq();
    command.args(["--unordered", "-j", "3", "--"]).args(worker);
    let out = run(command, numbers(1000));
    assert!(out.status.success(), "{}", out.stderr);
    let mut got: Vec<u64> = out.lines().iter().map(|l| l.parse().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, (1..=1000).collect::<Vec<u64>>());
}
