//! The engine's `tracing` events, forwarded to Python's `logging` without ever taking the GIL
//! on the thread that emits them.
//!
//! A [`tracing_subscriber::Layer`], installed once as the global default when the module is
//! imported, formats each event (its message, then its fields as `name=value`) and pushes it
//! into a bounded in-memory queue; past [`CAPACITY`] records the oldest is dropped and
//! counted. A Python thread (`zerotasq._logging`) calls [`wait_logs`] in a loop: it waits for
//! records without the GIL and passes them to `logging` under the logger
//! `zerotasq.<module>` (target `zerotasq::broker` → logger `zerotasq.broker`).
//!
//! Why not `pyo3-log`: it calls `logging` on the thread that emits the event, so that thread
//! takes the GIL. The engine's threads (broker, supervisor, a worker's I/O thread) are joined
//! by Python threads that hold the GIL — dropping a pool does so — and an event logged during
//! that join would deadlock. Here an emitting thread only takes a short, uncontended lock.
//!
//! Filtering is cheap: a global level (a Python `logging` level, set from the `zerotasq`
//! loggers when a pool starts) is also the subscriber's level hint, so `tracing` skips
//! disabled events at the call site, before any formatting. Until a level is set nothing is
//! recorded.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, Once};
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, Registry};

/// Records kept while no one pumps them; beyond, the oldest are dropped (and counted).
pub const CAPACITY: usize = 10_000;

/// The parent logger of every record.
const ROOT_LOGGER: &str = "zerotasq";

/// `logging` levels.
const DEBUG: i32 = 10;
const INFO: i32 = 20;
const WARNING: i32 = 30;
const ERROR: i32 = 40;

/// The lowest `logging` level recorded; `i32::MAX`: nothing.
static LEVEL: AtomicI32 = AtomicI32::new(i32::MAX);

/// Records waiting for the pump.
static QUEUE: Mutex<Queue> = Mutex::new(Queue {
    records: VecDeque::new(),
    dropped: 0,
    stop: false,
});
/// Signalled when a record arrives or the pump is asked to stop.
static READY: Condvar = Condvar::new();

struct Queue {
    records: VecDeque<Record>,
    /// Records dropped since the pump last ran.
    dropped: u64,
    /// The pump should return once the queue is empty.
    stop: bool,
}

/// One event, ready for `logging`.
struct Record {
    logger: String,
    level: i32,
    message: String,
    file: Option<&'static str>,
    line: Option<u32>,
    /// Seconds since the epoch, as `LogRecord.created`.
    created: f64,
    /// The emitting thread's name, as `LogRecord.threadName`.
    thread: Option<String>,
}

fn queue() -> MutexGuard<'static, Queue> {
    // A panic while holding the lock leaves the queue consistent: keep using it.
    QUEUE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The `logging` level of a `tracing` level (TRACE and DEBUG are both DEBUG).
fn python_level(level: &Level) -> i32 {
    match *level {
        Level::ERROR => ERROR,
        Level::WARN => WARNING,
        Level::INFO => INFO,
        Level::DEBUG | Level::TRACE => DEBUG,
    }
}

/// The most verbose `tracing` level recorded at `logging` level `threshold`.
fn level_filter(threshold: i32) -> LevelFilter {
    match threshold {
        t if t <= DEBUG => LevelFilter::TRACE,
        t if t <= INFO => LevelFilter::INFO,
        t if t <= WARNING => LevelFilter::WARN,
        t if t <= ERROR => LevelFilter::ERROR,
        _ => LevelFilter::OFF,
    }
}

/// Seconds since the epoch.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Logger name of a target: `zerotasq::broker` → `zerotasq.broker`; a target outside the
/// engine goes under `zerotasq.` too.
fn logger_name(target: &str) -> String {
    let dotted = target.replace("::", ".");
    if dotted == ROOT_LOGGER
        || (dotted.starts_with(ROOT_LOGGER) && dotted[ROOT_LOGGER.len()..].starts_with('.'))
    {
        dotted
    } else {
        format!("{ROOT_LOGGER}.{dotted}")
    }
}

/// Collects an event's message and its other fields (` name=value`).
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = if field.name() == "message" {
            write!(self.message, "{value:?}")
        } else {
            write!(self.fields, " {}={value:?}", field.name())
        };
    }
}

/// The layer: formats enabled events into [`QUEUE`].
struct ToPython;

impl<S: Subscriber> Layer<S> for ToPython {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // The level changes at run time: ask `enabled` each time (the level hint below still
        // lets `tracing` skip disabled levels before that).
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        python_level(metadata.level()) >= LEVEL.load(Ordering::Relaxed)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(level_filter(LEVEL.load(Ordering::Relaxed)))
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let metadata = event.metadata();
        let mut text = Text::default();
        event.record(&mut text);
        let mut message = text.message;
        message.push_str(if message.is_empty() {
            text.fields.trim_start()
        } else {
            &text.fields
        });
        let record = Record {
            logger: logger_name(metadata.target()),
            level: python_level(metadata.level()),
            message,
            file: metadata.file(),
            line: metadata.line(),
            created: now(),
            thread: std::thread::current().name().map(str::to_owned),
        };
        let mut queue = queue();
        if queue.records.len() >= CAPACITY {
            queue.records.pop_front();
            queue.dropped += 1;
        }
        queue.records.push_back(record);
        drop(queue);
        READY.notify_one();
    }
}

/// Installs the layer as the global default subscriber (once; if another subscriber was
/// installed first, that one stays).
pub fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = tracing::subscriber::set_global_default(Registry::default().with(ToPython));
    });
}

/// Records engine events at `logging` level `level` and above (a `logging` level number:
/// 10 = DEBUG, 20 = INFO, …; DEBUG includes `tracing`'s TRACE; above 40 records nothing).
#[pyfunction]
pub fn set_log_level(level: i32) {
    if LEVEL.swap(level, Ordering::Relaxed) != level {
        // Recompute `tracing`'s global level hint (and the call sites' interest).
        tracing_core::callsite::rebuild_interest_cache();
    }
}

/// What the queue holds for the pump.
enum Next {
    Records(VecDeque<Record>, u64),
    Stopped,
    Nothing,
}

fn next(queue: &mut Queue) -> Next {
    if !queue.records.is_empty() || queue.dropped > 0 {
        Next::Records(
            std::mem::take(&mut queue.records),
            std::mem::take(&mut queue.dropped),
        )
    } else if queue.stop {
        Next::Stopped
    } else {
        Next::Nothing
    }
}

/// The queued records, waiting for some without the GIL (no timeout: see below); `None` once
/// [`stop_log_pump`] was called and the queue is empty. Each record is a `(logger, level,
/// message, file, line, created, thread)` tuple; records dropped because the queue was full
/// come first, as a WARNING record of their own. Call it in a loop on a thread of its own.
///
/// The loop that calls `logging` is Python's, not ours: at exit a thread still running
/// Python code is ended by the interpreter (`pthread_exit`), which must not unwind through
/// Rust frames (it aborts the process). For the same reason this only waits — and so only
/// takes the GIL back — until a record arrives or the pump is stopped, never on a timeout.
#[pyfunction]
pub fn wait_logs(py: Python<'_>) -> PyResult<Option<Bound<'_, PyList>>> {
    let mut found = next(&mut queue());
    if let Next::Nothing = found {
        found = py.detach(|| {
            let mut queue = queue();
            loop {
                match next(&mut queue) {
                    Next::Nothing => queue = READY.wait(queue).unwrap_or_else(|p| p.into_inner()),
                    found => return found,
                }
            }
        });
    }
    let (records, dropped) = match found {
        Next::Records(records, dropped) => (records, dropped),
        Next::Stopped | Next::Nothing => return Ok(None),
    };
    let notice = (dropped > 0).then(|| Record {
        logger: ROOT_LOGGER.to_string(),
        level: WARNING,
        message: format!("{dropped} engine log records were dropped (more than {CAPACITY} waited)"),
        file: None,
        line: None,
        created: now(),
        thread: None,
    });
    let batch = PyList::empty(py);
    for r in notice.into_iter().chain(records) {
        let tuple = PyTuple::new(
            py,
            [
                r.logger.into_pyobject(py)?.into_any(),
                r.level.into_pyobject(py)?.into_any(),
                r.message.into_pyobject(py)?.into_any(),
                r.file.into_pyobject(py)?.into_any(),
                r.line.into_pyobject(py)?.into_any(),
                r.created.into_pyobject(py)?.into_any(),
                r.thread.into_pyobject(py)?.into_any(),
            ],
        )?;
        batch.append(tuple)?;
    }
    Ok(Some(batch))
}

/// Stops recording events; [`wait_logs`] then hands over the records already queued and
/// returns `None`. Does not wait for the pump.
#[pyfunction]
pub fn stop_log_pump() {
    set_log_level(i32::MAX);
    queue().stop = true;
    READY.notify_all();
}
