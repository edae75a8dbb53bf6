"""Progress bars for result iterators: tqdm when it is installed, else a one-line bar on
stderr with rate and, when the length is known, ETA."""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - `typing` costs ~10 ms of import time
    from typing import Iterable, Iterator, Optional, TypeVar

    T = TypeVar("T")


def with_progress(it: Iterable[T], total: Optional[int], desc: str = "zerotasq") -> Iterator[T]:
    """Yields what ``it`` yields while showing progress."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        with tqdm(total=total, desc=desc, unit="task") as bar:
            for item in it:
                bar.update(1)
                yield item
        return
    start = last = time.monotonic()
    done = 0

    def show(final: bool = False) -> None:
        elapsed = max(time.monotonic() - start, 1e-9)
        rate = done / elapsed
        if total:
            eta = (total - done) / rate if rate > 0 else float("inf")
            text = "\r%s: %d/%d %5.1f%% %.0f task/s ETA %.0fs" % (desc, done, total, 100.0 * done / total, rate, eta)
        else:
            text = "\r%s: %d %.0f task/s" % (desc, done, rate)
        sys.stderr.write(text + ("\n" if final else ""))
        sys.stderr.flush()

    try:
        for item in it:
            done += 1
            now = time.monotonic()
            if now - last >= 0.2:
                last = now
                show()
            yield item
    finally:
        show(final=True)
