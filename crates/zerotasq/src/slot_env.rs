//! What each local worker finds in its environment besides the pool's own contract: its
//! slot (`ZEROTASQ_SLOT`, `0..n`, kept across restarts), the user's variables with `{slot}`
//! replaced, a device (`CUDA_VISIBLE_DEVICES`), and a share of the machine's cores for its
//! math libraries — so that one model per GPU, and n workers on n cores that do not start
//! n × n threads, need no code in the worker.

use crate::error::Error;

/// The variables that size the thread pools of OpenMP, OpenBLAS, MKL, Accelerate and
/// numexpr; each is set to the worker's share of cores unless the user set it.
pub const THREAD_VARS: [&str; 5] = [
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
];

/// The variable a device goes in.
pub const DEVICE_VAR: &str = "CUDA_VISIBLE_DEVICES";

/// A text in which `{slot}` stands for the worker's slot (`{{` and `}}` for braces),
/// checked when it is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotTemplate(String);

impl SlotTemplate {
    /// Checks `text`: a field other than `{slot}`, or an unmatched brace, is an error that
    /// names it.
    pub fn parse(text: &str) -> Result<SlotTemplate, Error> {
        let mut rest = text;
        while let Some(at) = rest.find(['{', '}']) {
            let (brace, after) = (rest.as_bytes()[at], &rest[at + 1..]);
            if after.starts_with(brace as char) {
                rest = &after[1..];
                continue;
            }
            if brace == b'}' {
                return Err(Error::Config(format!(
                    "{text:?}: a lone `}}` (write `}}}}` for a brace)"
                )));
            }
            let Some(end) = after.find('}') else {
                return Err(Error::Config(format!(
                    "{text:?}: a `{{` with no `}}` (write `{{{{` for a brace)"
                )));
            };
            let field = &after[..end];
            if field != "slot" {
                return Err(Error::Config(format!(
                    "{text:?}: unknown field {{{field}}}; the only field is {{slot}}"
                )));
            }
            rest = &after[end + 1..];
        }
        Ok(SlotTemplate(text.to_string()))
    }

    /// The text with `{slot}` replaced by `slot`, read left to right as [`SlotTemplate::parse`]
    /// checked it (so `{{{slot}}}` is a slot in braces).
    pub fn expand(&self, slot: usize) -> String {
        let mut out = String::with_capacity(self.0.len());
        let mut rest = self.0.as_str();
        while let Some(at) = rest.find(['{', '}']) {
            out.push_str(&rest[..at]);
            let brace = rest.as_bytes()[at] as char;
            let after = &rest[at + 1..];
            if after.starts_with(brace) {
                out.push(brace);
                rest = &after[1..];
            } else {
                out.push_str(&slot.to_string());
                rest = &after["slot}".len()..];
            }
        }
        out.push_str(rest);
        out
    }
}

/// The per-worker environment of a pool's local workers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerEnv {
    vars: Vec<(String, SlotTemplate)>,
    /// Variables given slot by slot, as they are (`per_slot[slot]`).
    per_slot: Vec<Vec<(String, String)>>,
    devices: Vec<String>,
    threads_per_worker: Option<usize>,
}

impl WorkerEnv {
    /// Sets `name` to `value` in every worker, `{slot}` replaced by its slot.
    pub fn var(mut self, name: &str, value: &str) -> Result<WorkerEnv, Error> {
        check_name(name)?;
        let template = SlotTemplate::parse(value)?;
        self.vars.retain(|(n, _)| n != name);
        self.vars.push((name.to_string(), template));
        Ok(self)
    }

    /// Sets `per_slot[slot]` in worker `slot` as they are (no `{slot}` fields): for a face
    /// that computes each slot's variables itself (Python's `worker_env=` callable). Slots
    /// past the list get none.
    pub fn slot_vars(mut self, per_slot: Vec<Vec<(String, String)>>) -> Result<WorkerEnv, Error> {
        for (name, _) in per_slot.iter().flatten() {
            check_name(name)?;
        }
        self.per_slot = per_slot;
        Ok(self)
    }

    /// Gives worker `slot` the device `devices[slot % devices.len()]` in
    /// `CUDA_VISIBLE_DEVICES`.
    pub fn devices<S: AsRef<str>>(mut self, devices: &[S]) -> Result<WorkerEnv, Error> {
        if devices.is_empty() {
            return Err(Error::Config("devices: the list is empty".into()));
        }
        self.devices = devices.iter().map(|d| d.as_ref().to_string()).collect();
        Ok(self)
    }

    /// Threads each worker's math libraries start (default: cores / workers, at least 1).
    pub fn threads_per_worker(mut self, threads: usize) -> Result<WorkerEnv, Error> {
        if threads == 0 {
            return Err(Error::Config(
                "threads per worker must be at least 1".into(),
            ));
        }
        self.threads_per_worker = Some(threads);
        Ok(self)
    }

    /// The variables of worker `slot` of `workers`. Thread limits are left out where this
    /// process's environment or the user's variables already set them.
    pub fn for_slot(&self, slot: usize, workers: usize) -> Vec<(String, String)> {
        let mut env = vec![(crate::child::ENV_SLOT.to_string(), slot.to_string())];
        let threads = self.threads_per_worker.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / workers.max(1)).max(1)
        });
        let own = self.per_slot.get(slot).map_or(&[][..], Vec::as_slice);
        for name in THREAD_VARS {
            let set_by_user = std::env::var_os(name).is_some()
                || self.vars.iter().any(|(n, _)| n == name)
                || own.iter().any(|(n, _)| n == name);
            if !set_by_user {
                env.push((name.to_string(), threads.to_string()));
            }
        }
        if !self.devices.is_empty() {
            let device = &self.devices[slot % self.devices.len()];
            env.push((DEVICE_VAR.to_string(), device.clone()));
        }
        env.extend(
            self.vars
                .iter()
                .map(|(name, value)| (name.clone(), value.expand(slot))),
        );
        env.extend(own.iter().cloned());
        env
    }
}

fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.contains(['=', '\0']) {
        return Err(Error::Config(format!(
            "{name:?} is not an environment variable's name"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_fields_are_replaced_and_braces_escaped() {
        let t = SlotTemplate::parse("cuda:{slot} {{x}} {slot}").unwrap();
        assert_eq!(t.expand(3), "cuda:3 {x} 3");
        let braced = SlotTemplate::parse("{{{slot}}}-}}{{slot}}").unwrap();
        assert_eq!(braced.expand(7), "{7}-}{slot}");
        assert_eq!(SlotTemplate::parse("plain").unwrap().expand(9), "plain");
    }

    #[test]
    fn unknown_fields_and_lone_braces_are_refused_with_their_text() {
        for bad in ["gpu{slt}", "a{", "b}", "{slot"] {
            let err = SlotTemplate::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
        let err = SlotTemplate::parse("{rank}").unwrap_err().to_string();
        assert!(err.contains("unknown field {rank}"), "{err}");
    }

    #[test]
    fn each_slot_gets_its_device_its_variables_and_a_share_of_cores() {
        let env = WorkerEnv::default()
            .var("MODEL_SHARD", "shard-{slot}")
            .unwrap()
            .devices(&["0", "1"])
            .unwrap()
            .threads_per_worker(3)
            .unwrap();
        let slot2: std::collections::HashMap<_, _> = env.for_slot(2, 4).into_iter().collect();
        assert_eq!(slot2["ZEROTASQ_SLOT"], "2");
        assert_eq!(slot2["CUDA_VISIBLE_DEVICES"], "0");
        assert_eq!(slot2["MODEL_SHARD"], "shard-2");
        assert_eq!(slot2["OPENBLAS_NUM_THREADS"], "3");
        let slot3: std::collections::HashMap<_, _> = env.for_slot(3, 4).into_iter().collect();
        assert_eq!(slot3["CUDA_VISIBLE_DEVICES"], "1");
    }

    #[test]
    fn the_users_thread_setting_wins() {
        let env = WorkerEnv::default().var("OMP_NUM_THREADS", "8").unwrap();
        let vars = env.for_slot(0, 2);
        let omp: Vec<_> = vars
            .iter()
            .filter(|(n, _)| n == "OMP_NUM_THREADS")
            .collect();
        assert_eq!(omp, [&("OMP_NUM_THREADS".to_string(), "8".to_string())]);
    }

    #[test]
    fn variables_given_slot_by_slot_reach_their_slot_only_and_win_over_thread_limits() {
        let per_slot = vec![
            vec![("SHARD".to_string(), "{a}".to_string())],
            vec![("OMP_NUM_THREADS".to_string(), "7".to_string())],
        ];
        let env = WorkerEnv::default().slot_vars(per_slot).unwrap();
        let vars = |slot| -> Vec<(String, String)> { env.for_slot(slot, 2) };
        assert!(
            vars(0).contains(&("SHARD".into(), "{a}".into())),
            "as given"
        );
        assert!(!vars(1).iter().any(|(n, _)| n == "SHARD"));
        let omp: Vec<_> = vars(1)
            .into_iter()
            .filter(|(n, _)| n == "OMP_NUM_THREADS")
            .collect();
        assert_eq!(omp, [("OMP_NUM_THREADS".to_string(), "7".to_string())]);
        assert!(
            vars(2).iter().all(|(n, _)| n != "SHARD"),
            "past the list: none"
        );
        let bad = vec![vec![("A=B".to_string(), String::new())]];
        assert!(WorkerEnv::default().slot_vars(bad).is_err());
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(WorkerEnv::default().devices::<&str>(&[]).is_err());
        assert!(WorkerEnv::default().threads_per_worker(0).is_err());
        assert!(WorkerEnv::default().var("A=B", "x").is_err());
    }
}
