"""The engine's log events (Rust ``tracing``, from its own threads) into Python's ``logging``,
under ``zerotasq.<module>`` (``zerotasq.broker``, ``zerotasq.supervisor``, …).

The engine queues formatted records and never takes the GIL to log (see
``src/log_bridge.rs``); a thread of ours, started once, hands them to ``logging``. The engine
records the levels the ``zerotasq`` loggers let through, read when a pool starts (so DEBUG
events cost nothing unless asked for). Neither ``logging`` nor ``threading`` is imported for
this (start-up time counts, in worker processes most): ``logging`` only when a record
arrives, and the thread is a bare ``_thread`` one.
"""

from __future__ import annotations

import sys

from zerotasq import _native

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - `typing` costs worker start-up time
    import _thread
    from typing import List, Optional

#: Held while this process's pump thread runs; None: no pump in this process.
_pump_done: Optional[_thread.LockType] = None
#: Whether the exit and fork hooks are registered.
_hooked = False

#: The level of a ``zerotasq`` logger while ``logging`` is not configured (not imported).
_DEFAULT_LEVEL = 30  # logging.WARNING

#: How long the exit waits for the pump to hand over the last records.
_EXIT_WAIT = 1.0


def start() -> None:
    """Sets the engine's level from the ``zerotasq`` loggers; starts the pump thread once."""
    global _pump_done, _hooked
    _native.set_log_level(_level())
    if _pump_done is not None:
        return
    import _thread

    if not _hooked:
        import atexit
        import os

        atexit.register(stop)
        os.register_at_fork(after_in_child=_forget)
        _hooked = True
    done = _thread.allocate_lock()
    done.acquire()
    _pump_done = done
    _thread.start_new_thread(_pump, (done,))


def _level() -> int:
    """The lowest effective level among the ``zerotasq`` loggers."""
    logging = sys.modules.get("logging")
    if logging is None:
        return _DEFAULT_LEVEL
    level: int = logging.getLogger("zerotasq").getEffectiveLevel()
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith("zerotasq.") and isinstance(logger, logging.Logger):
            level = min(level, logger.getEffectiveLevel())
    return level


def _pump(done: _thread.LockType) -> None:
    # The loop is here, not in Rust: at exit the interpreter ends a thread that runs Python
    # code, and that must not unwind through Rust frames.
    try:
        while True:
            records = _native.wait_logs()
            if records is None:
                return
            try:
                _emit(records)
            except Exception:  # noqa: BLE001 - the pump goes on; say what went wrong
                sys.excepthook(*sys.exc_info())
    finally:
        done.release()


def _emit(records: List[_native._LogRecord]) -> None:
    """Passes a batch of engine records to ``logging``."""
    import logging

    for name, level, message, path, line, created, thread in records:
        logger = logging.getLogger(name)
        if not logger.isEnabledFor(level):
            continue
        record = logger.makeRecord(name, level, path or "(engine)", line or 0, message, (), None)
        record.created = created
        record.msecs = (created - int(created)) * 1000
        if thread:
            record.threadName = thread
        logger.handle(record)


def stop() -> None:
    """At exit (and before a worker's): the pump hands over the records queued so far, then
    ends."""
    global _pump_done
    done, _pump_done = _pump_done, None
    _native.stop_log_pump()
    if done is not None:
        done.acquire(timeout=_EXIT_WAIT)


def _forget() -> None:
    # In a forked child: the pump thread did not survive the fork.
    global _pump_done
    _pump_done = None
