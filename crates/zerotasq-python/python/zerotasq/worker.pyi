# Types of worker.py, which stays free of annotations so that worker processes need not
# import `typing`.
from typing import Any, Callable, Generic, Iterable, Optional, TypeVar, Union

_In = TypeVar("_In", contravariant=True)
_Out = TypeVar("_Out", covariant=True)

__all__ = ["Worker", "FunctionWorker", "BatchFunctionWorker", "log_level", "worker_slot", "is_batched"]

LOG_LEVELS: tuple[str, ...]

def log_level(loglevel: Union[int, str]) -> int: ...
def worker_slot() -> Optional[int]: ...

class Worker(Generic[_In, _Out]):
    init_kwargs: dict[str, Any]
    loglevel: Union[None, int, str]
    def __init__(self, init_kwargs: Optional[dict[str, Any]] = None,
                 loglevel: Union[None, int, str] = None) -> None: ...
    # Any parameters: a subclass's `def init(self, path: str)` is no incompatible override.
    def init(self, *args: Any, **init_kwargs: Any) -> None: ...
    def process(self, request: _In) -> _Out: ...
    def process_batch(self, requests: list[_In]) -> list[_Out]: ...

class FunctionWorker(Worker[_In, _Out]):
    func: Callable[[_In], _Out]
    initializer: Optional[Callable[..., object]]
    initargs: tuple[Any, ...]
    def __init__(self, func: Callable[[_In], _Out], initializer: Optional[Callable[..., object]] = None,
                 initargs: Iterable[Any] = (), loglevel: Union[None, int, str] = None) -> None: ...
    def init(self) -> None: ...

class BatchFunctionWorker(FunctionWorker[Any, Any]):
    def process_batch(self, requests: list[Any]) -> list[Any]: ...

def is_batched(worker: Worker[Any, Any]) -> bool: ...
