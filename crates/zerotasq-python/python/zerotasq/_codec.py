"""Payload pickling: protocol 5 with the fast C pickler, falling back to cloudpickle for what
plain pickle refuses (lambdas, closures, classes defined in ``__main__``). Exact ``bytes``
payloads never reach this module: the native codec moves them as they are."""

from __future__ import annotations

import pickle
import sys

__all__ = ["dumps", "loads", "dumps_by_value", "dumps_definitions"]

loads = pickle.loads


def dumps(obj) -> bytes:
    """Pickles ``obj`` (protocol 5); cloudpickle when plain pickle cannot."""
    try:
        return pickle.dumps(obj, protocol=5)
    except Exception:
        import cloudpickle

        return cloudpickle.dumps(obj, protocol=5)


def dumps_by_value(obj) -> bytes:
    """Pickles code and all (cloudpickle): worker definitions, Executor calls."""
    import cloudpickle

    return cloudpickle.dumps(obj, protocol=5)


def dumps_definitions(obj) -> bytes:
    """Pickles worker definitions so that a fresh interpreter can load them: by reference
    with the C pickler when that is enough (the worker then need not import cloudpickle,
    ~25 ms of its start-up), by value with cloudpickle otherwise — lambdas, closures,
    classes from ``__main__``, modules registered with cloudpickle to pickle by value."""
    cloudpickle = sys.modules.get("cloudpickle")
    if cloudpickle is None or not getattr(cloudpickle.cloudpickle, "_PICKLE_BY_VALUE_MODULES", None):
        try:
            data = pickle.dumps(obj, protocol=5)
        except Exception:
            pass
        else:
            # a reference to __main__ does not load in the worker (its __main__ is not ours)
            if b"__main__" not in data:
                return data
    return dumps_by_value(obj)
