//! Answers come out in input order, although workers answer at different speeds.

mod common;
use common::*;

#[test]
fn output_is_in_input_order() {
    // Lines ending in 7 are slow, so later lines overtake them inside the pool.
    let worker = sh(r#"while IFS= read -r l; do
        case "$l" in *77) sleep 0.05;; esac
        printf 'got %s\n' "$l"
    done"#);
    let mut command = zerotasq();
    command.args(["-j", "3", "--"]).args(worker);
    let out = run(command, numbers(2000));
    assert!(out.status.success(), "{}", out.stderr);
    let expected: Vec<String> = (1..=2000).map(|i| format!("got {i}")).collect();
    assert_eq!(out.lines(), expected);
    assert!(
        out.stderr.contains("2000 tasks, 0 failed"),
        "{}",
        out.stderr
    );
}

#[test]
fn nul_separated_records_keep_their_newlines() {
    let mut command = zerotasq();
    command.args(["-0", "-j", "2", "--", "cat"]);
    let input = b"one\ntwo\0three\0\0four".to_vec();
    let out = run(command, input);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, b"one\ntwo\0three\0\0four\0");
}
