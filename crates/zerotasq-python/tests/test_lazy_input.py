"""A lazily generated 2-million-item input of which 1,000 results are consumed: the input
is pulled only about ``window`` + consumed items."""

import time

from zerotasq import Pool

N = 2_000_000
WINDOW = 200


def first8(b):
    return int.from_bytes(b[:8], "little")


def test_lazy_input_pulled_window_plus_consumed():
    produced = [0]
    pad = b"x" * 1016

    def gen():
        for i in range(N):
            produced[0] += 1
            yield i.to_bytes(8, "little") + pad

    with Pool(first8, n_workers=2, window=WINDOW) as pool:
        results = pool.imap(gen())
        got = []
        for r in results:
            got.append(r)
            if len(got) == 1000:
                break
        at_stop = produced[0]
        time.sleep(0.5)
        after_idle = produced[0]
        results.close()
    assert got == list(range(1000))
    assert at_stop <= 1000 + WINDOW
    assert after_idle == at_stop


def test_big_items_bounded_by_window_bytes():
    """The window also has a byte budget: with 1 MiB items and ``window_bytes`` of 8 MiB, at
    most 8 items are pulled ahead of what was yielded, whatever ``window`` says."""
    produced = [0]
    pad = b"x" * ((1 << 20) - 8)

    def gen():
        for i in range(100):
            produced[0] += 1
            yield i.to_bytes(8, "little") + pad

    with Pool(first8, n_workers=2, window=1024, window_bytes=8 << 20) as pool:
        ahead = []
        for n, r in enumerate(pool.imap(gen()), 1):
            assert r == n - 1
            ahead.append(produced[0] - n)
    assert max(ahead) <= 8
    assert produced[0] == 100
