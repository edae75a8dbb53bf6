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


MAIN_SCRIPT = """
import dataclasses
from zerotasq import Pool

@dataclasses.dataclass
class Job:                      # defined in __main__: a worker's __main__ has no Job
    x: int

def double(job):
    return Job(job.x * 2)

if __name__ == "__main__":
    with Pool(double, n_workers=2) as pool:
        got = pool.map(Job(i) for i in range(3000))     # packed, then one by one
        one = pool.map([Job(5)])
    assert got == [Job(2 * i) for i in range(3000)], got[:3]
    assert type(one[0]) is Job                      # the caller's own class comes back
    print("OK")
"""


def test_instances_of_classes_from_main_travel_both_ways(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "main_classes.py"
    script.write_text(MAIN_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "OK", done.stderr
