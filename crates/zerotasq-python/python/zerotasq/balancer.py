"""The seed's API, unchanged: ``LoadBalancer(workers, reply_sync=...)`` as a context manager
giving a ``Connector`` with ``send``, ``receive`` and ``iter``.

    workers = [Echo(init_kwargs={"prefix": ">"}) for _ in range(4)]
    with LoadBalancer(workers, reply_sync=True) as conn:
        for y in conn.iter(stream, cache_size=200):
            ...
"""

from __future__ import annotations

import threading

from zerotasq import _native
from zerotasq._codec import dumps, loads
from zerotasq._controls import Controls
from zerotasq._errors import make_error
from zerotasq._launch import start_pool
from zerotasq._typing import Generic, TypeVar, readable_annotations
from zerotasq.results import Results
from zerotasq.worker import Worker, is_batched

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - `typing` costs start-up (see _typing)
    from typing import Iterable, List, Optional, Sequence, Union

    from zerotasq._controls import WorkerEnv

__all__ = ["LoadBalancer", "Connector"]

In = TypeVar("In")
Out = TypeVar("Out")


class Connector(Generic[In, Out]):
    """Sends tasks to the workers and receives their results. ``send`` blocks while
    ``cache_size`` tasks are sent and not yet received; ``receive`` blocks until a result is
    there (in send order when ``reply_sync``). Both may be used from two threads."""

    def __init__(self, native_pool: _native.NativePool, reply_sync: bool, cache_size: int,
                 return_exceptions: bool, pack: bool = True):
        self._pool = native_pool
        self._pack = pack
        self.reply_sync = reply_sync
        self.cache_size = cache_size
        self.return_exceptions = return_exceptions
        self._conn: Optional[_native.NativeConnector] = None
        self._lock = threading.Lock()

    def _connector(self) -> _native.NativeConnector:
        with self._lock:
            if self._conn is None:
                self._conn = self._pool.connector(self.cache_size, self.reply_sync, dumps, loads, make_error)
            return self._conn

    def send(self, task: In) -> None:
        """Sends one task (blocks while the queue is full)."""
        self._connector().send(task)

    def receive(self, timeout: Optional[float] = None) -> Out:
        """The next result (blocks until there is one). A failed task raises its exception
        (also a ``TaskError``), or returns it with ``return_exceptions=True``;
        ``TimeoutError`` after ``timeout``."""
        got = self._connector().recv(timeout)
        if got is None:
            raise EOFError("every task's result has been received")
        ok, value = got
        if ok or self.return_exceptions:
            return value  # type: ignore[no-any-return]
        raise value

    def iter(self, iterable: Iterable[In], cache_size: int = 100) -> Results[Out]:
        """Feeds ``iterable`` to the workers and yields the results (in input order when
        ``reply_sync``), keeping at most ``cache_size`` tasks in flight."""
        from zerotasq.pool import DEFAULT_WINDOW_BYTES

        native = self._pool.results(iterable, cache_size, self.reply_sync, dumps, loads, make_error,
                                    self.return_exceptions, DEFAULT_WINDOW_BYTES, self._pack)
        return Results(native)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class LoadBalancer(Generic[In, Out]):
    """Starts one worker process per ``Worker`` instance in ``workers`` (each a fresh
    interpreter running that instance's ``init``) and a broker thread; stops them all on exit.
    The controls (``task_timeout``, ``max_tasks_per_worker``, ``max_worker_memory``,
    ``max_worker_age``, ``worker_env``, ``devices``, ``threads_per_worker``) and batching for
    workers that define ``process_batch`` (``max_batch_size``, ``batch_wait``) are ``Pool``'s."""

    def __init__(self, workers: List[Worker[In, Out]], reply_sync: bool = False,
                 loglevel: Union[None, int, str] = None, cache_size: int = 100, max_retries: int = 3,
                 return_exceptions: bool = False, *, task_timeout: Optional[float] = None,
                 max_tasks_per_worker: Optional[int] = None, max_worker_memory: Optional[int] = None,
                 max_worker_age: Optional[float] = None, worker_env: WorkerEnv = None,
                 devices: Optional[Sequence[Union[str, int]]] = None, threads_per_worker: Optional[int] = None,
                 max_batch_size: Optional[int] = None, batch_wait: float = 0.0):
        workers = list(workers)
        if not workers or not all(isinstance(w, Worker) for w in workers):
            raise TypeError("LoadBalancer needs a non-empty list of Worker instances")
        if loglevel is not None:
            for w in workers:
                if getattr(w, "loglevel", None) is None:
                    w.loglevel = loglevel
        self.workers = workers
        self.reply_sync = reply_sync
        self.cache_size = cache_size
        self.max_retries = max_retries
        self.return_exceptions = return_exceptions
        self.controls = Controls(task_timeout=task_timeout, max_tasks_per_worker=max_tasks_per_worker,
                                 max_worker_memory=max_worker_memory, max_worker_age=max_worker_age,
                                 worker_env=worker_env, devices=devices, threads_per_worker=threads_per_worker,
                                 max_batch_size=max_batch_size, batch_wait=batch_wait,
                                 batched=any(is_batched(w) for w in workers))
        self._pool: Optional[_native.NativePool] = None
        self._conn: Optional[Connector[In, Out]] = None

    def __enter__(self) -> Connector[In, Out]:
        self._pool = start_pool(self.workers, len(self.workers), max_retries=self.max_retries,
                                controls=self.controls)
        self._conn = Connector(self._pool, self.reply_sync, self.cache_size, self.return_exceptions,
                               self.controls.packs)
        return self._conn

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._pool is not None:
            self._pool.close()


readable_annotations(Connector, LoadBalancer)
