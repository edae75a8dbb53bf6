"""Controls for long-lived workers, with real worker processes: a time limit per task
(``TaskTimeout`` at its place), recycling by memory and by task count (nothing lost, nothing
run twice), a slot, variables and a device per worker that survive a SIGKILL, thread limits,
all of it under a SIGKILL storm, and bad settings refused at the call."""

import collections
import os
import signal
import time

import pytest
import zerotasq
from kill_storm import imap_under_kill_storm
from test_remote import PACKAGE_ROOT, keys, no_remote_worker_left, remote_workers, stop  # noqa: F401 - fixture
from zerotasq import LoadBalancer, Pool, TaskError, TaskTimeout, Worker

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")


def hang_on_17(x):
    if x == 17:
        time.sleep(3600)
    return x


def test_a_hung_task_times_out_at_its_place_and_the_others_arrive_in_order():
    started = time.monotonic()
    with Pool(hang_on_17, n_workers=2, task_timeout=1, max_retries=2, return_exceptions=True) as pool:
        got = list(pool.imap(range(40)))
        stats = pool.stats()
    assert time.monotonic() - started < 30
    error = got[17]
    assert isinstance(error, TaskTimeout) and isinstance(error, TaskError), error
    assert error.index == 17 and "1s" in str(error), str(error)
    assert got[:17] + got[18:] == [x for x in range(40) if x != 17]
    assert stats["timed_out"] == 2, "one try per worker it hung: %s" % stats


def test_the_time_limit_raises_from_map_and_the_seeds_load_balancer():
    results = zerotasq.map(hang_on_17, range(20), n_workers=2, task_timeout=0.5, max_retries=1)
    assert [next(results) for _ in range(17)] == list(range(17))
    with pytest.raises(TaskTimeout):
        next(results)
    assert list(results) == [18, 19], "the stream goes on"

    class Hangs(Worker):
        def process(self, request):
            return hang_on_17(request)

    with LoadBalancer([Hangs() for _ in range(2)], reply_sync=True, task_timeout=0.5, max_retries=1,
                      return_exceptions=True) as conn:
        got = list(conn.iter(range(20)))
    assert isinstance(got[17], TaskTimeout)
    assert got[:17] + got[18:] == [x for x in range(20) if x != 17]


class Leaky(Worker):
    """Keeps 20 MiB per task (written, so resident); notes each run in a file."""

    def init(self, runs):
        self.runs = runs
        self.hoard = []

    def process(self, x):
        with open(self.runs, "a") as f:
            f.write("%d\n" % x)
        self.hoard.append(b"\x01" * (20 << 20))
        return x, os.getpid()


def test_a_leaking_worker_is_replaced_and_nothing_is_lost_or_run_twice(tmp_path):
    runs = tmp_path / "runs"
    with Pool(Leaky, n_workers=1, init_kwargs={"runs": str(runs)}, max_worker_memory=200 << 20) as pool:
        got = list(pool.imap(range(30)))
        stats = pool.stats()
    assert [x for x, _ in got] == list(range(30))
    pids = [pid for _, pid in got]
    assert len(set(pids)) >= 3, "600 MiB through 200 MiB workers: %s" % pids
    assert sorted(int(line) for line in runs.read_text().split()) == list(range(30)), "each task ran once"
    assert (stats["workers_lost"], stats["poisoned"], stats["failed"]) == (0, 0, 0), stats
    assert stats["recycled"] >= 2, stats


def pid_after(x):
    time.sleep(0.001)
    return x, os.getpid()


def test_workers_are_recycled_every_10_tasks_and_none_is_lost():
    with Pool(pid_after, n_workers=2, max_tasks_per_worker=10) as pool:
        got = list(pool.imap(range(200)))
        stats = pool.stats()
    assert [x for x, _ in got] == list(range(200))
    per_pid = collections.Counter(pid for _, pid in got)
    assert len(per_pid) >= 15, per_pid
    assert max(per_pid.values()) <= 11, "10 tasks ± 10 %%: %s" % per_pid
    assert stats["workers_lost"] == 0 and stats["recycled"] >= 15, stats


def seen(_):
    time.sleep(0.05)
    names = ("ZEROTASQ_SLOT", "MODEL", "SHARD", "CUDA_VISIBLE_DEVICES") + THREAD_VARS
    return (zerotasq.worker_slot(), os.getpid()) + tuple(os.environ.get(n) for n in names)


def by_slot(pool, n):
    """What each slot's worker sees, once every slot has answered."""
    found = {}
    for _ in range(20):
        for slot, pid, *env in pool.map(range(4 * n)):
            found[slot] = (pid, env)
        if len(found) == n:
            return found
    raise AssertionError("not every slot answered: %s" % found)


def test_each_slot_keeps_its_variables_and_device_across_a_sigkill():
    with Pool(seen, n_workers=3, worker_env={"MODEL": "m-{slot}.bin", "SHARD": "{{{slot}}}"},
              devices=["0", "1"], threads_per_worker=2) as pool:
        before = by_slot(pool, 3)
        os.kill(before[1][0], signal.SIGKILL)
        deadline = time.monotonic() + 20
        after = by_slot(pool, 3)
        while after[1][0] == before[1][0] and time.monotonic() < deadline:
            after = by_slot(pool, 3)
    for slot in range(3):
        assert before[slot][1] == [str(slot), "m-%d.bin" % slot, "{%d}" % slot, str(slot % 2)] + ["2"] * 5
    assert after[1][0] != before[1][0], "slot 1 has a new worker"
    assert {s: env for s, (_, env) in after.items()} == {s: env for s, (_, env) in before.items()}


def test_a_function_gives_each_slot_its_variables():
    with Pool(seen, n_workers=2, worker_env=lambda slot: {"SHARD": "part-%d" % slot, "OMP_NUM_THREADS": "5"},
              devices="7") as pool:
        found = by_slot(pool, 2)
    for slot, (_, env) in found.items():
        assert env[1:4] == [None, "part-%d" % slot, "7"]
        assert env[4] == "5", "the user's thread setting wins"


def test_thread_limits_default_to_a_share_of_the_cores_and_the_users_own_win(monkeypatch):
    for name in THREAD_VARS:
        monkeypatch.delenv(name, raising=False)
    share = str(max(1, len(os.sched_getaffinity(0)) // 2))
    with Pool(seen, n_workers=2) as pool:
        env = by_slot(pool, 2)[0][1]
    assert env[4:] == [share] * 5
    monkeypatch.setenv("MKL_NUM_THREADS", "9")
    with Pool(seen, n_workers=2, threads_per_worker=3) as pool:
        env = by_slot(pool, 2)[1][1]
    assert env[4:] == ["3", "3", "9", "3", "3"]


def echo_or_hang(x):
    if x % 200 == 42:
        time.sleep(3600)
    time.sleep(0.002)
    return x


def test_timeouts_and_recycling_under_a_sigkill_storm_keep_one_outcome_per_task():
    n = 600
    with Pool(echo_or_hang, n_workers=2, task_timeout=1, max_tasks_per_worker=40, max_retries=3,
              return_exceptions=True) as pool:
        got, killed = imap_under_kill_storm(pool, range(n), every=0.4, most=6)
        stats = pool.stats()
    assert len(killed) >= 3, "the run ended before the storm"
    ids = collections.Counter(g.index if isinstance(g, TaskError) else g for g in got)
    assert sorted(ids) == list(range(n)) and set(ids.values()) == {1}
    failed = sorted(g.index for g in got if isinstance(g, TaskError))
    assert set(failed) >= set(range(42, n, 200)), failed
    assert all(isinstance(g, (TaskTimeout, zerotasq.WorkerLost)) for g in got if isinstance(g, TaskError))
    assert stats["recycled"] >= 5 and stats["timed_out"] >= 3, stats


@pytest.mark.parametrize("bad, error, words", [
    (dict(task_timeout=0), ValueError, "task_timeout must be more than zero"),
    (dict(task_timeout=-1.5), ValueError, "task_timeout must be more than zero"),
    (dict(task_timeout="1s"), TypeError, "task_timeout must be a number of seconds"),
    (dict(max_worker_age=0), ValueError, "max_worker_age must be more than zero"),
    (dict(max_tasks_per_worker=0), ValueError, "max_tasks_per_worker must be at least 1"),
    (dict(max_worker_memory=-1), ValueError, "max_worker_memory must be at least 1 (bytes)"),
    (dict(max_worker_memory=1.5e9), TypeError, "max_worker_memory must be an int"),
    (dict(threads_per_worker=0), ValueError, "threads_per_worker must be at least 1"),
    (dict(devices=[]), ValueError, "devices must list at least one device"),
    (dict(worker_env={"MODEL": "m-{rank}"}), ValueError, "unknown field {rank}; the only field is {slot}"),
    (dict(worker_env={"MODEL": "m-{slot"}), ValueError, "'m-{slot'"),
    (dict(worker_env={"A=B": "x"}), ValueError, "is not an environment variable's name"),
    (dict(worker_env=lambda slot: {"A": None}), TypeError, "worker_env(0)['A'] must be a str"),
])
def test_bad_controls_are_refused_at_the_call(bad, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        Pool(abs, n_workers=1, **bad)
    with pytest.raises(error):
        zerotasq.map(abs, range(3), n_workers=1, **bad)
    with pytest.raises(error):
        with LoadBalancer([zerotasq.FunctionWorker(abs)], **bad):
            pass


def remote_seen_or_hang(x):
    if x == 50:
        time.sleep(3600)
    time.sleep(0.02)
    env = (os.environ.get(n) for n in ("MODEL", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS"))
    return (zerotasq.worker_slot(), os.getpid(), *env)


def test_remote_workers_number_their_own_slots_and_keep_the_pools_limits(keys):  # noqa: F811 - fixture
    with Pool(remote_seen_or_hang, n_workers=0, listen_workers="tcp://127.0.0.1:0", key=keys["pool"] + ".key_secret",
              allow=keys["allowed"], task_timeout=1, max_retries=1, max_tasks_per_worker=20,
              return_exceptions=True) as pool:
        proc = remote_workers(pool.endpoints["workers"], keys, n=2,
                              extra=("--devices", "3,4", "--env", "MODEL=m{slot}", "--threads-per-worker", "2"))
        try:
            got = list(pool.imap(range(150)))
        finally:
            stop(proc)
    assert isinstance(got[50], TaskTimeout), got[50]
    answers = got[:50] + got[51:]
    assert {slot for slot, *_ in answers} == {0, 1}
    for slot, _, model, device, threads in answers:
        assert (model, device, threads) == ("m%d" % slot, str(3 + slot), "2")
    pids = collections.Counter(pid for _, pid, *_ in answers)
    assert len(pids) >= 5 and max(pids.values()) <= 22, "recycled every 20 tasks: %s" % pids
    no_remote_worker_left()


def test_the_worker_command_refuses_bad_controls():
    import subprocess
    import sys

    for extra, words in [(("--env", "MODEL=m{rank}"), "unknown field {rank}"), (("--env", "MODEL"), "NAME=VALUE"),
                         (("--devices", ","), "devices must list"), (("--threads-per-worker", "0"), "at least 1")]:
        done = subprocess.run([sys.executable, "-m", "zerotasq", "worker", "--connect", "tcp://127.0.0.1:9",
                               "--insecure", *extra], capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, PYTHONPATH=PACKAGE_ROOT))
        assert done.returncode == 2 and words in done.stderr, (extra, done.stderr)
