#!/usr/bin/env python3
"""What a caller's size costs a pool's start: this process first fills ``--ballast`` MB of
memory (a model or a dataset a user's program holds), then starts a pool of ``--workers``
workers again and again and takes 4 tiny results per worker. Medians of ``--runs``, ms from
``Pool(...)`` to the last result. Run it once per ballast, e.g.:

    .venv/bin/python bench/python/big_caller.py --ballast 0 --workers 2
    .venv/bin/python bench/python/big_caller.py --ballast 4000 --workers 2

Workers start as fresh interpreters: the only way the caller's size can show is in how the
supervisor spawns them (a fork copies the caller's page tables; posix_spawn does not).
"""

import argparse
import statistics
import time

import zerotasq


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
    times = []
    for _ in range(args.runs):
        started = time.perf_counter()
        with zerotasq.Pool(abs, n_workers=args.workers) as pool:
            assert list(pool.imap(items)) == list(items)
            times.append((time.perf_counter() - started) * 1000)
    print("ballast %5d MB, %d workers: %d results after %.1f ms (median of %d; all: %s)"
          % (args.ballast, args.workers, len(items), statistics.median(times), args.runs,
             " ".join("%.0f" % t for t in times)))


if __name__ == "__main__":
    main()
