#!/usr/bin/env python3
"""ZeroTasQ's Python face beside its peers, in the same run: this module loads the peers'
harness (``shared/bench/peers_python.py``: multiprocessing Pool.imap chunksize 1 and 64,
ProcessPoolExecutor.map, joblib, mpire, loky), adds the ``zq_*`` rows, and runs it. The
children the harness starts import this module as ``bench_python``, so the rows exist there
too. Extra subcommand ``ratios FILE…`` prints ZeroTasQ against the targets of issue 3.

    PYTHONPATH=bench/python .venv/bin/python bench/python/bench_python.py run \
        --workloads A,B,E --reps 3 --out /tmp/zq.jsonl --quiet-wait 5 --retry-busy 1
    .venv/bin/python bench/python/bench_python.py report /tmp/zq.jsonl
    .venv/bin/python bench/python/bench_python.py ratios /tmp/zq.jsonl
"""

import contextlib
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS_DIR = os.environ.get("ZEROTASQ_PEERS_DIR") or os.path.normpath(
    os.path.join(HERE, "..", "..", "..", "shared", "bench"))
if PEERS_DIR not in sys.path:
    sys.path.insert(0, PEERS_DIR)
if HERE not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    # the harness's children must import this module, not only the peers' one
    os.environ["PYTHONPATH"] = HERE + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")

import peers_python as peers  # noqa: E402


@contextlib.contextmanager
def zq_pool(func, init, ordered):
    import zerotasq

    # the pool starts its workers and returns at once; results stream as they come
    with zerotasq.Pool(func, n_workers=peers.N_WORKERS, initializer=init) as pool:
        yield lambda it: pool.imap(it, ordered=ordered)


ZQ_LIBS = {
    "zq_ordered": (lambda f, i: zq_pool(f, i, True), True, None, "ZeroTasQ (Rust engine) Pool.imap, ordered"),
    "zq_unordered": (lambda f, i: zq_pool(f, i, False), False, None,
                     "ZeroTasQ (Rust engine) Pool.imap_unordered"),
}
_rest = dict(peers.LIBS)
peers.LIBS.clear()
peers.LIBS.update(ZQ_LIBS)
peers.LIBS.update(_rest)

child_main = peers.child_main  # what the harness's children call


def _runs(files):
    out = []
    for path in files:
        with open(path) as f:
            for line in f:
                d = json.loads(line)
                if d.get("kind") == "run" and d.get("status") == "ok":
                    out.append(d)
    return out


def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratios(files):
    """ZeroTasQ against the issue's targets, as ratios to the peers of the same run."""
    runs = _runs(files)

    def med(w, lib, f):
        return _med([f(r) for r in runs if r["workload"] == w and r["lib"] == lib])

    lines = []
    libs = sorted({r["lib"] for r in runs})
    peers_only = [l for l in libs if not l.startswith("zq_")]
    a = {l: med("A", l, lambda r: peers.A_N / r["incl_start_s"]) for l in libs}
    aw = {l: med("A", l, lambda r: peers.A_N / r["warm_s"] if r.get("warm_s") else None) for l in libs}
    if a.get("zq_ordered") and a.get("mp_imap_c64"):
        lines.append("A tiny tasks, ordered, incl. start: zq %.0f/s vs Pool.imap c64 %.0f/s = %.2fx (target >= 1.0x)"
                     % (a["zq_ordered"], a["mp_imap_c64"], a["zq_ordered"] / a["mp_imap_c64"]))
    if aw.get("zq_ordered") and aw.get("mp_imap_c64"):
        lines.append("A tiny tasks, ordered, warm:       zq %.0f/s vs Pool.imap c64 %.0f/s = %.2fx"
                     % (aw["zq_ordered"], aw["mp_imap_c64"], aw["zq_ordered"] / aw["mp_imap_c64"]))
    if a.get("zq_ordered") and a.get("mp_imap_c1"):
        lines.append("A vs Pool.imap chunksize 1: %.1fx" % (a["zq_ordered"] / a["mp_imap_c1"]))
    e = {l: med("E", l, lambda r: peers.E_N / r["incl_start_s"]) for l in libs}
    ew = {l: med("E", l, lambda r: peers.E_N / r["warm_s"] if r.get("warm_s") else None) for l in libs}
    best = max((l for l in peers_only if e.get(l)), key=lambda l: e[l], default=None)
    if best and e.get("zq_ordered"):
        lines.append("E 1 MiB payloads, incl. start: zq %.0f MiB/s vs best peer %s %.0f MiB/s = %.2fx (target >= 2x)"
                     % (e["zq_ordered"], best, e[best], e["zq_ordered"] / e[best]))
    bestw = max((l for l in peers_only if ew.get(l)), key=lambda l: ew[l], default=None)
    if bestw and ew.get("zq_ordered"):
        lines.append("E 1 MiB payloads, warm: zq %.0f MiB/s vs best peer %s %.0f MiB/s = %.2fx"
                     % (ew["zq_ordered"], bestw, ew[bestw], ew["zq_ordered"] / ew[bestw]))
    for lib in ["zq_ordered", "zq_unordered"] + peers_only:
        eff = med("B", lib, lambda r: r["sum_task_cpu_s"] / 2 / r["incl_start_s"])
        effw = med("B", lib, lambda r: r["warm_sum_task_cpu_s"] / 2 / r["warm_s"])
        if eff:
            lines.append("B 400 x 5 ms efficiency incl. start %-22s %5.1f%%  warm %5.1f%%%s"
                         % (lib, 100 * eff, 100 * (effw or 0), "  (target >= 95%)" if lib == "zq_ordered" else ""))
    for r in runs:
        if r["workload"] == "D" and r["lib"].startswith("zq_"):
            lines.append("D 2M lazy stream %s: pulled at stop %s, after idle %s, peak parent RSS %.0f MB"
                         % (r["lib"], r.get("produced_at_stop"), r.get("produced_after_idle"),
                            r.get("parent_peak_rss_mb") or 0))
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "ratios":
        ratios(sys.argv[2:])
    else:
        peers.main()
