//! The command line, as clap sees it: `zerotasq map [OPTIONS] -- COMMAND [ARGS]...`.

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

    /// Time limit per task (e.g. 500ms, 30s, 2m): the worker is killed and restarted and
    /// the task retried.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub timeout: Option<Duration>,

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

    /// The worker command and its arguments.
    #[arg(value_name = "COMMAND", required = true, num_args = 1.., trailing_var_arg = true)]
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
        let Command::Map(map) = cli.command;
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
}
