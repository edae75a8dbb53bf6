//! No input: no output, success.

mod common;
use common::*;

#[test]
fn empty_input_succeeds_with_no_output() {
    let mut command = zerotasq();
    command.args(["-j", "2", "--", "cat"]);
    let out = run(command, Vec::new());
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.is_empty());
    assert!(out.stderr.contains("0 tasks, 0 failed"), "{}", out.stderr);
}
