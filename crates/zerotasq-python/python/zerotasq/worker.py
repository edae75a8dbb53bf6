"""The seed's ``Worker``: subclass it, implement ``init(**init_kwargs)`` (once per worker
process) and ``process(request)`` (once per task) — or ``process_batch(requests)`` (once per
batch) — and hand instances to ``LoadBalancer`` or the class to ``Pool``. ``FunctionWorker``
wraps a plain function (lambdas too), ``BatchFunctionWorker`` one that takes a list.

Worker processes import this module, so it imports nothing (``typing`` costs start-up
time): its types are in ``worker.pyi``."""

__all__ = ["Worker", "FunctionWorker", "BatchFunctionWorker", "log_level", "worker_slot", "is_batched"]

#: The seed's ``loglevel`` integers, in order.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def log_level(loglevel):
    """The ``logging`` level a seed-style ``loglevel`` names: the seed's integers 0 = DEBUG,
    1 = INFO, 2 = WARNING, 3 = ERROR; names (``"INFO"``) and ``logging`` levels as they are."""
    import logging

    if isinstance(loglevel, str):
        return logging.getLevelName(loglevel.upper())
    if isinstance(loglevel, int) and 0 <= loglevel < len(LOG_LEVELS):
        return logging.getLevelName(LOG_LEVELS[loglevel])
    return int(loglevel)


def worker_slot():
    """This worker's slot among its pool's local workers (``0..n_workers-1``, kept across
    restarts; a remote host numbers its own), or None outside a worker process."""
    import os

    slot = os.environ.get("ZEROTASQ_SLOT")
    return int(slot) if slot is not None and slot.isdigit() else None


class Worker:
    """A long-lived worker: ``init`` runs once in each worker process, ``process`` once per
    task. Built in the calling process (with ``init_kwargs``), run in the worker processes.

    >>> class Echo(Worker):
    ...     def init(self, prefix=""):
    ...         self.prefix = prefix
    ...     def process(self, request):
    ...         return self.prefix + request

    For type checkers, ``Worker[In, Out]`` names the request and result types:
    ``class Model(Worker[str, float])``.
    """

    def __class_getitem__(cls, types):
        # Run time has no use for the types (worker.pyi has them for type checkers).
        return cls

    def __init__(self, init_kwargs=None, loglevel=None):
        self.init_kwargs = dict(init_kwargs or {})
        self.loglevel = loglevel

    def init(self, *args, **init_kwargs):
        """Runs once in the worker process, before any task, with ``init_kwargs``. Define it
        with the parameters you need: ``def init(self, path, scale=1.0)``."""

    def process(self, request):  # pragma: no cover - abstract
        """Runs once per task; its return value is the task's result."""
        raise NotImplementedError("a Worker subclass must implement process(request)")

    def process_batch(self, requests):
        """Define it instead of (or beside) ``process`` to take requests in batches — a
        model's batched inference: it gets a list of 1 to ``max_batch_size`` requests and
        returns a list of as many results, result *i* for request *i*. Batches form from what
        is queued when the worker is free (``batch_wait`` lets it wait for more)."""
        return [self.process(request) for request in requests]


class FunctionWorker(Worker):
    """A worker calling ``func(request)``, after ``initializer(*initargs)`` once."""

    def __init__(self, func, initializer=None, initargs=(), loglevel=None):
        super().__init__({}, loglevel)
        self.func = func
        self.initializer = initializer
        self.initargs = tuple(initargs)

    def init(self):
        if self.initializer is not None:
            self.initializer(*self.initargs)

    def process(self, request):
        return self.func(request)


class BatchFunctionWorker(FunctionWorker):
    """A worker calling ``func(requests)`` with a list of requests, for a list of as many
    results."""

    def process_batch(self, requests):
        return self.func(requests)


def is_batched(worker):
    """Whether ``worker`` takes its requests in batches: its class defines ``process_batch``."""
    return type(worker).process_batch is not Worker.process_batch
