"""Errors: a failed task arrives at its own place in the stream as an instance of the
remote exception's own type that is also a ``TaskError`` (or a plain ``TaskError`` when that
type cannot be rebuilt here), carrying the remote traceback; the stream goes on after it."""

from __future__ import annotations

import _pickle  # the C pickler alone: `pickle` imports re, enum and struct too (start-up)
import binascii

from zerotasq._native import PoolError

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - `typing` is not imported in worker processes
    from typing import Any, Callable, Dict, Optional, Tuple, Type

__all__ = ["TaskError", "WorkerLost", "TaskTimeout", "InitFailed", "TaskCancelled", "PoolError", "RemoteTraceback"]

_EXC_MARK = "\n\x00zerotasq-exc:"


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, as text (like concurrent.futures')."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


class TaskError(Exception):
    """One task failed. ``exc_type`` names the remote exception's type, ``original`` is the
    remote exception itself when it could be carried over (also chained as ``__cause__``),
    ``remote_traceback`` is its traceback text and ``index`` the task's input position when
    known (ordered streams)."""

    kind = "failed"

    def __init__(self, message: str, *, remote_traceback: str = "", index: Optional[int] = None,
                 original: Optional[BaseException] = None):
        super().__init__(message)
        self.message = message
        self.remote_traceback = remote_traceback
        self.index = index
        self.original = original
        head = message.split(":", 1)[0]
        self.exc_type = head if (original is not None or (head and " " not in head)) else None

    def __str__(self) -> str:
        where = "" if self.index is None else " (task #%d)" % self.index
        return self.message + where

    def __reduce__(self) -> Tuple[Callable[..., TaskError], Tuple[Any, ...]]:
        return (_rebuild, (type(self), self.message, self.remote_traceback, self.index))


class WorkerLost(TaskError):
    """The task was on ``max_retries`` workers that all died (a poison task)."""

    kind = "worker_lost"


class TaskTimeout(TaskError):
    """The task ran past ``task_timeout`` on ``max_retries`` workers (each was killed and
    replaced); the message names the limit."""

    kind = "timeout"


class InitFailed(TaskError):
    """No worker could run ``init``, so the task never ran."""

    kind = "init_failed"


class TaskCancelled(TaskError):
    """The pool was closed before the task finished."""

    kind = "cancelled"


_KINDS = {cls.kind: cls for cls in (TaskError, WorkerLost, TaskTimeout, InitFailed, TaskCancelled)}


def _rebuild(cls: Type[TaskError], message: str, remote_traceback: str, index: Optional[int]) -> TaskError:
    return cls(message, remote_traceback=remote_traceback, index=index)


class _OriginalFirst:
    """Sits between the original exception type and ``TaskError`` in a rebuilt error's MRO,
    so that the original type's ``__init__`` and ``__str__`` reach what they would reach in
    the original (``Exception``'s), not ``TaskError``'s."""

    def __init__(self, *args: Any, **kwargs: Any):
        super(TaskError, self).__init__(*args, **kwargs)  # type: ignore[misc]

    def __str__(self) -> str:
        return Exception.__str__(self)  # type: ignore[arg-type]


#: original exception type -> its TaskError subclass, or None where it cannot be made.
_REBUILT: Dict[type, Optional[type]] = {}


def _rebuilt_type(original_type: type) -> Optional[type]:
    """A subclass of both ``original_type`` and ``TaskError``, made once per type. None for
    what must not or cannot be subclassed: not an ``Exception`` (a ``SystemExit`` raised in a
    worker must not exit the caller), final types, clashing layouts or metaclasses."""
    if original_type in _REBUILT:
        return _REBUILT[original_type]
    cls = None
    if issubclass(original_type, Exception) and not issubclass(original_type, TaskError):
        namespace = {
            "__module__": original_type.__module__,
            "__qualname__": original_type.__qualname__,
            "__doc__": original_type.__doc__,
            "__reduce__": _reduce_rebuilt,
        }
        try:
            cls = type(original_type.__name__, (original_type, _OriginalFirst, TaskError), namespace)
        except Exception:
            cls = None
    # Two threads may both have made one: all keep the first, so one type means one class.
    return _REBUILT.setdefault(original_type, cls)


def _reduce_rebuilt(self: TaskError) -> Tuple[Callable[..., TaskError], Tuple[Any, ...]]:
    return (_rebuild_from_original, (self.original, self.message, self.remote_traceback, self.index))


def _rebuild_from_original(original: BaseException, message: str, remote_traceback: str,
                           index: Optional[int]) -> TaskError:
    return _from_original(original, message, remote_traceback, index) or TaskError(
        message, remote_traceback=remote_traceback, index=index, original=original)


def _from_original(original: BaseException, message: str, remote_traceback: str,
                   index: Optional[int]) -> Optional[TaskError]:
    """``original`` as an instance of its own type that is also a ``TaskError``, built as
    unpickling builds it (the type called with the pickled arguments, then the state set;
    without ``__init__`` when that takes other arguments), or None when that fails."""
    cls = _rebuilt_type(type(original))
    if cls is None:
        return None
    try:
        reduced = original.__reduce_ex__(2)
        if not isinstance(reduced, tuple) or reduced[0] is not type(original):
            return None
        try:
            err = cls(*reduced[1])
        except Exception:
            err = _restore(cls, original.args, {})
        err.args = original.args
        if len(reduced) > 2 and reduced[2]:
            err.__setstate__(reduced[2])
    except Exception:
        return None
    err.message = message
    err.remote_traceback = remote_traceback
    err.index = index
    err.original = original
    err.exc_type = message.split(":", 1)[0]
    if index is not None and hasattr(err, "add_note"):
        err.add_note("(zerotasq: raised in a worker by task #%d)" % index)
    rebuilt: TaskError = err
    return rebuilt


def make_error(kind: str, message: str, detail: str, index: Optional[int]) -> TaskError:
    """Builds the error object for a failed task (called by the native module). A task that
    raised an exception that came back whole gives an instance of that exception's own type
    that is also a ``TaskError``, so ``except ValueError`` and ``except TaskError`` both
    catch it; anything else a plain ``TaskError`` (or the subclass of its kind)."""
    original = None
    if _EXC_MARK in detail:
        detail, _, blob = detail.partition(_EXC_MARK)
        try:
            original = _pickle.loads(binascii.a2b_base64(blob))
        except Exception:
            original = None
    remote = RemoteTraceback('\n"""\n%s"""' % detail) if detail else None
    if kind == "failed" and isinstance(original, BaseException):
        rebuilt = _from_original(original, message, detail, index)
        if rebuilt is not None:
            original.__cause__ = remote
            rebuilt.__cause__ = remote
            return rebuilt
    cls = _KINDS.get(kind, TaskError)
    err = cls(message, remote_traceback=detail, index=index, original=original)
    if kind not in _KINDS and kind != "failed":
        err.kind = kind
    if isinstance(original, BaseException):
        original.__cause__ = remote
        err.__cause__ = original
    elif remote is not None:
        err.__cause__ = remote
    return err


def describe(exc: BaseException) -> Tuple[str, str]:
    """Worker side: ``(message, detail)`` of an exception raised by ``process``; the detail is
    the traceback, followed by the pickled exception when it pickles."""
    import traceback

    name = type(exc).__qualname__
    module = type(exc).__module__
    if module not in ("builtins", "__main__"):
        name = module + "." + name
    text = str(exc)
    message = "%s: %s" % (name, text) if text else name
    detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    blob = _pickled(exc)
    if blob is not None:
        detail += _EXC_MARK + binascii.b2a_base64(blob, newline=False).decode("ascii")
    return message, detail


def _pickled(exc: BaseException) -> Optional[bytes]:
    """``exc`` pickled so that it loads again, or None: by reference; by value for a class
    this worker got by value (one from the caller's ``__main__``: cloudpickle then loads it as
    the caller's own class, which it tracks); or, when loading would call an ``__init__``
    that takes other arguments than it passes on, as its type, arguments and attributes."""
    from zerotasq._codec import dumps

    ways: Tuple[Callable[[], bytes], ...] = (
        lambda: _pickle.dumps(exc, protocol=5), lambda: dumps(exc), lambda: dumps(_Restored(exc)))
    for way in ways:
        try:
            blob = way()
            _pickle.loads(blob)
            return blob
        except Exception:
            pass
    return None


class _Restored:
    """Pickles an exception as ``_restore`` rebuilds it, without calling ``__init__``."""

    def __init__(self, exc: BaseException):
        self.exc = exc

    def __reduce__(self) -> Tuple[Callable[..., BaseException], Tuple[Any, ...]]:
        return (_restore, (type(self.exc), self.exc.args, vars(self.exc)))


def _restore(cls: Type[BaseException], args: Tuple[Any, ...], state: Dict[str, Any]) -> BaseException:
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc
