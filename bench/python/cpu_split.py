#!/usr/bin/env python3
"""Where a warm pool's CPU goes: one pool of 2 workers, warmed, then streams of workload A
(20,000 identity calls on 100-byte strings), B (400 x ~5 ms of pure-Python CPU) or E (200 x
1 MiB of bytes, answered with their length), with the
CPU time of every thread of the caller and of each worker (``/proc/*/task/*/stat``), per
stream, and the engine tasks each stream became (packs count as one).

    .venv/bin/python bench/python/cpu_split.py A --streams 40
    .venv/bin/python bench/python/cpu_split.py B --streams 5
    .venv/bin/python bench/python/cpu_split.py E --streams 20

The kernel counts CPU in ticks of 10 ms: use enough streams for the figures to settle.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("ZEROTASQ_PEERS_DIR") or os.path.join(HERE, "..", "..", "..", "shared", "bench"))

import peers_python  # noqa: E402  (the harness's task functions, as bench_python.py runs them)
import zerotasq  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid="self"):
    """CPU seconds per thread name of process ``pid``."""
    out = {}
    for tid in os.listdir("/proc/%s/task" % pid):
        with open("/proc/%s/task/%s/stat" % (pid, tid)) as f:
            stat = f.read()
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    return out


def per_stream(before, after, streams):
    return {k: round((v - before.get(k, 0.0)) / streams * 1000, 1) for k, v in after.items()
            if v - before.get(k, 0.0) > 0}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=["A", "B", "E"])
    parser.add_argument("--streams", type=int, default=20)
    args = parser.parse_args()
    if args.workload == "A":
        func = peers_python.identity

        def items():
            return ("%06d" % i + "x" * 94 for i in range(20_000))
    elif args.workload == "E":
        func = peers_python.length
        payload = bytes(1 << 20)

        def items():
            return (payload for _ in range(200))
    else:
        func = peers_python.burn
        started = time.thread_time()
        peers_python.burn_loop(100_000)
        iters = int(0.005 / ((time.thread_time() - started) / 100_000))

        def items():
            return (iters for _ in range(400))
    with zerotasq.Pool(func, n_workers=2) as pool:
        list(pool.imap(items()))
        pids = pool.worker_pids()
        workers_before = [thread_cpu(p) for p in pids]
        caller_before = thread_cpu()
        tasks_before = pool.stats()["submitted"]
        started = time.perf_counter()
        task_cpu = 0.0
        for _ in range(args.streams):
            for result in pool.imap(items()):
                if args.workload == "B":
                    task_cpu += result[1]
        wall = (time.perf_counter() - started) / args.streams
        tasks = (pool.stats()["submitted"] - tasks_before) / args.streams
        workers_after = [thread_cpu(p) for p in pids]
        caller_after = thread_cpu()
    print("workload %s, %d streams: %.1f ms per stream, %.0f engine tasks per stream"
          % (args.workload, args.streams, wall * 1000, tasks))
    if args.workload == "B":
        print("efficiency (task CPU / 2 cores / wall): %.1f %%" % (100 * task_cpu / args.streams / 2 / wall))
    print("caller threads, ms per stream:", per_stream(caller_before, caller_after, args.streams))
    for i, (before, after) in enumerate(zip(workers_before, workers_after)):
        print("worker %d threads, ms per stream:" % i, per_stream(before, after, args.streams))


if __name__ == "__main__":
    main()
