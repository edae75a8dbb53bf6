"""Workers that die cost nothing: their tasks are re-run elsewhere and the stream completes
with every result exactly once; a task that kills ``max_retries`` workers yields
``WorkerLost`` at its place."""

import os
import signal
import threading
import time

import zerotasq
from zerotasq import Pool, Worker


class ExitOnce(Worker):
    """Kills its worker process the first time it sees task 50 (a marker file says so)."""

    def init(self, marker):
        self.marker = marker

    def process(self, request):
        if request == 50 and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        time.sleep(0.001)
        return request


def test_os_exit_in_one_task_is_rerun(tmp_path):
    with Pool(ExitOnce, n_workers=2, init_kwargs={"marker": str(tmp_path / "died")}) as pool:
        got = list(pool.imap(range(100)))
        assert pool.stats()["workers_lost"] >= 1
    assert got == list(range(100))
    assert (tmp_path / "died").exists()


def poison(x):
    if x == 7:
        os._exit(1)
    return x


def test_os_exit_in_every_attempt_gives_worker_lost():
    with Pool(poison, n_workers=2, max_retries=3, return_exceptions=True) as pool:
        got = list(pool.imap(range(20)))
    assert [g for i, g in enumerate(got) if i != 7] == [i for i in range(20) if i != 7]
    assert isinstance(got[7], zerotasq.WorkerLost)
    assert got[7].index == 7


def slow_identity(x):
    time.sleep(0.0002)
    return x


def test_sigkill_from_outside_during_10000_tasks():
    n = 10_000
    with Pool(slow_identity, n_workers=2, window=256) as pool:
        stop = threading.Event()
        killed = []

        def killer():
            while not stop.wait(0.3) and len(killed) < 4:
                pids = pool.worker_pids()
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])

        t = threading.Thread(target=killer)
        t.start()
        try:
            got = list(pool.imap(range(n)))
        finally:
            stop.set()
            t.join()
    assert killed, "the run ended before any worker was killed"
    assert got == list(range(n))
