"""``zerotasq.Executor`` is a real ``concurrent.futures.Executor``."""

import concurrent.futures as cf
import time

import pytest
import zerotasq


def test_submit_and_as_completed():
    with zerotasq.Executor(max_workers=2) as ex:
        futures = {ex.submit(lambda x: x * 3, i): i for i in range(200)}
        seen = {}
        for f in cf.as_completed(futures, timeout=60):
            seen[futures[f]] = f.result()
    assert seen == {i: 3 * i for i in range(200)}


def test_map_and_exceptions():
    def inv(x):
        return 1 / x

    with zerotasq.Executor(max_workers=2) as ex:
        assert list(ex.map(inv, [1, 2, 4])) == [1.0, 0.5, 0.25]
        f = ex.submit(inv, 0)
        with pytest.raises(zerotasq.TaskError) as info:
            f.result(timeout=30)
        assert isinstance(info.value.original, ZeroDivisionError)
        assert isinstance(f.exception(), zerotasq.TaskError)


def test_kwargs_wait_and_shutdown():
    ex = zerotasq.Executor(max_workers=2)
    fs = [ex.submit(time.sleep, 0.01) for _ in range(10)] + [ex.submit(dict, a=1)]
    done, _ = cf.wait(fs, timeout=30)
    assert len(done) == 11 and fs[-1].result() == {"a": 1}
    ex.shutdown()
    with pytest.raises(RuntimeError):
        ex.submit(abs, 1)
