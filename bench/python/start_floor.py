#!/usr/bin/env python3
"""The least a fresh worker interpreter costs before it can run a task, step by step, against
what a forked worker costs (``multiprocessing``'s default start on Linux before 3.14):

    interpreter        python -S -c pass
    + zerotasq         the modules a ZeroTasQ worker imports before the user's
    + task module      the module that defines the benchmark's tasks (the peers' harness)
    fork               os.fork() of this process and the child's exit, waited for

Medians of ``--runs`` fresh processes, in ms. Bytecode caching follows the environment.

    .venv/bin/python bench/python/start_floor.py --runs 15
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS_DIR = os.environ.get("ZEROTASQ_PEERS_DIR") or os.path.normpath(
    os.path.join(HERE, "..", "..", "..", "shared", "bench"))
PACKAGE = os.path.normpath(os.path.join(HERE, "..", "..", "crates", "zerotasq-python", "python"))

OURS = "from zerotasq import _native; import _pickle; from zerotasq import _codec, _errors, worker, _logging"
STEPS = [
    ("interpreter", "pass"),
    ("+ zerotasq", OURS),
    ("+ task module", "import sys; sys.path.insert(0, %r); %s; import peers_python" % (PEERS_DIR, OURS)),
]


def spawn_ms(code):
    env = dict(os.environ, PYTHONPATH=PACKAGE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-S", "-c", code], check=True, env=env)
    return (time.perf_counter() - started) * 1000


def fork_ms():
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return (time.perf_counter() - started) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    print("medians of %d runs, ms (bytecode caching %s)"
          % (args.runs, "off" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "on"))
    for name, code in STEPS:
        print("  %-14s %6.1f" % (name, statistics.median(spawn_ms(code) for _ in range(args.runs))))
    sys.path.insert(0, PEERS_DIR)
    import peers_python  # noqa: F401  (what a forked worker inherits)

    print("  %-14s %6.1f" % ("fork", statistics.median(fork_ms() for _ in range(args.runs))))


if __name__ == "__main__":
    main()
