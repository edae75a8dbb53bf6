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

The modern API: ``Pool``, ``zerotasq.map``, ``Executor``.
"""

from zerotasq._errors import InitFailed, PoolError, RemoteTraceback, TaskCancelled, TaskError, WorkerLost
from zerotasq.balancer import Connector, LoadBalancer
from zerotasq.pool import Pool, map
from zerotasq.results import Results
from zerotasq.worker import FunctionWorker, Worker

__version__ = "0.1.0"

__all__ = [
    "Worker", "FunctionWorker", "LoadBalancer", "Connector", "Pool", "map", "Executor", "Results",
    "TaskError", "WorkerLost", "InitFailed", "TaskCancelled", "PoolError", "RemoteTraceback",
]


def __getattr__(name):
    # concurrent.futures is imported only by programs that use the Executor.
    if name == "Executor":
        from zerotasq.executor import Executor

        return Executor
    raise AttributeError("module 'zerotasq' has no attribute %r" % name)
