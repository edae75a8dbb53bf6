#!/usr/bin/env python3
"""How long closing a pool takes: N pools of 2 workers, each streams 100 tiny tasks and is
closed; prints the median, the 99th percentile, the slowest, and how many took over 50 ms.

    .venv/bin/python bench/python/pool_close.py --pools 300
"""

import argparse
import statistics
import time

import zerotasq


def identity(x):
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pools", type=int, default=300)
    args = parser.parse_args()
    closes = []
    for _ in range(args.pools):
        pool = zerotasq.Pool(identity, n_workers=2)
        assert pool.map(range(100)) == list(range(100))
        started = time.perf_counter()
        pool.close()
        closes.append(time.perf_counter() - started)
    closes.sort()
    print("%d pools: close median %.1f ms, p99 %.1f ms, max %.1f ms, %d over 50 ms"
          % (len(closes), 1e3 * statistics.median(closes), 1e3 * closes[int(0.99 * (len(closes) - 1))],
             1e3 * closes[-1], sum(c > 0.05 for c in closes)))


if __name__ == "__main__":
    main()
