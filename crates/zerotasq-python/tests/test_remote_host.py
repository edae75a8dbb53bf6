"""A Python remote worker on another host: a network namespace with its own address, joined
to this one by a veth pair, made and removed here (root and iproute2 needed, as for the
engine's netns tests). The worker is sent a closure defined in this test, serves part of a
stream beside a local worker, and its link is cut mid-run: its tasks run elsewhere, and
every result arrives once, in order."""

import os
import subprocess
import sys

import pytest
import zerotasq
from test_remote import RUN_MARKER, keys, no_remote_worker_left, remote_workers, stop  # noqa: F401 - fixture
from zerotasq import Pool

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(zerotasq.__file__)))


def ip(*args):
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    assert done.returncode == 0, "ip %s failed (root and iproute2 are needed): %s" % (" ".join(args), done.stderr)


@pytest.fixture
def host():
    """A namespace ``ztpy<pid>`` at 10.177.N.2, reached from here at 10.177.N.1."""
    pid = os.getpid()
    n = pid % 250 + 1
    netns, veth, peer = "ztpy%d" % pid, "ztpyb%d" % pid, "ztpyp%d" % pid
    here, there = "10.177.%d.1" % n, "10.177.%d.2" % n
    subprocess.run(["ip", "netns", "del", netns], capture_output=True)
    subprocess.run(["ip", "link", "del", veth], capture_output=True)
    ip("netns", "add", netns)
    try:
        ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", netns)
        ip("addr", "add", here + "/30", "dev", veth)
        ip("link", "set", veth, "up")
        ip("-n", netns, "addr", "add", there + "/30", "dev", peer)
        ip("-n", netns, "link", "set", peer, "up")
        ip("-n", netns, "link", "set", "lo", "up")
        yield dict(netns=netns, veth=veth, here=here)
    finally:
        subprocess.run(["ip", "link", "del", veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)


def pid_after_sleep(x):
    import time

    time.sleep(0.002)
    return x, os.getpid()


def test_a_python_worker_on_another_host_serves_and_survives_a_cut(keys, host):  # noqa: F811
    offset = 1000

    def shifted(x):  # a closure: only by value can the other host run it
        value, pid = pid_after_sleep(x)
        return value + offset, pid

    with Pool(shifted, n_workers=1, listen_workers="tcp://%s:0" % host["here"], key=keys["pool"] + ".key_secret",
              allow=keys["allowed"]) as pool:
        endpoint = pool.endpoints["workers"]
        worker = subprocess.Popen(
            ["ip", "netns", "exec", host["netns"], sys.executable, "-m", "zerotasq", "worker", "--connect", endpoint,
             "-n", "1", "--server-key", keys["pool"] + ".key", "--key", keys["worker"] + ".key_secret"],
            cwd="/", env=dict(os.environ, PYTHONPATH=PACKAGE_ROOT, ZT_TEST_RUN=RUN_MARKER), stderr=subprocess.PIPE,
            text=True)
        try:
            results = pool.imap(range(3000), window=64)
            got = [next(results) for _ in range(1500)]
            remote = {pid for _, pid in got} - set(pool.worker_pids())
            ip("link", "set", host["veth"], "down")
            got.extend(next(results) for _ in range(1000))
            ip("link", "set", host["veth"], "up")
            got.extend(results)
            stats = pool.stats()
        finally:
            err = stop(worker)
    assert [x for x, _ in got] == [x + 1000 for x in range(3000)]
    assert remote, "the worker on the other host ran no task before the cut: %s" % err
    assert stats["completed"] == 3000, stats
    assert stats["workers_lost"] >= 1 and stats["requeued"] >= 1, "the cut-off worker's tasks ran elsewhere: %s" % stats
    no_remote_worker_left()
