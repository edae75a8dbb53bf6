#!/usr/bin/env python3
"""What a caller's size costs a pool's start: this process first fills ``--ballast`` MB of
memory (a model or a dataset a user's program holds), then starts a pool of ``--workers``
workers again and again and takes 4 tiny results per worker — ZeroTasQ's ``Pool`` and, in the
same run, ``multiprocessing.Pool`` (fork, Linux's default before Python 3.14). Medians of
``--runs``, ms from creating the pool to its last result. Run it once per ballast, e.g.:

    .venv/bin/python bench/python/big_caller.py --ballast 0 --workers 2
    .venv/bin/python bench/python/big_caller.py --ballast 4000 --workers 2

ZeroTasQ's workers start as fresh interpreters: the only way the caller's size can show is in
how the supervisor spawns them (a fork copies the caller's page tables; posix_spawn does not).
"""

import argparse
import multiprocessing
import statistics
import time

import zerotasq


def zerotasq_pool(workers, items):
    with zerotasq.Pool(abs, n_workers=workers) as pool:
        return list(pool.imap(items))


def multiprocessing_pool(workers, items):
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return list(pool.imap(abs, items))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ballast", type=int, default=4000, help="MB held by the caller")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    ballast = bytearray(args.ballast << 20)
    for page in range(0, len(ballast), 4096):  # touched, so it is resident
        ballast[page] = 1
    items = range(4 * args.workers)
    times = {zerotasq_pool: [], multiprocessing_pool: []}
    for _ in range(args.runs):
        for run, took in times.items():  # alternated, so both see the same machine
            started = time.perf_counter()
            assert run(args.workers, items) == list(items)
            took.append((time.perf_counter() - started) * 1000)
    for run, took in times.items():
        print("ballast %5d MB, %d workers, %-20s %d results after %6.1f ms (median of %d; all: %s)"
              % (args.ballast, args.workers, run.__name__ + ":", len(items), statistics.median(took), args.runs,
                 " ".join("%.0f" % t for t in took)))


if __name__ == "__main__":
    main()
