"""Ctrl-C in the caller stops everything at once, with no orphan processes; a worker class
defined in ``__main__`` works."""

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
