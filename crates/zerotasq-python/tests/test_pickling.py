"""Unpicklable tasks or results give a clear error naming the task, never a hang."""

import threading

import pytest

from zerotasq import LoadBalancer, Pool, TaskError, Worker


def test_unpicklable_task_errors_at_its_place():
    items = [1, threading.Lock(), 3]
    with Pool(lambda x: x, n_workers=2, return_exceptions=True) as pool:
        got = pool.map(items)
    assert got[0] == 1 and got[2] == 3
    assert isinstance(got[1], TaskError)
    assert "task #1 cannot be pickled" in str(got[1]) and "lock" in str(got[1])


def test_unpicklable_result_names_the_task():
    with Pool(lambda x: threading.Lock() if x == "bad" else x, n_workers=2) as pool:
        it = iter(pool.imap(["ok", "bad", "fine"]))
        assert next(it) == "ok"
        with pytest.raises(TaskError) as info:
            next(it)
        assert next(it) == "fine"
    assert "'bad'" in str(info.value) and "cannot be pickled" in str(info.value)


class Echo(Worker):
    def process(self, request):
        return request


def test_send_refuses_unpicklable_task():
    with LoadBalancer([Echo()], reply_sync=True) as conn:
        with pytest.raises(TaskError, match="cannot be pickled"):
            conn.send(threading.Lock())
        conn.send("still works")
        assert conn.receive() == "still works"
