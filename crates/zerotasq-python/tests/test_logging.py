"""The engine's log events (Rust ``tracing``) reach Python's ``logging`` under ``zerotasq.*``,
at the right levels, filtered in the engine, never printed by Rust, and never at the price of
a hang: the engine's threads do not take the GIL to log."""

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

from zerotasq import InitFailed, Pool, Worker, _logging
from zerotasq._launch import _PACKAGE_ROOT, worker_stdin
from zerotasq.pool import worker_definitions

#: Generous: records come from other threads, on a machine shared with other work.
WAIT = 30

#: What `tracing`'s own formatter would print ("… INFO zerotasq::supervisor: …").
RAW_TRACING = re.compile(r"\b(TRACE|DEBUG|INFO|WARN|ERROR)\s+zerotasq::")


def wait_for(caplog, predicate):
    """The first record `predicate` accepts, waiting up to WAIT seconds for it."""
    deadline = time.monotonic() + WAIT
    while True:
        found = [r for r in caplog.records if predicate(r)]
        if found or time.monotonic() > deadline:
            return found[0] if found else None
        time.sleep(0.02)


def slow(x):
    time.sleep(0.005)
    return x


def killed(pid):
    return lambda r: r.name == "zerotasq.supervisor" and "worker pid %d was killed by signal 9" % pid in r.getMessage()


def ready(pids):
    def accept(r):
        found = re.match(r"worker ready pid=(\d+)\b", r.getMessage())
        return r.name == "zerotasq.broker" and found is not None and int(found.group(1)) in pids
    return accept


def test_a_killed_worker_is_logged_by_the_supervisor(caplog, capfd):
    caplog.set_level(logging.INFO, logger="zerotasq")
    with Pool(slow, n_workers=2) as pool:
        assert pool.map(range(20)) == list(range(20))
        victim = pool.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        assert pool.map(range(20)) == list(range(20))
        record = wait_for(caplog, killed(victim))
    assert record is not None, [r.getMessage() for r in caplog.records]
    assert record.levelno == logging.WARNING
    assert record.threadName == "zerotasq-supervisor"
    assert record.pathname.endswith("supervisor.rs") and record.lineno > 0
    # The level was INFO: the engine's DEBUG events were not even recorded.
    assert not [r for r in caplog.records if r.name.startswith("zerotasq.") and r.levelno < logging.INFO]
    assert not RAW_TRACING.search(capfd.readouterr().err)


class FailingInit(Worker):
    def init(self):
        raise RuntimeError("no model here")

    def process(self, request):
        return request


def test_a_failed_init_is_a_warning_from_the_broker(caplog, capfd):
    caplog.set_level(logging.WARNING, logger="zerotasq")
    with Pool(FailingInit, n_workers=1, return_exceptions=True) as pool:
        got = list(pool.imap(range(2)))
        record = wait_for(caplog, lambda r: r.name == "zerotasq.broker" and "no model here" in r.getMessage())
    assert all(isinstance(g, InitFailed) for g in got)
    assert record is not None, [r.getMessage() for r in caplog.records]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("worker init failed: ")
    assert not RAW_TRACING.search(capfd.readouterr().err)


def test_debug_events_with_their_fields_when_the_logger_is_at_debug(caplog):
    caplog.set_level(logging.DEBUG, logger="zerotasq")
    with Pool(slow, n_workers=2) as pool:
        pool.map(range(20))
        pids = pool.worker_pids()
        record = wait_for(caplog, ready(pids))
    assert record is not None, [r.getMessage() for r in caplog.records]
    assert record.levelno == logging.DEBUG
    assert re.fullmatch(r'worker ready pid=\d+ host=".*"', record.getMessage())


def test_the_engine_filters_by_the_level_read_at_pool_start(caplog, monkeypatch):
    # `logging` would let DEBUG through; the engine was told INFO: it records no DEBUG event.
    caplog.set_level(logging.DEBUG, logger="zerotasq")
    monkeypatch.setattr(_logging, "_level", lambda: logging.INFO)
    with Pool(slow, n_workers=2) as pool:
        pool.map(range(20))
        pids = pool.worker_pids()
        os.kill(pids[0], signal.SIGKILL)
        # The engine's queue is in order: the kill's record comes after every worker's
        # "worker ready" (a worker answered before the kill).
        assert wait_for(caplog, killed(pids[0])) is not None
    assert not [r for r in caplog.records if ready(pids)(r)]


def test_a_logger_below_zerotasq_lowers_the_engine_level(caplog):
    caplog.set_level(logging.WARNING, logger="zerotasq")
    caplog.set_level(logging.DEBUG, logger="zerotasq.broker")
    with Pool(slow, n_workers=2) as pool:
        pool.map(range(20))
        record = wait_for(caplog, ready(pool.worker_pids()))
    assert record is not None


HANG_SCRIPT = textwrap.dedent("""
    import gc, logging, os, signal, sys, time
    from zerotasq import Pool

    class Slow(logging.Handler):
        def __init__(self):
            super().__init__()
            self.seen = 0

        def emit(self, record):
            time.sleep(0.002)
            self.seen += 1

    def identity(x):
        return x

    handler = Slow()
    logging.getLogger("zerotasq").addHandler(handler)
    logging.getLogger("zerotasq").setLevel(logging.DEBUG)
    for i in range(int(sys.argv[1])):
        pool = Pool(identity, n_workers=2)
        assert pool.map(range(50)) == list(range(50))
        os.kill(pool.worker_pids()[0], signal.SIGKILL)
        if i % 2:
            pool.close()
        else:
            # Dropped with the GIL held: this thread joins the engine's threads while they
            # may be logging the kill.
            pool._finalizer.detach()
            del pool
            gc.collect()
    print("SEEN", handler.seen, flush=True)
""")


def test_closing_pools_while_the_engine_logs_never_hangs(tmp_path):
    script = tmp_path / "close_loop.py"
    script.write_text(HANG_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), "10"], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    seen = int(proc.stdout.split("SEEN")[1])
    assert seen > 0
    assert not RAW_TRACING.search(proc.stderr)


EXIT_SCRIPT = textwrap.dedent("""
    import logging, sys, time
    from zerotasq import Pool

    class Slow(logging.Handler):
        def emit(self, record):
            time.sleep(1.5)

    def identity(x):
        return x

    logging.getLogger("zerotasq").addHandler(Slow())
    logging.getLogger("zerotasq").setLevel(logging.DEBUG)
    with Pool(identity, n_workers=2) as pool:
        assert pool.map(range(10)) == list(range(10))
    print("DONE", flush=True)
""")


def test_exit_while_a_handler_is_slow_is_clean(tmp_path):
    # At exit the pump gets 1 s for the queued records; then the interpreter ends the thread
    # in the middle of a handler, which must not abort the process.
    script = tmp_path / "slow_exit.py"
    script.write_text(EXIT_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "DONE" in proc.stdout


def lonely_worker(tmp_path, loglevel):
    """A worker process on its own, told of a broker that never answers: its I/O thread logs
    a WARNING and leaves. Its exit status and stderr."""
    definitions = worker_definitions(abs, None, None, None, (), loglevel)
    env = dict(os.environ, PYTHONPATH=_PACKAGE_ROOT, ZEROTASQ_WORKER_ID="log-p-0-1",
               ZEROTASQ_ENDPOINT="ipc://%s" % (tmp_path / "nobody"), ZEROTASQ_HEARTBEAT_MS="100",
               ZEROTASQ_LIVENESS="3", ZEROTASQ_CAPACITY="1", ZEROTASQ_MAX_MESSAGE="1048576")
    proc = subprocess.run([sys.executable, "-S", "-c", "import zerotasq._worker as w; w.run()"],
                          input=worker_stdin(definitions), env=env,
                          capture_output=True, timeout=60)
    return proc.returncode, proc.stderr.decode()


def test_a_workers_engine_events_go_to_its_logging(tmp_path):
    # The worker's `logging`, configured by `loglevel`, prints the engine's WARNING.
    code, err = lonely_worker(tmp_path, "WARNING")
    assert code != 0
    assert re.search(r"zerotasq-worker\[\d+\] WARNING zerotasq\.worker_session: the broker has been "
                     r"silent for \S+; leaving", err), err
    assert not RAW_TRACING.search(err)


def test_a_worker_whose_logging_the_engine_imported_still_exits(tmp_path):
    # No `loglevel`: `logging`, and with it `threading`, is first imported by the thread that
    # hands the engine's records over, which `threading` then takes for the main thread; the
    # interpreter's exit would wait for it forever unless the worker stops it first.
    code, err = lonely_worker(tmp_path, None)
    assert code == 4, err  # EXIT_BROKER_LOST, not a timeout
    assert "the broker has been silent for 300ms; leaving" in err, err
