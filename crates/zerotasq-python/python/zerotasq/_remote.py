"""Remote workers: ``python -m zerotasq worker --connect tcp://HOST:PORT -n N`` starts ``N``
worker processes here that join a pool (or a ``zerotasq broker``) on another machine.

Each worker process is a fresh interpreter (``python -m zerotasq._remote``) that asks the
broker for the pool's worker definition over the authenticated channel — so this machine
needs the same environment, not the user's script — or imports the one named by
``--worker module:attr``, runs ``init`` once, then serves through the engine, joining again
by itself after a broker restart or a network cut — unless the broker now hands out
another definition (an edited script run again): the worker then exits, and comes back with
the new one. The pool's time limit and recycling travel with its definition, and each
worker applies them to itself. This process keeps each worker in a slot of its own (the
engine's supervisor: ``ZEROTASQ_SLOT``, with ``--env``, ``--devices`` and
``--threads-per-worker`` per slot), restarts a worker that exits — at once when it was
recycled or ended a task past its limit, with back-off when its ``init`` failed or it
crashed — and stops them all on Ctrl-C or SIGTERM; each worker dies with it if it is killed.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from zerotasq.worker import Worker, is_batched

if TYPE_CHECKING:  # the worker processes need no checking of controls
    from zerotasq._controls import Controls

log = logging.getLogger("zerotasq.remote")

#: The worker processes' settings travel in this environment variable, as JSON.
ENV_SETTINGS = "ZEROTASQ_REMOTE_WORKER"
#: Exit status of a worker whose definition could not be had or whose init failed.
EXIT_NO_WORKER = 3


def _security(settings: Dict[str, Any]) -> Dict[str, Any]:
    return dict(server_key=settings.get("server_key"), key=settings.get("key"),
                insecure=settings.get("insecure", False),
                allow_insecure_remote=settings.get("allow_insecure_remote", False))


def _definition(settings: Dict[str, Any], slot: int) -> Tuple[Worker[Any, Any], Optional[bytes],
                                                              Optional[Dict[str, Any]]]:
    """This worker's definition — the named one, or the pool's, fetched from the broker —
    the welcome bytes it came from and the pool's limits (``None`` for a named one)."""
    from zerotasq import _native
    from zerotasq.pool import worker_definitions

    spec = settings.get("worker")
    if spec:
        import importlib

        module, _, attr = spec.partition(":")
        target = importlib.import_module(module)
        for part in attr.split("."):
            target = getattr(target, part)
        init_kwargs = settings.get("init_kwargs") or None
        if isinstance(target, type) and issubclass(target, Worker):
            return target(init_kwargs=init_kwargs), None, None
        return worker_definitions(target, None, None, None, (), None)[0], None, None
    welcome = _native.fetch_welcome(settings["connect"], patience_s=settings.get("patience", 30.0),
                                    **_security(settings))
    if not welcome:
        raise RuntimeError("the broker at %s hands out no worker definition (a standalone broker?): "
                           "name one with --worker module:attr" % settings["connect"])
    import _pickle  # the C pickler alone: `pickle` imports re, enum and struct too (start-up)

    definitions: List[Worker[Any, Any]]
    definitions, limits = _pickle.loads(welcome)
    return definitions[slot % len(definitions)], welcome, limits


def serve() -> int:
    """Entry of one worker process."""
    from zerotasq import _native

    _native.prepare_worker_process()  # dies with the `zerotasq worker` command that started it
    from zerotasq.worker import worker_slot

    settings = json.loads(os.environ[ENV_SETTINGS])
    from zerotasq._codec import dumps, loads
    from zerotasq._errors import describe

    slot = worker_slot() or 0
    try:
        worker, welcome, limits = _definition(settings, slot)
    except Exception as exc:  # unreachable, refused, or a definition that does not load here
        log.error("[w%d] no worker definition: %s: %s", slot + 1, type(exc).__name__, exc)
        return EXIT_NO_WORKER
    try:
        worker.init(**getattr(worker, "init_kwargs", {}))
    except BaseException as exc:  # noqa: B902 - reported, then the supervisor restarts us
        message, detail = describe(exc)
        log.error("[w%d] init failed: %s\n%s", slot + 1, message, detail.split("\n\x00")[0])
        return EXIT_NO_WORKER
    from zerotasq import _logging

    _logging.start()  # the engine's events, through this process's logging
    batched = is_batched(worker)
    if batched and limits is None:  # a worker named here: batches of the default size
        from zerotasq._controls import Controls

        limits = Controls(batched=True).limits()
    try:
        # Returns when the worker is due for recycling: a fresh process takes its slot.
        return _native.serve_remote_worker(settings["connect"], worker.process_batch if batched else worker.process,
                                           describe, dumps, loads, welcome=welcome, controls=limits,
                                           batched=batched, **_security(settings))
    except _native.PoolError as exc:
        # Another pool (or an edited script) took the address: start afresh with its code.
        log.warning("[w%d] %s; starting again", slot + 1, exc)
    return 1


def supervise(settings: Dict[str, Any], n: int, controls: Controls) -> int:
    """Keeps ``n`` worker processes running, each in its slot with what ``controls`` gives
    it, until SIGINT/SIGTERM; returns 128 + the signal."""
    from zerotasq import _native

    stop: List[int] = []

    def on_signal(signum: int, _frame: Optional[FrameType]) -> None:
        stop.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    log.info("%d workers joining %s", n, settings["connect"])
    workers = _native.NativeWorkerProcesses(sys.executable, ["-m", "zerotasq._remote"],
                                            [(ENV_SETTINGS, json.dumps(settings))], n, controls.native(n))
    try:
        while not stop:
            for slot, how, restart_in in workers.exits(0.05):
                log.warning("[w%d] %s; restarting in %.1f s", slot + 1, how, restart_in)
    finally:
        workers.stop()
    log.info("interrupted; the workers are stopped")
    return 128 + stop[0]


def log_to_stderr() -> None:
    """The command line's own messages, through ``logging``, on stderr."""
    logging.basicConfig(level=logging.INFO, format="zerotasq worker: %(message)s")


if __name__ == "__main__":
    log_to_stderr()
    sys.exit(serve())
