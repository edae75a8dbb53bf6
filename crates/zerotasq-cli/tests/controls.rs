//! Controls for long-lived workers, through the real binary: a time limit per line, workers
//! recycled (line count, memory), a slot, variables and a device per worker, thread limits.

mod common;
use common::*;

use std::collections::BTreeSet;

fn distinct(lines: &[String]) -> BTreeSet<String> {
    lines.iter().cloned().collect()
}

#[test]
fn a_hung_line_times_out_at_its_place_packed_or_not() {
    for packing in [None, Some("--no-pack")] {
        let worker = sh(r#"while IFS= read -r l; do
            [ "$l" = 18 ] && sleep 1000
            printf '%s\n' "$l"
        done"#);
        let mut command = zerotasq();
        command.args(["-j", "2", "--retries", "2", "--timeout", "1s"]);
        command.args(packing).arg("--").args(worker);
        let out = run(command, numbers(40));
        assert_eq!(out.status.code(), Some(1), "{packing:?}: {}", out.stderr);
        let expected: Vec<String> = (1..=40)
            .filter(|&i| i != 18)
            .map(|i| i.to_string())
            .collect();
        assert_eq!(out.lines(), expected, "{packing:?}");
        assert!(
            out.stderr.contains("line 18 failed after 2 tries"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("timed out after 1s"), "{}", out.stderr);
    }
}

#[test]
fn a_leaking_worker_is_replaced_and_every_line_is_answered_once() {
    let worker = [
        "python3",
        "-c",
        "import os, sys\nhoard = []\nfor line in sys.stdin:\n    hoard.append(b'x' * (20 << 20))\n    print(os.getpid(), flush=True)\n",
    ];
    let mut command = zerotasq();
    command
        .args(["-j", "1", "--max-worker-memory", "200MiB", "--"])
        .args(worker);
    let out = run(command, numbers(30));
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let pids = out.lines();
    assert_eq!(pids.len(), 30);
    assert!(
        distinct(&pids).len() >= 3,
        "600 MiB under 200 MiB: {pids:?}"
    );
    assert!(out.stderr.contains("0 failed"), "{}", out.stderr);
}

#[test]
fn workers_are_recycled_every_n_lines() {
    let worker = sh(r#"while IFS= read -r l; do echo $$; done"#);
    let mut command = zerotasq();
    command
        .args([
            "-j",
            "2",
            "--no-pack",
            "--max-tasks-per-worker",
            "10",
            "--stats",
            "json",
            "--",
        ])
        .args(worker);
    let out = run(command, numbers(200));
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let pids = out.lines();
    assert_eq!(pids.len(), 200);
    assert!(
        distinct(&pids).len() >= 15,
        "~10 lines each: {}",
        distinct(&pids).len()
    );
    assert!(
        !out.stderr.contains("\"deaths\":1"),
        "no worker died: {}",
        out.stderr
    );
    assert_eq!(out.said("\"deaths\":0"), 2, "{}", out.stderr);
}

#[test]
fn each_worker_keeps_its_slot_variables_device_and_arguments_across_a_death() {
    // Slot 1's first command dies on its 20th line; its replacement must look the same.
    let dir = std::env::temp_dir().join(format!("zerotasq-controls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("died");
    let script = format!(
        r#"n=0; while IFS= read -r l; do
            n=$((n+1))
            if [ "$ZEROTASQ_SLOT" = 1 ] && [ $n = 20 ] && [ ! -e {m} ]; then touch {m}; exit 1; fi
            sleep 0.005
            echo "$ZEROTASQ_SLOT $SHARD $CUDA_VISIBLE_DEVICES $0"
        done"#,
        m = marker.display()
    );
    let mut command = zerotasq();
    command
        .args([
            "-j",
            "2",
            "--no-pack",
            "--env",
            "SHARD=shard-{slot}",
            "--devices",
            "gpu-a,gpu-b",
        ])
        .args(["--", "sh", "-c", &script, "arg-{slot}"]);
    let out = run(command, numbers(200));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(marker.to_str().is_some());
    let expected: BTreeSet<String> = ["0 shard-0 gpu-a arg-0", "1 shard-1 gpu-b arg-1"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(distinct(&out.lines()), expected);
    assert_eq!(out.lines().len(), 200);
}

#[test]
fn math_libraries_get_a_share_of_the_cores_unless_told_otherwise() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let worker = sh(r#"while IFS= read -r l; do echo "$OMP_NUM_THREADS $MKL_NUM_THREADS"; done"#);
    let share = (cores / 2).max(1);
    let mut command = zerotasq();
    command
        .env_remove("OMP_NUM_THREADS")
        .env_remove("MKL_NUM_THREADS");
    command.args(["-j", "2", "--"]).args(worker);
    let out = run(command, numbers(20));
    assert_eq!(
        distinct(&out.lines()),
        BTreeSet::from([format!("{share} {share}")])
    );

    let mut command = zerotasq();
    command
        .env("OMP_NUM_THREADS", "5")
        .env_remove("MKL_NUM_THREADS");
    command
        .args(["-j", "2", "--threads-per-worker", "3", "--"])
        .args(worker);
    let out = run(command, numbers(20));
    assert_eq!(
        distinct(&out.lines()),
        BTreeSet::from(["5 3".to_string()]),
        "the user's own setting wins"
    );
}

#[test]
fn bad_controls_are_usage_errors_that_say_what_is_wrong() {
    for (args, wanted) in [
        (vec!["--max-worker-memory", "12XB"], "invalid size"),
        (vec!["--max-worker-age", "0s"], "must be positive"),
        (vec!["--max-tasks-per-worker", "0"], "0"),
        (vec!["--env", "NOEQUALS"], "expected NAME=VALUE"),
        (vec!["--env", "A=x{rank}"], "unknown field {rank}"),
        (vec!["--devices", ","], "--devices"),
        (vec!["--threads-per-worker", "0"], "0"),
    ] {
        let mut command = zerotasq();
        command.args(&args).args(["--", "cat"]);
        let out = run(command, numbers(3));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(wanted), "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{args:?}: nothing ran");
    }
}
