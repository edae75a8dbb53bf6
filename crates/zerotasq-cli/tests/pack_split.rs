//! Tiny lines travel in packs; a command that dies inside a pack has the pack split: the
//! answers it gave are kept, the rest run again one by one, and only the guilty line fails,
//! reported with its own line number after exactly `--retries` tries — from a file (the
//! engine's stream) and from a pipe (its connector).

mod common;
use common::*;

const LINES: u64 = 200_000;
const GUILTY: u64 = 150_000;

fn worker() -> [&'static str; 3] {
    sh(r#"while IFS= read -r l; do
        if [ "$l" = 150000 ]; then echo "boom on $l" >&2; exit 3; fi
        printf '%s\n' "$l"
    done"#)
}

fn check(out: &Output, retries: u32) {
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let expected: Vec<String> = (1..=LINES)
        .filter(|&i| i != GUILTY)
        .map(|i| i.to_string())
        .collect();
    assert!(out.lines() == expected, "output differs: {}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("line {GUILTY} failed after {retries} tries")),
        "{}",
        out.stderr
    );
    // Each try passed its stderr through once; the report repeats the last one.
    assert_eq!(
        out.said("] boom on 150000"),
        retries as usize + 1,
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("{LINES} tasks, 1 failed")),
        "{}",
        out.stderr
    );
}

#[test]
fn a_death_inside_a_pack_fails_only_its_line() {
    let dir = std::env::temp_dir().join(format!("zerotasq-pack-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.txt");
    std::fs::write(&input, numbers(LINES)).unwrap();
    let mut command = zerotasq();
    command
        .args(["-j", "2", "--retries", "2", "-i"])
        .arg(&input)
        .arg("--")
        .args(worker());
    let out = run(command, Vec::new());
    std::fs::remove_dir_all(&dir).unwrap();
    check(&out, 2);
}

#[test]
fn a_death_inside_a_pack_from_a_pipe_fails_only_its_line() {
    let mut command = zerotasq();
    command
        .args(["-j", "2", "--retries", "3", "--"])
        .args(worker());
    let out = run(command, numbers(LINES));
    check(&out, 3);
}
