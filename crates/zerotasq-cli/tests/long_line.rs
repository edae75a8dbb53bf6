//! A line of 1 MiB goes through whole, between ordinary lines.

mod common;
use common::*;

#[test]
fn one_mebibyte_line() {
    let big: String = (0..(1 << 20))
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let input = format!("first\n{big}\nlast\n");
    let mut command = zerotasq();
    command.args(["-j", "2", "--", "cat"]);
    let out = run(command, input.clone().into_bytes());
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout.len(), input.len());
    assert!(
        out.stdout == input.as_bytes(),
        "the output differs from the input"
    );
}
