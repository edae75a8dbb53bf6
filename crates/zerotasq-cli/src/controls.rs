//! The controls for long-lived workers that `map` and `worker` share: a time limit per task,
//! recycling (task count, memory, age), and what each worker finds in its environment (its
//! slot, `--env` variables with `{slot}`, a device, a share of the cores). They become the
//! engine's own settings ([`WorkerControls::settings`]), which every face uses.

use std::time::Duration;

use zerotasq::slot_env::WorkerEnv;
use zerotasq::worker_limits::Recycling;

/// The options, as clap reads them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WorkerControls {
    /// Time limit per task (e.g. 500ms, 30s, 2m): the worker is killed and restarted and
    /// the task retried; past --retries it is reported as timed out.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub timeout: Option<Duration>,

    /// Warn on stderr, once per worker, when it has written nothing for DURATION while
    /// given lines (a worker that buffers its output, or never answers).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse, default_value = "10s")]
    pub warn_silent: Duration,

    /// Replace each worker by a fresh one after N tasks (spread ±10 %). Nothing is lost.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_tasks_per_worker: Option<u64>,

    /// Replace a worker whose command's resident memory passes SIZE (e.g. 512MiB, 2GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_worker_memory: Option<u64>,

    /// Replace each worker by a fresh one after it served DURATION (spread ±10 %).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub max_worker_age: Option<Duration>,

    /// Set NAME=VALUE in each worker's environment; {slot} is its slot (0..N-1), which is
    /// also replaced in the command's arguments. Repeatable.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,

    /// Devices to give the workers, one each in turn (CUDA_VISIBLE_DEVICES), e.g. 0,1.
    #[arg(long, value_name = "LIST", value_delimiter = ',', num_args = 1..)]
    pub devices: Option<Vec<String>>,

    /// The largest line or answer, as a size (e.g. 64MiB); a bigger one fails at its place.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "256MiB")]
    pub max_message: u64,

    /// Threads each worker's math libraries may start (OMP_NUM_THREADS, …)
    /// [default: cores / workers; variables you set win].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub threads_per_worker: Option<u64>,
}

/// The controls as the engine takes them.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub max_message: i64,
    pub task_timeout: Option<Duration>,
    pub recycling: Recycling,
    pub worker_env: WorkerEnv,
}

impl WorkerControls {
    /// Checks the options and turns them into the engine's settings; the message names
    /// what is wrong.
    pub fn settings(&self) -> Result<Settings, String> {
        let mut env = WorkerEnv::default();
        for assignment in &self.env {
            let Some((name, value)) = assignment.split_once('=') else {
                return Err(format!("--env {assignment:?}: expected NAME=VALUE"));
            };
            env = env
                .var(name, value)
                .map_err(|e| format!("--env {assignment:?}: {e}"))?;
        }
        if let Some(devices) = &self.devices {
            let devices: Vec<&str> = devices
                .iter()
                .map(|d| d.trim())
                .filter(|d| !d.is_empty())
                .collect();
            env = env
                .devices(&devices)
                .map_err(|e| format!("--devices: {e}"))?;
        }
        if let Some(threads) = self.threads_per_worker {
            env = env
                .threads_per_worker(threads as usize)
                .map_err(|e| format!("--threads-per-worker: {e}"))?;
        }
        Ok(Settings {
            max_message: i64::try_from(self.max_message).unwrap_or(i64::MAX),
            task_timeout: self.timeout,
            recycling: Recycling {
                max_tasks: self.max_tasks_per_worker,
                max_memory: self.max_worker_memory,
                max_age: self.max_worker_age,
            },
            worker_env: env,
        })
    }
}

/// Parses a size: a number of bytes with an optional unit (`k`/`KiB`…`TiB` powers of 1024,
/// `kB`…`TB` powers of 1000), e.g. `512MiB`, `2GiB`, `1500000`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let hint = "expected a number and a unit, e.g. 512MiB, 2GiB or 800MB";
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}: {hint}"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "invalid size {text:?}: unknown unit {other:?}; {hint}"
            ))
        }
    };
    let bytes = value * scale as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("invalid size {text:?}: must be at least one byte"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_both_unit_systems_and_bad_ones_say_why() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("800MB"), Ok(800_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "12XB", "0MiB", "-1G", "lots"] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains("invalid size"), "{bad}: {err}");
        }
    }

    #[test]
    fn env_assignments_and_devices_are_checked() {
        let controls = WorkerControls {
            env: vec!["MODEL=m-{slot}.bin".into()],
            devices: Some(vec!["0".into(), "1".into()]),
            ..WorkerControls::default()
        };
        let settings = controls.settings().unwrap();
        let vars: std::collections::HashMap<_, _> =
            settings.worker_env.for_slot(1, 2).into_iter().collect();
        assert_eq!(vars["MODEL"], "m-1.bin");
        assert_eq!(vars["CUDA_VISIBLE_DEVICES"], "1");

        for (env, devices, wanted) in [
            (vec!["NOEQUALS".to_string()], None, "expected NAME=VALUE"),
            (vec!["A=x{rank}".to_string()], None, "unknown field {rank}"),
            (vec![], Some(vec![" ".to_string()]), "--devices"),
        ] {
            let controls = WorkerControls {
                env,
                devices,
                ..WorkerControls::default()
            };
            let err = controls.settings().unwrap_err();
            assert!(err.contains(wanted), "{err}");
        }
    }
}
