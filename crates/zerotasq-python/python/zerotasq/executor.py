"""``Executor``: a ``concurrent.futures.Executor`` over a pool of worker processes. Calls are
cloudpickled, so lambdas and closures work; futures work with ``as_completed`` and ``wait``.

A feeder thread sends calls in submission order; a collector thread receives their outcomes
(in the same order, as the engine's ordered connector delivers them) and completes futures.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import threading

from zerotasq._codec import dumps, loads
from zerotasq._errors import make_error
from zerotasq._launch import default_workers, start_pool
from zerotasq._typing import TypeVar, readable_annotations
from zerotasq.worker import FunctionWorker

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - `typing` costs start-up (see _typing)
    from typing import Any, Callable, Deque, Optional, Sequence, Tuple

__all__ = ["Executor"]

T = TypeVar("T")


def _call(payload: bytes) -> Any:
    fn, args, kwargs = loads(payload)
    return fn(*args, **kwargs)


class Executor(cf.Executor):
    """Runs calls in ``max_workers`` long-lived worker processes."""

    def __init__(self, max_workers: Optional[int] = None, initializer: Optional[Callable[..., object]] = None,
                 initargs: Sequence[Any] = (), *, window: int = 1024, max_retries: int = 3):
        self._max_workers = int(max_workers or default_workers())
        self._pool = start_pool([FunctionWorker(_call, initializer, initargs)], self._max_workers,
                                max_retries=max_retries)
        self._conn = self._pool.connector(max(1, int(window)), True, dumps, loads, make_error)
        # Calls to send, in order; None: no more.
        self._queue: Deque[Optional[Tuple["cf.Future[Any]", bytes]]] = collections.deque()
        self._wakeup = threading.Condition()
        self._pending: Deque["cf.Future[Any]"] = collections.deque()
        self._shutdown = False
        self._feeder = threading.Thread(target=self._feed, name="zerotasq-executor-feeder", daemon=True)
        self._collector = threading.Thread(target=self._collect, name="zerotasq-executor-collector", daemon=True)
        self._feeder.start()
        self._collector.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> cf.Future[T]:
        """Schedules ``fn(*args, **kwargs)`` in a worker process; its future. A call that
        raises completes the future with its exception (also a ``TaskError``)."""
        with self._wakeup:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            payload = dumps((fn, args, kwargs))
            future: "cf.Future[T]" = cf.Future()
            self._queue.append((future, payload))
            self._wakeup.notify()
        return future

    def _feed(self) -> None:
        try:
            while True:
                with self._wakeup:
                    while not self._queue:
                        self._wakeup.wait()
                    item = self._queue.popleft()
                if item is None:
                    self._conn.finish()
                    return
                future, payload = item
                if not future.set_running_or_notify_cancel():
                    continue
                self._pending.append(future)
                self._conn.send(payload)
        except BaseException as exc:  # the pool was closed under us
            self._fail_all(exc)

    def _collect(self) -> None:
        try:
            while True:
                got = self._conn.recv()
                if got is None:
                    return
                ok, value = got
                future = self._pending.popleft()
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        except BaseException as exc:
            self._fail_all(exc)

    def _fail_all(self, exc: BaseException) -> None:
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._wakeup:
            if cancel_futures:
                kept: Deque[Optional[Tuple["cf.Future[Any]", bytes]]] = collections.deque()
                while self._queue:
                    item = self._queue.popleft()
                    if item is not None:
                        item[0].cancel()
                self._queue = kept
            if not self._shutdown:
                self._shutdown = True
                self._queue.append(None)
                self._wakeup.notify()
        if wait:
            self._feeder.join()
            self._collector.join()
            self._conn.close()
            self._pool.close()
        else:
            threading.Thread(target=self._close_later, daemon=True).start()

    def _close_later(self) -> None:
        self._feeder.join()
        self._collector.join()
        self._conn.close()
        self._pool.close()


readable_annotations(Executor)
