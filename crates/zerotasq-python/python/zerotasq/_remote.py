"""Remote workers: ``python -m zerotasq worker --connect tcp://HOST:PORT -n N`` starts ``N``
worker processes here that join a pool (or a ``zerotasq broker``) on another machine.

Each worker process is a fresh interpreter (``python -m zerotasq._remote``) that asks the
broker for the pool's worker definition over the authenticated channel — so this machine
needs the same environment, not the user's script — or imports the one named by
``--worker module:attr``, runs ``init`` once, then serves through the engine, joining again
by itself after a broker restart or a network cut — unless the broker now hands out
another definition (an edited script run again): the worker then exits, and comes back with
the new one. This process restarts a worker that
exits (its ``init`` failed, it crashed) with back-off, and stops them all on Ctrl-C or
SIGTERM; each worker dies with it if it is killed.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType
from typing import Any, Dict, List, Optional, Tuple

from zerotasq.worker import Worker

log = logging.getLogger("zerotasq.remote")

#: The worker processes' settings travel in this environment variable, as JSON.
ENV_SETTINGS = "ZEROTASQ_REMOTE_WORKER"
BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 5.0
#: A worker that ran this long before exiting gets its back-off reset.
HEALTHY_RUN = 10.0
#: Exit status of a worker whose definition could not be had or whose init failed.
EXIT_NO_WORKER = 3


def _security(settings: Dict[str, Any]) -> Dict[str, Any]:
    return dict(server_key=settings.get("server_key"), key=settings.get("key"),
                insecure=settings.get("insecure", False),
                allow_insecure_remote=settings.get("allow_insecure_remote", False))


def _definition(settings: Dict[str, Any]) -> Tuple[Worker[Any, Any], Optional[bytes]]:
    """This worker's definition — the named one, or the pool's, fetched from the broker —
    and the welcome bytes it came from (``None`` for a named one)."""
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
            return target(init_kwargs=init_kwargs), None
        return worker_definitions(target, None, None, None, (), None)[0], None
    welcome = _native.fetch_welcome(settings["connect"], patience_s=settings.get("patience", 30.0),
                                    **_security(settings))
    if not welcome:
        raise RuntimeError("the broker at %s hands out no worker definition (a standalone broker?): "
                           "name one with --worker module:attr" % settings["connect"])
    import pickle

    definitions: List[Worker[Any, Any]] = pickle.loads(welcome)
    return definitions[settings.get("slot", 0) % len(definitions)], welcome


def serve() -> int:
    """Entry of one worker process."""
    from zerotasq import _native

    settings = json.loads(os.environ[ENV_SETTINGS])
    _native.die_with_parent(settings["parent"])
    from zerotasq._codec import dumps, loads
    from zerotasq._errors import describe

    slot = settings.get("slot", 0) + 1
    try:
        worker, welcome = _definition(settings)
    except Exception as exc:  # unreachable, refused, or a definition that does not load here
        log.error("[w%d] no worker definition: %s: %s", slot, type(exc).__name__, exc)
        return EXIT_NO_WORKER
    try:
        worker.init(**getattr(worker, "init_kwargs", {}))
    except BaseException as exc:  # noqa: B902 - reported, then the supervisor restarts us
        message, detail = describe(exc)
        log.error("[w%d] init failed: %s\n%s", slot, message, detail.split("\n\x00")[0])
        return EXIT_NO_WORKER
    from zerotasq import _logging

    _logging.start()  # the engine's events, through this process's logging
    try:
        _native.serve_remote_worker(settings["connect"], worker.process, describe, dumps, loads,
                                    welcome=welcome, **_security(settings))
    except _native.PoolError as exc:
        # Another pool (or an edited script) took the address: start afresh with its code.
        log.warning("[w%d] %s; starting again", slot, exc)
    return 1


class _Slot:
    def __init__(self, index: int):
        self.index = index
        self.child: Optional[subprocess.Popen[bytes]] = None
        self.started = 0.0
        self.backoff = BACKOFF_INITIAL
        self.restart_at = 0.0


def supervise(settings: Dict[str, Any], n: int) -> int:
    """Keeps ``n`` worker processes running until SIGINT/SIGTERM; returns 128 + the signal."""
    stop: List[int] = []

    def on_signal(signum: int, _frame: Optional[FrameType]) -> None:
        stop.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    slots = [_Slot(i) for i in range(n)]
    log.info("%d workers joining %s", n, settings["connect"])
    while not stop:
        now = time.monotonic()
        for slot in slots:
            if slot.child is not None and slot.child.poll() is not None:
                if now - slot.started >= HEALTHY_RUN:
                    slot.backoff = BACKOFF_INITIAL
                log.warning("[w%d] exited (status %s); restarting in %.1f s",
                            slot.index + 1, slot.child.returncode, slot.backoff)
                slot.restart_at = now + slot.backoff
                slot.backoff = min(slot.backoff * 2, BACKOFF_MAX)
                slot.child = None
            if slot.child is None and now >= slot.restart_at:
                env = dict(os.environ)
                env[ENV_SETTINGS] = json.dumps(dict(settings, slot=slot.index, parent=os.getpid()))
                # Its own process group: Ctrl-C at the terminal reaches only us, and we stop it.
                slot.child = subprocess.Popen([sys.executable, "-m", "zerotasq._remote"], env=env,
                                              stdin=subprocess.DEVNULL, start_new_session=True)
                slot.started = now
        time.sleep(0.05)
    for slot in slots:
        if slot.child is not None:
            slot.child.kill()
    for slot in slots:
        if slot.child is not None:
            slot.child.wait()
    log.info("interrupted; the workers are stopped")
    return 128 + stop[0]


def log_to_stderr() -> None:
    """The command line's own messages, through ``logging``, on stderr."""
    logging.basicConfig(level=logging.INFO, format="zerotasq worker: %(message)s")


if __name__ == "__main__":
    log_to_stderr()
    sys.exit(serve())
