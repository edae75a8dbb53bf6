//! The controls of long-lived workers, as the package hands them over (a dict built and
//! checked by `zerotasq._controls`): a time limit per task, recycling, batching, and what
//! each worker finds in its environment for its slot. They become the engine's own settings.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use zerotasq::slot_env::WorkerEnv;
use zerotasq::worker_limits::Recycling;
use zerotasq::worker_runtime::{Batching, WorkerOptions};

/// `zerotasq._controls.Controls.native(…)` (or `.limits()`).
#[derive(Debug, Clone, FromPyObject)]
#[pyo3(from_item_all)]
pub struct Controls {
    task_timeout: Option<f64>,
    max_tasks_per_worker: Option<u64>,
    max_worker_memory: Option<u64>,
    max_worker_age: Option<f64>,
    /// `(name, value with {slot})`. The environment's keys may be left out where only
    /// limits matter (a remote worker's own).
    #[pyo3(default)]
    env: Vec<(String, String)>,
    /// A callable's variables, slot by slot.
    #[pyo3(default)]
    slot_env: Vec<Vec<(String, String)>>,
    #[pyo3(default)]
    devices: Option<Vec<String>>,
    #[pyo3(default)]
    threads_per_worker: Option<usize>,
    /// 0: tasks one by one.
    max_batch_size: u32,
    batch_wait: f64,
}

fn seconds(name: &str, value: Option<f64>) -> PyResult<Option<Duration>> {
    value
        .map(|s| {
            Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    PyValueError::new_err(format!("{name} must be more than zero seconds, not {s}"))
                })
        })
        .transpose()
}

impl Controls {
    pub fn task_timeout(&self) -> PyResult<Option<Duration>> {
        seconds("task_timeout", self.task_timeout)
    }

    pub fn recycling(&self) -> PyResult<Recycling> {
        Ok(Recycling {
            max_tasks: self.max_tasks_per_worker,
            max_memory: self.max_worker_memory,
            max_age: seconds("max_worker_age", self.max_worker_age)?,
        })
    }

    pub fn batching(&self) -> PyResult<Batching> {
        let wait = Duration::try_from_secs_f64(self.batch_wait).map_err(|_| {
            PyValueError::new_err(format!(
                "batch_wait must be zero or more seconds, not {}",
                self.batch_wait
            ))
        })?;
        Ok(Batching {
            max_size: self.max_batch_size,
            wait,
        })
    }

    /// The engine's per-slot environment.
    pub fn worker_env(&self) -> PyResult<WorkerEnv> {
        let bad = |e: zerotasq::Error| PyValueError::new_err(e.to_string());
        let mut env = WorkerEnv::default();
        for (name, value) in &self.env {
            env = env
                .var(name, value)
                .map_err(|e| PyValueError::new_err(format!("worker_env[{name:?}]: {e}")))?;
        }
        if !self.slot_env.is_empty() {
            env = env.slot_vars(self.slot_env.clone()).map_err(bad)?;
        }
        if let Some(devices) = &self.devices {
            env = env.devices(devices).map_err(bad)?;
        }
        if let Some(threads) = self.threads_per_worker {
            env = env.threads_per_worker(threads).map_err(bad)?;
        }
        Ok(env)
    }

    /// `opts` with this worker's limits and batching.
    pub fn apply(&self, opts: &mut WorkerOptions) -> PyResult<()> {
        opts.task_timeout = self.task_timeout()?;
        opts.recycling = self.recycling()?;
        opts.batching = self.batching()?;
        Ok(())
    }
}
