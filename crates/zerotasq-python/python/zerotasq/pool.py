"""The modern API: ``Pool`` (a context manager with ``imap``, ``imap_unordered`` and ``map``)
and ``zerotasq.map`` for a one-off function over an iterable, lambdas and closures included;
``connect`` for a broker elsewhere (another program's pool, or a ``zerotasq broker``).

    with Pool(Model, n_workers=4, init_kwargs={"path": "m.bin"}) as pool:
        for y in pool.imap(items):
            ...
"""

from __future__ import annotations

import weakref
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - `typing` costs ~10 ms of import time
    from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Union

    from zerotasq import _native

from zerotasq._codec import dumps, loads
from zerotasq._errors import make_error
from zerotasq._launch import default_workers, start_pool
from zerotasq.results import Results
from zerotasq.worker import FunctionWorker, Worker

__all__ = ["Pool", "Client", "connect", "map", "DEFAULT_WINDOW"]

#: Tasks in flight (pulled and not yet yielded) per stream by default.
DEFAULT_WINDOW = 1024

#: Bytes in flight per stream by default: the window holds at most this many bytes' worth of
#: tasks the size of the first (pickled) item, and never fewer than 4 tasks. Big payloads
#: then flow in small batches that overlap with the workers' work.
DEFAULT_WINDOW_BYTES = 8 << 20


def _length(iterable) -> Optional[int]:
    try:
        return len(iterable)
    except TypeError:
        return None


def worker_definitions(worker, n_workers: Optional[int], init_kwargs: Optional[dict],
                       initializer: Optional[Callable], initargs: Sequence, loglevel: Any) -> List[Worker]:
    """What each worker process runs, from a Worker subclass, instance(s) or a function."""
    if isinstance(worker, Worker):
        return [worker]
    if isinstance(worker, (list, tuple)) and worker and all(isinstance(w, Worker) for w in worker):
        return list(worker)
    if isinstance(worker, type) and issubclass(worker, Worker):
        return [worker(init_kwargs=init_kwargs, loglevel=loglevel)]
    if callable(worker):
        if init_kwargs:
            raise TypeError("init_kwargs is for Worker classes; a function takes initializer/initargs")
        return [FunctionWorker(worker, initializer, initargs, loglevel)]
    raise TypeError("Pool needs a Worker subclass, Worker instances or a function, not %r" % (worker,))


class Client:
    """Streams through a broker: ``imap``, ``imap_unordered`` and ``map``. ``Pool`` is one
    with its own broker and workers; ``connect`` gives one for a broker elsewhere."""

    def __init__(self, native: "_native.NativePool", window: int = DEFAULT_WINDOW, *,
                 return_exceptions: bool = False, progress: bool = False,
                 window_bytes: int = DEFAULT_WINDOW_BYTES):
        self.window = max(1, int(window))
        self.window_bytes = max(0, int(window_bytes))
        self.return_exceptions = return_exceptions
        self.progress = progress
        self._native = native
        self._finalizer = weakref.finalize(self, native.close)

    # -- streams -------------------------------------------------------------------------------
    def imap(self, iterable: Iterable, *, ordered: bool = True, window: Optional[int] = None,
             return_exceptions: Optional[bool] = None, progress: Optional[bool] = None,
             window_bytes: Optional[int] = None) -> Results:
        """Results in input order, lazily: the input is pulled as results are consumed."""
        native = self._native.results(
            iterable, self.window if window is None else max(1, int(window)), ordered, dumps, loads, make_error,
            self.return_exceptions if return_exceptions is None else return_exceptions,
            self.window_bytes if window_bytes is None else max(0, int(window_bytes)))
        show = self.progress if progress is None else progress
        return Results(native, _length(iterable) if show else None, show)

    def imap_unordered(self, iterable: Iterable, **kwargs) -> Results:
        """Results as they complete."""
        return self.imap(iterable, ordered=False, **kwargs)

    def map(self, iterable: Iterable, **kwargs) -> list:
        """All results, in input order, as a list."""
        return list(self.imap(iterable, **kwargs))

    def status(self) -> dict:
        """The broker's status: ``clients`` (queue depths, rates), ``workers`` (state, tasks
        in flight), ``totals`` and the overall ``rate`` — of this pool, or of the broker this
        client is connected to."""
        import json

        return json.loads(self._native.status_json())

    # -- lifetime ------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._native.closed

    def close(self) -> None:
        """Stops (a pool: its workers at once); open tasks end as cancelled. Idempotent."""
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Pool(Client):
    """Long-lived worker processes, each a fresh interpreter that runs ``init`` once.

    ``worker`` is a ``Worker`` subclass (built with ``init_kwargs``), ``Worker`` instances, or
    a function (with an optional ``initializer(*initargs)``). ``window`` bounds the tasks in
    flight per stream; a task that was on ``max_retries`` workers that died yields
    ``WorkerLost``. With ``return_exceptions=True`` failed tasks are yielded as ``TaskError``
    values instead of raised.

    Across machines: ``listen_workers="tcp://0.0.0.0:5556"`` lets workers on other hosts join
    (``python -m zerotasq worker --connect …``; they are sent the worker definition), and
    ``listen_clients`` lets other programs stream through this pool (``zerotasq.connect``).
    TCP uses CURVE: ``key`` is this pool's ``NAME.key_secret`` (``zerotasq.keygen``) and
    ``allow`` the file(s) of public keys admitted; plain TCP only with ``insecure=True``, and
    off loopback only with ``allow_insecure_remote=True`` too. ``n_workers=0`` starts no local
    worker.
    """

    def __init__(self, worker: Union[type, Worker, Callable, Sequence[Worker]], n_workers: Optional[int] = None,
                 init_kwargs: Optional[dict] = None, window: int = DEFAULT_WINDOW, max_retries: int = 3, *,
                 initializer: Optional[Callable] = None, initargs: Sequence = (),
                 return_exceptions: bool = False, progress: bool = False, loglevel: Any = None,
                 prefetch: int = 2, window_bytes: int = DEFAULT_WINDOW_BYTES,
                 listen_workers: Optional[str] = None, listen_clients: Optional[str] = None,
                 key: Optional[str] = None, allow: Union[None, str, Sequence[str]] = None,
                 insecure: bool = False, allow_insecure_remote: bool = False):
        definitions = worker_definitions(worker, n_workers, init_kwargs, initializer, initargs, loglevel)
        if n_workers is None:
            n_workers = len(definitions) if len(definitions) > 1 else default_workers()
        self.n_workers = int(n_workers)
        allow = [allow] if isinstance(allow, (str, bytes)) or hasattr(allow, "__fspath__") else list(allow or [])
        tcp = dict(listen_workers=listen_workers, listen_clients=listen_clients, key=key, allow=allow,
                   insecure=insecure, allow_insecure_remote=allow_insecure_remote)
        native = start_pool(definitions, self.n_workers, max_retries=max_retries, prefetch=prefetch, tcp=tcp)
        super().__init__(native, window, return_exceptions=return_exceptions, progress=progress,
                         window_bytes=window_bytes)

    @property
    def endpoints(self) -> dict:
        """The TCP endpoints this pool listens on, ports resolved: ``{"workers": …, "clients": …}``."""
        return self._native.tcp_endpoints()

    def worker_pids(self) -> List[int]:
        """The pids of the live local worker processes."""
        return self._native.worker_pids()

    def stats(self) -> dict:
        """The broker's counters (submitted, completed, requeued, workers_lost, …)."""
        return self._native.stats()

    def __enter__(self) -> "Pool":
        return self


def connect(endpoint: str, *, server_key: Optional[str] = None, key: Optional[str] = None,
            insecure: bool = False, allow_insecure_remote: bool = False, window: int = DEFAULT_WINDOW,
            return_exceptions: bool = False, progress: bool = False,
            window_bytes: int = DEFAULT_WINDOW_BYTES, patience: float = 5.0) -> Client:
    """A client of the broker at ``endpoint`` (another program's ``Pool(listen_clients=…)`` or
    a ``zerotasq broker``): ``imap``/``map`` stream through its workers. CURVE with the
    broker's public key (``server_key``: its ``NAME.key`` file or the key itself) and our key
    pair (``key``: a ``NAME.key_secret`` file the broker admits); plain TCP only with
    ``insecure=True``. A broker that stays silent for ``patience`` seconds (unreachable, or
    our key refused) fails the stream's tasks with that reason."""
    from zerotasq import _native

    native = _native.NativePool.connect(endpoint, server_key, key, insecure, allow_insecure_remote, patience)
    return Client(native, window, return_exceptions=return_exceptions, progress=progress,
                  window_bytes=window_bytes)


def map(func: Callable, iterable: Iterable, *, n_workers: Optional[int] = None, ordered: bool = True,
        window: int = DEFAULT_WINDOW, max_retries: int = 3, return_exceptions: bool = False,
        progress: bool = False, initializer: Optional[Callable] = None, initargs: Sequence = ()) -> Iterator:
    """``func`` over ``iterable`` in worker processes, lazily, like the builtin ``map``.
    ``func`` may be a lambda or a closure. The workers stop when the iterator is exhausted,
    closed or garbage-collected."""
    pool = Pool(func, n_workers, window=window, max_retries=max_retries, initializer=initializer,
                initargs=initargs, return_exceptions=return_exceptions, progress=progress)

    def generate():
        try:
            yield from pool.imap(iterable, ordered=ordered)
        finally:
            pool.close()

    return generate()
