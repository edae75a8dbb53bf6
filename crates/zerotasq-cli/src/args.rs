//! The command line, as clap sees it: `zerotasq map [OPTIONS] -- COMMAND [ARGS]...`.

use crate::controls::WorkerControls;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

const MAP_EXAMPLES: &str = "\
Examples:
  # Score a JSONL file with 4 long-lived Python workers, results in input order:
  zerotasq map -j 4 -- python3 score.py < in.jsonl > out.jsonl

  # As they complete, give up on a line after 30 s, stop at the first failure:
  zerotasq map --unordered --timeout 30s --fail-fast -- ./worker.sh < tasks.txt

  # NUL-separated records (e.g. from `find -print0`), per-worker figures as JSON:
  find . -name '*.txt' -print0 | zerotasq map -0 --stats json -- ./wc-worker

The worker protocol: each worker is started once and then reads one task line on its
stdin and writes exactly one answer line on its stdout, flushing after each line. Its
stderr is passed through, prefixed with the worker's number. See docs/cli.md.

Exit status: 0 all tasks succeeded; 1 some tasks failed; 2 usage error, unreadable input,
or the command could not start; 130 interrupted (Ctrl-C).";

#[derive(Debug, Parser)]
#[command(
    name = "zerotasq",
    version,
    about = "Stream lines through a pool of long-lived worker processes",
    long_about = "Stream lines through a pool of long-lived worker processes, in any language.\n\
                  Each worker is started once (so a model loads once) and answers one line per task."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every input line through COMMAND, started once per worker.
    #[command(after_help = MAP_EXAMPLES)]
    Map(MapArgs),
    /// Write a CURVE key pair: NAME.key (the public key, to share) and NAME.key_secret
    /// (mode 0600, to keep).
    #[command(after_help = KEYGEN_EXAMPLES)]
    Keygen(KeygenArgs),
    /// Run a standalone broker on TCP: clients (`zerotasq map --connect`) and workers
    /// (`zerotasq worker --connect`) from any machine meet there.
    #[command(after_help = BROKER_EXAMPLES)]
    Broker(BrokerArgs),
    /// Join a remote broker with N workers, each running COMMAND once (restarted when it
    /// exits, and when the broker restarts).
    #[command(after_help = WORKER_EXAMPLES)]
    Worker(WorkerArgs),
    /// Show a standalone broker's clients (queue depths, rates), workers and totals.
    #[command(after_help = STATUS_EXAMPLES)]
    Status(StatusArgs),
}

const KEYGEN_EXAMPLES: &str = "\
Examples:
  zerotasq keygen broker      # broker.key, broker.key_secret
  zerotasq keygen alice       # a client's or a worker's keys
  cat alice.key bob.key > allowed.keys   # the broker's --allow list

Exit status: 0 written; 2 a file exists (without --force) or cannot be written.";

const BROKER_EXAMPLES: &str = "\
Examples:
  # CURVE (the default): only the keys listed in allowed.keys may connect.
  zerotasq broker --clients tcp://0.0.0.0:5555 --workers tcp://0.0.0.0:5556 \\
      --key broker.key_secret --allow allowed.keys --status-every 10s

  # Plain TCP, only on loopback (or with --allow-insecure-remote); metrics and a
  # dashboard at http://127.0.0.1:9100/ (Prometheus scrapes /metrics):
  zerotasq broker --insecure --clients tcp://127.0.0.1:5555 --workers tcp://127.0.0.1:5556 \\
      --http 127.0.0.1:9100

The bound endpoints are printed on stdout at start (`clients ENDPOINT`, `workers ENDPOINT`,
`http http://HOST:PORT`; port 0 binds any free port). Ctrl-C stops the broker (exit 130).";

const WORKER_EXAMPLES: &str = "\
Examples:
  zerotasq worker --connect tcp://broker-host:5556 --server-key broker.key \\
      --key worker1.key_secret -j 8 -- python3 score.py

The worker protocol is that of `zerotasq map` (one answer line per task line). The
workers' stderr is passed through, prefixed [wN]. Ctrl-C stops them all (exit 130).";

const STATUS_EXAMPLES: &str = "\
Examples:
  zerotasq status --connect tcp://broker-host:5555 --server-key broker.key --key me.key_secret
  zerotasq status --connect tcp://broker-host:5555 --server-key broker.key --key me.key_secret \\
      --json --watch 5s

The endpoint is the broker's client endpoint (that of `map --connect`); the key must be
in the broker's --allow list. Rates are over the last few seconds.

Exit status: 0 shown; 2 the broker could not be reached (or refused our key) within 5 s,
or a usage error; 130 interrupted (Ctrl-C) while watching.";

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The broker's client endpoint, e.g. tcp://broker-host:5555.
    #[arg(long, value_name = "ENDPOINT")]
    pub connect: String,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Print JSON (one object per line) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Ask again every DURATION (e.g. 2s) until Ctrl-C.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub watch: Option<Duration>,
}

/// How to reach a remote broker.
#[derive(Debug, Clone, clap::Args)]
pub struct RemoteArgs {
    /// The broker's public key: its NAME.key file (or the Z85 key itself).
    #[arg(long, value_name = "FILE")]
    pub server_key: Option<PathBuf>,
    /// Our own key pair: a NAME.key_secret file written by `zerotasq keygen`.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Plain TCP without CURVE (refused off loopback unless --allow-insecure-remote).
    #[arg(long, conflicts_with_all = ["server_key", "key"])]
    pub insecure: bool,
    /// Allow --insecure on a non-loopback address: anyone on the network could connect.
    #[arg(long, requires = "insecure")]
    pub allow_insecure_remote: bool,
}

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Writes NAME.key and NAME.key_secret.
    #[arg(value_name = "NAME")]
    pub name: PathBuf,
    /// Overwrite existing key files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct BrokerArgs {
    /// Where clients connect, e.g. tcp://0.0.0.0:5555 (port 0: any free port).
    #[arg(long, value_name = "ENDPOINT")]
    pub clients: String,
    /// Where workers connect, e.g. tcp://0.0.0.0:5556.
    #[arg(long, value_name = "ENDPOINT")]
    pub workers: String,
    /// The broker's key pair (a NAME.key_secret file).
    #[arg(long, value_name = "FILE", required_unless_present = "insecure")]
    pub key: Option<PathBuf>,
    /// Public keys allowed to connect, one per line (`#` comments); may be repeated.
    #[arg(long, value_name = "FILE", required_unless_present = "insecure")]
    pub allow: Vec<PathBuf>,
    /// Plain TCP without CURVE (refused off loopback unless --allow-insecure-remote).
    #[arg(long, conflicts_with_all = ["key", "allow"])]
    pub insecure: bool,
    /// Allow --insecure on a non-loopback address: anyone on the network could connect.
    #[arg(long, requires = "insecure")]
    pub allow_insecure_remote: bool,
    /// Print a status line on stderr this often (e.g. 10s).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub status_every: Option<Duration>,
    /// Tries per task: a task whose worker died R times is reported as failed.
    #[arg(long, value_name = "R", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub retries: u32,
    /// Connections one address (IPv4, or an IPv6 /64) may hold at once on each endpoint; more
    /// are closed as they are accepted. Raise it for more workers behind one address (a NAT);
    /// 0: no cap.
    #[arg(long, value_name = "N", default_value_t = zerotasq::PoolSpec::MAX_CONNECTIONS_PER_ADDRESS)]
    pub max_connections_per_address: u32,
    /// Serve Prometheus metrics (/metrics) and a live dashboard (/) over HTTP at HOST:PORT,
    /// e.g. 127.0.0.1:9100 (port 0: any free port). Loopback only unless
    /// --allow-remote-http. Read-only.
    #[arg(long, value_name = "HOST:PORT")]
    pub http: Option<String>,
    /// Allow --http on a non-loopback address: anyone who can reach it sees the figures.
    #[arg(long, requires = "http")]
    pub allow_remote_http: bool,
}

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The broker's worker endpoint, e.g. tcp://broker-host:5556.
    #[arg(long, value_name = "ENDPOINT")]
    pub connect: String,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Number of workers [default: the number of cores].
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub jobs: Option<u32>,
    /// Records are separated by NUL instead of newline (must match the client's -0).
    #[arg(short = '0', long = "null")]
    pub null: bool,
    #[command(flatten)]
    pub controls: WorkerControls,
    /// The worker command and its arguments.
    #[arg(value_name = "COMMAND", required = true, num_args = 1.., trailing_var_arg = true)]
    pub command: Vec<OsString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatsFormat {
    /// A one-line summary on stderr.
    Text,
    /// The summary and per-worker figures as one JSON object on stderr.
    Json,
    /// Nothing.
    None,
}

#[derive(Debug, clap::Args)]
pub struct MapArgs {
    /// Number of workers [default: the number of cores].
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub jobs: Option<u32>,

    /// Read tasks from FILE instead of stdin.
    #[arg(short = 'i', long, value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// Records are separated by NUL instead of newline (input, worker protocol and output).
    #[arg(short = '0', long = "null")]
    pub null: bool,

    /// Write results as they complete instead of in input order.
    #[arg(long)]
    pub unordered: bool,

    /// Tasks in flight at most (read ahead of the output).
    #[arg(long, value_name = "N", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub window: u32,

    /// Tries per task: a task whose worker died R times is reported as failed.
    #[arg(long, value_name = "R", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub retries: u32,

    #[command(flatten)]
    pub controls: WorkerControls,

    /// One line per task, always. By default, consecutive lines go to a worker together
    /// (an adaptive pack) while lines are answered in microseconds, and one per task as
    /// soon as a line takes about a millisecond.
    #[arg(long)]
    pub no_pack: bool,

    /// Stop at the first failed task (default: report failures and go on).
    #[arg(long)]
    pub fail_fast: bool,

    /// Show a progress bar on stderr [default: when stderr is a terminal].
    #[arg(long, overrides_with = "no_progress")]
    pub progress: bool,

    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,

    /// What to print on stderr at the end.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = StatsFormat::Text)]
    pub stats: StatsFormat,

    /// Send the tasks to a standalone broker (`zerotasq broker`) at this client endpoint
    /// instead of starting workers here; then no COMMAND is given (the workers are
    /// `zerotasq worker` elsewhere).
    #[arg(long, value_name = "ENDPOINT", conflicts_with_all = ["jobs", "timeout"])]
    pub connect: Option<String>,

    #[command(flatten)]
    pub remote: RemoteArgs,

    /// Log each finished record to FILE (number, worker host and slot, run time, outcome,
    /// answer). Refused if FILE exists, unless --resume.
    #[arg(long, value_name = "FILE")]
    pub joblog: Option<PathBuf>,

    /// Continue the run that --joblog FILE logged: with the same input and command, the
    /// records done are not run again and their answers come from the joblog, so the output
    /// is the whole output of an undisturbed run. Refused for another input or command.
    #[arg(long, requires = "joblog")]
    pub resume: bool,

    /// The worker command and its arguments.
    #[arg(value_name = "COMMAND", required_unless_present = "connect", conflicts_with = "connect", num_args = 1.., trailing_var_arg = true)]
    pub command: Vec<OsString>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("zerotasq").chain(args.iter().copied()))
    }

    #[test]
    fn command_after_double_dash_keeps_its_flags() {
        let cli = parse(&["map", "-j", "2", "--", "python3", "-u", "w.py", "--fast"]).unwrap();
        let Command::Map(map) = cli.command else {
            panic!("map")
        };
        assert_eq!(map.jobs, Some(2));
        assert_eq!(map.command, ["python3", "-u", "w.py", "--fast"]);
    }

    #[test]
    fn bad_duration_is_explained() {
        let err = parse(&["map", "--timeout", "5 parsecs", "--", "cat"]).unwrap_err();
        assert!(err.to_string().contains("unknown unit"), "{err}");
    }

    #[test]
    fn command_is_required() {
        assert!(parse(&["map", "-j", "2"]).is_err());
    }

    #[test]
    fn connect_takes_no_command() {
        let ok = [
            "map",
            "--connect",
            "tcp://h:1",
            "--server-key",
            "b.key",
            "--key",
            "me",
        ];
        assert!(parse(&ok).is_ok());
        let mut with_command = ok.to_vec();
        with_command.extend(["--", "cat"]);
        assert!(parse(&with_command).is_err());
    }

    #[test]
    fn broker_needs_keys_unless_insecure() {
        let ends = [
            "broker",
            "--clients",
            "tcp://127.0.0.1:0",
            "--workers",
            "tcp://127.0.0.1:0",
        ];
        assert!(parse(&ends).is_err());
        let mut insecure = ends.to_vec();
        insecure.push("--insecure");
        assert!(parse(&insecure).is_ok());
    }
}
