#!/usr/bin/env python3
"""Throughput against task duration: ZeroTasQ beside multiprocessing (chunksize 1 and 64) and
ProcessPoolExecutor, 2 workers each, pools started inside the timing. Writes a JSON file and,
with matplotlib installed, a PNG plot.

    .venv/bin/python bench/python/sweep.py --out docs/python_sweep.json --png docs/python_sweep.png
"""

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

N_WORKERS = 2


def spin(seconds):
    """Busy-waits ``seconds`` (CPU-bound task of a known duration)."""
    if seconds:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
    return seconds


def run_zq(items):
    import zerotasq

    with zerotasq.Pool(spin, n_workers=N_WORKERS) as pool:
        return sum(1 for _ in pool.imap(items))


def run_mp(items, chunksize):
    with mp.Pool(N_WORKERS) as pool:
        return sum(1 for _ in pool.imap(spin, items, chunksize=chunksize))


def run_ppe(items):
    with ProcessPoolExecutor(N_WORKERS) as ex:
        return sum(1 for _ in ex.map(spin, items, chunksize=1))


LIBS = {
    "zerotasq": run_zq,
    "mp_imap_c1": lambda items: run_mp(items, 1),
    "mp_imap_c64": lambda items: run_mp(items, 64),
    "ppe_map_c1": run_ppe,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--durations", default="0,0.00001,0.0001,0.001,0.01")
    ap.add_argument("--budget", type=float, default=1.0, help="ideal seconds of work per run")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default="python_sweep.json")
    ap.add_argument("--png", default=None)
    args = ap.parse_args()
    rows = []
    for d in [float(x) for x in args.durations.split(",")]:
        n = int(min(50_000, max(200, args.budget * N_WORKERS / max(d, 1e-5))))
        for lib, run in LIBS.items():
            rates = []
            for _ in range(args.reps):
                items = [d] * n
                t0 = time.perf_counter()
                assert run(items) == n
                rates.append(n / (time.perf_counter() - t0))
            rate = sorted(rates)[len(rates) // 2]
            ideal = N_WORKERS / d if d else None
            rows.append(dict(duration_s=d, lib=lib, n=n, tasks_per_s=rate,
                             efficiency=(rate / ideal) if ideal else None))
            print("%-12s d=%-8g n=%-6d %10.0f tasks/s %s" % (
                lib, d, n, rate, "" if not ideal else "eff %.0f%%" % (100 * rate / ideal)), file=sys.stderr)
    with open(args.out, "w") as f:
        json.dump(dict(cpus=os.cpu_count(), workers=N_WORKERS, rows=rows), f, indent=1)
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for lib in LIBS:
            pts = [(r["duration_s"] or 1e-6, r["tasks_per_s"]) for r in rows if r["lib"] == lib]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=lib)
        xs = sorted({r["duration_s"] for r in rows if r["duration_s"]})
        ax.plot(xs, [N_WORKERS / x for x in xs], "k--", lw=0.8, label="ideal (2 workers)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("task duration, s (0 plotted at 1e-6)")
        ax.set_ylabel("tasks/s, pool start included")
        ax.set_title("Throughput vs task duration, 2 workers, 2 cores")
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.png, dpi=110)


if __name__ == "__main__":
    main()
