"""The modern API: ``Pool`` (a context manager with ``imap``, ``imap_unordered`` and ``map``)
and ``zerotasq.map`` for a one-off function over an iterable, lambdas and closures included;
``connect`` for a broker elsewhere (another program's pool, or a ``zerotasq broker``).

    with Pool(Model, n_workers=4, init_kwargs={"path": "m.bin"}) as pool:
        for y in pool.imap(items):
            ...
"""

from __future__ import annotations

import collections.abc
import os
import threading
import time
import weakref

from zerotasq import _native
from zerotasq._codec import dumps, loads
from zerotasq._controls import Controls
from zerotasq._errors import make_error
from zerotasq._launch import default_workers, start_pool, worker_stdin
from zerotasq._typing import Generic, TypeVar, overload, readable_annotations
from zerotasq.results import Results
from zerotasq.worker import BatchFunctionWorker, FunctionWorker, Worker, is_batched

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - `typing` costs start-up (see _typing)
    from typing import Any, Callable, Dict, Iterable, Iterator, List, Literal, Optional, Sequence, Type, Union

    from zerotasq._controls import WorkerEnv

__all__ = ["Pool", "Client", "connect", "map", "stop_warm_workers", "DEFAULT_WINDOW"]

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
                       loglevel: Any, batched: bool = False) -> List[Worker[Any, Any]]:
    """What each worker process runs, from a Worker subclass, instance(s) or a function
    (``batched``: one that takes a list of requests)."""
    if batched and (isinstance(worker, (Worker, list, tuple)) or isinstance(worker, type)):
        raise TypeError("batched=True is for a function that takes a list; a Worker batches by defining "
                        "process_batch")
    if batched and callable(worker):
        if init_kwargs:
            raise TypeError("init_kwargs is for Worker classes; a function takes initializer/initargs")
        return [BatchFunctionWorker(worker, initializer, initargs, loglevel)]
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
        # Tiny items travel in packs, unless the pool's workers need each item alone.
        self._pack = True

    # -- streams -------------------------------------------------------------------------------
    def imap(self, iterable: Iterable[In], *, ordered: bool = True, window: Optional[int] = None,
             return_exceptions: Optional[bool] = None, progress: Optional[bool] = None,
             window_bytes: Optional[int] = None) -> Results[Out]:
        """Results in input order, lazily: the input is pulled as results are consumed."""
        native = self._native.results(
            iterable, self.window if window is None else max(1, int(window)), ordered, dumps, loads, make_error,
            self.return_exceptions if return_exceptions is None else return_exceptions,
            self.window_bytes if window_bytes is None else max(0, int(window_bytes)), self._pack)
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

    Controls for long-lived workers: ``task_timeout`` (seconds) — a task running longer has
    its worker killed and replaced and is tried again, and after ``max_retries`` tries ends as
    ``zerotasq.TaskTimeout`` at its place; recycling — a worker is replaced by a fresh one,
    with no task lost or charged, after ``max_tasks_per_worker`` tasks, past
    ``max_worker_memory`` bytes resident, or after ``max_worker_age`` seconds; each local
    worker has a slot ``0..n_workers-1`` (``zerotasq.worker_slot()``), kept across restarts;
    ``worker_env`` sets variables in its environment (``{"NAME": "value with {slot}"}``, or a
    function from slot to such a dict), ``devices`` gives it ``CUDA_VISIBLE_DEVICES`` =
    ``devices[slot % len(devices)]``, and ``threads_per_worker`` sizes its math libraries'
    thread pools (default: cores / workers; variables you set win).

    Batched inference: a ``Worker`` that defines ``process_batch(requests)`` (or a function
    with ``batched=True``) gets lists of 1 to ``max_batch_size`` (32) requests, formed from
    what is queued when it is free — ``batch_wait`` seconds (default 0) lets it wait for a
    fuller batch, never once the input is exhausted — and returns a list of as many results;
    the stream still yields one result per request, in order. ``task_timeout`` applies to
    each call of ``process_batch``.

    ``http="127.0.0.1:9100"`` (loopback; port 0: any free port) serves Prometheus metrics at
    ``/metrics`` and a live dashboard at ``/``; ``http_address`` tells where.
    """

    @overload
    def __init__(self, worker: Callable[[List[In]], Sequence[Out]],
                 n_workers: Optional[int] = None, init_kwargs: Optional[Dict[str, Any]] = None,
                 window: int = DEFAULT_WINDOW, max_retries: int = 3, *,
                 initializer: Optional[Callable[..., object]] = None, initargs: Sequence[Any] = (),
                 return_exceptions: bool = False, progress: bool = False,
                 loglevel: Union[None, int, str] = None, prefetch: int = 2,
                 window_bytes: int = DEFAULT_WINDOW_BYTES, listen_workers: Optional[str] = None,
                 listen_clients: Optional[str] = None, key: Optional[str] = None,
                 allow: Union[None, str, Sequence[str]] = None, insecure: bool = False,
                 allow_insecure_remote: bool = False, task_timeout: Optional[float] = None,
                 max_tasks_per_worker: Optional[int] = None, max_worker_memory: Optional[int] = None,
                 max_worker_age: Optional[float] = None, worker_env: WorkerEnv = None,
                 devices: Optional[Sequence[Union[str, int]]] = None,
                 threads_per_worker: Optional[int] = None, max_batch_size: Optional[int] = None,
                 batch_wait: float = 0.0, batched: Literal[True], http: Optional[str] = None) -> None: ...

    @overload
    def __init__(self, worker: Type[Worker[In, Out]], n_workers: Optional[int] = None,
                 init_kwargs: Optional[Dict[str, Any]] = None, window: int = DEFAULT_WINDOW,
                 max_retries: int = 3, *, initializer: Optional[Callable[..., object]] = None,
                 initargs: Sequence[Any] = (), return_exceptions: bool = False, progress: bool = False,
                 loglevel: Union[None, int, str] = None, prefetch: int = 2,
                 window_bytes: int = DEFAULT_WINDOW_BYTES, listen_workers: Optional[str] = None,
                 listen_clients: Optional[str] = None, key: Optional[str] = None,
                 allow: Union[None, str, Sequence[str]] = None, insecure: bool = False,
                 allow_insecure_remote: bool = False, task_timeout: Optional[float] = None,
                 max_tasks_per_worker: Optional[int] = None, max_worker_memory: Optional[int] = None,
                 max_worker_age: Optional[float] = None, worker_env: WorkerEnv = None,
                 devices: Optional[Sequence[Union[str, int]]] = None,
                 threads_per_worker: Optional[int] = None, max_batch_size: Optional[int] = None,
                 batch_wait: float = 0.0, batched: bool = False, http: Optional[str] = None) -> None: ...

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
                 allow_insecure_remote: bool = False, task_timeout: Optional[float] = None,
                 max_tasks_per_worker: Optional[int] = None, max_worker_memory: Optional[int] = None,
                 max_worker_age: Optional[float] = None, worker_env: WorkerEnv = None,
                 devices: Optional[Sequence[Union[str, int]]] = None,
                 threads_per_worker: Optional[int] = None, max_batch_size: Optional[int] = None,
                 batch_wait: float = 0.0, batched: bool = False, http: Optional[str] = None) -> None: ...

    def __init__(self, worker: Union[Type[Worker[In, Out]], Worker[In, Out], Sequence[Worker[In, Out]],
                                     Callable[[In], Out], Callable[[List[In]], Sequence[Out]]],
                 n_workers: Optional[int] = None, init_kwargs: Optional[Dict[str, Any]] = None,
                 window: int = DEFAULT_WINDOW, max_retries: int = 3, *,
                 initializer: Optional[Callable[..., object]] = None, initargs: Sequence[Any] = (),
                 return_exceptions: bool = False, progress: bool = False,
                 loglevel: Union[None, int, str] = None, prefetch: int = 2,
                 window_bytes: int = DEFAULT_WINDOW_BYTES, listen_workers: Optional[str] = None,
                 listen_clients: Optional[str] = None, key: Optional[str] = None,
                 allow: Union[None, str, Sequence[str]] = None, insecure: bool = False,
                 allow_insecure_remote: bool = False, task_timeout: Optional[float] = None,
                 max_tasks_per_worker: Optional[int] = None, max_worker_memory: Optional[int] = None,
                 max_worker_age: Optional[float] = None, worker_env: WorkerEnv = None,
                 devices: Optional[Sequence[Union[str, int]]] = None,
                 threads_per_worker: Optional[int] = None, max_batch_size: Optional[int] = None,
                 batch_wait: float = 0.0, batched: bool = False, http: Optional[str] = None) -> None:
        definitions = worker_definitions(worker, n_workers, init_kwargs, initializer, initargs, loglevel, batched)
        if n_workers is None:
            n_workers = len(definitions) if len(definitions) > 1 else default_workers()
        self.n_workers = int(n_workers)
        allowed = [allow] if isinstance(allow, (str, bytes)) or hasattr(allow, "__fspath__") else list(allow or [])
        tcp = dict(listen_workers=listen_workers, listen_clients=listen_clients, key=key, allow=allowed,
                   insecure=insecure, allow_insecure_remote=allow_insecure_remote, http=http)
        controls = Controls(task_timeout=task_timeout, max_tasks_per_worker=max_tasks_per_worker,
                            max_worker_memory=max_worker_memory, max_worker_age=max_worker_age,
                            worker_env=worker_env, devices=devices, threads_per_worker=threads_per_worker,
                            max_batch_size=max_batch_size, batch_wait=batch_wait,
                            batched=any(is_batched(d) for d in definitions))
        native = start_pool(definitions, self.n_workers, max_retries=max_retries, prefetch=prefetch, tcp=tcp,
                            controls=controls)
        super().__init__(native, window, return_exceptions=return_exceptions, progress=progress,
                         window_bytes=window_bytes)
        self._pack = controls.packs
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


@overload
def map(func: Callable[[In], Out], iterable: Iterable[In], *, n_workers: Optional[int] = None,
        ordered: bool = True, window: int = DEFAULT_WINDOW, max_retries: int = 3,
        return_exceptions: bool = False, progress: bool = False,
        initializer: Optional[Callable[..., object]] = None, initargs: Sequence[Any] = (), reuse: bool = True,
        task_timeout: Optional[float] = None, max_tasks_per_worker: Optional[int] = None,
        max_worker_memory: Optional[int] = None, max_worker_age: Optional[float] = None,
        worker_env: WorkerEnv = None, devices: Optional[Sequence[Union[str, int]]] = None,
        threads_per_worker: Optional[int] = None, batched: Literal[False] = False, max_batch_size: Optional[int] = None,
        batch_wait: float = 0.0) -> Iterator[Out]: ...


@overload
def map(func: Callable[[List[In]], Sequence[Out]], iterable: Iterable[In], *, n_workers: Optional[int] = None,
        ordered: bool = True, window: int = DEFAULT_WINDOW, max_retries: int = 3,
        return_exceptions: bool = False, progress: bool = False,
        initializer: Optional[Callable[..., object]] = None, initargs: Sequence[Any] = (), reuse: bool = True,
        task_timeout: Optional[float] = None, max_tasks_per_worker: Optional[int] = None,
        max_worker_memory: Optional[int] = None, max_worker_age: Optional[float] = None,
        worker_env: WorkerEnv = None, devices: Optional[Sequence[Union[str, int]]] = None,
        threads_per_worker: Optional[int] = None, batched: Literal[True], max_batch_size: Optional[int] = None,
        batch_wait: float = 0.0) -> Iterator[Out]: ...


def map(func: Union[Callable[[In], Out], Callable[[List[In]], Sequence[Out]]], iterable: Iterable[In], *,
        n_workers: Optional[int] = None, ordered: bool = True, window: int = DEFAULT_WINDOW, max_retries: int = 3,
        return_exceptions: bool = False, progress: bool = False,
        initializer: Optional[Callable[..., object]] = None, initargs: Sequence[Any] = (), reuse: bool = True,
        task_timeout: Optional[float] = None, max_tasks_per_worker: Optional[int] = None,
        max_worker_memory: Optional[int] = None, max_worker_age: Optional[float] = None,
        worker_env: WorkerEnv = None, devices: Optional[Sequence[Union[str, int]]] = None,
        threads_per_worker: Optional[int] = None, batched: bool = False, max_batch_size: Optional[int] = None,
        batch_wait: float = 0.0) -> Iterator[Out]:
    """``func`` over ``iterable`` in worker processes, lazily, like the builtin ``map``.
    ``func`` may be a lambda or a closure. The workers stay warm for the next call, as long as
    nothing that shapes them changed (the function and what it refers to, ``initializer``,
    ``n_workers``, the controls, the environment): they stop at exit, when a call needs other
    workers, or on ``zerotasq.stop_warm_workers()``. ``reuse=False``: workers of this call
    alone, stopped when the iterator is exhausted, closed or garbage-collected.
    ``batched=True``: ``func`` takes a list of up to ``max_batch_size`` items (32 by default)
    and returns a list of as many results; the iterator still yields one result per item."""
    definitions = worker_definitions(func, n_workers, None, initializer, initargs, None, batched)
    controls = Controls(task_timeout=task_timeout, max_tasks_per_worker=max_tasks_per_worker,
                        max_worker_memory=max_worker_memory, max_worker_age=max_worker_age,
                        worker_env=worker_env, devices=devices, threads_per_worker=threads_per_worker,
                        max_batch_size=max_batch_size, batch_wait=batch_wait, batched=batched)
    n = default_workers() if n_workers is None else int(n_workers)
    if not reuse:
        pool: Pool[In, Out] = Pool(definitions, n, window=window, max_retries=max_retries, **controls.given)
        release = pool.close
    else:
        key = (worker_stdin(definitions), n, max_retries, controls.native(n), sorted(os.environ.items()))
        warm = _Warm.take(key, lambda: Pool(definitions, n, window=window, max_retries=max_retries,
                                              **controls.given))
        pool, release = warm.pool, warm.release
    results = pool.imap(iterable, ordered=ordered, window=window, return_exceptions=return_exceptions,
                        progress=progress)
    return _MapStream(results, release)


class _MapStream(collections.abc.Iterator[Out]):
    """What ``zerotasq.map`` returns: its results (a failed task raises and the stream goes
    on), letting its workers go once exhausted, closed or dropped."""

    def __init__(self, results: Results[Out], release: Callable[[], None]):
        self._results = results
        self._done = weakref.finalize(self, release)

    def __next__(self) -> Out:
        try:
            return next(self._results)
        except StopIteration:
            self._done()
            raise

    def close(self) -> None:
        """Stops the stream: tasks still open are cancelled."""
        self._results.close()
        self._done()


class _Warm:
    """The pool ``zerotasq.map`` keeps warm (at most one, like loky's reusable executor), and
    its open streams: a pool that no longer fits is closed once its last stream ends."""

    # Reentrant: a dropped stream's finalizer may run (garbage collection) while it is held.
    lock = threading.RLock()
    current: "Optional[_Warm]" = None

    def __init__(self, key: Any, pool: "Pool[Any, Any]"):
        self.key = key
        self.pool = pool
        self.streams = 0
        self.retired = False

    @classmethod
    def take(cls, key: Any, start: "Callable[[], Pool[Any, Any]]") -> "_Warm":
        """The warm pool for ``key`` (started if needed), with one more stream open."""
        with cls.lock:
            warm = cls.current
            if warm is not None and (warm.key != key or warm.pool.closed):
                warm._retire()
                warm = cls.current = None
            if warm is None:
                warm = cls.current = _Warm(key, start())
            warm.streams += 1
            return warm

    def release(self) -> None:
        with self.lock:
            self.streams -= 1
            if self.retired and self.streams == 0:
                self.pool.close()

    def _retire(self) -> None:
        self.retired = True
        if self.streams == 0:
            self.pool.close()

    @classmethod
    def stop(cls) -> None:
        with cls.lock:
            warm, cls.current = cls.current, None
        if warm is not None:
            warm.pool.close()


def stop_warm_workers() -> None:
    """Stops the workers ``zerotasq.map`` keeps warm now (they stop at exit anyway); streams
    still open on them end with their open tasks cancelled."""
    _Warm.stop()


readable_annotations(Client, Pool, map, connect)
