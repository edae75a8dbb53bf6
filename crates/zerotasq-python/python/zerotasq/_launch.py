"""Starting a native pool whose workers are fresh interpreters running ``zerotasq._worker``:
the command line, the environment, and the worker definitions written to each worker's
stdin (a header line with the caller's ``sys.path``, NUL-separated, then the cloudpickled
definitions). A pool listening for remote workers also hands them the definitions, pickled
so that another machine with the same environment can load them."""

from __future__ import annotations

import os
import sys
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - `typing` costs ~10 ms of import time
    from typing import List, Optional

from zerotasq import _logging, _native
from zerotasq._codec import dumps_definitions, dumps_for_remote

#: Where the ``zerotasq`` package lives, so the worker interpreter can import it.
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def start_pool(definitions: List[object], n_workers: Optional[int] = None, *, max_retries: int = 3,
               prefetch: int = 2, heartbeat_ms: int = 500, liveness: int = 6,
               tcp: Optional[dict] = None) -> "_native.NativePool":
    """Starts ``n_workers`` worker processes; worker ``i`` runs ``definitions[i % len]``.
    ``tcp`` holds ``NativePool``'s TCP arguments (``listen_workers``, ``listen_clients``,
    ``key``, ``allow``, ``insecure``, ``allow_insecure_remote``)."""
    if not definitions:
        raise ValueError("a pool needs at least one worker")
    n = len(definitions) if n_workers is None else int(n_workers)
    header = "\0".join(p for p in sys.path if isinstance(p, str) and "\n" not in p).encode("utf-8", "surrogateescape")
    try:
        payload = dumps_definitions(list(definitions))
    except Exception as exc:
        raise TypeError("the worker definition cannot be pickled (cloudpickle): %s" % exc) from exc
    pythonpath = os.environ.get("PYTHONPATH")
    env = [("PYTHONPATH", _PACKAGE_ROOT + (os.pathsep + pythonpath if pythonpath else ""))]
    tcp = dict(tcp or {})
    if tcp.get("listen_workers"):
        try:
            tcp["welcome"] = dumps_for_remote(list(definitions))
        except Exception as exc:
            raise TypeError("the worker definition cannot be pickled for remote workers (cloudpickle): %s"
                            % exc) from exc
    if not sys.executable:
        raise RuntimeError("sys.executable is unknown: cannot start worker interpreters")
    _logging.start()
    pool = _native.NativePool(sys.executable, ["-S", "-c", "import zerotasq._worker as w; w.run()"], env, header + b"\n" + payload,
                              n, max_retries=max_retries, prefetch=prefetch, heartbeat_ms=heartbeat_ms,
                              liveness=liveness, **tcp)
    if "logging" in sys.modules:  # not imported for this alone: it costs start-up time
        sys.modules["logging"].getLogger("zerotasq").debug("started a pool of %d worker processes", n)
    return pool
