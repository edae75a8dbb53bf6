"""The modern API: ``Pool`` (a context manager with ``imap``, ``imap_unordered`` and ``map``)
and ``zerotasq.map`` for a one-off function over an iterable, lambdas and closures included;
``connect`` for a broker elsewhere (another program's pool, or a ``zerotasq broker``).

    with Pool(Model, n_workers=4, init_kwargs={"path": "m.bin"}) as pool:
        for y in pool.imap(items):
            ...
"""

import time
import weakref
from typing import (
    Any,
    Callable,
    Dict,
    Generic,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Type,
    TypeVar,
    Union,
    overload,
)

from zerotasq import _native
from zerotasq._codec import dumps, loads
from zerotasq._errors import make_error
from zerotasq._launch import default_workers, start_pool
from zerotasq.results import Results
from zerotasq.worker import FunctionWorker, Worker

__all__ = ["Pool", "Client", "connect", "map", "DEFAULT_WINDOW"]

In = TypeVar("In")
Out = TypeVar("Out")
_Self = TypeVar("_Self", bound="Client[Any, Any]")

#: Tasks in flight (pulled and not yet yielded) per stream by default.
DEFAULT_WINDOW = 1024

#: Bytes in flight per stream by default: the window holds at most this many bytes' worth of
#: tasks the size of the first (pickled) item, and never fewer than 4 tasks. Big payloads
#: then flow in small batches that overlap with the workers' work.
DEFAULT_WINDOW_BYTES = 8 << 20

#: How long ``worker_pids`` waits for the workers of a new pool to be started.
_START_WAIT = 5.0


def _length(iterable: Iterable[Any]) -> Optional[int]:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def worker_definitions(worker: Any, n_workers: Optional[int], init_kwargs: Optional[Dict[str, Any]],
                       initializer: Optional[Callable[..., object]], initargs: Sequence[Any],
                       loglevel: Any) -> List[Worker[Any, Any]]:
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


class Client(Generic[In, Out]):
    """Streams through a broker: ``imap``, ``imap_unordered`` and ``map``. ``Pool`` is one
    with its own broker and workers; ``connect`` gives one for a broker elsewhere."""

    def __init__(self, native: _native.NativePool, window: int = DEFAULT_WINDOW, *,
                 return_exceptions: bool = False, progress: bool = False,
                 window_bytes: int = DEFAULT_WINDOW_BYTES):
        self.window = max(1, int(window))
        self.window_bytes = max(0, int(window_bytes))
        self.return_exceptions = return_exceptions
        self.progress = progress
        self._native = native
        self._finalizer = weakref.finalize(self, native.close)

    # -- streams -------------------------------------------------------------------------------
    def imap(self, iterable: Iterable[In], *, ordered: bool = True, window: Optional[int] = None,
             return_exceptions: Optional[bool] = None, progress: Optional[bool] = None,
             window_bytes: Optional[int] = None) -> Results[Out]:
        """Results in input order, lazily: the input is pulled as results are consumed."""
        native = self._native.results(
            iterable, self.window if window is None else max(1, int(window)), ordered, dumps, loads, make_error,
            self.return_exceptions if return_exceptions is None else return_exceptions,
            self.window_bytes if window_bytes is None else max(0, int(window_bytes)))
        show = self.progress if progress is None else progress
        return Results(native, _length(iterable) if show else None, show)

    def imap_unordered(self, iterable: Iterable[In], **kwargs: Any) -> Results[Out]:
        """Results as they complete."""
        return self.imap(iterable, ordered=False, **kwargs)

    def map(self, iterable: Iterable[In], **kwargs: Any) -> List[Out]:
        """All results, in input order, as a list."""
        return list(self.imap(iterable, **kwargs))

    def status(self) -> Dict[str, Any]:
        """The broker's status: ``clients`` (queue depths, rates), ``workers`` (state, tasks
        in flight), ``totals`` and the overall ``rate`` — of this pool, or of the broker this
        client is connected to."""
        import json

        status: Dict[str, Any] = json.loads(self._native.status_json())
        return status

    # -- lifetime ------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._native.closed

    def close(self) -> None:
        """Stops (a pool: its workers at once); open tasks end as cancelled. Idempotent."""
        self._finalizer()

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Pool(Client[In, Out]):
    """Long-lived worker processes, each a fresh interpreter that runs ``init`` once, and a
    broker thread that streams tasks through them::

        with Pool(Model, n_workers=4, init_kwargs={"path": "m.bin"}) as pool:
            for y in pool.imap(items):      # lazily, in input order
                ...

    ``worker`` is a ``Worker`` subclass (built with ``init_kwargs``), ``Worker`` instances,
    or a function, lambdas and closures too (with an optional ``initializer(*initargs)``).
    ``n_workers`` defaults to one per core. ``window`` bounds the tasks in flight per stream.
    A task that raises arrives as its own exception type (also a ``TaskError``), raised at
    its place in the stream or, with ``return_exceptions=True``, yielded; a task that was on
    ``max_retries`` workers that all died gives ``WorkerLost``. ``progress=True`` shows a bar;
    ``loglevel`` sets up ``logging`` in the workers (the seed's 0-3 = DEBUG..ERROR, or a
    ``logging`` level).

    Across machines: ``listen_workers="tcp://0.0.0.0:5556"`` lets workers on other hosts join
    (``python -m zerotasq worker --connect …``; they are sent the worker definition), and
    ``listen_clients`` lets other programs stream through this pool (``zerotasq.connect``).
    TCP uses CURVE: ``key`` is this pool's ``NAME.key_secret`` (``zerotasq.keygen``) and
    ``allow`` the file(s) of public keys admitted; plain TCP only with ``insecure=True``, and
    off loopback only with ``allow_insecure_remote=True`` too. ``n_workers=0`` starts no local
    worker.

    ``http="127.0.0.1:9100"`` (loopback; port 0: any free port) serves Prometheus metrics at
    ``/metrics`` and a live dashboard at ``/``; ``http_address`` tells where.
    """

    @overload
    def __init__(self, worker: Type[Worker[In, Out]], n_workers: Optional[int] = None,
                 init_kwargs: Optional[Dict[str, Any]] = None, window: int = DEFAULT_WINDOW,
                 max_retries: int = 3, *, initializer: Optional[Callable[..., object]] = None,
                 initargs: Sequence[Any] = (), return_exceptions: bool = False, progress: bool = False,
                 loglevel: Union[None, int, str] = None, prefetch: int = 2,
                 window_bytes: int = DEFAULT_WINDOW_BYTES, listen_workers: Optional[str] = None,
                 listen_clients: Optional[str] = None, key: Optional[str] = None,
                 allow: Union[None, str, Sequence[str]] = None, insecure: bool = False,
                 allow_insecure_remote: bool = False, http: Optional[str] = None) -> None: ...

    @overload
    def __init__(self, worker: Union[Worker[In, Out], Sequence[Worker[In, Out]], Callable[[In], Out]],
                 n_workers: Optional[int] = None, init_kwargs: Optional[Dict[str, Any]] = None,
                 window: int = DEFAULT_WINDOW, max_retries: int = 3, *,
                 initializer: Optional[Callable[..., object]] = None, initargs: Sequence[Any] = (),
                 return_exceptions: bool = False, progress: bool = False,
                 loglevel: Union[None, int, str] = None, prefetch: int = 2,
                 window_bytes: int = DEFAULT_WINDOW_BYTES, listen_workers: Optional[str] = None,
                 listen_clients: Optional[str] = None, key: Optional[str] = None,
                 allow: Union[None, str, Sequence[str]] = None, insecure: bool = False,
                 allow_insecure_remote: bool = False, http: Optional[str] = None) -> None: ...

    def __init__(self, worker: Union[Type[Worker[In, Out]], Worker[In, Out], Sequence[Worker[In, Out]],
                                     Callable[[In], Out]],
                 n_workers: Optional[int] = None, init_kwargs: Optional[Dict[str, Any]] = None,
                 window: int = DEFAULT_WINDOW, max_retries: int = 3, *,
                 initializer: Optional[Callable[..., object]] = None, initargs: Sequence[Any] = (),
                 return_exceptions: bool = False, progress: bool = False,
                 loglevel: Union[None, int, str] = None, prefetch: int = 2,
                 window_bytes: int = DEFAULT_WINDOW_BYTES, listen_workers: Optional[str] = None,
                 listen_clients: Optional[str] = None, key: Optional[str] = None,
                 allow: Union[None, str, Sequence[str]] = None, insecure: bool = False,
                 allow_insecure_remote: bool = False, http: Optional[str] = None) -> None:
        definitions = worker_definitions(worker, n_workers, init_kwargs, initializer, initargs, loglevel)
        if n_workers is None:
            n_workers = len(definitions) if len(definitions) > 1 else default_workers()
        self.n_workers = int(n_workers)
        allowed = [allow] if isinstance(allow, (str, bytes)) or hasattr(allow, "__fspath__") else list(allow or [])
        tcp = dict(listen_workers=listen_workers, listen_clients=listen_clients, key=key, allow=allowed,
                   insecure=insecure, allow_insecure_remote=allow_insecure_remote, http=http)
        native = start_pool(definitions, self.n_workers, max_retries=max_retries, prefetch=prefetch, tcp=tcp)
        super().__init__(native, window, return_exceptions=return_exceptions, progress=progress,
                         window_bytes=window_bytes)
        self._all_started = False

    @property
    def endpoints(self) -> Dict[str, Optional[str]]:
        """The TCP endpoints this pool listens on, ports resolved: ``{"workers": …, "clients": …}``."""
        return self._native.tcp_endpoints()

    @property
    def http_address(self) -> Optional[str]:
        """``http://HOST:PORT`` where the pool serves its metrics and dashboard (``http=``), else None."""
        return self._native.http_address()

    def worker_pids(self) -> List[int]:
        """The pids of the live local worker processes. Until every worker has been started
        once, waits (up to 5 s) for them, so that right after ``Pool()`` all are there."""
        pids = self._native.worker_pids()
        if not self._all_started:
            deadline = time.monotonic() + _START_WAIT
            while len(pids) < self.n_workers and time.monotonic() < deadline and not self.closed:
                time.sleep(0.005)
                pids = self._native.worker_pids()
            self._all_started = len(pids) >= self.n_workers
        return pids

    def stats(self) -> Dict[str, int]:
        """The broker's counters (submitted, completed, requeued, workers_lost, …)."""
        return self._native.stats()


def connect(endpoint: str, *, server_key: Optional[str] = None, key: Optional[str] = None,
            insecure: bool = False, allow_insecure_remote: bool = False, window: int = DEFAULT_WINDOW,
            return_exceptions: bool = False, progress: bool = False,
            window_bytes: int = DEFAULT_WINDOW_BYTES, patience: float = 5.0) -> Client[Any, Any]:
    """A client of the broker at ``endpoint`` (another program's ``Pool(listen_clients=…)`` or
    a ``zerotasq broker``): ``imap``/``map`` stream through its workers. CURVE with the
    broker's public key (``server_key``: its ``NAME.key`` file or the key itself) and our key
    pair (``key``: a ``NAME.key_secret`` file the broker admits); plain TCP only with
    ``insecure=True``. A broker that stays silent for ``patience`` seconds (unreachable, or
    our key refused) fails the stream's tasks with that reason."""
    native = _native.NativePool.connect(endpoint, server_key, key, insecure, allow_insecure_remote, patience)
    return Client(native, window, return_exceptions=return_exceptions, progress=progress,
                  window_bytes=window_bytes)


def map(func: Callable[[In], Out], iterable: Iterable[In], *, n_workers: Optional[int] = None,
        ordered: bool = True, window: int = DEFAULT_WINDOW, max_retries: int = 3,
        return_exceptions: bool = False, progress: bool = False,
        initializer: Optional[Callable[..., object]] = None, initargs: Sequence[Any] = ()) -> Iterator[Out]:
    """``func`` over ``iterable`` in worker processes, lazily, like the builtin ``map``.
    ``func`` may be a lambda or a closure. The workers stop when the iterator is exhausted,
    closed or garbage-collected."""
    pool = Pool(func, n_workers, window=window, max_retries=max_retries, initializer=initializer,
                initargs=initargs, return_exceptions=return_exceptions, progress=progress)

    def generate() -> Iterator[Out]:
        try:
            yield from pool.imap(iterable, ordered=ordered)
        finally:
            pool.close()

    return generate()
