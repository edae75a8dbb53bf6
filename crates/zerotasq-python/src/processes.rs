//! `NativeWorkerProcesses`: the worker processes of `python -m zerotasq worker`, kept by the
//! engine's supervisor ([`WorkerProcesses`]) — a slot each (`ZEROTASQ_SLOT`, kept across
//! restarts) with its variables, device and thread limits; restarted with back-off when
//! they crash, at once when they were recycled or ended a task past its time limit; in
//! their own process groups, dying with the supervising thread, killed on `stop`.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use zerotasq::worker_runtime::hostname;
use zerotasq::{SupervisorConfig, WorkerCommand, WorkerProcesses};

use crate::controls::Controls;
use crate::pool_error;

const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// An exit: the slot, how the process ended, seconds until its slot's next process.
type Exit = (usize, String, f64);

#[pyclass(module = "zerotasq._native", frozen)]
pub struct NativeWorkerProcesses {
    processes: Mutex<Option<WorkerProcesses>>,
    exits: Mutex<Receiver<Exit>>,
}

#[pymethods]
impl NativeWorkerProcesses {
    /// Starts `n_workers` copies of `program args…` with `env` (beside this process's
    /// environment) and, per slot, what `controls` gives.
    #[new]
    #[pyo3(signature = (program, args, env, n_workers, controls=None))]
    fn new(
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        n_workers: usize,
        controls: Option<Controls>,
    ) -> PyResult<Self> {
        let slot_env = match &controls {
            Some(c) => c.worker_env()?,
            None => Default::default(),
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let cfg = SupervisorConfig {
            count: n_workers,
            command: WorkerCommand {
                program,
                args: args.into_iter().map(Into::into).collect(),
                env: Vec::new(),
                stdin: Vec::new(),
            },
            worker_env: env,
            slot_env,
            identity_prefix: format!("{}-{}-{nanos:08x}", hostname(), std::process::id()),
            backoff_initial: BACKOFF_INITIAL,
            backoff_max: BACKOFF_MAX,
            pids: Arc::new(Mutex::new(Vec::new())),
        };
        let (tx, rx) = mpsc::channel();
        let processes = WorkerProcesses::start(cfg, move |exit| {
            let _ = tx.send((
                exit.slot,
                exit.description.clone(),
                exit.restart_in.as_secs_f64(),
            ));
        })
        .map_err(pool_error)?;
        Ok(NativeWorkerProcesses {
            processes: Mutex::new(Some(processes)),
            exits: Mutex::new(rx),
        })
    }

    /// The exits seen since the last call, waiting up to `timeout` seconds for the first.
    fn exits(&self, py: Python<'_>, timeout: f64) -> Vec<Exit> {
        let wait = Duration::try_from_secs_f64(timeout).unwrap_or_default();
        py.detach(|| {
            let rx = self.exits.lock().expect("exits lock");
            let first = rx.recv_timeout(wait).ok();
            first.into_iter().chain(rx.try_iter()).collect()
        })
    }

    /// Kills every process and waits for the supervisor to end. Idempotent.
    fn stop(&self, py: Python<'_>) {
        let processes = self.processes.lock().expect("processes lock").take();
        if let Some(processes) = processes {
            py.detach(|| processes.stop());
        }
    }
}
