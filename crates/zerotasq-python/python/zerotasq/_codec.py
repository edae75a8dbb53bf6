"""Pickling by value, and of worker definitions. Payloads are pickled by the native codec
with the C pickler (protocol 5); ``dumps`` here is its fallback, by value with cloudpickle,
for what the C pickler refuses (lambdas, closures) or pickles by a reference to ``__main__``.
Exact ``bytes`` payloads never reach this module: the native codec moves them as they are."""

from __future__ import annotations

import _pickle  # the C pickler alone: `pickle` imports re, enum and struct too (start-up)
import io
import marshal
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - `typing` is not imported in worker processes
    from types import CodeType, ModuleType
    from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Type

__all__ = ["dumps", "loads", "dumps_definitions", "dumps_for_remote"]

loads = _pickle.loads


def _reduce_code(code: CodeType) -> Tuple[Callable[[bytes], Any], Tuple[bytes]]:
    return marshal.loads, (marshal.dumps(code),)


_Pickler: Optional[Type[_pickle.Pickler]] = None


def _pickler() -> Type[_pickle.Pickler]:
    """cloudpickle's pickler, but code objects go whole (marshal): cloudpickle renames their
    file ``<dynamic-code>``, and a worker's traceback would then show neither the user's file
    nor its lines. Workers run the same Python, which marshal needs."""
    global _Pickler
    if _Pickler is None:
        import collections
        import types

        import cloudpickle

        class Pickler(cloudpickle.Pickler):  # type: ignore[misc]
            dispatch_table = collections.ChainMap({types.CodeType: _reduce_code},
                                                  cloudpickle.Pickler.dispatch_table)

        _Pickler = Pickler
    return _Pickler


def dumps(obj: object) -> bytes:
    """Pickles ``obj`` by value, code and all (cloudpickle, protocol 5): the native codec's
    fallback (a worker's ``__main__`` is not the caller's), worker definitions, Executor
    calls."""
    buffer = io.BytesIO()
    _pickler()(buffer, protocol=5).dump(obj)
    return buffer.getvalue()


def dumps_definitions(obj: object) -> bytes:
    """Pickles worker definitions so that a fresh interpreter can load them: by reference
    with the C pickler when that is enough (the worker then need not import cloudpickle,
    ~25 ms of its start-up), by value with cloudpickle otherwise — lambdas, closures,
    classes from ``__main__``, modules registered with cloudpickle to pickle by value."""
    cloudpickle = sys.modules.get("cloudpickle")
    if cloudpickle is None or not getattr(cloudpickle.cloudpickle, "_PICKLE_BY_VALUE_MODULES", None):
        try:
            data = _pickle.dumps(obj, protocol=5)
        except Exception:
            pass
        else:
            # a reference to __main__ does not load in the worker (its __main__ is not ours)
            if b"__main__" not in data:
                return data
    return dumps(obj)


def _own_modules(definitions: List[Any]) -> List[ModuleType]:
    """The modules of the user's own code behind ``definitions``: not the standard library,
    not installed packages, not zerotasq — what another machine does not have."""
    import sysconfig

    installed = tuple(p for p in {sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
                      if p)
    names: Set[Optional[str]] = set()
    for worker in definitions:
        names.add(type(worker).__module__)
        for attr in ("func", "initializer"):
            names.add(getattr(getattr(worker, attr, None), "__module__", None))
    own = []
    for name in names:
        module = sys.modules.get(name) if name else None
        path = getattr(module, "__file__", None)
        if module is None or not name or name == "__main__" or name.split(".")[0] == "zerotasq" or not path:
            continue
        if not path.startswith(installed):
            own.append(module)
    return own


def dumps_for_remote(definitions: List[Any], limits: Dict[str, Any]) -> bytes:
    """Pickles worker definitions, with the limits the workers apply to themselves, for
    workers on other machines, which have the same environment but not the user's script or
    modules: code from those goes by value."""
    import cloudpickle

    own = [m for m in _own_modules(definitions) if m.__name__ not in cloudpickle.list_registry_pickle_by_value()]
    for module in own:
        cloudpickle.register_pickle_by_value(module)
    try:
        return dumps((definitions, limits))
    finally:
        for module in own:
            cloudpickle.unregister_pickle_by_value(module)
