"""Tiny tasks travel in packs (many items per engine task) with no chunk size to tune; long
tasks never do. Whatever happens inside a pack — an exception, an unpicklable item or
result, a worker killed by one item — lands at that item's own place."""

import os
import threading

import pytest
import zerotasq
from zerotasq import Pool


def identity(x):
    return x


def slow(x):
    import time

    time.sleep(0.05)
    return x


def fail_on_thousands(x):
    if x % 1000 == 999:
        raise ValueError("bad item %d" % x)
    return x * 2


def exit_on_5000(x):
    if x == 5000:
        os._exit(1)
    return x


def lock_on_1500(x):
    return threading.Lock() if x == 1500 else x


@pytest.mark.parametrize("ordered", [True, False])
def test_tiny_tasks_are_packed(ordered):
    n = 20_000
    with Pool(identity, n_workers=2) as pool:
        got = list(pool.imap(range(n), ordered=ordered))
        engine_tasks = pool.stats()["submitted"]
    assert (got if ordered else sorted(got)) == list(range(n))
    assert engine_tasks < n / 5, engine_tasks


@pytest.mark.parametrize("ordered", [True, False])
def test_packs_stay_whole_from_the_start_of_each_stream(ordered):
    # While the first answers teach the size, few tasks are in flight (not a window of
    # single items), and the room freed one yielded item at a time waits to make a whole
    # pack: a quarter of the window (256 items) per engine task, once grown.
    n = 20_000
    with Pool(identity, n_workers=2) as pool:
        for run in range(2):
            before = pool.stats()["submitted"]
            got = list(pool.imap(range(n), ordered=ordered))
            assert (got if ordered else sorted(got)) == list(range(n))
            engine_tasks = pool.stats()["submitted"] - before
            assert engine_tasks < n / 100, (run, engine_tasks)


def test_long_tasks_are_not_packed():
    with Pool(slow, n_workers=2) as pool:
        got = list(pool.imap(range(8)))
        engine_tasks = pool.stats()["submitted"]
    assert got == list(range(8))
    assert engine_tasks == 8


@pytest.mark.parametrize("ordered", [True, False])
def test_exceptions_inside_packs_keep_their_places(ordered):
    n = 10_000
    with Pool(fail_on_thousands, n_workers=2, return_exceptions=True) as pool:
        got = list(pool.imap(range(n), ordered=ordered, return_exceptions=True))
        assert pool.stats()["submitted"] < n / 5
    errors = [g for g in got if isinstance(g, zerotasq.TaskError)]
    assert sorted(e.index for e in errors) == list(range(999, n, 1000))
    for e in errors:
        assert e.exc_type == "ValueError"
        assert "bad item %d" % e.index in e.message
        assert "fail_on_thousands" in e.remote_traceback
        assert isinstance(e, ValueError) and isinstance(e.__cause__, zerotasq.RemoteTraceback)
    values = [g for g in got if not isinstance(g, zerotasq.TaskError)]
    expected = [2 * i for i in range(n) if i % 1000 != 999]
    assert (values if ordered else sorted(values)) == expected
    if ordered:
        assert all(isinstance(got[i], zerotasq.TaskError) for i in range(999, n, 1000))


def test_a_poison_item_inside_a_pack_is_lost_alone():
    n = 10_000
    with Pool(exit_on_5000, n_workers=2, max_retries=2, return_exceptions=True) as pool:
        got = list(pool.imap(range(n)))
        stats = pool.stats()
    # packed (the first window, and the poison's pack once split, go one by one)
    assert stats["submitted"] < n / 2, stats
    assert isinstance(got[5000], zerotasq.WorkerLost)
    assert got[5000].index == 5000
    assert got[:5000] == list(range(5000))
    assert got[5001:] == list(range(5001, n))


def test_unpicklable_item_inside_a_pack_fails_alone():
    items = list(range(2000))
    items[1500] = threading.Lock()
    with Pool(identity, n_workers=2, window=256, return_exceptions=True) as pool:
        got = list(pool.imap(items))
        assert pool.stats()["submitted"] < 1000
    assert isinstance(got[1500], zerotasq.TaskError)
    assert "task #1500 cannot be pickled" in str(got[1500])
    assert got[:1500] == list(range(1500))
    assert got[1501:] == list(range(1501, 2000))


def test_unpicklable_result_inside_a_pack_fails_alone():
    with Pool(lock_on_1500, n_workers=2, window=256, return_exceptions=True) as pool:
        got = list(pool.imap(range(2000)))
        assert pool.stats()["submitted"] < 1000
    assert isinstance(got[1500], zerotasq.TaskError)
    assert got[1500].index == 1500
    assert "the result of the task 1500 cannot be pickled" in got[1500].message
    assert got[:1500] == list(range(1500))
    assert got[1501:] == list(range(1501, 2000))
