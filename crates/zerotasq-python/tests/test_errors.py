"""An exception in ``process`` arrives at its task's place as ``TaskError`` chaining the
original exception and the remote traceback; iteration goes on after it."""

import pytest

import zerotasq
from zerotasq import Pool, TaskError, Worker


class Picky(Worker):
    def process(self, request):
        if request == 5:
            raise ValueError("boom in task %d" % request)
        return request


def test_raise_then_continue():
    with Pool(Picky, n_workers=2) as pool:
        it = iter(pool.imap(range(10)))
        got = [next(it) for _ in range(5)]
        with pytest.raises(TaskError) as info:
            next(it)
        got += list(it)
    assert got == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    err = info.value
    assert err.exc_type == "ValueError"
    assert "boom in task 5" in str(err)
    assert err.index == 5
    assert isinstance(err.original, ValueError)
    assert isinstance(err.__cause__, ValueError)
    assert "in process" in err.remote_traceback and "boom in task 5" in err.remote_traceback
    assert isinstance(err.__cause__.__cause__, zerotasq.RemoteTraceback)


def test_return_exceptions():
    with Pool(Picky, n_workers=2, return_exceptions=True) as pool:
        got = list(pool.imap_unordered(range(10)))
    errors = [g for g in got if isinstance(g, TaskError)]
    assert len(got) == 10 and len(errors) == 1
    assert sorted(g for g in got if not isinstance(g, TaskError)) == [0, 1, 2, 3, 4, 6, 7, 8, 9]


class FailingInit(Worker):
    def init(self):
        raise RuntimeError("no model here")

    def process(self, request):
        return request


def test_init_failure_is_an_error_not_a_hang():
    with Pool(FailingInit, n_workers=1, return_exceptions=True) as pool:
        got = list(pool.imap(range(3)))
    assert len(got) == 3
    assert all(isinstance(g, zerotasq.InitFailed) for g in got)
    assert "no model here" in str(got[0])
