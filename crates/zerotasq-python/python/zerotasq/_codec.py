"""Payload pickling: protocol 5 with the fast C pickler, falling back to cloudpickle for what
plain pickle refuses (lambdas, closures, classes defined in ``__main__``). Exact ``bytes``
payloads never reach this module: the native codec moves them as they are."""

from __future__ import annotations

import pickle

__all__ = ["dumps", "loads", "dumps_by_value"]

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
