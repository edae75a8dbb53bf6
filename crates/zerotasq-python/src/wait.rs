//! Waiting without the GIL while staying responsive to Ctrl-C: every blocking call is cut
//! into short slices; between slices the GIL is taken back to run Python's signal handlers,
//! so a `KeyboardInterrupt` surfaces within one slice.

use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// The longest the GIL is released for in one go.
pub const SLICE: Duration = Duration::from_millis(50);

/// Calls `attempt(slice)` without the GIL until it returns `Some`, checking for signals
/// between calls; gives up with `Ok(None)` after `timeout` (`None`: never).
pub fn interruptible<T, F>(
    py: Python<'_>,
    timeout: Option<Duration>,
    mut attempt: F,
) -> PyResult<Option<T>>
where
    F: FnMut(Duration) -> Option<T> + Send,
    T: Send,
{
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let slice = match deadline {
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(None);
                }
                left.min(SLICE)
            }
            None => SLICE,
        };
        if let Some(value) = py.detach(|| attempt(slice)) {
            return Ok(Some(value));
        }
        py.check_signals()?;
    }
}
