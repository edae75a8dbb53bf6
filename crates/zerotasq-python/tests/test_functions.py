"""Functions as workers: lambdas and closures (cloudpickled), ``zerotasq.map``,
``initializer``, and ``async for`` over results."""

import asyncio

import zerotasq
from zerotasq import Pool


def test_map_lambda():
    assert list(zerotasq.map(lambda x: x * x, range(100), n_workers=2)) == [x * x for x in range(100)]


def test_map_closure_unordered():
    offset = 1000

    def add(x):
        return x + offset

    got = zerotasq.map(add, range(500), n_workers=2, ordered=False)
    assert sorted(got) == [x + 1000 for x in range(500)]


def test_lambda_inside_tasks_and_results():
    with Pool(lambda f: (lambda y: f(y) + 1), n_workers=2) as pool:
        fs = pool.map([lambda y: y, lambda y: 2 * y])
    assert [f(10) for f in fs] == [11, 21]


_STATE = {}


def _init(value):
    _STATE["value"] = value


def _read(_):
    return _STATE.get("value")


def test_initializer_runs_in_each_worker():
    with Pool(_read, n_workers=2, initializer=_init, initargs=(42,)) as pool:
        assert pool.map(range(20)) == [42] * 20


def test_async_for():
    async def main():
        out = []
        with Pool(lambda x: -x, n_workers=2) as pool:
            async for y in pool.imap(range(50)):
                out.append(y)
        return out

    assert asyncio.run(main()) == [-x for x in range(50)]


def test_bytes_pass_through_unpickled():
    blob = bytes(range(256)) * 4096  # 1 MiB
    with Pool(lambda b: (type(b).__name__, len(b), b[:3]), n_workers=2) as pool:
        got = pool.map([blob] * 8)
    assert got == [("bytes", len(blob), blob[:3])] * 8


def test_progress_bar(capsys):
    got = list(zerotasq.map(abs, range(-20, 0), n_workers=2, progress=True))
    assert got == list(range(20, 0, -1))
