"""ZeroTasQ: stream any iterable through long-lived worker processes (each initialised once)
and get the results back as an iterator, in input order or as completed, while the input is
read lazily. The broker and the client are Rust threads (no GIL); each worker is a fresh
interpreter whose loop is the Rust engine's, calling into Python only for ``init`` and
``process``.

The seed's API::

    from zerotasq import LoadBalancer, Worker

    class Echo(Worker):
        def init(self, prefix=""):
            self.prefix = prefix
        def process(self, request):
            return self.prefix + request

    with LoadBalancer([Echo(init_kwargs={"prefix": ">"}) for _ in range(4)], reply_sync=True) as conn:
        for y in conn.iter(["a", "b"], cache_size=100):
            print(y)

The modern API: ``Pool``, ``zerotasq.map``, ``Executor``; across machines ``Pool(listen_workers=…)``,
``python -m zerotasq worker --connect …``, ``zerotasq.connect`` and ``zerotasq.keygen``.
"""

# `typing` costs a worker ~10 ms of start-up: not imported at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from zerotasq._errors import (
        InitFailed,
        PoolError,
        RemoteTraceback,
        TaskCancelled,
        TaskError,
        TaskTimeout,
        WorkerLost,
    )
    from zerotasq._native import keygen
    from zerotasq.balancer import Connector, LoadBalancer
    from zerotasq.executor import Executor
    from zerotasq.pool import Client, Pool, connect, map, stop_warm_workers
    from zerotasq.results import Results
    from zerotasq.worker import FunctionWorker, Worker, worker_slot

__version__ = "0.1.0"

__all__ = [
    "Worker", "FunctionWorker", "LoadBalancer", "Connector", "Pool", "Client", "connect", "keygen", "map",
    "stop_warm_workers", "worker_slot", "Executor", "Results",
    "TaskError", "WorkerLost", "TaskTimeout", "InitFailed", "TaskCancelled", "PoolError", "RemoteTraceback",
]


# Names are imported on first use: a worker process imports this package too, and every
# module it does not need costs start-up time.
_WHERE = {
    "Worker": "worker", "FunctionWorker": "worker", "LoadBalancer": "balancer", "Connector": "balancer",
    "Pool": "pool", "Client": "pool", "connect": "pool", "map": "pool", "keygen": "_native",
    "stop_warm_workers": "pool", "worker_slot": "worker", "Executor": "executor", "Results": "results",
    "TaskError": "_errors", "WorkerLost": "_errors", "TaskTimeout": "_errors", "InitFailed": "_errors",
    "TaskCancelled": "_errors", "PoolError": "_errors", "RemoteTraceback": "_errors",
}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError("module 'zerotasq' has no attribute %r" % name)
    import importlib

    value = getattr(importlib.import_module("zerotasq." + module), name)
    globals()[name] = value
    return value


def __dir__() -> "list[str]":
    return sorted(list(globals()) + list(_WHERE))
