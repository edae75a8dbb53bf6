"""The seed's ``Worker``: subclass it, implement ``init(**init_kwargs)`` (once per worker
process) and ``process(request)`` (once per task), and hand instances to ``LoadBalancer`` or
the class to ``Pool``. ``FunctionWorker`` wraps a plain function (lambdas too)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - `typing` is not imported in worker processes
    from typing import Any, Callable, Optional, Sequence

__all__ = ["Worker", "FunctionWorker", "log_level"]


def log_level(loglevel) -> int:
    """The ``logging`` level a seed-style ``loglevel`` names: ``logging`` levels and names as
    they are; small integers as 0 = NOTSET, 1 = DEBUG, 2 = INFO, 3 = WARNING, 4 = ERROR."""
    import logging

    if isinstance(loglevel, str):
        return logging.getLevelName(loglevel.upper())
    if isinstance(loglevel, int) and 0 <= loglevel < 10:
        return loglevel * 10
    return int(loglevel)


class Worker:
    """A long-lived worker. Built in the calling process; ``init`` runs in the worker process.

    >>> class Echo(Worker):
    ...     def init(self, prefix=""):
    ...         self.prefix = prefix
    ...     def process(self, request):
    ...         return self.prefix + request
    """

    def __init__(self, init_kwargs: Optional[dict] = None, loglevel: Any = None):
        self.init_kwargs = dict(init_kwargs or {})
        self.loglevel = loglevel

    def init(self, **init_kwargs) -> None:
        """Runs once in the worker process, before any task."""

    def process(self, request):  # pragma: no cover - abstract
        """Runs once per task; its return value is the task's result."""
        raise NotImplementedError("a Worker subclass must implement process(request)")


class FunctionWorker(Worker):
    """A worker calling ``func(request)``, after ``initializer(*initargs)`` once."""

    def __init__(self, func: Callable, initializer: Optional[Callable] = None,
                 initargs: Sequence = (), loglevel: Any = None):
        super().__init__({}, loglevel)
        self.func = func
        self.initializer = initializer
        self.initargs = tuple(initargs)

    def init(self) -> None:
        if self.initializer is not None:
            self.initializer(*self.initargs)

    def process(self, request):
        return self.func(request)
