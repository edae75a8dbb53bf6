"""``Results``: what ``imap`` returns. Iterating it (``for``) runs the native iterator
directly; ``async for`` awaits each result in a thread so the event loop keeps running;
``progress=True`` adds a bar."""

from __future__ import annotations

from zerotasq import _native
from zerotasq._typing import Generic, TypeVar, readable_annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - `typing` costs start-up (see _typing)
    from typing import Any, Callable, Iterator, Optional

__all__ = ["Results"]

Out = TypeVar("Out")
_Self = TypeVar("_Self", bound="Results[Any]")

_END = object()


class Results(Generic[Out]):
    """A lazy stream of results, in input order or as completed. At most ``window`` inputs are
    pulled ahead of what has been yielded."""

    def __init__(self, native: _native.NativeResults, total: Optional[int] = None,
                 progress: bool = False, on_close: Optional[Callable[[], Any]] = None):
        self._native = native
        self._total = total
        self._progress = progress
        self._on_close = on_close
        self._iter: Optional[Iterator[Out]] = None

    def _it(self) -> Iterator[Out]:
        if self._iter is None:
            if self._progress:
                from zerotasq._progress import with_progress

                self._iter = with_progress(self._native, self._total)
            else:
                self._iter = self._native
        return self._iter

    def __iter__(self) -> Iterator[Out]:
        return self._it()

    def __next__(self) -> Out:
        return next(self._it())

    @property
    def pulled(self) -> int:
        """How many input items have been pulled so far."""
        return self._native.pulled

    def close(self) -> None:
        """Stops the stream: tasks still open are cancelled."""
        self._native.close()
        if self._on_close is not None:
            self._on_close()

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __aiter__(self: _Self) -> _Self:
        return self

    async def __anext__(self) -> Out:
        import asyncio  # imported on first use: it costs worker start-up time otherwise

        loop = asyncio.get_running_loop()
        value: Any = await loop.run_in_executor(None, next, self._it(), _END)
        if value is _END:
            raise StopAsyncIteration
        result: Out = value
        return result


readable_annotations(Results)
