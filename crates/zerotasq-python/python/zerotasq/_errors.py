"""Errors: a failed task arrives as ``TaskError`` at its own place in the stream, carrying the
remote exception's type, message and traceback; the stream goes on after it."""

from __future__ import annotations

import binascii
import pickle
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - `typing` is not imported in worker processes
    from typing import Optional

from zerotasq._native import PoolError

__all__ = ["TaskError", "WorkerLost", "InitFailed", "TaskCancelled", "PoolError", "RemoteTraceback"]

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

    def __reduce__(self):
        return (_rebuild, (type(self), self.message, self.remote_traceback, self.index))


class WorkerLost(TaskError):
    """The task was on ``max_retries`` workers that all died (a poison task)."""

    kind = "worker_lost"


class InitFailed(TaskError):
    """No worker could run ``init``, so the task never ran."""

    kind = "init_failed"


class TaskCancelled(TaskError):
    """The pool was closed before the task finished."""

    kind = "cancelled"


_KINDS = {cls.kind: cls for cls in (TaskError, WorkerLost, InitFailed, TaskCancelled)}


def _rebuild(cls, message, remote_traceback, index):
    return cls(message, remote_traceback=remote_traceback, index=index)


def make_error(kind: str, message: str, detail: str, index: Optional[int]) -> TaskError:
    """Builds the error object for a failed task (called by the native module)."""
    original = None
    if _EXC_MARK in detail:
        detail, _, blob = detail.partition(_EXC_MARK)
        try:
            original = pickle.loads(binascii.a2b_base64(blob))
        except Exception:
            original = None
    cls = _KINDS.get(kind, TaskError)
    err = cls(message, remote_traceback=detail, index=index, original=original)
    if kind not in _KINDS and kind != "failed":
        err.kind = kind
    remote = RemoteTraceback('\n"""\n%s"""' % detail) if detail else None
    if isinstance(original, BaseException):
        original.__cause__ = remote
        err.__cause__ = original
    elif remote is not None:
        err.__cause__ = remote
    return err


def describe(exc: BaseException):
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
    try:
        blob = pickle.dumps(exc, protocol=5)
        pickle.loads(blob)
        detail += _EXC_MARK + binascii.b2a_base64(blob, newline=False).decode("ascii")
    except Exception:
        pass
    return message, detail
