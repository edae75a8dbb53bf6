//! The `zerotasq` command line: `zerotasq map -j 4 -- python3 score.py < in.jsonl`.
//!
//! # Layout
//! - `args` — the command line (clap), with examples in `--help`; `duration` parses `2s`.
//! - `run` — `zerotasq map`: the pool, the input, signals.
//! - `outcomes` — one run's stream: the start-up check, answers written in order, failures
//!   reported, split packs run again, the summary.
//! - `adapter` — the hidden `__adapter` mode: each pool worker is this binary re-executed,
//!   owning one long-lived child that runs the user's command over the line protocol.
//! - `worker_command` — starting that child, forwarding its stderr, describing its end.
//! - `payload` — the bytes between the CLI and its adapters (record numbers, worker numbers).
//! - `events` — the side pipe from adapters to the CLI (stderr lines, deaths, start failures);
//!   `monitor` — the CLI's reader of it.
//! - `pack` — adaptive packs of records per engine task (tiny lines go fast).
//! - `input` — lazy records from stdin or a file; `progress` — the bar; `summary` — the end.
//! - `joblog` — `--joblog`/`--resume`: finished records logged, a killed run resumed.
//! - `keys` — `zerotasq keygen`, and CURVE keys for the commands below.
//! - `broker` — `zerotasq broker`: a standalone broker on TCP (no local workers).
//! - `join` — `zerotasq worker`: N adapters joining a remote broker, restarted with back-off.
//! - `status` — `zerotasq status`: a broker's clients, workers and rates, as a table or JSON.
//! - `signals` — Ctrl-C as a message to the main thread; `wake` — an eventfd for poll loops.

mod adapter;
mod adapter_args;
mod args;
mod broker;
mod controls;
mod duration;
mod events;
mod input;
mod joblog;
mod join;
mod keys;
mod monitor;
mod outcomes;
mod pack;
mod payload;
mod progress;
mod run;
mod signals;
mod status;
mod summary;
mod wake;
mod worker_command;

use clap::Parser;

fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == adapter_args::ADAPTER_ARG) {
        std::process::exit(adapter::main(&argv[2..]));
    }
    let cli = args::Cli::parse();
    let code = match cli.command {
        args::Command::Map(map) => run::map(map),
        args::Command::Keygen(keygen) => keys::keygen(keygen),
        args::Command::Broker(broker) => broker::broker(broker),
        args::Command::Worker(worker) => join::worker(worker),
        args::Command::Status(status) => status::status(status),
    };
    std::process::exit(code);
}
