"""The controls of long-lived workers — a time limit per task, recycling, batching, and
what each worker finds in its environment for its slot — checked where they are given (``Pool``,
``LoadBalancer``, ``zerotasq.map``), so that a mistake is an error at the call, and handed
to the native pool as one dict (``native``). Caller side only: workers never import this."""

from __future__ import annotations

import math
from collections.abc import Mapping as _Mapping

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - `typing` costs start-up (see _typing)
    from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union
__all__ = ["Controls", "WorkerEnv", "DEFAULT_BATCH_SIZE"]

#: Requests per call of ``process_batch`` unless ``max_batch_size`` says otherwise.
DEFAULT_BATCH_SIZE = 32

if TYPE_CHECKING:  # pragma: no cover
    #: ``worker_env``: variables with ``{slot}`` fields, or a function from slot to variables.
    WorkerEnv = Union[None, Mapping[str, str], Callable[[int], Mapping[str, str]]]


def _seconds(name: str, value: Optional[float]) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("%s must be a number of seconds, not %r" % (name, value))
    if not (value > 0 and math.isfinite(value)):
        raise ValueError("%s must be more than zero seconds, not %r" % (name, value))
    return float(value)


def _wait(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("%s must be a number of seconds, not %r" % (name, value))
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError("%s must be zero or more seconds, not %r" % (name, value))
    return float(value)


def _count(name: str, value: Optional[int], unit: str = "") -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("%s must be an int%s, not %r" % (name, unit, value))
    if value < 1:
        raise ValueError("%s must be at least 1%s, not %r" % (name, unit, value))
    return value


def _variables(where: str, env: Mapping[str, Any]) -> List[Tuple[str, str]]:
    if not isinstance(env, _Mapping):
        raise TypeError("%s must be a dict of variable names to values, not %r" % (where, env))
    pairs = []
    for name, value in env.items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise ValueError("%s: %r is not an environment variable's name" % (where, name))
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise TypeError("%s[%r] must be a str, not %r" % (where, name, value))
        pairs.append((name, str(value)))
    return pairs


def _check_template(where: str, value: str) -> None:
    """``{slot}`` is the only field (``{{`` and ``}}`` for braces), as the engine reads it."""
    import string

    try:
        fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(value) if f is not None]
    except ValueError as exc:
        raise ValueError("%s = %r: %s (write {{ and }} for braces)" % (where, value, exc)) from None
    for field, spec, conversion in fields:
        if field != "slot" or spec or conversion:
            shown = field + ("!" + conversion if conversion else "") + (":" + spec if spec else "")
            raise ValueError("%s = %r: unknown field {%s}; the only field is {slot}" % (where, value, shown))


class Controls:
    """Checked controls. ``native(n_workers)`` is what ``NativePool`` takes."""

    def __init__(self, *, task_timeout: Optional[float] = None, max_tasks_per_worker: Optional[int] = None,
                 max_worker_memory: Optional[int] = None, max_worker_age: Optional[float] = None,
                 worker_env: WorkerEnv = None, devices: Optional[Sequence[Union[str, int]]] = None,
                 threads_per_worker: Optional[int] = None, max_batch_size: Optional[int] = None,
                 batch_wait: float = 0.0, batched: bool = False):
        #: The keyword arguments as given (but ``batched``), for another ``Pool`` alike.
        self.given: Dict[str, Any] = dict(task_timeout=task_timeout, max_tasks_per_worker=max_tasks_per_worker,
                          max_worker_memory=max_worker_memory, max_worker_age=max_worker_age,
                          worker_env=worker_env, devices=devices, threads_per_worker=threads_per_worker,
                          max_batch_size=max_batch_size, batch_wait=batch_wait)
        self.batched = batched
        batch_wait = _wait("batch_wait", batch_wait)
        if not batched and (max_batch_size is not None or batch_wait):
            raise ValueError("max_batch_size and batch_wait are for workers that define process_batch "
                             "(or a function with batched=True)")
        self.max_batch_size = _count("max_batch_size", max_batch_size) or (DEFAULT_BATCH_SIZE if batched else 0)
        self.batch_wait = batch_wait
        self.task_timeout = _seconds("task_timeout", task_timeout)
        self.max_tasks_per_worker = _count("max_tasks_per_worker", max_tasks_per_worker)
        self.max_worker_memory = _count("max_worker_memory", max_worker_memory, " (bytes)")
        self.max_worker_age = _seconds("max_worker_age", max_worker_age)
        if worker_env is not None and not callable(worker_env):
            for name, value in _variables("worker_env", worker_env):
                _check_template("worker_env[%r]" % name, value)
        self.worker_env = worker_env
        self.devices = None if devices is None else self._devices(devices)
        self.threads_per_worker = _count("threads_per_worker", threads_per_worker)

    @staticmethod
    def _devices(devices: Sequence[Union[str, int]]) -> List[str]:
        if isinstance(devices, str):
            devices = devices.split(",")
        listed = [str(d).strip() for d in devices]
        if not listed or not all(listed):
            raise ValueError("devices must list at least one device, and no empty one: %r" % (devices,))
        return listed

    @property
    def packs(self) -> bool:
        """Whether tiny items may travel in packs: not when the broker batches for the
        workers, nor when a limit counts engine tasks (a pack would be one)."""
        return not (self.batched or self.task_timeout is not None or self.max_tasks_per_worker is not None)

    def limits(self) -> Dict[str, Any]:
        """The limits and batching alone: what remote workers of the pool apply to themselves."""
        return dict(task_timeout=self.task_timeout, max_tasks_per_worker=self.max_tasks_per_worker,
                    max_worker_memory=self.max_worker_memory, max_worker_age=self.max_worker_age,
                    max_batch_size=self.max_batch_size, batch_wait=self.batch_wait)

    def native(self, n_workers: int) -> Dict[str, Any]:
        """Everything, with a callable ``worker_env`` called for each local slot."""
        templates: List[Tuple[str, str]] = []
        per_slot: List[List[Tuple[str, str]]] = []
        if callable(self.worker_env):
            for slot in range(n_workers):
                per_slot.append(_variables("worker_env(%d)" % slot, self.worker_env(slot)))
        elif self.worker_env is not None:
            templates = _variables("worker_env", self.worker_env)
        return dict(self.limits(), env=templates, slot_env=per_slot, devices=self.devices,
                    threads_per_worker=self.threads_per_worker)
