"""Starting a native pool whose workers are fresh interpreters running ``zerotasq._worker``:
the command line, the environment, and what each worker reads from its stdin — a header
(pickled: the caller's ``sys.path`` and ``sys.argv``), then the pickled worker definitions.
A pool listening for remote workers also hands them the definitions, pickled so that
another machine with the same environment can load them."""

from __future__ import annotations

import _pickle  # the C pickler alone: `pickle` imports re, enum and struct too (start-up)
import os
import sys

from zerotasq import _logging, _native
from zerotasq._codec import dumps_definitions, dumps_for_remote
from zerotasq._controls import Controls

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - `typing` costs start-up (see _typing)
    from typing import Any, Dict, Optional, Sequence

#: Where the ``zerotasq`` package lives, so the worker interpreter can import it.
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def worker_stdin(definitions: Sequence[object]) -> bytes:
    """What a local worker reads from its stdin: the caller's ``sys.path`` (so that its
    modules import there too) and ``sys.argv`` (which the worker's own command line would
    replace; multiprocessing's spawn passes it on too), then the worker definitions."""
    header = _pickle.dumps(([p for p in sys.path if isinstance(p, str)], list(sys.argv)), protocol=5)
    try:
        return header + dumps_definitions(list(definitions))
    except Exception as exc:
        raise TypeError("the worker definition cannot be pickled (cloudpickle): %s" % exc) from exc


def start_pool(definitions: Sequence[object], n_workers: Optional[int] = None, *, max_retries: int = 3,
               prefetch: int = 2, heartbeat_ms: int = 500, liveness: int = 6,
               tcp: Optional[Dict[str, Any]] = None, controls: Optional[Controls] = None) -> _native.NativePool:
    """Starts ``n_workers`` worker processes; worker ``i`` runs ``definitions[i % len]``.
    ``tcp`` holds ``NativePool``'s TCP arguments (``listen_workers``, ``listen_clients``,
    ``key``, ``allow``, ``insecure``, ``allow_insecure_remote``) and ``http``; ``controls`` the workers'
    limits and per-slot environment."""
    if not definitions:
        raise ValueError("a pool needs at least one worker")
    n = len(definitions) if n_workers is None else int(n_workers)
    controls = controls or Controls()
    stdin = worker_stdin(definitions)
    pythonpath = os.environ.get("PYTHONPATH")
    env = [("PYTHONPATH", _PACKAGE_ROOT + (os.pathsep + pythonpath if pythonpath else ""))]
    tcp = dict(tcp or {})
    if tcp.get("listen_workers"):
        try:
            tcp["welcome"] = dumps_for_remote(list(definitions), controls.limits())
        except Exception as exc:
            raise TypeError("the worker definition cannot be pickled for remote workers (cloudpickle): %s"
                            % exc) from exc
    if not sys.executable:
        raise RuntimeError("sys.executable is unknown: cannot start worker interpreters")
    _logging.start()
    pool = _native.NativePool(sys.executable, ["-S", "-c", "import zerotasq._worker as w; w.run()"], env,
                              stdin, n, max_retries=max_retries, prefetch=prefetch,
                              heartbeat_ms=heartbeat_ms, liveness=liveness, controls=controls.native(n), **tcp)
    if "logging" in sys.modules:  # not imported for this alone: it costs start-up time
        sys.modules["logging"].getLogger("zerotasq").debug("started a pool of %d worker processes", n)
    return pool
