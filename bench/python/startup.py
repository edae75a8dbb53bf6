#!/usr/bin/env python3
"""Where a pool's start-up goes: a fresh interpreter per run imports zerotasq, starts a pool of
2 workers and streams 20,000 tiny items (workload A of bench_python.py), and reports when each
step happened, in ms from the first line of the run:

    import      `import zerotasq` and the pool module (what the caller pays before any work)
    pool        `Pool()` returned (the workers are being started)
    exec        each worker process exists (strace's execve; "-" without strace)
    loaded      each worker has loaded the worker definition (its module imported)
    first task  each worker's first task
    first       the caller's first result
    all         the caller's last result

    .venv/bin/python bench/python/startup.py --runs 9          # medians of 9 runs
    .venv/bin/python bench/python/startup.py --runs 9 --strace # also exec times (slower)

Bytecode caching follows the environment: set or unset PYTHONDONTWRITEBYTECODE (and remove
the package's __pycache__) to see both.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

RUN = r"""
import time
T0 = time.time()
import sys
sys.path.insert(0, %(here)r)
import startup_probe
import zerotasq
import zerotasq.pool
T_IMPORT = time.time()
with zerotasq.Pool(startup_probe.probe, n_workers=2) as pool:
    T_POOL = time.time()
    it = pool.imap(("%%06d" %% i + "x" * 94 for i in range(20000)))
    first = next(it)
    T_FIRST = time.time()
    seen = {first[0]: first}
    for r in it:
        seen.setdefault(r[0], r)
    T_ALL = time.time()
import json
print(json.dumps(dict(t0=T0, import_=T_IMPORT, pool=T_POOL, first=T_FIRST, all=T_ALL,
                      workers=[[pid, loaded, task] for pid, loaded, task in seen.values()])))
"""


def one_run(use_strace):
    code = RUN % {"here": HERE}
    cmd = [sys.executable, "-c", code]
    trace = None
    if use_strace:
        trace = tempfile.NamedTemporaryFile(suffix=".strace", delete=False).name
        cmd = ["strace", "-f", "--seccomp-bpf", "-qq", "-ttt", "-e", "trace=execve", "-o", trace] + cmd
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    execs = {}
    if trace:
        with open(trace) as f:
            for line in f:
                m = re.match(r"(\d+) (\d+\.\d+) execve\(", line)
                if m:
                    execs[int(m.group(1))] = float(m.group(2))
        os.unlink(trace)
    t0 = result["t0"]
    ms = lambda t: (t - t0) * 1e3  # noqa: E731
    row = {"import": ms(result["import_"]), "pool": ms(result["pool"]), "first": ms(result["first"]),
           "all": ms(result["all"])}
    workers = sorted(result["workers"], key=lambda w: w[1])
    for i, (pid, loaded, task) in enumerate(workers):
        row["w%d exec" % i] = ms(execs[pid]) if pid in execs else float("nan")
        row["w%d loaded" % i] = ms(loaded)
        row["w%d first task" % i] = ms(task)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--strace", action="store_true", help="also the workers' exec times, from strace")
    args = ap.parse_args()
    rows = [one_run(args.strace) for _ in range(args.runs)]
    keys = [k for k in rows[0]]
    bytecode = "off" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "on"
    print("%d runs, medians, ms from the run's first line (bytecode caching %s)" % (args.runs, bytecode))
    for k in sorted(keys, key=lambda k: statistics.median(r[k] for r in rows if k in r)):
        values = [r[k] for r in rows if k in r]
        print("  %-14s %7.1f   (%s)" % (k, statistics.median(values), " ".join("%.0f" % v for v in values)))


if __name__ == "__main__":
    main()
