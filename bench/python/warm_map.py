"""Repeated ``zerotasq.map`` calls on a warm pool: one call of 100 items from cold (workers
started) against ten calls of 100 items, each run in a fresh interpreter; the target is ten
calls at most twice one. For comparison, ten calls with ``reuse=False`` (a pool per call).

    .venv/bin/python bench/python/warm_map.py --runs 5 --workers 2
"""

import argparse
import json
import statistics
import subprocess
import sys

CHILD = """
import json, time, zerotasq
def square(x):
    return x * x
calls, n, reuse = {calls}, {workers}, {reuse}
started = time.perf_counter()
for _ in range(calls):
    assert list(zerotasq.map(square, range(100), n_workers=n, reuse=reuse)) == [x * x for x in range(100)]
print(json.dumps(time.perf_counter() - started))
"""


def run(calls: int, workers: int, reuse: bool = True) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD.format(calls=calls, workers=workers, reuse=reuse)],
                         check=True, capture_output=True, text=True).stdout
    return float(json.loads(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    one = [run(1, args.workers) for _ in range(args.runs)]
    ten = [run(10, args.workers) for _ in range(args.runs)]
    cold = [run(10, args.workers, reuse=False) for _ in range(args.runs)]
    for name, times in (("one call", one), ("ten calls", ten), ("ten, reuse=False", cold)):
        print("%-17s median %6.1f ms (%s)" % (name + ":", statistics.median(times) * 1e3,
                                              ", ".join("%.1f" % (t * 1e3) for t in times)))
    print("ten / one: %.2f (target: at most 2)" % (statistics.median(ten) / statistics.median(one)))


if __name__ == "__main__":
    main()
