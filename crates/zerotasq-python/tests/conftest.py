"""Shared fixtures: every test must leave no worker process behind."""

import os

import pytest
import zerotasq


def _children():
    """Pids of this process's live children (worker processes), via /proc."""
    pids = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open("/proc/self/task/%s/children" % task) as f:
                pids.update(int(p) for p in f.read().split())
        except OSError:
            pass
    live = set()
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().split(")")[-1].split()[0] != "Z":
                    live.add(pid)
        except OSError:
            pass
    return live


@pytest.fixture(autouse=True)
def no_orphans():
    before = _children()
    yield
    # The workers zerotasq.map keeps warm belong to the test that started them.
    zerotasq.stop_warm_workers()
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _children() - before:
        time.sleep(0.05)
    assert not (_children() - before), "worker processes left behind"
