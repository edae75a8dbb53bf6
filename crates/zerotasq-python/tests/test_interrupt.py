"""Ctrl-C in the caller stops everything at once, with no orphan processes; a worker class
defined in ``__main__`` works. A SIGKILLed caller takes its workers and their ipc directory
along."""

import os
import signal
import subprocess
import sys
import textwrap
import time

SCRIPT = textwrap.dedent("""
    import sys, time
    from zerotasq import Pool, Worker

    class Sleeper(Worker):          # defined in __main__: shipped by value
        def process(self, seconds):
            time.sleep(seconds)
            return seconds

    if __name__ == "__main__":
        with Pool(Sleeper, n_workers=2) as pool:
            assert pool.map([0.01, 0.02]) == [0.01, 0.02]
            print("PIDS", *pool.worker_pids(), flush=True)
            try:
                for _ in pool.imap([60] * 4):
                    pass
            except KeyboardInterrupt:
                print("INTERRUPTED", flush=True)
                raise
""")


KILLED_SCRIPT = textwrap.dedent("""
    import signal, time
    from zerotasq import Pool

    if __name__ == "__main__":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # what its workers inherit across exec
        with Pool(abs, n_workers=2) as pool:
            assert pool.map([-1, -2]) == [1, 2]
            print("PIDS", *pool.worker_pids(), flush=True)
            time.sleep(60)
""")


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_ctrl_c_stops_everything(tmp_path):
    script = tmp_path / "main_script.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    assert line.startswith("PIDS"), line + proc.stderr.read()
    pids = [int(p) for p in line.split()[1:]]
    time.sleep(0.3)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert time.monotonic() - t0 < 5
    assert "INTERRUPTED" in out
    assert "KeyboardInterrupt" in err
    # The traceback points at the script's own line, the loop that was interrupted.
    line = SCRIPT.splitlines().index("            for _ in pool.imap([60] * 4):") + 1
    assert 'File "%s", line %d, in <module>' % (script, line) in err, err
    assert "for _ in pool.imap([60] * 4):" in err and "line -1" not in err
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)


def _ipc_dir(pid):
    with open("/proc/%d/environ" % pid, "rb") as f:
        env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
    return env[b"ZEROTASQ_IPC_DIR"].decode()


def test_a_sigkilled_caller_takes_its_workers_and_their_ipc_directory_along(tmp_path):
    script = tmp_path / "killed_caller.py"
    script.write_text(KILLED_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    pids = []
    try:
        line = proc.stdout.readline()
        assert line.startswith("PIDS"), line + proc.stderr.read()
        pids = [int(p) for p in line.split()[1:]]
        (ipc_dir,) = {_ipc_dir(p) for p in pids}
        assert os.path.isdir(ipc_dir)
        proc.kill()
        proc.wait(timeout=10)
        # Only the workers' parent-death signal removes the directory: a worker that merely
        # lost its broker leaves it.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (any(_alive(p) for p in pids) or os.path.exists(ipc_dir)):
            time.sleep(0.05)
        assert not any(_alive(p) for p in pids), "workers outlived their SIGKILLed caller"
        assert not os.path.exists(ipc_dir), "ipc directory %s left behind" % ipc_dir
    finally:
        proc.kill()
        proc.communicate(timeout=10)
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
