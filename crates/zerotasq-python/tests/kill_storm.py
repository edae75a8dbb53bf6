"""A SIGKILL storm for the tests that check one outcome per task whatever happens."""

import os
import signal
import threading


def imap_under_kill_storm(pool, items, every, most):
    """``pool.imap_unordered(items)`` while a thread SIGKILLs one of the pool's workers every
    ``every`` seconds, at most ``most`` times: the results and the pids killed."""
    stop = threading.Event()
    killed = []

    def killer():
        while not stop.wait(every) and len(killed) < most:
            pids = pool.worker_pids()
            if pids:
                victim = pids[len(killed) % len(pids)]
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

    storm = threading.Thread(target=killer)
    storm.start()
    try:
        got = list(pool.imap_unordered(items))
    finally:
        stop.set()
        storm.join()
    return got, killed
